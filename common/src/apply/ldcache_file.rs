//! The container's linker cache, written by hpcc itself.
//!
//! The libraries hpcc mounts in its own directories must be found by the
//! container's loader. Running `ldconfig -r ROOTFS` for that, as root, in a
//! rootfs whose `/etc` may be a symlink to `/proc/1/root/<host dir>`, wrote
//! onto the host; it also scanned whatever `ld.so.conf` the image named
//! (FIFOs, `/dev/zero`, host directories). Instead hpcc:
//! 1. reads the image's own `/etc/ld.so.cache` in-root and bounded, and
//!    parses it with a budget (a broken or absent cache is simply empty:
//!    the loader still searches its default directories);
//! 2. puts its own entries in front (glibc's loader takes the first entry
//!    of a name whose flags fit, so hpcc's libraries win for the names they
//!    provide), and writes glibc's format;
//! 3. stores the bytes on the host, content-addressed (SHA-256), in a
//!    directory only the writer owns: root's `/run/hpcc/ldcache/`, or a
//!    rootless user's runtime directory. The same image gets the same file
//!    at every launch, on every node, and nothing is written into the image
//!    (which other nodes may be starting at the same time, or which may be
//!    read-only).
//!
//! The hook then binds the file over the container's `/etc/ld.so.cache`;
//! `hpcc-runtime` adds the same bind to `config.json`. The store is bounded
//! ([`MAX_FILES`]): the oldest files go first.

use crate::io::{write_atomic_unsynced, FileMode};
use crate::plan::CacheEntry;
use crate::rootfs::{Rootfs, RootfsError};
use crate::tweaks::ldcache::{self, LdCache, LdCacheError, MAX_CACHE_BYTES};
use sha2::{Digest, Sha256};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Most cache files kept in one store.
pub const MAX_FILES: usize = 512;

/// Most bytes kept in one store. The store is on `/run`, a tmpfs in RAM
/// that systemd, munge and slurmd need too: 512 caches of the 8 MiB an
/// image may make hpcc write would be 4 GiB. A real cache is 50-200 KiB.
pub const MAX_STORE_BYTES: u64 = 256 << 20;

/// Why the container's linker cache could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum LdCacheFileError {
    /// The image's rootfs could not be opened.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// The cache could not be written in glibc's format.
    #[error("writing the container's linker cache: {0}")]
    Format(#[from] LdCacheError),
    /// The store directory is unusable or the file could not be written.
    #[error("linker cache store {dir}: {reason}")]
    Store {
        /// The store.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The store of the current user: root's under `cache_dir` (the policy's
/// `cache.dir`, `/run/hpcc`), a rootless user's in their runtime directory
/// (`/run/user/UID` when it is theirs, else `/tmp/hpcc-UID`).
pub fn store_dir(cache_dir: &Path) -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return cache_dir.join("ldcache");
    }
    let run = PathBuf::from(format!("/run/user/{uid}"));
    let mine = std::fs::symlink_metadata(&run)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0);
    if mine {
        run.join("hpcc/ldcache")
    } else {
        PathBuf::from(format!("/tmp/hpcc-{uid}/ldcache"))
    }
}

/// Builds the container's linker cache for the rootfs at `rootfs` (host
/// path) with `injected` in front, and stores it under `store`; returns the
/// file to bind over `/etc/ld.so.cache`.
pub fn prepare(
    rootfs: &Path,
    injected: &[CacheEntry],
    store: &Path,
) -> Result<PathBuf, LdCacheFileError> {
    prepare_in(&Rootfs::open(rootfs)?, injected, store)
}

/// [`prepare`] on an opened rootfs: the planner's snapshot
/// ([`crate::launch::LaunchImage`]) already holds the image's cache, so it
/// is not read again.
pub fn prepare_in(
    root: &Rootfs,
    injected: &[CacheEntry],
    store: &Path,
) -> Result<PathBuf, LdCacheFileError> {
    let bytes = build(root, injected)?;
    save(store, &bytes)
}

/// The merged cache's bytes.
pub(crate) fn build(root: &Rootfs, injected: &[CacheEntry]) -> Result<Vec<u8>, LdCacheFileError> {
    let image = match root.read_bounded(Path::new(crate::apply::LD_CACHE), MAX_CACHE_BYTES) {
        Ok(b) => match LdCache::parse(&b) {
            Ok(c) if c.is_empty() => None,
            Ok(c) => Some(c),
            Err(e) => {
                tracing::info!(error = %e, "the image's linker cache is unusable: only hpcc's entries are written");
                None
            }
        },
        Err(e) => {
            tracing::debug!(error = %e, "the image has no readable linker cache");
            None
        }
    };
    let ours: Vec<ldcache::CacheEntry> = injected
        .iter()
        .map(|e| ldcache::CacheEntry {
            soname: e.soname.clone(),
            path: e.path.clone(),
            flags: e.flags,
        })
        .collect();
    let merged = ldcache::merge(&ours, image.as_ref());
    Ok(ldcache::write_cache(&merged)?)
}

/// Stores `bytes` content-addressed under `store` (created when missing,
/// and trusted only when this user owns it and nobody else may write it).
pub(crate) fn save(store: &Path, bytes: &[u8]) -> Result<PathBuf, LdCacheFileError> {
    let bad = |reason: String| LdCacheFileError::Store {
        dir: store.to_owned(),
        reason,
    };
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let store = trusted_dir(store).map_err(bad)?;
    let store = store.as_path();
    let name: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = store.join(format!("{name}.cache"));
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        if m.is_file() && m.uid() == uid && m.len() == bytes.len() as u64 {
            // Reused: made the newest, so that pruning (oldest first) does
            // not remove it before the runtime binds it.
            let touched = std::fs::File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            if let Err(e) = touched {
                tracing::debug!(path = %path.display(), error = %e, "could not refresh the cache file's time");
            }
            return Ok(path);
        }
    }
    prune(store, bytes.len() as u64);
    write_atomic_unsynced(
        &path,
        bytes,
        FileMode {
            mode: 0o644,
            owner: None,
        },
    )
    .map_err(|e| bad(e.to_string()))?;
    Ok(path)
}

/// `dir`, created when missing, when nobody but this user (or root) can
/// change what it holds; for a user whose `dir` cannot be trusted (another
/// user may have made `/tmp/hpcc-UID` first, or made it writable to all,
/// to swap a file between our write and the runtime's read), a fresh
/// private directory instead. Root's store must be trustworthy: an error.
/// Used for the linker cache store and hpcc-runtime's private bundles.
pub fn trusted_dir(dir: &Path) -> Result<PathBuf, String> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    match create_store(dir, uid).and_then(|()| secure_path(dir, uid)) {
        Ok(()) => Ok(dir.to_owned()),
        Err(reason) if uid != 0 => {
            tracing::warn!(store = %dir.display(), %reason, "the store cannot be trusted: using a fresh private directory");
            fresh_private_dir(uid).map_err(|e| e.to_string())
        }
        Err(reason) => Err(reason),
    }
}

/// Creates `dir` (and its parents) when missing: 0700 for a user, 0755
/// for root (the runtime reads root's store as the container's user).
fn create_store(dir: &Path, uid: u32) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(if uid == 0 { 0o755 } else { 0o700 })
        .create(dir)
        .map_err(|e| e.to_string())
}

/// Whether no one but `uid` (and root) can change what `dir` holds: `dir`
/// and every directory above it is a real directory (no symlink), owned by
/// `uid` and writable by no one else, or owned by root and either writable
/// by no one else or sticky (`/tmp`). As OpenSSH checks its key files.
pub fn secure_path(dir: &Path, uid: u32) -> Result<(), String> {
    let mut here = Some(dir);
    while let Some(d) = here {
        let m = std::fs::symlink_metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        let others_write = m.mode() & 0o022 != 0;
        let ok = m.is_dir()
            && ((m.uid() == uid && !others_write)
                || (m.uid() == 0 && (!others_write || m.mode() & 0o1000 != 0)));
        if !ok {
            return Err(format!(
                "{} is not a directory that only uid {uid} or root can change (owner {}, mode {:o})",
                d.display(),
                m.uid(),
                m.mode() & 0o7777
            ));
        }
        here = d.parent().filter(|p| !p.as_os_str().is_empty());
    }
    Ok(())
}

/// A new directory only this user can use, under the temporary directory
/// (created here, so nobody else made it).
fn fresh_private_dir(uid: u32) -> std::io::Result<PathBuf> {
    let base = PathBuf::from("/tmp");
    for n in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!("hpcc-{uid}-{}-{nanos:x}{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "no fresh directory could be made under /tmp",
    ))
}

/// Makes room for a file of `incoming` bytes: the store keeps fewer than
/// [`MAX_FILES`] files and at most [`MAX_STORE_BYTES`] with it; the least
/// recently written go first.
fn prune(store: &Path, incoming: u64) {
    prune_within(store, incoming, MAX_FILES, MAX_STORE_BYTES)
}

fn prune_within(store: &Path, incoming: u64, max_files: usize, max_bytes: u64) {
    let Ok(rd) = std::fs::read_dir(store) else {
        return;
    };
    let mut files: Vec<(i64, u64, PathBuf)> = rd
        .flatten()
        .take(4 * max_files)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cache"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.mtime(), m.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum::<u64>() + incoming;
    let mut count = files.len() + 1;
    if count <= max_files && total <= max_bytes {
        return;
    }
    files.sort();
    for (_, len, p) in &files {
        if count <= max_files && total <= max_bytes {
            break;
        }
        if std::fs::remove_file(p).is_ok() {
            count -= 1;
            total = total.saturating_sub(*len);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_store_others_can_change_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("hpcc-secure-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("ldcache")).unwrap();
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set(&d, 0o700);
        assert!(secure_path(&d.join("ldcache"), uid).is_ok());
        // A parent anyone may write: the store could be renamed away and
        // replaced between our write and the runtime's bind.
        set(&d, 0o777);
        let e = secure_path(&d.join("ldcache"), uid).unwrap_err();
        assert!(e.contains(&d.display().to_string()), "{e}");
        // Sticky and root's, like /tmp: fine for root; anyone else's never.
        set(&d, 0o1777);
        assert_eq!(secure_path(&d.join("ldcache"), uid).is_ok(), uid == 0);
        if uid == 0 {
            // Made by another user (who got there first in /tmp).
            set(&d, 0o700);
            std::os::unix::fs::chown(d.join("ldcache"), Some(12345), None).unwrap();
            assert!(secure_path(&d.join("ldcache"), 0).is_err());
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    use super::*;
    use crate::testutil::TempDir;

    fn entry(soname: &str, path: &str) -> CacheEntry {
        CacheEntry {
            soname: soname.into(),
            path: path.into(),
            flags: ldcache::native_flags(),
        }
    }

    #[test]
    fn image_cache_is_kept_behind_ours_and_the_file_is_content_addressed() {
        let img = TempDir::new("ldfile-img");
        std::fs::create_dir_all(img.0.join("etc")).unwrap();
        let theirs = ldcache::write_cache(&[
            ldcache::CacheEntry {
                soname: "libhwloc.so.15".into(),
                path: "/usr/lib/x86_64-linux-gnu/libhwloc.so.15".into(),
                flags: ldcache::native_flags(),
            },
            ldcache::CacheEntry {
                soname: "libz.so.1".into(),
                path: "/lib/x86_64-linux-gnu/libz.so.1".into(),
                flags: ldcache::native_flags(),
            },
        ])
        .unwrap();
        std::fs::write(img.0.join("etc/ld.so.cache"), theirs).unwrap();
        let store = TempDir::new("ldfile-store");
        let ours = [entry(
            "libhwloc.so.15",
            "/dev/hpcc/lib/mpich/libhwloc.so.15",
        )];
        let f = prepare(&img.0, &ours, &store.0).unwrap();
        let c = LdCache::parse(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(
            c.find("libhwloc.so.15", ldcache::native_flags()),
            Some(PathBuf::from("/dev/hpcc/lib/mpich/libhwloc.so.15"))
        );
        assert_eq!(
            c.find("libz.so.1", ldcache::native_flags()),
            Some(PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"))
        );
        // The same inputs give the same file; the image is untouched.
        assert_eq!(prepare(&img.0, &ours, &store.0).unwrap(), f);
        assert_eq!(std::fs::read_dir(&store.0).unwrap().count(), 1);
    }

    #[test]
    fn an_image_without_a_cache_gets_ours_alone() {
        let img = TempDir::new("ldfile-none");
        let store = TempDir::new("ldfile-store2");
        let f = prepare(
            &img.0,
            &[entry("libx.so.1", "/dev/hpcc/lib/x/libx.so.1")],
            &store.0,
        )
        .unwrap();
        let c = LdCache::parse(&std::fs::read(f).unwrap()).unwrap();
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn the_store_is_bounded_in_files_and_bytes() {
        let store = TempDir::new("ldfile-bound");
        let sizes = |d: &Path| -> (usize, u64) {
            let v: Vec<u64> = std::fs::read_dir(d)
                .unwrap()
                .flatten()
                .map(|e| e.metadata().unwrap().len())
                .collect();
            (v.len(), v.iter().sum())
        };
        for i in 0..6u8 {
            // What save() does, with a store of 4 files or 1000 bytes.
            prune_within(&store.0, 300, 4, 1000);
            std::fs::write(store.0.join(format!("{i}.cache")), [i; 300]).unwrap();
            let (n, total) = sizes(&store.0);
            assert!(n <= 4 && total <= 1000, "{n} files, {total} bytes");
        }
        // Room for one file only: every old one goes.
        prune_within(&store.0, 10, 1, 1 << 20);
        assert_eq!(sizes(&store.0).0, 0);
    }

    #[test]
    fn a_store_others_can_write_is_refused() {
        let store = TempDir::new("ldfile-open");
        std::fs::set_permissions(
            &store.0,
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let e = save(&store.0, b"x").unwrap_err();
            assert!(e.to_string().contains("only uid 0 or root"), "{e}");
        } else {
            // A user gets a fresh private directory instead.
            let p = save(&store.0, b"x").unwrap();
            assert!(!p.starts_with(&store.0), "{}", p.display());
        }
    }
}

#[cfg(test)]
mod reuse_tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn a_reused_cache_file_becomes_the_newest_so_pruning_spares_it() {
        let store = TempDir::new("ldfile-reuse");
        let dir = store.0.join("s");
        let first = save(&dir, b"cache one").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        std::fs::File::open(&first)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let again = save(&dir, b"cache one").unwrap();
        assert_eq!(again, first);
        let t = std::fs::metadata(&again).unwrap().modified().unwrap();
        assert!(t > old, "the reused file kept its old time");
        // Pruning to room for one more keeps the reused one, not the older.
        let other = save(&dir, b"cache two").unwrap();
        std::fs::File::open(&other)
            .unwrap()
            .set_modified(old)
            .unwrap();
        save(&dir, b"cache one").unwrap();
        prune_within(&dir, 0, 2, u64::MAX);
        assert!(first.exists() && !other.exists());
    }
}
