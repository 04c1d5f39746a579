//! Reading a file the job user named, with the job user's rights.
//!
//! slurmstepd runs as root and the bundle path is the user's choice: opened
//! as root, `--container=/root/secret` would make the plugin read (and its
//! error messages hint at) a file the user cannot read. A forked child drops
//! to the user's uid, gid and groups, opens and reads the file and streams
//! it back through a pipe. The child makes only raw system calls on memory
//! prepared before the fork (slurmstepd has other threads; nothing that
//! takes a lock may run in the child).

use crate::creds::Identity;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a killed reader may take to go before it is left behind.
const REAP_GRACE: Duration = Duration::from_secs(1);

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
    /// Any other failure (fork, pipe, read, dropping privileges).
    #[error("reading {path} as the job user failed: {reason}")]
    Failed {
        /// The path.
        path: String,
        /// What failed.
        reason: String,
    },
}

// Child exit codes: how the child tells the parent what went wrong without
// sending anything but file content through the pipe.
const C_OK: i32 = 0;
const C_DENIED: i32 = 10;
const C_MISSING: i32 = 11;
const C_NOT_REGULAR: i32 = 12;
const C_TOO_LARGE: i32 = 13;
const C_READ: i32 = 14;
const C_PRIVS: i32 = 15;

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
    let cpath = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| failed("the path contains a NUL byte".into()))?;
    let groups: Vec<libc::gid_t> = who.groups.iter().copied().take(65536).collect();
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(failed(format!("pipe: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: pipe2 returned two fresh descriptors we now own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut chunk = vec![0u8; 64 * 1024];
    // SAFETY: the child runs only `child`, which makes raw system calls on
    // memory allocated above, then _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(failed(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if pid == 0 {
        // SAFETY: in the child; see `child`.
        unsafe {
            libc::close(rd.as_raw_fd());
            let code = child(who, &groups, &cpath, wr.as_raw_fd(), limit, &mut chunk);
            libc::_exit(code);
        }
    }
    drop(wr);
    let (data, timed_out) = read_pipe(rd, limit, timeout);
    if timed_out {
        // SAFETY: pid is our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    if timed_out {
        // A child stuck in the kernel (a hung NFS server) does not die of
        // SIGKILL until its system call returns: reap it if it goes within
        // a moment, never wait on it (slurmstepd would hang with it).
        let deadline = Instant::now() + REAP_GRACE;
        // SAFETY: pid is our child; status is writable.
        while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        return Err(UserReadError::Timeout {
            path: shown,
            secs: timeout.as_secs(),
        });
    }
    let r = loop {
        // SAFETY: pid is our child; status is writable.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    if r != pid {
        return Err(failed(format!(
            "waitpid: {}",
            std::io::Error::last_os_error()
        )));
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    match code {
        C_OK if data.len() as u64 <= limit => Ok(data),
        C_OK | C_TOO_LARGE => Err(UserReadError::TooLarge { path: shown, limit }),
        C_DENIED => Err(UserReadError::Denied {
            path: shown,
            uid: who.uid,
        }),
        C_MISSING => Err(UserReadError::Missing { path: shown }),
        C_NOT_REGULAR => Err(UserReadError::NotRegular { path: shown }),
        C_PRIVS => Err(failed("dropping to the job user's identity failed".into())),
        C_READ => Err(failed("read error".into())),
        c => Err(failed(format!("reader ended abnormally (status {c})"))),
    }
}

/// Reads the pipe until EOF, `limit + 1` bytes or the deadline.
fn read_pipe(rd: OwnedFd, limit: u64, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut data = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (data, true);
        }
        let mut pfd = libc::pollfd {
            fd: rd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return (data, false);
        }
        if n == 0 {
            continue;
        }
        // SAFETY: buf is writable for its length.
        let got = unsafe { libc::read(rd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return (data, false);
        }
        if got == 0 {
            return (data, false);
        }
        data.extend_from_slice(&buf[..got as usize]);
        if data.len() as u64 > limit {
            return (data, false);
        }
    }
}

/// The child: drop privileges for good, open, check, stream. Raw system
/// calls only (see [`crate::creds::drop_for_good`]).
///
/// # Safety
/// Only in a freshly forked child: it makes raw system calls on memory
/// prepared before the fork and must end with `_exit`.
unsafe fn child(
    who: &Identity,
    groups: &[libc::gid_t],
    path: &CString,
    out: i32,
    limit: u64,
    chunk: &mut [u8],
) -> i32 {
    // SAFETY: raw system calls on descriptors and buffers this child
    // owns; the caller guarantees a freshly forked, single-threaded child.
    unsafe {
        if !crate::creds::drop_for_good(who, groups) {
            return C_PRIVS;
        }
        let fd = libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
        );
        if fd < 0 {
            return match *libc::__errno_location() {
                libc::EACCES | libc::EPERM => C_DENIED,
                libc::ENOENT | libc::ENOTDIR => C_MISSING,
                _ => C_READ,
            };
        }
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return C_READ;
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return C_NOT_REGULAR;
        }
        if st.st_size as u64 > limit {
            return C_TOO_LARGE;
        }
        let mut total: u64 = 0;
        loop {
            let n = libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len());
            if n < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                return C_READ;
            }
            if n == 0 {
                return C_OK;
            }
            total += n as u64;
            if total > limit {
                return C_TOO_LARGE;
            }
            let mut off = 0usize;
            while off < n as usize {
                let w = libc::write(out, chunk.as_ptr().add(off).cast(), n as usize - off);
                if w <= 0 {
                    if w < 0 && *libc::__errno_location() == libc::EINTR {
                        continue;
                    }
                    return C_READ;
                }
                off += w as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
