//! `hpcc fingerprint`: what this node offers (exit 0, 3 on error).

use super::{CliError, Global, Output};
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::report;
use hpcc_common::schema::Kind;
use hpcc_config::Policy;

/// `hpcc fingerprint [--no-cache]`.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(
    long_about = "What this node offers an image: archspec microarchitecture and CPU flags, \
kernel, glibc, NVIDIA driver/CUDA/GPUs, and the host MPI/libfabric/UCX the policy declares \
(with sonames, or why they are missing). Save it with --json and score images against it \
elsewhere with `hpcc match --fingerprint FILE`."
)]
pub struct Args {
    /// Take the fingerprint now instead of using the per-boot cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Only the GPU facts, as JSON, without reading the policy: the GPU
    /// helper of hpcc-hook, which never loads NVML itself.
    #[arg(long, conflicts_with = "no_cache", hide = true)]
    pub gpus: bool,
    /// Print the node's scheduler features instead: `slurm-features`
    /// (comma-separated, for slurm.conf `Features=` or `scontrol update
    /// NodeName=N AvailableFeatures=...`) or `nfd-features` (a Kubernetes
    /// Node Feature Discovery `features.d` file). See docs/slurm.md
    /// "Scheduling".
    #[arg(long, value_enum, conflicts_with = "gpus")]
    pub format: Option<Format>,
}

/// The feature forms of `hpcc fingerprint --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `hpcc.cpu.zen3,hpcc.cpu.x86_64_v3,...`
    SlurmFeatures,
    /// `hpcc.cpu.zen3=true` a line.
    NfdFeatures,
}

/// Runs the command.
pub fn run(args: &Args, g: &Global, out: &Output) -> Result<i32, CliError> {
    if args.gpus {
        out.json(Kind::Gpus, &hpcc_common::fingerprint::gpus())?;
        return Ok(0);
    }
    let policy = Policy::load(&g.config)?;
    let fp = if args.no_cache {
        NodeFingerprint::take(&policy)
    } else {
        NodeFingerprint::cached(&policy)
    };
    if let Some(f) = args.format {
        let features = hpcc_common::node_features::of(&fp);
        if out.json {
            out.json(
                Kind::NodeFeatures,
                &serde_json::json!({ "features": features }),
            )?;
        } else {
            out.text(&match f {
                Format::SlurmFeatures => hpcc_common::node_features::slurm(&fp) + "\n",
                Format::NfdFeatures => hpcc_common::node_features::nfd(&fp),
            })?;
        }
    } else if out.json {
        out.json(Kind::Fingerprint, &fp)?;
    } else {
        out.text(&report::fingerprint(&fp))?;
    }
    Ok(0)
}
