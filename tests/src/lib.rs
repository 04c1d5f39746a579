//! Helpers shared by the end-to-end tests: locate the binaries, build the
//! fixtures once, make OCI bundles, run real runc, crun and podman.
//!
//! These tests need root and the packages of `tests/setup/install-deps.sh`.
//! They fail, never skip, when something is missing: a suite that passes
//! because it ran nothing is worse than a red one.

pub mod node_cpu;
pub mod slurm2;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Where fixtures and per-test scratch go (gitignored).
pub fn work_dir() -> PathBuf {
    repo_root().join("tests/work")
}

/// `timeout LIMIT... unshare -m --propagation private sh -c SCRIPT`: a
/// shell in a mount namespace of its own, whose mounts never reach the
/// host's, bounded by `timeout` (`limit` is its arguments: `["120"]`,
/// `["-k", "10", "150"]`). Arguments added to the command become `$0`,
/// `$1`, ... of the script.
pub fn private_mount_ns_sh(limit: &[&str], script: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(limit)
        .args(["unshare", "-m", "--propagation", "private", "sh", "-c"])
        .arg(script);
    c
}

/// The image-side fixtures (OCI layouts and archives made with umoci,
/// `tests/setup/build-image-fixtures.sh`), built once per test process;
/// their directory (`oci/` holds the layout).
pub fn image_fixtures() -> PathBuf {
    static DONE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let work = work_dir().join("image-side");
        let out = Command::new("bash")
            .arg(repo_root().join("tests/setup/build-image-fixtures.sh"))
            .arg(&work)
            .output()
            .expect("build-image-fixtures.sh runs");
        assert!(
            out.status.success(),
            "build-image-fixtures.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        work
    })
    .clone()
}

/// Path of a workspace binary (`hpcc-hook`, `hpcc`, `hpcc-runtime`),
/// built once with the profile of this test run. `hpcc-hook` is the
/// static hook of [`static_hook`]: the only hpcc-hook a build produces.
pub fn bin(name: &str) -> PathBuf {
    if name == "hpcc-hook" {
        return static_hook();
    }
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        // No hpcc-hook here: it needs the feature `static-hook` (and
        // crt-static), which only packaging/build-static-hook.sh sets.
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-q",
                "-p",
                "hpcc-cli",
                "-p",
                "hpcc-runtime",
                "--bins",
            ])
            .current_dir(repo_root())
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building hpcc and hpcc-runtime failed");
    });
    let p = target_dir().join("debug").join(name);
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// The debug profile's output directory (the SPANK plugin, the runtime).
pub fn target_debug() -> PathBuf {
    target_dir().join("debug")
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// The hook as a user gets it: `packaging/build-static-hook.sh` (the
/// README's and the packages' command; `PROFILE=dev` here, faster to
/// build), in a directory of its own with the dynamic `hpcc` beside it (its
/// GPU helper), as a package installs them. Built once per test process.
pub fn static_hook() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target_dir().join("static-dev");
        let out = Command::new("bash")
            .arg(repo_root().join("packaging/build-static-hook.sh"))
            .arg(&dir)
            .env("PROFILE", "dev")
            .output()
            .expect("build-static-hook.sh runs");
        assert!(out.status.success(), "build-static-hook.sh: {out:?}");
        // Through a name of this process's own: test processes run at once.
        let tmp = dir.join(format!("hpcc.tmp.{}", std::process::id()));
        std::fs::copy(bin("hpcc"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("hpcc")).unwrap();
        // A dynamic hpcc-hook left in the target directory by an older
        // build must not be mistaken for the hook (nor installed).
        for profile in ["debug", "release"] {
            let _ = std::fs::remove_file(target_dir().join(profile).join("hpcc-hook"));
        }
        dir
    })
    .join("hpcc-hook")
}

/// Builds the fixtures of `tests/setup/build-fixtures.sh` once per test
/// process (the script itself skips what exists).
pub fn ensure_fixtures() -> PathBuf {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("tests/setup/build-fixtures.sh"))
            .arg(work_dir())
            .output()
            .expect("build-fixtures.sh runs");
        assert!(
            out.status.success(),
            "build-fixtures.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    work_dir()
}

/// A fixture rootfs by name (`busybox`, `mpich-app`, `openmpi-app`, `escape`).
pub fn fixture_rootfs(name: &str) -> PathBuf {
    let p = ensure_fixtures().join("rootfs").join(name);
    assert!(p.is_dir(), "fixture rootfs {} is missing", p.display());
    p
}

/// Fails the test with a clear message when a tool is absent.
pub fn require(tool: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{tool} is not installed: run tests/setup/install-deps.sh (the e2e suite needs it)"
    );
}

/// Fails the test unless running as root.
pub fn require_root() {
    assert!(
        nix_is_root(),
        "the end-to-end tests must run as root (they start runc, crun and Slurm)"
    );
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A policy with the host's Debian MPICH (its `env` marks it) and
/// libfabric, the per-boot caches off, no journald: what the plan tests
/// decide under.
pub const MPICH_FABRIC_POLICY: &str = r#"
[mpi.mpich]
abi = "mpich"
libraries = ["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]
env = { MPICH_E2E = "1" }

[libfabric]
library = "/usr/lib/x86_64-linux-gnu/libfabric.so.1"

[cache]
enabled = false

[log]
journald = false
"#;

/// A unique scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = work_dir()
        .join("scratch")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An OCI bundle made for one test: a private copy of a fixture rootfs (the
/// hook may create mount targets and rebuild the linker cache in it) and a
/// `config.json` from `runc spec`.
pub struct Bundle {
    /// Bundle directory.
    pub dir: PathBuf,
    /// Container id used for runs.
    pub id: String,
    config: Value,
}

impl Bundle {
    /// Copies `rootfs` into a new bundle named `name`.
    pub fn new(name: &str, rootfs: &Path) -> Bundle {
        require("runc");
        let dir = scratch(name);
        let status = Command::new("cp")
            .arg("-a")
            .arg(rootfs)
            .arg(dir.join("rootfs"))
            .status()
            .unwrap();
        assert!(status.success(), "copying {} failed", rootfs.display());
        let out = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "runc spec failed: {out:?}");
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        config["process"]["terminal"] = json!(false);
        // crun cannot raise RLIMIT_NOFILE here (ENVIRONMENT.md).
        config["process"].as_object_mut().unwrap().remove("rlimits");
        config["root"]["readonly"] = json!(false);
        let id = format!("hpcc-{name}-{}", std::process::id());
        let mut b = Bundle { dir, id, config };
        b.args(&["/bin/sh", "-c", "echo started"]);
        b
    }

    /// The rootfs of this bundle on the host.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Sets the container command.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    /// Adds `NAME=value` entries to the process environment (as an image's
    /// `ENV` arrives there with podman).
    pub fn env(&mut self, vars: &[&str]) -> &mut Self {
        let env = self.config["process"]["env"]
            .as_array_mut()
            .expect("runc spec writes process.env");
        env.extend(vars.iter().map(|v| json!(v)));
        self
    }

    /// Adds an annotation.
    pub fn annotate(&mut self, key: &str, value: &str) -> &mut Self {
        if !self.config["annotations"].is_object() {
            self.config["annotations"] = json!({});
        }
        self.config["annotations"][key] = json!(value);
        self
    }

    /// Adds `hpcc-hook` as a prestart hook with this policy text (written
    /// next to the bundle and named by the hook's `--config` argument).
    pub fn with_hook(&mut self, policy: &str) -> &mut Self {
        let policy_path = self.dir.join("hook.toml");
        std::fs::write(&policy_path, policy).unwrap();
        self.config["hooks"] = json!({
            "prestart": [{
                "path": bin("hpcc-hook"),
                "args": ["hpcc-hook", "prestart", format!("--config={}", policy_path.display())],
                "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            }]
        });
        self
    }

    /// Adds `hpcc-hook` as a prestart hook with this policy text, like
    /// [`Bundle::with_hook`], and keeps what the hook wrote on stderr at
    /// level info (policy `[log] stderr = "info"`, docs/policy.md) in [`Bundle::hook_log`]:
    /// a small `sh` between the runtime and the hook copies the hook's
    /// stderr to a file next to the bundle and passes it on unchanged, with
    /// the hook's exit code. runc shows a hook's stderr only when the hook
    /// fails; this shows what the hook decided when it lets a container
    /// start, which is the only way to tell "the hook allowed it" from "the
    /// hook never ran".
    pub fn with_logged_hook(&mut self, policy: &str) -> &mut Self {
        // Decisions are info records: the policy puts them on stderr.
        let policy = if policy.contains("[log]") {
            policy.replace("[log]", "[log]\nstderr = \"info\"")
        } else {
            format!("{policy}\n[log]\nstderr = \"info\"\n")
        };
        self.with_hook(&policy);
        let log = self.hook_log_path();
        let _ = std::fs::remove_file(&log);
        let hook = &mut self.config["hooks"]["prestart"][0];
        *hook = logged_hook_entry(hook, &log);
        self
    }

    fn hook_log_path(&self) -> PathBuf {
        self.dir.join("hook-stderr.log")
    }

    /// What the hook of [`Bundle::with_logged_hook`] wrote on stderr in the
    /// last run (empty when it never ran).
    pub fn hook_log(&self) -> String {
        std::fs::read_to_string(self.hook_log_path()).unwrap_or_default()
    }

    /// Raw access to the config for special cases.
    pub fn config_mut(&mut self) -> &mut Value {
        &mut self.config
    }

    /// Writes `config.json`.
    pub fn write(&self) -> &Self {
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
        self
    }
}

/// An OCI hook entry (`path`, `args`) wrapped so that the hook's stderr is
/// also kept in `log` (the policy must say `[log] stderr = "info"` for the
/// start decision to be written there). The
/// wrapper is a plain `sh -c` that runs the hook with its own arguments and
/// stdin, copies its stderr to `log`, passes that stderr on unchanged and
/// exits with the hook's code: what the runtime sees is the hook's.
pub fn logged_hook_entry(entry: &Value, log: &Path) -> Value {
    let mut args = vec![
        json!("sh"),
        json!("-c"),
        json!(r#""$0" "$@" 2>"$HPCC_E2E_HOOK_LOG"; rc=$?; cat "$HPCC_E2E_HOOK_LOG" >&2; exit $rc"#),
        entry["path"].clone(),
    ];
    if let Some(a) = entry["args"].as_array() {
        args.extend(a.iter().skip(1).cloned());
    }
    json!({
        "path": "/bin/sh",
        "args": args,
        "env": [
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            format!("HPCC_E2E_HOOK_LOG={}", log.display()),
        ],
    })
}

/// The result of one container run.
#[derive(Debug)]
pub struct Run {
    /// Exit code of the runtime (None when killed).
    pub code: Option<i32>,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

/// The mount table of a runtime's own mount namespace around one run.
#[derive(Debug, Clone)]
pub struct NsMounts {
    /// `/proc/self/mountinfo` before the runtime started.
    pub before: String,
    /// `/proc/self/mountinfo` after it exited.
    pub after: String,
}

impl NsMounts {
    /// Lines (mount id and all) present after the run and not before.
    pub fn added(&self) -> Vec<String> {
        self.after
            .lines()
            .filter(|l| !self.before.lines().any(|b| b == *l))
            .map(str::to_owned)
            .collect()
    }
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Exit code 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs the bundle with real runc (bounded to 120 s).
pub fn run_runc(b: &Bundle) -> Run {
    b.write();
    run_runc_dir(&b.dir, &b.id)
}

/// Runs the bundle in `dir` (its `config.json` as is) with real runc as
/// container `id`, and deletes the container afterwards.
pub fn run_runc_dir(dir: &Path, id: &str) -> Run {
    require("runc");
    let out = Command::new("timeout")
        // -k: runc forwards SIGTERM to the container's init, which may
        // ignore it (pid 1 without a handler) and keep runc waiting.
        .args([
            "-k",
            "10",
            "120",
            "runc",
            "--root",
            "/run/hpcc-test-runc",
            "run",
            "--bundle",
        ])
        .arg(dir)
        .arg(id)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = Command::new("runc")
        .args(["--root", "/run/hpcc-test-runc", "delete", "--force", id])
        .output();
    Run::from(out)
}

/// Runs the bundle with real crun, in the private cgroup2 mount that crun
/// needs on this machine's hybrid layout (ENVIRONMENT.md).
///
/// crun runs in a mount namespace of its own (`unshare -m`), which is also
/// where it runs prestart hooks: a mount a hook leaked "on the host" would
/// land there and vanish with it, invisible in the host's table. So the
/// shell that runs crun also saves that namespace's mount table before and
/// after crun: [`crun_namespace_mounts`].
pub fn run_crun(b: &Bundle) -> Run {
    require("crun");
    b.write();
    let (before, after) = (b.dir.join("crun-ns-before"), b.dir.join("crun-ns-after"));
    for f in [&before, &after] {
        let _ = std::fs::remove_file(f);
    }
    let script = "umount -R /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 none /sys/fs/cgroup || exit 125; \
        cat /proc/self/mountinfo > \"$3\" || exit 125; \
        timeout 120 crun --cgroup-manager=disabled --root /run/hpcc-test-crun run --bundle \"$1\" \"$2\"; rc=$?; \
        cat /proc/self/mountinfo > \"$4\" || exit 125; exit $rc";
    let out = private_mount_ns_sh(&["-k", "10", "150"], script)
        .arg("sh")
        .arg(&b.dir)
        .arg(&b.id)
        .arg(&before)
        .arg(&after)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = Command::new("crun")
        .args(["--root", "/run/hpcc-test-crun", "delete", "--force", &b.id])
        .output();
    Run::from(out)
}

/// The mount table of the private namespace the last [`run_crun`] of this
/// bundle ran crun (and crun its prestart hooks) in, just before crun
/// started and just after it exited. A mount a hook made in the runtime's
/// namespace instead of the container's shows here, and only here: that
/// namespace dies with the shell, so the host's table never has it.
pub fn crun_namespace_mounts(b: &Bundle) -> NsMounts {
    let read = |name: &str| {
        let p = b.dir.join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| {
            panic!(
                "crun's namespace mount table {} was not saved: {e}",
                p.display()
            )
        })
    };
    NsMounts {
        before: read("crun-ns-before"),
        after: read("crun-ns-after"),
    }
}

/// The host's mount table, to prove nothing leaked.
pub fn host_mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

/// The unprivileged user of the tests (rootless runc, Slurm jobs).
pub const USER: &str = "hpcctest";

/// The unprivileged test user, created when missing; its uid.
pub fn ensure_user() -> u32 {
    // One test at a time: the tests of one binary run in parallel, and on a
    // fresh machine two of them could both find the user missing and both
    // run useradd. (A first run on a fresh machine once failed right after
    // the user was created, `runc spec --rootless` as the user getting
    // "permission denied" in its own bundle; not reproduced since.)
    static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = CREATE.lock().unwrap_or_else(|e| e.into_inner());
    let ok = Command::new("id")
        .arg(USER)
        .output()
        .unwrap()
        .status
        .success();
    if !ok {
        let st = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", USER])
            .status()
            .unwrap();
        assert!(st.success(), "useradd {USER}");
    }
    let out = Command::new("id").args(["-u", USER]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A bundle the test user owns, from `runc spec --rootless` run as that
/// user (its uid and gid mappings), with a private copy of a fixture.
pub fn user_bundle(
    name: &str,
    fixture: &str,
    annotations: &[(&str, &str)],
    args: &[&str],
) -> PathBuf {
    let uid = ensure_user();
    let dir = PathBuf::from(format!("/tmp/hpcc-user-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(fixture_rootfs(fixture))
        .arg(dir.join("rootfs"))
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("su")
        .args([USER, "-s", "/bin/sh", "-c"])
        .arg(format!("cd {} && runc spec --rootless", dir.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "runc spec --rootless: {out:?}");
    let cfg = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["process"]["terminal"] = serde_json::Value::Bool(false);
    v["process"]["args"] = serde_json::json!(args);
    v["root"]["readonly"] = serde_json::Value::Bool(false);
    for (k, val) in annotations {
        v["annotations"][*k] = serde_json::Value::String((*val).to_owned());
    }
    std::fs::write(&cfg, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    std::os::unix::fs::chown(&cfg, Some(uid), Some(uid)).unwrap();
    dir
}

/// Runs a shell command as the test user, bounded.
pub fn as_user(script: &str) -> Run {
    let out = Command::new("timeout")
        .args(["120", "su", USER, "-s", "/bin/sh", "-c", script])
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The host MPICH's version as its own tool reports it (`mpichversion`:
/// `4.0.2` on Debian 12), so that no test pins Debian's exact package.
pub fn host_mpich_version() -> String {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        tool_version("mpichversion", &[], "MPICH Version:").unwrap_or_else(|| {
            panic!("mpichversion printed no MPICH Version (is mpich installed?)")
        })
    })
    .clone()
}

/// The host Open MPI's version (`ompi_info -V`: `Open MPI v4.1.4`), without
/// the `v`.
pub fn host_ompi_version() -> String {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        tool_version("ompi_info", &["-V"], "Open MPI")
            .map(|v| v.trim_start_matches('v').to_owned())
            .unwrap_or_else(|| {
                panic!("ompi_info -V printed no Open MPI version (is openmpi-bin installed?)")
            })
    })
    .clone()
}

fn tool_version(tool: &str, args: &[&str], prefix: &str) -> Option<String> {
    let out = Command::new(tool).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

/// A file of `/proc` that something is mounted over in this mount
/// namespace (`tests/setup/masked-cpu.sh`'s `/proc/cpuinfo`), if any.
/// The kernel then refuses a user namespace a new procfs (it would reveal
/// what the mount hides), so a rootless container cannot start here.
pub fn proc_file_overmounted() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with("/proc/"))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| !m.is_dir()))
        .map(str::to_owned)
}

/// Fails a test that starts a rootless container, with the one line that
/// says why, where a masked `/proc` file makes that impossible.
pub fn require_unmasked_proc(what: &str) {
    if let Some(p) = proc_file_overmounted() {
        panic!(
            "{what} cannot run here: {p} is mounted over (a masked CPU), and the kernel gives a rootless container no procfs then"
        );
    }
}
