//! The two file primitives every part of hpcc needs: a read that never
//! takes more than a bound (image files, kernel files, pipes from helpers
//! are all read through it), and an atomic replace (the fingerprint cache,
//! the step's policy, an edited `config.json`, the container's linker
//! cache): written next to the target under a temporary name that no one
//! else can have created, then renamed over it, so a reader sees the old
//! file or the new one, never half of one.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A bounded read that failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The read itself.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// More than the bound was there.
    #[error("larger than {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: u64,
    },
}

/// Reads at most `limit` bytes from `r`; more is [`ReadError::TooLarge`].
pub fn read_bounded(r: impl Read, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    r.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(buf)
}

/// Reads at most `limit` bytes of the file at `path` (a trusted host path).
pub fn read_file_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    read_bounded(std::fs::File::open(path)?, limit)
}

/// Like [`read_file_bounded`], as text (invalid UTF-8 replaced).
pub fn read_text_bounded(path: &Path, limit: u64) -> Result<String, ReadError> {
    read_file_bounded(path, limit).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Owner and mode of a file written by [`write_atomic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode {
    /// Permission bits.
    pub mode: u32,
    /// `(uid, gid)` to give the file (only root can), `None` to keep the
    /// writer's.
    pub owner: Option<(u32, u32)>,
}

/// Replaces `path` with `bytes`, atomically: a temporary file in the same
/// directory, created exclusively and without following links, synced,
/// then renamed over `path`. On any failure the temporary file is removed
/// and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: FileMode) -> std::io::Result<()> {
    replace(path, bytes, mode, true)
}

/// [`write_atomic`] without the `fsync`: for a file that is read at once
/// and is worth nothing after a crash (a container's `config.json` edited
/// just before its runtime starts it, a step's decision read by the same
/// step). Readers still see the old file or the new one, never half of
/// one; only durability is given up, and with it a disk flush on every
/// container start (0.2 ms to several ms on a busy disk).
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8], mode: FileMode) -> std::io::Result<()> {
    replace(path, bytes, mode, false)
}

fn replace(path: &Path, bytes: &[u8], mode: FileMode, sync: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.hpcc.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o600)
            .open(&tmp)?;
        if let Some((uid, gid)) = mode.owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode.mode))?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn bounded_read_stops_at_the_limit() {
        assert_eq!(read_bounded(&b"12345"[..], 5).unwrap(), b"12345");
        assert!(matches!(
            read_bounded(&b"123456"[..], 5),
            Err(ReadError::TooLarge { limit: 5 })
        ));
        // An endless source costs limit + 1 bytes, not more.
        let zero = std::fs::File::open("/dev/zero").unwrap();
        assert!(matches!(
            read_bounded(zero, 1 << 20),
            Err(ReadError::TooLarge { .. })
        ));
    }

    #[test]
    fn atomic_write_replaces_with_mode_and_leaves_no_temporary() {
        let t = TempDir::new("io");
        let p = t.0.join("f.json");
        std::fs::write(&p, "old").unwrap();
        write_atomic(
            &p,
            b"new",
            FileMode {
                mode: 0o644,
                owner: None,
            },
        )
        .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(&t.0).unwrap().count(), 1);
        write_atomic_unsynced(
            &p,
            b"newer",
            FileMode {
                mode: 0o640,
                owner: None,
            },
        )
        .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"newer");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        assert_eq!(std::fs::read_dir(&t.0).unwrap().count(), 1);
        // A directory that does not exist: an error, nothing created.
        assert!(write_atomic(
            &t.0.join("no/such/f"),
            b"x",
            FileMode {
                mode: 0o600,
                owner: None
            }
        )
        .is_err());
    }
}
