//! The one door of the apply layer to the kernel: every system call it makes
//! is a method of [`Syscalls`]. [`LinuxSyscalls`](super::linux::LinuxSyscalls)
//! makes them for real; [`RecordingSyscalls`](super::recording::RecordingSyscalls)
//! records them and injects failures, so the order of operations, the
//! rollback and the refusals are unit-tested without root.
//!
//! Container paths are absolute paths inside the container; implementations
//! resolve them inside the rootfs opened by [`Syscalls::open_rootfs`].

use crate::rootfs::{EntryKind, RootfsError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Identity of a mount namespace (device and inode of its `ns/mnt` file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

/// What a host path (the trusted side of a mount) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Device node: `c` or `b`, major, minor.
    Device(char, u64, u64),
    /// Anything else (socket, FIFO).
    Other,
}

/// Outcome of granting a device in the container's device cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupGrant {
    /// `devices.allow` of this cgroup v1 directory was written; rollback
    /// writes the same rule to `devices.deny`.
    Added(PathBuf),
    /// The cgroup already allows it (root cgroup, `a *:* rwm`, an existing
    /// rule): nothing written, nothing to roll back.
    AlreadyAllowed(String),
    /// Not possible here, with the reason (cgroup v2 eBPF device filter,
    /// no devices controller mounted in this namespace).
    NotApplicable(String),
}

/// A failed system call (or a refusal of the safe-path layer).
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// Inside the rootfs.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// Any other call.
    #[error("{op} {path}: {source}")]
    Io {
        /// The call (`setns`, `open_tree`, `move_mount`, ...).
        op: &'static str,
        /// Path or object it acted on.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl SysError {
    /// An I/O error for `op` on `path`.
    pub fn io(op: &'static str, path: impl std::fmt::Display, source: std::io::Error) -> SysError {
        SysError::Io {
            op,
            path: path.to_string(),
            source,
        }
    }
}

/// Every system call of the apply layer. Object safe: `apply` takes
/// `&dyn Syscalls`.
pub trait Syscalls {
    /// The mount namespace of `pid`, or of this process for `None`.
    fn mount_namespace(&self, pid: Option<i32>) -> Result<NsId, SysError>;
    /// `setns(CLONE_NEWNS)` into the mount namespace of `pid`. Fails with
    /// EINVAL in a multi-threaded process: callers run it in a fresh child.
    fn enter_mount_namespace(&self, pid: i32) -> Result<(), SysError>;
    /// Opens the rootfs (in the current namespace) for every later call.
    fn open_rootfs(&self, host_path: &Path) -> Result<(), SysError>;
    /// Makes the rootfs mount (or the namespace root when the rootfs is not
    /// a mount point) recursively slave, so that nothing mounted below it
    /// can propagate to the host even when the runtime was told to make the
    /// rootfs shared.
    fn make_rslave(&self) -> Result<(), SysError>;
    /// What a container path is, symlinks followed inside the root; None
    /// when absent (or dangling).
    fn target_kind(&self, path: &Path) -> Result<Option<EntryKind>, SysError>;
    /// What a host path is (followed: host paths come from the policy).
    fn host_kind(&self, host_path: &Path) -> Result<HostKind, SysError>;
    /// Creates the missing directories of a container path inside the root;
    /// returns those created, outermost first.
    fn mkdir_all(&self, path: &Path) -> Result<Vec<PathBuf>, SysError>;
    /// Creates an empty file at a container path (parent must exist);
    /// false when something is already there.
    fn create_file(&self, path: &Path) -> Result<bool, SysError>;
    /// Bind-mounts a host path onto a container path resolved inside the
    /// root: the mount is cloned detached, made private (recursively) and
    /// read-only / nosuid / nodev as asked *before* it is attached, then
    /// moved onto an fd of the target, so there is no window where it is
    /// writable or shared and no path is looked up twice. Returns the
    /// handle of that very mount.
    fn bind_mount(
        &self,
        source: &Path,
        target: &Path,
        opts: BindOptions,
    ) -> Result<MountHandle, SysError>;
    /// Detaches the mount made by [`Syscalls::bind_mount`] that `handle`
    /// names (rollback): by the handle, never by looking a path up again,
    /// so a symlink swapped in meanwhile cannot redirect it.
    fn unmount(&self, handle: MountHandle) -> Result<(), SysError>;
    /// Grants a device in the container's device cgroup.
    fn allow_device(
        &self,
        pid: i32,
        kind: char,
        major: u64,
        minor: u64,
        access: &str,
    ) -> Result<CgroupGrant, SysError>;
    /// Revokes a grant made by [`Syscalls::allow_device`] (rollback).
    fn deny_device(
        &self,
        cgroup: &Path,
        kind: char,
        major: u64,
        minor: u64,
        access: &str,
    ) -> Result<(), SysError>;
}

/// A mount made by [`Syscalls::bind_mount`], for its undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountHandle(pub usize);

/// What an implementation keeps per mount, by handle; each is taken once.
#[derive(Debug)]
pub struct Handles<T>(std::cell::RefCell<Vec<Option<T>>>);

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Handles(std::cell::RefCell::new(Vec::new()))
    }
}

impl<T> Handles<T> {
    /// Keeps `t`; returns its handle.
    pub fn push(&self, t: T) -> MountHandle {
        let mut v = self.0.borrow_mut();
        v.push(Some(t));
        MountHandle(v.len() - 1)
    }

    /// Takes back what `h` names (once).
    pub fn take(&self, h: MountHandle) -> Result<T, SysError> {
        self.0
            .borrow_mut()
            .get_mut(h.0)
            .and_then(Option::take)
            .ok_or_else(|| {
                SysError::io(
                    "umount",
                    format!("mount handle {}", h.0),
                    std::io::Error::from_raw_os_error(libc::EINVAL),
                )
            })
    }
}

/// Options of one bind mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindOptions {
    /// Read-only.
    pub readonly: bool,
    /// Recursive (directories: their submounts come along).
    pub recursive: bool,
    /// The source is a device node (so no `nodev`).
    pub device: bool,
}
