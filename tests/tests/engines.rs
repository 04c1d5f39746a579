//! `hpcc-runtime` behind docker (`daemon.json` `runtimes`) and containerd
//! (`ctr run --runc-binary`, the runc v2 shim's `BinaryName`), each with a
//! private daemon started by the test (its own sockets and state under
//! /tmp, no network set-up, bounded), as docs/runtime.md configures them.
//! The effects are seen from outside: the refusal in the engine's error,
//! and what the container prints.
//!
//! Needs root, docker.io and containerd (tests/setup/install-deps.sh);
//! fails, never skips.

use hpcc_e2e::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CPU: &str = "org.supercontainers.hardware.cpu.optimized.version";
const MPI_IMPL: &str = "org.supercontainers.mpi.implementation";
const MPI_MODE: &str = "org.supercontainers.mpi.portability.mode";

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(format!("/tmp/hpcc-engines-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_policy(d: &Path, text: &str) -> PathBuf {
    let p = d.join("hook.toml");
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

const MPICH: &str = "[mpi.mpich]\nabi = \"mpich\"\nlibraries = [\"/usr/lib/x86_64-linux-gnu/libmpich.so.12\"]\n[log]\njournald = false\n";

/// A daemon stopped on drop, also when the test fails: SIGTERM (it stops
/// its containers and shims), then SIGKILL after 10 s. Spawned directly,
/// never under `timeout`: killing a wrapper would leave the daemon running
/// (holding, among others, the suite's lock file it inherited).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(sock: &Path, what: &str) {
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{what} did not start within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn output(cmd: &mut Command) -> Run {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let r = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("{cmd:?}: {r:?}");
    r
}

/// docker with `runtimes.hpcc` in daemon.json: a refusal is docker's error
/// to the user; a compatible container runs. (Debian 12's docker 20.10
/// passes no image label or `--annotation` to the runtime, so what can be
/// checked there is the site's `unannotated` rule and the path itself.)
#[test]
fn docker_daemon_json_runtime() {
    require_root();
    require("dockerd");
    require("docker");
    let d = dir("docker");
    let refuse = write_policy(&d, "unannotated = \"refuse\"\n[log]\njournald = false\n");
    let sock = d.join("docker.sock");
    let conf = d.join("daemon.json");
    std::fs::write(
        &conf,
        serde_json::json!({
            "runtimes": {"hpcc": {
                "path": bin("hpcc-runtime"),
                "runtimeArgs": [format!("--hpcc-config={}", refuse.display()), "--hpcc-runtime=/usr/sbin/runc"],
            }},
            "iptables": false, "bridge": "none", "storage-driver": "vfs",
            "exec-root": d.join("exec"), "data-root": d.join("data"),
            "pidfile": d.join("docker.pid"),
            "hosts": [format!("unix://{}", sock.display())],
            "containerd-namespace": "hpcc-test", "containerd-plugins-namespace": "hpcc-test-plugins",
        })
        .to_string(),
    )
    .unwrap();
    let _daemon = Daemon(
        Command::new("dockerd")
            .arg("--config-file")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("dockerd.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for(&sock, "dockerd");
    let docker = |args: &[&str]| {
        let mut c = Command::new("timeout");
        c.args(["120", "docker", "-H", &format!("unix://{}", sock.display())])
            .args(args);
        output(&mut c)
    };
    let import = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -c . | timeout 120 docker -H unix://{} import - hpcc-busybox:test",
            fixture_rootfs("busybox").display(),
            sock.display()
        ))
        .output()
        .unwrap();
    assert!(import.status.success(), "{import:?}");
    let r = docker(&[
        "run",
        "--rm",
        "--runtime",
        "hpcc",
        "--network",
        "none",
        "hpcc-busybox:test",
        "/bin/echo",
        "must-not-run",
    ]);
    assert!(!r.ok(), "{r:?}");
    assert!(!r.stdout.contains("must-not-run"));
    assert!(
        r.stderr.contains("hpcc: refused") && r.stderr.contains("unannotated = \\\"refuse\\\"")
            || r.stderr.contains("unannotated = \"refuse\""),
        "{r:?}"
    );
    // runc itself, same image: unaffected by hpcc's policy.
    let r = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "hpcc-busybox:test",
        "/bin/echo",
        "plain-runc",
    ]);
    assert!(r.ok() && r.stdout.contains("plain-runc"), "{r:?}");
}

/// containerd's runc v2 shim with `BinaryName` = hpcc-runtime (`ctr run
/// --runc-binary`): the annotations reach it, the host MPICH replaces the
/// image's, and a refusal is ctr's error.
#[test]
fn containerd_runc_binary() {
    require_root();
    require("containerd");
    require("ctr");
    let d = dir("containerd");
    let policy = write_policy(&d, MPICH);
    let sock = d.join("containerd.sock");
    let conf = d.join("config.toml");
    std::fs::write(
        &conf,
        format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\naddress = \"{sock}\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = sock.display()
        ),
    )
    .unwrap();
    let _daemon = Daemon(
        Command::new("containerd")
            .arg("--config")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("containerd.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for(&sock, "containerd");
    // The shim calls its BinaryName with runc's arguments only: a script
    // puts hpcc-runtime's options in front, as an admin's would.
    let shim = d.join("hpcc-runtime-shim");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nexec {} --hpcc-config={} --hpcc-runtime=/usr/sbin/runc \"$@\"\n",
            bin("hpcc-runtime").display(),
            policy.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ctr = |id: &str, rootfs: &str, ann: &[String], cmd: &[&str]| {
        let copy = d.join(format!("rootfs-{id}"));
        let st = Command::new("cp")
            .arg("-a")
            .arg(fixture_rootfs(rootfs))
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success());
        let mut c = Command::new("timeout");
        c.args(["120", "ctr", "--address"])
            .arg(&sock)
            .args(["run", "--rm", "--runc-binary"])
            .arg(&shim);
        for a in ann {
            c.arg("--annotation").arg(a);
        }
        c.arg("--rootfs").arg(&copy).arg(id).args(cmd);
        output(&mut c)
    };
    let r = ctr(
        "hpcc-ctr-mpi",
        "mpich-app",
        &[
            format!("{CPU}=x86_64"),
            format!("{MPI_IMPL}=mpich"),
            format!("{MPI_MODE}=mpi_replace"),
        ],
        &["/usr/bin/mpi-version"],
    );
    assert!(r.ok(), "{r:?}");
    assert!(
        r.stdout.contains("MPICH Version:") && r.stdout.contains(&host_mpich_version()),
        "{r:?}"
    );
    let r = ctr(
        "hpcc-ctr-refuse",
        "busybox",
        &[format!("{CPU}=a64fx")],
        &["/bin/echo", "must-not-run"],
    );
    assert!(!r.ok(), "{r:?}");
    assert!(!r.stdout.contains("must-not-run"));
    assert!(
        r.stderr.contains("hpcc: refused") && r.stderr.contains("a64fx"),
        "{r:?}"
    );
}
