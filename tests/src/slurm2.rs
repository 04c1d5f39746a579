//! The two-node Slurm rig of `tests/setup/slurm2.sh` (nodes `n1`, `n2` in
//! their own network and mount namespaces on this one machine, ports
//! 6917/6918, everything under `/tmp/hpcc-slurm2`) for the MPI end-to-end
//! tests: start and stop, bounded in time; `srun` against it; the MPI
//! fixtures of `tests/setup/build-mpi-fixtures.sh`; commands run inside a
//! node's mount namespace.
//!
//! The rig takes `/tmp/hpcc-e2e.lock` itself while it is up (other agents
//! and CI jobs wait on it), and `stop` gives it back.

use crate::repo_root;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Everything of the rig lives under this directory (removed by `stop`).
pub const DIR: &str = "/tmp/hpcc-slurm2";
/// The rig's slurm.conf (`SLURM_CONF` of every srun here).
pub const CONF: &str = "/tmp/hpcc-slurm2/etc/slurm.conf";
/// The nodes, as Slurm names them.
pub const NODES: [&str; 2] = ["n1", "n2"];
/// Bound on `slurm2.sh start`: the wait for the lock (240 s) plus the
/// wait for the nodes (60 s) and some slack.
pub const START_BOUND: Duration = Duration::from_secs(330);
/// Bound on `slurm2.sh stop`.
pub const STOP_BOUND: Duration = Duration::from_secs(90);

/// The knobs of `slurm2.sh start` (see its header).
#[derive(Debug, Clone, Default)]
pub struct Knobs {
    /// `SLURM2_OCI_RUNTIME`: the command oci.conf's RunTimeRun runs, before
    /// `--root=... run ID -b BUNDLE` (may hold Slurm `%` patterns).
    pub runtime: Option<String>,
    /// `SLURM2_PLUGSTACK`.
    pub plugstack: Option<PathBuf>,
    /// `SLURM2_N2_CPUINFO`: a file bound over `/proc/cpuinfo` on n2 only.
    pub n2_cpuinfo: Option<PathBuf>,
    /// `SLURM2_OCI_KILL_SIGNAL` (RunTimeKill's signal).
    pub kill_signal: Option<String>,
    /// `SLURM2_DOCS`: "docs" mode, oci.conf is `packaging/slurm/oci.conf`
    /// with only the runtime's installed path replaced by this one.
    pub docs: Option<PathBuf>,
    /// `SLURM2_ROOTLESS=1` (with `docs`): the rootless runc options of
    /// docs/slurm.md on every oci.conf line.
    pub rootless: bool,
    /// `SLURM2_CLI_FILTER`: installed as `cli_filter.lua` next to
    /// slurm.conf, with `CliFilterPlugins=cli_filter/lua`.
    pub cli_filter: Option<PathBuf>,
}

fn script() -> PathBuf {
    repo_root().join("tests/setup/slurm2.sh")
}

/// Runs `cmd` with a deadline (`timeout` kills it, and its children
/// with `--kill-after`); returns its output and wall time.
pub fn bounded(cmd: &mut Command, bound: Duration) -> (Output, Duration) {
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut t = Command::new("timeout");
    t.arg("--kill-after=10")
        .arg(bound.as_secs().max(1).to_string())
        .arg(prog)
        .args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        t.current_dir(d);
    }
    let t0 = Instant::now();
    let out = t
        .stdin(Stdio::null())
        .output()
        .expect("timeout(1) can be run");
    (out, t0.elapsed())
}

/// Starts the rig with these knobs (a rig already up with other knobs is
/// restarted by the script). Err: the script's output.
pub fn start(k: &Knobs) -> Result<(), String> {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).arg("start");
    cmd.env("SLURM2_LOCK_WAIT", "240").env("SLURM2_WAIT", "60");
    let set = |cmd: &mut Command, name: &str, v: Option<String>| {
        match v {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    };
    set(&mut cmd, "SLURM2_OCI_RUNTIME", k.runtime.clone());
    set(
        &mut cmd,
        "SLURM2_PLUGSTACK",
        k.plugstack.as_ref().map(|p| p.display().to_string()),
    );
    set(
        &mut cmd,
        "SLURM2_N2_CPUINFO",
        k.n2_cpuinfo.as_ref().map(|p| p.display().to_string()),
    );
    set(&mut cmd, "SLURM2_OCI_KILL_SIGNAL", k.kill_signal.clone());
    set(
        &mut cmd,
        "SLURM2_DOCS",
        k.docs.as_ref().map(|p| p.display().to_string()),
    );
    set(&mut cmd, "SLURM2_ROOTLESS", k.rootless.then(|| "1".into()));
    set(
        &mut cmd,
        "SLURM2_CLI_FILTER",
        k.cli_filter.as_ref().map(|p| p.display().to_string()),
    );
    set(
        &mut cmd,
        "SLURM2_USERS",
        k.rootless.then(|| crate::USER.to_owned()),
    );
    let (out, took) = bounded(&mut cmd, START_BOUND);
    if out.status.success() {
        eprintln!("slurm2.sh start: up in {:.1} s", took.as_secs_f64());
        Ok(())
    } else {
        Err(format!(
            "tests/setup/slurm2.sh start failed (exit {:?} after {:.0} s):\n{}\n{}",
            out.status.code(),
            took.as_secs_f64(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Stops the rig (daemons, containers, namespaces, the lock, its
/// directory); bounded. Keeps the logs in `keep_logs` first, when given.
pub fn stop(keep_logs: Option<&Path>) {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).arg("stop");
    if let Some(d) = keep_logs {
        cmd.env("SLURM2_KEEP_LOGS", d);
    }
    let (out, _) = bounded(&mut cmd, STOP_BOUND);
    if !out.status.success() {
        eprintln!(
            "slurm2.sh stop failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `srun ARGS` against the rig, from /tmp, bounded; prints the command
/// and its output for the test log.
pub fn srun(args: &[&str], bound: Duration) -> (Output, Duration) {
    let mut cmd = Command::new("srun");
    cmd.args(args).env("SLURM_CONF", CONF).current_dir("/tmp");
    let (out, took) = bounded(&mut cmd, bound);
    eprintln!(
        "$ srun {}\nexit: {:?} after {:.2} s\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status.code(),
        took.as_secs_f64(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, took)
}

/// Cancels whatever the rig still runs (a failed step must not hold the
/// nodes for the next test).
pub fn cancel_all() {
    let mut cmd = Command::new("scancel");
    cmd.args(["-u", "root"]).env("SLURM_CONF", CONF);
    let _ = bounded(&mut cmd, Duration::from_secs(15));
}

/// The pid of node `node`'s slurmd (its mount namespace is the node's).
pub fn slurmd_pid(node: &str) -> Option<u32> {
    std::fs::read_to_string(format!("{DIR}/slurmd-{node}.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Runs `sh -c SCRIPT` in node `node`'s mount namespace (e.g. to mount
/// something only that node sees); bounded.
pub fn in_node(node: &str, script: &str) -> Result<String, String> {
    let pid = slurmd_pid(node).ok_or_else(|| format!("slurmd of {node} is not running"))?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--mount=/proc/{pid}/ns/mnt"))
        .args(["sh", "-ec", script]);
    let (out, _) = bounded(&mut cmd, Duration::from_secs(30));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "on {node}: {script}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A node's slurmd log.
pub fn slurmd_log(node: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/log/slurmd-{node}.log")).unwrap_or_default()
}

/// Builds the MPI fixtures (`ring`/`pingpong` for MPICH and Open MPI, the
/// images `mpich-ring` and `ompi-ring` with their stand-in MPIs) once per
/// process; returns the work directory.
pub fn mpi_fixtures() -> PathBuf {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("tests/setup/build-mpi-fixtures.sh"))
            .arg(crate::work_dir());
        let (out, _) = bounded(&mut cmd, Duration::from_secs(600));
        assert!(
            out.status.success(),
            "build-mpi-fixtures.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    crate::work_dir()
}

/// The CPU level n2 is masked below: the highest generic level this
/// machine runs (`x86_64_v3` on an AVX2 machine, `x86_64_v4` on an
/// AVX-512 one), with the features that level adds. An image built for it
/// runs on n1 and is refused on n2, on whatever machine the suite gets.
pub fn n2_masked_level() -> (String, Vec<String>) {
    crate::node_cpu::runnable_generic_level().unwrap_or_else(|| {
        panic!(
            "this node ({}) runs no x86_64_v2..v4 level: the two-node rig cannot make n2 an older CPU than n1",
            crate::node_cpu::family()
        )
    })
}

/// `/proc/cpuinfo` of this machine with every AVX-512 and AMX flag and the
/// features of [`n2_masked_level`] removed, and the model renamed: a node
/// that looks older (`SLURM2_N2_CPUINFO`).
pub fn older_cpuinfo() -> String {
    let (_, added) = n2_masked_level();
    let text = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo is readable");
    text.lines()
        .map(|l| {
            if l.starts_with("model name") {
                "model name\t: HPCC fake old CPU".to_owned()
            } else if l.starts_with("flags") {
                let (k, v) = l.split_once(':').unwrap_or((l, ""));
                let kept: Vec<&str> = v
                    .split_whitespace()
                    .filter(|f| {
                        !f.starts_with("avx512")
                            && !f.starts_with("amx")
                            && !added.iter().any(|a| a == f)
                    })
                    .collect();
                format!("{k}: {}", kept.join(" "))
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The rig's tests of one process run one at a time: two MPI jobs
/// busy-polling on two cores would only measure each other.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stops the rig, keeping its logs in `tests/work/NAME/logs` (the
/// test binaries' `atexit`).
pub fn stop_keeping_logs(name: &str) {
    let logs = crate::work_dir().join(name).join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    stop(Some(&logs));
}
