//! `hpcc select IMAGE`: the variant of an index that runs best on this
//! node (or a saved fingerprint, or every class of a `--fleet`), printed
//! as the digest reference to pull. Each variant is scored by `hpcc
//! match`'s pipeline ([`crate::image_cmd::score_image`]); the choice among
//! the green ones is [`hpcc_image::select::best`] (most specific CPU
//! target, then CUDA, then index order).

use super::{CliError, Global, Output};
use crate::image_cmd::{self, MatchOptions};
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::matcher::{Level, Score, Verdict};
use hpcc_image::select::{self, Variant};
use hpcc_image::Limits;
use std::path::PathBuf;

/// `hpcc select IMAGE [--fingerprint FILE | --fleet DIR] [--why]`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Scores every manifest of an image index (a registry tag or an OCI layout) \
against this node and prints the digest reference of the most specific green variant: the \
CPU target deepest in archspec's ancestry (zen3 over x86_64_v3), then the highest CUDA \
version, then the earlier entry of the index. With no green variant, the best orange one \
(exit 1). With --fleet: one line per node class (class, score, reference). Only the index, manifests and configs are read.",
    after_help = "Exit status: 0 a green variant, 1 only an orange (degraded) one, 2 none can run (reasons on stderr), 3 bad input."
)]
pub struct Args {
    /// The image index: `docker://HOST/REPO:TAG`, a short name, an OCI
    /// layout `DIR[:tag]` or an OCI archive.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    #[command(flatten)]
    pub registry: super::source::RegistryArgs,
    /// Select for this saved fingerprint (hpcc fingerprint --json) instead of this node.
    #[arg(long, value_name = "FILE.json", conflicts_with = "fleet")]
    pub fingerprint: Option<PathBuf>,
    /// Select for every node class of a directory of saved fingerprints:
    /// one line per class.
    #[arg(long, value_name = "DIR")]
    pub fleet: Option<PathBuf>,
    /// One line per variant (to stderr) with its score and main reason.
    #[arg(long)]
    pub why: bool,
}

/// A variant's score on one node.
struct Row<'a> {
    variant: &'a Variant,
    score: Score,
    reason: String,
}

fn main_reason(v: &Verdict) -> String {
    [Level::Fatal, Level::Degraded, Level::Ok]
        .into_iter()
        .find_map(|l| v.with_level(l).next())
        .map_or_else(
            || "nothing to check".to_owned(),
            |f| hpcc_common::text::escape(&f.reason),
        )
}

fn score_all<'a>(
    variants: &'a [Variant],
    node: &NodeFingerprint,
    policy: &hpcc_config::Policy,
    opts: &MatchOptions,
    limits: &Limits,
) -> Result<Vec<Row<'a>>, CliError> {
    variants
        .iter()
        .map(|v| {
            let base = v
                .entry
                .platform
                .as_ref()
                .map(select::platform_annotations)
                .unwrap_or_default();
            let (code, verdict, _, _) =
                image_cmd::score_image(&v.image, base, node, policy, opts, limits)?;
            let score = match code {
                0 => Score::Green,
                1 => Score::Orange,
                _ => Score::Red,
            };
            Ok(Row {
                variant: v,
                score,
                reason: main_reason(&verdict),
            })
        })
        .collect()
}

fn why_lines(rows: &[Row<'_>]) -> String {
    rows.iter()
        .map(|r| {
            format!(
                "{:<6} {} {}: {}\n",
                r.score.as_str(),
                r.variant.entry.digest.short(),
                r.variant.label(),
                r.reason
            )
        })
        .collect()
}

/// The variant to pull and its score: the best green one, else (it still
/// runs, degraded) the best orange one; none when every variant is red.
fn choose<'a>(rows: &[Row<'a>]) -> Option<(&'a Variant, Score)> {
    [Score::Green, Score::Orange].into_iter().find_map(|want| {
        select::best(rows.iter().filter(|r| r.score == want).map(|r| r.variant)).map(|v| (v, want))
    })
}

fn exit_code(s: Score) -> i32 {
    match s {
        Score::Green => 0,
        Score::Orange => 1,
        Score::Red => 2,
    }
}

/// Runs the command.
pub fn run(args: &Args, g: &Global, out: &Output) -> Result<i32, CliError> {
    let image = args.registry.parse(&args.image)?;
    let limits = Limits::default();
    let opts = MatchOptions {
        json: false,
        nfd_file: None,
        tags: vec![],
        fingerprint: args.fingerprint.clone(),
        policy: Some(g.config.clone()),
    };
    let policy = image_cmd::load_policy(&opts)?;
    let variants = select::variants(&image, &limits).map_err(|e| CliError::Image(e.into()))?;
    if let Some(dir) = &args.fleet {
        let mut text = String::new();
        let mut worst = Score::Green;
        for class in crate::fleet::load(dir)? {
            let rows = score_all(&variants, &class.node, &policy, &opts, &limits)?;
            if args.why {
                eprint!("{}:\n{}", class.name, why_lines(&rows));
            }
            let (pull, score) = choose(&rows).map_or(("-", Score::Red), |(v, s)| (&v.pull, s));
            text.push_str(&format!("{}\t{}\t{}\n", class.name, score.as_str(), pull));
            if exit_code(score) > exit_code(worst) {
                worst = score;
            }
        }
        out.text(&text)?;
        return Ok(exit_code(worst));
    }
    let node = image_cmd::load_node(&opts, &policy)?;
    let rows = score_all(&variants, &node, &policy, &opts, &limits)?;
    if args.why {
        eprint!("{}", why_lines(&rows));
    }
    match choose(&rows) {
        Some((v, score)) => {
            if score == Score::Orange && !args.why {
                eprint!(
                    "hpcc: no variant runs green; the best runs degraded:\n{}",
                    why_lines(&rows)
                );
            }
            out.text(&format!("{}\n", v.pull))?;
            Ok(exit_code(score))
        }
        None => {
            eprint!(
                "hpcc: no variant of {} can run here:\n{}",
                hpcc_common::text::escape(&image.to_string()),
                why_lines(&rows)
            );
            Ok(2)
        }
    }
}
