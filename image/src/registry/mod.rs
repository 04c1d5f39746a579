//! Images in a registry, read through the OCI distribution API: only the
//! index, the manifest, the config and the NFD referrers are fetched,
//! never a layer (unless `hpcc annotate --pull-layers` asks, see
//! [`pull_layout`]); each response is bounded in size and time and its
//! digest checked.
//!
//! - [`reference`]: `docker://...` and short names (`registries.conf`);
//! - [`auth`]: credentials from podman's and docker's auth files;
//! - [`fetch`]: the client, its TLS and its bounds;
//! - [`pull`]: an image copied into a temporary OCI layout, layers included.
//!
//! Only the `hpcc` command links this (tokio, reqwest, OpenSSL): the hook,
//! the runtime and the SPANK plugin stay offline (see
//! `cli/tests/offline_launch.rs`).

pub mod auth;
pub mod fetch;
pub mod pull;
pub mod reference;

pub use pull::{pull_layout, PulledLayout};
pub use reference::RegistryRef;

use std::path::PathBuf;
use std::time::Duration;

/// How to reach a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Verify the server's certificate (skopeo's `--tls-verify`).
    pub tls_verify: bool,
    /// A PEM file of extra CA certificates to trust, besides the system
    /// roots (OpenSSL also honours `SSL_CERT_FILE`).
    pub ca_file: Option<PathBuf>,
    /// `--authfile`: replaces the search of [`auth::auth_files`].
    pub auth_file: Option<PathBuf>,
    /// Bound on each request, connection and transfer included.
    pub timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: true,
            ca_file: None,
            auth_file: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why a registry could not be read. Text the registry sent is escaped.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Not a registry reference.
    #[error("{input} is not an image reference: {reason}")]
    BadRef {
        /// What the user gave (escaped).
        input: String,
        /// Why.
        reason: String,
    },
    /// `registries.conf` or an auth file could not be read.
    #[error("{}: {reason}", path.display())]
    Conf {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An auth file's entry for the registry is not usable.
    #[error("{}: credentials for {registry}: {reason}", path.display())]
    Auth {
        /// The file.
        path: PathBuf,
        /// The registry.
        registry: String,
        /// Why.
        reason: String,
    },
    /// The CA file is not usable.
    #[error("CA file {}: {reason}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The async runtime could not start.
    #[error("cannot start the registry client: {0}")]
    Runtime(#[from] std::io::Error),
    /// The registry answered with an error, or could not be reached.
    #[error("registry {registry}: {what}: {reason}")]
    Answer {
        /// `host[:port]`.
        registry: String,
        /// What was asked for.
        what: String,
        /// What it answered (escaped).
        reason: String,
    },
    /// No answer within the bound.
    #[error("registry {registry}: {what}: no answer within {secs} s (--registry-timeout)")]
    Timeout {
        /// `host[:port]`.
        registry: String,
        /// What was asked for.
        what: String,
        /// The bound.
        secs: u64,
    },
    /// An answer over the size bound.
    #[error("registry {registry}: {what}: larger than {limit} bytes")]
    TooLarge {
        /// `host[:port]`.
        registry: String,
        /// What was asked for.
        what: String,
        /// The bound.
        limit: u64,
    },
    /// A manifest that is neither OCI nor Docker v2.2.
    #[error("registry {registry}: {what}: media type {media_type} is not an OCI or Docker v2.2 manifest or index")]
    NotOci {
        /// `host[:port]`.
        registry: String,
        /// What was asked for.
        what: String,
        /// What it said it is (escaped).
        media_type: String,
    },
}

use crate::layout::{self, media, Descriptor, Image, Index, Manifest};
use crate::{ImageError, Limits};
use fetch::Session;
use std::collections::BTreeMap;
use std::sync::Arc;

/// An index narrowed to this machine's platform, as a layout's is.
pub(crate) fn platform_entry(r: &RegistryRef, index: &Index) -> Result<Descriptor, ImageError> {
    let cands: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|m| m.artifact_type.is_none() && !m.is_index())
        .collect();
    layout::pick_platform(&cands).cloned().ok_or_else(|| {
        ImageError::layout(
            r.to_string(),
            format!(
                "an index of {} manifests and none only for linux/{}: choose one with hpcc select",
                cands.len(),
                layout::host_goarch()
            ),
        )
    })
}

/// Opens an image in a registry as [`Image::open`] opens a layout: an
/// index is narrowed to this machine's platform (as a layout's is), then
/// its manifest and config are fetched. No layer is fetched: the image has
/// no store, so [`Image::has_layers`] is false; its NFD referrers are
/// fetched when asked for ([`Image::referrers`]).
pub fn open_image(r: &RegistryRef, limits: &Limits) -> Result<Image, ImageError> {
    let s = Arc::new(Session::new(r, limits.max_json_bytes)?);
    let top = s.manifest(&r.reference)?;
    if top.media_type == media::INDEX || top.media_type == media::DOCKER_LIST {
        let index: Index = parse(&top.bytes, "index")?;
        let entry = platform_entry(r, &index)?;
        return open_entry(&s, r, &index, &entry, limits);
    }
    let manifest: Manifest = parse(&top.bytes, "manifest")?;
    finish(
        &s,
        r,
        top.digest,
        manifest,
        BTreeMap::new(),
        BTreeMap::new(),
        limits,
    )
}

/// The manifest an index entry points at, verified against the entry.
pub(crate) fn entry_manifest(
    s: &Session,
    r: &RegistryRef,
    entry: &Descriptor,
) -> Result<fetch::RawManifest, ImageError> {
    if entry.media_type != media::MANIFEST && entry.media_type != media::DOCKER_MANIFEST {
        return Err(ImageError::layout(
            format!("manifest {}", entry.digest.short()),
            format!(
                "media type {:?} is not an image manifest",
                hpcc_common::text::escape(&entry.media_type)
            ),
        ));
    }
    let raw = s.manifest(&r.with_digest(&entry.digest.to_string()))?;
    layout::verify("manifest", entry, &raw.bytes)?;
    Ok(raw)
}

/// Opens the manifest an index entry points at.
pub(crate) fn open_entry(
    s: &Arc<Session>,
    r: &RegistryRef,
    index: &Index,
    entry: &Descriptor,
    limits: &Limits,
) -> Result<Image, ImageError> {
    let raw = entry_manifest(s, r, entry)?;
    let manifest: Manifest = parse(&raw.bytes, "manifest")?;
    finish(
        s,
        r,
        raw.digest,
        manifest,
        index.annotations.clone().unwrap_or_default(),
        entry.annotations.clone().unwrap_or_default(),
        limits,
    )
}

fn finish(
    s: &Arc<Session>,
    r: &RegistryRef,
    digest: layout::Digest,
    manifest: Manifest,
    index_annotations: BTreeMap<String, String>,
    descriptor_annotations: BTreeMap<String, String>,
    limits: &Limits,
) -> Result<Image, ImageError> {
    let what = format!("image config {}", manifest.config.digest.short());
    let cfg = s.blob(&manifest.config, &what)?;
    let (config, platform) = layout::parse_config(&cfg, &what)?;
    if manifest.layers.len() > limits.max_layers {
        return Err(ImageError::Limit {
            what: format!("manifest {}", digest.short()),
            limit: format!("{} layers", limits.max_layers),
            hint: "Limits::max_layers",
        });
    }
    Ok(Image {
        reference: r.to_string(),
        store: None,
        remote: Some(Arc::clone(s)),
        manifest_digest: Some(digest),
        ref_name: r.reference.tag().map(str::to_owned),
        index_annotations,
        descriptor_annotations,
        manifest_annotations: manifest.annotations.unwrap_or_default(),
        labels: config.labels.clone().unwrap_or_default(),
        config,
        platform,
        layers: manifest.layers,
    })
}

/// The artifacts of `artifact_type` whose `subject` is the manifest
/// `digest` of `s`'s repository, each as its manifest (fetched by digest,
/// verified against the referrers' descriptor, its subject checked). At
/// most 16 are read.
pub(crate) fn referrers(
    s: &Session,
    digest: &layout::Digest,
    artifact_type: &str,
    _limits: &Limits,
) -> Result<Vec<Manifest>, ImageError> {
    let mut out = Vec::new();
    for d in s.referrers(digest, artifact_type)?.iter().take(16) {
        let what = format!("referrer {} of {}", d.digest.short(), digest.short());
        let raw = s.manifest(&s.reference_at(&d.digest))?;
        layout::verify(&what, d, &raw.bytes)?;
        let m: Manifest = parse(&raw.bytes, &what)?;
        let ty = m
            .artifact_type
            .as_deref()
            .or(d.artifact_type.as_deref())
            .unwrap_or(m.config.media_type.as_str());
        if ty == artifact_type && m.subject.as_ref().is_some_and(|x| &x.digest == digest) {
            out.push(m);
        }
    }
    Ok(out)
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Json {
        what: what.to_owned(),
        source,
    })
}

/// Every image manifest of the index `r` names, each with its entry (one,
/// with a synthetic entry, when `r` names a plain manifest).
pub(crate) fn open_variants(
    r: &RegistryRef,
    limits: &Limits,
) -> Result<Vec<(Descriptor, Image)>, ImageError> {
    let s = Arc::new(Session::new(r, limits.max_json_bytes)?);
    let top = s.manifest(&r.reference)?;
    if top.media_type == media::INDEX || top.media_type == media::DOCKER_LIST {
        let index: Index = parse(&top.bytes, "index")?;
        return index
            .manifests
            .iter()
            .filter(|m| m.artifact_type.is_none() && !m.is_index())
            .take(256)
            .map(|e| Ok((e.clone(), open_entry(&s, r, &index, e, limits)?)))
            .collect();
    }
    let manifest: Manifest = parse(&top.bytes, "manifest")?;
    let entry = top.descriptor();
    let img = finish(
        &s,
        r,
        top.digest,
        manifest,
        BTreeMap::new(),
        BTreeMap::new(),
        limits,
    )?;
    Ok(vec![(entry, img)])
}
