//! The decision for one `--container` step on one node, with the same core
//! as `hpcc-hook`: bundle config (read as the job user) + node fingerprint
//! (per-boot cache) + policy + the user's request -> start or refuse.

use crate::userfile::{self, Identity};
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::launch;
use hpcc_common::oci::{self, LaunchContext};
use hpcc_common::plan::{Decision, Plan, UserRequest};
use hpcc_config::{OnError, Policy};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long reading the user's `config.json` may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the plugin does with the step.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Let it start; the container's tweaks come from `hpcc-hook`.
    Start {
        /// The plan (score, warnings, tweaks).
        plan: Box<Plan>,
        /// The policy with the user's request applied, for the wrapper.
        effective: Box<Policy>,
    },
    /// hpcc failed and `on_error = "allow"`: start unchecked.
    StartUnchecked {
        /// Why hpcc could not decide.
        error: String,
    },
    /// Do not start: the one line for the user (and the admin's log).
    Refuse {
        /// `hpcc: refused to start container ...`.
        line: String,
    },
}

/// One decision and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// The outcome.
    pub outcome: Outcome,
    /// Wall time of the whole decision.
    pub elapsed: Duration,
}

/// Inputs of one decision.
#[derive(Debug, Clone)]
pub struct StepInput<'a> {
    /// The bundle named by `--container` (the user's path).
    pub bundle: &'a Path,
    /// The job user.
    pub user: &'a Identity,
    /// The policy file.
    pub policy_path: &'a Path,
    /// The user's request.
    pub request: UserRequest,
}

/// Decides one step. Never panics on bad input; every failure becomes a
/// refusal or an unchecked start as `on_error` says.
pub fn decide(input: &StepInput<'_>) -> Decided {
    let t0 = Instant::now();
    let outcome = decide_inner(input);
    Decided {
        outcome,
        elapsed: t0.elapsed(),
    }
}

fn decide_inner(input: &StepInput<'_>) -> Outcome {
    let bundle = input.bundle.display();
    let policy = match Policy::load(input.policy_path) {
        Ok(p) => p,
        // Without a policy on_error is unknown: fail closed.
        Err(e) => {
            return Outcome::Refuse {
                line: format!("hpcc: refused to start container {bundle}: {e}"),
            }
        }
    };
    let failed = |what: String| {
        match policy.on_error {
        OnError::Refuse => Outcome::Refuse {
            line: format!(
                "hpcc: refused to start container {bundle}: {what} (policy on_error = \"refuse\" in {})",
                input.policy_path.display()
            ),
        },
        OnError::Allow => Outcome::StartUnchecked { error: what },
    }
    };
    let config_path = input.bundle.join("config.json");
    let bytes = match userfile::read_as(
        input.user,
        &config_path,
        oci::MAX_CONFIG_BYTES,
        READ_TIMEOUT,
    ) {
        Ok(b) => b,
        Err(e) => return failed(e.to_string()),
    };
    let spec = match oci::read_config(&bytes[..], &config_path.display().to_string()) {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    let mut ctx = LaunchContext::from_bundle(input.bundle, &spec);
    // The user knows the step by the bundle they named.
    ctx.id = bundle.to_string();
    let node = NodeFingerprint::cached(&policy);
    // The tweak planner opens the image's rootfs (root.path, the user's
    // choice): it does so with the job user's file system rights, so a
    // root-only image cannot be inspected through the plugin either.
    let plan = match FsIdentity::enter(input.user)
        .run(|| launch::plan(&ctx, &node, &policy, &input.request))
    {
        Ok(p) => p,
        Err(e) => return failed(e.to_string()),
    };
    if let Some(line) = plan.refusal_line(input.policy_path) {
        return Outcome::Refuse { line };
    }
    Outcome::Start {
        effective: Box::new(crate::handoff::effective_policy(&policy, &input.request)),
        plan: Box::new(plan),
    }
}

/// The job user's fsuid/fsgid on this thread for a scope (root only; a
/// no-op otherwise). setfsuid is per thread and changes nothing but file
/// access checks, which is all the planner needs; the previous ids come
/// back on drop, also when the closure panics.
struct FsIdentity(Option<(u32, u32)>);

impl FsIdentity {
    fn enter(who: &Identity) -> FsIdentity {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || who.uid == 0 {
            return FsIdentity(None);
        }
        // SAFETY: setfsgid/setfsuid return the previous id and only affect
        // this thread's file access checks.
        let (old_gid, old_uid) = unsafe { (libc::setfsgid(who.gid), libc::setfsuid(who.uid)) };
        FsIdentity(Some((old_uid as u32, old_gid as u32)))
    }

    fn run<T>(self, f: impl FnOnce() -> T) -> T {
        let out = f();
        drop(self);
        out
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.0 {
            // SAFETY: see enter.
            unsafe {
                libc::setfsuid(uid);
                libc::setfsgid(gid);
            }
        }
    }
}

/// The lines logged for an outcome: what the admin reads in slurmd's log.
pub fn summary(outcome: &Outcome, elapsed: Duration) -> String {
    let ms = elapsed.as_secs_f64() * 1e3;
    match outcome {
        Outcome::Start { plan, .. } => {
            let warnings = match &plan.decision {
                Decision::Start { warnings } if !warnings.is_empty() => {
                    format!("; warnings: {}", warnings.join("; "))
                }
                _ => String::new(),
            };
            format!(
                "hpcc: container {} may start on {} (score {}, {} mount(s), {} device(s) planned; decided in {ms:.2} ms){warnings}",
                plan.container,
                plan.node,
                plan.verdict.score.as_str(),
                plan.tweaks.mounts.len(),
                plan.tweaks.devices.len(),
            )
        }
        Outcome::StartUnchecked { error } => format!(
            "hpcc: could not check the container, starting it unchecked (policy on_error = \"allow\"): {error}"
        ),
        Outcome::Refuse { line } => line.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Fixture {
        dir: PathBuf,
    }

    impl Fixture {
        fn new(name: &str, policy_extra: &str) -> Fixture {
            let dir = std::env::temp_dir().join(format!("hpcc-step-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("bundle/rootfs")).unwrap();
            std::fs::write(
                dir.join("hook.toml"),
                format!("{policy_extra}\n[cache]\nenabled = false\n[log]\njournald = false\n"),
            )
            .unwrap();
            Fixture { dir }
        }

        fn config(&self, annotations: &str) {
            std::fs::write(
                self.dir.join("bundle/config.json"),
                format!(
                    r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"process":{{"cwd":"/","args":["sh"],"user":{{"uid":0,"gid":0}}}},"annotations":{{{annotations}}}}}"#
                ),
            )
            .unwrap();
        }

        fn decide(&self, request: UserRequest) -> Outcome {
            let me = unsafe {
                Identity {
                    uid: libc::geteuid(),
                    gid: libc::getegid(),
                    groups: vec![],
                }
            };
            let bundle = self.dir.join("bundle");
            let policy = self.dir.join("hook.toml");
            decide(&StepInput {
                bundle: &bundle,
                user: &me,
                policy_path: &policy,
                request,
            })
            .outcome
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    const FOREIGN_CPU: &str = r#""org.supercontainers.hardware.cpu.optimized.version":"a64fx""#;

    #[test]
    fn impossible_cpu_is_refused_with_one_line() {
        let f = Fixture::new("refuse", "");
        f.config(FOREIGN_CPU);
        let Outcome::Refuse { line } = f.decide(UserRequest::default()) else {
            panic!("not refused")
        };
        assert!(
            line.starts_with("hpcc: refused to start container "),
            "{line}"
        );
        assert!(line.contains("a64fx"), "{line}");
        assert!(line.contains("checks.cpu = \"enforce\""), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn user_may_relax_to_warn_only_as_the_policy_allows() {
        let f = Fixture::new("relax", "");
        f.config(FOREIGN_CPU);
        let warn = UserRequest {
            enforcement: Some(hpcc_config::Enforcement::Warn),
            ..Default::default()
        };
        let Outcome::Start { plan, effective } = f.decide(warn) else {
            panic!("warn did not start")
        };
        assert!(matches!(&plan.decision, Decision::Start { warnings } if !warnings.is_empty()));
        assert_eq!(effective.checks.cpu, hpcc_config::Enforcement::Warn);
        let g = Fixture::new("norelax", "[users]\nmay_relax_to = \"enforce\"\n");
        g.config(FOREIGN_CPU);
        assert!(matches!(g.decide(warn), Outcome::Refuse { .. }));
    }

    #[test]
    fn compatible_image_starts() {
        let f = Fixture::new("start", "");
        f.config(r#""org.supercontainers.hardware.cpu.optimized.version":"x86_64""#);
        let o = f.decide(UserRequest::default());
        assert!(matches!(o, Outcome::Start { .. }), "{o:?}");
        assert!(summary(&o, Duration::from_millis(1)).contains("may start"));
    }

    #[test]
    fn broken_bundle_follows_on_error() {
        let f = Fixture::new("broken", "");
        // No config.json at all.
        let Outcome::Refuse { line } = f.decide(UserRequest::default()) else {
            panic!()
        };
        assert!(
            line.contains("does not exist") && line.contains("on_error"),
            "{line}"
        );
        let g = Fixture::new("broken-allow", "on_error = \"allow\"\n");
        std::fs::write(g.dir.join("bundle/config.json"), "{not json").unwrap();
        assert!(matches!(
            g.decide(UserRequest::default()),
            Outcome::StartUnchecked { .. }
        ));
    }

    #[test]
    fn invalid_policy_fails_closed() {
        let f = Fixture::new("badpolicy", "[checks]\ncpu = \"sometimes\"\n");
        f.config(FOREIGN_CPU);
        let Outcome::Refuse { line } = f.decide(UserRequest::default()) else {
            panic!()
        };
        assert!(line.contains("sometimes") || line.contains("cpu"), "{line}");
    }
}
