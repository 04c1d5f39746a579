//! Safe access to an image root filesystem from the host.
//!
//! The rootfs is hostile: any of its entries may be a symlink to `/etc`, `/`
//! or a chain of `..`. Every path given here is a path *inside the
//! container*, resolved by the kernel with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` relative to a directory fd of the rootfs, so an
//! absolute symlink resolves against the rootfs and `..` stops at its top,
//! atomically (no check-then-use window). Files are first opened `O_PATH`,
//! checked with `fstat`, then reopened through `/proc/self/fd`, so that
//! opening a device node or a FIFO planted in the image never has side
//! effects or blocks. Every read is bounded.
//!
//! Creation (mount targets) walks the path one component at a time: each
//! parent is an fd obtained inside the root, and the new entry is created
//! with `mkdirat`/`openat(O_CREAT|O_EXCL|O_NOFOLLOW)` relative to it, so a
//! symlink can never redirect a creation onto the host.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Most entries [`Rootfs::list_dir`] returns before giving up: a library
/// directory has hundreds, a hostile image could have millions.
pub const MAX_DIR_ENTRIES: usize = 65536;

/// Longest container path accepted (the kernel's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Container directories whose files are the kernel's, never a mount
/// target: a bind over `/proc/1/attr/apparmor/exec` or a `/proc/sys` knob in
/// the container's namespace would change what the runtime writes after
/// the hook (CVE-2019-16884 was that, with an image's own mount). An image
/// symlink can aim a library path there; the planner resolves it inside the
/// root and would otherwise pick it as the file to replace.
pub const KERNEL_DIRS: &[&str] = &["/proc", "/sys"];

/// Most resolutions a snapshot ([`Rootfs::open_snapshot`]) remembers; past
/// it every lookup is a system call again, as without a snapshot.
const MEMO_MAX_PATHS: usize = 4096;
/// Most bytes of path text a snapshot keeps, all its maps together: a path
/// may be 4 KiB, and [`MEMO_MAX_PATHS`] of them, each kept as a key and a
/// canonical path, would be 32 MiB in a hook. Past it, lookups are system
/// calls again.
const MEMO_MAX_PATH_BYTES: usize = 1 << 20;
/// Most `O_PATH` fds of resolved regular files a snapshot keeps, so that
/// reading a file it resolved costs one open, not two. Few: the fd limit
/// of a hook may be 1024.
const MEMO_MAX_FDS: usize = 16;
/// Most directory names a snapshot remembers, all listings together.
const MEMO_MAX_NAMES: usize = MAX_DIR_ENTRIES;
/// Most file bytes a snapshot remembers, all files together (the image's
/// linker cache is read by the planner and again by the cache builder).
const MEMO_MAX_BYTES: usize = 16 << 20;

/// How often an `openat2` that raced with a rename (`EAGAIN`) is retried.
const OPENAT2_RETRIES: usize = 32;

/// The type of an entry, as `lstat` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (not followed).
    Symlink,
    /// Device node, FIFO, socket.
    Other,
}

impl EntryKind {
    fn from_mode(mode: libc::mode_t) -> EntryKind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => EntryKind::File,
            libc::S_IFDIR => EntryKind::Dir,
            libc::S_IFLNK => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }

    /// Lowercase name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "regular file",
            EntryKind::Dir => "directory",
            EntryKind::Symlink => "symbolic link",
            EntryKind::Other => "special file",
        }
    }
}

/// Why an access to the rootfs failed. Every variant names the path inside
/// the container, so a message points at the image entry to look at.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The rootfs itself cannot be opened.
    #[error("cannot open the image root filesystem {host}: {source}")]
    OpenRoot {
        /// Host path of the rootfs.
        host: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A system call on an entry failed.
    #[error("cannot {op} {path} in the image: {source}")]
    Io {
        /// What was attempted (`open`, `list`, `create`, ...).
        op: &'static str,
        /// Path inside the container.
        path: PathBuf,
        /// Cause (ELOOP for symlink loops, EXDEV for escapes the kernel refused).
        source: std::io::Error,
    },
    /// The path is not acceptable as a container path.
    #[error("invalid container path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A regular file was expected.
    #[error("{path} in the image is a {found}, not a regular file")]
    NotRegular {
        /// Path inside the container.
        path: PathBuf,
        /// What it is.
        found: &'static str,
    },
    /// A directory was expected on the way.
    #[error("{path} in the image is a {found}, not a directory")]
    NotDirectory {
        /// Path inside the container.
        path: PathBuf,
        /// What it is.
        found: &'static str,
    },
    /// A file over the caller's bound.
    #[error("{path} in the image is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Path inside the container.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// A file of a kernel filesystem (procfs, sysfs, ...) mounted in the
    /// container: never read (a read of `/proc/kmsg` blocks, others have
    /// side effects) and never a mount target.
    #[error("{path} in the image is a file of the kernel's {fs} filesystem: not read, never a mount target")]
    KernelFile {
        /// Path inside the container.
        path: PathBuf,
        /// The filesystem.
        fs: &'static str,
    },
    /// A directory with more entries than [`MAX_DIR_ENTRIES`].
    #[error("{path} in the image has more than {limit} entries")]
    TooManyEntries {
        /// Path inside the container.
        path: PathBuf,
        /// The bound.
        limit: usize,
    },
}

impl RootfsError {
    fn io(op: &'static str, path: &Path, source: std::io::Error) -> RootfsError {
        RootfsError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }

    /// The errno of an I/O failure, if this is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            RootfsError::Io { source, .. } | RootfsError::OpenRoot { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

/// `openat2(2)`: resolution flags are the whole point, std has no wrapper.
pub(crate) fn openat2(
    dirfd: BorrowedFd<'_>,
    path: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: u64,
) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain old data; zero is a valid value for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = u64::from(mode);
    how.resolve = resolve;
    for _ in 0..OPENAT2_RETRIES {
        // SAFETY: valid fd, NUL-terminated path, `how` lives across the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if r >= 0 {
            // SAFETY: the kernel returned a new fd that nobody else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) });
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            // EAGAIN: a concurrent rename raced with `..` resolution; the
            // kernel asks us to retry rather than risk an escape.
            Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::EAGAIN))
}

/// Filesystems whose files belong to the kernel (`statfs` magic numbers).
/// At `prestart` the runtime has already mounted `/proc`, `/sys` and their
/// friends in the rootfs; an image symlink can aim a library path at them.
const KERNEL_FS: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x7363_6673, "securityfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0xcafe_4a11, "bpf"),
    (0x1cd1, "devpts"),
    (0x1957_0921, "mqueue"),
    (0x4249_4e4d, "binfmt_misc"),
    (0xde5e_81e4, "efivarfs"),
    (0x6e73_6673, "nsfs"),
    (0x6573_5546, "fusectl"),
    (0x7375_7245, "configfs"),
    (0x6165_6d6f, "pstore"),
];

/// The kernel filesystem an fd is on, if it is on one.
pub(crate) fn kernel_fs(fd: BorrowedFd<'_>) -> std::io::Result<Option<&'static str>> {
    // SAFETY: statfs is plain old data filled in by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a valid out pointer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let magic = st.f_type as i64;
    Ok(KERNEL_FS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name))
}

/// Resolution used for every lookup: the rootfs is `/`, magic links
/// (`/proc/self/root` inside a mounted proc) are never followed.
pub(crate) const RESOLVE: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;

fn fstat(fd: BorrowedFd<'_>) -> std::io::Result<libc::stat> {
    // SAFETY: stat is plain old data filled in by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and a valid out pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// A container path made relative for `openat2` (`/usr/lib` -> `usr/lib`,
/// `/` -> `.`), checked for NUL bytes and length.
fn relative(path: &Path) -> Result<PathBuf, RootfsError> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.contains(&0) {
        return Err(RootfsError::InvalidPath {
            path: path.to_owned(),
            reason: "contains a NUL byte",
        });
    }
    if bytes.len() > MAX_PATH_BYTES {
        return Err(RootfsError::InvalidPath {
            path: path.to_owned(),
            reason: "longer than PATH_MAX",
        });
    }
    let rel: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    Ok(if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    })
}

/// The lexical normal form of a container path: absolute, no `.`, `..`
/// popped and clamped at `/`. Used where hpcc creates or removes entries,
/// so that the parent/name split is well defined; every component is still
/// resolved by the kernel inside the root.
pub fn normalize(path: &Path) -> Result<PathBuf, RootfsError> {
    relative(path)?;
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// Splits a normalized container path into parent and last name; `/` has none.
fn split(path: &Path) -> Result<(PathBuf, std::ffi::OsString), RootfsError> {
    let norm = normalize(path)?;
    match (norm.parent(), norm.file_name()) {
        (Some(p), Some(n)) => Ok((p.to_owned(), n.to_owned())),
        _ => Err(RootfsError::InvalidPath {
            path: path.to_owned(),
            reason: "names the root itself",
        }),
    }
}

fn cstr(name: &std::ffi::OsStr, path: &Path) -> Result<CString, RootfsError> {
    CString::new(name.as_bytes()).map_err(|_| RootfsError::InvalidPath {
        path: path.to_owned(),
        reason: "contains a NUL byte",
    })
}

/// An image root filesystem opened as a directory fd; every path given to it
/// is a path inside the container, resolved with
/// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so absolute symlinks
/// and `..` in the image stay inside it.
#[derive(Debug)]
pub struct Rootfs {
    fd: OwnedFd,
    host_path: PathBuf,
    /// Where the kernel says the root is (symlinks in the host path
    /// resolved), to turn resolved fds back into container paths.
    canonical: PathBuf,
    /// What this launch already learned, for a snapshot; None otherwise.
    memo: Option<Mutex<Memo>>,
}

/// A resolution remembered by a snapshot.
#[derive(Debug, Clone)]
enum Resolved {
    /// ENOENT or ENOTDIR: a longer path below it is absent too (the kernel
    /// resolves the prefix first, and `..` is never taken lexically).
    Absent,
    /// The canonical in-root path and what it is.
    Found {
        path: PathBuf,
        kind: EntryKind,
        /// Its modification time (seconds, nanoseconds).
        mtime: (i64, i64),
        /// The `O_PATH` fd it was resolved to, kept for the first
        /// [`MEMO_MAX_FDS`] regular files: reading it reopens this very
        /// inode, obtained inside the root.
        fd: Option<Arc<OwnedFd>>,
    },
}

/// Per-launch memory of a snapshot. The image lives on a shared file
/// system that thousands of nodes read at the same moment: a path resolved,
/// a directory listed or a small file read once is not asked again. Keys
/// are in-root paths made relative ([`relative`]: `..` kept), values only
/// ever come from `openat2(RESOLVE_IN_ROOT)` lookups, so a remembered
/// answer is one the kernel gave inside the root.
#[derive(Debug, Default)]
struct Memo {
    resolved: HashMap<PathBuf, Resolved>,
    /// Canonical directory -> its sorted names.
    listed: HashMap<PathBuf, Arc<Vec<String>>>,
    names: usize,
    /// Canonical file -> its bytes.
    files: HashMap<PathBuf, Arc<Vec<u8>>>,
    bytes: usize,
    fds: usize,
    /// Path text kept, keys and values ([`MEMO_MAX_PATH_BYTES`]).
    path_bytes: usize,
}

impl Memo {
    /// The answer for `key`, or a shorter question: a prefix known to be
    /// absent makes the path absent, a prefix known to be a directory is
    /// replaced by its canonical path (what the kernel would walk anyway),
    /// so `/lib/x86_64-linux-gnu/libc.so.6` and
    /// `/usr/lib/x86_64-linux-gnu/libc.so.6` share one lookup under a
    /// merged `/usr`.
    fn get(&self, key: &Path) -> Result<Resolved, PathBuf> {
        if let Some(r) = self.resolved.get(key) {
            return Ok(r.clone());
        }
        let comps: Vec<Component<'_>> = key.components().collect();
        for n in (1..comps.len()).rev() {
            let prefix: PathBuf = comps[..n].iter().collect();
            match self.resolved.get(&prefix) {
                Some(Resolved::Absent) => return Ok(Resolved::Absent),
                Some(Resolved::Found {
                    path,
                    kind: EntryKind::Dir,
                    ..
                }) => {
                    let mut asked = relative(path).unwrap_or_else(|_| PathBuf::from("."));
                    asked.extend(&comps[n..]);
                    return match self.resolved.get(&asked) {
                        Some(r) => Ok(r.clone()),
                        None => Err(asked),
                    };
                }
                _ => {}
            }
        }
        Err(key.to_owned())
    }

    fn put(&mut self, key: PathBuf, r: Resolved) {
        let value = match &r {
            Resolved::Found { path, .. } => path.as_os_str().len(),
            Resolved::Absent => 0,
        };
        if self.resolved.len() < MEMO_MAX_PATHS && self.charge(key.as_os_str().len() + value) {
            self.resolved.insert(key, r);
        }
    }

    /// Counts `n` more bytes of path text kept; false (nothing counted)
    /// past [`MEMO_MAX_PATH_BYTES`].
    fn charge(&mut self, n: usize) -> bool {
        if self.path_bytes + n > MEMO_MAX_PATH_BYTES {
            return false;
        }
        self.path_bytes += n;
        true
    }
}

impl Rootfs {
    /// Opens the rootfs at a host path. The host path comes from the runtime
    /// (`root.path` of the bundle) and is followed normally; only what is
    /// below it is treated as hostile.
    pub fn open(host_path: &Path) -> Result<Rootfs, RootfsError> {
        let c =
            CString::new(host_path.as_os_str().as_bytes()).map_err(|_| RootfsError::OpenRoot {
                host: host_path.to_owned(),
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            })?;
        // SAFETY: NUL-terminated path; the returned fd is owned below.
        let raw = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(RootfsError::OpenRoot {
                host: host_path.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: fresh fd from open(2).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let canonical = fd_path(fd.as_fd()).map_err(|source| RootfsError::OpenRoot {
            host: host_path.to_owned(),
            source,
        })?;
        Ok(Rootfs {
            fd,
            host_path: host_path.to_owned(),
            canonical,
            memo: None,
        })
    }

    /// Opens the rootfs as a snapshot for one launch's reading: what it
    /// resolves, lists and reads (files up to a bound) is remembered for
    /// its life, so each is asked of the shared file system once. Every
    /// lookup it does make is still `openat2(RESOLVE_IN_ROOT)`. For the
    /// planner and the linker cache builder; [`Rootfs::mkdir_all`] and
    /// [`Rootfs::create_file`] forget what it learned, but mounts made
    /// through [`Rootfs::root_fd`] are not seen: the apply layer, which
    /// mounts, uses [`Rootfs::open`].
    pub fn open_snapshot(host_path: &Path) -> Result<Rootfs, RootfsError> {
        let mut r = Rootfs::open(host_path)?;
        r.memo = Some(Mutex::new(Memo::default()));
        Ok(r)
    }

    /// The snapshot's memory (None without one). A panic while it was
    /// held left nothing half-written that matters: every entry is
    /// inserted whole.
    fn memo(&self) -> Option<std::sync::MutexGuard<'_, Memo>> {
        self.memo
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Forgets what the snapshot learned: the image was changed.
    fn forget(&self) {
        if let Some(mut m) = self.memo() {
            *m = Memo::default();
        }
    }

    /// Resolves `path` (symlinks followed in root) to what it is, through
    /// the snapshot's memory; also returns the `O_PATH` fd when one was
    /// opened or kept. Absent (ENOENT, ENOTDIR) is `Resolved::Absent`.
    fn lookup(&self, path: &Path) -> Result<(Resolved, Option<Arc<OwnedFd>>), RootfsError> {
        self.lookup_as(path, false)
    }

    /// [`Rootfs::lookup`]; `want_dir`: the caller will list it, so it is
    /// opened readable with `O_DIRECTORY` in the same call (the kernel
    /// refuses a non-directory before opening anything, so no device is
    /// ever opened this way), and ENOTDIR is an error.
    fn lookup_as(
        &self,
        path: &Path,
        want_dir: bool,
    ) -> Result<(Resolved, Option<Arc<OwnedFd>>), RootfsError> {
        let key = relative(path)?;
        let asked = match self.memo().map(|m| m.get(&key)) {
            Some(Ok(r)) => {
                let fd = match &r {
                    Resolved::Found { fd, .. } => fd.clone(),
                    Resolved::Absent => None,
                };
                return Ok((r, fd));
            }
            Some(Err(asked)) => asked,
            None => key.clone(),
        };
        let flags = if want_dir {
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK
        } else {
            libc::O_PATH
        };
        let fd = match openat2(self.fd.as_fd(), &asked, flags, 0, RESOLVE) {
            Ok(fd) => fd,
            // Not a directory: maybe a file at the end, so not absent.
            Err(e) if want_dir && e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(RootfsError::io("open directory", path, e))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                if let Some(mut m) = self.memo() {
                    m.put(key, Resolved::Absent);
                }
                return Ok((Resolved::Absent, None));
            }
            Err(e) => return Err(RootfsError::io("open", path, e)),
        };
        let st = fstat(fd.as_fd()).map_err(|e| RootfsError::io("stat", path, e))?;
        let kind = EntryKind::from_mode(st.st_mode);
        let mtime = (st.st_mtime, st.st_mtime_nsec);
        let host = fd_path(fd.as_fd()).map_err(|e| RootfsError::io("resolve", path, e))?;
        let real = match host.strip_prefix(&self.canonical) {
            Ok(rest) => Path::new("/").join(rest),
            // The kernel kept the lookup in the root, so only a concurrent
            // move of the rootfs itself gets here: say so rather than guess.
            Err(_) => {
                return Err(RootfsError::io(
                    "resolve",
                    path,
                    std::io::Error::other(format!(
                        "resolved to {} outside the rootfs {}",
                        host.display(),
                        self.canonical.display()
                    )),
                ))
            }
        };
        let fd = Arc::new(fd);
        if let Some(mut m) = self.memo() {
            // Files' O_PATH fds to read them, directories' readable fds
            // to list them.
            let useful = match kind {
                EntryKind::File => !want_dir,
                EntryKind::Dir => want_dir,
                _ => false,
            };
            let keep = useful && m.fds < MEMO_MAX_FDS;
            m.fds += usize::from(keep);
            let r = Resolved::Found {
                path: real.clone(),
                kind,
                mtime,
                fd: keep.then(|| fd.clone()),
            };
            // A canonical path resolves to itself: remembered too, so the
            // same file reached by another name is not asked again.
            if let Ok(k) = relative(&real) {
                m.put(k, r.clone());
            }
            m.put(key, r);
        }
        Ok((
            Resolved::Found {
                path: real,
                kind,
                mtime,
                fd: None,
            },
            Some(fd),
        ))
    }

    /// The host path the rootfs was opened with.
    pub fn host_path(&self) -> &Path {
        &self.host_path
    }

    /// The directory fd of the root, for `*at` calls of the apply layer.
    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens a path `O_PATH` inside the root. `follow_last`: whether a
    /// symlink as the last component is followed (inside the root) or
    /// returned itself.
    pub fn open_path(&self, path: &Path, follow_last: bool) -> Result<OwnedFd, RootfsError> {
        let rel = relative(path)?;
        let mut flags = libc::O_PATH;
        if !follow_last {
            flags |= libc::O_NOFOLLOW;
        }
        openat2(self.fd.as_fd(), &rel, flags, 0, RESOLVE)
            .map_err(|e| RootfsError::io("open", path, e))
    }

    /// Opens a directory `O_PATH` inside the root (symlinks followed in root).
    pub fn open_dir(&self, path: &Path) -> Result<OwnedFd, RootfsError> {
        let rel = relative(path)?;
        openat2(
            self.fd.as_fd(),
            &rel,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            RESOLVE,
        )
        .map_err(|e| RootfsError::io("open directory", path, e))
    }

    /// Opens a regular file read-only (O_CLOEXEC), following symlinks only
    /// inside the root.
    pub fn open_file(&self, path: &Path) -> Result<File, RootfsError> {
        if self.memo.is_some() {
            let (r, fd) = self.lookup(path)?;
            return self.open_resolved(path, r, fd).map(|(f, _)| f);
        }
        let opath = self.open_path(path, true)?;
        self.reopen_file(opath.as_fd(), path)
    }

    /// [`Rootfs::open_file`] of what [`Rootfs::lookup`] found; also returns
    /// the canonical path.
    fn open_resolved(
        &self,
        path: &Path,
        r: Resolved,
        fd: Option<Arc<OwnedFd>>,
    ) -> Result<(File, PathBuf), RootfsError> {
        let (real, kind) = match r {
            Resolved::Found { path, kind, .. } => (path, kind),
            Resolved::Absent => {
                return Err(RootfsError::io(
                    "open",
                    path,
                    std::io::Error::from_raw_os_error(libc::ENOENT),
                ))
            }
        };
        if kind != EntryKind::File {
            return Err(RootfsError::NotRegular {
                path: path.to_owned(),
                found: kind.as_str(),
            });
        }
        let opath = match fd {
            Some(fd) => fd,
            None => Arc::new(
                openat2(self.fd.as_fd(), &relative(&real)?, libc::O_PATH, 0, RESOLVE)
                    .map_err(|e| RootfsError::io("open", path, e))?,
            ),
        };
        Ok((self.reopen_file(opath.as_fd(), path)?, real))
    }

    /// Reopens an `O_PATH` fd for reading once it is known to be a regular
    /// file off the kernel's filesystems (the fd's inode never changes
    /// kind, so this check is the one that counts).
    fn reopen_file(&self, opath: BorrowedFd<'_>, path: &Path) -> Result<File, RootfsError> {
        let st = fstat(opath).map_err(|e| RootfsError::io("stat", path, e))?;
        let kind = EntryKind::from_mode(st.st_mode);
        if kind != EntryKind::File {
            return Err(RootfsError::NotRegular {
                path: path.to_owned(),
                found: kind.as_str(),
            });
        }
        self.refuse_kernel_fs(opath, path)?;
        reopen_read(opath).map_err(|e| RootfsError::io("open", path, e))
    }

    /// [`RootfsError::KernelFile`] when `fd` (opened for the container path
    /// `path`) is on a kernel filesystem.
    pub fn refuse_kernel_fs(&self, fd: BorrowedFd<'_>, path: &Path) -> Result<(), RootfsError> {
        match kernel_fs(fd).map_err(|e| RootfsError::io("statfs", path, e))? {
            Some(fs) => Err(RootfsError::KernelFile {
                path: path.to_owned(),
                fs,
            }),
            None => Ok(()),
        }
    }

    /// Reads at most `limit` bytes of a regular file (error if larger).
    pub fn read_bounded(&self, path: &Path, limit: u64) -> Result<Vec<u8>, RootfsError> {
        let too_large = |size: u64| RootfsError::TooLarge {
            path: path.to_owned(),
            size,
            limit,
        };
        let (f, real) = if self.memo.is_some() {
            let (r, fd) = self.lookup(path)?;
            if let Resolved::Found { path: real, .. } = &r {
                let known = self.memo().and_then(|m| m.files.get(real).cloned());
                if let Some(bytes) = known {
                    if bytes.len() as u64 > limit {
                        return Err(too_large(bytes.len() as u64));
                    }
                    return Ok(bytes.to_vec());
                }
            }
            let (f, real) = self.open_resolved(path, r, fd)?;
            (f, Some(real))
        } else {
            (self.open_file(path)?, None)
        };
        let buf = Self::read_file(f, path, limit)?;
        if let (Some(real), Some(mut m)) = (real, self.memo()) {
            if m.bytes + buf.len() <= MEMO_MAX_BYTES && m.charge(real.as_os_str().len()) {
                m.bytes += buf.len();
                m.files.insert(real, Arc::new(buf.clone()));
            }
        }
        Ok(buf)
    }

    /// Reads an open regular file of the image, at most `limit` bytes.
    fn read_file(f: File, path: &Path, limit: u64) -> Result<Vec<u8>, RootfsError> {
        let size = f
            .metadata()
            .map_err(|e| RootfsError::io("stat", path, e))?
            .len();
        if size > limit {
            return Err(RootfsError::TooLarge {
                path: path.to_owned(),
                size,
                limit,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        // The file may grow between fstat and read: the take() bound is
        // what actually protects memory.
        f.take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| RootfsError::io("read", path, e))?;
        if buf.len() as u64 > limit {
            return Err(RootfsError::TooLarge {
                path: path.to_owned(),
                size: buf.len() as u64,
                limit,
            });
        }
        Ok(buf)
    }

    /// Resolves a path to its canonical in-root path (symlinks followed in
    /// root), or None if absent.
    pub fn resolve(&self, path: &Path) -> Result<Option<PathBuf>, RootfsError> {
        match self.lookup(path)?.0 {
            Resolved::Found { path, .. } => Ok(Some(path)),
            Resolved::Absent => Ok(None),
        }
    }

    /// The modification time (seconds, nanoseconds) of what `path`
    /// resolves to, or None if absent; free in a snapshot once resolved.
    pub fn modified(&self, path: &Path) -> Result<Option<(i64, i64)>, RootfsError> {
        match self.lookup(path)?.0 {
            Resolved::Found { mtime, .. } => Ok(Some(mtime)),
            Resolved::Absent => Ok(None),
        }
    }

    /// File names of a directory (at most [`MAX_DIR_ENTRIES`]), sorted.
    pub fn list_dir(&self, path: &Path) -> Result<Vec<String>, RootfsError> {
        let fail =
            |errno: i32| RootfsError::io("list", path, std::io::Error::from_raw_os_error(errno));
        let (r, fd) = self.lookup_as(path, true).map_err(|e| match e {
            RootfsError::Io { source, .. } => RootfsError::io("list", path, source),
            e => e,
        })?;
        let real = match r {
            Resolved::Found {
                path,
                kind: EntryKind::Dir,
                ..
            } => path,
            Resolved::Found { .. } => return Err(fail(libc::ENOTDIR)),
            Resolved::Absent => return Err(fail(libc::ENOENT)),
        };
        if let Some(names) = self.memo().and_then(|m| m.listed.get(&real).cloned()) {
            return Ok(names.to_vec());
        }
        // A directory remembered from a plain resolution has no readable
        // fd yet.
        let fd = match fd {
            Some(fd) => fd,
            None => Arc::new(
                openat2(
                    self.fd.as_fd(),
                    &relative(&real)?,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK,
                    0,
                    RESOLVE,
                )
                .map_err(|e| RootfsError::io("list", path, e))?,
            ),
        };
        let names = Self::read_names(fd.as_fd(), path)?;
        if let Some(mut m) = self.memo() {
            if m.names + names.len() <= MEMO_MAX_NAMES && m.charge(real.as_os_str().len()) {
                m.names += names.len();
                m.listed.insert(real, Arc::new(names.clone()));
            }
        }
        Ok(names)
    }

    /// Resolves a directory (symlinks followed in root) opened for listing,
    /// so that a [`Rootfs::list_dir`] of it costs no second open; None if
    /// absent or not a directory.
    pub fn resolve_dir(&self, path: &Path) -> Result<Option<PathBuf>, RootfsError> {
        match self.lookup_as(path, true) {
            Ok((
                Resolved::Found {
                    path,
                    kind: EntryKind::Dir,
                    ..
                },
                _,
            )) => Ok(Some(path)),
            Ok(_) => Ok(None),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The sorted names of a directory opened readable, read from its
    /// start through a duplicate of the fd (no new open of the image).
    fn read_names(fd: BorrowedFd<'_>, path: &Path) -> Result<Vec<String>, RootfsError> {
        let io = |e: std::io::Error| RootfsError::io("list", path, e);
        let dup = fd.try_clone_to_owned().map_err(io)?;
        // SAFETY: a valid fd; the duplicate shares the offset, rewound so a
        // second listing of a kept fd starts at the beginning.
        if unsafe { libc::lseek(dup.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        let mut dir = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(dup))
            .map_err(|e| io(e.into()))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| io(e.into()))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if names.len() >= MAX_DIR_ENTRIES {
                return Err(RootfsError::TooManyEntries {
                    path: path.to_owned(),
                    limit: MAX_DIR_ENTRIES,
                });
            }
            names.push(String::from_utf8_lossy(name).into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// lstat-like: kind of the entry (file, dir, symlink, other) without
    /// following the last component; None if absent.
    pub fn kind(&self, path: &Path) -> Result<Option<EntryKind>, RootfsError> {
        let fd = match self.open_path(path, false) {
            Ok(fd) => fd,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let st = fstat(fd.as_fd()).map_err(|e| RootfsError::io("stat", path, e))?;
        Ok(Some(EntryKind::from_mode(st.st_mode)))
    }

    /// Creates the missing directories of `path` inside the root, one
    /// component at a time, each relative to an fd of its parent obtained
    /// inside the root. Existing components may be symlinks (followed in
    /// root: a merged-`/usr` image has `/lib -> usr/lib`). Returns the
    /// directories created, outermost first, so a rollback can remove them
    /// innermost first.
    pub fn mkdir_all(&self, path: &Path, mode: libc::mode_t) -> Result<Vec<PathBuf>, RootfsError> {
        // What was absent may be there now.
        self.forget();
        let norm = normalize(path)?;
        let mut created = Vec::new();
        let mut prefix = PathBuf::from("/");
        let mut parent = self.open_dir(&prefix)?;
        for comp in norm.components().skip(1) {
            prefix.push(comp);
            parent = match self.open_dir(&prefix) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let name = cstr(comp.as_os_str(), &prefix)?;
                    // SAFETY: valid dir fd and NUL-terminated single name.
                    let r = unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), mode) };
                    if r != 0 {
                        let err = std::io::Error::last_os_error();
                        if err.raw_os_error() == Some(libc::EEXIST) {
                            // A dangling symlink (or a racing creator): never
                            // create through it.
                            let found = self.kind(&prefix)?.unwrap_or(EntryKind::Other);
                            if found != EntryKind::Dir {
                                return Err(RootfsError::NotDirectory {
                                    path: prefix,
                                    found: if found == EntryKind::Symlink {
                                        "dangling symbolic link"
                                    } else {
                                        found.as_str()
                                    },
                                });
                            }
                        } else {
                            return Err(RootfsError::io("create directory", &prefix, err));
                        }
                    } else {
                        created.push(prefix.clone());
                    }
                    self.open_dir(&prefix)?
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    let found = self.kind(&prefix)?.unwrap_or(EntryKind::Other);
                    return Err(RootfsError::NotDirectory {
                        path: prefix,
                        found: found.as_str(),
                    });
                }
                Err(e) => return Err(e),
            };
        }
        Ok(created)
    }

    /// Creates an empty regular file inside the root (its parent must
    /// exist), never following a symlink at the last component. Returns
    /// false when an entry is already there (whatever it is: the caller
    /// checks its kind).
    pub fn create_file(&self, path: &Path, mode: libc::mode_t) -> Result<bool, RootfsError> {
        self.forget();
        let (parent, name) = split(path)?;
        let dir = self.open_dir(&parent)?;
        let c = cstr(&name, path)?;
        // SAFETY: valid dir fd and NUL-terminated single name.
        let raw = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if raw < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EEXIST) {
                return Ok(false);
            }
            return Err(RootfsError::io("create", path, err));
        }
        // SAFETY: fresh fd, closed on drop.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
        Ok(true)
    }
}

fn is_absent(e: &RootfsError) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// The path the kernel records for an fd (`/proc/self/fd/N`).
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> std::io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Reopens an `O_PATH` fd for reading. The fd was checked to be a regular
/// file, so this cannot open a device or block on a FIFO.
fn reopen_read(fd: BorrowedFd<'_>) -> std::io::Result<File> {
    let c = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL");
    // SAFETY: NUL-terminated path; the fd is owned by the File below.
    let raw = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    Ok(unsafe { File::from_raw_fd(raw) })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    pub(crate) use crate::testutil::TempDir;

    /// An image with every trick: absolute symlinks to host paths, `..`
    /// chains, a loop, a merged-/usr lib link.
    pub(crate) fn hostile_image() -> TempDir {
        let t = TempDir::new("rootfs");
        let r = &t.0;
        std::fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/passwd"), "root:x:0:0:image:/root:/bin/sh\n").unwrap();
        std::fs::write(
            r.join("usr/lib/x86_64-linux-gnu/libmpich.so.12"),
            b"\x7fELF stand-in",
        )
        .unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("/etc/passwd", r.join("abs-passwd")).unwrap();
        symlink("/", r.join("abs-root")).unwrap();
        symlink("../../../../../../etc/passwd", r.join("dotdot-passwd")).unwrap();
        symlink("loop-b", r.join("loop-a")).unwrap();
        symlink("loop-a", r.join("loop-b")).unwrap();
        symlink("/nonexistent-hpcc-target", r.join("dangling")).unwrap();
        symlink("/tmp", r.join("evil-dir")).unwrap();
        t
    }

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    #[test]
    fn absolute_symlink_to_host_file_resolves_in_root() {
        let t = hostile_image();
        let r = Rootfs::open(&t.0).unwrap();
        let got = r.read_bounded(p("/abs-passwd"), 4096).unwrap();
        assert_eq!(got, b"root:x:0:0:image:/root:/bin/sh\n");
        assert_eq!(
            r.resolve(p("/abs-passwd")).unwrap(),
            Some(PathBuf::from("/etc/passwd"))
        );
    }

    #[test]
    fn dotdot_chains_stop_at_the_root() {
        let t = hostile_image();
        let r = Rootfs::open(&t.0).unwrap();
        let got = r.read_bounded(p("/dotdot-passwd"), 4096).unwrap();
        assert!(got.starts_with(b"root:x:0:0:image"));
        let got = r.read_bounded(p("../../../../etc/passwd"), 4096).unwrap();
        assert!(got.starts_with(b"root:x:0:0:image"));
        assert_eq!(
            r.resolve(p("/abs-root/..")).unwrap(),
            Some(PathBuf::from("/"))
        );
        // The host's /etc/hostname never appears through the image's `/`.
        assert_eq!(r.resolve(p("/abs-root/etc/hostname")).unwrap(), None);
    }

    #[test]
    fn kernel_files_are_never_read() {
        // The host's own root stands for a rootfs with /proc and /sys
        // mounted, as at prestart. /proc/kmsg would block a reader.
        let r = Rootfs::open(p("/")).unwrap();
        for f in [
            "/proc/kmsg",
            "/proc/self/status",
            "/sys/kernel/uevent_seqnum",
        ] {
            let e = r.read_bounded(p(f), 4096).unwrap_err();
            assert!(matches!(e, RootfsError::KernelFile { .. }), "{f}: {e}");
            assert!(e.to_string().contains("kernel's"), "{e}");
        }
        assert!(r.read_bounded(p("/etc/hostname"), 4096).is_ok());
    }

    #[test]
    fn symlink_loop_is_an_error_naming_the_path() {
        let t = hostile_image();
        let r = Rootfs::open(&t.0).unwrap();
        let e = r.open_file(p("/loop-a")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        assert!(e.to_string().contains("/loop-a"), "{e}");
        assert!(r.resolve(p("/loop-a")).is_err());
        assert_eq!(r.kind(p("/loop-a")).unwrap(), Some(EntryKind::Symlink));
    }

    #[test]
    fn kind_does_not_follow_the_last_component() {
        let t = hostile_image();
        let r = Rootfs::open(&t.0).unwrap();
        assert_eq!(r.kind(p("/lib")).unwrap(), Some(EntryKind::Symlink));
        assert_eq!(r.kind(p("/lib/")).unwrap(), Some(EntryKind::Symlink));
        assert_eq!(
            r.kind(p("/lib/x86_64-linux-gnu")).unwrap(),
            Some(EntryKind::Dir)
        );
        assert_eq!(
            r.kind(p("/lib/x86_64-linux-gnu/libmpich.so.12")).unwrap(),
            Some(EntryKind::File)
        );
        assert_eq!(r.kind(p("/nope")).unwrap(), None);
        assert_eq!(r.kind(p("/etc/passwd/x")).unwrap(), None);
        assert_eq!(r.kind(p("/")).unwrap(), Some(EntryKind::Dir));
    }

    #[test]
    fn resolve_follows_merged_usr() {
        let t = hostile_image();
        let r = Rootfs::open(&t.0).unwrap();
        assert_eq!(
            r.resolve(p("/lib/x86_64-linux-gnu/libmpich.so.12"))
                .unwrap(),
            Some(PathBuf::from("/usr/lib/x86_64-linux-gnu/libmpich.so.12"))
        );
        assert_eq!(r.resolve(p("/dangling")).unwrap(), None);
        assert_eq!(r.host_path(), t.0.as_path());
    }

    #[test]
    fn list_dir_is_sorted_and_in_root() {
        let t = hostile_image();
        let r = Rootfs::open(&t.0).unwrap();
        assert_eq!(
            r.list_dir(p("/lib/x86_64-linux-gnu")).unwrap(),
            vec!["libmpich.so.12"]
        );
        // /evil-dir -> /tmp is the image's /tmp (absent), not the host's.
        assert!(r.list_dir(p("/evil-dir")).is_err());
        let top = r.list_dir(p("/abs-root")).unwrap();
        assert!(top.contains(&"abs-passwd".to_string()), "{top:?}");
        let mut sorted = top.clone();
        sorted.sort();
        assert_eq!(top, sorted);
    }

    #[test]
    fn read_bounded_enforces_the_limit_and_regular_files() {
        let t = hostile_image();
        let r = Rootfs::open(&t.0).unwrap();
        let e = r.read_bounded(p("/etc/passwd"), 4).unwrap_err();
        assert!(matches!(e, RootfsError::TooLarge { limit: 4, .. }), "{e}");
        let e = r.read_bounded(p("/etc"), 4096).unwrap_err();
        assert!(matches!(e, RootfsError::NotRegular { .. }), "{e}");
        assert!(e.to_string().contains("/etc"));
        let e = r.open_file(p("/nope")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = r.open_file(p("/etc/pa\0sswd")).unwrap_err();
        assert!(matches!(e, RootfsError::InvalidPath { .. }));
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let t = hostile_image();
        let c = CString::new(t.0.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let r = Rootfs::open(&t.0).unwrap();
        let e = r.read_bounded(p("/fifo"), 10).unwrap_err();
        assert!(matches!(e, RootfsError::NotRegular { .. }), "{e}");
    }

    #[test]
    fn mkdir_all_creates_inside_the_root_through_symlinks() {
        let t = hostile_image();
        let outside = TempDir::new("outside");
        symlink(&outside.0, t.0.join("host-link")).unwrap();
        let r = Rootfs::open(&t.0).unwrap();
        // /abs-root -> / : created under the rootfs, never at the host's /.
        let created = r.mkdir_all(p("/abs-root/hpcc-made/deps"), 0o755).unwrap();
        assert_eq!(
            created,
            vec![
                PathBuf::from("/abs-root/hpcc-made"),
                PathBuf::from("/abs-root/hpcc-made/deps")
            ]
        );
        assert!(t.0.join("hpcc-made/deps").is_dir());
        assert!(!Path::new("/hpcc-made").exists());
        // A link to an absolute host dir is dangling inside the root: refused,
        // and the host dir stays empty.
        let e = r.mkdir_all(p("/host-link/x"), 0o755).unwrap_err();
        assert!(e.to_string().contains("/host-link"), "{e}");
        assert!(std::fs::read_dir(&outside.0).unwrap().next().is_none());
        // Merged /usr: /lib/hpcc lands in /usr/lib/hpcc.
        r.mkdir_all(p("/lib/hpcc"), 0o755).unwrap();
        assert!(t.0.join("usr/lib/hpcc").is_dir());
        // Existing path: nothing created.
        assert!(r.mkdir_all(p("/usr/lib"), 0o755).unwrap().is_empty());
    }

    #[test]
    fn mkdir_all_refuses_dangling_links_and_files() {
        let t = hostile_image();
        let r = Rootfs::open(&t.0).unwrap();
        let e = r.mkdir_all(p("/dangling/sub"), 0o755).unwrap_err();
        assert!(e.to_string().contains("dangling"), "{e}");
        assert!(!Path::new("/nonexistent-hpcc-target").exists());
        let e = r.mkdir_all(p("/etc/passwd/sub"), 0o755).unwrap_err();
        assert!(matches!(e, RootfsError::NotDirectory { .. }), "{e}");
        assert!(r.mkdir_all(p("/loop-a/x"), 0o755).is_err());
    }

    #[test]
    fn create_file_never_follows_the_last_link() {
        let t = hostile_image();
        let r = Rootfs::open(&t.0).unwrap();
        assert!(r.create_file(p("/etc/new"), 0o644).unwrap());
        assert!(!r.create_file(p("/etc/new"), 0o644).unwrap());
        // A symlink at the last component is "already there", never written through.
        assert!(!r.create_file(p("/dangling"), 0o644).unwrap());
        assert!(!Path::new("/nonexistent-hpcc-target").exists());
        // Parent through /abs-root stays in the root.
        assert!(r
            .create_file(p("/abs-root/etc/made-by-hpcc"), 0o644)
            .unwrap());
        assert!(t.0.join("etc/made-by-hpcc").is_file());
        assert!(!Path::new("/etc/made-by-hpcc").exists());
        assert!(r.create_file(p("/"), 0o644).is_err());
    }

    #[test]
    fn a_snapshot_keeps_a_bounded_amount_of_path_text() {
        let mut m = Memo::default();
        let long = "d/".repeat(2000);
        for i in 0..MEMO_MAX_PATHS {
            let key = PathBuf::from(format!("{long}{i}"));
            m.put(
                key.clone(),
                Resolved::Found {
                    path: Path::new("/").join(&key),
                    kind: EntryKind::File,
                    mtime: (0, 0),
                    fd: None,
                },
            );
            m.put(PathBuf::from(format!("{long}absent{i}")), Resolved::Absent);
        }
        assert!(m.path_bytes <= MEMO_MAX_PATH_BYTES, "{}", m.path_bytes);
        assert!(m.resolved.len() < 300, "{}", m.resolved.len());
        // Short paths still fit under the count bound.
        let mut m = Memo::default();
        for i in 0..MEMO_MAX_PATHS + 10 {
            m.put(PathBuf::from(format!("usr/lib/x{i}")), Resolved::Absent);
        }
        assert_eq!(m.resolved.len(), MEMO_MAX_PATHS);
    }

    #[test]
    fn a_snapshot_answers_like_the_kernel_and_asks_once() {
        let t = hostile_image();
        let plain = Rootfs::open(&t.0).unwrap();
        let snap = Rootfs::open_snapshot(&t.0).unwrap();
        for q in [
            "/lib/x86_64-linux-gnu/libmpich.so.12",
            "/usr/lib/x86_64-linux-gnu/libmpich.so.12",
            "/lib/../etc/passwd",
            "/abs-passwd",
            "/abs-root/etc/hostname",
            "/dangling",
            "/dangling/x",
            "/etc/passwd/x",
            "/abs-root/..",
            "/",
        ] {
            // Twice: the second answer comes from memory.
            for _ in 0..2 {
                assert_eq!(
                    snap.resolve(p(q)).unwrap(),
                    plain.resolve(p(q)).unwrap(),
                    "{q}"
                );
            }
        }
        assert!(snap.resolve(p("/loop-a")).is_err());
        assert_eq!(
            snap.read_bounded(p("/dotdot-passwd"), 4096).unwrap(),
            plain.read_bounded(p("/dotdot-passwd"), 4096).unwrap()
        );
        let e = snap.read_bounded(p("/abs-passwd"), 4).unwrap_err();
        assert!(matches!(e, RootfsError::TooLarge { limit: 4, .. }), "{e}");
        let e = snap.read_bounded(p("/etc"), 4096).unwrap_err();
        assert!(matches!(e, RootfsError::NotRegular { .. }), "{e}");
        assert!(snap.list_dir(p("/evil-dir")).is_err());
        assert!(snap.list_dir(p("/etc/passwd")).is_err());
        // Remembered: a file changed behind the snapshot's back is read as
        // it was, the same answer within one launch.
        std::fs::write(t.0.join("etc/passwd"), "changed\n").unwrap();
        assert!(snap
            .read_bounded(p("/etc/passwd"), 4096)
            .unwrap()
            .starts_with(b"root:x:0:0:image"));
        assert_eq!(
            snap.list_dir(p("/lib/x86_64-linux-gnu")).unwrap(),
            vec!["libmpich.so.12"]
        );
        // What hpcc creates itself is seen: creation forgets.
        assert_eq!(snap.resolve(p("/etc/new/x")).unwrap(), None);
        snap.mkdir_all(p("/etc/new"), 0o755).unwrap();
        assert!(snap.create_file(p("/etc/new/x"), 0o644).unwrap());
        assert_eq!(
            snap.resolve(p("/etc/new/x")).unwrap(),
            Some(PathBuf::from("/etc/new/x"))
        );
        assert_eq!(
            snap.read_bounded(p("/etc/passwd"), 4096).unwrap(),
            b"changed\n"
        );
    }

    #[test]
    fn normalize_clamps_at_root() {
        assert_eq!(
            normalize(p("/a/../../b/./c")).unwrap(),
            PathBuf::from("/b/c")
        );
        assert_eq!(normalize(p("x/y")).unwrap(), PathBuf::from("/x/y"));
        assert_eq!(normalize(p("/..")).unwrap(), PathBuf::from("/"));
    }
}
