//! Running [`apply`](super::apply) in a separate, single-threaded, bounded
//! helper process.
//!
//! `setns(CLONE_NEWNS)` fails with EINVAL in a multi-threaded process, and
//! the hook's own namespace must never change, so the namespace work runs
//! in a child process. Two ways, chosen per launch:
//!
//! - the hook is single-threaded (the normal case: the node fingerprint
//!   comes from the per-boot cache, no NVML thread was started): it
//!   `fork`s, and the child applies the plan it already holds in memory and
//!   writes the outcome as JSON on a pipe. With one thread there is no lock
//!   another thread could hold in the child; no `exec`, no second program
//!   start (about 0.5 ms of the hook's cost);
//! - it has threads (NVML started some while fingerprinting): `fork()` of
//!   a multi-threaded Rust process may deadlock in the allocator, so it
//!   re-executes its own trusted binary (`/proc/self/exe`) with
//!   [`CHILD_ARG`], an empty environment and `/` as cwd, sends the request
//!   as JSON on stdin and reads the outcome as JSON on stdout.
//!
//! Either way the child enters the container's namespace; the hook's own
//! namespace is never changed.
//!
//! The helper is bounded: it dies with the hook (`PR_SET_PDEATHSIG`), it
//! has CPU, memory, file and core limits, and the hook waits for it until a
//! deadline from the policy (`limits.apply_timeout_ms`), then kills it.
//! What it mounted lives in the container's mount namespace, which the
//! runtime tears down when the start fails: nothing stays on the host.

use super::linux::LinuxSyscalls;
use super::{apply, touches_container, Applied, ApplyError, Target};
use crate::plan::Tweaks;
use crate::process::{bound_self, collect, pipe};
// The bounded child machinery lives in `crate::process` (the fingerprint's
// GPU probe uses it too); re-exported where callers have always found it.
pub use crate::process::{
    run_bounded, single_threaded, ChildLimits, HelperError, MAX_MESSAGE_BYTES,
};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// The hidden first argument that makes `hpcc-hook` the apply helper.
pub const CHILD_ARG: &str = "--hpcc-apply-child";

/// Address space of the helper: it parses one request and makes a few
/// hundred system calls.
const HELPER_MEMORY: libc::rlim_t = 512 << 20;

/// What the hook sends.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The tweaks.
    pub tweaks: Tweaks,
    /// Where.
    pub target: Target,
}

/// What the helper answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// Done.
    Applied(Applied),
    /// Failed (already rolled back).
    Failed(RemoteError),
}

/// The helper's own failure, as it reported it over the pipe (the error
/// value itself cannot cross a process boundary, its message can).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    /// The helper's error, one line.
    pub message: String,
}

/// Applies the tweaks from a helper process running `exe` (the hook's own
/// binary), within `timeout`. Tweaks that do not touch the container
/// (environment only) are answered here without a helper.
pub fn apply_in_child(
    exe: &Path,
    tweaks: &Tweaks,
    target: &Target,
    timeout: Duration,
) -> Result<Applied, ApplyError> {
    if !touches_container(tweaks) {
        return apply(tweaks, target, &LinuxSyscalls::new());
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Err(ApplyError::Rootless { uid });
    }
    if single_threaded() {
        return apply_in_fork(tweaks, target, timeout);
    }
    let req = serde_json::to_vec(&Request {
        tweaks: tweaks.clone(),
        target: target.clone(),
    })
    .map_err(HelperError::from)?;
    let limits = ChildLimits {
        cpu_secs: timeout.as_secs() + 1,
        address_space: Some(HELPER_MEMORY),
    };
    let (out, err, status) = run_bounded(exe, &[CHILD_ARG], &req, timeout, limits)?;
    match serde_json::from_slice::<Reply>(&out) {
        Ok(Reply::Applied(a)) if status.success() => Ok(a),
        Ok(Reply::Failed(e)) => Err(e.into()),
        _ => Err(HelperError::NoReply {
            exe: exe.display().to_string(),
            status: status.to_string(),
            stderr: crate::text::escape(String::from_utf8_lossy(&err).trim()),
        }
        .into()),
    }
}

/// The single-threaded way: `fork`, apply in the child, read its reply on
/// a pipe, within `timeout`.
pub(crate) fn apply_in_fork(
    tweaks: &Tweaks,
    target: &Target,
    timeout: Duration,
) -> Result<Applied, ApplyError> {
    let deadline = Instant::now() + timeout;
    let cpu_secs = timeout.as_secs() + 1;
    let (rd, wr) = pipe().map_err(HelperError::Pipe)?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the caller checked that this process is single-threaded, so
    // no lock (allocator, stdio) can be held in the child by a thread that
    // does not exist there. The child never returns into the caller: it
    // applies, writes its reply and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(HelperError::Spawn {
            exe: "fork".into(),
            source: std::io::Error::last_os_error(),
        }
        .into());
    }
    if pid == 0 {
        drop(rd);
        let code = forked_child(parent, cpu_secs, tweaks, target, wr);
        // SAFETY: ends the child at once, without the parent's exit
        // handlers or buffers.
        unsafe { libc::_exit(code) }
    }
    drop(wr);
    let (out, status) = collect(pid, rd, deadline).map_err(|e| match e {
        HelperError::Pipe(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            HelperError::Timeout {
                ms: timeout.as_millis() as u64,
            }
        }
        other => other,
    })?;
    match serde_json::from_slice::<Reply>(&out) {
        Ok(Reply::Applied(a)) if status.success() => Ok(a),
        Ok(Reply::Failed(e)) => Err(e.into()),
        _ => Err(HelperError::NoReply {
            exe: "the forked helper".into(),
            status: status.to_string(),
            stderr: "(on the hook's stderr)".into(),
        }
        .into()),
    }
}

/// The forked child's whole life; returns its exit code.
fn forked_child(
    parent: libc::pid_t,
    cpu_secs: u64,
    tweaks: &Tweaks,
    target: &Target,
    wr: std::os::fd::OwnedFd,
) -> i32 {
    let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let limits = ChildLimits {
            cpu_secs,
            address_space: Some(HELPER_MEMORY),
        };
        if let Err(e) = bound_self(parent, limits) {
            return Reply::Failed(RemoteError {
                message: format!("bounding the apply helper: {e}"),
            });
        }
        let _ = std::env::set_current_dir("/");
        match apply(tweaks, target, &LinuxSyscalls::new()) {
            Ok(a) => Reply::Applied(a),
            Err(e) => Reply::Failed(RemoteError {
                message: e.to_string(),
            }),
        }
    }))
    .unwrap_or_else(|_| {
        Reply::Failed(RemoteError {
            message: "the apply helper panicked".into(),
        })
    });
    let code = match reply {
        Reply::Applied(_) => 0,
        Reply::Failed(_) => 1,
    };
    let mut f = std::fs::File::from(wr);
    let _ = serde_json::to_writer(&mut f, &reply);
    code
}

/// The helper's side: reads a [`Request`], applies it with the real system
/// calls, writes a [`Reply`]. Returns the exit code (0 applied, 1 failed).
pub fn child_main(stdin: impl Read, mut stdout: impl Write) -> i32 {
    let reply = match crate::io::read_bounded(stdin, MAX_MESSAGE_BYTES) {
        Err(e) => Reply::Failed(RemoteError {
            message: format!("reading the request: {e}"),
        }),
        Ok(buf) => match serde_json::from_slice::<Request>(&buf) {
            Err(e) => Reply::Failed(RemoteError {
                message: format!("invalid request: {e}"),
            }),
            Ok(req) => match apply(&req.tweaks, &req.target, &LinuxSyscalls::new()) {
                Ok(a) => Reply::Applied(a),
                Err(e) => Reply::Failed(RemoteError {
                    message: e.to_string(),
                }),
            },
        },
    };
    let code = match reply {
        Reply::Applied(_) => 0,
        Reply::Failed(_) => 1,
    };
    let _ = serde_json::to_writer(&mut stdout, &reply);
    let _ = stdout.flush();
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Mount;

    #[test]
    fn the_forked_helper_reports_its_refusal() {
        // An invalid tweak fails in the child before any namespace work;
        // its error comes back through the pipe. (The child allocates: the
        // harness's other threads hold no lock glibc does not reset at fork.)
        let tweaks = Tweaks {
            mounts: vec![Mount {
                source: "relative/libmpi.so.12".into(),
                destination: "/usr/lib/libmpi.so.12".into(),
                readonly: true,
                reason: "test".into(),
            }],
            ..Default::default()
        };
        let target = Target {
            rootfs: "/nonexistent".into(),
            pid: 1,
            ld_cache: None,
        };
        let err = apply_in_fork(&tweaks, &target, Duration::from_secs(10)).unwrap_err();
        assert!(matches!(err, ApplyError::Remote(_)), "{err}");
        assert!(
            err.to_string().contains("must be an absolute path"),
            "{err}"
        );
    }
}
