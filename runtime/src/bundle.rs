//! The bundle's `config.json`, read with bounds and written back
//! atomically with its owner and mode.

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

    /// Replaces the file with `value`, atomically, with the same owner
    /// (when root) and mode. Not synced to disk: the runtime reads it
    /// right away, and after a crash there is no container to start.
    pub fn write(&self, value: &Value) -> Result<(), BundleError> {
        let err = |source| BundleError::Write {
            path: self.path.clone(),
            source,
        };
        let body = serde_json::to_vec(value).map_err(|e| err(std::io::Error::other(e)))?;
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
}
