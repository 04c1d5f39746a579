//! The decision for one `--container` step on one node: the job user's
//! bundle config (read with the user's rights) into `hpcc_common::launch`.

use crate::creds::{FsIdentity, Identity};
use crate::userfile;
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::launch::{self, LaunchError, Outcome};
use hpcc_common::oci::{self, LaunchContext};
use hpcc_common::plan::{Decision, UserRequest};
use hpcc_config::Policy;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long reading the user's `config.json` may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One decision, the policy it was taken under and what it cost.
#[derive(Debug)]
pub struct Decided {
    /// The outcome.
    pub outcome: Outcome,
    /// The policy with the user's request applied, for `hpcc-runtime`
    /// (absent when the policy could not be read).
    pub effective: Option<Policy>,
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
    /// This node as Slurm names it (`SLURMD_NODENAME`): what the lines
    /// say, since several nodes may share a host name. `None`: the host
    /// name.
    pub node: Option<&'a str>,
}

/// Decides one step. Never panics on bad input; every failure becomes a
/// refusal or an unchecked start as `on_error` says.
pub fn decide(input: &StepInput<'_>) -> Decided {
    let t0 = Instant::now();
    // The user knows the step by the bundle they named.
    let id = input.bundle.display().to_string();
    let (outcome, effective) = match launch::load_policy(input.policy_path, Some(&id)) {
        Err(refused) => (refused, None),
        Ok(policy) => {
            let node = NodeFingerprint::cached(&policy);
            let here = input.node.unwrap_or(&node.hostname);
            let planned = read_context(input, &id).and_then(|ctx| {
                // The tweak planner opens the image's rootfs (root.path,
                // the user's choice) with the job user's file system
                // rights, so a root-only image cannot be inspected through
                // the plugin either.
                FsIdentity::enter(input.user)
                    .run(|| launch::decide(&ctx, &node, &policy, &input.request))
            });
            let planned = planned.map(|mut plan| {
                plan.node = here.to_owned();
                plan
            });
            let run = launch::RunInput {
                policy: &policy,
                policy_path: input.policy_path,
                id: Some(&id),
                node: Some(here),
                planned,
            };
            let (outcome, _) = launch::run(run, &mut HandedOn);
            let effective = hpcc_common::handoff::effective_policy(&policy, &input.request);
            (outcome, Some(effective))
        }
    };
    Decided {
        outcome,
        effective,
        elapsed: t0.elapsed(),
    }
}

/// The plugin's effect: none here. Its decision is handed on to the
/// runtime (`remote.rs` writes the step file), and `remote.rs` logs its
/// own summary line in slurmd's log.
struct HandedOn;

impl launch::Effect for HandedOn {
    type Output = ();
    fn apply(&mut self, _: &mut Outcome) -> Result<(), LaunchError> {
        Ok(())
    }
    fn log(&self, _: &Outcome, _: &str) {}
}

/// The bundle's config, read as the job user.
fn read_context(input: &StepInput<'_>, id: &str) -> Result<LaunchContext, LaunchError> {
    let config_path = input.bundle.join("config.json");
    let bytes = userfile::read_as(
        input.user,
        &config_path,
        oci::MAX_CONFIG_BYTES,
        READ_TIMEOUT,
    )
    .map_err(LaunchError::input)?;
    let spec = oci::read_config(&bytes[..], &config_path.display().to_string())?;
    let mut ctx = LaunchContext::from_bundle(input.bundle, &spec);
    ctx.id = id.to_owned();
    Ok(ctx)
}

/// The line logged for an outcome: what the admin reads in slurmd's log.
pub fn summary(outcome: &Outcome, elapsed: Duration) -> String {
    let ms = elapsed.as_secs_f64() * 1e3;
    match outcome {
        Outcome::Start(plan) => {
            let warnings = match &plan.decision {
                Decision::Start { warnings } if !warnings.is_empty() => hpcc_common::text::escape(
                    &format!("; warnings: {}", warnings.join("; ")),
                ),
                _ => String::new(),
            };
            // The bundle path is the user's text: a newline in it would
            // forge a line of slurmd's log.
            format!(
                "hpcc: container {} may start on {} (score {}, {} mount(s), {} device(s) planned; decided in {ms:.2} ms){warnings}",
                hpcc_common::text::escape(&plan.container),
                hpcc_common::text::escape(&plan.node),
                plan.verdict.score().as_str(),
                plan.tweaks.mounts.len(),
                plan.tweaks.devices.len(),
            )
        }
        Outcome::StartUnchecked(error) => hpcc_common::text::escape(&format!(
            "hpcc: could not check the container, starting it unchecked (policy on_error = \"allow\"): {error}"
        )),
        Outcome::Refuse { line, .. } => line.clone(),
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

        fn decided(&self, request: UserRequest) -> Decided {
            // SAFETY: no preconditions.
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
                node: Some("node017"),
            })
        }

        fn decide(&self, request: UserRequest) -> Outcome {
            self.decided(request).outcome
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
        let Outcome::Refuse { line, .. } = f.decide(UserRequest::default()) else {
            panic!("not refused")
        };
        assert!(
            line.starts_with("hpcc: refused to start container "),
            "{line}"
        );
        assert!(line.contains("a64fx"), "{line}");
        assert!(
            line.contains(" on node017: "),
            "the Slurm node name: {line}"
        );
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
        let d = f.decided(warn);
        let Outcome::Start(plan) = d.outcome else {
            panic!("warn did not start")
        };
        assert!(matches!(&plan.decision, Decision::Start { warnings } if !warnings.is_empty()));
        assert_eq!(
            d.effective.unwrap().checks.cpu,
            hpcc_config::Enforcement::Warn
        );
        let g = Fixture::new("norelax", "[users]\nmay_relax_to = \"enforce\"\n");
        g.config(FOREIGN_CPU);
        assert!(matches!(g.decide(warn), Outcome::Refuse { .. }));
    }

    #[test]
    fn compatible_image_starts() {
        let f = Fixture::new("start", "");
        f.config(r#""org.supercontainers.hardware.cpu.optimized.version":"x86_64""#);
        let o = f.decide(UserRequest::default());
        assert!(matches!(o, Outcome::Start(_)), "{o:?}");
        assert!(summary(&o, Duration::from_millis(1)).contains("may start"));
    }

    #[test]
    fn broken_bundle_follows_on_error() {
        let f = Fixture::new("broken", "");
        // No config.json at all.
        let Outcome::Refuse { line, .. } = f.decide(UserRequest::default()) else {
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
            Outcome::StartUnchecked(_)
        ));
    }

    #[test]
    fn invalid_policy_fails_closed() {
        let f = Fixture::new("badpolicy", "[checks]\ncpu = \"sometimes\"\n");
        f.config(FOREIGN_CPU);
        let Outcome::Refuse { line, .. } = f.decide(UserRequest::default()) else {
            panic!()
        };
        assert!(line.contains("sometimes") || line.contains("cpu"), "{line}");
    }
}
