//! Image requirements x node fingerprint x policy -> a [`Verdict`]: one
//! [`Finding`] per requirement and a green/orange/red [`Score`].
//!
//! The matcher is pure: no I/O, so every rule is unit-tested against
//! fingerprints written by hand. One rule family per file: [`cpu`],
//! [`gpu`], [`mpi`] (MPI, libfabric, UCX) and [`system`] (libc, kernel).
//! Every finding enters a verdict through [`Verdict::push`], which keeps
//! the findings in check order and the score up to date: the score is
//! computed in one place, [`Score::of`].

mod cpu;
mod gpu;
mod mpi;
mod problems;
mod system;

use crate::annotations::ImageSpec;
use crate::fingerprint::NodeFingerprint;
use hpcc_config::Policy;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The area a finding belongs to; each maps to one `[checks]` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// The image's annotations themselves.
    Annotations,
    /// Platform and microarchitecture.
    Cpu,
    /// NVIDIA driver/CUDA/GPU architecture.
    Gpu,
    /// MPI, libfabric, UCX.
    Mpi,
    /// libc.
    Libc,
    /// Host kernel.
    Kernel,
}

impl Check {
    /// The `[checks]` key.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Annotations => "annotations",
            Check::Cpu => "cpu",
            Check::Gpu => "gpu",
            Check::Mpi => "mpi",
            Check::Libc => "libc",
            Check::Kernel => "kernel",
        }
    }

    /// The configured enforcement for this check (`annotations` has none of
    /// its own: its only decision is `unannotated`).
    pub fn enforcement(self, policy: &Policy) -> hpcc_config::Enforcement {
        let c = &policy.checks;
        match self {
            Check::Annotations => hpcc_config::Enforcement::Enforce,
            Check::Cpu => c.cpu,
            Check::Gpu => c.gpu,
            Check::Mpi => c.mpi,
            Check::Libc => c.libc,
            Check::Kernel => c.kernel,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad one finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fits.
    Ok,
    /// Runs, but not at its best.
    Degraded,
    /// Will not run here.
    Fatal,
}

impl Level {
    /// `ok`, `degraded` or `fatal`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Degraded => "degraded",
            Level::Fatal => "fatal",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The overall score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Score {
    /// Runs near bare metal.
    #[default]
    Green,
    /// Runs, not at its best.
    Orange,
    /// Will not run.
    Red,
}

impl Score {
    /// `green`, `orange` or `red`.
    pub fn as_str(self) -> &'static str {
        match self {
            Score::Green => "green",
            Score::Orange => "orange",
            Score::Red => "red",
        }
    }

    /// The score of a set of findings: red if any is fatal, orange if any
    /// is degraded, else green. The only place a score is computed.
    pub fn of<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> Score {
        match findings.into_iter().map(|f| f.level).max() {
            Some(Level::Fatal) => Score::Red,
            Some(Level::Degraded) => Score::Orange,
            _ => Score::Green,
        }
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One requirement checked against the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Area.
    pub check: Check,
    /// Outcome.
    pub level: Level,
    /// One sentence a person understands.
    pub reason: String,
    /// What the image needs (evidence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// What the node has (evidence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Finding {
    /// A finding without evidence.
    pub fn new(check: Check, level: Level, reason: impl Into<String>) -> Finding {
        Finding {
            check,
            level,
            reason: reason.into(),
            image: None,
            node: None,
        }
    }

    /// Adds what the image needs and what the node has.
    pub fn evidence(mut self, image: impl Into<String>, node: impl Into<String>) -> Finding {
        self.image = Some(image.into());
        self.node = Some(node.into());
        self
    }

    /// Adds what the image needs only.
    pub fn image_evidence(mut self, image: impl Into<String>) -> Finding {
        self.image = Some(image.into());
        self
    }
}

/// Which host component a requested tweak will use; the plan builds on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Name of the `[mpi.NAME]` table chosen for `mpi_replace`.
    pub mpi: Option<String>,
    /// `libfabric_inject` will happen.
    pub libfabric: bool,
    /// `ucx_replace` will happen.
    pub ucx: bool,
    /// NVIDIA GPUs will be exposed.
    pub nvidia_gpus: bool,
}

impl Selection {
    /// Whether anything from the host goes into the container.
    pub fn injects(&self) -> bool {
        self.mpi.is_some() || self.libfabric || self.ucx || self.nvidia_gpus
    }

    /// Whether a selected tweak needs to look inside the image.
    pub fn needs_image(&self) -> bool {
        self.mpi.is_some() || self.libfabric || self.ucx
    }
}

/// The matcher's result. Built only through [`Verdict::push`], so its
/// findings stay in check order and its score always matches them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    score: Score,
    findings: Vec<Finding>,
    /// Tweaks that can be honoured.
    pub selection: Selection,
    /// No requirement hpcc checks was read from the image's annotations
    /// ([`ImageSpec::has_checkable_requirement`]): the policy's
    /// `unannotated` rule decides about it.
    #[serde(default)]
    pub unannotated: bool,
    /// When [`Verdict::unannotated`]: the keys the image carried in hpcc's
    /// namespaces, each with why it gave nothing to check (escaped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uncheckable_keys: Vec<String>,
}

impl Verdict {
    /// Overall score: red if any finding is fatal, orange if any is
    /// degraded, else green.
    pub fn score(&self) -> Score {
        self.score
    }

    /// Every finding, in check order.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Adds a finding after the others of its check.
    pub fn push(&mut self, f: Finding) {
        let at = self.findings.partition_point(|x| x.check <= f.check);
        self.findings.insert(at, f);
        self.score = Score::of(&self.findings);
    }

    /// Adds several findings.
    pub fn extend(&mut self, fs: impl IntoIterator<Item = Finding>) {
        for f in fs {
            self.push(f);
        }
    }

    /// Findings of one level.
    pub fn with_level(&self, level: Level) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.level == level)
    }
}

/// Matches an image against a node under a policy.
pub fn evaluate(image: &ImageSpec, node: &NodeFingerprint, policy: &Policy) -> Verdict {
    let mut v = Verdict::default();
    problems::check(image, node, policy, &mut v);
    if !image.has_checkable_requirement() {
        v.unannotated = true;
        v.uncheckable_keys = image.uncheckable_keys();
        let seen = if v.uncheckable_keys.is_empty() {
            String::new()
        } else {
            format!(
                " (keys seen: {}; none could be checked)",
                v.uncheckable_keys.join("; ")
            )
        };
        let reason = if image.has_env_facts() {
            format!("the image carries no annotation hpcc can check{seen}: only what its environment says (NVIDIA_REQUIRE_CUDA) was checked")
        } else {
            format!("the image carries no annotation hpcc can check (org.supercontainers.*, io.archspec.cpu.target, com.nvidia.cuda.version){seen}: nothing could be checked")
        };
        v.push(Finding::new(Check::Annotations, Level::Degraded, reason));
    }
    // A known key whose value could not be read still runs the checks:
    // its cost is theirs to decide (an unreadable CUDA version is a GPU
    // need), whether or not the `unannotated` rule refuses the image.
    if !image.has_known_keys() {
        if image.has_env_facts() {
            gpu::check(image, node, policy, &mut v);
        }
        return v;
    }
    cpu::check(image, node, &mut v);
    gpu::check(image, node, policy, &mut v);
    mpi::check(image, node, policy, &mut v);
    system::libc(image, node, &mut v);
    system::kernel(image, node, &mut v);
    v
}

/// `Fatal` when the check is enforced, `Degraded` otherwise: for a finding
/// that cannot be decided safely, which refuses only where the site asks
/// for that check to refuse.
fn undecided(check: Check, policy: &Policy) -> Level {
    if check.enforcement(policy) == hpcc_config::Enforcement::Enforce {
        Level::Fatal
    } else {
        Level::Degraded
    }
}

/// Why hpcc could not produce a verdict at all (bad input to `hpcc match`
/// or `hpcc check`), as the JSON a `--json` caller reads on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// What went wrong, escaped.
    pub error: String,
    /// The exit status the command ends with ([`ErrorReport::EXIT_INPUT`]).
    pub exit_code: i32,
}

impl ErrorReport {
    /// Exit status for bad input (unreadable file, invalid JSON, unknown
    /// flag), the same for every command.
    pub const EXIT_INPUT: i32 = 3;

    /// A bad-input report.
    pub fn input(e: &dyn std::fmt::Display) -> ErrorReport {
        ErrorReport {
            error: crate::text::escape(&e.to_string()),
            exit_code: Self::EXIT_INPUT,
        }
    }

    /// The JSON object (`{"error": "...", "exit_code": 3}`).
    pub fn to_json(&self) -> String {
        serde_json::json!({ "error": self.error, "exit_code": self.exit_code }).to_string()
    }
}

/// Items joined with `, ` for messages.
fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    pub(crate) use crate::testutil::{lib, node, with_mpich};

    pub(crate) fn image(pairs: &[(&str, &str)]) -> ImageSpec {
        ImageSpec::read(pairs.iter().copied(), std::iter::empty())
    }

    pub(crate) fn cpu_image(target: &str) -> ImageSpec {
        image(&[("org.supercontainers.hardware.cpu.optimized.version", target)])
    }

    pub(crate) fn verdict(img: &ImageSpec, n: &NodeFingerprint) -> Verdict {
        evaluate(img, n, &Policy::default())
    }

    #[test]
    fn unannotated_is_orange_with_one_finding() {
        let v = verdict(&ImageSpec::default(), &node("icelake"));
        assert_eq!(v.score(), Score::Orange);
        assert_eq!(v.findings().len(), 1);
        assert_eq!(v.findings()[0].check, Check::Annotations);
    }

    #[test]
    fn push_keeps_check_order_and_the_score() {
        let mut v = Verdict::default();
        assert_eq!(v.score(), Score::Green);
        v.push(Finding::new(Check::Kernel, Level::Ok, "k"));
        v.push(Finding::new(Check::Cpu, Level::Degraded, "c1"));
        assert_eq!(v.score(), Score::Orange);
        v.push(Finding::new(Check::Cpu, Level::Fatal, "c2"));
        assert_eq!(v.score(), Score::Red);
        let order: Vec<&str> = v.findings().iter().map(|f| f.reason.as_str()).collect();
        assert_eq!(order, ["c1", "c2", "k"]);
    }

    #[test]
    fn verdict_is_plain_data() {
        let v = verdict(&cpu_image("sapphirerapids"), &node("icelake"));
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["score"], "red");
        assert_eq!(json["findings"][0]["check"], "cpu");
        assert_eq!(json["findings"][0]["level"], "fatal");
    }
}
