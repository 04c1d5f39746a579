//! Bounded child processes: a trusted host program run with an empty
//! environment, `/` as cwd, death with the caller, resource limits and a
//! deadline past which it is killed and reaped. The apply helper
//! (`apply::child`) and the GPU probe of the fingerprint both run this way;
//! it lives here, below both, so that the pure fingerprint does not depend
//! on the effect layer.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Largest request or reply accepted on the pipe.
pub const MAX_MESSAGE_BYTES: u64 = 4 << 20;

/// Bound of the helper's stderr kept for an error message.
const MAX_STDERR: usize = 16 << 10;

/// Talking to the helper failed.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The request could not be encoded.
    #[error("encoding the request: {0}")]
    Encode(#[from] serde_json::Error),
    /// The helper could not be started.
    #[error("starting {exe}: {source}")]
    Spawn {
        /// The binary.
        exe: String,
        /// Why.
        source: std::io::Error,
    },
    /// A pipe or wait failed.
    #[error("talking to the helper: {0}")]
    Pipe(#[from] std::io::Error),
    /// The deadline passed.
    #[error("the apply helper did not finish within {ms} ms (policy limits.apply_timeout_ms): it was killed; what it did dies with the container's mount namespace")]
    Timeout {
        /// The deadline.
        ms: u64,
    },
    /// It ended without a valid answer.
    #[error("helper {exe} exited ({status}) without a valid reply: {stderr}")]
    NoReply {
        /// The binary.
        exe: String,
        /// Its exit status.
        status: String,
        /// Its stderr, bounded and escaped.
        stderr: String,
    },
}

/// Resource limits of a bounded child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildLimits {
    /// `RLIMIT_CPU`, seconds: a child spinning past its wall-clock
    /// deadline dies by itself even if nobody is left to kill it.
    pub cpu_secs: u64,
    /// `RLIMIT_AS`, bytes; `None` for a child that maps large libraries
    /// (NVML reserves gigabytes of address space it never touches).
    pub address_space: Option<libc::rlim_t>,
}

/// Runs a trusted host program `exe` with `args` as a bounded child: an
/// empty environment and `/` as cwd (nothing of the image's environment or
/// rootfs reaches its loader), `PR_SET_PDEATHSIG` (it dies with the caller,
/// even when a runtime kills the caller), no core dump, the `limits`, and
/// `input` on its stdin. Returns its stdout (at most [`MAX_MESSAGE_BYTES`]),
/// its stderr (bounded) and its status; past `timeout` it is killed and
/// waited for, and the result is [`HelperError::Timeout`].
pub fn run_bounded(
    exe: &Path,
    args: &[&str],
    input: &[u8],
    timeout: Duration,
    limits: ChildLimits,
) -> Result<(Vec<u8>, Vec<u8>, std::process::ExitStatus), HelperError> {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls (prctl, getppid, setrlimit,
    // close_range) on plain values.
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            bound_self(parent, limits)?;
            // Nothing but stdin, stdout and stderr reaches the program: a
            // caller started by an engine holds its descriptors (a sync
            // pipe, --preserve-fds, a PMI socket), and a helper holding
            // one keeps the other end from seeing its end until the
            // helper's deadline. Close-on-exec, not closed: std's own pipe
            // that reports a failed exec must stay open until the exec.
            // A kernel without close_range (before 5.11) keeps them.
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| HelperError::Spawn {
        exe: exe.display().to_string(),
        source,
    })?;
    converse(child, input, timeout)
}

/// Whether this process has exactly one thread (`/proc/self/task` lists
/// one entry per thread). Only this process can add one, so the answer
/// holds until it does.
pub fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.take(2).count() == 1)
        .unwrap_or(false)
}

pub(crate) fn pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors, owned from here on.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Reads the forked child's reply and waits for its exit, both before
/// `deadline`; past it the child is killed and reaped.
pub(crate) fn collect(
    pid: libc::pid_t,
    rd: std::os::fd::OwnedFd,
    deadline: Instant,
) -> Result<(Vec<u8>, std::process::ExitStatus), HelperError> {
    let res = read_until(&rd, deadline).and_then(|out| {
        let status = wait_pid_until(pid, deadline)?;
        Ok((out, status))
    });
    if res.is_err() {
        // SAFETY: signalling and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
        }
    }
    res
}

fn poll_until(fd: i32, events: i16, deadline: Instant) -> Result<(), HelperError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the call.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if n > 0 {
            return Ok(());
        }
    }
}

/// Everything on `rd` until end of file, bounded in bytes and time.
fn read_until(rd: &std::os::fd::OwnedFd, deadline: Instant) -> Result<Vec<u8>, HelperError> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        poll_until(rd.as_raw_fd(), libc::POLLIN, deadline)?;
        // SAFETY: reading into a buffer of the given length.
        let n = unsafe { libc::read(rd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n as usize]);
        if out.len() as u64 > MAX_MESSAGE_BYTES {
            return Err(std::io::Error::other("reply larger than the limit").into());
        }
    }
}

/// A pidfd for `pid` (Linux >= 5.3), to wait for its exit with `poll`.
fn pidfd(pid: libc::pid_t) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags; a negative result is an
    // error, anything else a fresh descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a fresh descriptor, owned from here on.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits for a child's exit to be ready, until `deadline`: on its pidfd
/// when there is one, else 200 µs.
fn pause_until(pidfd: Option<&std::os::fd::OwnedFd>, deadline: Instant) -> Result<(), HelperError> {
    match pidfd {
        Some(fd) => poll_until(fd.as_raw_fd(), libc::POLLIN, deadline),
        None if Instant::now() >= deadline => Err(timed_out()),
        None => {
            std::thread::sleep(Duration::from_micros(200));
            Ok(())
        }
    }
}

/// Waits for our child `pid` until `deadline`: at once when it exits
/// (pidfd), else by polling every 200 µs.
fn wait_pid_until(
    pid: libc::pid_t,
    deadline: Instant,
) -> Result<std::process::ExitStatus, HelperError> {
    use std::os::unix::process::ExitStatusExt;
    let fd = pidfd(pid);
    loop {
        let mut st = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return Ok(std::process::ExitStatus::from_raw(st));
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e.into());
            }
            continue;
        }
        pause_until(fd.as_ref(), deadline)?;
    }
}

/// In the forked child, before exec: die with the parent, and take limits.
pub(crate) fn bound_self(parent: libc::pid_t, limits: ChildLimits) -> std::io::Result<()> {
    let limit = |res: libc::__rlimit_resource_t, v: libc::rlim_t| {
        let r = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        // SAFETY: a plain struct passed by pointer for the call's duration.
        if unsafe { libc::setrlimit(res, &r) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The parent may have died before the death signal was armed.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        return Err(std::io::Error::other(
            "the hook exited before its helper started",
        ));
    }
    limit(libc::RLIMIT_CPU, limits.cpu_secs)?;
    if let Some(a) = limits.address_space {
        limit(libc::RLIMIT_AS, a)?;
    }
    limit(libc::RLIMIT_CORE, 0)?;
    limit(libc::RLIMIT_NOFILE, 256)
}

/// Writes the request, reads stdout and stderr, waits for the exit; all
/// within `timeout`, after which the helper is killed.
fn converse(
    mut child: Child,
    req: &[u8],
    timeout: Duration,
) -> Result<(Vec<u8>, Vec<u8>, std::process::ExitStatus), HelperError> {
    let deadline = Instant::now() + timeout;
    let res = pump(&mut child, req, deadline);
    let res = res.and_then(|(out, err)| {
        let status = wait_until(&mut child, deadline)?;
        Ok((out, err, status))
    });
    if res.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    match res {
        Err(HelperError::Pipe(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            Err(HelperError::Timeout {
                ms: timeout.as_millis() as u64,
            })
        }
        other => other,
    }
}

fn timed_out() -> HelperError {
    HelperError::Pipe(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

/// The poll loop: request in, reply and stderr out, bounded in bytes and
/// time.
fn pump(
    child: &mut Child,
    req: &[u8],
    deadline: Instant,
) -> Result<(Vec<u8>, Vec<u8>), HelperError> {
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    for s in [
        stdin.as_ref().map(|s| s.as_raw_fd()),
        stdout.as_ref().map(|s| s.as_raw_fd()),
        stderr.as_ref().map(|s| s.as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    {
        set_nonblocking(s)?;
    }
    let (mut written, mut out, mut err) = (0usize, Vec::new(), Vec::new());
    let mut buf = [0u8; 64 << 10];
    while stdout.is_some() || stderr.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        let mut fds = Vec::with_capacity(3);
        if let Some(s) = &stdin {
            fds.push(libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            });
        }
        for fd in [
            stdout.as_ref().map(|s| s.as_raw_fd()),
            stderr.as_ref().map(|s| s.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
        {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: fds is a valid array of its length for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if let Some(s) = &mut stdin {
            match s.write(&req[written..]) {
                Ok(k) => written += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // The helper closed its stdin (it failed early): its
                // reply or stderr says why.
                Err(_) => written = req.len(),
            }
            if written >= req.len() {
                stdin = None;
            }
        }
        if let Some(s) = &mut stdout {
            match s.read(&mut buf) {
                Ok(0) => stdout = None,
                Ok(k) => {
                    out.extend_from_slice(&buf[..k]);
                    if out.len() as u64 > MAX_MESSAGE_BYTES {
                        return Err(std::io::Error::other("reply larger than the limit").into());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(s) = &mut stderr {
            match s.read(&mut buf) {
                Ok(0) => stderr = None,
                Ok(k) => {
                    let room = MAX_STDERR.saturating_sub(err.len());
                    err.extend_from_slice(&buf[..k.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok((out, err))
}

fn set_nonblocking(fd: i32) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for the exit until the deadline: at once when it exits (pidfd),
/// else by polling every 200 µs (it closed its pipes, so it is exiting).
fn wait_until(
    child: &mut Child,
    deadline: Instant,
) -> Result<std::process::ExitStatus, HelperError> {
    let fd = pidfd(child.id() as libc::pid_t);
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        pause_until(fd.as_ref(), deadline)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// Forks a child that runs `f` (async-signal-safe calls only: the test
    /// harness has threads) and `_exit`s with its result.
    fn fork_raw(f: impl FnOnce() -> i32) -> libc::pid_t {
        // SAFETY: the child only makes async-signal-safe calls, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = f();
            // SAFETY: ends the child.
            unsafe { libc::_exit(code) }
        }
        pid
    }

    #[test]
    fn the_reply_and_the_exit_status_are_collected() {
        let (rd, wr) = pipe().unwrap();
        let pid = fork_raw(|| {
            // SAFETY: writing a static buffer to our pipe.
            unsafe { libc::write(wr.as_raw_fd(), b"reply".as_ptr().cast(), 5) };
            3
        });
        drop(wr);
        let (out, status) = collect(pid, rd, Instant::now() + Duration::from_secs(10)).unwrap();
        assert_eq!(out, b"reply");
        assert_eq!(status.code(), Some(3));
    }

    #[test]
    fn a_child_past_the_deadline_is_killed_and_reaped() {
        let (rd, wr) = pipe().unwrap();
        // Keeps the write end open and never answers.
        let pid = fork_raw(|| {
            // SAFETY: sleep is async-signal-safe.
            unsafe { libc::sleep(30) };
            0
        });
        drop(wr);
        let t0 = Instant::now();
        let err = collect(pid, rd, Instant::now() + Duration::from_millis(100)).unwrap_err();
        assert!(
            matches!(&err, HelperError::Pipe(e) if e.kind() == std::io::ErrorKind::TimedOut),
            "{err}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
        // Reaped: no such process any more.
        // SAFETY: signal 0 only checks existence.
        assert_eq!(unsafe { libc::kill(pid, 0) }, -1);
    }

    #[test]
    fn a_helper_gets_no_descriptor_of_its_caller_but_its_pipes() {
        // A descriptor without close-on-exec, as an engine hands a runtime.
        let f = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: dup of a descriptor this test holds; closed below.
        let inherited = unsafe { libc::dup(f.as_raw_fd()) };
        assert!(inherited > 2);
        let (out, _, status) = run_bounded(
            Path::new("/bin/sh"),
            &["-c", "ls /proc/$$/fd"],
            b"",
            Duration::from_secs(10),
            ChildLimits {
                cpu_secs: 10,
                address_space: None,
            },
        )
        .unwrap();
        // SAFETY: the dup above.
        unsafe { libc::close(inherited) };
        assert!(status.success());
        let fds: Vec<String> = String::from_utf8_lossy(&out)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(fds, ["0", "1", "2"], "the helper held {fds:?}");
    }

    #[test]
    fn threads_are_counted() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        assert!(!single_threaded());
        drop(tx);
        let _ = t.join();
    }
}
