//! `hpcc version` and `hpcc --version`: hpcc's version and the Slurm
//! release its SPANK plugin was built for (from `slurm/slurm_version.h`,
//! the header the plugin itself is built against; see `hook/build.rs`).

use super::{CliError, Global, Output};
use hpcc_common::schema::Kind;

/// The Slurm release the SPANK plugin was built for (`22.05.8`), empty
/// when this build had no Slurm headers (then no plugin was built).
pub const SLURM_RELEASE: &str = env!("HPCC_SLURM_RELEASE");

/// `SLURM_VERSION_NUMBER` of that release (0 without one).
pub fn slurm_version_number() -> u32 {
    env!("HPCC_SLURM_VERSION_NUMBER").parse().unwrap_or(0)
}

/// `0.1.0 (SPANK plugin built for Slurm 22.05.8)`: the version clap and
/// the man pages show.
pub const SHORT: &str = if SLURM_RELEASE.is_empty() {
    concat!(env!("CARGO_PKG_VERSION"), " (no Slurm plugin built)")
} else {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (SPANK plugin built for Slurm ",
        env!("HPCC_SLURM_RELEASE"),
        ")"
    )
};

/// `hpcc version`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Args {}

/// The version as a JSON document.
pub fn json() -> serde_json::Value {
    serde_json::json!({
        "name": "hpcc",
        "version": env!("CARGO_PKG_VERSION"),
        "slurm_plugin": if SLURM_RELEASE.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::json!({
                "built_for": SLURM_RELEASE,
                "slurm_version_number": slurm_version_number(),
            })
        },
    })
}

/// Runs the command.
pub fn run(_args: &Args, _g: &Global, out: &Output) -> Result<i32, CliError> {
    if out.json {
        out.json(Kind::Version, &json())?;
    } else {
        out.text(&format!("hpcc {SHORT}\n"))?;
    }
    Ok(0)
}
