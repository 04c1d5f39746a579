//! End-to-end tests of the SPANK plugin (`hpcc_spank.so`) and
//! `hpcc-runtime --hpcc-slurm` against a real one-node Slurm 22.05 with
//! runc (`tests/setup/slurm.sh`). They fail, never skip, when Slurm, runc
//! or root is missing.
//!
//! One configuration serves every test: plugstack.conf loads the freshly
//! built plugin with this suite's policy, and oci.conf names a spy script
//! that runs `hpcc-runtime` (rootless runc options, as Slurm's guide sets
//! them for non-root jobs; they work for root's jobs too), then keeps a
//! copy of the config the runtime edited. So each test sees which layer
//! acted: the plugin's refusal (the runtime never ran), or the runtime
//! applying the plugin's decision (`run.hpcc.decided-by`).

use hpcc_e2e::{
    ensure_fixtures, fixture_rootfs, host_mpich_version, node_cpu, repo_root, require,
    require_root, require_unmasked_proc, Bundle,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// slurmd's log as tests/setup/slurm.sh configures it.
const SLURMD_LOG: &str = "/tmp/slurm/log/slurmd.log";
/// Where the plugin leaves per-step decisions (hpcc_common::handoff).
const HANDOFF_DIR: &str = "/run/hpcc/slurm";
/// runc's state of the steps' containers (per user, as oci.conf says).
const OCI_ROOT: &str = "/run/user-oci";

struct Env {
    dir: PathBuf,
    policy: PathBuf,
    spy_log: PathBuf,
}

fn target_debug() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("debug")
}

extern "C" fn stop_slurm() {
    let _ = Command::new("bash")
        .arg(repo_root().join("tests/setup/slurm.sh"))
        .arg("stop")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn slurm_running() -> bool {
    Command::new("bash")
        .arg(repo_root().join("tests/setup/slurm.sh"))
        .arg("status")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Builds the plugin, wrapper and hook, writes the suite's policy,
/// plugstack.conf and oci.conf, and starts Slurm (stopped at exit when
/// this process started it).
fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        require_root();
        for tool in ["srun", "sbatch", "slurmctld", "slurmd", "munged", "runc"] {
            require(tool);
        }
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "hpcc-spank", "-p", "hpcc-runtime"])
            .current_dir(repo_root())
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building hpcc-spank and hpcc-runtime failed");
        ensure_fixtures();
        let t = target_debug();
        let (so, runtime) = (t.join("libhpcc_spank.so"), t.join("hpcc-runtime"));
        for p in [&so, &runtime] {
            assert!(p.exists(), "{} was not built", p.display());
        }
        let dir = repo_root().join("tests/work/slurm");
        std::fs::create_dir_all(&dir).unwrap();
        // Job users (root and hpcctest) run the runtime; the spy's log and
        // the kept configs must be writable by both.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let policy = dir.join("hook.toml");
        std::fs::write(
            &policy,
            "# hpcc policy of the Slurm e2e tests\n\
             unannotated = \"refuse\"\n\
             [users]\nmay_relax_to = \"warn\"\n\
             [mpi.mpich]\nabi = \"mpich\"\nlibraries = [\"/usr/lib/x86_64-linux-gnu/libmpich.so.12\"]\n\
             [log]\njournald = false\n",
        )
        .unwrap();
        let spy_log = dir.join("runtime-calls.log");
        // Written by every job user's runtime.
        if !spy_log.exists() {
            std::fs::write(&spy_log, "").unwrap();
        }
        std::fs::set_permissions(&spy_log, std::fs::Permissions::from_mode(0o666)).unwrap();
        let spy = dir.join("runtime-spy.sh");
        std::fs::write(
            &spy,
            format!(
                "#!/bin/sh\n# Records one hpcc-runtime call (user, the spooled bundle's name, the\n\
                 # plugin's step files present then, the bundle's test tag), runs it,\n\
                 # and keeps the config it edited (slurmstepd removes the spool after the step).\n\
                 b=; prev=; for a; do [ \"$prev\" = -b ] && b=$a; prev=$a; done\n\
                 tag=$(jq -r '.annotations[\"org.example.hpcc-test\"] // empty' \"$b/config.json\")\n\
                 handoff=$(ls -A {handoff} 2>&1 | tr '\\n ' ',_')\n\
                 printf '%s %s handoff=%s %s\\n' \"$(id -un)\" \"$(basename \"$b\")\" \"$handoff\" \"$tag\" >> {log}\n\
                 {runtime} \"$@\"; rc=$?\n\
                 [ -n \"$tag\" ] && cp \"$b/config.json\" {dir}/edited-$tag.json 2>/dev/null\n\
                 exit $rc\n",
                log = spy_log.display(),
                handoff = HANDOFF_DIR,
                runtime = runtime.display(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&spy, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all("/etc/slurm").unwrap();
        std::fs::write(
            "/etc/slurm/plugstack.conf",
            format!(
                "required {} config={} default_mpi=auto\n",
                so.display(),
                policy.display()
            ),
        )
        .unwrap();
        // Slurm's rootless settings (its containers guide): runc runs as
        // the job user, with its state under /run/user-oci/<user>.
        ensure_user("hpcctest");
        for (user, uid) in [("root", 0), ("hpcctest", uid_of("hpcctest"))] {
            let d = PathBuf::from(OCI_ROOT).join(user);
            std::fs::create_dir_all(&d).unwrap();
            std::os::unix::fs::chown(&d, Some(uid), Some(uid)).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let rt = format!("--rootless=true --root={OCI_ROOT}/%u");
        std::fs::write(
            "/etc/slurm/oci.conf",
            format!(
                "RunTimeQuery=\"runc {rt} state %n.%u.%j.%s.%t\"\n\
                 RunTimeKill=\"runc {rt} kill -a %n.%u.%j.%s.%t KILL\"\n\
                 RunTimeDelete=\"runc {rt} delete --force %n.%u.%j.%s.%t\"\n\
                 RunTimeRun=\"exec {} --hpcc-slurm --hpcc-config={} --hpcc-node=%n {rt} run %n.%u.%j.%s.%t -b %b\"\n",
                spy.display(),
                policy.display()
            ),
        )
        .unwrap();
        let was_running = slurm_running();
        let out = Command::new("bash")
            .arg(repo_root().join("tests/setup/slurm.sh"))
            .arg("start")
            .output()
            .expect("slurm.sh runs");
        assert!(
            out.status.success(),
            "tests/setup/slurm.sh start failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !was_running {
            // SAFETY: registering a plain extern "C" fn.
            unsafe { libc::atexit(stop_slurm) };
        }
        Env {
            dir,
            policy,
            spy_log,
        }
    })
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A bundle from a fixture rootfs with annotations and a unique tag the
/// hook spy's log can be searched for.
fn bundle(name: &str, rootfs: &str, annotations: &[(&str, &str)]) -> (Bundle, String) {
    env();
    let mut b = Bundle::new(&format!("slurm-{name}"), &fixture_rootfs(rootfs));
    let tag = format!("{name}-{}", std::process::id());
    b.annotate("org.example.hpcc-test", &tag);
    for (k, v) in annotations {
        b.annotate(k, v);
    }
    b.write();
    (b, tag)
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .output()
        .expect("command runs");
    eprintln!(
        "$ {cmd:?}\nexit: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn srun(args: &[&str]) -> Output {
    run(Command::new("timeout").arg("120").arg("srun").args(args))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn slurmd_log() -> String {
    std::fs::read_to_string(SLURMD_LOG).unwrap_or_default()
}

/// The runtime's calls for a bundle's tag (`USER BUNDLE handoff=FILES TAG`
/// lines: the job user, the spooled bundle's directory name, the files
/// in the plugin's handoff directory when the runtime was called).
fn spy_calls(tag: &str) -> Vec<String> {
    std::fs::read_to_string(&env().spy_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(&format!(" {tag}")))
        .map(str::to_owned)
        .collect()
}

/// The config the runtime edited for a bundle's tag.
fn edited(tag: &str) -> serde_json::Value {
    let p = env().dir.join(format!("edited-{tag}.json"));
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap()
}

const CPU: &str = "org.supercontainers.hardware.cpu.optimized.version";

#[test]
fn srun_help_lists_the_options() {
    env();
    let out = srun(&["--help"]);
    let help = text(&out.stdout) + &text(&out.stderr);
    assert!(help.contains("--hpcc=enforce|warn|off"), "{help}");
    assert!(help.contains("--hpcc-mpi=auto|replace|none"), "{help}");
    let bad = srun(&["--hpcc=never", "/bin/true"]);
    assert!(!bad.status.success());
    let err = text(&bad.stderr);
    assert!(
        err.contains("--hpcc=\"never\"") && err.contains("enforce, warn or off"),
        "{err}"
    );
}

/// `unannotated = "refuse"` in the suite's policy: an image with nothing
/// hpcc can check (an unknown key, a look-alike key, a known key whose
/// value cannot be read) is refused by the plugin, with the keys it saw,
/// even when the user asks `--hpcc=off` (issue 24).
#[test]
fn an_image_with_nothing_checkable_is_refused_under_unannotated_refuse() {
    let cyrillic = "\u{43e}rg.supercontainers.hardware.cpu.optimized.version";
    for (name, key, value) in [
        ("unknown", "org.supercontainers.zzz", "x86_64"),
        ("lookalike", cyrillic, "x86_64"),
        (
            "unreadable",
            "org.supercontainers.mpi.implementation",
            "zzz",
        ),
    ] {
        let (b, tag) = bundle(&format!("unannotated-{name}"), "busybox", &[(key, value)]);
        for relax in [None, Some("--hpcc=off")] {
            let container = format!("--container={}", b.dir.display());
            let mut args: Vec<&str> = relax.into_iter().collect();
            args.extend([container.as_str(), "/bin/echo", "must-not-run"]);
            let out = srun(&args);
            let err = text(&out.stderr);
            assert!(!out.status.success(), "{name} {relax:?}: started\n{err}");
            assert!(!text(&out.stdout).contains("must-not-run"));
            let line = err
                .lines()
                .find(|l| l.contains("hpcc: refused"))
                .unwrap_or_else(|| panic!("{name}: no refusal line:\n{err}"));
            assert!(line.contains("unannotated"), "{name}: {line}");
            assert!(
                line.contains("zzz") || line.contains("\\u{43e}"),
                "{name}: the keys seen are not named: {line}"
            );
        }
        // The plugin refused: the runtime was never called.
        assert!(spy_calls(&tag).is_empty(), "{name}: {:?}", spy_calls(&tag));
    }
}

#[test]
fn impossible_cpu_is_refused_with_the_reason_in_srun_stderr() {
    let foreign = node_cpu::foreign_target();
    let (b, tag) = bundle("a64fx", "busybox", &[(CPU, foreign)]);
    let out = srun(&[
        &format!("--container={}", b.dir.display()),
        "/bin/echo",
        "must-not-run",
    ]);
    assert!(!out.status.success(), "a refused step must exit non-zero");
    assert!(!text(&out.stdout).contains("must-not-run"));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("hpcc: refused"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one refusal line expected:\n{err}");
    let line = lines[0];
    assert!(line.contains(&b.dir.display().to_string()), "{line}");
    assert!(line.contains(foreign), "image need missing: {line}");
    assert!(
        line.contains(node_cpu::family()),
        "node fact missing: {line}"
    );
    assert!(
        line.contains("checks.cpu = \"enforce\"")
            && line.contains(&env().policy.display().to_string()),
        "policy missing: {line}"
    );
    // The admin has it in slurmd's log, with the step and the user.
    let log = slurmd_log();
    assert!(
        log.lines()
            .any(|l| l.contains("uid=0: hpcc: refused") && l.contains(&*b.dir.to_string_lossy())),
        "refusal not in {SLURMD_LOG}"
    );
    // The plugin refused: the runtime was never even called (a refusal by
    // the runtime instead would not satisfy this test).
    assert!(spy_calls(&tag).is_empty(), "{:?}", spy_calls(&tag));
}

#[test]
fn compatible_bundle_runs_with_the_plugins_decision() {
    let (b, tag) = bundle("x86", "busybox", &[(CPU, "x86_64")]);
    let out = srun(&[
        &format!("--container={}", b.dir.display()),
        "/bin/echo",
        "ok",
    ]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "ok");
    // hpcc-runtime ran once, applying the decision the plugin took for
    // this step (not taking one of its own).
    let calls = spy_calls(&tag);
    assert_eq!(
        calls.len(),
        1,
        "hpcc-runtime should have run once: {calls:?}"
    );
    assert_eq!(
        edited(&tag)["annotations"]["run.hpcc.decided-by"],
        "hpcc_spank.so"
    );
    // The plugin's step file was there while the runtime ran (the spy
    // listed the directory then), and is gone once the step ended.
    let fields: Vec<&str> = calls[0].split(' ').collect();
    let (bundle_name, listed) = (fields[1], fields[2]);
    let file = step_file_of(bundle_name);
    assert!(
        listed
            .strip_prefix("handoff=")
            .is_some_and(|l| l.split(',').any(|f| f == file)),
        "{file} was not in {HANDOFF_DIR} when hpcc-runtime ran: {}",
        calls[0]
    );
    let dir = std::fs::metadata(HANDOFF_DIR)
        .unwrap_or_else(|e| panic!("{HANDOFF_DIR} cannot be read: {e}"));
    assert!(dir.is_dir(), "{HANDOFF_DIR} is not a directory");
    match std::fs::symlink_metadata(Path::new(HANDOFF_DIR).join(&file)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("{HANDOFF_DIR}/{file} cannot be checked: {e}"),
        Ok(_) => panic!("{HANDOFF_DIR}/{file} left behind after the step"),
    }
}

/// srun keeps a `SLURM_CONTAINER` the user set, and the plugin decides on
/// the bundle that variable names: a benign bundle there and a hostile one
/// in `--container` would give the hostile image the benign one's plan if
/// hpcc-runtime applied the plugin's plan. It decides again on
/// slurmstepd's copy of the config, so the hostile image is refused.
#[test]
fn a_spoofed_slurm_container_cannot_smuggle_another_image() {
    let (benign, _) = bundle("spoof-benign", "busybox", &[(CPU, "x86_64")]);
    let (hostile, tag) = bundle("spoof-hostile", "busybox", &[(CPU, "a64fx")]);
    let out = run(Command::new("timeout")
        .arg("120")
        .arg("srun")
        .env("SLURM_CONTAINER", &benign.dir)
        .arg(format!("--container={}", hostile.dir.display()))
        .args(["/bin/echo", "must-not-run"]));
    assert!(!out.status.success(), "the hostile image must not start");
    assert!(!text(&out.stdout).contains("must-not-run"));
    let err = text(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.contains("hpcc: refused") && l.contains("a64fx")),
        "no refusal naming the hostile image's need:\n{err}"
    );
    // The runtime was called (the plugin saw only the benign bundle) and
    // refused: the container was never created.
    assert_eq!(spy_calls(&tag).len(), 1, "{:?}", spy_calls(&tag));
}

/// The plugin's step file (`<job>.<step>.json`, hpcc_common::handoff) of
/// a spooled bundle `oci-jobJJJJJ-SSSSS` (slurmstepd's name).
fn step_file_of(bundle_name: &str) -> String {
    let rest = bundle_name
        .strip_prefix("oci-job")
        .unwrap_or_else(|| panic!("not a spooled bundle: {bundle_name}"));
    let (job, step) = rest.split_once('-').unwrap();
    let job: u32 = job.parse().unwrap();
    let step: u32 = match step {
        "batch" => 0xffff_fffb,
        s => s.parse().unwrap(),
    };
    format!("{job}.{step}.json")
}

#[test]
fn user_may_relax_only_as_far_as_the_policy_allows() {
    // A CPU target this node cannot run, chosen from the node itself
    // (issue 17: a fixed `sapphirerapids` ran on a machine with AMX).
    let target = match node_cpu::unrunnable_target() {
        Some((t, missing)) => {
            eprintln!(
                "refused target for this node: {t} (lacks {})",
                missing.join(", ")
            );
            t
        }
        None => {
            let t = node_cpu::foreign_target();
            eprintln!("this node has every feature of every {} target archspec knows: using {t}, of another architecture", node_cpu::family());
            t.to_owned()
        }
    };
    let (b, tag) = bundle("relax", "busybox", &[(CPU, &target)]);
    let container = format!("--container={}", b.dir.display());
    let refused = srun(&[&container, "/bin/echo", "ran"]);
    assert!(!refused.status.success(), "{target} must be refused here");
    assert!(text(&refused.stderr).contains(&target));
    // --hpcc=off is bounded to warn (may_relax_to = "warn"): starts, logged.
    let relaxed = srun(&["--hpcc=off", &container, "/bin/echo", "ran"]);
    assert!(relaxed.status.success());
    assert_eq!(text(&relaxed.stdout).trim(), "ran");
    let log = slurmd_log();
    assert!(
        log.lines().any(|l| l.contains("may start")
            && l.contains(&*b.dir.to_string_lossy())
            && l.contains("user asked \"off\"")),
        "warning not logged"
    );
    // The runtime applied the plugin's relaxed decision (deciding again
    // with the admin's policy would have refused).
    assert_eq!(spy_calls(&tag).len(), 1);
    assert_eq!(
        edited(&tag)["annotations"]["run.hpcc.decided-by"],
        "hpcc_spank.so"
    );
}

#[test]
fn mpi_replace_shows_the_host_mpich_inside_the_container() {
    let (b, tag) = bundle(
        "mpi",
        "mpich-app",
        &[
            (CPU, "x86_64"),
            ("org.supercontainers.mpi.implementation", "mpich"),
            ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
        ],
    );
    let container = format!("--container={}", b.dir.display());
    let out = srun(&[&container, "/usr/bin/mpi-version"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "mpi-version failed");
    assert!(
        stdout.contains("MPICH Version:") && stdout.contains(&host_mpich_version()),
        "the host MPICH {} was not injected: {stdout}",
        host_mpich_version()
    );
    assert!(!stdout.contains("stand-in"), "{stdout}");
    // As spec edits: the host library over the image's, read-only, and the
    // container's linker cache from hpcc's store; no hook.
    let cfg = edited(&tag);
    let mounts = cfg["mounts"].as_array().unwrap();
    assert!(
        mounts.iter().any(
            |m| m["source"] == "/usr/lib/x86_64-linux-gnu/libmpich.so.12"
                && m["options"].as_array().unwrap().iter().any(|o| o == "ro")
        ),
        "{mounts:?}"
    );
    assert!(
        mounts.iter().any(|m| m["destination"] == "/etc/ld.so.cache"
            && m["source"]
                .as_str()
                .unwrap()
                .starts_with("/run/hpcc/ldcache/")),
        "{mounts:?}"
    );
    assert!(cfg["hooks"]["prestart"]
        .as_array()
        .is_none_or(|h| h.is_empty()));
    // --hpcc-mpi=none keeps the image's own library.
    let (b2, _) = bundle(
        "mpi-none",
        "mpich-app",
        &[
            (CPU, "x86_64"),
            ("org.supercontainers.mpi.implementation", "mpich"),
            ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
        ],
    );
    let out = srun(&[
        "--hpcc-mpi=none",
        &format!("--container={}", b2.dir.display()),
        "/usr/bin/mpi-version",
    ]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("stand-in"), "image MPI expected");
}

fn sbatch(args: &[&str], output: &Path) -> (bool, String) {
    let _ = std::fs::remove_file(output);
    let out = run(Command::new("timeout")
        .arg("180")
        .arg("sbatch")
        .arg("--wait")
        .arg(format!("--output={}", output.display()))
        .args(args));
    let file = std::fs::read_to_string(output).unwrap_or_default();
    eprintln!("job output:\n{file}");
    (out.status.success(), file)
}

#[test]
fn sbatch_container_behaves_the_same() {
    let (good, _) = bundle("sbatch-ok", "busybox", &[(CPU, "x86_64")]);
    let out_file = env()
        .dir
        .join(format!("sbatch-ok-{}.out", std::process::id()));
    let (ok, file) = sbatch(
        &[
            &format!("--container={}", good.dir.display()),
            "--wrap",
            "echo batch-ok",
        ],
        &out_file,
    );
    assert!(ok, "sbatch --container of a compatible bundle failed");
    assert!(file.contains("batch-ok"), "{file}");

    let (bad, bad_tag) = bundle("sbatch-bad", "busybox", &[(CPU, "a64fx")]);
    let out_file = env()
        .dir
        .join(format!("sbatch-bad-{}.out", std::process::id()));
    let (ok, file) = sbatch(
        &[
            &format!("--container={}", bad.dir.display()),
            "--wrap",
            "echo must-not-run",
        ],
        &out_file,
    );
    assert!(!ok, "sbatch --wait must report the refused job as failed");
    assert!(!file.contains("must-not-run"), "{file}");
    // The plugin refused it; the runtime never ran.
    assert!(spy_calls(&bad_tag).is_empty(), "{:?}", spy_calls(&bad_tag));
    assert!(
        file.lines().filter(|l| l.contains("hpcc: refused")).count() == 1 && file.contains("a64fx"),
        "the refusal should be the job's one error line: {file}"
    );
}

fn ensure_user(name: &str) {
    if Command::new("id")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success()
    {
        return;
    }
    let st = Command::new("useradd")
        .args(["-M", "-s", "/bin/sh", name])
        .status()
        .expect("useradd runs");
    assert!(st.success(), "useradd {name} failed");
}

#[test]
fn unreadable_bundle_is_refused_without_leaking_it() {
    env();
    ensure_user("hpcctest");
    let marker = format!("HPCC-SECRET-MARKER-{}", std::process::id());
    let secret = PathBuf::from(format!("/tmp/hpcc-secret-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&secret);
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (b, _) = bundle("secret", "busybox", &[(CPU, "x86_64")]);
    let inner = secret.join("bundle");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&b.dir)
        .arg(&inner)
        .status()
        .unwrap();
    assert!(st.success());
    let cfg = inner.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["annotations"]["org.example.secret"] = serde_json::json!(marker);
    std::fs::write(&cfg, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log_before = slurmd_log().len();

    let out = run(Command::new("timeout").args([
        "120",
        "su",
        "hpcctest",
        "-s",
        "/bin/sh",
        "-c",
        &format!(
            "cd /tmp && srun --container={} /bin/echo must-not-run",
            inner.display()
        ),
    ]));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let log = slurmd_log();
    let new_log = &log[log_before.min(log.len())..];
    let _ = std::fs::remove_dir_all(&secret);
    assert!(!out.status.success());
    assert!(!stdout.contains("must-not-run"));
    let line = stderr
        .lines()
        .find(|l| l.contains("hpcc: refused"))
        .unwrap_or_else(|| panic!("no refusal line: {stderr}"));
    assert!(
        line.contains("cannot be read by the job user") && line.contains("permission denied"),
        "{line}"
    );
    for (what, s) in [
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("slurmd log", &new_log.to_owned()),
    ] {
        assert!(
            !s.contains(&marker),
            "the bundle's content leaked into {what}"
        );
    }
}

/// A normal user's job: Slurm runs hpcc-runtime as that user with
/// rootless runc (oci.conf `--rootless=true --root=/run/user-oci/%u`), and
/// `mpi_replace` still delivers the host MPICH, through spec edits alone.
#[test]
fn non_root_job_with_rootless_runc_gets_the_host_mpich() {
    require_unmasked_proc("non_root_job_with_rootless_runc_gets_the_host_mpich");
    env();
    let tag = format!("user-mpi-{}", std::process::id());
    let b = hpcc_e2e::user_bundle(
        "slurm-user-mpi",
        "mpich-app",
        &[
            (CPU, "x86_64"),
            ("org.supercontainers.mpi.implementation", "mpich"),
            ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
            ("org.example.hpcc-test", &tag),
        ],
        &["/usr/bin/mpi-version"],
    );
    let r = hpcc_e2e::as_user(&format!(
        "cd /tmp && srun --container={} /usr/bin/mpi-version",
        b.display()
    ));
    let _ = std::fs::remove_dir_all(&b);
    assert!(r.ok(), "{r:?}");
    assert!(
        r.stdout.contains("MPICH Version:") && r.stdout.contains(&host_mpich_version()),
        "{r:?}"
    );
    assert!(!r.stdout.contains("stand-in"), "{r:?}");
    // The runtime ran as the user, applying the plugin's decision.
    let calls = spy_calls(&tag);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].starts_with("hpcctest "), "{calls:?}");
    assert_eq!(
        edited(&tag)["annotations"]["run.hpcc.decided-by"],
        "hpcc_spank.so"
    );
}

#[test]
fn jobs_without_container_are_untouched() {
    env();
    // The step lists the plugin's handoff directory while it runs: a step
    // file the plugin wrote for it would be there (it is removed only at
    // the step's end, so looking after the step would prove nothing).
    let out = srun(&[
        "/bin/sh",
        "-c",
        &format!(
            "echo job=$SLURM_JOB_ID; echo handoff=$(ls -A {HANDOFF_DIR} 2>&1 | tr '\\n ' ',_')"
        ),
    ]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let job = lines
        .next()
        .and_then(|l| l.strip_prefix("job="))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_owned();
    assert!(!job.is_empty());
    let listed = lines
        .next()
        .and_then(|l| l.strip_prefix("handoff="))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        !listed.split(',').any(|f| f == format!("{job}.0.json")),
        "the plugin wrote a decision for a step without a container: {listed}"
    );
    let tag = format!("[{job}.0] hpcc");
    assert!(
        !slurmd_log().contains(&tag),
        "the plugin acted on a step without a container"
    );
}

/// What one program read of the image in a traced Slurm step.
#[derive(Debug, Default, PartialEq, Eq)]
struct ImageIo {
    opens: usize,
    reads: usize,
    read_bytes: u64,
    getdents: usize,
    writes: usize,
}

/// Counts the image's I/O in one per-process strace file (`strace -ff -y`):
/// opens and directory reads of paths in `rootfs`, reads and their bytes
/// on file descriptors there, and anything that writes there.
fn image_io(trace: &str, rootfs: &str) -> ImageIo {
    let mut io = ImageIo::default();
    for call in trace.lines().filter(|l| l.contains(rootfs)) {
        let name = call.split('(').next().unwrap_or("");
        let result = || {
            call.rsplit_once(" = ")
                .and_then(|(_, r)| r.split(['<', ' ']).next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match name {
            "openat" | "openat2" | "open" => {
                io.opens += 1;
                if ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"]
                    .iter()
                    .any(|f| call.contains(f))
                {
                    io.writes += 1;
                }
            }
            "read" | "pread64" | "readv" | "preadv" => {
                io.reads += 1;
                io.read_bytes += result();
            }
            "getdents64" => io.getdents += 1,
            "write" | "pwrite64" | "writev" | "mkdir" | "mkdirat" | "unlinkat" | "renameat2"
            | "symlinkat" | "linkat" | "fchmodat" | "fchownat" | "utimensat" | "ftruncate" => {
                io.writes += 1
            }
            _ => {}
        }
    }
    io
}

/// The image I/O of an `mpi_replace` step through the SPANK path (issue
/// 19, item 3): strace attached to slurmd (every thread, following forks,
/// one file per process) while one `srun --container` step runs. The
/// plugin decides in slurmstepd (slurmd forks and executes it); slurmstepd
/// then runs the spy, which runs `hpcc-runtime --hpcc-slurm`, which
/// decides again on the spooled config and executes runc. Each process's
/// lines are given to the program it was executing: slurmstepd's are the
/// plugin's, `hpcc-runtime`'s up to its `execve` of runc are the
/// runtime's. Both plan through the same bounded snapshot as the runtime
/// and hook rows of `image_io.rs` (BENCHMARKS.md, "Image I/O per launch").
#[test]
fn an_mpi_steps_image_io_is_bounded_in_the_plugin_and_the_runtime() {
    require("strace");
    let (b, _) = bundle(
        "io",
        "mpich-app",
        &[
            (CPU, "x86_64"),
            ("org.supercontainers.mpi.implementation", "mpich"),
            ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
        ],
    );
    let pid = std::fs::read_to_string("/tmp/slurm/slurmd.pid").expect("slurmd's pid file");
    let pid = pid.trim();
    let dir = b.dir.with_extension("strace");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut strace = Command::new("strace");
    strace.args([
        "-f",
        "-ff",
        "-y",
        "-e",
        "trace=execve,open,openat,openat2,read,pread64,readv,preadv,getdents64,write,pwrite64,writev,mkdir,mkdirat,unlinkat,renameat2,symlinkat,linkat,fchmodat,fchownat,utimensat,ftruncate",
        "-o",
    ]);
    strace.arg(dir.join("t"));
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        strace.arg("-p").arg(task.unwrap().file_name());
    }
    let mut tracer = strace
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Attached once strace says so for slurmd's threads.
    {
        use std::io::BufRead;
        let mut err = std::io::BufReader::new(tracer.stderr.take().unwrap());
        let mut line = String::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            line.clear();
            if err.read_line(&mut line).unwrap_or(0) == 0 || line.contains("attached") {
                break;
            }
        }
        assert!(line.contains("attached"), "strace did not attach: {line}");
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let container = format!("--container={}", b.dir.display());
    let out = srun(&[&container, "/usr/bin/mpi-version"]);
    // SAFETY: signalling the strace this test started, by its pid.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let _ = tracer.wait();
    let stdout = text(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("MPICH Version:") && !stdout.contains("stand-in"),
        "the step did not run the host MPICH: {stdout}"
    );
    let rootfs = b.rootfs().display().to_string();
    let (mut plugin, mut runtime) = (Vec::new(), Vec::new());
    for f in std::fs::read_dir(&dir).unwrap() {
        let t = std::fs::read_to_string(f.unwrap().path()).unwrap();
        // The program of each stretch of the process: what it executed last.
        let mut prog = String::new();
        let mut stretch = String::new();
        let mut flush = |prog: &str, stretch: &mut String| {
            if prog.ends_with("/slurmstepd\"") {
                plugin.push(image_io(stretch, &rootfs));
            } else if prog.ends_with("/hpcc-runtime\"") {
                runtime.push(image_io(stretch, &rootfs));
            }
            stretch.clear();
        };
        for l in t.lines() {
            if let Some(rest) = l.strip_prefix("execve(") {
                if l.contains(" = 0") {
                    flush(&prog, &mut stretch);
                    prog = rest.split(',').next().unwrap_or("").to_owned();
                }
                continue;
            }
            stretch.push_str(l);
            stretch.push('\n');
        }
        flush(&prog, &mut stretch);
    }
    let sum = |v: &[ImageIo]| {
        v.iter().fold(ImageIo::default(), |a, x| ImageIo {
            opens: a.opens + x.opens,
            reads: a.reads + x.reads,
            read_bytes: a.read_bytes + x.read_bytes,
            getdents: a.getdents + x.getdents,
            writes: a.writes + x.writes,
        })
    };
    let (p, r) = (sum(&plugin), sum(&runtime));
    eprintln!("SPANK plugin (slurmstepd): {p:?}\nhpcc-runtime --hpcc-slurm: {r:?}");
    assert!(
        !runtime.is_empty() && r.opens > 0,
        "hpcc-runtime was not traced: {runtime:?}"
    );
    assert!(
        p.opens > 0,
        "the plugin's reads of the image were not traced"
    );
    for (who, io) in [("plugin", &p), ("runtime", &r)] {
        assert!(io.opens <= 20, "{who}: {io:?}");
        assert!(io.read_bytes <= 64 << 10, "{who}: {io:?}");
        assert_eq!(io.writes, 0, "{who} wrote to the image: {io:?}");
    }
}
