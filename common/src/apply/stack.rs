//! The host library stack on the host: one root-owned directory per
//! distinct set of host files, `<cache dir>/stack/<sha256>/`, bound once
//! in the container at [`crate::tweaks::stack::STACK_ROOT`] in place of one
//! bind per library ([`crate::tweaks::stack`] decides which mounts).
//!
//! - **Content-addressed, per boot.** The name is the SHA-256 of every
//!   entry's name, host path and the identity of the file it holds
//!   (device, inode, size, mode, owner and mtime; not the ctime, which the
//!   stack's own hard link to the file changes): an upgraded or rewritten
//!   library gives a new directory, and the same plan finds its directory
//!   already there (a few `stat`s and one `lstat` per start). `/run` is
//!   per boot.
//! - **Filled once, atomically.** Built in a temporary directory of the
//!   store, then renamed into place; a launch that loses the race to
//!   another filling the same digest finds the rename refused (the
//!   directory is there and not empty), removes its own and uses the
//!   winner's.
//! - **Hard links or copies, never symlinks.** A file is hard-linked when
//!   it is on the store's file system, owned by root, writable by no one
//!   else, readable by all and without setuid/setgid bits (then the link
//!   is exactly what a bind of that file showed); otherwise it is copied,
//!   bounded ([`MAX_FILE_BYTES`], [`MAX_STACK_BYTES`], and the store's
//!   file system left at most half full), 0644 or 0755. A file that is
//!   not readable by all is never stacked (the stack is): it keeps its
//!   bind, as does anything else the stack cannot hold; only a store that
//!   is not root's fails the launch.
//!   Host symlinks (`libhwloc.so.15 -> libhwloc.so.15.0.0`, UCX's module
//!   names) are resolved on the host, which is trusted, and their target
//!   stored under the link's name: the container finds no link in the
//!   stack to follow anywhere.
//! - **Root only, bounded.** Only root keeps a store (rootless runtimes
//!   keep one bind per file, as before); directories are 0755, the store
//!   must be a directory only root can change, at most [`MAX_STACKS`]
//!   stacks are kept (beyond that a launch binds file by file and says
//!   so: a stack may be bound in a running container, so none is removed
//!   while the machine runs), and a directory entry is walked at most
//!   [`MAX_DEPTH`] deep and [`MAX_ENTRIES`] files in all.

use crate::plan::{Mount, Tweaks};
use crate::tweaks::stack::{self, StackPlan};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Most stacks kept in one store.
pub const MAX_STACKS: usize = 256;
/// Most files in one stack (UCX's module directory has about 20).
pub const MAX_ENTRIES: usize = 4096;
/// Deepest directory level walked below a directory entry.
pub const MAX_DEPTH: usize = 4;
/// Largest file copied into a stack.
pub const MAX_FILE_BYTES: u64 = 512 << 20;
/// Most bytes copied into one stack (hard links cost nothing).
pub const MAX_STACK_BYTES: u64 = 1 << 30;
/// Age after which a temporary directory of the store is a dead launch's:
/// filling a stack takes milliseconds to seconds.
pub const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(600);

/// Why the stack could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The store is not a directory only root can change, or cannot be
    /// listed or written.
    #[error("host library stack store {dir}: {reason}")]
    Store {
        /// The store.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// Copying the stack would fill the store's file system past half
    /// (`/run` is a tmpfs in RAM that systemd, slurmd and munge need).
    #[error("host library stack store {dir}: {need} bytes to copy, and its file system may only be half full ({used} of {size} bytes used)")]
    NoRoom {
        /// The store.
        dir: PathBuf,
        /// Bytes the stack would copy.
        need: u64,
        /// Bytes used on the store's file system.
        used: u64,
        /// Size of the store's file system.
        size: u64,
    },
    /// A host file of the plan cannot be put in the stack.
    #[error("host library stack: {path}: {reason}")]
    Entry {
        /// The host path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The store of root's stacks under the policy's `cache.dir`.
pub fn store_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("stack")
}

/// `tweaks` with its stackable mounts replaced by one bind of a stack
/// directory filled under `store`; unchanged (borrowed) when nothing is
/// stacked, when not running as root, or when the store is full.
pub fn realize<'a>(tweaks: &'a Tweaks, store: &Path) -> Result<Cow<'a, Tweaks>, StackError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(Cow::Borrowed(tweaks));
    }
    let Some(plan) = stack::split(tweaks) else {
        return Ok(Cow::Borrowed(tweaks));
    };
    match prepare(&plan, store) {
        Ok(Some(dir)) => Ok(Cow::Owned(with_stack(tweaks, &plan, dir))),
        Ok(None) => Ok(Cow::Borrowed(tweaks)),
        // A host file the stack cannot hold as it is (not readable by all,
        // too large, no room, changed while filled): the one-bind-per-file
        // plan shows the container the same files, so the launch goes on
        // with it. Only a store that is not root's fails the launch: that
        // is someone tampering with it, for the admin to see.
        Err(e @ (StackError::Entry { .. } | StackError::NoRoom { .. })) => {
            tracing::warn!("{e}: libraries are bound one by one");
            Ok(Cow::Borrowed(tweaks))
        }
        Err(e) => Err(e),
    }
}

/// The tweaks with the stack's one bind where the first stacked mount was.
pub fn with_stack(tweaks: &Tweaks, plan: &StackPlan, dir: PathBuf) -> Tweaks {
    let mut mounts = plan.binds.clone();
    mounts.insert(
        plan.position.min(mounts.len()),
        Mount {
            source: dir,
            destination: plan.destination.clone(),
            readonly: true,
            reason: format!(
                "hpcc's host library stack: {} files and directories in one bind",
                plan.entries.len()
            ),
        },
    );
    Tweaks {
        mounts,
        ..tweaks.clone()
    }
}

/// One file of the stack: where it goes and the host file it holds.
#[derive(Debug, Clone)]
struct Item {
    /// Relative path in the stack.
    name: PathBuf,
    /// The host file, symlinks resolved.
    real: PathBuf,
    meta: fs::Metadata,
}

/// The files the stack holds, walked from the plan's entries, and their
/// digest.
fn manifest(plan: &StackPlan) -> Result<(Vec<Item>, Vec<PathBuf>, String), StackError> {
    let mut items = Vec::new();
    let mut dirs = Vec::new();
    for e in &plan.entries {
        walk(&e.source, &e.name, None, &mut items, &mut dirs)?;
    }
    let mut h = Sha256::new();
    h.update(b"hpcc-stack-1\0");
    for d in &dirs {
        h.update(b"d\0");
        h.update(d.as_os_str().as_encoded_bytes());
        h.update(b"\0");
    }
    for i in &items {
        let m = &i.meta;
        h.update(b"f\0");
        h.update(i.name.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        h.update(i.real.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        for n in [
            m.dev(),
            m.ino(),
            m.size(),
            u64::from(m.mode()),
            u64::from(m.uid()),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
        ] {
            h.update(n.to_le_bytes());
        }
    }
    let digest = h
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    Ok((items, dirs, digest))
}

/// Walks one entry of the plan. `within` is the canonical directory of a
/// directory entry and its depth below it: a symlink among its children
/// is followed only to a file inside it (UCX's module names point at
/// their siblings), so a directory some other account owns cannot make
/// root put `/etc/...` in every container.
fn walk(
    source: &Path,
    name: &Path,
    within: Option<(&Path, usize)>,
    items: &mut Vec<Item>,
    dirs: &mut Vec<PathBuf>,
) -> Result<(), StackError> {
    let bad = |reason: String| StackError::Entry {
        path: source.to_owned(),
        reason,
    };
    // One budget for everything visited, directories included: a
    // directory of links to itself must not keep the launch walking.
    if items.len() + dirs.len() >= MAX_ENTRIES {
        return Err(bad(format!("more than {MAX_ENTRIES} entries in the stack")));
    }
    // The plan's own entries are the policy's host paths (the host's
    // symlinks, `libfoo.so.1 -> libfoo.so.1.2.3`, are followed); below a
    // directory entry, only within it.
    let real = fs::canonicalize(source).map_err(|e| bad(e.to_string()))?;
    if let Some((top, _)) = within {
        if !real.starts_with(top) {
            return Err(bad(format!(
                "leads out of {} (to {})",
                top.display(),
                real.display()
            )));
        }
    }
    let meta = fs::metadata(&real).map_err(|e| bad(e.to_string()))?;
    if meta.is_file() {
        // The stack is readable by every user of the node and every
        // container: a file that is not (a licensed library, 0750) keeps
        // its bind, which keeps its owner and mode.
        if meta.mode() & 0o444 != 0o444 {
            return Err(bad(format!(
                "mode {:o}: not readable by all, and the stack would make it so",
                meta.mode() & 0o7777
            )));
        }
        items.push(Item {
            name: name.to_owned(),
            real,
            meta,
        });
        return Ok(());
    }
    if !meta.is_dir() {
        return Err(bad("neither a file nor a directory".into()));
    }
    let (top, depth) = within.unwrap_or((&real, 0));
    if depth > MAX_DEPTH {
        return Err(bad(format!("deeper than {MAX_DEPTH} directory levels")));
    }
    dirs.push(name.to_owned());
    let mut children: Vec<_> = fs::read_dir(&real)
        .map_err(|e| bad(e.to_string()))?
        .take(MAX_ENTRIES + 1)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if children.len() > MAX_ENTRIES {
        return Err(bad(format!("more than {MAX_ENTRIES} entries")));
    }
    children.sort_by_key(|c| c.file_name());
    for c in children {
        let p = c.path();
        // Devices, sockets and FIFOs (and links to them) are not library
        // files: a bind of the directory showed them, the stack leaves
        // them out rather than copy them.
        match fs::metadata(&p) {
            Ok(m) if m.is_file() || m.is_dir() => {}
            _ => continue,
        }
        walk(
            &p,
            &name.join(c.file_name()),
            Some((top, depth + 1)),
            items,
            dirs,
        )?;
    }
    Ok(())
}

/// The stack directory of `plan`, filled when missing; `None` when the
/// store already holds [`MAX_STACKS`] others.
pub fn prepare(plan: &StackPlan, store: &Path) -> Result<Option<PathBuf>, StackError> {
    let (items, dirs, digest) = manifest(plan)?;
    let store_err = |reason: String| StackError::Store {
        dir: store.to_owned(),
        reason,
    };
    let store = super::ldcache_file::trusted_dir(store).map_err(store_err)?;
    let dir = store.join(&digest);
    if let Some(d) = existing(&dir).map_err(store_err)? {
        return Ok(Some(d));
    }
    let held = stacks_held(&store).map_err(|e| store_err(e.to_string()))?;
    if held >= MAX_STACKS {
        tracing::warn!(store = %store.display(), "the host library stack store holds {MAX_STACKS} stacks: libraries are bound one by one");
        return Ok(None);
    }
    room(&store, &items)?;
    let (tmp, _lock) = temp_dir(&store).map_err(|e| store_err(e.to_string()))?;
    let filled = fill(&tmp, &items, &dirs).and_then(|()| {
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(|e| {
            StackError::Entry {
                path: tmp.clone(),
                reason: e.to_string(),
            }
        })
    });
    if let Err(e) = filled {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, &dir) {
        Ok(()) => Ok(Some(dir)),
        Err(e) => {
            // Another launch filled the same digest first (the rename
            // onto its non-empty directory is refused): use that one.
            let _ = fs::remove_dir_all(&tmp);
            match existing(&dir).map_err(store_err)? {
                Some(d) => Ok(Some(d)),
                None => Err(store_err(format!("renaming into {}: {e}", dir.display()))),
            }
        }
    }
}

/// Whether the copies of `items` (what cannot be hard-linked) leave the
/// store's file system at most half full. The image names the entries,
/// so images can ask for many stacks: this, with [`MAX_STACKS`], bounds
/// what they can take of the node's memory when the store is a tmpfs.
fn room(store: &Path, items: &[Item]) -> Result<(), StackError> {
    let store_err = |reason: String| StackError::Store {
        dir: store.to_owned(),
        reason,
    };
    let dev = fs::symlink_metadata(store)
        .map_err(|e| store_err(e.to_string()))?
        .dev();
    let need: u64 = items
        .iter()
        .filter(|i| !linkable(&i.meta, dev))
        .map(|i| i.meta.len())
        .sum();
    if need == 0 {
        return Ok(());
    }
    let st = nix::sys::statvfs::statvfs(store).map_err(|e| store_err(e.to_string()))?;
    let frsize = st.fragment_size() as u64;
    let size = (st.blocks() as u64).saturating_mul(frsize);
    let used = size.saturating_sub((st.blocks_free() as u64).saturating_mul(frsize));
    if used.saturating_add(need) > size / 2 {
        return Err(StackError::NoRoom {
            dir: store.to_owned(),
            need,
            used,
            size,
        });
    }
    Ok(())
}

/// An exclusive `flock` on a directory, held while it is filled: the
/// cleaner of [`stacks_held`] removes only temporary directories it can
/// lock, so a slow launch's (a hung file system, a suspended job) is
/// never removed under it, whatever its age.
struct DirLock {
    // Held for its lock: closing the descriptor releases it.
    _fd: fs::File,
}

impl DirLock {
    /// `Ok(None)` when another process holds it.
    fn try_lock(dir: &Path) -> std::io::Result<Option<DirLock>> {
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(dir)?;
        // SAFETY: flock on a descriptor this function owns; no memory is
        // passed.
        let rc = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if rc == 0 {
            return Ok(Some(DirLock { _fd: f }));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(e)
        }
    }
}

/// How many stacks the store holds (at most [`MAX_STACKS`] + 1 entries
/// looked at). A temporary directory left by a launch that died while
/// filling it (it is never bound: only renamed stacks are) is removed
/// once it is older than [`STALE_TEMP`]; a younger one may be another
/// launch's, still filling.
fn stacks_held(store: &Path) -> std::io::Result<usize> {
    let mut held = 0;
    for e in fs::read_dir(store)?.take(MAX_STACKS + 1) {
        let e = e?;
        let stale = e.file_name().to_string_lossy().starts_with(".tmp-")
            && e.metadata().is_ok_and(|m| {
                m.is_dir()
                    && m.modified()
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_TEMP)
            });
        // Locked by a launch still filling it: not stale, whatever its age.
        if stale {
            if let Ok(Some(_held)) = DirLock::try_lock(&e.path()) {
                if fs::remove_dir_all(e.path()).is_ok() {
                    continue;
                }
            }
        }
        held += 1;
    }
    Ok(held)
}

/// `dir` when it is a stack already filled: a real directory of root's
/// that no one else can write (the store admits no one else, so its
/// content is root's).
fn existing(dir: &Path) -> Result<Option<PathBuf>, String> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0 => Ok(Some(dir.to_owned())),
        Ok(m) => Err(format!(
            "{} is not a stack directory of root's (owner {}, mode {:o})",
            dir.display(),
            m.uid(),
            m.mode() & 0o7777
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// A new directory under the store, 0700 and locked while it is filled.
fn temp_dir(store: &Path) -> std::io::Result<(PathBuf, DirLock)> {
    for n in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let d = store.join(format!(".tmp-{}-{nanos:x}{n}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => {
                // Nobody else knows the name yet: the lock is free.
                let lock = DirLock::try_lock(&d)?.ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::WouldBlock, "a new directory is locked")
                })?;
                return Ok((d, lock));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free temporary name",
    ))
}

fn fill(tmp: &Path, items: &[Item], dirs: &[PathBuf]) -> Result<(), StackError> {
    let store_dev = fs::symlink_metadata(tmp)
        .map_err(|e| StackError::Entry {
            path: tmp.to_owned(),
            reason: e.to_string(),
        })?
        .dev();
    let mkdir = |d: &Path| -> Result<(), StackError> {
        let err = |e: std::io::Error| StackError::Entry {
            path: d.to_owned(),
            reason: e.to_string(),
        };
        match fs::DirBuilder::new().mode(0o755).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e)),
        }
        // The umask must not decide what the container's user may read.
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).map_err(err)
    };
    for d in dirs {
        // Parents first: `dirs` is in walk order, and entries of another
        // component (`mpich/`) come without a directory of their own.
        let mut at = tmp.to_owned();
        for c in d.components() {
            at.push(c);
            mkdir(&at)?;
        }
    }
    let mut copied = 0u64;
    for i in items {
        let dst = tmp.join(&i.name);
        if let Some(parent) = dst.parent() {
            let mut at = tmp.to_owned();
            for c in parent
                .strip_prefix(tmp)
                .unwrap_or(Path::new(""))
                .components()
            {
                at.push(c);
                mkdir(&at)?;
            }
        }
        if linkable(&i.meta, store_dev) && fs::hard_link(&i.real, &dst).is_ok() {
            // The path was looked up again by the link: it must still be
            // the file judged linkable, not one swapped in meanwhile.
            let same = fs::symlink_metadata(&dst).is_ok_and(|l| {
                l.is_file() && l.dev() == i.meta.dev() && l.ino() == i.meta.ino() && l.uid() == 0
            });
            if same {
                continue;
            }
            fs::remove_file(&dst).map_err(|e| StackError::Entry {
                path: dst.clone(),
                reason: e.to_string(),
            })?;
            return Err(StackError::Entry {
                path: i.real.clone(),
                reason: "changed while the stack was filled".into(),
            });
        }
        copied += copy(i, &dst, MAX_STACK_BYTES.saturating_sub(copied))?;
    }
    Ok(())
}

/// Whether a hard link shows the container exactly what a bind of the
/// file showed, with nothing anyone but root could change.
fn linkable(m: &fs::Metadata, store_dev: u64) -> bool {
    let mode = m.mode() & 0o7777;
    m.dev() == store_dev
        && m.uid() == 0
        && mode & 0o022 == 0
        && mode & 0o444 == 0o444
        && mode & 0o6000 == 0
}

/// Copies one file (bounded), 0755 when it was executable, else 0644.
fn copy(i: &Item, dst: &Path, budget: u64) -> Result<u64, StackError> {
    let err = |reason: String| StackError::Entry {
        path: i.real.clone(),
        reason,
    };
    let limit = MAX_FILE_BYTES.min(budget);
    let mut src = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&i.real)
        .map_err(|e| err(e.to_string()))?;
    let opened = src.metadata().map_err(|e| err(e.to_string()))?;
    if !opened.is_file() || opened.dev() != i.meta.dev() || opened.ino() != i.meta.ino() {
        return Err(err("changed while the stack was filled".into()));
    }
    if opened.len() > limit {
        return Err(err(format!(
            "{} bytes: larger than the stack copies ({limit} bytes left)",
            opened.len()
        )));
    }
    let mode = if i.meta.mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    };
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(|e| err(format!("{}: {e}", dst.display())))?;
    // Streamed: a large library is not held in memory.
    let n = std::io::copy(&mut (&mut src).take(limit + 1), &mut out)
        .map_err(|e| err(format!("{}: {e}", dst.display())))?;
    if n > limit {
        return Err(err("grew while the stack was filled".into()));
    }
    // Rewritten in place while copied: the copy may be torn.
    let after = src.metadata().map_err(|e| err(e.to_string()))?;
    if after.len() != opened.len()
        || after.mtime() != opened.mtime()
        || after.mtime_nsec() != opened.mtime_nsec()
    {
        return Err(err("changed while the stack was filled".into()));
    }
    out.flush()
        .and_then(|()| out.set_permissions(fs::Permissions::from_mode(mode)))
        .map_err(|e| err(format!("{}: {e}", dst.display())))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tweaks::stack::StackEntry;

    fn require_root() {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        assert_eq!(uid, 0, "run as root (the store is root's)");
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hpcc-stack-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    fn plan(entries: &[(&str, &Path)]) -> StackPlan {
        StackPlan {
            destination: stack::STACK_ROOT.into(),
            entries: entries
                .iter()
                .map(|(n, s)| StackEntry {
                    name: n.into(),
                    source: s.to_path_buf(),
                })
                .collect(),
            binds: vec![],
            position: 0,
        }
    }

    /// Root only: the store must be root's, and the stack root-owned.
    #[test]
    fn a_stack_holds_files_under_their_names_and_no_symlink() {
        require_root();
        let d = scratch("fill");
        let host = d.join("host");
        fs::create_dir_all(host.join("ucx")).unwrap();
        fs::write(host.join("libx.so.1.2.3"), b"x-library").unwrap();
        std::os::unix::fs::symlink("libx.so.1.2.3", host.join("libx.so.1")).unwrap();
        fs::write(host.join("ucx/libuct_cma.so.0.0.0"), b"module").unwrap();
        std::os::unix::fs::symlink("libuct_cma.so.0.0.0", host.join("ucx/libuct_cma.so.0"))
            .unwrap();
        // A writable-by-others file is copied, never linked.
        fs::write(host.join("liby.so.2"), b"y-library").unwrap();
        fs::set_permissions(host.join("liby.so.2"), fs::Permissions::from_mode(0o666)).unwrap();
        for p in ["libx.so.1.2.3", "ucx/libuct_cma.so.0.0.0"] {
            fs::set_permissions(host.join(p), fs::Permissions::from_mode(0o644)).unwrap();
        }
        let p = plan(&[
            ("mpich/libx.so.1", &host.join("libx.so.1")),
            ("mpich/liby.so.2", &host.join("liby.so.2")),
            ("mpich/ucx", &host.join("ucx")),
        ]);
        let store = d.join("store");
        let s = prepare(&p, &store).unwrap().unwrap();
        assert_eq!(s.parent(), Some(store.as_path()));
        for (name, content) in [
            ("mpich/libx.so.1", &b"x-library"[..]),
            ("mpich/liby.so.2", b"y-library"),
            ("mpich/ucx/libuct_cma.so.0", b"module"),
            ("mpich/ucx/libuct_cma.so.0.0.0", b"module"),
        ] {
            let f = s.join(name);
            let m = fs::symlink_metadata(&f).unwrap();
            assert!(m.is_file(), "{name} is a plain file, not a link");
            assert_eq!(fs::read(&f).unwrap(), content, "{name}");
            assert_eq!(m.uid(), 0);
            assert_eq!(m.mode() & 0o022, 0, "{name} writable by others");
        }
        let x = fs::metadata(s.join("mpich/libx.so.1")).unwrap();
        assert_eq!(
            x.ino(),
            fs::metadata(host.join("libx.so.1.2.3")).unwrap().ino(),
            "linked"
        );
        let y = fs::metadata(s.join("mpich/liby.so.2")).unwrap();
        assert_ne!(
            y.ino(),
            fs::metadata(host.join("liby.so.2")).unwrap().ino(),
            "copied"
        );
        assert_eq!(y.mode() & 0o7777, 0o644);
        for dir in [&s, &s.join("mpich"), &s.join("mpich/ucx")] {
            assert_eq!(
                fs::metadata(dir).unwrap().mode() & 0o7777,
                0o755,
                "{}",
                dir.display()
            );
        }
        // The same plan finds the same directory; a changed file gives
        // another one.
        assert_eq!(prepare(&p, &store).unwrap().unwrap(), s);
        fs::write(host.join("libx.so.1.2.3"), b"x-library, rebuilt").unwrap();
        let s2 = prepare(&p, &store).unwrap().unwrap();
        assert_ne!(s2, s);
        assert_eq!(
            fs::read(s2.join("mpich/libx.so.1")).unwrap(),
            b"x-library, rebuilt"
        );
        let leftovers: Vec<_> = fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    /// What the stack would widen or follow out keeps its binds: an error
    /// of the entry (`realize` goes on with one bind per file).
    #[test]
    fn a_file_not_readable_by_all_or_a_link_out_of_its_directory_is_not_stacked() {
        require_root();
        let d = scratch("widen");
        fs::write(d.join("liblicensed.so.1"), b"secret").unwrap();
        fs::set_permissions(
            d.join("liblicensed.so.1"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        fs::create_dir_all(d.join("ucx")).unwrap();
        fs::write(d.join("ucx/libuct_cma.so.0"), b"module").unwrap();
        fs::write(d.join("outside"), b"not a module").unwrap();
        std::os::unix::fs::symlink(d.join("outside"), d.join("ucx/libuct_evil.so.0")).unwrap();
        let store = d.join("store");
        for (p, why) in [
            (
                plan(&[("c/liblicensed.so.1", &d.join("liblicensed.so.1"))]),
                "not readable by all",
            ),
            (plan(&[("c/ucx", &d.join("ucx"))]), "leads out of"),
        ] {
            match prepare(&p, &store) {
                Err(e @ StackError::Entry { .. }) => {
                    assert!(e.to_string().contains(why), "{e}")
                }
                other => panic!("expected an entry error ({why}), got {other:?}"),
            }
        }
        // Nothing was made under a digest name.
        let names: Vec<_> = fs::read_dir(&store)
            .map(|r| r.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(names.is_empty(), "{names:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    /// A temporary directory older than [`STALE_TEMP`] is removed only when
    /// no launch holds its lock (a slow fill is never removed under it).
    #[test]
    fn a_stale_temporary_directory_is_removed_unless_a_launch_holds_it() {
        require_root();
        let d = scratch("stale");
        let store = d.join("store");
        fs::create_dir_all(&store).unwrap();
        let old = std::time::SystemTime::now() - 2 * STALE_TEMP;
        let (busy, lock) = temp_dir(&store).unwrap();
        let (dead, dead_lock) = temp_dir(&store).unwrap();
        drop(dead_lock);
        for t in [&busy, &dead] {
            fs::File::open(t).unwrap().set_modified(old).unwrap();
        }
        assert_eq!(stacks_held(&store).unwrap(), 1, "the held one counts");
        assert!(busy.exists(), "a locked temporary directory was removed");
        assert!(!dead.exists(), "a dead launch's directory stayed");
        drop(lock);
        assert_eq!(stacks_held(&store).unwrap(), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_stack_another_launch_filled_first_is_used() {
        require_root();
        let d = scratch("race");
        fs::write(d.join("liba.so.1"), b"a").unwrap();
        fs::write(d.join("libb.so.1"), b"b").unwrap();
        let p = plan(&[
            ("c/liba.so.1", &d.join("liba.so.1")),
            ("c/libb.so.1", &d.join("libb.so.1")),
        ]);
        let store = d.join("store");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (p, store) = (p.clone(), store.clone());
                std::thread::spawn(move || prepare(&p, &store).unwrap().unwrap())
            })
            .collect();
        let dirs: Vec<PathBuf> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(dirs.windows(2).all(|w| w[0] == w[1]), "{dirs:?}");
        let names: Vec<_> = fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "one stack, no temporary left: {names:?}");
        assert_eq!(fs::read(dirs[0].join("c/libb.so.1")).unwrap(), b"b");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_store_others_can_write_or_a_planted_stack_is_refused() {
        require_root();
        let d = scratch("trust");
        fs::write(d.join("liba.so.1"), b"a").unwrap();
        fs::write(d.join("libb.so.1"), b"b").unwrap();
        let p = plan(&[
            ("c/liba.so.1", &d.join("liba.so.1")),
            ("c/libb.so.1", &d.join("libb.so.1")),
        ]);
        let store = d.join("store");
        fs::create_dir(&store).unwrap();
        fs::set_permissions(&store, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(prepare(&p, &store), Err(StackError::Store { .. })));
        fs::set_permissions(&store, fs::Permissions::from_mode(0o755)).unwrap();
        // A world-writable directory under the digest's name is not used.
        let (_, _, digest) = manifest(&p).unwrap();
        fs::create_dir(store.join(&digest)).unwrap();
        fs::set_permissions(store.join(&digest), fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare(&p, &store).unwrap_err();
        assert!(
            e.to_string().contains("not a stack directory of root's"),
            "{e}"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_dead_launchs_temporary_directory_is_removed_a_fresh_one_kept() {
        require_root();
        let d = scratch("stale");
        let store = d.join("store");
        fs::create_dir(&store).unwrap();
        fs::set_permissions(&store, fs::Permissions::from_mode(0o755)).unwrap();
        let (old, young) = (store.join(".tmp-1-dead"), store.join(".tmp-2-filling"));
        for t in [&old, &young] {
            fs::create_dir(t).unwrap();
            fs::write(t.join("libx.so.1"), b"x").unwrap();
        }
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::open(&old)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        assert_eq!(stacks_held(&store).unwrap(), 1);
        assert!(!old.exists() && young.exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn realize_puts_one_bind_where_the_first_stacked_mount_was() {
        let bind = |s: &str, d: &str| Mount {
            source: s.into(),
            destination: d.into(),
            readonly: true,
            reason: "t".into(),
        };
        let t = Tweaks {
            mounts: vec![
                bind("/h/libmpich.so.12", "/usr/lib/libmpich.so.12"),
                bind("/h/liba.so.1", "/dev/hpcc/lib/mpich/liba.so.1"),
                bind("/h/libb.so.1", "/dev/hpcc/lib/mpich/libb.so.1"),
            ],
            ..Tweaks::default()
        };
        let p = stack::split(&t).unwrap();
        let out = with_stack(&t, &p, "/run/hpcc/stack/ab".into());
        let got: Vec<_> = out
            .mounts
            .iter()
            .map(|m| {
                (
                    m.source.display().to_string(),
                    m.destination.display().to_string(),
                    m.readonly,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "/h/libmpich.so.12".into(),
                    "/usr/lib/libmpich.so.12".into(),
                    true
                ),
                ("/run/hpcc/stack/ab".into(), "/dev/hpcc/lib".into(), true),
            ]
        );
    }
}
