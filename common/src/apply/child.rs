//! Running [`apply`](super::apply) in a fresh, single-threaded helper
//! process.
//!
//! `setns(CLONE_NEWNS)` fails with EINVAL in a multi-threaded process, and
//! the hook may have threads by the time it has a plan (NVML starts some);
//! `fork()` of a multi-threaded Rust process may deadlock in the allocator.
//! So the hook re-executes its own trusted binary (`/proc/self/exe`) with
//! [`CHILD_ARG`], an empty environment and `/` as cwd, sends the request as
//! JSON on stdin and reads the outcome as JSON on stdout. The child enters
//! the container's namespace and dies with it; the hook's own namespace is
//! never changed. The SPANK plugin does the same with the installed
//! `hpcc-hook` path (slurmstepd's `/proc/self/exe` is not hpcc).

use super::linux::LinuxSyscalls;
use super::{apply, touches_container, Applied, ApplyError, Target};
use crate::plan::Tweaks;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// The hidden first argument that makes `hpcc-hook` the apply helper.
pub const CHILD_ARG: &str = "--hpcc-apply-child";

/// Largest request or reply accepted on the pipe.
pub const MAX_MESSAGE_BYTES: u64 = 4 << 20;

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
    /// Failed (already rolled back), with the message.
    Failed(String),
}

/// Applies the tweaks from a helper process running `exe` (the hook's own
/// binary). Tweaks that do not touch the container (environment only) are
/// answered here without a helper.
pub fn apply_in_child(exe: &Path, tweaks: &Tweaks, target: &Target) -> Result<Applied, ApplyError> {
    if !touches_container(tweaks) {
        return apply(tweaks, target, &LinuxSyscalls::new());
    }
    let req = serde_json::to_vec(&Request {
        tweaks: tweaks.clone(),
        target: target.clone(),
    })
    .map_err(|e| ApplyError::Helper(format!("encoding the request: {e}")))?;
    let mut child = Command::new(exe)
        .arg(CHILD_ARG)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ApplyError::Helper(format!("starting {}: {e}", exe.display())))?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(&req)
            .map_err(|e| ApplyError::Helper(format!("writing the request: {e}")))?;
    }
    let mut out = Vec::new();
    if let Some(s) = child.stdout.take() {
        s.take(MAX_MESSAGE_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| ApplyError::Helper(format!("reading the reply: {e}")))?;
    }
    let mut err = Vec::new();
    if let Some(s) = child.stderr.take() {
        let _ = s.take(16 << 10).read_to_end(&mut err);
    }
    let status = child
        .wait()
        .map_err(|e| ApplyError::Helper(format!("waiting for the helper: {e}")))?;
    match serde_json::from_slice::<Reply>(&out) {
        Ok(Reply::Applied(a)) if status.success() => Ok(a),
        Ok(Reply::Failed(msg)) => Err(ApplyError::Remote(msg)),
        _ => Err(ApplyError::Helper(format!(
            "helper {} exited with {status} without a valid reply: {}",
            exe.display(),
            String::from_utf8_lossy(&err).trim()
        ))),
    }
}

/// The helper's side: reads a [`Request`], applies it with the real system
/// calls, writes a [`Reply`]. Returns the exit code (0 applied, 1 failed).
pub fn child_main(stdin: impl Read, mut stdout: impl Write) -> i32 {
    let mut buf = Vec::new();
    let reply = match stdin.take(MAX_MESSAGE_BYTES + 1).read_to_end(&mut buf) {
        Err(e) => Reply::Failed(format!("reading the request: {e}")),
        Ok(_) if buf.len() as u64 > MAX_MESSAGE_BYTES => {
            Reply::Failed("request larger than the limit".into())
        }
        Ok(_) => match serde_json::from_slice::<Request>(&buf) {
            Err(e) => Reply::Failed(format!("invalid request: {e}")),
            Ok(req) => match apply(&req.tweaks, &req.target, &LinuxSyscalls::new()) {
                Ok(a) => Reply::Applied(a),
                Err(e) => Reply::Failed(e.to_string()),
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
