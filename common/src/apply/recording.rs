//! A [`Syscalls`] double: records every effectful call in order, models the
//! rootfs as a map of container paths, and fails the calls a test picks.
//! Queries (`target_kind`, `host_kind`, namespaces) are answered from the
//! model and not recorded, so tests assert on what would change the system.

use super::syscalls::{
    BindOptions, CgroupGrant, Handles, HostKind, MountHandle, NsId, SysError, Syscalls,
};
use crate::rootfs::{normalize, EntryKind};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One effectful call, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `setns` into the container's mount namespace.
    EnterMountNamespace(i32),
    /// Rootfs opened.
    OpenRootfs(PathBuf),
    /// Rootfs made recursively slave.
    MakeRslave,
    /// One directory created.
    Mkdir(PathBuf),
    /// One empty file created.
    CreateFile(PathBuf),
    /// A bind mount.
    BindMount {
        /// Host path.
        source: PathBuf,
        /// Container path.
        target: PathBuf,
        /// Options.
        opts: BindOptions,
    },
    /// An unmount, by handle (the target it was mounted on, for reading).
    Unmount(PathBuf),
    /// A device cgroup grant.
    AllowDevice(String),
    /// A device cgroup revocation.
    DenyDevice(String),
}

type FailPredicate = Box<dyn Fn(&Call) -> bool>;

/// The recording double.
pub struct RecordingSyscalls {
    calls: RefCell<Vec<Call>>,
    entries: RefCell<BTreeMap<PathBuf, EntryKind>>,
    mounted: RefCell<Vec<PathBuf>>,
    handles: Handles<PathBuf>,
    host: BTreeMap<PathBuf, HostKind>,
    own_ns: NsId,
    container_ns: NsId,
    grant: CgroupGrant,
    fail: Option<FailPredicate>,
    ns_unreadable: bool,
}

impl Default for RecordingSyscalls {
    fn default() -> Self {
        RecordingSyscalls::new()
    }
}

impl std::fmt::Debug for RecordingSyscalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingSyscalls")
            .field("calls", &self.calls.borrow())
            .finish_non_exhaustive()
    }
}

fn injected(call: &Call) -> SysError {
    SysError::io(
        "injected failure",
        format!("{call:?}"),
        std::io::Error::from_raw_os_error(libc::EIO),
    )
}

impl RecordingSyscalls {
    /// An empty rootfs (only `/`), a container in its own namespace, a
    /// cgroup v1 devices cgroup that grants.
    pub fn new() -> RecordingSyscalls {
        let mut entries = BTreeMap::new();
        entries.insert(PathBuf::from("/"), EntryKind::Dir);
        RecordingSyscalls {
            calls: RefCell::new(Vec::new()),
            entries: RefCell::new(entries),
            mounted: RefCell::new(Vec::new()),
            handles: Handles::default(),
            host: BTreeMap::new(),
            own_ns: NsId { dev: 4, ino: 1 },
            container_ns: NsId { dev: 4, ino: 2 },
            grant: CgroupGrant::Added(PathBuf::from("/sys/fs/cgroup/devices/test")),
            fail: None,
            ns_unreadable: false,
        }
    }

    /// Adds an entry of the image (its parents as directories).
    pub fn with_entry(self, path: &str, kind: EntryKind) -> Self {
        {
            let mut e = self.entries.borrow_mut();
            let p = PathBuf::from(path);
            for a in p.ancestors().skip(1) {
                e.entry(a.to_owned()).or_insert(EntryKind::Dir);
            }
            e.insert(p, kind);
        }
        self
    }

    /// Adds a host path.
    pub fn with_host(mut self, path: &str, kind: HostKind) -> Self {
        self.host.insert(PathBuf::from(path), kind);
        self
    }

    /// The container shares this process's mount namespace.
    pub fn same_namespace(mut self) -> Self {
        self.container_ns = self.own_ns;
        self
    }

    /// The container's namespace cannot be read (its pid is not visible).
    pub fn unreadable_namespace(mut self) -> Self {
        self.ns_unreadable = true;
        self
    }

    /// What `allow_device` answers.
    pub fn with_grant(mut self, grant: CgroupGrant) -> Self {
        self.grant = grant;
        self
    }

    /// Fails (after recording) every call the predicate picks.
    pub fn fail_on(mut self, pred: impl Fn(&Call) -> bool + 'static) -> Self {
        self.fail = Some(Box::new(pred));
        self
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// The modelled rootfs entries now.
    pub fn entries(&self) -> BTreeMap<PathBuf, EntryKind> {
        self.entries.borrow().clone()
    }

    /// Container paths mounted now.
    pub fn mounted(&self) -> Vec<PathBuf> {
        self.mounted.borrow().clone()
    }

    fn record(&self, call: Call) -> Result<(), SysError> {
        let fails = self.fail.as_ref().is_some_and(|f| f(&call));
        let err = fails.then(|| injected(&call));
        self.calls.borrow_mut().push(call);
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn norm(path: &Path) -> Result<PathBuf, SysError> {
        Ok(normalize(path)?)
    }
}

impl Syscalls for RecordingSyscalls {
    fn mount_namespace(&self, pid: Option<i32>) -> Result<NsId, SysError> {
        if pid.is_some() && self.ns_unreadable {
            return Err(SysError::io(
                "stat",
                "/proc/PID/ns/mnt",
                std::io::Error::from_raw_os_error(libc::ENOENT),
            ));
        }
        Ok(if pid.is_some() {
            self.container_ns
        } else {
            self.own_ns
        })
    }

    fn enter_mount_namespace(&self, pid: i32) -> Result<(), SysError> {
        self.record(Call::EnterMountNamespace(pid))
    }

    fn open_rootfs(&self, host_path: &Path) -> Result<(), SysError> {
        self.record(Call::OpenRootfs(host_path.to_owned()))
    }

    fn make_rslave(&self) -> Result<(), SysError> {
        self.record(Call::MakeRslave)
    }

    fn target_kind(&self, path: &Path) -> Result<Option<EntryKind>, SysError> {
        Ok(self.entries.borrow().get(&Self::norm(path)?).copied())
    }

    fn host_kind(&self, host_path: &Path) -> Result<HostKind, SysError> {
        self.host.get(host_path).copied().ok_or_else(|| {
            SysError::io(
                "stat",
                host_path.display(),
                std::io::Error::from_raw_os_error(libc::ENOENT),
            )
        })
    }

    fn mkdir_all(&self, path: &Path) -> Result<Vec<PathBuf>, SysError> {
        let norm = Self::norm(path)?;
        let mut created = Vec::new();
        let mut prefix = PathBuf::from("/");
        for c in norm.components().skip(1) {
            prefix.push(c);
            let existing = self.entries.borrow().get(&prefix).copied();
            match existing {
                Some(EntryKind::Dir) => {}
                Some(_) => {
                    return Err(SysError::io(
                        "mkdir",
                        prefix.display(),
                        std::io::Error::from_raw_os_error(libc::ENOTDIR),
                    ))
                }
                None => {
                    self.record(Call::Mkdir(prefix.clone()))?;
                    self.entries
                        .borrow_mut()
                        .insert(prefix.clone(), EntryKind::Dir);
                    created.push(prefix.clone());
                }
            }
        }
        Ok(created)
    }

    fn create_file(&self, path: &Path) -> Result<bool, SysError> {
        let norm = Self::norm(path)?;
        if self.entries.borrow().contains_key(&norm) {
            return Ok(false);
        }
        self.record(Call::CreateFile(norm.clone()))?;
        self.entries.borrow_mut().insert(norm, EntryKind::File);
        Ok(true)
    }

    fn bind_mount(
        &self,
        source: &Path,
        target: &Path,
        opts: BindOptions,
    ) -> Result<MountHandle, SysError> {
        let norm = Self::norm(target)?;
        self.record(Call::BindMount {
            source: source.to_owned(),
            target: norm.clone(),
            opts,
        })?;
        self.mounted.borrow_mut().push(norm.clone());
        Ok(self.handles.push(norm))
    }

    fn unmount(&self, handle: MountHandle) -> Result<(), SysError> {
        let target = self.handles.take(handle)?;
        self.record(Call::Unmount(target.clone()))?;
        let mut mounted = self.mounted.borrow_mut();
        if let Some(i) = mounted.iter().rposition(|m| m == &target) {
            mounted.remove(i);
        }
        Ok(())
    }

    fn allow_device(
        &self,
        _pid: i32,
        kind: char,
        major: u64,
        minor: u64,
        access: &str,
    ) -> Result<CgroupGrant, SysError> {
        self.record(Call::AllowDevice(format!(
            "{kind} {major}:{minor} {access}"
        )))?;
        Ok(self.grant.clone())
    }

    fn deny_device(
        &self,
        _cgroup: &Path,
        kind: char,
        major: u64,
        minor: u64,
        access: &str,
    ) -> Result<(), SysError> {
        self.record(Call::DenyDevice(format!("{kind} {major}:{minor} {access}")))
    }
}
