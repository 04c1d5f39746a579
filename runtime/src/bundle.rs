//! The bundle's `config.json`, read with bounds and written back (in
//! place where it may be, else atomically with its owner and mode).

use hpcc_common::io::{read_bounded, write_atomic_unsynced, FileMode};
use hpcc_common::oci::MAX_CONFIG_BYTES;
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A bundle's config that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Opening or reading it.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Too large, or not a regular file.
    #[error("{path}: {reason}")]
    Unfit {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Not JSON.
    #[error("{path} is not JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        source: serde_json::Error,
    },
    /// Writing it back.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A bundle's `config.json`, as bytes and as JSON.
#[derive(Debug)]
pub struct Config {
    /// The file.
    pub path: PathBuf,
    /// Its bytes as read.
    pub bytes: Vec<u8>,
    /// Its owner and mode, kept when it is written back.
    pub meta: std::fs::Metadata,
}

impl Config {
    /// Reads `<bundle>/config.json`: never through a symlink, never
    /// blocking on a FIFO, at most [`MAX_CONFIG_BYTES`].
    pub fn read(bundle: &Path) -> Result<Config, BundleError> {
        let path = bundle.join("config.json");
        let read = |source| BundleError::Read {
            path: path.clone(),
            source,
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(read)?;
        let meta = f.metadata().map_err(read)?;
        if !meta.is_file() {
            return Err(BundleError::Unfit {
                path,
                reason: "not a regular file".into(),
            });
        }
        let bytes = read_bounded(f, MAX_CONFIG_BYTES).map_err(|e| BundleError::Unfit {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Config { path, bytes, meta })
    }

    /// The config as JSON.
    pub fn json(&self) -> Result<Value, BundleError> {
        serde_json::from_slice(&self.bytes).map_err(|source| BundleError::Json {
            path: self.path.clone(),
            source,
        })
    }

    /// Writes `value` back: over the file that was read, in place, where
    /// this process may write it (slurmstepd's copy is root's: a root
    /// step's runtime); else by an atomic replace, with the same owner
    /// (when root) and mode. Not synced to disk: the runtime reads it right
    /// away, and after a crash there is no container to start.
    ///
    /// Why in place: a replace creates an inode and frees the old one on
    /// every start, and on ext4 (the spool directory's usual home) freeing
    /// it is journal work that cost about as much as the rest of the write.
    /// Nothing reads the file between this write and the runtime's start.
    pub fn write(&self, value: &Value) -> Result<(), BundleError> {
        let err = |source| BundleError::Write {
            path: self.path.clone(),
            source,
        };
        let body = serde_json::to_vec(value).map_err(|e| err(std::io::Error::other(e)))?;
        if self.overwrite(&body).map_err(err)? {
            return Ok(());
        }
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        write_atomic_unsynced(
            &self.path,
            &body,
            FileMode {
                mode: self.meta.mode() & 0o7777,
                owner: root.then(|| (self.meta.uid(), self.meta.gid())),
            },
        )
        .map_err(err)
    }

    /// Overwrites the file that was read with `body`, in place. The file
    /// is first reached without opening it for anything (`O_PATH`, no link
    /// followed) and must be the one that was read: a regular file with
    /// the same device, inode and owner, not writable by others, and with
    /// no other name (a hard link planted as `config.json` must never carry
    /// the write to the file it names elsewhere; an inode number freed and
    /// reused by a file someone else created has another owner). Only then
    /// is that same file opened for writing, through its descriptor, so no
    /// path is looked up again. `Ok(false)`: not so, or not writable here;
    /// the caller replaces the file instead. A write that fails half-way
    /// puts the bytes that were read back, as far as it can.
    fn overwrite(&self, body: &[u8]) -> std::io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let Ok(at) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)
        else {
            return Ok(false);
        };
        let Ok(now) = at.metadata() else {
            return Ok(false);
        };
        if !now.is_file()
            || now.nlink() != 1
            || now.dev() != self.meta.dev()
            || now.ino() != self.meta.ino()
            || now.uid() != self.meta.uid()
            || now.mode() & 0o002 != 0
        {
            return Ok(false);
        }
        let fd = std::path::PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&at)
        ));
        let Ok(f) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&fd)
        else {
            return Ok(false);
        };
        let written = f
            .write_all_at(body, 0)
            .and_then(|()| f.set_len(body.len() as u64));
        if let Err(e) = written {
            let _ = f
                .write_all_at(&self.bytes, 0)
                .and_then(|()| f.set_len(self.bytes.len() as u64));
            return Err(e);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(name: &str, body: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hpcc-bundle-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.json"), body).unwrap();
        d
    }

    #[test]
    fn written_in_place_same_inode_longer_and_shorter() {
        let d = bundle("inplace", r#"{"a":"0123456789"}"#);
        let c = Config::read(&d).unwrap();
        let ino = c.meta.ino();
        c.write(&serde_json::json!({"a": "0123456789", "b": "more"}))
            .unwrap();
        let after = std::fs::metadata(d.join("config.json")).unwrap();
        assert_eq!(after.ino(), ino, "replaced, not written in place");
        assert_eq!(
            std::fs::read_to_string(d.join("config.json")).unwrap(),
            r#"{"a":"0123456789","b":"more"}"#
        );
        // Shorter than what is there: no tail of the old text is left.
        let c = Config::read(&d).unwrap();
        c.write(&serde_json::json!({"a": 1})).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("config.json")).unwrap(),
            r#"{"a":1}"#
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_hard_link_or_a_swapped_file_is_replaced_not_written_through() {
        let d = bundle("linked", r#"{"a":0}"#);
        let elsewhere = d.join("elsewhere.json");
        std::fs::hard_link(d.join("config.json"), &elsewhere).unwrap();
        let c = Config::read(&d).unwrap();
        c.write(&serde_json::json!({"a": 1})).unwrap();
        // The other name keeps its content: the write went to a new file.
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), r#"{"a":0}"#);
        assert_eq!(
            std::fs::read_to_string(d.join("config.json")).unwrap(),
            r#"{"a":1}"#
        );
        // Swapped between the read and the write (another inode): the file
        // that is there now is replaced as a whole, not written into.
        let c = Config::read(&d).unwrap();
        std::fs::remove_file(d.join("config.json")).unwrap();
        std::fs::write(
            d.join("config.json"),
            r#"{"swapped":"a longer file than the new one"}"#,
        )
        .unwrap();
        c.write(&serde_json::json!({"a": 2})).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("config.json")).unwrap(),
            r#"{"a":2}"#
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
