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
// The verdict's vocabulary lives below the matcher (`verdict.rs`); it is
// re-exported here, where callers have always named it.
pub use crate::verdict::{Check, Finding, Level, Score, Selection, Verdict};
use hpcc_config::Policy;
use serde::{Deserialize, Serialize};
use std::fmt;

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
