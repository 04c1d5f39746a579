//! The launch plan: verdict + policy -> a decision (start or refuse, with
//! reasons) and the tweaks to apply (mounts, devices, environment). Plain
//! data: the hook, the SPANK plugin and `hpcc match --plan` print the same
//! thing, and tests assert on it without touching the system.

use crate::matcher::{Check, Finding, Level, Verdict};
use hpcc_config::{Enforcement, Policy, UnannotatedAction};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What the user asked for MPI (`srun --hpcc-mpi`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MpiChoice {
    /// Replace when the image allows it and the site can.
    #[default]
    Auto,
    /// Replace, and fail the launch when that is impossible.
    Replace,
    /// Keep the image's MPI.
    None,
}

impl std::str::FromStr for MpiChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(MpiChoice::Auto),
            "replace" => Ok(MpiChoice::Replace),
            "none" => Ok(MpiChoice::None),
            o => Err(format!(
                "unknown MPI choice {o:?} (expected auto, replace or none)"
            )),
        }
    }
}

/// What a user may ask for one launch (SPANK options, CLI flags). Images
/// cannot set these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRequest {
    /// Wished enforcement for every check (bounded by `users.may_relax_to`).
    pub enforcement: Option<Enforcement>,
    /// MPI replacement wish.
    pub mpi: MpiChoice,
}

/// One reason a start is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Area.
    pub check: Check,
    /// The reason, as the matcher wrote it.
    pub reason: String,
    /// What the image needs.
    pub image: Option<String>,
    /// What the node has.
    pub node: Option<String>,
    /// The policy rule that refused (`checks.cpu = "enforce"`).
    pub policy: String,
}

/// Start or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Decision {
    /// Start the container; `warnings` were logged instead of refusing.
    Start {
        /// Fatal findings let through by `warn`, and other notes.
        warnings: Vec<String>,
    },
    /// Do not start it.
    Refuse {
        /// Why, one entry per refusing rule.
        reasons: Vec<Refusal>,
    },
}

impl Decision {
    /// Whether the container may start.
    pub fn allows_start(&self) -> bool {
        matches!(self, Decision::Start { .. })
    }
}

/// A bind mount of a host path into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Host path (trusted: from the policy or the host linker cache).
    pub source: PathBuf,
    /// Absolute path inside the container, resolved inside the rootfs at
    /// apply time.
    pub destination: PathBuf,
    /// Read-only bind.
    pub readonly: bool,
    /// Why (shown by `hpcc match --plan` and logged).
    pub reason: String,
}

/// A device node exposed to the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Path inside the container.
    pub path: PathBuf,
    /// Host path it comes from.
    pub host_path: PathBuf,
    /// `c` or `b`.
    pub kind: char,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Device cgroup access (`rwm`).
    pub access: String,
    /// Why.
    pub reason: String,
}

/// An environment variable for the container process. A prestart hook
/// cannot change it (the runtime already read `config.json`); the entry
/// points that edit the config before the runtime (the Slurm runtime
/// wrapper) apply it, the hook reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Why.
    pub reason: String,
}

/// The tweaks of one launch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tweaks {
    /// Bind mounts, in order.
    pub mounts: Vec<Mount>,
    /// Devices.
    pub devices: Vec<Device>,
    /// Environment.
    pub env: Vec<EnvVar>,
    /// Directories (in the container) to add to the linker configuration
    /// before the container's cache is rebuilt; empty = no rebuild.
    pub ld_paths: Vec<PathBuf>,
}

impl Tweaks {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
            && self.devices.is_empty()
            && self.env.is_empty()
            && self.ld_paths.is_empty()
    }
}

/// The complete outcome of one launch decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Container id.
    pub container: String,
    /// Node name.
    pub node: String,
    /// The matcher's verdict (with findings added by user requests).
    pub verdict: Verdict,
    /// Start or refuse.
    pub decision: Decision,
    /// Tweaks to apply when starting.
    pub tweaks: Tweaks,
}

impl Plan {
    /// The one line a user sees when the start is refused: container, what
    /// the image needs, what the node has, which policy refused.
    pub fn refusal_line(&self, policy_path: &std::path::Path) -> Option<String> {
        let Decision::Refuse { reasons } = &self.decision else {
            return None;
        };
        let parts: Vec<String> = reasons
            .iter()
            .map(|r| {
                let mut s = r.reason.clone();
                match (&r.image, &r.node) {
                    (Some(i), Some(n)) => s.push_str(&format!(" [image: {i}; node: {n}]")),
                    (Some(i), None) => s.push_str(&format!(" [image: {i}]")),
                    _ => {}
                }
                s.push_str(&format!(
                    " (policy {} in {})",
                    r.policy,
                    policy_path.display()
                ));
                s
            })
            .collect();
        Some(format!(
            "hpcc: refused to start container {} on {}: {}",
            self.container,
            self.node,
            parts.join("; ")
        ))
    }
}

/// Applies policy and user request to a verdict. Pure.
pub fn decide(verdict: &Verdict, policy: &Policy, request: &UserRequest) -> (Verdict, Decision) {
    let mut verdict = verdict.clone();
    match request.mpi {
        MpiChoice::Auto => {}
        MpiChoice::None => {
            if verdict.selection.mpi.take().is_some() {
                verdict.findings.push(Finding {
                    check: Check::Mpi,
                    level: Level::Degraded,
                    reason: "MPI replacement declined by the user (--hpcc-mpi=none): the image's own MPI is used".into(),
                    image: None,
                    node: None,
                });
            }
        }
        MpiChoice::Replace => {
            if verdict.selection.mpi.is_none() {
                let why = verdict
                    .findings
                    .iter()
                    .filter(|f| f.check == Check::Mpi && f.level != Level::Ok)
                    .map(|f| f.reason.as_str())
                    .next()
                    .unwrap_or("the image does not allow mpi_replace")
                    .to_owned();
                verdict.findings.push(Finding {
                    check: Check::Mpi,
                    level: Level::Fatal,
                    reason: format!("MPI replacement was required (--hpcc-mpi=replace) and is not possible: {why}"),
                    image: None,
                    node: None,
                });
            }
        }
    }
    // Recompute the score after user findings.
    verdict.score = match verdict.findings.iter().map(|f| f.level).max() {
        Some(Level::Fatal) => crate::matcher::Score::Red,
        Some(Level::Degraded) => crate::matcher::Score::Orange,
        _ => crate::matcher::Score::Green,
    };

    let mut warnings = Vec::new();
    let mut reasons = Vec::new();
    let unannotated = verdict.findings.len() == 1
        && verdict.findings[0].check == Check::Annotations
        && verdict.findings[0].level == Level::Degraded;
    if unannotated {
        match policy.unannotated {
            UnannotatedAction::Allow => warnings.push(
                "image carries no org.supercontainers.* annotations: started unchecked (policy unannotated = \"allow\")".into(),
            ),
            UnannotatedAction::Refuse => reasons.push(Refusal {
                check: Check::Annotations,
                reason: "the image carries no org.supercontainers.* annotations and this site runs only annotated images".into(),
                image: Some("no annotations".into()),
                node: None,
                policy: "unannotated = \"refuse\"".into(),
            }),
        }
    }
    for f in verdict.with_level(Level::Fatal) {
        let configured = f.check.enforcement(policy);
        let effective = policy.effective(configured, request.enforcement);
        let rule = if effective == configured {
            format!("checks.{} = \"{}\"", f.check, configured)
        } else {
            format!(
                "checks.{} = \"{}\", user asked \"{}\"",
                f.check,
                configured,
                request.enforcement.map_or("", |e| e.as_str())
            )
        };
        match effective {
            Enforcement::Enforce => reasons.push(Refusal {
                check: f.check,
                reason: f.reason.clone(),
                image: f.image.clone(),
                node: f.node.clone(),
                policy: rule,
            }),
            Enforcement::Warn => warnings.push(format!("{} (started anyway: {rule})", f.reason)),
            Enforcement::Off => {}
        }
    }
    let decision = if reasons.is_empty() {
        Decision::Start { warnings }
    } else {
        Decision::Refuse { reasons }
    };
    (verdict, decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::ImageSpec;
    use crate::matcher::{evaluate, tests::node, tests::with_mpich, Score};

    fn spec(pairs: &[(&str, &str)]) -> ImageSpec {
        ImageSpec::from_annotations(pairs.iter().copied()).unwrap()
    }

    const AVX512: &[(&str, &str)] = &[(
        "org.supercontainers.hardware.cpu.optimized.version",
        "x86_64_v4",
    )];

    #[test]
    fn red_under_enforce_refuses_with_policy_named() {
        let p = Policy::default();
        let v = evaluate(&spec(AVX512), &node("haswell"), &p);
        let (v, d) = decide(&v, &p, &UserRequest::default());
        assert_eq!(v.score, Score::Red);
        let Decision::Refuse { reasons } = &d else {
            panic!("{d:?}")
        };
        assert_eq!(reasons[0].policy, "checks.cpu = \"enforce\"");
        let plan = Plan {
            container: "c1".into(),
            node: "node001".into(),
            verdict: v,
            decision: d,
            tweaks: Tweaks::default(),
        };
        let line = plan
            .refusal_line(std::path::Path::new("/etc/hpcc/hook.toml"))
            .unwrap();
        assert!(
            line.starts_with("hpcc: refused to start container c1 on node001:"),
            "{line}"
        );
        assert!(
            line.contains("x86_64_v4") && line.contains("haswell") && line.contains("avx512f"),
            "{line}"
        );
        assert!(
            line.contains("checks.cpu = \"enforce\" in /etc/hpcc/hook.toml"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn warn_starts_and_keeps_the_reason() {
        let mut p = Policy::default();
        p.checks.cpu = Enforcement::Warn;
        let v = evaluate(&spec(AVX512), &node("haswell"), &p);
        let (_, d) = decide(&v, &p, &UserRequest::default());
        let Decision::Start { warnings } = d else {
            panic!()
        };
        assert!(warnings[0].contains("avx512f"));
        assert!(warnings[0].contains("warn"));
    }

    #[test]
    fn off_starts_silently() {
        let mut p = Policy::default();
        p.checks.cpu = Enforcement::Off;
        let v = evaluate(&spec(AVX512), &node("haswell"), &p);
        assert_eq!(
            decide(&v, &p, &UserRequest::default()).1,
            Decision::Start { warnings: vec![] }
        );
    }

    #[test]
    fn user_relaxation_is_bounded_by_admin() {
        let mut p = Policy::default();
        let v = evaluate(&spec(AVX512), &node("haswell"), &p);
        let req = UserRequest {
            enforcement: Some(Enforcement::Off),
            ..Default::default()
        };
        // may_relax_to = warn: off becomes warn, the start goes on with a warning.
        let (_, d) = decide(&v, &p, &req);
        assert!(matches!(&d, Decision::Start { warnings } if warnings.len() == 1));
        p.users.may_relax_to = Enforcement::Enforce;
        assert!(!decide(&v, &p, &req).1.allows_start());
    }

    #[test]
    fn unannotated_follows_policy() {
        let mut p = Policy::default();
        let v = evaluate(&ImageSpec::default(), &node("icelake"), &p);
        assert!(decide(&v, &p, &UserRequest::default()).1.allows_start());
        p.unannotated = UnannotatedAction::Refuse;
        let (_, d) = decide(&v, &p, &UserRequest::default());
        let Decision::Refuse { reasons } = d else {
            panic!()
        };
        assert_eq!(reasons[0].policy, "unannotated = \"refuse\"");
    }

    #[test]
    fn user_mpi_choices() {
        let p = Policy::default();
        let img = spec(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            ("org.supercontainers.mpi.implementation", "mpich"),
            ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
        ]);
        let v = evaluate(&img, &with_mpich(node("icelake")), &p);
        let none = UserRequest {
            mpi: MpiChoice::None,
            ..Default::default()
        };
        let (v2, d) = decide(&v, &p, &none);
        assert!(d.allows_start());
        assert!(v2.selection.mpi.is_none());
        assert_eq!(v2.score, Score::Orange);
        // Replace required on a node without host MPI: refused.
        let v = evaluate(&img, &node("icelake"), &p);
        let req = UserRequest {
            mpi: MpiChoice::Replace,
            ..Default::default()
        };
        let (v3, d) = decide(&v, &p, &req);
        assert_eq!(v3.score, Score::Red);
        assert!(!d.allows_start());
    }
}
