//! `hpcc annotate IMAGE`: proposes annotations for an image from what its
//! layers hold (read in memory, bounded; nothing from the image runs),
//! each with its evidence.

use super::{CliError, Global, Output};
use hpcc_image::annotate::Format;
use hpcc_image::layout::ImageRef;

/// `hpcc annotate IMAGE [--format FORMAT]`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Reads an image's layers (tar, gzip, zstd) without running anything from them and \
proposes org.supercontainers.* annotations, each with its evidence: libc and glibc version, MPI \
implementation and version, libfabric and the FABRIC_1.x versions needed, UCX, Python and shells, \
and the CPU level the binaries need (x86-64 ISA level notes, else the instructions of the hot \
binaries, sampled). The output is key=value lines that buildah config --annotation, a Dockerfile \
LABEL or umoci config accept.",
    after_help = "Exit status: 0 proposed, 3 bad input."
)]
pub struct Args {
    /// An OCI layout (`DIR`, `DIR:tag`, `oci:DIR:tag`), an OCI archive
    /// (`oci-archive:FILE[:tag]`), or an image in a registry
    /// (`docker://HOST/REPO:TAG`, a short name) with --pull-layers.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// For an image in a registry: fetch its layers (this machine's
    /// platform; each bounded by its descriptor's size and verified) into
    /// a private temporary layout, read them there, remove it. Without it,
    /// hpcc never fetches a layer.
    #[arg(long)]
    pub pull_layers: bool,
    #[command(flatten)]
    pub registry: super::source::RegistryArgs,
    /// text (evidence as comments, then key=value), plain (key=value),
    /// dockerfile (LABEL lines), json, or nfd (a Kubernetes NFD image
    /// compatibility spec, v1alpha1).
    #[arg(long, value_name = "FORMAT", default_value = "text",
          value_parser = ["text", "plain", "dockerfile", "json", "nfd"])]
    pub format: String,
}

/// Runs the command.
pub fn run(args: &Args, _g: &Global, out: &Output) -> Result<i32, CliError> {
    let image = args.registry.parse(&args.image)?;
    let format = match (out.json, args.format.as_str()) {
        (true, _) | (_, "json") => Format::Json,
        (_, "plain") => Format::Plain,
        (_, "dockerfile") => Format::Dockerfile,
        (_, "nfd") => Format::Nfd,
        _ => Format::Text,
    };
    let (code, text) = match &image {
        ImageRef::Registry(r) if args.pull_layers => crate::image_cmd::annotate_pulled(r, format)?,
        ImageRef::Registry(r) => {
            return Err(CliError::Usage(format!(
                "annotate reads an image's layers and {r} is in a registry: give --pull-layers \
                 to fetch them (or copy it first: skopeo copy {r} oci:DIR:TAG)"
            )))
        }
        _ => crate::image_cmd::annotate(&image, format)?,
    };
    out.text(&text)?;
    Ok(code)
}
