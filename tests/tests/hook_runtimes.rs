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

/// A bundle whose hook's stderr is kept ([`Bundle::with_logged_hook`]):
/// for the tests of starts, where runc shows nothing of the hook.
fn logged_bundle(name: &str, target: Option<&str>, policy: &str) -> Bundle {
    let mut b = bundle(name, target);
    b.with_logged_hook(policy);
    b
}

/// The hook's own record that it decided the start of container `id`
/// (`container may start ... decision="start"`, logged at info after every
/// check ran). A start test that looked only at the container's output
/// would pass just as well if the hook never ran, or ran and decided
/// nothing. Returns the line.
fn hook_decided_start<'a>(log: &'a str, id: &str) -> &'a str {
    log.lines()
        .find(|l| {
            l.contains("container may start")
                && l.contains(&format!("container=\"{id}\""))
                && l.contains("decision=\"start\"")
        })
        .unwrap_or_else(|| panic!("the hook did not decide the start of {id}; its log:\n{log}"))
}

/// The hook's finding for a check, at info: `check="cpu" level=... image=...`.
fn hook_finding<'a>(log: &'a str, check: &str) -> &'a str {
    log.lines()
        .find(|l| l.contains(&format!("check=\"{check}\"")))
        .unwrap_or_else(|| panic!("no {check} finding in the hook's log:\n{log}"))
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
    let b = logged_bundle("runc-compatible", Some(compatible_target()), POLICY);
    let r = run_runc(&b);
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.contains("container-started"), "{r:?}");
    // The hook ran, read the image's target and scored it: a generic
    // build, degraded but allowed, on this node.
    let log = b.hook_log();
    let line = hook_decided_start(&log, &b.id);
    assert!(
        line.contains(&format!("score=\"{}\"", node_cpu::family_build_score())),
        "{line}"
    );
    let cpu = hook_finding(&log, "cpu");
    assert!(
        cpu.contains(&format!("image=\"{}\"", compatible_target())),
        "{cpu}"
    );
}

/// `unannotated = "allow"` (the default): an image with no annotation hpcc
/// knows starts, and the hook says that it started it unchecked.
#[test]
fn runc_starts_unannotated_image() {
    let b = logged_bundle("runc-unannotated", None, POLICY);
    let r = run_runc(&b);
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.contains("container-started"), "{r:?}");
    let log = b.hook_log();
    hook_decided_start(&log, &b.id);
    assert!(
        log.lines()
            .any(|l| l.contains("started unchecked (policy unannotated = \"allow\")")),
        "{log}"
    );
}

#[test]
fn runc_refuses_unannotated_image_when_policy_says_so() {
    let mut b = bundle("runc-unannotated-refused", None);
    b.with_hook("unannotated = \"refuse\"\n[cache]\nenabled = false\n");
    let r = run_runc(&b);
    assert!(!r.ok(), "{r:?}");
    assert!(!r.stdout.contains("container-started"), "{r:?}");
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("hpcc: refused to start container"))
        .unwrap_or_else(|| panic!("no refusal line: {r:?}"));
    let line = line.replace("\\\"", "\"");
    assert!(
        line.contains("carries no annotation hpcc can check"),
        "{line}"
    );
    assert!(
        line.contains("unannotated = \"refuse\""),
        "policy key not named: {line}"
    );
    assert!(r.stderr.contains("exit status 3"), "{r:?}");
}

#[test]
fn runc_warn_policy_starts_red_image() {
    let b = logged_bundle(
        "runc-warn",
        Some(impossible_target()),
        "[checks]\ncpu = \"warn\"\n[cache]\nenabled = false\n",
    );
    let r = run_runc(&b);
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.contains("container-started"), "{r:?}");
    // Started because the policy says warn, not because nothing was seen:
    // the hook scored it red, and warned with the reason and the key.
    let log = b.hook_log();
    let line = hook_decided_start(&log, &b.id);
    assert!(line.contains("score=\"red\""), "{line}");
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains(impossible_target())
            && l.contains("checks.cpu = \"warn\"")),
        "{log}"
    );
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
    for (name, target, score) in [
        (
            "crun-compatible",
            Some(compatible_target()),
            node_cpu::family_build_score(),
        ),
        ("crun-unannotated", None, "orange"),
    ] {
        let b = logged_bundle(name, target, POLICY);
        let r = run_crun(&b);
        assert!(r.ok(), "{name}: {r:?}");
        assert!(r.stdout.contains("container-started"), "{name}: {r:?}");
        let log = b.hook_log();
        let line = hook_decided_start(&log, &b.id);
        assert!(line.contains(&format!("score=\"{score}\"")), "{line}");
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
    assert_eq!(v["score"], node_cpu::family_build_score(), "{v}");
    assert_eq!(out.status.code(), Some(node_cpu::family_build_exit()));
}

/// podman with a hooks.d directory, as an admin installs it.
fn podman(name: &str, annotation: Option<&str>) -> (Run, String) {
    require_root();
    require("podman");
    let dir = scratch(name);
    let hooks = dir.join("hooks.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let policy = dir.join("hook.toml");
    std::fs::write(&policy, format!("{POLICY}[log]\nstderr = \"info\"\n")).unwrap();
    // The hook's stderr is also kept (podman, like runc, shows it only when
    // the hook fails).
    let entry = logged_hook_entry(
        &serde_json::json!({
            "path": bin("hpcc-hook"),
            "args": ["hpcc-hook", "prestart", format!("--config={}", policy.display())],
        }),
        &dir.join("hook-stderr.log"),
    );
    let hook = serde_json::json!({
        "version": "1.0.0",
        "hook": entry,
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
    let log = std::fs::read_to_string(dir.join("hook-stderr.log")).unwrap_or_default();
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, log)
}

#[test]
fn podman_hooks_dir_refuses_and_starts() {
    let (r, _) = podman("podman-refuse", Some(impossible_target()));
    assert!(!r.ok(), "{r:?}");
    assert!(!r.stdout.contains("container-started"), "{r:?}");
    assert!(
        r.stderr.contains("hpcc: refused to start container"),
        "{r:?}"
    );
    assert!(r.stderr.contains(impossible_target()), "{r:?}");
    let (r, log) = podman("podman-start", Some(compatible_target()));
    assert!(r.ok(), "{r:?}");
    assert!(r.stdout.contains("container-started"), "{r:?}");
    // podman's hooks.d ran the hook, with the annotation podman passed.
    assert!(
        log.contains("container may start") && log.contains("decision=\"start\""),
        "{log}"
    );
    let cpu = hook_finding(&log, "cpu");
    assert!(
        cpu.contains(&format!("image=\"{}\"", compatible_target())),
        "{cpu}"
    );
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
        std::fs::write(&policy, format!("{POLICY}[log]\nstderr = \"info\"\n")).unwrap();
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
        // Keep the hook's stderr (make-bundle.sh wrote a plain entry).
        let cfg_path = bundle.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
        let hook_log = dir.join("hook-stderr.log");
        let entry = logged_hook_entry(&cfg["hooks"]["prestart"][0], &hook_log);
        cfg["hooks"]["prestart"][0] = entry;
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        let id = format!("hpcc-umoci-{tag}-{}", std::process::id());
        let r = run_runc_dir(&bundle, &id);
        let (stdout, stderr) = (&r.stdout, &r.stderr);
        if refused {
            assert!(!r.ok(), "{tag}: {stdout} {stderr}");
            assert!(stderr.contains("a64fx"), "{tag}: {stderr}");
        } else {
            assert!(r.ok(), "{tag}: {stdout} {stderr}");
            assert!(stdout.contains("container-started"), "{tag}: {stdout}");
            // The label reached the hook as the image's CPU target.
            let log = std::fs::read_to_string(&hook_log).unwrap_or_default();
            hook_decided_start(&log, &id);
            let cpu = hook_finding(&log, "cpu");
            assert!(cpu.contains("image=\"x86_64\""), "{tag}: {cpu}");
        }
    }
}

/// A launch the hook decides to start and cannot apply: the image asks
/// for MPI replacement (planned: the host's MPICH mounted over the image's
/// stand-in, its dependencies under /dev/hpcc) and, through the CDI
/// annotation, for a device whose spec is stale: it says `c 10:237`, while
/// the node at its `hostPath` is `c 1:3`. The planner takes the spec's
/// numbers; the apply layer checks the node it binds, fails after the MPI
/// mounts were made, and undoes them (in the container's namespace, by
/// their handles). `on_error` then decides.
fn unappliable(name: &str, on_error: &str) -> Bundle {
    require_root();
    let dir = scratch(&format!("{name}-cdi"));
    let node = dir.join("stale0");
    let st = std::process::Command::new("mknod")
        .arg(&node)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success(), "mknod failed");
    std::fs::write(
        dir.join("stale.json"),
        serde_json::json!({
            "cdiVersion": "0.6.0",
            "kind": "hpcc.test/stale",
            "devices": [{"name": "dev0", "containerEdits": {"deviceNodes": [{
                "path": "/dev/hpcc-stale0", "hostPath": node, "type": "c",
                "major": 10, "minor": 237, "permissions": "rw"
            }]}}]
        })
        .to_string(),
    )
    .unwrap();
    let policy = format!(
        "on_error = \"{on_error}\"\n\
         [mpi.mpich]\nabi = \"mpich\"\nlibraries = [\"/usr/lib/x86_64-linux-gnu/libmpich.so.12\"]\n\
         [gpu]\ncdi_spec_dirs = [\"{}\"]\nallowed = [\"hpcc.test/stale=dev0\"]\n\
         [cache]\nenabled = false\n[log]\njournald = false\n",
        dir.display()
    );
    let mut b = Bundle::new(name, &fixture_rootfs("mpich-app"));
    b.annotate(CPU_KEY, compatible_target())
        .annotate("org.supercontainers.mpi.implementation", "mpich")
        .annotate("org.supercontainers.mpi.portability.mode", "mpi_replace")
        .annotate("cdi.k8s.io/hpcc-stale", "hpcc.test/stale=dev0")
        .args(&[
            "/bin/sh",
            "-c",
            "/usr/bin/mpi-version; test -e /dev/hpcc-stale0 && echo device-present; echo container-ran",
        ])
        .with_logged_hook(&policy);
    b
}

/// Nothing of a run stays in the host's mount table, nor, for crun, in the
/// mount namespace crun and its hooks ran in.
fn assert_no_mount_left(b: &Bundle, before: &str, r: &Run, runtime: &str) {
    let leaked: Vec<_> = host_mountinfo()
        .lines()
        .filter(|l| !before.lines().any(|b| b == *l))
        .filter(|l| l.contains(b.dir.to_str().unwrap()) || l.contains("libmpich"))
        .map(str::to_owned)
        .collect();
    assert!(leaked.is_empty(), "{runtime}: host mounts left: {leaked:?}");
    if runtime == "crun" {
        let added = crun_namespace_mounts(b).added();
        assert!(
            added.is_empty(),
            "{runtime}: mounts left in crun's namespace: {added:?}\n{r:?}"
        );
    }
}

/// `on_error = "refuse"` (the default): hpcc's own failure after a start
/// decision stops the container, exit 4, with the failure and the policy
/// key in the one line (runc shows it; for crun it is in the hook's log).
#[test]
fn failed_apply_with_on_error_refuse_stops_the_container() {
    for runtime in ["runc", "crun"] {
        let b = unappliable(&format!("onerr-refuse-{runtime}"), "refuse");
        let before = host_mountinfo();
        let r = if runtime == "runc" {
            run_runc(&b)
        } else {
            run_crun(&b)
        };
        let log = b.hook_log();
        assert!(!r.ok(), "{runtime} started: {r:?}");
        assert!(!r.stdout.contains("container-ran"), "{runtime}: {r:?}");
        let shown = if runtime == "runc" { &r.stderr } else { &log };
        let line = shown
            .lines()
            .find(|l| l.contains("hpcc: refused to start container"))
            .unwrap_or_else(|| panic!("{runtime}: no refusal line:\n{shown}"));
        // runc quotes the hook's stderr in its own message (`\"`).
        let line = line.replace("\\\"", "\"");
        assert!(
            line.contains("applying the launch tweaks failed")
                && line.contains("exposing device")
                && line.contains("the plan says c 10:237")
                && line.contains("everything done before was undone")
                && line.contains("on_error = \"refuse\""),
            "{runtime}: {line}"
        );
        if runtime == "runc" {
            assert!(r.stderr.contains("exit status 4"), "{r:?}");
        } else {
            assert!(r.stderr.contains("exit code: 4"), "{r:?}");
        }
        assert_no_mount_left(&b, &before, &r, runtime);
    }
}

/// `on_error = "allow"`: the same failure starts the container unchecked,
/// and the container shows that the apply was undone: it runs the image's
/// own MPI (the stand-in), not the host's MPICH the hook had already
/// mounted when the device failed, and has no device. The hook warns with
/// the failure. This is also the rollback seen through a real runtime: a
/// mount left behind by a failed apply would show in the container.
#[test]
fn failed_apply_with_on_error_allow_starts_unchecked_and_undone() {
    for runtime in ["runc", "crun"] {
        let b = unappliable(&format!("onerr-allow-{runtime}"), "allow");
        let before = host_mountinfo();
        let r = if runtime == "runc" {
            run_runc(&b)
        } else {
            run_crun(&b)
        };
        let log = b.hook_log();
        assert!(r.ok(), "{runtime}: {r:?}\nhook log:\n{log}");
        assert!(r.stdout.contains("container-ran"), "{runtime}: {r:?}");
        assert!(
            r.stdout.contains("stand-in") && !r.stdout.contains("MPICH Version:"),
            "{runtime}: the container does not run the image's own MPI: {r:?}\nhook log:\n{log}"
        );
        assert!(!r.stdout.contains("device-present"), "{runtime}: {r:?}");
        let warn = log
            .lines()
            .find(|l| l.contains("starting unchecked (on_error = \"allow\")"))
            .unwrap_or_else(|| panic!("{runtime}: the hook did not warn:\n{log}"));
        assert!(
            warn.contains("WARN") && warn.contains("the plan says c 10:237"),
            "{runtime}: {warn}"
        );
        // Unchecked: the hook took no start decision of its own.
        assert!(!log.contains("container may start"), "{runtime}: {log}");
        assert_no_mount_left(&b, &before, &r, runtime);
    }
}
