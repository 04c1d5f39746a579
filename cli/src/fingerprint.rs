//! `hpcc fingerprint`: what this node offers (exit 0, 3 on error).

use super::{CliError, Global, Output};
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::report;
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
}

/// Runs the command.
pub fn run(args: &Args, g: &Global, out: &Output) -> Result<i32, CliError> {
    if args.gpus {
        out.json(&hpcc_common::fingerprint::gpus())?;
        return Ok(0);
    }
    let policy = Policy::load(&g.config)?;
    let fp = if args.no_cache {
        NodeFingerprint::take(&policy)
    } else {
        NodeFingerprint::cached(&policy)
    };
    if out.json {
        out.json(&fp)?;
    } else {
        out.text(&report::fingerprint(&fp))?;
    }
    Ok(0)
}
