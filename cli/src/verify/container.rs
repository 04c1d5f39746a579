//! One bounded container run through `hpcc-runtime`: a private copy of the
//! bundle's `config.json` (the admin's bundle is never written) with the
//! check's command and bind mounts, run with a deadline, and always
//! deleted (`hpcc-runtime delete -f`, which goes to the real runtime) and
//! its directory removed, on success, failure, timeout or Ctrl-C.

use super::VerifyError;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by SIGINT, SIGTERM or SIGHUP while a check runs: the running child
/// is killed and cleaned up instead of the whole process dying with its
/// container left behind.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Routes SIGINT, SIGTERM and SIGHUP to [`INTERRUPTED`] for the rest of
/// the process (`hpcc verify` is the whole process).
pub fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; the function pointer has the C ABI signal(2) expects.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// Whether the user interrupted the check.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// What one process (a container or the bare-metal run) gave.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Exit status; `None` when it was killed at the deadline or by Ctrl-C.
    pub code: Option<i32>,
    /// Whether the deadline killed it.
    pub timed_out: bool,
    /// Whether Ctrl-C (or SIGTERM) stopped it.
    pub interrupted: bool,
    /// Standard output (bounded).
    pub stdout: String,
    /// Standard error (bounded).
    pub stderr: String,
}

impl RunOutput {
    /// Exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// One line saying why it failed: the last meaningful stderr line.
    pub fn failure(&self) -> String {
        if self.interrupted {
            return "interrupted".into();
        }
        if self.timed_out {
            return "timed out".into();
        }
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .chain(self.stdout.lines())
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '-' || c == '='))
            .collect();
        let telling: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                [
                    "error",
                    "abort",
                    "broken",
                    "fail",
                    "refused",
                    "not found",
                    "cannot",
                ]
                .iter()
                .any(|w| l.contains(w))
            })
            .collect();
        // An MPI error stack says what failed first and why last.
        let last = match telling.as_slice() {
            [] => lines.last().map(|l| cut(l, 240).to_owned()),
            [one] => Some(cut(one, 240).to_owned()),
            [first, .., last] => Some(format!("{} ... {}", cut(first, 160), cut(last, 200))),
        };
        let code = match self.code {
            Some(c) => format!("exit {c}"),
            None => "killed".into(),
        };
        match last {
            Some(l) => format!("{code}: {}", hpcc_common::text::escape(&l)),
            None => code,
        }
    }
}

fn cut(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Most bytes kept of a child's stdout or stderr.
const MAX_OUTPUT: u64 = 1 << 20;

/// Runs `cmd` with stdout and stderr in files of `dir` (no pipe to
/// fill), in a process group of its own, until it exits, `deadline`
/// passes or the user interrupts; a child still running then is killed
/// with its whole group.
pub fn run_bounded(
    mut cmd: Command,
    dir: &Path,
    name: &str,
    deadline: Instant,
) -> Result<RunOutput, VerifyError> {
    use std::os::unix::process::CommandExt;
    let out_path = dir.join(format!("{name}.out"));
    let err_path = dir.join(format!("{name}.err"));
    let out = std::fs::File::create(&out_path).map_err(|source| VerifyError::Io {
        what: format!("cannot create {}", out_path.display()),
        source,
    })?;
    let err = std::fs::File::create(&err_path).map_err(|source| VerifyError::Io {
        what: format!("cannot create {}", err_path.display()),
        source,
    })?;
    let program = format!("{:?}", cmd.get_program());
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = cmd.spawn().map_err(|source| VerifyError::Io {
        what: format!("cannot start {program}"),
        source,
    })?;
    let pgid = child.id() as i32;
    let (mut timed_out, mut stopped) = (false, false);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(source) => {
                return Err(VerifyError::Io {
                    what: format!("cannot wait for {program}"),
                    source,
                })
            }
        }
        timed_out = Instant::now() >= deadline;
        stopped = interrupted();
        if timed_out || stopped {
            // SAFETY: kill(2) on our own child's process group; no memory involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| {
        hpcc_common::io::read_file_bounded(p, MAX_OUTPUT)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(RunOutput {
        code: status.and_then(|s| s.code().or_else(|| s.signal().map(|n| 128 + n))),
        timed_out: timed_out && !stopped,
        interrupted: stopped,
        stdout: read(&out_path),
        stderr: read(&err_path),
    })
}

/// A private working directory (mode 0700), removed on drop.
#[derive(Debug)]
pub struct WorkDir {
    /// The directory.
    pub path: PathBuf,
}

impl WorkDir {
    /// Creates `/tmp/hpcc-verify.<pid>.<n>` (exclusively: an existing one,
    /// planted or not, is never reused).
    pub fn new() -> Result<WorkDir, VerifyError> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = base.join(format!("hpcc-verify.{}.{nanos:09}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| VerifyError::Io {
                what: format!("cannot create {}", path.display()),
                source,
            })?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A bind mount the check adds for its own duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Host path.
    pub source: PathBuf,
    /// Path in the container.
    pub destination: PathBuf,
}

/// Where the check's own files go in the container: under the
/// container's `/dev` tmpfs, like hpcc's injected libraries, so that
/// nothing is created in the image.
pub const VERIFY_DIR: &str = "/dev/hpcc/verify";

/// The edits of the private `config.json`.
#[derive(Debug, Clone, Default)]
pub struct Edits {
    /// `process.args`.
    pub args: Vec<String>,
    /// Added to `process.env` (replacing the same names).
    pub env: Vec<(String, String)>,
    /// Read-only bind mounts.
    pub binds: Vec<Bind>,
    /// A private tmpfs at `/tmp` (Open MPI's session directory on a
    /// read-only rootfs).
    pub tmp: bool,
}

/// Writes the private bundle: the original `config.json` with `root.path`
/// made absolute (against the original bundle) and the edits.
pub fn private_bundle(
    bundle: &Path,
    config: &Value,
    edits: &Edits,
    dir: &Path,
) -> Result<PathBuf, VerifyError> {
    let mut c = config.clone();
    let bad = |field: &str| VerifyError::Bundle {
        bundle: bundle.to_owned(),
        reason: format!("config.json has no {field}"),
    };
    let root = c
        .pointer("/root/path")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("root.path"))?
        .to_owned();
    let abs = if Path::new(&root).is_absolute() {
        PathBuf::from(&root)
    } else {
        std::path::absolute(bundle.join(&root)).map_err(|source| VerifyError::Io {
            what: format!("cannot resolve {}", bundle.join(&root).display()),
            source,
        })?
    };
    c["root"]["path"] = json!(abs);
    // The bundle's hooks would run on the host as root: the check needs
    // none (the plan is applied by hpcc-runtime's config edit).
    if let Some(o) = c.as_object_mut() {
        o.remove("hooks");
    }
    let process = c
        .get_mut("process")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad("process"))?;
    process.insert("args".into(), json!(edits.args));
    process.insert("terminal".into(), json!(false));
    let mut env: Vec<String> = process
        .get("env")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|e| {
                    let name = e.split('=').next().unwrap_or_default();
                    !edits.env.iter().any(|(n, _)| n == name)
                })
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    env.extend(edits.env.iter().map(|(n, v)| format!("{n}={v}")));
    process.insert("env".into(), json!(env));
    if !c.get("mounts").is_some_and(Value::is_array) {
        c["mounts"] = json!([]);
    }
    let mounts = c["mounts"].as_array_mut().ok_or_else(|| bad("mounts"))?;
    if edits.tmp {
        mounts.push(json!({
            "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777", "size=262144k"]
        }));
    }
    for b in &edits.binds {
        mounts.push(json!({
            "destination": b.destination, "type": "bind", "source": b.source,
            "options": ["bind", "ro", "nosuid", "nodev"]
        }));
    }
    let out = dir.join("bundle");
    std::fs::create_dir(&out).map_err(|source| VerifyError::Io {
        what: format!("cannot create {}", out.display()),
        source,
    })?;
    let text = serde_json::to_vec_pretty(&c).map_err(VerifyError::Json)?;
    std::fs::write(out.join("config.json"), text).map_err(|source| VerifyError::Io {
        what: format!("cannot write {}", out.join("config.json").display()),
        source,
    })?;
    Ok(out)
}

/// How to start a container through hpcc-runtime.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// `hpcc-runtime`.
    pub shim: PathBuf,
    /// The policy it decides with.
    pub policy: PathBuf,
}

impl Runtime {
    /// Runs the private bundle `bundle` as container `id` until `deadline`,
    /// then deletes it whatever happened.
    pub fn run(
        &self,
        bundle: &Path,
        id: &str,
        dir: &Path,
        deadline: Instant,
    ) -> Result<RunOutput, VerifyError> {
        let mut cmd = Command::new(&self.shim);
        cmd.arg(format!("--hpcc-config={}", self.policy.display()))
            .arg("run")
            .arg("-b")
            .arg(bundle)
            .arg(id)
            .current_dir(dir);
        let res = run_bounded(cmd, dir, id, deadline);
        self.delete(id, dir);
        res
    }

    /// `hpcc-runtime delete -f ID` (passed to the real runtime), bounded;
    /// a container that never existed is not an error.
    pub fn delete(&self, id: &str, dir: &Path) {
        let mut cmd = Command::new(&self.shim);
        cmd.arg(format!("--hpcc-config={}", self.policy.display()))
            .args(["delete", "-f", id])
            .current_dir(dir);
        let was = INTERRUPTED.swap(false, Ordering::SeqCst);
        let _ = run_bounded(
            cmd,
            dir,
            &format!("{id}.delete"),
            Instant::now() + Duration::from_secs(10),
        );
        if was {
            INTERRUPTED.store(true, Ordering::SeqCst);
        }
    }
}

/// `hpcc-runtime`: `--hpcc-runtime`, else next to this `hpcc`, else the
/// package's `/usr/libexec/hpcc/hpcc-runtime`, else `$PATH`.
pub fn find_shim(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_owned());
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("hpcc-runtime")));
    sibling
        .into_iter()
        .chain([PathBuf::from("/usr/libexec/hpcc/hpcc-runtime")])
        .find(|p| p.is_file())
        .or_else(|| which("hpcc-runtime"))
}

/// The first executable `name` on `$PATH` (or `/usr/bin`, `/usr/sbin`).
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_config_keeps_the_bundle_and_adds_the_check() {
        let dir = WorkDir::new().unwrap();
        let config = json!({
            "root": {"path": "rootfs", "readonly": true},
            "process": {"args": ["/bin/app"], "env": ["PATH=/bin", "A=1"], "terminal": true},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "annotations": {"k": "v"}
        });
        let edits = Edits {
            args: vec!["/dev/hpcc/verify/bin/x".into()],
            env: vec![("PATH".into(), "/dev/hpcc/verify/bin:/bin".into())],
            binds: vec![Bind {
                source: "/usr/bin/true".into(),
                destination: "/dev/hpcc/verify/bin/x".into(),
            }],
            tmp: true,
        };
        let b = private_bundle(Path::new("/srv/b"), &config, &edits, &dir.path).unwrap();
        let c: Value =
            serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
        assert_eq!(c["root"]["path"], "/srv/b/rootfs");
        assert_eq!(c["process"]["args"], json!(["/dev/hpcc/verify/bin/x"]));
        assert_eq!(c["process"]["terminal"], false);
        assert_eq!(
            c["process"]["env"],
            json!(["A=1", "PATH=/dev/hpcc/verify/bin:/bin"])
        );
        assert_eq!(c["mounts"].as_array().unwrap().len(), 3);
        assert_eq!(c["mounts"][2]["options"][1], "ro");
        assert_eq!(c["annotations"]["k"], "v");
        let p = dir.path.clone();
        drop(dir);
        assert!(!p.exists());
    }

    #[test]
    fn a_child_past_its_deadline_is_killed() {
        let dir = WorkDir::new().unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo started; sleep 30"]);
        let t0 = Instant::now();
        let out = run_bounded(cmd, &dir.path, "sleep", t0 + Duration::from_millis(300)).unwrap();
        assert!(out.timed_out);
        assert_eq!(out.code, None);
        assert_eq!(out.stdout, "started\n");
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(out.failure(), "timed out");
    }

    #[test]
    fn failure_names_the_error_line() {
        let out = RunOutput {
            code: Some(134),
            timed_out: false,
            interrupted: false,
            stdout: String::new(),
            stderr: "noise\nhpcc stand-in: MPI_Init is deliberately broken\n\u{1b}[31mbye\n".into(),
        };
        assert_eq!(
            out.failure(),
            "exit 134: hpcc stand-in: MPI_Init is deliberately broken"
        );
    }
}
