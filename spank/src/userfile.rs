//! Reading a file the job user named, with the job user's rights.
//!
//! slurmstepd runs as root and the bundle path is the user's choice: opened
//! as root, `--container=/root/secret` would make the plugin read (and its
//! error messages hint at) a file the user cannot read. A thread of its own
//! takes the user's file access rights (fsuid, fsgid and supplementary
//! groups: per thread in Linux when set by raw system calls) and reads the
//! file; the caller waits for it at most the deadline.
//!
//! A thread, not a forked child (as up to 2026-12): a fork of slurmstepd
//! copies its page tables and cost 1.0-1.6 ms of every step's 2 ms
//! decision (the plugin's own timer), a thread 0.05 ms. What the thread
//! changes is its own credentials only, and only the file-access ones:
//! its real, effective and saved uid stay root's, so the job user can
//! neither signal nor trace it.

use crate::creds::Identity;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// Why the file could not be read. Messages name the path (the user's own
/// string) and the cause, never any of the content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserReadError {
    /// The user may not read it (or a directory on the way).
    #[error("{path} cannot be read by the job user (uid {uid}): permission denied")]
    Denied {
        /// The path.
        path: String,
        /// The job user.
        uid: u32,
    },
    /// It does not exist.
    #[error("{path} does not exist")]
    Missing {
        /// The path.
        path: String,
    },
    /// A directory, FIFO, device...
    #[error("{path} is not a regular file")]
    NotRegular {
        /// The path.
        path: String,
    },
    /// Over the bound.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The path.
        path: String,
        /// The bound.
        limit: u64,
    },
    /// Took longer than the deadline (a hung network file system).
    #[error("reading {path} took longer than {secs} s")]
    Timeout {
        /// The path.
        path: String,
        /// The deadline.
        secs: u64,
    },
    /// Any other failure (the thread, a read, taking the user's rights).
    #[error("reading {path} as the job user failed: {reason}")]
    Failed {
        /// The path.
        path: String,
        /// What failed.
        reason: String,
    },
}

/// What the reading thread found, sent back over its channel.
enum Read {
    Content(Vec<u8>),
    Denied,
    Missing,
    NotRegular,
    TooLarge,
    Privs,
    Failed(std::io::Error),
}

/// Reads at most `limit` bytes of `path` as `who`, within `timeout`.
pub fn read_as(
    who: &Identity,
    path: &Path,
    limit: u64,
    timeout: Duration,
) -> Result<Vec<u8>, UserReadError> {
    let shown = path.display().to_string();
    let failed = |reason: String| UserReadError::Failed {
        path: shown.clone(),
        reason,
    };
    // The thread's fsuid change clears the process's dumpable flag; it is
    // put back once the thread has answered or been given up on.
    let dumpable = crate::creds::Dumpable::get();
    let read = read_in_thread(who, path, limit, timeout);
    dumpable.restore();
    match read {
        None => Err(UserReadError::Timeout {
            path: shown,
            secs: timeout.as_secs(),
        }),
        Some(Err(reason)) => Err(failed(reason)),
        Some(Ok(Read::Content(data))) => Ok(data),
        Some(Ok(Read::TooLarge)) => Err(UserReadError::TooLarge { path: shown, limit }),
        Some(Ok(Read::Denied)) => Err(UserReadError::Denied {
            path: shown,
            uid: who.uid,
        }),
        Some(Ok(Read::Missing)) => Err(UserReadError::Missing { path: shown }),
        Some(Ok(Read::NotRegular)) => Err(UserReadError::NotRegular { path: shown }),
        Some(Ok(Read::Privs)) => Err(failed(
            "taking the job user's file access rights failed".into(),
        )),
        Some(Ok(Read::Failed(e))) => Err(failed(format!("read error: {e}"))),
    }
}

/// [`reader`] in a thread of its own; `None` after `timeout`, `Some(Err)`
/// when the thread could not start or gave no answer.
fn read_in_thread(
    who: &Identity,
    path: &Path,
    limit: u64,
    timeout: Duration,
) -> Option<Result<Read, String>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let (who_t, path_t) = (who.clone(), path.to_owned());
    let spawned = std::thread::Builder::new()
        .name("hpcc-userfile".into())
        .stack_size(READER_STACK)
        .spawn(move || {
            // The receiver is gone after a timeout: nobody to tell.
            let _ = tx.send(reader(&who_t, &path_t, limit));
        });
    if let Err(e) = spawned {
        return Some(Err(format!("cannot start the reading thread: {e}")));
    }
    // A thread stuck in the kernel (a hung NFS server) cannot be killed:
    // it is left behind and ends with its system call or with slurmstepd,
    // never waited for (slurmstepd would hang with it).
    match rx.recv_timeout(timeout) {
        Ok(r) => Some(Ok(r)),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Some(Err("the reading thread ended without an answer".into()))
        }
    }
}

/// The reading thread's stack: it only opens and reads.
const READER_STACK: usize = 256 * 1024;

/// In the reading thread: the job user's file access rights for good
/// (this thread ends after the read), then open, check, read.
fn reader(who: &Identity, path: &Path, limit: u64) -> Read {
    let groups: Vec<libc::gid_t> = who.groups.iter().copied().take(65536).collect();
    if !crate::creds::fs_identity_for_this_thread(who, &groups) {
        return Read::Privs;
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        // A FIFO must not block the open; a terminal must not become ours.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::EACCES | libc::EPERM) => Read::Denied,
                Some(libc::ENOENT | libc::ENOTDIR) => Read::Missing,
                _ => Read::Failed(e),
            }
        }
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Read::Failed(e),
    };
    if !meta.file_type().is_file() {
        return Read::NotRegular;
    }
    if meta.len() > limit {
        return Read::TooLarge;
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    // One byte past the bound tells a file that grew while read.
    match std::io::Read::read_to_end(&mut std::io::Read::take(&file, limit + 1), &mut data) {
        Ok(_) if data.len() as u64 > limit => Read::TooLarge,
        Ok(_) => Read::Content(data),
        Err(e) => Read::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::fs::PermissionsExt;

    fn me() -> Identity {
        // SAFETY: no preconditions.
        unsafe {
            Identity {
                uid: libc::geteuid(),
                gid: libc::getegid(),
                groups: vec![libc::getegid()],
            }
        }
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("hpcc-userfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_a_readable_file_and_bounds_it() {
        let d = tmp("ok");
        let f = d.join("config.json");
        std::fs::write(&f, vec![b'x'; 100_000]).unwrap();
        let got = read_as(&me(), &f, 1 << 20, Duration::from_secs(10)).unwrap();
        assert_eq!(got.len(), 100_000);
        let e = read_as(&me(), &f, 1000, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, UserReadError::TooLarge { .. }), "{e}");
        let e = read_as(&me(), &d.join("nope"), 1000, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, UserReadError::Missing { .. }), "{e}");
        let e = read_as(&me(), &d, 1000, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, UserReadError::NotRegular { .. }), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_fifo_does_not_hang() {
        let d = tmp("fifo");
        let f = d.join("config.json");
        let c = CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = read_as(&me(), &f, 1000, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, UserReadError::NotRegular { .. }), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// As root, reading as another user must obey that user's rights and
    /// the error must not carry the content. Root only (the privilege drop
    /// needs it); the workspace tests run as root in CI (tests/run.sh), so
    /// this asserts root instead of passing without having run.
    #[test]
    fn another_user_cannot_read_root_only_file() {
        // SAFETY: no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "this test needs root (it drops to another user): run the workspace tests as root, as tests/run.sh and CI do"
        );
        let d = tmp("denied");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let f = d.join("config.json");
        std::fs::write(&f, "SECRET-MARKER-4711").unwrap();
        let nobody = Identity {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        };
        let e = read_as(&nobody, &f, 1000, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, UserReadError::Denied { uid: 65534, .. }), "{e}");
        assert!(!e.to_string().contains("SECRET"));
        // Readable by the directory's permission: then it works.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            read_as(&nobody, &f, 1000, Duration::from_secs(10)).unwrap(),
            b"SECRET-MARKER-4711"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The reading thread takes the user's supplementary groups exactly
    /// (a group-only file is read with the group, denied without it), and
    /// what it takes stays in that thread: the caller keeps root's rights.
    #[test]
    fn the_users_groups_count_and_the_caller_keeps_its_rights() {
        // SAFETY: no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid,
            0,
            "this test needs root (it takes another user's rights): run the workspace tests as root, as tests/run.sh and CI do"
        );
        let d = tmp("groups");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = d.join("config.json");
        std::fs::write(&f, "GROUP-ONLY").unwrap();
        let c = CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
        // Group 4242, which nobody is not in by default; mode 0640.
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 0, 4242) }, 0);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let nobody = |groups: Vec<u32>| Identity {
            uid: 65534,
            gid: 65534,
            groups,
        };
        let t = Duration::from_secs(10);
        let dumpable = format!("{:?}", crate::creds::Dumpable::get());
        assert_eq!(
            read_as(&nobody(vec![4242]), &f, 1000, t).unwrap(),
            b"GROUP-ONLY"
        );
        // The thread's fsuid change reset the process's dumpable flag;
        // read_as put it back.
        assert_eq!(format!("{:?}", crate::creds::Dumpable::get()), dumpable);
        let e = read_as(&nobody(vec![]), &f, 1000, t).unwrap_err();
        assert!(matches!(e, UserReadError::Denied { uid: 65534, .. }), "{e}");
        // This thread still reads it as root, and its ids are root's.
        assert_eq!(std::fs::read(&f).unwrap(), b"GROUP-ONLY");
        // SAFETY: setfsuid(-1) changes nothing and returns the current id.
        assert_eq!(unsafe { libc::setfsuid(u32::MAX) }, 0);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
