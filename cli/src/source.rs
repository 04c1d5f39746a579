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
    /// archive (`oci-archive:FILE[:tag]`), an image config JSON, or an
    /// image in a registry (`docker://HOST/REPO:TAG`, `...@sha256:...`,
    /// or a short name `REPO:TAG` resolved through registries.conf).
    /// Only its index, manifest and config are read, never a layer.
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

/// How to reach a registry, for an IMAGE given as `docker://...` or a
/// short name (skopeo's option names).
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Verify the registry's TLS certificate against the system roots
    /// (and --ca-file); `--tls-verify=false` turns that off, as in skopeo.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// A PEM file of CA certificates to trust besides the system roots.
    #[arg(long, value_name = "FILE.pem")]
    pub ca_file: Option<PathBuf>,
    /// The auth file (podman's auth.json or docker's config.json format);
    /// default: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
    /// ~/.config/containers/auth.json, ~/.docker/config.json.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Bound, in seconds, on each registry request.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub registry_timeout: u64,
}

impl Default for RegistryArgs {
    fn default() -> Self {
        RegistryArgs {
            tls_verify: true,
            ca_file: None,
            authfile: None,
            registry_timeout: 30,
        }
    }
}

impl RegistryArgs {
    /// `input` parsed as an image, with these options on a registry one.
    pub fn parse(&self, input: &str) -> Result<hpcc_image::layout::ImageRef, CliError> {
        let mut r =
            hpcc_image::layout::ImageRef::parse(input).map_err(|e| CliError::Image(e.into()))?;
        if let hpcc_image::layout::ImageRef::Registry(reg) = &mut r {
            reg.options = hpcc_image::registry::RegistryOptions {
                tls_verify: self.tls_verify,
                ca_file: self.ca_file.clone(),
                auth_file: self.authfile.clone(),
                timeout: std::time::Duration::from_secs(self.registry_timeout.max(1)),
            };
        }
        Ok(r)
    }
}

impl SourceArgs {
    /// The image, when one was named.
    pub fn image_ref(
        &self,
        reg: &RegistryArgs,
    ) -> Result<Option<hpcc_image::layout::ImageRef>, CliError> {
        self.image.as_deref().map(|i| reg.parse(i)).transpose()
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
