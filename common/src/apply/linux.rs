//! [`Syscalls`] for real, on Linux (kernel >= 5.12 for `mount_setattr`).

use super::syscalls::{
    BindOptions, CgroupGrant, Handles, HostKind, MountHandle, NsId, SysError, Syscalls,
};
use crate::rootfs::{self, EntryKind, Rootfs};
use std::cell::RefCell;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bound of `/proc/PID/cgroup` and `devices.list`.
const MAX_CGROUP_FILE: u64 = 1 << 20;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` (VER0, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// The real system calls. Holds the rootfs opened in the namespace the
/// process is in when [`Syscalls::open_rootfs`] is called (after `setns`).
#[derive(Debug, Default)]
pub struct LinuxSyscalls {
    root: RefCell<Option<Rootfs>>,
    /// The attached mount of each bind, by handle: rollback detaches
    /// exactly these.
    mounts: Handles<OwnedFd>,
}

impl LinuxSyscalls {
    /// No rootfs opened yet.
    pub fn new() -> LinuxSyscalls {
        LinuxSyscalls::default()
    }

    fn with_root<T>(&self, f: impl FnOnce(&Rootfs) -> Result<T, SysError>) -> Result<T, SysError> {
        let root = self.root.borrow();
        match root.as_ref() {
            Some(r) => f(r),
            None => Err(SysError::io(
                "use",
                "rootfs",
                std::io::Error::other("rootfs not opened"),
            )),
        }
    }
}

fn last_err(op: &'static str, what: impl std::fmt::Display) -> SysError {
    SysError::io(op, what, std::io::Error::last_os_error())
}

fn c_path(p: &Path) -> Result<CString, SysError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        SysError::io(
            "encode",
            p.display(),
            std::io::Error::from_raw_os_error(libc::EINVAL),
        )
    })
}

fn proc_fd(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL")
}

/// `mount(NULL, target, NULL, flags, NULL)`: propagation changes.
fn set_propagation(target: &CString, flags: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: NUL-terminated target; null source/fstype/data are allowed
    // for a propagation change.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads a small kernel file with a bound.
fn read_small(path: &Path) -> std::io::Result<String> {
    crate::io::read_text_bounded(path, MAX_CGROUP_FILE).map_err(|e| match e {
        crate::io::ReadError::Io(e) => e,
        other => std::io::Error::other(other),
    })
}

/// The cgroup v1 devices path of a process, from `/proc/PID/cgroup`
/// (`N:devices:/path`); None on a pure cgroup v2 system.
fn devices_cgroup(cgroup_file: &str) -> Option<String> {
    cgroup_file.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        ctrls
            .split(',')
            .any(|c| c == "devices")
            .then(|| path.to_owned())
    })
}

/// Whether a `devices.list` already grants `kind major:minor access`.
fn list_allows(list: &str, kind: char, major: u64, minor: u64, access: &str) -> bool {
    list.lines().any(|l| {
        let mut it = l.split_whitespace();
        let (Some(t), Some(mm), Some(acc)) = (it.next(), it.next(), it.next()) else {
            return false;
        };
        let type_ok = t == "a" || t.starts_with(kind);
        let (maj, min) = mm.split_once(':').unwrap_or(("", ""));
        let num_ok = |rule: &str, n: u64| rule == "*" || rule.parse::<u64>().ok() == Some(n);
        type_ok
            && num_ok(maj, major)
            && num_ok(min, minor)
            && access.chars().all(|c| acc.contains(c))
    })
}

impl Syscalls for LinuxSyscalls {
    fn mount_namespace(&self, pid: Option<i32>) -> Result<NsId, SysError> {
        let p = match pid {
            Some(pid) => format!("/proc/{pid}/ns/mnt"),
            None => "/proc/self/ns/mnt".to_owned(),
        };
        let m = std::fs::metadata(&p).map_err(|e| SysError::io("stat", &p, e))?;
        Ok(NsId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    fn enter_mount_namespace(&self, pid: i32) -> Result<(), SysError> {
        let p = format!("/proc/{pid}/ns/mnt");
        let f = std::fs::File::open(&p).map_err(|e| SysError::io("open", &p, e))?;
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(|e| SysError::io("setns", &p, e.into()))?;
        // setns leaves the cwd in the old namespace: move to the new root
        // so nothing is resolved relative to a host directory.
        std::env::set_current_dir("/").map_err(|e| SysError::io("chdir", "/", e))
    }

    fn open_rootfs(&self, host_path: &Path) -> Result<(), SysError> {
        let r = Rootfs::open(host_path)?;
        *self.root.borrow_mut() = Some(r);
        Ok(())
    }

    fn make_rslave(&self) -> Result<(), SysError> {
        self.with_root(|r| {
            let target = proc_fd(r.root_fd());
            match set_propagation(&target, libc::MS_SLAVE | libc::MS_REC) {
                Ok(()) => Ok(()),
                // Not a mount point: the rootfs lives in the namespace's
                // root mount; make that one slave instead (only this
                // container's namespace is affected).
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => set_propagation(
                    &CString::new("/").expect("no NUL"),
                    libc::MS_SLAVE | libc::MS_REC,
                )
                .map_err(|e| SysError::io("make rslave", "/", e)),
                Err(e) => Err(SysError::io("make rslave", r.host_path().display(), e)),
            }
        })
    }

    fn target_kind(&self, path: &Path) -> Result<Option<EntryKind>, SysError> {
        self.with_root(|r| match r.resolve(path)? {
            Some(resolved) => Ok(r.kind(&resolved)?),
            None => Ok(None),
        })
    }

    fn host_kind(&self, host_path: &Path) -> Result<HostKind, SysError> {
        let m = std::fs::metadata(host_path)
            .map_err(|e| SysError::io("stat", host_path.display(), e))?;
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        Ok(if ft.is_file() {
            HostKind::File
        } else if ft.is_dir() {
            HostKind::Dir
        } else if ft.is_char_device() || ft.is_block_device() {
            let rdev = m.rdev() as libc::dev_t;
            HostKind::Device(
                if ft.is_char_device() { 'c' } else { 'b' },
                u64::from(libc::major(rdev)),
                u64::from(libc::minor(rdev)),
            )
        } else {
            HostKind::Other
        })
    }

    fn mkdir_all(&self, path: &Path) -> Result<Vec<PathBuf>, SysError> {
        self.with_root(|r| Ok(r.mkdir_all(path, 0o755)?))
    }

    fn create_file(&self, path: &Path) -> Result<bool, SysError> {
        self.with_root(|r| Ok(r.create_file(path, 0o644)?))
    }

    fn bind_mount(
        &self,
        source: &Path,
        target: &Path,
        opts: BindOptions,
    ) -> Result<MountHandle, SysError> {
        self.with_root(|r| {
            let src = c_path(source)?;
            let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
            if opts.recursive {
                flags |= AT_RECURSIVE;
            }
            // SAFETY: NUL-terminated path, plain flags.
            let raw =
                unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, src.as_ptr(), flags) };
            if raw < 0 {
                return Err(last_err("open_tree", source.display()));
            }
            // SAFETY: fresh fd of the detached mount.
            let tree = unsafe { OwnedFd::from_raw_fd(raw as libc::c_int) };
            let mut set = MOUNT_ATTR_NOSUID;
            if opts.readonly {
                set |= MOUNT_ATTR_RDONLY;
            }
            if !opts.device {
                set |= MOUNT_ATTR_NODEV;
            }
            let attr = MountAttr {
                attr_set: set,
                attr_clr: 0,
                propagation: libc::MS_PRIVATE,
                userns_fd: 0,
            };
            let empty = CString::new("").expect("no NUL");
            // SAFETY: valid fd, empty path with AT_EMPTY_PATH, attr lives
            // across the call and has the VER0 size.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_mount_setattr,
                    tree.as_raw_fd(),
                    empty.as_ptr(),
                    (libc::AT_EMPTY_PATH as libc::c_uint) | AT_RECURSIVE,
                    &attr as *const MountAttr,
                    std::mem::size_of::<MountAttr>(),
                )
            };
            if rc < 0 {
                return Err(last_err("mount_setattr", source.display()));
            }
            // The target is looked up once, inside the root; the mount goes
            // onto that very inode.
            let tgt = r.open_path(target, true)?;
            r.refuse_kernel_fs(tgt.as_fd(), target)?;
            // SAFETY: two valid fds, empty paths with the EMPTY_PATH flags.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    tree.as_raw_fd(),
                    empty.as_ptr(),
                    tgt.as_raw_fd(),
                    empty.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
                )
            };
            if rc < 0 {
                return Err(last_err("move_mount", target.display()));
            }
            // After move_mount the tree's fd is the root of the attached
            // mount: kept as the handle of this mount.
            Ok(self.mounts.push(tree))
        })
    }

    fn unmount(&self, handle: MountHandle) -> Result<(), SysError> {
        let fd = self.mounts.take(handle)?;
        let p = proc_fd(fd.as_fd());
        // SAFETY: NUL-terminated path. The magic link names the root of the
        // mount this process attached, whatever the path in the image says
        // now.
        if unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(last_err("umount", format!("mount handle {}", handle.0)));
        }
        Ok(())
    }

    fn allow_device(
        &self,
        pid: i32,
        kind: char,
        major: u64,
        minor: u64,
        access: &str,
    ) -> Result<CgroupGrant, SysError> {
        let cg_file = format!("/proc/{pid}/cgroup");
        let text =
            read_small(Path::new(&cg_file)).map_err(|e| SysError::io("read", &cg_file, e))?;
        let Some(rel) = devices_cgroup(&text) else {
            return Ok(CgroupGrant::NotApplicable(
                "cgroup v2: device access is an eBPF program attached by the runtime; hpcc cannot extend it, the runtime's own device list (CDI in the engine, linux.resources.devices) must allow it".into(),
            ));
        };
        let base = Path::new("/sys/fs/cgroup/devices");
        // Open the controller dir, then the container's cgroup beneath it
        // (RESOLVE_BENEATH: a path from the kernel, but never let it climb).
        let base_fd = match std::fs::File::open(base) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CgroupGrant::NotApplicable(format!(
                    "the devices cgroup v1 controller is not mounted at {} in this mount namespace (process in {rel})",
                    base.display()
                )))
            }
            Err(e) => return Err(SysError::io("open", base.display(), e)),
        };
        let relp = rel.trim_start_matches('/');
        let cg_path = base.join(relp);
        let dir = if relp.is_empty() {
            return Ok(CgroupGrant::AlreadyAllowed(
                "the container is in the root devices cgroup, which allows every device".into(),
            ));
        } else {
            rootfs::openat2(
                base_fd.as_fd(),
                Path::new(relp),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
                libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
            )
            .map_err(|e| SysError::io("open", cg_path.display(), e))?
        };
        let list_path = PathBuf::from(format!("/proc/self/fd/{}/devices.list", dir.as_raw_fd()));
        let list = read_small(&list_path)
            .map_err(|e| SysError::io("read", cg_path.join("devices.list").display(), e))?;
        if list_allows(&list, kind, major, minor, access) {
            return Ok(CgroupGrant::AlreadyAllowed(format!(
                "{} already allows {kind} {major}:{minor} {access}",
                cg_path.display()
            )));
        }
        let allow = PathBuf::from(format!("/proc/self/fd/{}/devices.allow", dir.as_raw_fd()));
        std::fs::write(&allow, format!("{kind} {major}:{minor} {access}"))
            .map_err(|e| SysError::io("write", cg_path.join("devices.allow").display(), e))?;
        Ok(CgroupGrant::Added(cg_path))
    }

    fn deny_device(
        &self,
        cgroup: &Path,
        kind: char,
        major: u64,
        minor: u64,
        access: &str,
    ) -> Result<(), SysError> {
        let deny = cgroup.join("devices.deny");
        std::fs::write(&deny, format!("{kind} {major}:{minor} {access}"))
            .map_err(|e| SysError::io("write", deny.display(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_line_is_found_in_v1_and_absent_in_v2() {
        let v1 = "12:pids:/x\n5:devices:/user.slice/abc\n0::/x\n";
        assert_eq!(devices_cgroup(v1).as_deref(), Some("/user.slice/abc"));
        assert_eq!(devices_cgroup("0::/init.scope\n"), None);
        assert_eq!(
            devices_cgroup("3:cpu,devices:/a:b\n").as_deref(),
            Some("/a:b")
        );
    }

    #[test]
    fn devices_list_matching() {
        assert!(list_allows("a *:* rwm\n", 'c', 1, 3, "rwm"));
        assert!(list_allows("c 1:3 rwm\n", 'c', 1, 3, "rw"));
        assert!(list_allows("c *:* m\nc 1:* rwm\n", 'c', 1, 9, "rwm"));
        assert!(!list_allows("c 1:3 r\n", 'c', 1, 3, "rw"));
        assert!(!list_allows("b 1:3 rwm\n", 'c', 1, 3, "rw"));
        assert!(!list_allows("c 1:5 rwm\n", 'c', 1, 3, "rw"));
        assert!(!list_allows("", 'c', 1, 3, "rw"));
    }

    #[test]
    fn host_kind_sees_devices() {
        let s = LinuxSyscalls::new();
        assert_eq!(
            s.host_kind(Path::new("/dev/null")).unwrap(),
            HostKind::Device('c', 1, 3)
        );
        assert_eq!(s.host_kind(Path::new("/")).unwrap(), HostKind::Dir);
        assert!(s.host_kind(Path::new("/nonexistent-hpcc")).is_err());
    }

    #[test]
    fn calls_before_open_rootfs_are_errors() {
        let s = LinuxSyscalls::new();
        assert!(s.mkdir_all(Path::new("/x")).is_err());
    }
}
