//! Where an image's annotations come from: an image (`IMAGE`: an OCI
//! layout `DIR[:tag]`, an OCI archive, an image config JSON; see
//! docs/image-side.md), `--bundle DIR` (its `config.json`) or
//! `--annotations FILE.json`. Exactly one is required (a clap group).

use super::CliError;
use hpcc_common::oci::{self, LaunchContext};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The image to look at.
#[derive(Debug, Clone, Default, clap::Args)]
#[group(id = "source", required = true, multiple = false)]
pub struct SourceArgs {
    /// An image: an OCI layout (`DIR`, `DIR:tag`, `oci:DIR:tag`), an OCI
    /// archive (`oci-archive:FILE[:tag]`) or an image config JSON. Only
    /// its manifest and config are read, never a layer.
    #[arg(value_name = "IMAGE")]
    pub image: Option<String>,
    /// An OCI bundle: the annotations of DIR/config.json.
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// A JSON object of annotation keys to string values, as in
    /// config.json's "annotations".
    #[arg(long, value_name = "FILE.json")]
    pub annotations: Option<PathBuf>,
}

impl SourceArgs {
    /// The image, when one was named.
    pub fn image_ref(&self) -> Result<Option<hpcc_image::layout::ImageRef>, CliError> {
        self.image
            .as_deref()
            .map(hpcc_image::layout::ImageRef::parse)
            .transpose()
            .map_err(|e| CliError::Image(e.into()))
    }

    /// The launch context the core decides on.
    pub fn context(&self) -> Result<LaunchContext, CliError> {
        match (&self.bundle, &self.annotations) {
            (Some(dir), None) => {
                let spec = oci::load_bundle_config(dir)?;
                Ok(LaunchContext::from_bundle(dir, &spec))
            }
            (None, Some(f)) => Ok(LaunchContext::from_annotations(
                &f.file_stem()
                    .map_or("image".into(), |s| s.to_string_lossy().into_owned()),
                read_annotations_file(f)?,
            )),
            // clap's group makes this unreachable from the command line.
            _ => Err(CliError::Usage(
                "give exactly one of IMAGE, --bundle DIR or --annotations FILE.json".into(),
            )),
        }
    }
}

/// Reads a JSON object of annotation strings (bounded like config.json).
pub fn read_annotations_file(path: &Path) -> Result<BTreeMap<String, String>, CliError> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(oci::MAX_CONFIG_BYTES + 1).read_to_end(&mut buf))
        .map_err(|source| CliError::Read {
            path: path.to_owned(),
            source,
        })?;
    let input = |reason: String| CliError::Input {
        path: path.to_owned(),
        reason,
    };
    if buf.len() as u64 > oci::MAX_CONFIG_BYTES {
        return Err(input(format!(
            "larger than {} bytes",
            oci::MAX_CONFIG_BYTES
        )));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&buf).map_err(|e| input(format!("not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| input("expected a JSON object of annotation keys to values".into()))?;
    obj.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(input(format!(
                "annotation {k} must be a string, found {other}"
            ))),
        })
        .collect()
}
