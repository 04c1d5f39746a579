//! The vocabulary of a verdict: the [`Check`] areas, a [`Finding`] with its
//! [`Level`], the [`Score`] and the [`Verdict`] that holds them. Plain data
//! below everything that speaks it (annotations name a check, the plan
//! carries a verdict, the matcher produces one), so none of those has to
//! depend on the matcher to say what it found.

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
    /// (`ImageSpec::has_checkable_requirement`): the policy's
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
