//! What `hpcc-hook`'s decision costs as a process, outside any container:
//! read the policy, the OCI state and the bundle's config, take the node
//! fingerprint, match, and exit. Measured against spawning `/bin/true` (the
//! floor of any hook) in the same invocation, the cases interleaved round
//! by round.
//!
//! It does not measure a start: the state names no container pid and the
//! image asks for no tweak, so no apply helper runs, nothing is mounted and
//! no linker cache is written. What the hook adds to a real `runc run`,
//! helper, mounts and linker cache included, is row c and d of
//! `tests/bench/run-all.sh` (BENCHMARKS.md).
//!
//! `cargo bench -p hpcc-hook --bench hook_cost` prints a table: median and
//! p95 wall time per invocation, peak RSS, and the ratio to the baseline, for
//! the hook with a warm per-boot fingerprint cache (every start after the
//! first on a node) and with the cache disabled (every start fingerprints).
//!
//! The hook measured is the one that ships: `packaging/build-static-hook.sh`
//! (release profile) builds it into `target/static/` first (no dynamic
//! hpcc-hook can be built); `HPCC_HOOK=PATH` measures another one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const RUNS: usize = 60;

struct Sample {
    wall_ms: Vec<f64>,
    max_rss_kib: i64,
}

// The child is reaped by wait4 below, which also gives its peak RSS;
// std's wait() cannot report rusage.
#[allow(clippy::zombie_processes)]
fn run_once(cmd: &Path, args: &[&str], stdin: &[u8]) -> (f64, i64) {
    let start = Instant::now();
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_clear();
    let mut child = c.spawn().expect("spawn");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; status and ru are writable.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4");
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{} exited with {status}",
        cmd.display()
    );
    (ms, ru.ru_maxrss)
}

/// One case: a command, its arguments, its stdin.
struct Case<'a> {
    cmd: &'a Path,
    args: Vec<&'a str>,
    stdin: &'a [u8],
}

/// Runs every case once per round, round after round, so that the
/// machine's drift (a neighbour's build, frequency changes) hits all alike.
fn measure(cases: &[Case<'_>]) -> Vec<Sample> {
    for c in cases {
        run_once(c.cmd, &c.args, c.stdin); // warm-up (page cache, fingerprint cache)
    }
    let mut out: Vec<Sample> = cases
        .iter()
        .map(|_| Sample {
            wall_ms: Vec::with_capacity(RUNS),
            max_rss_kib: 0,
        })
        .collect();
    for _ in 0..RUNS {
        for (c, s) in cases.iter().zip(out.iter_mut()) {
            let (ms, rss) = run_once(c.cmd, &c.args, c.stdin);
            s.wall_ms.push(ms);
            s.max_rss_kib = s.max_rss_kib.max(rss);
        }
    }
    for s in &mut out {
        s.wall_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    out
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The static hook: `HPCC_HOOK`, else built by the packaging script.
fn static_hook() -> PathBuf {
    if let Some(p) = std::env::var_os("HPCC_HOOK") {
        return PathBuf::from(p);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("hook/ has a parent")
        .to_owned();
    let out = repo.join("target/static");
    let status = Command::new("bash")
        .arg(repo.join("packaging/build-static-hook.sh"))
        .arg(&out)
        .status()
        .expect("packaging/build-static-hook.sh runs");
    assert!(status.success(), "packaging/build-static-hook.sh failed");
    out.join("hpcc-hook")
}

fn main() {
    let hook = static_hook();
    let dir = std::env::temp_dir().join(format!("hpcc-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
            "process":{"user":{"uid":0,"gid":0},"cwd":"/","args":["/bin/sh"]},
            "annotations":{"org.supercontainers.hardware.cpu.optimized.version":"x86_64",
                           "org.supercontainers.mpi.implementation":"mpich"}}"#,
    )
    .unwrap();
    let warm = dir.join("warm.toml");
    std::fs::write(
        &warm,
        format!("[cache]\ndir = \"{}\"\n", dir.join("cache").display()),
    )
    .unwrap();
    let cold = dir.join("cold.toml");
    std::fs::write(&cold, "[cache]\nenabled = false\n").unwrap();
    // No pid, no tweak: the hook decides and has nothing to apply.
    let state = format!(
        r#"{{"ociVersion":"1.0.2","id":"bench","status":"creating","bundle":"{}"}}"#,
        dir.display()
    );

    // The hook takes its policy from its arguments only (never from the
    // environment, which a createContainer hook gets from the image).
    let warm_arg = format!("--config={}", warm.display());
    let cold_arg = format!("--config={}", cold.display());
    let mut samples = measure(&[
        Case {
            cmd: Path::new("/bin/true"),
            args: vec![],
            stdin: b"",
        },
        Case {
            cmd: &hook,
            args: vec!["prestart", &warm_arg],
            stdin: state.as_bytes(),
        },
        Case {
            cmd: &hook,
            args: vec!["prestart", &cold_arg],
            stdin: state.as_bytes(),
        },
    ])
    .into_iter();
    let (baseline, warm_s, cold_s) = (
        samples.next().unwrap(),
        samples.next().unwrap(),
        samples.next().unwrap(),
    );
    let cache_written = dir.join("cache/fingerprint.json").exists();

    println!(
        "hpcc-hook decision as a process, no container, no tweak applied ({RUNS} rounds, cases interleaved)"
    );
    println!(
        "{:<38} {:>10} {:>10} {:>12} {:>14}",
        "case", "median ms", "p95 ms", "max RSS KiB", "x baseline"
    );
    let base = pct(&baseline.wall_ms, 0.5);
    for (name, s) in [
        ("baseline: spawn /bin/true", &baseline),
        ("hpcc-hook, warm fingerprint cache", &warm_s),
        ("hpcc-hook, no cache (fingerprints)", &cold_s),
    ] {
        let med = pct(&s.wall_ms, 0.5);
        println!(
            "{:<38} {:>10.2} {:>10.2} {:>12} {:>14.1}",
            name,
            med,
            pct(&s.wall_ms, 0.95),
            s.max_rss_kib,
            med / base
        );
    }
    if !cache_written {
        println!("note: the cache was not written (run as root to measure the warm path)");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
