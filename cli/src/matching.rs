//! `hpcc match`: scores an image against this node (0 green, 1 orange,
//! 2 red, 3 bad input).

use super::source::SourceArgs;
use super::{CliError, Global, Output};
use hpcc_common::launch;
use hpcc_common::matcher::Score;
use hpcc_common::plan::{MpiChoice, UserRequest};
use hpcc_common::report;
use hpcc_common::schema::Kind;
use hpcc_common::slurm;
use hpcc_config::{Enforcement, Policy};
use std::path::PathBuf;

/// `hpcc match (--bundle DIR | --annotations FILE.json) [...]`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Scores an image against this node, or against a fingerprint taken elsewhere \
with `hpcc fingerprint --json`: every finding with the image's need and the node's offer. \
--plan adds the decision and the tweaks (mounts, devices, environment) a launch would get.",
    after_help = "Exit status: 0 green, 1 orange, 2 red or refused by the policy, 3 bad input."
)]
pub struct Args {
    /// The image.
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub registry: super::source::RegistryArgs,
    /// Score against this saved fingerprint (hpcc fingerprint --json) instead of this node.
    #[arg(long, value_name = "FILE.json", conflicts_with = "fleet")]
    pub fingerprint: Option<PathBuf>,
    /// Score against every node class of a directory of saved fingerprints
    /// (one `hpcc fingerprint --json` file per node or class; nodes with the
    /// same features are one class): one row per class with its score, its
    /// main reason and its node count. Exit 0 if a class runs it green, 1
    /// if the best is orange, 2 if none can run it.
    #[arg(long, value_name = "DIR", conflicts_with = "plan")]
    pub fleet: Option<PathBuf>,
    /// Print the Slurm `--constraint` expression of the node classes (of
    /// --fleet, else the policy's `[scheduling] fleet`) that run the image
    /// green or orange, e.g. `hpcc.cpu.x86_64_v4&hpcc.mpi.mpich`; exit 2
    /// with the reason when none can.
    #[arg(long, conflicts_with_all = ["plan", "fingerprint", "k8s_affinity"])]
    pub slurm_constraint: bool,
    /// Print the Kubernetes node affinity (on NFD's labels) of the same
    /// node classes.
    #[arg(long, conflicts_with_all = ["plan", "fingerprint"])]
    pub k8s_affinity: bool,
    /// Ask Slurm (`sinfo`) which nodes form the partition and what they
    /// publish: the classes are cut to the partition, and the constraint is
    /// checked against the published features.
    #[arg(long)]
    pub sinfo: bool,
    /// The partition(s) of the job (comma-separated); default: Slurm's
    /// default partition. Implies --sinfo.
    #[arg(long, value_name = "NAME")]
    pub partition: Option<String>,
    /// The job's own --constraint: combined with hpcc's as `(USER)&(HPCC)`,
    /// and refused when no node has both.
    #[arg(long, value_name = "EXPR")]
    pub user_constraint: Option<String>,
    /// The submit filter's call (cli_filter.lua): as --slurm-constraint
    /// --sinfo under the policy's `[scheduling] submit`; stdout is
    /// `constraint EXPR` or nothing, the reason goes to stderr; exit 0
    /// to submit, 2 to refuse.
    #[arg(long, conflicts_with_all = ["plan", "fingerprint", "k8s_affinity"])]
    pub submit: bool,
    /// Also show the decision and the tweaks of the launch plan.
    #[arg(long)]
    pub plan: bool,
    /// With --plan: also plan a Slurm MPI step's wiring (environment,
    /// mounts, namespaces) from these facts, as hpcc-runtime's Slurm mode
    /// gathers them (JSON: node, mpi {type: none|pmi2|pmix, ...},
    /// node_namespaces, userns, node_has_mqueue).
    #[arg(long, value_name = "FILE.json", requires = "plan")]
    pub slurm_step: Option<PathBuf>,
    /// The enforcement the user asks for (bounded by the policy's users.may_relax_to).
    #[arg(long, value_name = "LEVEL", value_parser = ["enforce", "warn", "off"])]
    pub enforcement: Option<String>,
    /// The MPI choice the user asks for.
    #[arg(long, value_name = "CHOICE", value_parser = ["auto", "replace", "none"], default_value = "auto")]
    pub mpi: String,
    /// With IMAGE: also score this Kubernetes NFD image-compatibility spec
    /// (those attached to the image by `subject` are read too).
    #[arg(long, value_name = "FILE")]
    pub nfd: Option<PathBuf>,
    /// With IMAGE: only the NFD compatibility sets with these tags.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

/// Runs the command.
pub fn run(args: &Args, g: &Global, out: &Output) -> Result<i32, CliError> {
    if args.slurm_constraint || args.k8s_affinity || args.submit {
        return placement(args, g, out);
    }
    if args.sinfo || args.partition.is_some() || args.user_constraint.is_some() {
        return Err(CliError::Usage(
            "--sinfo, --partition and --user-constraint go with --slurm-constraint, --k8s-affinity or --submit".into(),
        ));
    }
    if let Some(dir) = &args.fleet {
        return fleet(args, dir, g, out);
    }
    if let Some(image) = args.source.image_ref(&args.registry)? {
        // An image: scored from its manifest and config alone, before any
        // layer is unpacked, with the site's collections and NFD specs.
        let opts = crate::image_cmd::MatchOptions {
            json: out.json,
            nfd_file: args.nfd.clone(),
            tags: args.tags.clone(),
            fingerprint: args.fingerprint.clone(),
            policy: Some(g.config.clone()),
        };
        let (code, text) = crate::image_cmd::match_image(&image, &opts)?;
        out.text(&text)?;
        return Ok(code);
    }
    let enforcement = args
        .enforcement
        .as_deref()
        .map(str::parse::<Enforcement>)
        .transpose()
        .map_err(CliError::Usage)?;
    let mpi = args
        .mpi
        .parse::<MpiChoice>()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let policy = Policy::load(&g.config)?;
    // The saved fingerprint is read as `hpcc match IMAGE` and the Python
    // bindings read it (bounded, the same message when it is not one).
    let node = crate::image_cmd::load_node(
        &crate::image_cmd::MatchOptions {
            fingerprint: args.fingerprint.clone(),
            ..Default::default()
        },
        &policy,
    )?;
    let ctx = args.source.context()?;
    let (_, mut plan) =
        crate::image_cmd::match_context(&ctx, &node, &policy, &UserRequest { enforcement, mpi })?;
    if let Some(f) = &args.slurm_step {
        let text = std::fs::read_to_string(f).map_err(|source| CliError::Read {
            path: f.clone(),
            source,
        })?;
        let step: slurm::SlurmStep =
            serde_json::from_str(&text).map_err(|source| CliError::SlurmStep {
                path: f.clone(),
                source,
            })?;
        plan.slurm = slurm::wiring(&step);
    }
    // What `hpcc verify --record` measured on this node this boot for this
    // image and this plan (a bundle only: its record's key).
    let verified = if args.source.bundle.is_some() && args.fingerprint.is_none() {
        crate::verify::record::for_bundle(&policy, &ctx, &plan)
    } else {
        None
    };
    match (out.json, args.plan) {
        (true, plan_too) => {
            let mut v = if plan_too {
                serde_json::to_value(&plan)?
            } else {
                serde_json::to_value(&plan.verdict)?
            };
            if let (Some(r), Some(obj)) = (&verified, v.as_object_mut()) {
                obj.insert(
                    "verify".into(),
                    hpcc_common::schema::to_value(Kind::Verify, r)?,
                );
            }
            out.json(if plan_too { Kind::Plan } else { Kind::Verdict }, &v)?
        }
        (false, true) => out.text(&report::plan(&plan, out.color))?,
        (false, false) => {
            out.text(&report::verdict(&plan.verdict, out.color))?;
            // The score alone does not say that the policy refuses.
            if let Some(line) = launch::refusal_line(&plan, &g.config) {
                out.text(&format!("{line}\n"))?;
            }
        }
    }
    if let (false, Some(r)) = (out.json, &verified) {
        out.text(&format!("{}\n", crate::verify::report::match_line(r)))?;
    }
    // The Slurm wiring does not change the decision: the code is the plan's.
    Ok(crate::image_cmd::plan_exit_code(&plan))
}

/// `hpcc match --fleet DIR`: the same decision for each node class.
fn fleet(args: &Args, dir: &std::path::Path, g: &Global, out: &Output) -> Result<i32, CliError> {
    let policy = Policy::load(&g.config)?;
    let (_, rows) = fleet_rows(args, dir, g, &policy)?;
    if out.json {
        out.json(Kind::Fleet, &serde_json::json!({ "classes": rows }))?;
    } else {
        out.text(&crate::fleet::table(&rows))?;
    }
    Ok(crate::fleet::exit_code(&rows))
}

/// `--slurm-constraint`, `--k8s-affinity`, `--submit`.
fn placement(args: &Args, g: &Global, out: &Output) -> Result<i32, CliError> {
    let policy = Policy::load(&g.config)?;
    if args.submit && policy.scheduling.submit == Enforcement::Off {
        return Ok(0);
    }
    let dir = args
        .fleet
        .clone()
        .unwrap_or_else(|| policy.scheduling.fleet.clone());
    let partitions = args
        .partition
        .as_deref()
        .map(|p| p.split(',').map(str::to_owned).collect::<Vec<_>>());
    // sinfo (a slurmctld round trip, most of a submission's cost) runs
    // while the fleet is read and scored.
    let timeout = std::time::Duration::from_millis(policy.scheduling.timeout_ms);
    let ttl = std::time::Duration::from_secs(policy.scheduling.sinfo_cache_s);
    let asking = (args.sinfo || args.submit || partitions.is_some())
        .then(|| std::thread::spawn(move || crate::schedule::sinfo_cached(timeout, ttl)));
    let (mut classes, mut rows) = fleet_rows(args, &dir, g, &policy)?;
    let image = match (
        &args.source.image,
        &args.source.bundle,
        &args.source.annotations,
    ) {
        (Some(i), _, _) => i.clone(),
        (_, Some(b), _) => b.display().to_string(),
        (_, _, Some(a)) => a.display().to_string(),
        _ => "image".into(),
    };
    let nodes = match asking {
        Some(h) => Some(
            h.join()
                .map_err(|_| CliError::Usage("sinfo: the reader thread panicked".into()))??,
        ),
        None => None,
    };
    let partition = match &nodes {
        Some(n) => crate::schedule::restrict(&mut classes, &mut rows, n, partitions.as_deref()),
        None => "(fleet)".to_owned(),
    };
    let req = crate::schedule::Request {
        image: &image,
        partitions,
        user: args.user_constraint.as_deref().filter(|u| !u.is_empty()),
    };
    let p = crate::schedule::place(&req, &classes, &rows, nodes.as_ref(), &partition)?;
    if out.json {
        out.json(
            Kind::Placement,
            &serde_json::json!({ "placement": p, "classes": rows }),
        )?;
    } else if let Some(line) = &p.refusal {
        if args.submit && policy.scheduling.submit == Enforcement::Warn {
            eprintln!("hpcc: warning (scheduling.submit = \"warn\"), submitted unchanged: {line}");
            return Ok(0);
        }
        eprintln!("hpcc: refused: {line}");
    } else if args.submit {
        if let (Enforcement::Enforce, Some(c)) = (policy.scheduling.submit, &p.constraint) {
            out.text(&format!("constraint {c}\n"))?;
        }
    } else if args.k8s_affinity {
        out.text(&crate::constraint::k8s_affinity(&p.terms))?;
    } else {
        out.text(&format!("{}\n", p.constraint.as_deref().unwrap_or("")))?;
    }
    let warn_only = args.submit && policy.scheduling.submit == Enforcement::Warn;
    Ok(match (&p.refusal, args.submit) {
        (Some(_), _) if warn_only => 0,
        (Some(_), _) => 2,
        (None, true) => 0,
        (None, false) => crate::fleet::exit_code(&rows).min(1),
    })
}

/// The fleet's classes and each one's row for the image.
fn fleet_rows(
    args: &Args,
    dir: &std::path::Path,
    g: &Global,
    policy: &Policy,
) -> Result<(Vec<crate::fleet::Class>, Vec<crate::fleet::Row>), CliError> {
    let classes = crate::fleet::load(dir)?;
    let mut rows = Vec::with_capacity(classes.len());
    // An image is read as `hpcc match IMAGE` reads it, once per class; a
    // bundle or annotations file once.
    let ctx = match args.source.image_ref(&args.registry)? {
        Some(image) => Err(image),
        None => Ok(args.source.context()?),
    };
    for class in &classes {
        let row = match &ctx {
            Err(image) => {
                let opts = crate::image_cmd::MatchOptions {
                    json: true,
                    nfd_file: args.nfd.clone(),
                    tags: args.tags.clone(),
                    fingerprint: Some(class.file.clone()),
                    policy: Some(g.config.clone()),
                };
                let (code, text) = crate::image_cmd::match_image(image, &opts)?;
                let v: serde_json::Value = serde_json::from_str(&text)?;
                let verdict: hpcc_common::matcher::Verdict =
                    serde_json::from_value(v["verdict"].clone())?;
                crate::fleet::row(class, &verdict, code == 2 && verdict.score() != Score::Red)
            }
            Ok(ctx) => {
                let plan = launch::decide(ctx, &class.node, policy, &UserRequest::default())?;
                crate::fleet::row(class, &plan.verdict, !plan.decision.allows_start())
            }
        };
        rows.push(row);
    }
    Ok((classes, rows))
}
