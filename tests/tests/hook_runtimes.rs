//! Issue 2 end to end: `hpcc-hook` as a prestart hook of real runc, crun and
//! podman refuses an image built for a CPU this node cannot run, with the
//! reason where the user or admin can read it, and starts compatible and
//! unannotated images.

use hpcc_e2e::*;

const CPU_KEY: &str = "org.supercontainers.hardware.cpu.optimized.version";
/// An aarch64 microarchitecture: impossible on any x86_64 node, and the
/// converse on an aarch64 one.
fn impossible_target() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "a64fx"
    } else {
        "zen4"
    }
}

fn compatible_target() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "x86_64"
    } else {
        "aarch64"
    }
}

const POLICY: &str = "[checks]\ncpu = \"enforce\"\n[cache]\nenabled = false\n";

fn bundle(name: &str, target: Option<&str>) -> Bundle {
    require_root();
    let mut b = Bundle::new(name, &fixture_rootfs("busybox"));
    b.args(&["/bin/sh", "-c", "echo container-started"]);
    if let Some(t) = target {
        b.annotate(CPU_KEY, t);
    }
    b.with_hook(POLICY);
    b
}

#[test]
fn runc_refuses_impossible_cpu_with_reason() {
    let b = bundle("runc-refuse", Some(impossible_target()));
    let r = run_runc(&b);
    assert!(!r.ok(), "runc must fail: {r:?}");
    assert!(!r.stdout.contains("container-started"), "{r:?}");
    // runc shows the hook's stderr to the user.
    assert!(
        r.stderr.contains("hpcc: refused to start container"),
        "{r:?}"
    );
    assert!(r.stderr.contains(impossible_target()), "{r:?}");
    assert!(
        r.stderr.contains("checks.cpu = \\\"enforce\\\"")
            || r.stderr.contains("checks.cpu = \"enforce\""),
        "{r:?}"
    );
    assert!(r.stderr.contains("exit status 3"), "{r:?}");
}

#[test]
fn runc_starts_compatible_image() {
    let b = bundle("runc-compatible", Some(compatible_target()));
    let r = run_runc(&b);
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.contains("container-started"), "{r:?}");
}

#[test]
fn runc_starts_unannotated_image() {
    let b = bundle("runc-unannotated", None);
    let r = run_runc(&b);
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.contains("container-started"), "{r:?}");
}

#[test]
fn runc_refuses_unannotated_image_when_policy_says_so() {
    let mut b = bundle("runc-unannotated-refused", None);
    b.with_hook("unannotated = \"refuse\"\n[cache]\nenabled = false\n");
    let r = run_runc(&b);
    assert!(!r.ok(), "{r:?}");
    assert!(r.stderr.contains("no org.supercontainers"), "{r:?}");
}

#[test]
fn runc_warn_policy_starts_red_image() {
    let mut b = bundle("runc-warn", Some(impossible_target()));
    b.with_hook("[checks]\ncpu = \"warn\"\n[cache]\nenabled = false\n");
    let r = run_runc(&b);
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.contains("container-started"), "{r:?}");
}

#[test]
fn runc_invalid_policy_fails_closed_naming_the_key() {
    let mut b = bundle("runc-bad-policy", Some(compatible_target()));
    b.with_hook("[checks]\ncpu = \"strict\"\n");
    let r = run_runc(&b);
    assert!(!r.ok(), "{r:?}");
    assert!(
        r.stderr.contains("strict") && r.stderr.contains("line 2"),
        "{r:?}"
    );
    assert!(r.stderr.contains("exit status 4"), "{r:?}");
}

#[test]
fn runc_invalid_annotation_is_refused_naming_key_and_value() {
    let mut b = bundle("runc-bad-annotation", None);
    b.annotate(CPU_KEY, "pentium9000");
    let r = run_runc(&b);
    assert!(!r.ok(), "{r:?}");
    assert!(
        r.stderr.contains("pentium9000") && r.stderr.contains(CPU_KEY),
        "{r:?}"
    );
}

#[test]
fn crun_refuses_impossible_cpu_and_logs_reason() {
    let mut b = bundle("crun-refuse", Some(impossible_target()));
    // crun shows only the hook's exit code; its run.oci.hooks.stderr
    // annotation keeps the hook's stderr for the admin.
    let log = b.dir.join("hook-stderr.log");
    b.annotate("run.oci.hooks.stderr", log.to_str().unwrap());
    let r = run_crun(&b);
    assert!(!r.ok(), "crun must fail: {r:?}");
    assert!(!r.stdout.contains("container-started"), "{r:?}");
    assert!(
        r.stderr.contains("exit code: 3") || r.stderr.contains("exit status 3"),
        "{r:?}"
    );
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("hpcc: refused to start container"),
        "hook stderr log: {logged:?}"
    );
    assert!(logged.contains(impossible_target()), "{logged:?}");
}

#[test]
fn crun_starts_compatible_and_unannotated_images() {
    for (name, target) in [
        ("crun-compatible", Some(compatible_target())),
        ("crun-unannotated", None),
    ] {
        let b = bundle(name, target);
        let r = run_crun(&b);
        assert!(r.ok(), "{name}: {r:?}");
        assert!(r.stdout.contains("container-started"), "{name}: {r:?}");
    }
}

#[test]
fn cli_scores_bundles_like_the_hook() {
    let red = bundle("cli-red", Some(impossible_target()));
    red.write();
    let out = std::process::Command::new(bin("hpcc"))
        .args(["match", "--bundle"])
        .arg(&red.dir)
        .env("HPCC_CONFIG", red.dir.join("hook.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("RED") && text.contains(impossible_target()),
        "{text}"
    );

    let green = bundle("cli-green", Some(compatible_target()));
    green.write();
    let out = std::process::Command::new(bin("hpcc"))
        .args(["match", "--json", "--bundle"])
        .arg(&green.dir)
        .env("HPCC_CONFIG", green.dir.join("hook.toml"))
        .output()
        .unwrap();
    // A generic build on this node: runs, not at its best.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["score"], "orange", "{v}");
    assert_eq!(out.status.code(), Some(1));
}

/// podman with a hooks.d directory, as an admin installs it.
fn podman(name: &str, annotation: Option<&str>) -> Run {
    require_root();
    require("podman");
    let dir = scratch(name);
    let hooks = dir.join("hooks.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let policy = dir.join("hook.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let hook = serde_json::json!({
        "version": "1.0.0",
        "hook": {
            "path": bin("hpcc-hook"),
            "args": ["hpcc-hook", "prestart", format!("--config={}", policy.display())],
        },
        "when": { "always": true },
        "stages": ["prestart"],
    });
    std::fs::write(hooks.join("hpcc.json"), hook.to_string()).unwrap();
    let rootfs = dir.join("rootfs");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture_rootfs("busybox"))
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(st.success());
    let mut cmd = std::process::Command::new("timeout");
    cmd.args([
        "180",
        "podman",
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "--hooks-dir",
    ])
    .arg(&hooks)
    .args([
        "run",
        "--rm",
        "--net=none",
        "--ulimit",
        "nofile=20000:20000",
        "--ulimit",
        "nproc=1000:1000",
    ]);
    if let Some(a) = annotation {
        cmd.args(["--annotation", &format!("{CPU_KEY}={a}")]);
    }
    cmd.arg("--rootfs")
        .arg(&rootfs)
        .args(["/bin/sh", "-c", "echo container-started"]);
    let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn podman_hooks_dir_refuses_and_starts() {
    let r = podman("podman-refuse", Some(impossible_target()));
    assert!(!r.ok(), "{r:?}");
    assert!(!r.stdout.contains("container-started"), "{r:?}");
    assert!(
        r.stderr.contains("hpcc: refused to start container"),
        "{r:?}"
    );
    let r = podman("podman-start", Some(compatible_target()));
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.contains("container-started"), "{r:?}");
}

/// Labels set with `umoci config --config.label` on an OCI image layout
/// become `config.json` annotations through `umoci unpack`, and the hook
/// acts on them: the path an image builder's labels really take.
#[test]
fn umoci_image_labels_reach_the_hook() {
    require_root();
    require("umoci");
    let layout = ensure_fixtures().join("oci");
    for (tag, refused) in [("busybox-impossible", true), ("busybox-x86_64", false)] {
        let dir = scratch(&format!("umoci-{tag}"));
        let bundle = dir.join("bundle");
        let policy = dir.join("hook.toml");
        std::fs::write(&policy, POLICY).unwrap();
        let out = std::process::Command::new("bash")
            .arg(repo_root().join("tests/setup/make-bundle.sh"))
            .arg(format!("{}:{tag}", layout.display()))
            .arg(&bundle)
            .env("HOOK", bin("hpcc-hook"))
            .env("HPCC_CONFIG", &policy)
            .env("ARGS", r#"["/bin/sh","-c","echo container-started"]"#)
            .output()
            .unwrap();
        assert!(out.status.success(), "make-bundle.sh: {out:?}");
        let r = run_runc_dir(&bundle, &format!("hpcc-umoci-{tag}-{}", std::process::id()));
        let (stdout, stderr) = (&r.stdout, &r.stderr);
        if refused {
            assert!(!r.ok(), "{tag}: {stdout} {stderr}");
            assert!(stderr.contains("a64fx"), "{tag}: {stderr}");
        } else {
            assert!(r.ok(), "{tag}: {stdout} {stderr}");
            assert!(stdout.contains("container-started"), "{tag}: {stdout}");
        }
    }
}
