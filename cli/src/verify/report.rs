//! The result of one `hpcc verify`: what ran, what was measured, against
//! what was predicted, and the exit code (0 as predicted, 1 worse than
//! predicted, 2 did not run). Printed as text or as the `--json` document
//! (`docs/schema/verify.schema.json`), and recorded with `--record`.

use super::mpi::Figures;
use hpcc_common::verdict::Score;
use serde::{Deserialize, Serialize};

/// Measured at least this % of bare metal: green (the proposal's "near
/// bare metal (90+ %)").
pub const GREEN_PERCENT: f64 = 90.0;
/// At least this %: orange (the proposal's 50+ %); below: red.
pub const ORANGE_PERCENT: f64 = 50.0;

/// Which functional check ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// MPI ping-pong, container against bare metal.
    Mpi,
    /// GPU visible and the driver answers.
    Gpu,
    /// libfabric providers inside against outside.
    Libfabric,
    /// Nothing in the plan to check.
    None,
}

impl CheckKind {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Mpi => "mpi",
            CheckKind::Gpu => "gpu",
            CheckKind::Libfabric => "libfabric",
            CheckKind::None => "none",
        }
    }
}

/// How the measurement compares with the prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// As predicted or better: exit 0.
    AsPredicted,
    /// Worse than predicted (including: does not work at all): exit 1.
    Worse,
    /// The check could not run (refused, not applicable, no launcher, the
    /// bare-metal side failed, timeout before anything ran): exit 2.
    DidNotRun,
}

impl Outcome {
    /// The exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::AsPredicted => 0,
            Outcome::Worse => 1,
            Outcome::DidNotRun => 2,
        }
    }
}

/// Which program ran, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// `image`: declared by the image (`org.supercontainers.hpcc.verify.command`);
    /// `hpcc`: hpcc's own, bound in for the check.
    pub source: String,
    /// The command in the container.
    pub container: Vec<String>,
    /// The command on bare metal, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare_metal: Option<Vec<String>>,
    /// How the ranks were started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher: Option<String>,
}

/// What was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// The container's fraction of bare metal, in %: the lower of the
    /// latency and bandwidth ratios (100 for a functional check that
    /// passed, 0 for one that failed).
    pub percent: f64,
    /// The level that fraction is.
    pub level: Score,
    /// 8 B latency, bare/container, in %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_percent: Option<f64>,
    /// 1 MiB bandwidth, container/bare, in %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_percent: Option<f64>,
    /// The container's best run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Figures>,
    /// Bare metal's best run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare_metal: Option<Figures>,
    /// The MPI library that ran in the container (`MPI_Get_library_version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    /// The one on bare metal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare_metal_library: Option<String>,
    /// libfabric providers in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<String>>,
    /// libfabric providers on bare metal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bare_metal_providers: Option<Vec<String>>,
    /// Runs per side.
    pub runs: u32,
}

impl Measured {
    /// Nothing measured yet over `runs` runs per side.
    pub fn none(runs: u32) -> Measured {
        Measured {
            percent: 0.0,
            level: Score::Red,
            latency_percent: None,
            bandwidth_percent: None,
            container: None,
            bare_metal: None,
            library: None,
            bare_metal_library: None,
            providers: None,
            bare_metal_providers: None,
            runs,
        }
    }
}

/// One `hpcc verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The image as named (IMAGE or the bundle directory).
    pub image: String,
    /// Its digest (the record's key).
    pub image_digest: String,
    /// The plan's digest (the record's key).
    pub plan_digest: String,
    /// This node.
    pub node: String,
    /// When it ran (RFC 3339, UTC).
    pub at: String,
    /// The check.
    pub check: CheckKind,
    /// The score `hpcc match` predicts.
    pub predicted: Score,
    /// The measurement, when something ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<Measured>,
    /// The program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<Program>,
    /// The comparison.
    pub outcome: Outcome,
    /// 0, 1 or 2.
    pub exit_code: i32,
    /// One line for people.
    pub reason: String,
    /// "predicted green, measured 41 % of bare metal" when the two disagree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contradiction: Option<String>,
    /// Seconds the check took.
    pub seconds: f64,
    /// Where `--record` wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<String>,
}

/// The level of a measured fraction of bare metal.
pub fn level(percent: f64) -> Score {
    if percent >= GREEN_PERCENT {
        Score::Green
    } else if percent >= ORANGE_PERCENT {
        Score::Orange
    } else {
        Score::Red
    }
}

/// The outcome of a measurement against the prediction, and the
/// contradiction line when it is worse.
pub fn compare(predicted: Score, m: &Measured) -> (Outcome, Option<String>) {
    if m.level > predicted {
        let what = if m.percent <= 0.0 {
            "it does not work in the container".to_owned()
        } else {
            format!("measured {:.0} % of bare metal", m.percent)
        };
        (
            Outcome::Worse,
            Some(format!("predicted {}, {what}", predicted.as_str())),
        )
    } else {
        (Outcome::AsPredicted, None)
    }
}

/// The text output.
pub fn text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "image:     {}", r.image);
    let _ = writeln!(s, "check:     {} on {}", r.check.as_str(), r.node);
    if let Some(p) = &r.program {
        let _ = writeln!(
            s,
            "program:   {} ({}){}",
            p.container.join(" "),
            if p.source == "image" {
                "the image's, org.supercontainers.hpcc.verify.command"
            } else {
                "hpcc's own, bound in for the check"
            },
            p.launcher
                .as_deref()
                .map(|l| format!("; ranks: {l}"))
                .unwrap_or_default()
        );
        if let Some(b) = &p.bare_metal {
            let _ = writeln!(s, "bare:      {}", b.join(" "));
        }
    }
    if let Some(m) = &r.measured {
        if let Some(l) = &m.library {
            let _ = writeln!(s, "library:   {l} (in the container)");
        }
        if let Some(l) = &m.bare_metal_library {
            let _ = writeln!(s, "           {l} (bare metal)");
        }
        if let (Some(c), Some(b)) = (&m.container, &m.bare_metal) {
            let _ = writeln!(
                s,
                "latency:   8 B   {:>9.2} us container, {:>9.2} us bare metal: {:.0} %",
                c.latency_us,
                b.latency_us,
                m.latency_percent.unwrap_or_default()
            );
            let _ = writeln!(
                s,
                "bandwidth: 1 MiB {:>9.1} MB/s container, {:>7.1} MB/s bare metal: {:.0} % (best of {} runs each)",
                c.bandwidth_mbps,
                b.bandwidth_mbps,
                m.bandwidth_percent.unwrap_or_default(),
                m.runs
            );
        }
        if let (Some(i), Some(o)) = (&m.providers, &m.bare_metal_providers) {
            let _ = writeln!(s, "providers: {} (container)", i.join(" "));
            let _ = writeln!(s, "           {} (bare metal)", o.join(" "));
        }
        let _ = writeln!(
            s,
            "measured:  {:.0} % of bare metal ({}); predicted {}",
            m.percent,
            m.level.as_str(),
            r.predicted.as_str()
        );
    } else {
        let _ = writeln!(s, "predicted: {}", r.predicted.as_str());
    }
    let head = match r.outcome {
        Outcome::AsPredicted => "as predicted",
        Outcome::Worse => "WORSE THAN PREDICTED",
        Outcome::DidNotRun => "did not run",
    };
    let _ = writeln!(s, "result:    {head}: {}", r.reason);
    if let Some(c) = &r.contradiction {
        let _ = writeln!(s, "           contradiction: {c}");
    }
    if let Some(p) = &r.recorded {
        let _ = writeln!(s, "recorded:  {p}");
    }
    s
}

/// The line `hpcc match` prints beside its prediction.
pub fn match_line(r: &Report) -> String {
    match (&r.measured, r.outcome) {
        (_, Outcome::DidNotRun) => format!(
            "verified: the {} check did not run on this node at {}: {}",
            r.check.as_str(),
            r.at,
            r.reason
        ),
        (Some(m), _) => format!(
            "measured: {:.0} % of bare metal on this node at {} ({} check, hpcc verify){}",
            m.percent,
            r.at,
            r.check.as_str(),
            r.contradiction
                .as_deref()
                .map(|c| format!(": contradiction: {c}"))
                .unwrap_or_default()
        ),
        (None, _) => format!("verified at {}: {}", r.at, r.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(percent: f64) -> Measured {
        Measured {
            percent,
            level: level(percent),
            ..Measured::none(1)
        }
    }

    #[test]
    fn levels_and_contradictions() {
        assert_eq!(level(98.0), Score::Green);
        assert_eq!(level(90.0), Score::Green);
        assert_eq!(level(89.9), Score::Orange);
        assert_eq!(level(41.0), Score::Red);
        assert_eq!(
            compare(Score::Green, &m(98.0)),
            (Outcome::AsPredicted, None)
        );
        assert_eq!(
            compare(Score::Green, &m(41.0)),
            (
                Outcome::Worse,
                Some("predicted green, measured 41 % of bare metal".into())
            )
        );
        assert_eq!(compare(Score::Orange, &m(60.0)).0, Outcome::AsPredicted);
        assert_eq!(
            compare(Score::Green, &m(0.0)).1.as_deref(),
            Some("predicted green, it does not work in the container")
        );
        assert_eq!(Outcome::DidNotRun.exit_code(), 2);
    }
}
