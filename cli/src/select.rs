//! `hpcc select IMAGE`: the variant of an index that runs best on this
//! node (or a saved fingerprint, or every class of a `--fleet`), printed
//! as the digest reference to pull. Each variant is scored by `hpcc
//! match`'s pipeline ([`crate::image_cmd::score_image`]); the choice among
//! the green ones is [`hpcc_image::select::best`] (most specific CPU
//! target, then CUDA, then index order).

use super::{CliError, Global, Output};
use crate::image_cmd::{self, ClassSelection, FleetSelection, MatchOptions, VariantScore};
use hpcc_common::matcher::Score;
use hpcc_common::schema::Kind;
use hpcc_image::select;
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

fn why_lines(rows: &[VariantScore]) -> String {
    rows.iter()
        .map(|r| {
            let short = r.digest.get(..19).unwrap_or(&r.digest);
            format!("{:<6} {} {}: {}\n", r.score, short, r.label, r.reason)
        })
        .collect()
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
        let mut classes = Vec::new();
        for class in crate::fleet::load(dir)? {
            let rows = image_cmd::score_variants(&variants, &class.node, &policy, &opts, &limits)?;
            if args.why {
                eprint!("{}:\n{}", class.name, why_lines(&rows));
            }
            let chosen = image_cmd::choose(&variants, &rows);
            let score = chosen.map_or(Score::Red, |(_, s)| s);
            let pull = chosen.map(|(v, _)| v.pull.clone());
            text.push_str(&format!(
                "{}\t{}\t{}\n",
                class.name,
                score.as_str(),
                pull.as_deref().unwrap_or("-")
            ));
            if exit_code(score) > exit_code(worst) {
                worst = score;
            }
            classes.push(ClassSelection {
                class: class.name.clone(),
                score: score.as_str(),
                pull,
                variants: rows,
            });
        }
        if out.json {
            out.json(
                Kind::SelectFleet,
                &FleetSelection {
                    image: image.to_string(),
                    classes,
                },
            )?;
        } else {
            out.text(&text)?;
        }
        return Ok(exit_code(worst));
    }
    let node = image_cmd::load_node(&opts, &policy)?;
    let rows = image_cmd::score_variants(&variants, &node, &policy, &opts, &limits)?;
    if args.why {
        eprint!("{}", why_lines(&rows));
    }
    let (code, sel) = image_cmd::selection(image.to_string(), &variants, rows);
    if out.json {
        out.json(Kind::Select, &sel)?;
        return Ok(code);
    }
    match &sel.pull {
        Some(pull) => {
            if code == 1 && !args.why {
                eprint!(
                    "hpcc: no variant runs green; the best runs degraded:\n{}",
                    why_lines(&sel.variants)
                );
            }
            out.text(&format!("{pull}\n"))?;
        }
        None => {
            eprint!(
                "hpcc: no variant of {} can run here:\n{}",
                hpcc_common::text::escape(&image.to_string()),
                why_lines(&sel.variants)
            );
        }
    }
    Ok(code)
}
