//! Planning one launch (`launch::decide`: matcher, tweak planning, host and
//! image library inspection), the way every entry point pays it: once, in
//! a fresh process.
//!
//! ```text
//! cargo bench -p hpcc-common --bench plan_cost -- --bundle DIR --config POLICY.toml [--runs N]
//! ```
//!
//! Each sample is a fresh process (this binary re-run with `--once`) that
//! loads the policy and the fingerprint (not timed), then times one
//! `decide`. Two variants run interleaved, so drift hits both alike:
//! `no host cache` (`[cache] enabled = false`: every host library read and
//! the host linker cache parsed, as before the per-boot cache) and `host
//! cache` (the per-boot host library cache of `[cache] dir`, warmed once
//! first). Run as root: only root writes the cache. Prints min,
//! median and max per variant in ms, and a machine-readable line
//! `plan_cost VARIANT min median max` per variant for scripts.

use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::launch;
use hpcc_common::oci::{self, LaunchContext};
use hpcc_common::plan::UserRequest;
use hpcc_config::Policy;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn once(bundle: &Path, config: &Path, cached: bool) -> f64 {
    let mut policy = Policy::load(config).expect("policy");
    let node = NodeFingerprint::cached(&policy);
    let spec = oci::load_bundle_config(bundle).expect("bundle config");
    let ctx = LaunchContext::from_bundle(bundle, &spec);
    // `[cache] enabled = false` is how a site turns the host library cache
    // off (with the fingerprint cache, already read above).
    policy.cache.enabled = cached;
    let t0 = Instant::now();
    let plan = launch::decide(&ctx, &node, &policy, &UserRequest::default()).expect("decide");
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    assert!(
        plan.decision.allows_start(),
        "the bench image must start: {:?}",
        plan.decision
    );
    ms
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (v[0], med, v[n - 1])
}

fn main() {
    let mut bundle = None;
    let mut config = None;
    let mut runs = 30usize;
    let mut one: Option<bool> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bundle" => bundle = it.next().map(PathBuf::from),
            "--config" => config = it.next().map(PathBuf::from),
            "--runs" => runs = it.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "--once" => one = Some(it.next().as_deref() == Some("cache")),
            _ => {} // `--bench` from cargo
        }
    }
    let (Some(bundle), Some(config)) = (bundle, config) else {
        eprintln!("usage: plan_cost --bundle DIR --config POLICY.toml [--runs N]");
        std::process::exit(2);
    };
    if let Some(cached) = one {
        println!("{}", once(&bundle, &config, cached));
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let sample = |variant: &str| -> f64 {
        let out = Command::new(&exe)
            .args(["--bundle".as_ref(), bundle.as_os_str()])
            .args(["--config".as_ref(), config.as_os_str()])
            .args(["--once", variant])
            .output()
            .expect("spawn");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("ms")
    };
    // Warm-up: page cache, fingerprint cache, host library cache.
    sample("nocache");
    sample("cache");
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        cold.push(sample("nocache"));
        warm.push(sample("cache"));
    }
    println!(
        "planning {} ({runs} fresh processes per variant, interleaved)",
        bundle.display()
    );
    println!(
        "{:<16} {:>8} {:>8} {:>8}",
        "variant", "min ms", "med ms", "max ms"
    );
    for (name, key, v) in [
        ("no host cache", "nocache", &mut cold),
        ("host cache", "cache", &mut warm),
    ] {
        let (lo, med, hi) = stats(v);
        println!("{name:<16} {lo:>8.3} {med:>8.3} {hi:>8.3}");
        println!("plan_cost {key} {lo:.3} {med:.3} {hi:.3}");
    }
}
