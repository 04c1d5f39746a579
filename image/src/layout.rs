//! Image references and the image's metadata: index, manifest, config.
//!
//! Three inputs are accepted: an OCI image layout directory (`DIR`,
//! `DIR:tag`, `oci:DIR:tag`), an OCI archive (`FILE.tar`, `FILE:tag`,
//! `oci-archive:FILE:tag`: the same layout in one tar, read in place), and
//! an image config JSON (`FILE.json`, `config:FILE`: the config blob, or
//! what `docker inspect` or `skopeo inspect --config` prints).
//!
//! Every blob is read by digest, bounded by [`Limits::max_json_bytes`], and
//! checked against its descriptor (digest and size) before it is parsed.
//! Blob files are opened without following symlinks: a layout is a
//! directory someone handed us.
//!
//! ## Where annotations come from, and which wins
//!
//! An image's `org.supercontainers.*` keys can be in four places; when they
//! disagree, the more specific one wins ([`Source`] is ordered that way):
//!
//! 1. the index's own `annotations` (they describe every image of the
//!    index): lowest;
//! 2. the image config's `Labels` (`LABEL`, `buildah config --label`,
//!    `umoci config --config.label`), inherited from the base image by
//!    `FROM`;
//! 3. the manifest's `annotations` (`buildah config --annotation`,
//!    `umoci config --manifest.annotation`, `oras`, `crane`): added to this
//!    image, possibly after it was built;
//! 4. the annotations of the index entry that points at the manifest
//!    (`buildah manifest annotate`, the tag's own entry in `index.json`):
//!    highest, as they are set per reference without changing the image.
//!
//! Every disagreement is kept as a [`Conflict`] so `hpcc check` can show it:
//! at launch some engines see only the labels (`umoci unpack`, hence Slurm
//! bundles), so a label that a manifest annotation overrides here is still
//! what the hook reads there.

use super::{ImageError, Limits};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// OCI media types this reader knows.
pub mod media {
    /// OCI image index.
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// Docker manifest list (same shape as an index).
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image manifest (same shape as an OCI manifest).
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
}

/// The annotation that names a tag in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What the user named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI image layout directory, and a tag in it.
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// `org.opencontainers.image.ref.name`; `None`: the only image.
        tag: Option<String>,
    },
    /// An OCI archive (a layout in one tar file).
    Archive {
        /// The tar file.
        file: PathBuf,
        /// Tag inside it.
        tag: Option<String>,
    },
    /// An image config JSON (no layers).
    Config(PathBuf),
    /// An image in a registry (`docker://...` or a short name).
    Registry(Box<crate::registry::RegistryRef>),
}

impl ImageRef {
    /// Parses `oci:DIR[:tag]`, `oci-archive:FILE[:tag]`, `config:FILE`, or
    /// a bare `DIR[:tag]` / `FILE[:tag]` / `FILE.json`, looking at what
    /// exists on disk to tell them apart.
    pub fn parse(input: &str) -> Result<ImageRef, ImageError> {
        let bad = |reason: &str| ImageError::BadRef {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        if input.is_empty() || input.len() > 4096 || input.contains('\0') {
            return Err(bad("empty, too long or contains a NUL byte"));
        }
        let split_tag = |s: &str| -> (PathBuf, Option<String>) {
            match s.rsplit_once(':') {
                Some((p, t)) if !t.is_empty() && !t.contains('/') => {
                    (PathBuf::from(p), Some(t.to_owned()))
                }
                _ => (PathBuf::from(s), None),
            }
        };
        if let Some(rest) = input.strip_prefix("oci:") {
            let (dir, tag) = if Path::new(rest).is_dir() {
                (PathBuf::from(rest), None)
            } else {
                split_tag(rest)
            };
            return Ok(ImageRef::Layout { dir, tag });
        }
        if let Some(rest) = input.strip_prefix("oci-archive:") {
            let (file, tag) = if Path::new(rest).is_file() {
                (PathBuf::from(rest), None)
            } else {
                split_tag(rest)
            };
            return Ok(ImageRef::Archive { file, tag });
        }
        if input.starts_with("docker://") {
            return Ok(ImageRef::Registry(Box::new(
                crate::registry::RegistryRef::parse_docker(input)?,
            )));
        }
        if let Some(rest) = input.strip_prefix("config:") {
            return Ok(ImageRef::Config(PathBuf::from(rest)));
        }
        let whole = Path::new(input);
        if whole.is_dir() {
            return Ok(ImageRef::Layout {
                dir: whole.to_owned(),
                tag: None,
            });
        }
        if whole.is_file() {
            return Ok(if is_json_file(whole) {
                ImageRef::Config(whole.to_owned())
            } else {
                ImageRef::Archive {
                    file: whole.to_owned(),
                    tag: None,
                }
            });
        }
        let (path, tag) = split_tag(input);
        if tag.is_some() && path.is_dir() {
            return Ok(ImageRef::Layout { dir: path, tag });
        }
        if tag.is_some() && path.is_file() {
            return Ok(ImageRef::Archive { file: path, tag });
        }
        // Nothing on disk: a registry short name (`repo:tag`), unless it
        // can only be a path.
        let pathlike = input.starts_with('/')
            || input.starts_with('.')
            || input.ends_with(".json")
            || input.ends_with(".tar");
        if !pathlike {
            if let Ok(r) = crate::registry::RegistryRef::parse_short(input) {
                return Ok(ImageRef::Registry(Box::new(r)));
            }
        }
        Err(bad(
            "no such OCI layout directory, OCI archive or image config JSON (expected DIR[:tag], FILE.tar[:tag] or FILE.json), nor a registry image (docker://HOST/REPO:TAG, or a short name registries.conf resolves)",
        ))
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Layout { dir, tag } => {
                write!(f, "oci:{}", dir.display())?;
                tag.as_ref().map_or(Ok(()), |t| write!(f, ":{t}"))
            }
            ImageRef::Archive { file, tag } => {
                write!(f, "oci-archive:{}", file.display())?;
                tag.as_ref().map_or(Ok(()), |t| write!(f, ":{t}"))
            }
            ImageRef::Config(p) => write!(f, "config:{}", p.display()),
            ImageRef::Registry(r) => write!(f, "{r}"),
        }
    }
}

fn is_json_file(p: &Path) -> bool {
    if p.extension().is_some_and(|e| e == "json") {
        return true;
    }
    let mut first = [0u8; 64];
    File::open(p)
        .and_then(|mut f| f.read(&mut first))
        .map(|n| {
            first[..n]
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| *b == b'{' || *b == b'[')
        })
        .unwrap_or(false)
}

/// A content digest (`sha256:<64 hex>` or `sha512:<128 hex>`), validated so
/// it can name a file under `blobs/` without any path trickery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    algorithm: String,
    hex: String,
}

impl Digest {
    /// Parses and validates a digest string.
    pub fn parse(s: &str) -> Result<Digest, ImageError> {
        let bad = || {
            ImageError::layout(
                format!("digest {s:?}"),
                "not sha256:<64 hex> or sha512:<128 hex>",
            )
        };
        let (alg, hex) = s.split_once(':').ok_or_else(bad)?;
        let (algorithm, len) = match alg {
            "sha256" => ("sha256", 64),
            "sha512" => ("sha512", 128),
            _ => return Err(bad()),
        };
        if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        Ok(Digest {
            algorithm: algorithm.to_owned(),
            hex: hex.to_owned(),
        })
    }

    /// `blobs/<alg>/<hex>`.
    pub fn blob_path(&self) -> String {
        format!("blobs/{}/{}", self.algorithm, self.hex)
    }

    /// A hasher for this digest's algorithm.
    pub(crate) fn hasher(&self) -> Hasher {
        match self.algorithm.as_str() {
            "sha512" => Hasher::Sha512(sha2::Sha512::new()),
            _ => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    /// `sha256` or `sha512`.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// The hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, for messages.
    pub fn short(&self) -> String {
        format!("{}:{}", self.algorithm, &self.hex[..12])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl TryFrom<String> for Digest {
    type Error = ImageError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

/// A running digest of a blob being read.
pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub(crate) fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    pub(crate) fn finish_hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Checks `bytes` against a descriptor.
pub(crate) fn verify(what: &str, d: &Descriptor, bytes: &[u8]) -> Result<(), ImageError> {
    if bytes.len() as u64 != d.size {
        return Err(ImageError::Mismatch {
            what: what.to_owned(),
            reason: format!("descriptor says {} bytes, blob has {}", d.size, bytes.len()),
        });
    }
    let mut h = d.digest.hasher();
    h.update(bytes);
    let got = h.finish_hex();
    if got != d.digest.hex {
        return Err(ImageError::Mismatch {
            what: what.to_owned(),
            reason: format!(
                "digest is {}:{got}, descriptor says {}",
                d.digest.algorithm, d.digest
            ),
        });
    }
    Ok(())
}

/// A platform, as in an index entry or an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, ...
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// `v8`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Reserved by the OCI spec; MetaHub collections put `cpu:zen3` here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// `os.features`.
    #[serde(default, rename = "os.features", skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the target.
    #[serde(default)]
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Annotations on this reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Artifact type of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    pub(crate) fn is_index(&self) -> bool {
        self.media_type == media::INDEX || self.media_type == media::DOCKER_LIST
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    #[serde(default)]
    pub(crate) manifests: Vec<Descriptor>,
    #[serde(default)]
    pub(crate) annotations: Option<BTreeMap<String, String>>,
}

/// An OCI manifest (image or artifact).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// `application/vnd.oci.image.manifest.v1+json` when set.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Artifact type (artifacts only).
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest's own annotations.
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The manifest this one refers to (artifacts attached to an image).
    #[serde(default)]
    pub subject: Option<Descriptor>,
}

/// The part of the image config that says how the container starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `ENTRYPOINT`.
    #[serde(default, alias = "Entrypoint")]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default, alias = "Cmd")]
    pub cmd: Option<Vec<String>>,
    /// `ENV`.
    #[serde(default, alias = "Env")]
    pub env: Option<Vec<String>>,
    /// `WORKDIR`.
    #[serde(default, alias = "WorkingDir")]
    pub working_dir: Option<String>,
    /// `USER`.
    #[serde(default, alias = "User")]
    pub user: Option<String>,
    /// `LABEL`s.
    #[serde(default, alias = "Labels", skip_serializing)]
    pub labels: Option<BTreeMap<String, String>>,
}

impl RunConfig {
    /// The value of `ENV` variable `name`.
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .as_deref()?
            .iter()
            .rev()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }
}

/// What image config JSON this reader accepts: the OCI config blob
/// (`config`), or `docker inspect` / `podman inspect` output (`Config`, and
/// a one-element array of it).
pub(crate) fn parse_config(bytes: &[u8], what: &str) -> Result<(RunConfig, Platform), ImageError> {
    let json = |source| ImageError::Json {
        what: what.to_owned(),
        source,
    };
    let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(json)?;
    if let serde_json::Value::Array(items) = &mut v {
        if items.len() != 1 {
            return Err(ImageError::layout(
                what,
                format!("an array of {} images: give one image config", items.len()),
            ));
        }
        v = items.remove(0);
    }
    let obj = v
        .as_object()
        .ok_or_else(|| ImageError::layout(what, "not a JSON object"))?;
    let run = match obj.get("config").or_else(|| obj.get("Config")) {
        Some(c) if !c.is_null() => serde_json::from_value(c.clone()).map_err(json)?,
        _ => RunConfig::default(),
    };
    let text = |k: &str, alt: &str| {
        obj.get(k)
            .or_else(|| obj.get(alt))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let platform = Platform {
        architecture: text("architecture", "Architecture"),
        os: text("os", "Os"),
        variant: obj
            .get("variant")
            .or_else(|| obj.get("Variant"))
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        features: vec![],
        os_features: vec![],
    };
    Ok((run, platform))
}

/// Where a blob comes from: a layout directory or an OCI archive read in
/// place.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    Dir(PathBuf),
    Archive {
        file: PathBuf,
        /// Member name -> (offset of its data, size).
        members: HashMap<String, (u64, u64)>,
    },
}

/// Most members of an OCI archive.
const MAX_ARCHIVE_MEMBERS: usize = 200_000;

impl Store {
    fn archive(file: &Path) -> Result<Store, ImageError> {
        let what = file.display().to_string();
        let f = File::open(file).map_err(|e| ImageError::io(&what, e))?;
        let mut ar = tar::Archive::new(f);
        let mut members = HashMap::new();
        let entries = ar.entries().map_err(|e| ImageError::io(&what, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::Layout {
                what: what.clone(),
                reason: format!("not an OCI archive (tar): {e}"),
            })?;
            if members.len() >= MAX_ARCHIVE_MEMBERS {
                return Err(ImageError::Limit {
                    what: what.clone(),
                    limit: format!("{MAX_ARCHIVE_MEMBERS} members"),
                    hint: "an OCI archive holds blobs and three metadata files",
                });
            }
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let name = entry
                .path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = name.trim_start_matches("./").to_owned();
            members.insert(name, (entry.raw_file_position(), entry.size()));
        }
        if !members.contains_key("index.json") {
            return Err(ImageError::layout(
                what,
                "not an OCI archive: it has no index.json",
            ));
        }
        Ok(Store::Archive {
            file: file.to_owned(),
            members,
        })
    }

    /// Opens a member (`index.json`, `blobs/sha256/...`) for reading, with
    /// its size. In a directory, neither the member nor `blobs/<alg>` may be
    /// a symlink, and the member must be a regular file.
    pub(crate) fn open(&self, rel: &str) -> Result<(Box<dyn Read + Send>, u64), ImageError> {
        match self {
            Store::Dir(dir) => {
                let path = dir.join(rel);
                let what = path.display().to_string();
                let mut parent = dir.clone();
                for comp in Path::new(rel)
                    .parent()
                    .into_iter()
                    .flat_map(|p| p.components())
                {
                    parent.push(comp);
                    let meta =
                        std::fs::symlink_metadata(&parent).map_err(|e| ImageError::io(&what, e))?;
                    if !meta.is_dir() {
                        return Err(ImageError::layout(
                            &what,
                            format!(
                                "{} is not a directory (symlinks are not followed)",
                                parent.display()
                            ),
                        ));
                    }
                }
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                    .open(&path)
                    .map_err(|e| ImageError::io(&what, e))?;
                let meta = f.metadata().map_err(|e| ImageError::io(&what, e))?;
                if !meta.is_file() {
                    return Err(ImageError::layout(what, "not a regular file"));
                }
                Ok((Box::new(f), meta.len()))
            }
            Store::Archive { file, members } => {
                let what = format!("{}!{rel}", file.display());
                let (off, size) = *members
                    .get(rel)
                    .ok_or_else(|| ImageError::layout(&what, "no such member in the archive"))?;
                let mut f = File::open(file).map_err(|e| ImageError::io(&what, e))?;
                f.seek(SeekFrom::Start(off))
                    .map_err(|e| ImageError::io(&what, e))?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    /// Reads a small member whole, bounded.
    fn read_small(&self, rel: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
        let (r, size) = self.open(rel)?;
        let what = self.describe(rel);
        if size > limit {
            return Err(ImageError::Limit {
                what,
                limit: format!("{limit} bytes"),
                hint: "Limits::max_json_bytes",
            });
        }
        hpcc_common::io::read_bounded(r, limit).map_err(|e| match e {
            hpcc_common::io::ReadError::Io(e) => ImageError::io(&what, e),
            hpcc_common::io::ReadError::TooLarge { limit } => ImageError::Limit {
                what: what.clone(),
                limit: format!("{limit} bytes"),
                hint: "Limits::max_json_bytes",
            },
        })
    }

    /// Reads a blob whole, bounded, verified against its descriptor.
    pub(crate) fn read_blob(
        &self,
        d: &Descriptor,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, ImageError> {
        if d.size > limit {
            return Err(ImageError::Limit {
                what: format!("{what} ({})", d.digest.short()),
                limit: format!("{limit} bytes"),
                hint: "Limits::max_json_bytes",
            });
        }
        let bytes = self.read_small(&d.digest.blob_path(), limit)?;
        verify(what, d, &bytes)?;
        Ok(bytes)
    }

    pub(crate) fn describe(&self, rel: &str) -> String {
        match self {
            Store::Dir(d) => d.join(rel).display().to_string(),
            Store::Archive { file, .. } => format!("{}!{rel}", file.display()),
        }
    }
}

/// Where one annotation value was found, in increasing precedence.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A curated collection file (lowest, unless the policy puts it on top;
    /// see [`hpcc_common::collections`]).
    Collection(String),
    /// The index's own annotations.
    IndexAnnotation,
    /// The image config's `Labels`.
    ConfigLabel,
    /// The manifest's annotations.
    ManifestAnnotation,
    /// The index entry that points at the manifest.
    DescriptorAnnotation,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Collection(file) => write!(f, "collection {file}"),
            Source::IndexAnnotation => f.write_str("index annotation"),
            Source::ConfigLabel => f.write_str("config label"),
            Source::ManifestAnnotation => f.write_str("manifest annotation"),
            Source::DescriptorAnnotation => f.write_str("index entry annotation"),
        }
    }
}

/// One key's value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sourced {
    /// The value.
    pub value: String,
    /// Where it was found.
    pub source: Source,
}

/// A key set differently in two places.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The key.
    pub key: String,
    /// The value used.
    pub used: Sourced,
    /// The values it overrode.
    pub overridden: Vec<Sourced>,
}

/// The image's annotations, merged by precedence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedAnnotations {
    /// Key -> winning value.
    pub values: BTreeMap<String, Sourced>,
    /// Keys whose sources disagreed (only `org.supercontainers.*`).
    pub conflicts: Vec<Conflict>,
}

impl MergedAnnotations {
    /// Merges layers of annotations given lowest precedence first.
    pub fn merge<'a>(
        layers: impl IntoIterator<Item = (Source, &'a BTreeMap<String, String>)>,
    ) -> MergedAnnotations {
        let mut all: BTreeMap<String, Vec<Sourced>> = BTreeMap::new();
        for (source, map) in layers {
            for (k, v) in map {
                all.entry(k.clone()).or_default().push(Sourced {
                    value: v.clone(),
                    source: source.clone(),
                });
            }
        }
        let mut out = MergedAnnotations::default();
        for (key, mut vals) in all {
            let Some(used) = vals.pop() else { continue };
            let overridden: Vec<Sourced> =
                vals.into_iter().filter(|s| s.value != used.value).collect();
            if !overridden.is_empty() && key.starts_with(hpcc_common::annotations::PREFIX) {
                out.conflicts.push(Conflict {
                    key: key.clone(),
                    used: used.clone(),
                    overridden,
                });
            }
            out.values.insert(key, used);
        }
        out
    }

    /// `(key, value)` pairs for [`hpcc_common::annotations::ImageSpec::from_annotations`].
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .map(|(k, s)| (k.as_str(), s.value.as_str()))
    }

    /// Key -> value.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .map(|(k, s)| (k.clone(), s.value.clone()))
            .collect()
    }
}

/// An opened image: its metadata, and where its blobs are.
#[derive(Debug)]
pub struct Image {
    /// The reference as given.
    pub reference: String,
    pub(crate) store: Option<Store>,
    /// The registry it was read from (its referrers and small blobs are
    /// fetched from there, never its layers).
    pub(crate) remote: Option<std::sync::Arc<crate::registry::fetch::Session>>,
    /// Digest of the image manifest (none for a bare config).
    pub manifest_digest: Option<Digest>,
    /// Its tag in the layout.
    pub ref_name: Option<String>,
    /// The index's own annotations (outer, then nested index).
    pub index_annotations: BTreeMap<String, String>,
    /// The index entry's annotations.
    pub descriptor_annotations: BTreeMap<String, String>,
    /// The manifest's annotations.
    pub manifest_annotations: BTreeMap<String, String>,
    /// The config's labels.
    pub labels: BTreeMap<String, String>,
    /// How the container starts.
    pub config: RunConfig,
    /// The config's platform.
    pub platform: Platform,
    /// Layer descriptors, base first.
    pub layers: Vec<Descriptor>,
}

pub use hpcc_common::oci::host_goarch;

impl Image {
    /// The absolute directories of the config's `PATH` (the usual default
    /// when it sets none), at most 32: where its programs are looked for.
    pub fn path_dirs(&self) -> Vec<String> {
        self.config
            .env_var("PATH")
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .split(':')
            .filter(|d| d.starts_with('/'))
            .take(32)
            .map(str::to_owned)
            .collect()
    }

    /// Opens an image: index, manifest and config, all verified. No layer
    /// is read.
    pub fn open(r: &ImageRef, limits: &Limits) -> Result<Image, ImageError> {
        match r {
            ImageRef::Config(path) => {
                let what = path.display().to_string();
                let bytes = hpcc_common::io::read_file_bounded(path, limits.max_json_bytes)
                    .map_err(|e| match e {
                        hpcc_common::io::ReadError::Io(e) => ImageError::io(&what, e),
                        hpcc_common::io::ReadError::TooLarge { limit } => ImageError::Limit {
                            what: what.clone(),
                            limit: format!("{limit} bytes"),
                            hint: "Limits::max_json_bytes",
                        },
                    })?;
                let (config, platform) = parse_config(&bytes, &what)?;
                Ok(Image {
                    reference: r.to_string(),
                    store: None,
                    remote: None,
                    manifest_digest: None,
                    ref_name: None,
                    index_annotations: BTreeMap::new(),
                    descriptor_annotations: BTreeMap::new(),
                    manifest_annotations: BTreeMap::new(),
                    labels: config.labels.clone().unwrap_or_default(),
                    config,
                    platform,
                    layers: vec![],
                })
            }
            ImageRef::Layout { dir, tag } => {
                let store = Store::Dir(dir.clone());
                if !dir.join("index.json").is_file() {
                    return Err(ImageError::layout(
                        dir.display().to_string(),
                        "not an OCI image layout (no index.json)",
                    ));
                }
                Self::from_store(r, store, tag.as_deref(), limits)
            }
            ImageRef::Archive { file, tag } => {
                let store = Store::archive(file)?;
                Self::from_store(r, store, tag.as_deref(), limits)
            }
            ImageRef::Registry(reg) => crate::registry::open_image(reg, limits),
        }
    }

    fn read_index(
        store: &Store,
        d: Option<&Descriptor>,
        limits: &Limits,
    ) -> Result<Index, ImageError> {
        let (what, bytes) = match d {
            None => (
                store.describe("index.json"),
                store.read_small("index.json", limits.max_json_bytes)?,
            ),
            Some(d) => {
                let what = format!("index {}", d.digest.short());
                let b = store.read_blob(d, limits.max_json_bytes, &what)?;
                (what, b)
            }
        };
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Json { what, source })
    }

    /// Reads and parses a manifest blob.
    pub(crate) fn read_manifest(
        store: &Store,
        d: &Descriptor,
        limits: &Limits,
    ) -> Result<Manifest, ImageError> {
        let what = format!("manifest {}", d.digest.short());
        let bytes = store.read_blob(d, limits.max_json_bytes, &what)?;
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Json { what, source })
    }

    fn from_store(
        r: &ImageRef,
        store: Store,
        tag: Option<&str>,
        limits: &Limits,
    ) -> Result<Image, ImageError> {
        let index = Self::read_index(&store, None, limits)?;
        let where_ = store.describe("index.json");
        let images: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| d.artifact_type.is_none())
            .collect();
        let tags: Vec<&str> = images
            .iter()
            .filter_map(|d| d.annotation(REF_NAME))
            .collect();
        let chosen: Vec<&Descriptor> = match tag {
            Some(t) => images
                .iter()
                .copied()
                .filter(|d| d.annotation(REF_NAME) == Some(t))
                .collect(),
            None => images.clone(),
        };
        let d = match chosen.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(ImageError::layout(
                    where_,
                    match tag {
                        Some(t) => format!("no image tagged {t:?} (tags: {})", list_or_none(&tags)),
                        None => "holds no image".into(),
                    },
                ))
            }
            many => pick_platform(many).cloned().ok_or_else(|| {
                ImageError::layout(
                    &where_,
                    format!(
                        "{} images match; name one with DIR:tag (tags: {})",
                        many.len(),
                        list_or_none(&tags)
                    ),
                )
            })?,
        };
        let mut index_annotations = index.annotations.unwrap_or_default();
        let mut descriptor_annotations = d.annotations.clone().unwrap_or_default();
        let ref_name = d.annotation(REF_NAME).map(str::to_owned);
        let mut d = d;
        // A tag may name an index (a multi-platform image): take this
        // machine's platform from it, one level deep.
        if d.is_index() {
            let nested = Self::read_index(&store, Some(&d), limits)?;
            let cands: Vec<&Descriptor> = nested
                .manifests
                .iter()
                .filter(|m| m.artifact_type.is_none() && !m.is_index())
                .collect();
            let inner = pick_platform(&cands).cloned().ok_or_else(|| {
                ImageError::layout(
                    format!("index {}", d.digest.short()),
                    format!("no manifest for linux/{}", host_goarch()),
                )
            })?;
            index_annotations.extend(nested.annotations.unwrap_or_default());
            descriptor_annotations.extend(inner.annotations.clone().unwrap_or_default());
            d = inner;
        }
        Self::open_manifest(
            r,
            store,
            &d,
            ref_name,
            index_annotations,
            descriptor_annotations,
            limits,
        )
    }

    /// Opens the image manifest `d` of `store` and its config.
    fn open_manifest(
        r: &ImageRef,
        store: Store,
        d: &Descriptor,
        ref_name: Option<String>,
        index_annotations: BTreeMap<String, String>,
        descriptor_annotations: BTreeMap<String, String>,
        limits: &Limits,
    ) -> Result<Image, ImageError> {
        if d.media_type != media::MANIFEST && d.media_type != media::DOCKER_MANIFEST {
            return Err(ImageError::layout(
                format!("manifest {}", d.digest.short()),
                format!("media type {:?} is not an image manifest", d.media_type),
            ));
        }
        let manifest = Self::read_manifest(&store, d, limits)?;
        let what = format!("image config {}", manifest.config.digest.short());
        let cfg = store.read_blob(&manifest.config, limits.max_json_bytes, &what)?;
        let (config, platform) = parse_config(&cfg, &what)?;
        if manifest.layers.len() > limits.max_layers {
            return Err(ImageError::Limit {
                what: format!("manifest {}", d.digest.short()),
                limit: format!("{} layers", limits.max_layers),
                hint: "Limits::max_layers",
            });
        }
        Ok(Image {
            reference: r.to_string(),
            store: Some(store),
            remote: None,
            manifest_digest: Some(d.digest.clone()),
            ref_name,
            index_annotations,
            descriptor_annotations,
            manifest_annotations: manifest.annotations.unwrap_or_default(),
            labels: config.labels.clone().unwrap_or_default(),
            config,
            platform,
            layers: manifest.layers,
        })
    }

    /// Every image manifest of a layout's index (of the tag's nested index
    /// when the tag names one, else of `index.json`), each opened with its
    /// index entry: the variants `hpcc select` scores.
    pub(crate) fn open_variants(
        r: &ImageRef,
        limits: &Limits,
    ) -> Result<Vec<(Descriptor, Image)>, ImageError> {
        let (store, tag) = match r {
            ImageRef::Layout { dir, tag } => (Store::Dir(dir.clone()), tag.as_deref()),
            ImageRef::Archive { file, tag } => (Store::archive(file)?, tag.as_deref()),
            _ => return Ok(vec![]),
        };
        let index = Self::read_index(&store, None, limits)?;
        let mut entries: Vec<Descriptor> = index
            .manifests
            .iter()
            .filter(|d| d.artifact_type.is_none())
            .filter(|d| tag.is_none() || d.annotation(REF_NAME) == tag)
            .cloned()
            .collect();
        let mut index_annotations = index.annotations.clone().unwrap_or_default();
        if let [one] = entries.as_slice() {
            if one.is_index() {
                let nested = Self::read_index(&store, Some(one), limits)?;
                index_annotations.extend(nested.annotations.unwrap_or_default());
                entries = nested.manifests;
            }
        }
        entries
            .into_iter()
            .filter(|d| d.artifact_type.is_none() && !d.is_index())
            .take(256)
            .map(|d| {
                let img = Self::open_manifest(
                    r,
                    store.clone(),
                    &d,
                    d.annotation(REF_NAME).map(str::to_owned),
                    index_annotations.clone(),
                    d.annotations.clone().unwrap_or_default(),
                    limits,
                )?;
                Ok((d, img))
            })
            .collect()
    }

    /// The annotations, merged by precedence (see the module docs).
    pub fn annotations(&self) -> MergedAnnotations {
        MergedAnnotations::merge([
            (Source::IndexAnnotation, &self.index_annotations),
            (Source::ConfigLabel, &self.labels),
            (Source::ManifestAnnotation, &self.manifest_annotations),
            (Source::DescriptorAnnotation, &self.descriptor_annotations),
        ])
    }

    /// Whether layers can be read (a layout or archive, not a bare config).
    pub fn has_layers(&self) -> bool {
        self.store.is_some()
    }

    /// Artifacts of `artifact_type` in the same layout whose `subject` is
    /// this image's manifest: each as its manifest. At most 256 index
    /// entries are looked at.
    pub fn referrers(
        &self,
        artifact_type: &str,
        limits: &Limits,
    ) -> Result<Vec<Manifest>, ImageError> {
        if let (Some(remote), Some(digest)) = (&self.remote, &self.manifest_digest) {
            return crate::registry::referrers(remote, digest, artifact_type, limits);
        }
        let (Some(store), Some(digest)) = (&self.store, &self.manifest_digest) else {
            return Ok(vec![]);
        };
        let index = Self::read_index(store, None, limits)?;
        let mut out = Vec::new();
        for d in index.manifests.iter().take(256) {
            if d.is_index()
                || d.artifact_type
                    .as_deref()
                    .is_some_and(|t| t != artifact_type)
            {
                continue;
            }
            let m = Self::read_manifest(store, d, limits)?;
            let ty = m
                .artifact_type
                .as_deref()
                .or(d.artifact_type.as_deref())
                .unwrap_or(m.config.media_type.as_str());
            if ty == artifact_type && m.subject.as_ref().is_some_and(|s| &s.digest == digest) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Reads a small blob of this image's store (an artifact's layer).
    pub fn read_blob(&self, d: &Descriptor, limit: u64, what: &str) -> Result<Vec<u8>, ImageError> {
        if let Some(remote) = &self.remote {
            if d.size > limit {
                return Err(ImageError::Limit {
                    what: format!("{what} ({})", d.digest.short()),
                    limit: format!("{limit} bytes"),
                    hint: "Limits::max_json_bytes",
                });
            }
            return Ok(remote.blob(d, what)?);
        }
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| ImageError::layout(&self.reference, "an image config has no blobs"))?;
        store.read_blob(d, limit, what)
    }
}

fn list_or_none(tags: &[&str]) -> String {
    if tags.is_empty() {
        "none".into()
    } else {
        tags.join(", ")
    }
}

/// The entry for this machine's platform, or the only entry.
pub(crate) fn pick_platform<'a>(cands: &[&'a Descriptor]) -> Option<&'a Descriptor> {
    if let [one] = cands {
        return Some(one);
    }
    let fits: Vec<&&Descriptor> = cands
        .iter()
        .filter(|d| {
            d.platform.as_ref().is_some_and(|p| {
                p.architecture == host_goarch() && (p.os.is_empty() || p.os == "linux")
            })
        })
        .collect();
    match fits.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpcc_common::testutil::TempDir;

    fn sha256(b: &[u8]) -> String {
        let mut h = sha2::Sha256::new();
        h.update(b);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Writes a blob into a layout; returns its descriptor JSON.
    pub(crate) fn put_blob(dir: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
        let hex = sha256(bytes);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    }

    /// A layout with one image tagged `t` (no layers).
    pub(crate) fn layout(
        dir: &Path,
        labels: serde_json::Value,
        manifest_ann: serde_json::Value,
        desc_ann: serde_json::Value,
    ) {
        let cfg = serde_json::json!({"architecture": "amd64", "os": "linux",
            "config": {"Labels": labels, "Cmd": ["/bin/sh"]}, "rootfs": {"type": "layers", "diff_ids": []}});
        let cfg_d = put_blob(
            dir,
            "application/vnd.oci.image.config.v1+json",
            cfg.to_string().as_bytes(),
        );
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": media::MANIFEST, "config": cfg_d, "layers": [], "annotations": manifest_ann});
        let mut m_d = put_blob(dir, media::MANIFEST, m.to_string().as_bytes());
        let mut ann = desc_ann.as_object().cloned().unwrap_or_default();
        ann.insert(REF_NAME.into(), "t".into());
        m_d["annotations"] = serde_json::Value::Object(ann);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [m_d]});
        std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    }

    #[test]
    fn precedence_descriptor_manifest_label() {
        let t = TempDir::new("layout-prec");
        let k = "org.supercontainers.mpi.implementation";
        layout(
            &t.0,
            serde_json::json!({k: "mpich", "org.supercontainers.glibc.version": "2.36"}),
            serde_json::json!({k: "openmpi"}),
            serde_json::json!({}),
        );
        let img = Image::open(
            &ImageRef::parse(&format!("{}:t", t.0.display())).unwrap(),
            &Limits::default(),
        )
        .unwrap();
        let a = img.annotations();
        assert_eq!(a.values[k].value, "openmpi");
        assert_eq!(a.values[k].source, Source::ManifestAnnotation);
        assert_eq!(
            a.values["org.supercontainers.glibc.version"].source,
            Source::ConfigLabel
        );
        assert_eq!(a.conflicts.len(), 1);
        assert_eq!(a.conflicts[0].overridden[0].value, "mpich");
        assert_eq!(img.config.cmd.as_deref(), Some(&["/bin/sh".to_owned()][..]));
    }

    #[test]
    fn tampered_blob_is_refused() {
        let t = TempDir::new("layout-tamper");
        layout(
            &t.0,
            serde_json::json!({}),
            serde_json::json!({}),
            serde_json::json!({}),
        );
        // Rewrite every blob with a same-size different content.
        for e in std::fs::read_dir(t.0.join("blobs/sha256")).unwrap() {
            let p = e.unwrap().path();
            let mut b = std::fs::read(&p).unwrap();
            b[0] = b' ';
            std::fs::write(&p, b).unwrap();
        }
        let e = Image::open(
            &ImageRef::parse(&format!("{}:t", t.0.display())).unwrap(),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ImageError::Mismatch { .. }), "{e}");
    }

    #[test]
    fn symlinked_blob_is_refused() {
        let t = TempDir::new("layout-link");
        layout(
            &t.0,
            serde_json::json!({}),
            serde_json::json!({}),
            serde_json::json!({}),
        );
        let idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(t.0.join("index.json")).unwrap()).unwrap();
        let hex = idx["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_owned();
        let p = t.0.join("blobs/sha256").join(&hex);
        let real = t.0.join("real");
        std::fs::rename(&p, &real).unwrap();
        std::os::unix::fs::symlink(&real, &p).unwrap();
        let e = Image::open(
            &ImageRef::parse(&format!("{}:t", t.0.display())).unwrap(),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ImageError::Io { .. }), "{e}");
    }

    #[test]
    fn unknown_tag_lists_tags() {
        let t = TempDir::new("layout-tag");
        layout(
            &t.0,
            serde_json::json!({}),
            serde_json::json!({}),
            serde_json::json!({}),
        );
        let e = Image::open(
            &ImageRef::Layout {
                dir: t.0.clone(),
                tag: Some("nope".into()),
            },
            &Limits::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("tags: t"), "{e}");
    }

    #[test]
    fn digests_are_validated() {
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("md5:{}", "a".repeat(32))).is_err());
        let d = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(d.blob_path(), format!("blobs/sha256/{}", "a".repeat(64)));
    }

    #[test]
    fn docker_inspect_config_is_accepted() {
        let t = TempDir::new("layout-inspect");
        let p = t.0.join("inspect.json");
        std::fs::write(&p, r#"[{"Architecture":"amd64","Os":"linux","Config":{"Entrypoint":["/e.sh"],"Cmd":["bash"],"Labels":{"a":"b"}}}]"#).unwrap();
        let img = Image::open(
            &ImageRef::parse(p.to_str().unwrap()).unwrap(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(img.labels["a"], "b");
        assert_eq!(
            img.config.entrypoint.as_deref(),
            Some(&["/e.sh".to_owned()][..])
        );
        assert_eq!(img.platform.architecture, "amd64");
        assert!(!img.has_layers());
    }
}
