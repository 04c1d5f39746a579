//! `hpcc-runtime` end to end (issue 14): the launch as spec edits, in front
//! of real runc and crun, as podman's runtime (`--runtime` and
//! `containers.conf`), and for a normal user with rootless runc. Each test
//! observes the effect from outside: what the container prints (the host
//! MPICH instead of the image's stand-in), the refusal line on the
//! engine's stderr and the exit code, and the edited `config.json` the
//! real runtime was given (a one-line spy in front of it copies the config
//! of the bundle it is handed): a private bundle of hpcc's own, while the
//! user's `config.json` stays byte-identical (issue 19).
//!
//! Needs root (to make the test user and run podman), runc, crun, podman
//! and the fixtures; fails, never skips.

use hpcc_e2e::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CPU: &str = "org.supercontainers.hardware.cpu.optimized.version";
const MPI_IMPL: &str = "org.supercontainers.mpi.implementation";
const MPI_MODE: &str = "org.supercontainers.mpi.portability.mode";

const POLICY: &str = r#"[mpi.mpich]
abi = "mpich"
libraries = ["/usr/lib/x86_64-linux-gnu/libmpich.so.12"]
[log]
journald = false
"#;

/// The suite's policy, root-owned and readable by everyone (the test user
/// runs the runtime too).
fn policy() -> PathBuf {
    let dir = PathBuf::from("/tmp/hpcc-runtime-tests");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = dir.join("hook.toml");
    std::fs::write(&p, POLICY).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

/// Where the spies leave what they saw: `<id>.json` (the config of the
/// bundle the real runtime got) and `<id>.bundle` (that bundle's path).
const SPIED: &str = "/tmp/hpcc-runtime-tests/spied";

/// A spy in front of `runtime` (its name keeps the runtime's, so that
/// hpcc-runtime still knows runc from crun): on `create` and `run` it
/// copies the config of the bundle it is given, then becomes the runtime.
fn spy(runtime: &str) -> String {
    let dir = PathBuf::from("/tmp/hpcc-runtime-tests/spy");
    for d in [&dir, &PathBuf::from(SPIED)] {
        std::fs::create_dir_all(d).unwrap();
    }
    // The rootless test's user writes there too.
    std::fs::set_permissions(SPIED, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let name = Path::new(runtime).file_name().unwrap().to_string_lossy();
    let p = dir.join(format!("{name}-spy"));
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh
b=; prev=; id=; cmd=
for a; do
  [ \"$prev\" = --bundle ] && b=$a
               case $a in create|run) [ -z \"$cmd\" ] && cmd=$a ;; esac
  prev=$a; id=$a
done
             if [ -n \"$cmd\" ]; then
  [ -n \"$b\" ] || b=$PWD
               cp \"$b/config.json\" \"{SPIED}/$id.json\"; echo \"$b\" >\"{SPIED}/$id.bundle\"
fi
             exec {runtime} \"$@\"
"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

/// `hpcc-runtime` with the suite's policy in front of `runtime` (through
/// its spy).
fn shim(runtime: &str) -> Vec<String> {
    shim_with(runtime, &policy())
}

fn shim_with(runtime: &str, policy: &Path) -> Vec<String> {
    vec![
        bin("hpcc-runtime").display().to_string(),
        format!("--hpcc-config={}", policy.display()),
        format!("--hpcc-runtime={}", spy(runtime)),
    ]
}

/// The config the real runtime got for container `id`, and the bundle it
/// was in.
fn spied(id: &str) -> Option<(Value, PathBuf)> {
    let c = std::fs::read(Path::new(SPIED).join(format!("{id}.json"))).ok()?;
    let b = std::fs::read_to_string(Path::new(SPIED).join(format!("{id}.bundle"))).ok()?;
    Some((
        serde_json::from_slice(&c).unwrap(),
        PathBuf::from(b.trim_end()),
    ))
}

fn forget(id: &str) {
    for ext in ["json", "bundle"] {
        let _ = std::fs::remove_file(Path::new(SPIED).join(format!("{id}.{ext}")));
    }
}

fn mpich_bundle(name: &str) -> Bundle {
    require_root();
    let mut b = Bundle::new(name, &fixture_rootfs("mpich-app"));
    b.annotate(CPU, "x86_64")
        .annotate(MPI_IMPL, "mpich")
        .annotate(MPI_MODE, "mpi_replace")
        .args(&["/usr/bin/mpi-version"]);
    b
}

/// The config the real runtime was given for `b` (the private bundle's
/// when hpcc had something to add).
fn config(b: &Bundle) -> Value {
    spied(&b.id)
        .unwrap_or_else(|| panic!("the runtime was never given a bundle for {}", b.id))
        .0
}

/// `runc run` through the shim, bounded; then `delete` through the shim,
/// which removes the private bundle. The user's `config.json` must be
/// byte-identical afterwards.
fn run_shim(b: &Bundle, runtime: &str) -> Run {
    b.write();
    forget(&b.id);
    let user_config = std::fs::read(b.dir.join("config.json")).unwrap();
    let mut cmd = Command::new("timeout");
    cmd.arg("120").args(shim(runtime));
    cmd.args(["--root", "/run/hpcc-test-runtime", "run", "--bundle"])
        .arg(&b.dir)
        .arg(&b.id)
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    let given = spied(&b.id).map(|(_, bundle)| bundle);
    let del = Command::new("timeout")
        .arg("60")
        .args(shim(runtime))
        .args([
            "--root",
            "/run/hpcc-test-runtime",
            "delete",
            "--force",
            &b.id,
        ])
        .output()
        .unwrap();
    assert_eq!(
        std::fs::read(b.dir.join("config.json")).unwrap(),
        user_config,
        "the user's config.json was written"
    );
    if let Some(given) = given.filter(|g| g != &b.dir) {
        assert!(
            given.starts_with("/run/hpcc/bundles/"),
            "{}",
            given.display()
        );
        if del.status.success() {
            assert!(
                !given.exists(),
                "delete left the private bundle {}",
                given.display()
            );
        }
    }
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn assert_host_mpich(r: &Run) {
    assert!(r.ok(), "{r:?}");
    assert!(
        r.stdout.contains("MPICH Version:") && r.stdout.contains(&host_mpich_version()),
        "the host MPICH was not delivered: {r:?}"
    );
    assert!(!r.stdout.contains("stand-in"), "{r:?}");
}

fn mounts_of(c: &Value) -> Vec<(String, String)> {
    c["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["source"].as_str().unwrap_or_default().to_owned(),
                m["destination"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn runc_through_the_runtime_gets_the_host_mpich_as_spec_edits() {
    let b = mpich_bundle("rt-runc-mpi");
    let before = host_mountinfo();
    let r = run_shim(&b, "/usr/sbin/runc");
    assert_host_mpich(&r);
    let c = config(&b);
    let mounts = mounts_of(&c);
    assert!(
        mounts
            .iter()
            .any(|(s, d)| s == "/usr/lib/x86_64-linux-gnu/libmpich.so.12"
                && d.starts_with("/usr/lib/x86_64-linux-gnu/libmpich.so.12")),
        "{mounts:?}"
    );
    assert!(
        mounts
            .iter()
            .any(|(s, d)| d == "/etc/ld.so.cache" && s.starts_with("/run/hpcc/ldcache/")),
        "{mounts:?}"
    );
    assert_eq!(c["annotations"]["run.hpcc.decided-by"], "hpcc-runtime");
    assert!(c["hooks"].is_null(), "no hook: {}", c["hooks"]);
    // The image was not written to: no target created there (hpcc's own
    // directories are in the container's /dev tmpfs), its cache unchanged.
    assert!(!b.rootfs().join("dev/hpcc").exists());
    assert!(!b.rootfs().join("opt/hpcc").exists());
    let leaked: Vec<_> = host_mountinfo()
        .lines()
        .filter(|l| !before.contains(*l) && l.contains(b.dir.to_str().unwrap()))
        .map(str::to_owned)
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}

#[test]
fn the_edit_is_idempotent() {
    let b = mpich_bundle("rt-idempotent");
    assert_host_mpich(&run_shim(&b, "/usr/sbin/runc"));
    let once = config(&b);
    let user_config = std::fs::read(b.dir.join("config.json")).unwrap();
    // A second start of the same bundle: the same plan, from the same
    // untouched config.
    let mut cmd = Command::new("timeout");
    cmd.arg("120").args(shim("/usr/sbin/runc"));
    let out = cmd
        .args(["--root", "/run/hpcc-test-runtime", "run", "--bundle"])
        .arg(&b.dir)
        .arg(format!("{}-2", b.id))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = Command::new("timeout")
        .arg("60")
        .args(shim("/usr/sbin/runc"))
        .args(["--root", "/run/hpcc-test-runtime", "delete", "--force"])
        .arg(format!("{}-2", b.id))
        .output();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(spied(&format!("{}-2", b.id)).unwrap().0, once);
    assert_eq!(
        std::fs::read(b.dir.join("config.json")).unwrap(),
        user_config
    );
}

/// Two nodes starting one bundle from a shared file system, stood for by
/// two policies on this machine: one offers the host MPICH, the other no
/// host MPI. Started at the same instant, each gets its own plan (the
/// container prints the host MPICH, or the image's stand-in), and the
/// bundle's config.json is byte-identical afterwards.
#[test]
fn two_launches_of_one_bundle_each_get_their_own_plan() {
    let b = mpich_bundle("rt-shared");
    b.write();
    let user_config = std::fs::read(b.dir.join("config.json")).unwrap();
    let bare = PathBuf::from("/tmp/hpcc-runtime-tests/no-mpi.toml");
    std::fs::write(&bare, "[log]\njournald = false\n").unwrap();
    std::fs::set_permissions(&bare, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut runs = Vec::new();
    for (n, policy) in [(0, policy()), (1, bare)] {
        let id = format!("{}-node{n}", b.id);
        forget(&id);
        let child = Command::new("timeout")
            .arg("120")
            .args(shim_with("/usr/sbin/runc", &policy))
            .args(["--root", "/run/hpcc-test-runtime", "run", "--bundle"])
            .arg(&b.dir)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        runs.push((id, child));
    }
    let outs: Vec<(String, std::process::Output)> = runs
        .into_iter()
        .map(|(id, c)| (id, c.wait_with_output().unwrap()))
        .collect();
    for (id, _) in &outs {
        let _ = Command::new("timeout")
            .arg("60")
            .args(shim("/usr/sbin/runc"))
            .args(["--root", "/run/hpcc-test-runtime", "delete", "--force", id])
            .output();
    }
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let (with_mpi, without) = (&outs[0].1, &outs[1].1);
    assert!(with_mpi.status.success(), "{with_mpi:?}");
    assert!(without.status.success(), "{without:?}");
    assert!(
        text(with_mpi).contains(&host_mpich_version()) && !text(with_mpi).contains("stand-in"),
        "node 0 offers the host MPICH: {with_mpi:?}"
    );
    assert!(
        text(without).contains("stand-in"),
        "node 1 offers no host MPI, the image's own runs: {without:?}"
    );
    let (plan0, bundle0) = spied(&outs[0].0).unwrap();
    let (plan1, bundle1) = spied(&outs[1].0).unwrap();
    assert!(mounts_of(&plan0)
        .iter()
        .any(|(s, _)| s.contains("libmpich")));
    assert!(!mounts_of(&plan1)
        .iter()
        .any(|(s, _)| s.contains("libmpich")));
    assert_ne!(bundle0, b.dir, "the plan went into the user's bundle");
    assert_eq!(bundle1, b.dir, "nothing to add: the user's bundle as it is");
    assert_eq!(
        std::fs::read(b.dir.join("config.json")).unwrap(),
        user_config,
        "the user's config.json was written"
    );
}

#[test]
fn runc_refusal_is_the_runtimes_one_line_and_exit_3() {
    let mut b = Bundle::new("rt-refuse", &fixture_rootfs("busybox"));
    b.annotate(CPU, "a64fx")
        .args(&["/bin/echo", "must-not-run"]);
    let r = run_shim(&b, "/usr/sbin/runc");
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(!r.stdout.contains("must-not-run"));
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("hpcc: refused"))
        .collect();
    assert_eq!(lines.len(), 1, "{r:?}");
    assert!(
        lines[0].contains("a64fx") && lines[0].contains("checks.cpu"),
        "{r:?}"
    );
    // Refused before the runtime ran: it was given no bundle at all.
    assert!(spied(&b.id).is_none(), "the runtime ran");
}

/// Issue 24: `unannotated = "refuse"` through the runtime, for images with
/// nothing checkable: an unknown key, a Cyrillic look-alike, a known key
/// whose value cannot be read (under checks at "warn", so only the
/// `unannotated` rule can refuse). Refused before runc runs, with the keys
/// seen, escaped.
#[test]
fn runc_through_the_runtime_refuses_images_with_nothing_checkable() {
    let dir = PathBuf::from("/tmp/hpcc-runtime-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("refuse-unannotated.toml");
    std::fs::write(
        &p,
        "unannotated = \"refuse\"\n[checks]\ncpu = \"warn\"\nmpi = \"warn\"\n[cache]\nenabled = false\n[log]\njournald = false\n",
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (i, (key, value, shown)) in [
        ("org.supercontainers.zzz", "x86_64", "did you mean"),
        (
            "\u{43e}rg.supercontainers.hardware.cpu.optimized.version",
            "x86_64",
            "\\u{43e}rg.supercontainers",
        ),
        (
            "org.supercontainers.mpi.implementation",
            "zzz",
            "mpi.implementation",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = Bundle::new(&format!("rt-unannotated-{i}"), &fixture_rootfs("busybox"));
        b.annotate(key, value).args(&["/bin/echo", "must-not-run"]);
        b.write();
        let out = Command::new("timeout")
            .arg("120")
            .arg(bin("hpcc-runtime"))
            .arg(format!("--hpcc-config={}", p.display()))
            .arg("--hpcc-runtime=/usr/sbin/runc")
            .args(["--root", "/run/hpcc-test-runtime", "run", "--bundle"])
            .arg(&b.dir)
            .arg(&b.id)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{key:?}: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("must-not-run"));
        let line = stderr
            .lines()
            .find(|l| l.contains("hpcc: refused"))
            .unwrap_or_else(|| panic!("{key:?}: no refusal line: {stderr}"));
        assert!(
            line.contains("unannotated")
                && line.contains("none could be checked")
                && line.contains(shown),
            "{key:?}: {line}"
        );
        assert!(!line.contains('\u{43e}'), "{line}");
    }
}

/// crun does not show a failing hook's stderr; through the runtime the
/// user reads the reason directly.
#[test]
fn crun_through_the_runtime_shows_the_reason_and_delivers_mpi() {
    require("crun");
    let run_crun_shim = |b: &Bundle| {
        b.write();
        let script = format!(
            "umount -R /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 none /sys/fs/cgroup && \
             exec {} --cgroup-manager=disabled --root /run/hpcc-test-crun-rt run --bundle \"$1\" \"$2\"",
            shim("/usr/bin/crun").join(" ")
        );
        let out = hpcc_e2e::private_mount_ns_sh(&["120"], &script)
            .arg("sh")
            .arg(&b.dir)
            .arg(&b.id)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let _ = Command::new("timeout")
            .arg("60")
            .args(shim("/usr/bin/crun"))
            .args([
                "--root",
                "/run/hpcc-test-crun-rt",
                "delete",
                "--force",
                &b.id,
            ])
            .output();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let mut bad = Bundle::new("rt-crun-refuse", &fixture_rootfs("busybox"));
    bad.annotate(CPU, "a64fx")
        .args(&["/bin/echo", "must-not-run"]);
    let r = run_crun_shim(&bad);
    assert_eq!(r.code, Some(3), "{r:?}");
    assert!(
        r.stderr.contains("hpcc: refused") && r.stderr.contains("a64fx"),
        "{r:?}"
    );
    let mut good = mpich_bundle("rt-crun-mpi");
    good.config_mut()["process"]
        .as_object_mut()
        .unwrap()
        .remove("rlimits");
    assert_host_mpich(&run_crun_shim(&good));
}

/// A wrapper script podman can name as its runtime: podman passes no
/// arguments of ours, so the admin's `containers.conf` entry (or
/// `--runtime`) points at such a script, or at hpcc-runtime itself with
/// the policy at its default path.
fn podman_shim() -> PathBuf {
    let p = PathBuf::from("/tmp/hpcc-runtime-tests/podman-hpcc-runtime");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nexec {} \"$@\"\n",
            shim("/usr/sbin/runc").join(" ")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn podman(
    extra_env: &[(&str, &str)],
    runtime: &str,
    annotations: &[&str],
    cmd: &[&str],
    rootfs: &str,
) -> Run {
    require("podman");
    let mut c = Command::new("timeout");
    c.arg("180")
        .arg("bash")
        .arg(repo_root().join("tests/setup/podman-run.sh"))
        .arg(fixture_rootfs(rootfs))
        .args(annotations)
        .arg("--")
        .args(cmd)
        .env("PODMAN_RUNTIME", runtime)
        .stdin(Stdio::null());
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn podman_with_the_runtime_refuses_and_delivers_mpi() {
    require_root();
    let shim = podman_shim();
    let shim = shim.to_str().unwrap();
    let r = podman(
        &[],
        shim,
        &[&format!("{CPU}=a64fx")],
        &["/bin/echo", "must-not-run"],
        "busybox",
    );
    assert!(!r.ok(), "{r:?}");
    assert!(!r.stdout.contains("must-not-run"));
    assert!(
        r.stderr.contains("hpcc: refused") && r.stderr.contains("a64fx"),
        "{r:?}"
    );
    let r = podman(
        &[],
        shim,
        &[
            &format!("{CPU}=x86_64"),
            &format!("{MPI_IMPL}=mpich"),
            &format!("{MPI_MODE}=mpi_replace"),
        ],
        &["/usr/bin/mpi-version"],
        "mpich-app",
    );
    assert_host_mpich(&r);
}

/// containers.conf `[engine.runtimes]`: the admin names hpcc's runtime,
/// users pick it with `--runtime hpcc`.
#[test]
fn podman_containers_conf_names_the_runtime() {
    require_root();
    let shim = podman_shim();
    let conf = PathBuf::from("/tmp/hpcc-runtime-tests/containers.conf");
    std::fs::write(
        &conf,
        format!("[engine.runtimes]\nhpcc = [\"{}\"]\n", shim.display()),
    )
    .unwrap();
    let r = podman(
        &[("CONTAINERS_CONF", conf.to_str().unwrap())],
        "hpcc",
        &[
            &format!("{CPU}=x86_64"),
            &format!("{MPI_IMPL}=mpich"),
            &format!("{MPI_MODE}=mpi_replace"),
        ],
        &["/usr/bin/mpi-version"],
        "mpich-app",
    );
    assert_host_mpich(&r);
}

/// A normal user, rootless runc, `mpi_replace`: the host MPI arrives
/// through the spec edits the rootless runtime makes itself; nothing
/// needs root.
#[test]
fn a_normal_user_with_rootless_runc_gets_the_host_mpich() {
    require_unmasked_proc("a_normal_user_with_rootless_runc_gets_the_host_mpich");
    require_root();
    let b = user_bundle(
        "rootless-mpi",
        "mpich-app",
        &[
            (CPU, "x86_64"),
            (MPI_IMPL, "mpich"),
            (MPI_MODE, "mpi_replace"),
        ],
        &["/usr/bin/mpi-version"],
    );
    let id = format!("hpcc-rootless-{}", std::process::id());
    let state = format!("/tmp/hpcc-user-runc-state-{}", std::process::id());
    let r = as_user(&format!(
        "{} --rootless=true --root {state} run --bundle {} {id}",
        shim("/usr/sbin/runc").join(" "),
        b.display()
    ));
    let _ = as_user(&format!(
        "{} --root {state} delete --force {id}",
        shim("/usr/sbin/runc").join(" ")
    ));
    assert_host_mpich(&r);
    // The user's own linker cache store and private bundle, not root's.
    let (c, given) = spied(&id).expect("the runtime was given a bundle");
    assert!(!given.starts_with("/run/hpcc/"), "{}", given.display());
    assert!(!given.exists(), "delete left {}", given.display());
    let cache = mounts_of(&c)
        .into_iter()
        .find(|(_, d)| d == "/etc/ld.so.cache")
        .map(|(s, _)| s)
        .unwrap();
    assert!(!cache.starts_with("/run/hpcc/"), "{cache}");
    let _ = std::fs::remove_dir_all(&b);
}

/// A normal user, rootless runc, a device the policy grants (CDI): the
/// device is in `linux.devices`, which rootless runc binds from the host,
/// and hpcc adds no device cgroup rule, which a rootless runtime cannot
/// load; the container opens it.
#[test]
fn a_normal_user_with_rootless_runc_gets_a_device_bound_without_a_cgroup_rule() {
    require_unmasked_proc(
        "a_normal_user_with_rootless_runc_gets_a_device_bound_without_a_cgroup_rule",
    );
    require_root();
    // Rootless runc binds a device from the host at its container path:
    // the node (/dev/null's numbers, usable by anyone) is made there.
    let node = format!("/dev/hpcc-rl{}", std::process::id());
    let _ = std::fs::remove_file(&node);
    let st = Command::new("mknod")
        .args(["-m", "666", &node, "c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success(), "mknod {node}");
    let dir = PathBuf::from(format!(
        "/tmp/hpcc-runtime-tests/rl-dev-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(dir.join("cdi")).unwrap();
    for d in [&dir, &dir.join("cdi")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        dir.join("cdi/hpcc-test.json"),
        serde_json::json!({
            "cdiVersion": "0.6.0",
            "kind": "hpcc.test/dev",
            "devices": [{"name": "rl0", "containerEdits": {"deviceNodes": [
                {"path": node, "type": "c", "major": 1, "minor": 3, "permissions": "rw"}
            ]}}]
        })
        .to_string(),
    )
    .unwrap();
    let policy = dir.join("hook.toml");
    std::fs::write(
        &policy,
        format!(
            "[gpu]\ncdi_spec_dirs = [\"{}\"]\nallowed = [\"hpcc.test/dev=rl0\"]\n[log]\njournald = false\n",
            dir.join("cdi").display()
        ),
    )
    .unwrap();
    for f in [&policy, &dir.join("cdi/hpcc-test.json")] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let script = format!("test -c {node} && echo x > {node} && echo device-ok");
    let b = user_bundle(
        "rootless-dev",
        "busybox",
        &[
            (CPU, "x86_64"),
            ("cdi.k8s.io/hpcc-test", "hpcc.test/dev=rl0"),
        ],
        &["/bin/sh", "-c", &script],
    );
    let id = format!("hpcc-rootless-dev-{}", std::process::id());
    let state = format!("/tmp/hpcc-user-runc-state-{}", std::process::id());
    let r = as_user(&format!(
        "{} --rootless=true --root {state} run --bundle {} {id}",
        shim_with("/usr/sbin/runc", &policy).join(" "),
        b.display()
    ));
    let _ = as_user(&format!(
        "{} --root {state} delete --force {id}",
        shim_with("/usr/sbin/runc", &policy).join(" ")
    ));
    let _ = std::fs::remove_file(&node);
    assert!(r.stdout.contains("device-ok"), "{r:?}");
    let (c, _) = spied(&id).expect("the runtime was given a bundle");
    assert!(
        c["linux"]["devices"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["path"] == node.as_str())),
        "{c}"
    );
    let rules = c["linux"]["resources"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !rules.iter().any(|r| r["major"] == 1 && r["minor"] == 3),
        "a rule was added: {rules:?}"
    );
    let _ = std::fs::remove_dir_all(&b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The hook under rootless runc says plainly what it cannot do.
#[test]
fn the_hook_under_rootless_runc_says_it_needs_the_runtime() {
    require_unmasked_proc("the_hook_under_rootless_runc_says_it_needs_the_runtime");
    require_root();
    let b = user_bundle(
        "rootless-hook",
        "mpich-app",
        &[
            (CPU, "x86_64"),
            (MPI_IMPL, "mpich"),
            (MPI_MODE, "mpi_replace"),
        ],
        &["/usr/bin/mpi-version"],
    );
    let cfg = b.join("config.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["hooks"] = serde_json::json!({"prestart": [{
        "path": bin("hpcc-hook"),
        "args": ["hpcc-hook", "prestart", format!("--config={}", policy().display())],
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
    }]});
    std::fs::write(&cfg, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let id = format!("hpcc-rootless-hook-{}", std::process::id());
    let state = format!("/tmp/hpcc-user-runc-state-h-{}", std::process::id());
    let r = as_user(&format!(
        "runc --rootless=true --root {state} run --bundle {} {id}",
        b.display()
    ));
    let _ = as_user(&format!("runc --root {state} delete --force {id}"));
    assert!(!r.ok(), "{r:?}");
    assert!(
        r.stderr.contains("rootless") && r.stderr.contains("use hpcc-runtime"),
        "{r:?}"
    );
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn commands_other_than_create_and_run_pass_through() {
    let out = Command::new(bin("hpcc-runtime"))
        .args(["--hpcc-runtime=/usr/sbin/runc", "--version"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("runc version"),
        "{out:?}"
    );
    // A broken policy never blocks state/delete of existing containers.
    let out = Command::new(bin("hpcc-runtime"))
        .args([
            "--hpcc-config=/nonexistent/dir/hook.toml",
            "--hpcc-runtime=/usr/sbin/runc",
            "--root",
            "/run/hpcc-test-runtime",
            "list",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let _ = Path::new("/");
}
