//! The real path, without a container: the installed hook gets the OCI
//! state of a scratch bundle whose image is built for this very node (it
//! must start) and one built for another platform (it must be refused).
//! No pid is given and the images ask for no tweak, so nothing is mounted;
//! the bundle is removed afterwards.

use super::engines::HookFile;
use super::{is_executable, Finding, Layout};
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_config::{Enforcement, Policy};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHECK: &str = "dry-run";
const CPU_KEY: &str = "org.supercontainers.hardware.cpu.optimized.version";
/// As the shipped hooks.d file's `timeout`.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What one hook run gave.
#[derive(Debug)]
struct HookRun {
    code: Option<i32>,
    stderr: String,
}

fn scratch_bundle(tag: &str, target: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    // Unique per call: two checks in one process (the tests) must not share it.
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("hpcc-doctor-{}-{n}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    std::fs::create_dir(dir.join("rootfs"))?;
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": true},
        "process": {"user": {"uid": 0, "gid": 0}, "cwd": "/", "args": ["/bin/true"], "env": []},
        "annotations": {CPU_KEY: target},
    });
    std::fs::write(dir.join("config.json"), config.to_string())?;
    Ok(dir)
}

fn run_hook(
    hook: &Path,
    config: &Path,
    id: &str,
    bundle: &Path,
    target: &str,
) -> std::io::Result<HookRun> {
    let state = serde_json::json!({
        "ociVersion": "1.0.2",
        "id": id,
        "status": "creating",
        "bundle": bundle,
        "annotations": {CPU_KEY: target},
    });
    let mut child = Command::new(hook)
        .arg("prestart")
        .arg(format!("--config={}", config.display()))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(state.to_string().as_bytes());
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.take(64 << 10).read_to_string(&mut stderr);
    }
    Ok(HookRun {
        code: status.and_then(|s| s.code()),
        stderr: stderr.trim().to_owned(),
    })
}

/// A CPU target of another platform: refused on this node whatever its
/// microarchitecture.
fn foreign_target(platform: &str) -> &'static str {
    if platform == "aarch64" {
        "x86_64_v2"
    } else {
        "a64fx"
    }
}

/// Records the findings.
pub fn check(layout: &Layout, policy: Option<&Policy>, files: &[HookFile], out: &mut Vec<Finding>) {
    let (hook, config) = match files.first() {
        Some(f) => (
            f.hook.clone(),
            f.config
                .clone()
                .unwrap_or_else(|| PathBuf::from(hpcc_config::DEFAULT_PATH)),
        ),
        None => (layout.hook.clone(), layout.policy.clone()),
    };
    if !is_executable(&hook) {
        out.push(Finding::fail(
            CHECK,
            format!(
                "{} is not installed: no engine can run hpcc",
                hook.display()
            ),
            "install the hpcc package, or give the hook's path with --hook PATH",
        ));
        return;
    }
    let Some(policy) = policy else {
        out.push(Finding::skip(
            CHECK,
            "not run: the policy does not load (see above)",
        ));
        return;
    };
    let node = NodeFingerprint::cached(policy);
    let good = node.cpu.microarchitecture.clone();
    let bad = foreign_target(&node.cpu.platform);
    let via = format!("{} --config={}", hook.display(), config.display());
    for (tag, target) in [("good", good.as_str()), ("bad", bad)] {
        let id = format!("hpcc-doctor-{tag}");
        let res = scratch_bundle(tag, target).and_then(|b| {
            let r = run_hook(&hook, &config, &id, &b, target);
            let _ = std::fs::remove_dir_all(&b);
            r
        });
        let run = match res {
            Ok(r) => r,
            Err(e) => {
                out.push(Finding::fail(
                    CHECK,
                    format!("cannot run {}: {e}", hook.display()),
                    "check that the hook is executable and that the temporary directory is writable",
                ));
                continue;
            }
        };
        let said = if run.stderr.is_empty() {
            String::new()
        } else {
            format!(": {}", run.stderr.lines().last().unwrap_or_default())
        };
        let finding = match (tag, run.code) {
            ("good", Some(0)) => Finding::ok(
                CHECK,
                format!("an image built for this node ({target}) starts through {via}"),
            ),
            ("good", code) => Finding::fail(
                CHECK,
                format!("an image built for this node ({target}) was not let through (exit {code:?}){said}"),
                "read the message above; `journalctl -t hpcc-hook` shows the whole decision (policy [log] level = \"debug\" for more)",
            ),
            (_, Some(3)) => Finding::ok(
                CHECK,
                format!("an image built for another platform ({target}) is refused with a reason"),
            ),
            (_, Some(0)) if policy.checks.cpu != Enforcement::Enforce => Finding::warn(
                CHECK,
                format!(
                    "an image built for another platform ({target}) would start: the policy has checks.cpu = \"{}\"",
                    policy.checks.cpu
                ),
                "set checks.cpu = \"enforce\" unless the site wants images to die with SIGILL",
            ),
            (_, code) => Finding::fail(
                CHECK,
                format!("an image built for another platform ({target}) was not refused by policy (exit {code:?}, expected 3){said}"),
                "read the message above; exit 4 is hpcc's own failure (on_error = \"refuse\")",
            ),
        };
        out.push(finding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bad_image_is_for_another_platform() {
        assert_eq!(foreign_target("x86_64"), "a64fx");
        assert_eq!(foreign_target("aarch64"), "x86_64_v2");
    }

    #[test]
    fn the_scratch_bundle_is_a_bundle_the_core_reads() {
        let b = scratch_bundle("unit", "x86_64").unwrap();
        let spec = hpcc_common::oci::load_bundle_config(&b).unwrap();
        let ctx = hpcc_common::oci::LaunchContext::from_bundle(&b, &spec);
        assert_eq!(ctx.annotations[CPU_KEY], "x86_64");
        let _ = std::fs::remove_dir_all(&b);
    }
}
