//! `hpcc cdi generate`: this node's host MPIs, libfabric and UCX as CDI
//! specs (`hpcc_common::cdi_offer`), for engines that take devices through
//! CDI (podman `--device hpcc.io/mpi=mpich`, CRI-O, containerd, Slurm's
//! `oci.conf`). docs/cdi.md.

use super::{CliError, Global, Output};
use hpcc_common::cdi_offer::{self, HookRef};
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::schema::Kind;
use hpcc_config::Policy;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// `hpcc cdi SUBCOMMAND`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: CdiCommand,
}

/// The `cdi` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CdiCommand {
    /// Write CDI specs of what this node offers images (host MPI, libfabric, UCX).
    Generate(GenerateArgs),
}

/// `hpcc cdi generate [--output-dir DIR] [--hook PATH] [--stdout]`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Write one CDI spec per kind this node offers: hpcc.io/mpi=NAME for each \
[mpi.NAME] of the policy, hpcc.io/fabric=libfabric, hpcc.io/ucx=host. Each device carries the \
mounts and environment of hpcc's own plan for that component, and a createRuntime hook that \
runs hpcc-hook to decide the launch and add the libraries to the container's linker cache. \
Written atomically, mode 0644, at the lowest cdiVersion the spec needs; hpcc's spec of a kind no \
longer offered is removed. Run at boot by hpcc-cdi-refresh.service and by `hpcc doctor --fix`."
)]
pub struct GenerateArgs {
    /// The CDI spec directory (`/etc/cdi` for static specs; engines read both).
    #[arg(long, value_name = "DIR", default_value = cdi_offer::DEFAULT_OUTPUT_DIR)]
    pub output_dir: PathBuf,
    /// The static hpcc-hook the specs' hook entries run.
    #[arg(long, value_name = "PATH", default_value = cdi_offer::DEFAULT_HOOK)]
    pub hook: PathBuf,
    /// Print the specs instead of writing them.
    #[arg(long)]
    pub stdout: bool,
}

/// The `--json` answer.
#[derive(Debug, Serialize)]
struct Report {
    output_dir: PathBuf,
    written: Vec<PathBuf>,
    offered: Vec<String>,
    withheld: Vec<Withheld>,
    specs: Vec<cdi_offer::SpecOut>,
}

#[derive(Debug, Serialize)]
struct Withheld {
    device: String,
    reason: String,
}

/// The `--json` document (docs/schema/cdi.schema.json).
fn report(
    dir: &Path,
    written: Vec<PathBuf>,
    offers: &cdi_offer::Offers,
    specs: Vec<cdi_offer::SpecOut>,
) -> Report {
    Report {
        output_dir: dir.to_owned(),
        written,
        offered: offers.offers.iter().map(|o| o.qualified()).collect(),
        withheld: offers
            .withheld
            .iter()
            .map(|w| Withheld {
                device: w.device.clone(),
                reason: w.reason.clone(),
            })
            .collect(),
        specs,
    }
}

/// Runs `hpcc cdi ...`.
pub fn run(args: &Args, g: &Global, out: &Output) -> Result<i32, CliError> {
    match &args.command {
        CdiCommand::Generate(a) => generate(a, g, out),
    }
}

/// The specs of this node under the policy at `config`, and what was held
/// back.
pub fn plan(
    config: &Path,
    hook: &Path,
) -> Result<(Vec<cdi_offer::SpecOut>, cdi_offer::Offers), CliError> {
    let policy = Policy::load(config)?;
    let node = NodeFingerprint::cached(&policy);
    let offers = cdi_offer::offers_here(&node, &policy).map_err(CliError::Cdi)?;
    let hook = HookRef {
        path: hook.to_owned(),
        config: config.to_owned(),
        ..HookRef::default()
    };
    Ok((cdi_offer::specs(&offers.offers, &hook), offers))
}

/// Generates and writes (or prints) the specs; returns the files written.
pub fn write(config: &Path, hook: &Path, dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let (specs, _) = plan(config, hook)?;
    cdi_offer::write_specs(dir, &specs).map_err(CliError::Cdi)
}

fn generate(a: &GenerateArgs, g: &Global, out: &Output) -> Result<i32, CliError> {
    let (specs, offers) = plan(&g.config, &a.hook)?;
    let written = if a.stdout {
        vec![]
    } else {
        cdi_offer::write_specs(&a.output_dir, &specs).map_err(CliError::Cdi)?
    };
    if out.json {
        out.json(Kind::Cdi, &report(&a.output_dir, written, &offers, specs))?;
        return Ok(0);
    }
    if a.stdout {
        for s in &specs {
            out.text(&format!("{}\n", serde_json::to_string_pretty(s)?))?;
        }
        return Ok(0);
    }
    let mut text = String::new();
    for o in &offers.offers {
        text.push_str(&format!(
            "offered  {}  ({} mounts, {} linker cache entries, {} variables)\n",
            o.qualified(),
            o.tweaks.mounts.len(),
            o.tweaks.ld_cache.len(),
            o.tweaks.env.len()
        ));
    }
    for w in &offers.withheld {
        text.push_str(&format!("withheld {}: {}\n", w.device, w.reason));
    }
    for f in &written {
        text.push_str(&format!("wrote    {}\n", f.display()));
    }
    if specs.is_empty() {
        text.push_str("the policy offers no host MPI, libfabric or UCX: no hpcc CDI spec\n");
    }
    out.text(&text)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answer_follows_its_schema() {
        let dir = std::env::temp_dir().join(format!("hpcc-cli-cdi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("hook.toml");
        std::fs::write(
            &policy,
            "[mpi.mpich]\nabi = \"mpich\"\nlibraries = [\"/usr/lib/x86_64-linux-gnu/libmpich.so.12\"]\n[tweaks]\nucx_replace = false\n[ucx]\nlibraries = [\"/usr/lib/x86_64-linux-gnu/libucp.so.0\"]\n[cache]\nenabled = false\n[log]\njournald = false\n",
        )
        .unwrap();
        let (specs, offers) = plan(&policy, Path::new(cdi_offer::DEFAULT_HOOK)).unwrap();
        let written = cdi_offer::write_specs(&dir.join("cdi"), &specs).unwrap();
        let doc = hpcc_common::schema::to_value(
            Kind::Cdi,
            &report(&dir.join("cdi"), written, &offers, specs),
        )
        .unwrap();
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/schema/cdi.schema.json")).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{doc:#}");
        assert_eq!(doc["offered"][0], "hpcc.io/mpi=mpich");
        assert_eq!(doc["withheld"][0]["device"], "hpcc.io/ucx=host");
        // The schema is not a formality.
        let mut bad = doc.clone();
        bad["kind"] = "verdict".into();
        assert!(!v.is_valid(&bad));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
