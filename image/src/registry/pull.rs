//! `hpcc annotate --pull-layers`: the one place a layer leaves a
//! registry. The image (narrowed to this machine's platform, as
//! [`super::open_image`] does) is copied into a private temporary OCI
//! layout, each blob streamed to its file up to its descriptor's size and
//! verified, so annotate reads it exactly as it reads a layout on disk.

use super::fetch::Session;
use super::{entry_manifest, parse, platform_entry, RegistryRef};
use crate::layout::{media, Descriptor, ImageRef, Index, Manifest};
use crate::{ImageError, Limits};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The tag the pulled image has in its temporary layout.
const TAG: &str = "pulled";

/// A temporary layout holding a pulled image; removed on drop.
#[derive(Debug)]
pub struct PulledLayout {
    dir: PathBuf,
    /// The image in it.
    pub image: ImageRef,
}

impl Drop for PulledLayout {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl PulledLayout {
    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Copies `r` (its index entry for this platform, its manifest, config and
/// layers) into a new directory under `$TMPDIR` (mode 0700). The layers'
/// compressed sizes together may not pass `limits.max_total_bytes`.
pub fn pull_layout(r: &RegistryRef, limits: &Limits) -> Result<PulledLayout, ImageError> {
    let s = Session::new(r, limits.max_json_bytes)?;
    let top = s.manifest(&r.reference)?;
    let (entry, raw, index_annotations) =
        if top.media_type == media::INDEX || top.media_type == media::DOCKER_LIST {
            let index: Index = parse(&top.bytes, "index")?;
            let entry = platform_entry(r, &index)?;
            let raw = entry_manifest(&s, r, &entry)?;
            (entry, raw, index.annotations.clone())
        } else {
            (top.descriptor(), top, None)
        };
    let manifest: Manifest = parse(&raw.bytes, "manifest")?;
    if manifest.layers.len() > limits.max_layers {
        return Err(ImageError::Limit {
            what: format!("manifest {}", raw.digest.short()),
            limit: format!("{} layers", limits.max_layers),
            hint: "Limits::max_layers",
        });
    }
    // Summed without wrapping: a hostile registry's sizes near 2^64 must
    // not add up to a small total that passes the bound.
    let total = manifest
        .layers
        .iter()
        .try_fold(0u64, |a, l| a.checked_add(l.size));
    if total.is_none_or(|t| t > limits.max_total_bytes) {
        return Err(ImageError::Limit {
            what: format!("the layers of {r}"),
            limit: format!("{} bytes", limits.max_total_bytes),
            hint: "Limits::max_total_bytes",
        });
    }
    let dir = new_dir()?;
    let pulled = PulledLayout {
        dir: dir.clone(),
        image: ImageRef::Layout {
            dir: dir.clone(),
            tag: Some(TAG.into()),
        },
    };
    let io = |what: &str, e: std::io::Error| ImageError::io(what, e);
    let blobs = dir.join("blobs");
    for alg in ["sha256", "sha512"] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(blobs.join(alg))
            .map_err(|e| io(&blobs.display().to_string(), e))?;
    }
    let write = |rel: &str, bytes: &[u8]| {
        let p = dir.join(rel);
        std::fs::write(&p, bytes).map_err(|e| io(&p.display().to_string(), e))
    };
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    write(&raw.digest.blob_path(), &raw.bytes)?;
    let what = format!("image config {}", manifest.config.digest.short());
    write(
        &manifest.config.digest.blob_path(),
        &s.blob(&manifest.config, &what)?,
    )?;
    for (i, l) in manifest.layers.iter().enumerate() {
        let p = dir.join(l.digest.blob_path());
        if p.exists() {
            continue;
        }
        let what = format!("layer {} ({})", i + 1, l.digest.short());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| io(&p.display().to_string(), e))?;
        s.blob_to_file(l, &mut f, &what)?;
        f.flush().map_err(|e| io(&p.display().to_string(), e))?;
    }
    let mut annotations = entry.annotations.clone().unwrap_or_default();
    annotations.insert("org.opencontainers.image.ref.name".into(), TAG.into());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [Descriptor {
            annotations: Some(annotations),
            artifact_type: None,
            ..entry
        }],
        "annotations": index_annotations.unwrap_or_else(BTreeMap::new),
    });
    write("index.json", index.to_string().as_bytes())?;
    Ok(pulled)
}

/// A new private directory under `$TMPDIR`.
fn new_dir() -> Result<PathBuf, ImageError> {
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut last = None;
    for i in 0..16u32 {
        let p = base.join(format!(
            "hpcc-pull-{}-{:08x}",
            std::process::id(),
            nanos.wrapping_add(i.wrapping_mul(0x9e37_79b9))
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(ImageError::io(p.display().to_string(), e)),
        }
    }
    Err(ImageError::io(
        base.display().to_string(),
        last.unwrap_or_else(|| std::io::Error::other("no free name")),
    ))
}
