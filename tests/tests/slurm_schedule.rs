//! Placement before allocation on the two-node rig (`tests/setup/slurm2.sh`,
//! issue 20): the shipped `cli_filter.lua` (`SLURM2_CLI_FILTER`, only the
//! path of `hpcc` changed to this build's) and the shipped
//! `hpcc-node-features` run in each node's mount namespace, as the boot unit
//! runs it. n2 looks older than n1 (`slurm2::older_cpuinfo`: the features of
//! the highest generic level this machine runs are taken out of its
//! `/proc/cpuinfo`), and n2 is made Slurm's preferred node (`Weight=1`
//! against 100), so that a job only lands on n1 when something steers it
//! there: the control job in `an_image_of_the_highest_level_always_lands_on_n1`
//! lands on n2.
//!
//! The jobs run plain runc (no hpcc on the nodes): what is tested is where
//! Slurm puts them and what sbatch refuses. Every command is bounded; the
//! rig is stopped at exit. They fail, never skip, when Slurm, runc or root
//! are missing.

use hpcc_e2e::slurm2::{self, serial, Knobs};
use hpcc_e2e::{bin, fixture_rootfs, node_cpu, repo_root, require, require_root, work_dir, Bundle};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const CPU: &str = "org.supercontainers.hardware.cpu.optimized.version";
/// Bound on one sbatch or scontrol call.
const CALL_BOUND: Duration = Duration::from_secs(30);
/// Where the nodes' saved fingerprints go (removed with the rig).
const FLEET: &str = "/tmp/hpcc-slurm2/fleet";
/// A feature the admin gave n2 alone, that publishing must keep.
const SITE_FEATURE: &str = "site.old";

struct Env {
    dir: PathBuf,
    policy: PathBuf,
    level: String,
}

extern "C" fn stop_rig() {
    slurm2::stop_keeping_logs("slurm-schedule");
}

fn env() -> &'static Env {
    static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
    match ENV.get_or_init(setup) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    }
}

fn setup() -> Result<Env, String> {
    require_root();
    for t in [
        "sbatch",
        "squeue",
        "scontrol",
        "sinfo",
        "slurmctld",
        "slurmd",
        "runc",
    ] {
        require(t);
    }
    let dir = work_dir().join("slurm-schedule");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (level, _) = slurm2::n2_masked_level();
    let hpcc = bin("hpcc");
    // The shipped filter, with this build's hpcc.
    let lua = std::fs::read_to_string(repo_root().join("packaging/slurm/cli_filter.lua")).unwrap();
    let shipped = "local HPCC = \"/usr/bin/hpcc\"";
    assert!(
        lua.contains(shipped),
        "cli_filter.lua no longer has {shipped}"
    );
    let lua_path = dir.join("cli_filter.lua");
    std::fs::write(
        &lua_path,
        lua.replace(shipped, &format!("local HPCC = \"{}\"", hpcc.display())),
    )
    .unwrap();
    let policy = dir.join("hook.toml");
    // No sinfo cache: the tests change what nodes publish between submissions.
    std::fs::write(
        &policy,
        format!("[scheduling]\nfleet = \"{FLEET}\"\nsinfo_cache_s = 0\n"),
    )
    .unwrap();
    let cpuinfo = dir.join("cpuinfo-older");
    std::fs::write(&cpuinfo, slurm2::older_cpuinfo()).unwrap();
    let knobs = Knobs {
        n2_cpuinfo: Some(cpuinfo),
        cli_filter: Some(lua_path),
        ..Knobs::default()
    };
    match slurm2::start(&knobs) {
        Ok(()) => {}
        Err(e) if e.contains("could not take") => return Err(e),
        Err(e) => {
            stop_rig();
            return Err(e);
        }
    }
    // SAFETY: registering a plain extern "C" fn.
    unsafe { libc::atexit(stop_rig) };
    std::fs::create_dir_all(FLEET).unwrap();
    // The admin's own feature on n2, and n2 preferred by Slurm.
    scontrol(&[
        "update",
        "NodeName=n2",
        &format!("AvailableFeatures={SITE_FEATURE}"),
        &format!("ActiveFeatures={SITE_FEATURE}"),
        "Weight=1",
    ]);
    scontrol(&["update", "NodeName=n1", "Weight=100"]);
    // Published as the boot unit does, in each node's own view of the CPU.
    let script = repo_root().join("packaging/slurm/hpcc-node-features");
    for node in slurm2::NODES {
        slurm2::in_node(
            node,
            &format!(
                "HPCC='{}' HPCC_CONFIG='{}' HPCC_NODE_NAME={node} HPCC_FLEET_DIR={FLEET} SLURM_CONF={} sh '{}'",
                hpcc.display(),
                policy.display(),
                slurm2::CONF,
                script.display()
            ),
        )?;
    }
    Ok(Env { dir, policy, level })
}

fn run(cmd: &mut Command, what: &str) -> (Output, Duration) {
    cmd.env("SLURM_CONF", slurm2::CONF).current_dir("/tmp");
    let (out, took) = slurm2::bounded(cmd, CALL_BOUND);
    eprintln!(
        "$ {what}\nexit: {:?} after {:.3} s\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        took.as_secs_f64(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, took)
}

fn scontrol(args: &[&str]) -> String {
    let (out, _) = run(Command::new("scontrol").args(args), &args.join(" "));
    assert!(out.status.success(), "scontrol {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What node `node` publishes.
fn published(node: &str) -> Vec<String> {
    let (out, _) = run(
        Command::new("sinfo").args(["-h", "-n", node, "-o", "%f"]),
        "sinfo -o %f",
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(',')
        .map(str::to_owned)
        .collect()
}

fn bundle(name: &str, target: &str) -> Bundle {
    let mut b = Bundle::new(&format!("sched-{name}"), &fixture_rootfs("busybox"));
    b.annotate(CPU, target);
    b.write();
    b
}

/// `sbatch --parsable ARGS --container=B --wrap 'echo batch-ok'` with the
/// test policy; the job id when it was accepted.
fn sbatch(b: &Bundle, args: &[&str], policy: &PathBuf) -> (Option<u32>, String, Duration) {
    let out_file = env().dir.join("job-%j.out");
    let mut cmd = Command::new("sbatch");
    cmd.arg("--parsable")
        .args(args)
        .arg(format!("--container={}", b.dir.display()))
        .arg(format!("--output={}", out_file.display()))
        .args(["--wrap", "echo batch-ok"])
        .env("HPCC_CONFIG", policy);
    let (out, took) = run(&mut cmd, &format!("sbatch {args:?} --container=..."));
    let id = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    (
        id.filter(|_| out.status.success()),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
    )
}

/// The job's record once it has ended (bounded).
fn finished(id: u32) -> String {
    let t0 = Instant::now();
    loop {
        let (out, _) = run(
            Command::new("scontrol").args(["-o", "show", "job", &id.to_string()]),
            "scontrol show job",
        );
        let rec = String::from_utf8_lossy(&out.stdout).into_owned();
        if ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"]
            .iter()
            .any(|s| rec.contains(&format!("JobState={s} ")))
        {
            return rec;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "job {id} did not end within 90 s: {rec}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn field<'a>(rec: &'a str, key: &str) -> &'a str {
    rec.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
}

/// No job of this rig is queued or running.
fn queue_empty() -> bool {
    let (out, _) = run(Command::new("squeue").arg("-h"), "squeue -h");
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn nodes_publish_their_features_and_keep_the_admins() {
    let _g = serial();
    let e = env();
    let (n1, n2) = (published("n1"), published("n2"));
    let want = format!("hpcc.cpu.{}", e.level);
    assert!(n1.contains(&want), "n1 must publish {want}: {n1:?}");
    assert!(!n2.contains(&want), "n2 is masked below {want}: {n2:?}");
    assert!(n2.contains(&"hpcc.cpu.x86_64".to_owned()), "{n2:?}");
    assert!(
        n2.contains(&SITE_FEATURE.to_owned()),
        "the admin's feature was dropped: {n2:?}"
    );
    for n in ["n1", "n2"] {
        assert!(
            PathBuf::from(FLEET).join(format!("{n}.json")).is_file(),
            "{n}'s fingerprint is not in the fleet"
        );
    }
}

#[test]
fn an_image_of_the_highest_level_always_lands_on_n1() {
    let _g = serial();
    let e = env();
    // Control: an image every node runs goes where Slurm prefers (n2), so
    // n1 below is the constraint's doing.
    let any = bundle("x86-64", "x86_64");
    let (id, err, _) = sbatch(&any, &["-N1"], &e.policy);
    let id = id.unwrap_or_else(|| panic!("the x86_64 image was refused: {err}"));
    let rec = finished(id);
    assert_eq!(field(&rec, "NodeList"), "n2", "{rec}");
    assert_eq!(field(&rec, "Features"), "hpcc.cpu.x86_64", "{rec}");
    assert_eq!(field(&rec, "JobState"), "COMPLETED", "{rec}");
    // Both nodes are allowed to it.
    let (id, err, _) = sbatch(&any, &["-N2"], &e.policy);
    let rec = finished(id.unwrap_or_else(|| panic!("-N2 refused: {err}")));
    assert_eq!(field(&rec, "NodeList"), "n[1-2]", "{rec}");

    let top = bundle("top", &e.level);
    let mut ids = Vec::new();
    let mut took = Vec::new();
    for _ in 0..10 {
        let (id, err, t) = sbatch(&top, &["-N1"], &e.policy);
        ids.push(id.unwrap_or_else(|| panic!("the {} image was refused: {err}", e.level)));
        took.push(t);
    }
    for id in ids {
        let rec = finished(id);
        assert_eq!(field(&rec, "NodeList"), "n1", "job {id}: {rec}");
        assert_eq!(
            field(&rec, "Features"),
            format!("hpcc.cpu.{}", e.level),
            "{rec}"
        );
        assert_eq!(field(&rec, "JobState"), "COMPLETED", "{rec}");
        let out = std::fs::read_to_string(e.dir.join(format!("job-{id}.out"))).unwrap_or_default();
        assert!(out.contains("batch-ok"), "job {id} output: {out}");
    }
    // The cost the filter adds: the same sbatch without --container runs
    // the filter too, which returns at once.
    let mut bare = Vec::new();
    for _ in 0..5 {
        let mut cmd = Command::new("sbatch");
        cmd.args(["--parsable", "-N1", "--output=/dev/null", "--wrap", "true"])
            .env("HPCC_CONFIG", &e.policy);
        let (out, t) = run(&mut cmd, "sbatch without --container");
        assert!(out.status.success());
        bare.push(t);
        // Nothing of this test may be left queued for the next one.
        finished(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap());
    }
    eprintln!(
        "sbatch median: {:.1} ms with --container (hpcc match --submit, debug build), {:.1} ms without",
        median(took).as_secs_f64() * 1e3,
        median(bare).as_secs_f64() * 1e3
    );
}

#[test]
fn a_foreign_image_is_refused_at_sbatch_and_nothing_queues() {
    let _g = serial();
    let e = env();
    let foreign = node_cpu::foreign_target();
    let b = bundle("foreign", foreign);
    let (id, err, _) = sbatch(&b, &["-N1"], &e.policy);
    assert!(id.is_none(), "a {foreign} image was queued as job {id:?}");
    let line = err
        .lines()
        .find(|l| l.contains("hpcc: refused"))
        .unwrap_or_else(|| panic!("no refusal line: {err}"));
    for want in [
        &format!("image \"{}\"", b.dir.display()),
        "partition \"all\"",
        foreign,
        "n1",
        "n2",
    ] {
        assert!(line.contains(want), "{want:?} missing from: {line}");
    }
    assert!(queue_empty(), "a job is queued after the refusal");
}

#[test]
fn a_user_constraint_is_combined_and_a_contradicting_one_refused() {
    let _g = serial();
    let e = env();
    let top = bundle("top-user", &e.level);
    let need = format!("hpcc.cpu.{}", e.level);
    // The user's constraint only names n2: refused, saying so.
    let (id, err, _) = sbatch(
        &top,
        &["-N1", &format!("--constraint={SITE_FEATURE}")],
        &e.policy,
    );
    assert!(id.is_none(), "queued as {id:?}");
    let line = err
        .lines()
        .find(|l| l.contains("hpcc: refused"))
        .unwrap_or_else(|| panic!("no refusal line: {err}"));
    for want in [
        format!("\"{need}\""),
        format!("\"{SITE_FEATURE}\""),
        "(n1)".to_owned(),
    ] {
        assert!(line.contains(&want), "{want:?} missing from: {line}");
    }
    assert!(queue_empty());
    // One both can meet: kept, and combined with hpcc's.
    let user = format!("{SITE_FEATURE}|hpcc.cpu.x86_64");
    let (id, err, _) = sbatch(&top, &["-N1", &format!("--constraint={user}")], &e.policy);
    let rec = finished(id.unwrap_or_else(|| panic!("refused: {err}")));
    assert_eq!(
        field(&rec, "Features"),
        format!("({user})&({need})"),
        "{rec}"
    );
    assert_eq!(field(&rec, "NodeList"), "n1", "{rec}");
}

#[test]
fn warn_submits_unchanged_and_off_is_silent() {
    let _g = serial();
    let e = env();
    let b = bundle("foreign-warn", node_cpu::foreign_target());
    for (mode, says) in [("warn", true), ("off", false)] {
        let policy = e.dir.join(format!("hook-{mode}.toml"));
        std::fs::write(
            &policy,
            format!("[scheduling]\nsubmit = \"{mode}\"\nfleet = \"{FLEET}\"\nsinfo_cache_s = 0\n"),
        )
        .unwrap();
        let (id, err, _) = sbatch(&b, &["-N1", "--hold"], &policy);
        let id = id.unwrap_or_else(|| panic!("{mode}: refused: {err}"));
        assert_eq!(err.contains("hpcc: warning"), says, "{mode}: {err}");
        let rec = scontrol(&["-o", "show", "job", &id.to_string()]);
        assert_eq!(field(&rec, "Features"), "(null)", "{mode}: {rec}");
        scontrol(&["release", &id.to_string()]);
        let rec = finished(id);
        assert!(rec.contains("JobState="), "{rec}");
    }
}

/// `hpcc doctor`'s node-features findings on `node`, run in its namespace.
fn doctor_features(node: &str) -> Vec<(String, String)> {
    let e = env();
    let out = slurm2::in_node(
        node,
        &format!(
            "HPCC_CONFIG='{}' HPCC_NODE_NAME={node} SLURM_CONF={} '{}' doctor --no-dry-run --json || true",
            e.policy.display(),
            slurm2::CONF,
            bin("hpcc").display()
        ),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "node-features")
        .map(|f| {
            (
                f["status"].as_str().unwrap_or("").to_owned(),
                f["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn doctor_says_when_published_features_disagree_with_the_fingerprint() {
    let _g = serial();
    let e = env();
    let f = doctor_features("n2");
    assert!(
        !f.is_empty() && f.iter().all(|(s, _)| s == "ok"),
        "as published: {f:?}"
    );
    // n2 claims the level it is masked below, and loses x86_64_v2.
    let wrong = format!("{SITE_FEATURE},hpcc.cpu.x86_64,hpcc.cpu.{}", e.level);
    scontrol(&[
        "update",
        "NodeName=n2",
        &format!("AvailableFeatures={wrong}"),
        &format!("ActiveFeatures={wrong}"),
    ]);
    let f = doctor_features("n2");
    let bad = f
        .iter()
        .find(|(s, _)| s == "fail")
        .unwrap_or_else(|| panic!("no failure: {f:?}"));
    assert!(
        bad.1.contains("missing hpcc.cpu.x86_64_v2")
            && bad
                .1
                .contains(&format!("not true any more hpcc.cpu.{}", e.level)),
        "{bad:?}"
    );
    // Published again as the boot unit does: healthy.
    slurm2::in_node(
        "n2",
        &format!(
            "HPCC='{}' HPCC_CONFIG='{}' HPCC_NODE_NAME=n2 HPCC_FLEET_DIR={FLEET} SLURM_CONF={} sh '{}'",
            bin("hpcc").display(),
            e.policy.display(),
            slurm2::CONF,
            repo_root().join("packaging/slurm/hpcc-node-features").display()
        ),
    )
    .unwrap();
    let f = doctor_features("n2");
    assert!(f.iter().all(|(s, _)| s == "ok"), "{f:?}");
    assert!(published("n2").contains(&SITE_FEATURE.to_owned()));
}

#[test]
fn srun_is_placed_and_refused_the_same() {
    let _g = serial();
    let e = env();
    let srun = |b: &Bundle| {
        let mut cmd = Command::new("srun");
        cmd.args(["-N1", "-t", "1"])
            .arg(format!("--container={}", b.dir.display()))
            .args(["/bin/sh", "-c", "echo srun-ok"])
            .env("HPCC_CONFIG", &e.policy);
        run(&mut cmd, "srun -N1 --container=...")
    };
    let top = bundle("top-srun", &e.level);
    let (out, _) = srun(&top);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("srun-ok"));
    // srun made its own job: the newest one.
    let all = scontrol(&["-o", "show", "job"]);
    let rec = all
        .lines()
        .max_by_key(|l| field(l, "JobId").parse::<u32>().unwrap_or(0))
        .unwrap_or("");
    assert_eq!(field(rec, "NodeList"), "n1", "{rec}");
    assert_eq!(
        field(rec, "Features"),
        format!("hpcc.cpu.{}", e.level),
        "{rec}"
    );
    let foreign = bundle("foreign-srun", node_cpu::foreign_target());
    let (out, _) = srun(&foreign);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("hpcc: refused") && err.contains(node_cpu::foreign_target()),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("srun-ok"));
    assert!(queue_empty());
    // A container step inside a batch job: the nodes are chosen, the filter
    // stands aside (and does not break the step).
    let out_file = e.dir.join("inner-%j.out");
    let mut cmd = Command::new("sbatch");
    cmd.args(["--parsable", "-N1"])
        .arg(format!("--output={}", out_file.display()))
        .arg("--wrap")
        .arg(format!(
            "srun --container={} /bin/sh -c 'echo inner-ok'",
            top.dir.display()
        ))
        .env("HPCC_CONFIG", &e.policy);
    let (out, _) = run(&mut cmd, "sbatch --wrap 'srun --container=...'");
    let id: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let rec = finished(id);
    let text = std::fs::read_to_string(e.dir.join(format!("inner-{id}.out"))).unwrap_or_default();
    assert!(text.contains("inner-ok"), "{rec}\n{text}");
}
