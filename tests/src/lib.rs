//! Helpers shared by the end-to-end tests: locate the binaries, build the
//! fixtures once, make OCI bundles, run real runc, crun and podman.
//!
//! These tests need root and the packages of `tests/setup/install-deps.sh`.
//! They fail, never skip, when something is missing: a suite that passes
//! because it ran nothing is worse than a red one.

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

/// Path of a workspace binary (`hpcc-hook`, `hpcc`), built once with the
/// profile of this test run.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "hpcc-hook", "--bins"])
            .current_dir(repo_root())
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building hpcc-hook and hpcc failed");
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let p = target.join("debug").join(name);
    assert!(p.exists(), "{} was not built", p.display());
    p
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
pub fn run_crun(b: &Bundle) -> Run {
    require("crun");
    b.write();
    let script = "umount -R /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 none /sys/fs/cgroup && \
        exec crun --cgroup-manager=disabled --root /run/hpcc-test-crun run --bundle \"$1\" \"$2\"";
    let out = Command::new("timeout")
        .args([
            "-k",
            "10",
            "120",
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&b.dir)
        .arg(&b.id)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = Command::new("crun")
        .args(["--root", "/run/hpcc-test-crun", "delete", "--force", &b.id])
        .output();
    Run::from(out)
}

/// The host's mount table, to prove nothing leaked.
pub fn host_mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}
