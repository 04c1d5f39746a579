//! The Slurm mode's start gate: a step cancelled while `hpcc-runtime` is
//! still deciding must not leave its container running.
//!
//! slurmstepd cancels a container step with oci.conf's `RunTimeKill`
//! (`runc kill -a ID KILL`). When the cancel comes while `RunTimeRun` is
//! still in hpcc-runtime (deciding, writing the config) or in `runc run`
//! before the container exists, that kill finds nothing and fails, and the
//! container starts afterwards: an MPI rank then waits in `MPI_Init` for a
//! node that refused, until Slurm abandons the step a minute later. This
//! happens whenever one node refuses a step: the others are cancelled a
//! few milliseconds after they start.
//!
//! So, with `RunTimeKill` and `RunTimeDelete` also going through
//! `hpcc-runtime --hpcc-slurm`:
//! - the launch leaves `.hpcc-ID.starting` (its pid and start time) in the
//!   runtime's state directory (`--root`) before it decides, and does not
//!   execute the runtime if `.hpcc-ID.cancelled` is there by then;
//! - a kill that fails leaves `.hpcc-ID.cancelled`, then, while the
//!   launch's process (hpcc-runtime, then `runc run` under the same pid) is
//!   alive, tries again until the container exists and is killed, for at
//!   most [`KILL_WAIT`];
//! - `delete` removes both files.
//!
//! Either the launch sees the mark before it executes the runtime, or the
//! kill sees the launch's process alive and waits for its container: no
//! order of the two lets the container run on. Files are trusted only when
//! owned by this user (a shared state directory must not let one user
//! cancel another's steps).

use crate::args::{Args, ControlCommand};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a failed kill waits for a launch in progress to create its
/// container (runc run takes tens of milliseconds; a loaded node more).
pub const KILL_WAIT: Duration = Duration::from_secs(15);

/// Bound on one call of the real runtime's `kill` or `delete`.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// Age past which a `.cancelled` mark with no launch running is removed.
const STALE: Duration = Duration::from_secs(300);

/// At most this many directory entries are looked at by one sweep.
const SWEEP_MAX: usize = 4096;

/// Pause between two kills while the launch is still in progress.
const RETRY: Duration = Duration::from_millis(25);

/// The gate files of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    starting: PathBuf,
    cancelled: PathBuf,
}

/// Whether `id` can name a file beside the runtime's state (runc's own
/// rule for ids, and not a dot name).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
}

/// The runtime's state directory: `--root`, else runc's default for this
/// user (`/run/runc` for root, `$XDG_RUNTIME_DIR/runc` otherwise).
fn state_dir(args: &Args) -> Option<PathBuf> {
    if let Some(root) = args.global("--root") {
        let p = PathBuf::from(root);
        return p.is_absolute().then_some(p);
    }
    if euid() == 0 {
        return Some(PathBuf::from("/run/runc"));
    }
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)?;
    xdg.is_absolute().then(|| xdg.join("runc"))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `(pid, start time in clock ticks)` of a live process, from
/// `/proc/PID/stat` (field 22; the name in parentheses may hold anything,
/// so the fields are counted after its last `)`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    // After ')' come state (field 3) ... starttime (field 22).
    let field = after.split_whitespace().nth(19)?;
    let state = after.split_whitespace().next()?;
    // A zombie has exited: its container, if any, is gone with it.
    if state == "Z" || state == "X" {
        return None;
    }
    field.parse().ok()
}

impl Gate {
    /// The gate of container `id` under this command line's runtime state
    /// directory; `None` when there is no usable one (the launch then
    /// behaves as without the gate).
    pub fn of(args: &Args, id: &str) -> Option<Gate> {
        if !valid_id(id) {
            return None;
        }
        let dir = state_dir(args)?;
        Some(Gate {
            starting: dir.join(format!(".hpcc-{id}.starting")),
            cancelled: dir.join(format!(".hpcc-{id}.cancelled")),
        })
    }

    fn dir(&self) -> &Path {
        self.starting.parent().unwrap_or(Path::new("/"))
    }

    /// Creates (this user's, mode 0600) or opens one of the gate's files;
    /// `None` when it is not this user's own regular file.
    fn own_file(path: &Path, write: bool) -> Option<File> {
        let f = if write {
            // runc makes its state directory 0700 too.
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path.parent()?);
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
                .ok()?
        } else {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(path)
                .ok()?
        };
        let m = f.metadata().ok()?;
        (m.is_file() && m.uid() == euid()).then_some(f)
    }

    /// The launch: this process is about to decide and execute the runtime.
    pub fn starting(&self) {
        let Some(mut f) = Self::own_file(&self.starting, true) else {
            tracing::warn!(dir = %self.dir().display(), "no start gate for this container (its state directory is not this user's): a cancel during the launch may miss it");
            return;
        };
        let pid = std::process::id();
        if let Some(t) = start_time(pid) {
            let _ = f.set_len(0);
            let _ = writeln!(f, "{pid} {t}");
        }
        self.sweep();
    }

    /// Whether a kill came for this container before it existed.
    pub fn cancelled(&self) -> bool {
        Self::own_file(&self.cancelled, false).is_some()
    }

    /// The kill side: marks the container cancelled.
    fn cancel(&self) {
        if Self::own_file(&self.cancelled, true).is_none() {
            tracing::warn!(path = %self.cancelled.display(), "cannot mark the container cancelled");
        }
    }

    /// Whether the launch that left `.starting` is still running (as
    /// hpcc-runtime, or as the runtime it became).
    fn launch_alive(&self) -> bool {
        let Some(mut f) = Self::own_file(&self.starting, false) else {
            return false;
        };
        let mut s = String::new();
        if Read::by_ref(&mut f)
            .take(64)
            .read_to_string(&mut s)
            .is_err()
        {
            return false;
        }
        let mut it = s.split_whitespace();
        let (Some(pid), Some(t)) = (
            it.next().and_then(|p| p.parse::<u32>().ok()),
            it.next().and_then(|t| t.parse::<u64>().ok()),
        ) else {
            return false;
        };
        start_time(pid) == Some(t)
    }

    /// Removes what earlier launches left (Slurm calls `delete` only for
    /// some steps; `runc run` deletes its container itself): `.starting`
    /// files whose launch has ended, and `.cancelled` marks older than
    /// [`STALE`] whose launch is not running. Bounded to [`SWEEP_MAX`]
    /// directory entries.
    pub fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return;
        };
        let now = std::time::SystemTime::now();
        for e in entries.take(SWEEP_MAX).flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name.strip_prefix(".hpcc-") else {
                continue;
            };
            let (id, cancelled) = match (
                rest.strip_suffix(".starting"),
                rest.strip_suffix(".cancelled"),
            ) {
                (Some(id), _) => (id, false),
                (_, Some(id)) => (id, true),
                _ => continue,
            };
            let other = Gate {
                starting: self.dir().join(format!(".hpcc-{id}.starting")),
                cancelled: self.dir().join(format!(".hpcc-{id}.cancelled")),
            };
            if other == *self || other.launch_alive() {
                continue;
            }
            let path = if cancelled {
                &other.cancelled
            } else {
                &other.starting
            };
            let Some(f) = Self::own_file(path, false) else {
                continue;
            };
            // A mark may come just before its launch starts: kept a while.
            let old = f
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE);
            if !cancelled || old {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Removes both files (after `delete`).
    fn clear(&self) {
        for p in [&self.starting, &self.cancelled] {
            if Self::own_file(p, false).is_some() {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Runs the real runtime with the command line's arguments, bounded;
/// `quiet` drops its stderr (the retries of a kill). Its exit code, or 1.
fn call(runtime: &Path, args: &Args, quiet: bool) -> i32 {
    let mut cmd = Command::new(runtime);
    cmd.args(&args.runtime).stdin(Stdio::null());
    if quiet {
        cmd.stderr(Stdio::null()).stdout(Stdio::null());
    }
    let Ok(mut child) = cmd.spawn() else {
        eprintln!(
            "hpcc-runtime: cannot execute the runtime {}",
            runtime.display()
        );
        return 1;
    };
    let deadline = Instant::now() + CONTROL_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.code().unwrap_or(1),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!(
                    "hpcc-runtime: {} did not answer within {} s",
                    runtime.display(),
                    CONTROL_TIMEOUT.as_secs()
                );
                return 1;
            }
        }
    }
}

/// `kill` and `delete` in the Slurm mode: the real runtime's, plus the
/// gate. Returns the exit code.
pub fn control(runtime: &Path, args: &Args, command: ControlCommand, id: &str) -> i32 {
    let gate = Gate::of(args, id);
    let code = call(runtime, args, false);
    let Some(gate) = gate else {
        return code;
    };
    match command {
        ControlCommand::Delete => {
            gate.clear();
            code
        }
        ControlCommand::Kill if code == 0 => code,
        ControlCommand::Kill => {
            gate.cancel();
            let deadline = Instant::now() + KILL_WAIT;
            while gate.launch_alive() && Instant::now() < deadline {
                std::thread::sleep(RETRY);
                if call(runtime, args, true) == 0 {
                    tracing::info!(container = id, "killed once its launch had created it");
                    return 0;
                }
            }
            code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn args(v: &[&str]) -> Args {
        Args::parse(v.iter().map(OsString::from)).unwrap()
    }

    #[test]
    fn ids_that_cannot_name_a_file_have_no_gate() {
        for bad in ["", ".x", "../x", "a/b", "a b", "a\nb"] {
            assert!(!valid_id(bad), "{bad:?}");
            assert_eq!(Gate::of(&args(&["--root=/r", "kill", bad]), bad), None);
        }
        assert!(valid_id("n1.1000.7.0.0"));
        let g = Gate::of(&args(&["--root=/r", "kill", "c"]), "c").unwrap();
        assert_eq!(g.starting, Path::new("/r/.hpcc-c.starting"));
        assert_eq!(g.cancelled, Path::new("/r/.hpcc-c.cancelled"));
        // A relative --root is not used.
        assert_eq!(Gate::of(&args(&["--root=r", "kill", "c"]), "c"), None);
    }

    #[test]
    fn a_launch_is_alive_while_its_process_runs() {
        let dir = std::env::temp_dir().join(format!("hpcc-gate-{}", std::process::id()));
        let root = format!("--root={}", dir.display());
        let g = Gate::of(&args(&[&root, "run", "c"]), "c").unwrap();
        assert!(!g.launch_alive() && !g.cancelled());
        g.starting();
        assert!(g.launch_alive(), "this process is the launch");
        // Another start time under the same pid: a reused pid is not the
        // launch.
        let (pid, t) = (std::process::id(), start_time(std::process::id()).unwrap());
        std::fs::write(&g.starting, format!("{pid} {}\n", t + 1)).unwrap();
        assert!(!g.launch_alive());
        std::fs::write(&g.starting, "garbage").unwrap();
        assert!(!g.launch_alive());
        g.cancel();
        assert!(g.cancelled());
        g.clear();
        assert!(!g.cancelled() && !g.starting.exists());
        // A symlink is never followed nor trusted.
        std::os::unix::fs::symlink("/etc/hostname", &g.cancelled).unwrap();
        assert!(!g.cancelled());
        g.cancel();
        assert!(std::fs::symlink_metadata(&g.cancelled)
            .unwrap()
            .file_type()
            .is_symlink());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_launch_sweeps_what_ended_launches_left() {
        let dir = std::env::temp_dir().join(format!("hpcc-gate-sweep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = format!("--root={}", dir.display());
        let ended = dir.join(".hpcc-old.starting");
        // Above any pid_max: no such process.
        std::fs::write(&ended, "4194305 1\n").unwrap();
        let fresh_mark = dir.join(".hpcc-soon.cancelled");
        std::fs::write(&fresh_mark, "").unwrap();
        let state = dir.join("c0");
        std::fs::create_dir(&state).unwrap();
        let g = Gate::of(&args(&[&root, "run", "me"]), "me").unwrap();
        g.starting();
        assert!(!ended.exists(), "a launch that ended leaves nothing");
        assert!(
            fresh_mark.exists(),
            "a fresh mark may be for a launch about to start"
        );
        assert!(g.starting.exists(), "its own file stays");
        assert!(state.is_dir(), "the runtime's state is not ours");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn start_time_reads_past_a_name_with_parentheses() {
        let me = start_time(std::process::id());
        assert!(me.is_some());
        assert_eq!(start_time(u32::MAX), None);
    }
}
