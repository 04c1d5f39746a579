//! Curated annotation collections: annotations an admin (or a community
//! list such as MetaHub's) keeps for images they do not control, merged
//! into the image's annotations at launch.
//!
//! Files: `*.yaml` / `*.yml` in the policy's `[collections] dir`, read in
//! name order, in the MetaHub collection format:
//!
//! ```yaml
//! manifests:
//! - name: gromacs/mpich          # logical name and tag (MetaHub)
//!   tag: "2021.5"
//!   manifests:
//!   - image: quay.io/cqnib/gromacs/gcc-7.3.1/2021.5/mpich:x86_64_v4
//!     platform: {os: linux, arch: amd64, features: ["cpu:zen3"]}
//!     annotations:
//!       org.supercontainers.mpi.implementation: mpich
//! ```
//!
//! A flat entry (`image`, `platform`, `annotations` directly in the top
//! list) is accepted too. Scalars keep their text (`12.0` stays `12.0`).
//!
//! ## Which image is launching
//!
//! The hook only has the OCI state and `config.json`; engines differ in
//! what they say there about the image ([`IMAGE_NAME_KEYS`]):
//!
//! | engine | annotation | value |
//! | --- | --- | --- |
//! | CRI-O | `io.kubernetes.cri-o.ImageName` | the name the pod asked for (`quay.io/x/y:tag`) |
//! | CRI-O | `io.kubernetes.cri-o.ImageRef` | the image ID / digest |
//! | containerd (CRI) | `io.kubernetes.cri.image-name` | the name the pod asked for |
//! | containerd (CRI, newer) | `io.kubernetes.cri.image-ref` | the digest reference, when set |
//! | OCI layout / BuildKit | `io.containerd.image.name` | full name (index entry annotation) |
//! | podman | none (podman >= 4.6 passes no image annotation at all) | `--annotation hpcc.image.name=NAME` |
//! | Slurm `--container` | none: only the bundle | `hpcc.image.name` in the bundle's `config.json` |
//!
//! `hpcc.image.name` is hpcc's own key for the engines that say nothing.
//! Names are compared normalised the Docker way (`ubuntu` =
//! `docker.io/library/ubuntu:latest`); a digest (`@sha256:...`) matches an
//! entry with the same digest whatever the name. An entry matches by its
//! `image`, or by the logical `name:tag` of its group; entries for another
//! architecture than this machine's are skipped.

use crate::oci::host_goarch;
use crate::oci::LaunchContext;
use crate::yaml::{self, Node};
use hpcc_config::Policy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// hpcc's own annotation naming the image, for engines that pass none.
pub const HPCC_IMAGE_NAME: &str = "hpcc.image.name";

/// Annotations that name the image, most specific first.
pub const IMAGE_NAME_KEYS: &[&str] = &[
    HPCC_IMAGE_NAME,
    "io.kubernetes.cri-o.ImageName",
    "io.kubernetes.cri.image-name",
    "io.containerd.image.name",
];

/// Annotations that carry the image digest.
pub const IMAGE_DIGEST_KEYS: &[&str] = &[
    "io.kubernetes.cri-o.ImageRef",
    "io.kubernetes.cri.image-ref",
    "io.kubernetes.cri-o.ImageName",
    "io.kubernetes.cri.image-name",
    HPCC_IMAGE_NAME,
];

/// Most collection files read.
pub const MAX_FILES: usize = 1024;
/// Largest collection file.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why collections could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CollectionError {
    /// The directory or a file could not be read.
    #[error("cannot read collection {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file others than root may change.
    #[error("collection {path} is not trusted: {reason} (it must be owned by root and writable only by its owner)")]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// Owner or mode.
        reason: String,
    },
    /// Bounds.
    #[error("collection {path}: {reason}")]
    TooLarge {
        /// The file or directory.
        path: PathBuf,
        /// Which bound.
        reason: String,
    },
    /// YAML syntax.
    #[error(transparent)]
    Yaml(#[from] yaml::YamlError),
    /// A file that parses but is not a collection.
    #[error("collection {file}: line {line}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// Line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// One curated image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Logical name of the group (MetaHub `name`), when any.
    pub name: Option<String>,
    /// Logical tag of the group.
    pub tag: Option<String>,
    /// The concrete image reference.
    pub image: String,
    /// `platform.arch` (`amd64`), when given.
    pub arch: Option<String>,
    /// `platform.features` (`cpu:zen3`).
    pub features: Vec<String>,
    /// Annotations to merge.
    pub annotations: BTreeMap<String, String>,
    /// File and line, for messages.
    pub origin: String,
}

fn invalid(file: &str, n: &Node, reason: impl Into<String>) -> CollectionError {
    CollectionError::Invalid {
        file: file.to_owned(),
        line: n.line(),
        reason: reason.into(),
    }
}

fn entry(
    file: &str,
    n: &Node,
    name: Option<&str>,
    tag: Option<&str>,
) -> Result<Entry, CollectionError> {
    let image = n
        .get("image")
        .and_then(Node::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 1024)
        .ok_or_else(|| invalid(file, n, "an entry needs an image reference"))?;
    let platform = n.get("platform");
    let mut annotations = BTreeMap::new();
    if let Some(a) = n.get("annotations") {
        if !matches!(a, Node::Map(..)) && !a.is_null() {
            return Err(invalid(
                file,
                a,
                "annotations must be a mapping of key: value",
            ));
        }
        for (k, v) in a.entries() {
            let v = v
                .as_str()
                .ok_or_else(|| invalid(file, v, format!("annotation {k} must be a scalar")))?;
            annotations.insert(k.clone(), v.to_owned());
        }
    }
    Ok(Entry {
        name: name.map(str::to_owned),
        tag: tag.map(str::to_owned),
        image: image.to_owned(),
        arch: platform
            .and_then(|p| p.get("arch").or_else(|| p.get("architecture")))
            .and_then(Node::as_str)
            .map(str::to_owned),
        features: platform
            .and_then(|p| p.get("features"))
            .map(|f| {
                f.items()
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        annotations,
        origin: format!("{file}:{}", n.line()),
    })
}

/// Parses one collection file's text.
pub fn parse(text: &str, file: &str) -> Result<Vec<Entry>, CollectionError> {
    let mut out = Vec::new();
    for doc in yaml::parse(text, file)? {
        if doc.is_null() {
            continue;
        }
        let list = doc
            .get("manifests")
            .ok_or_else(|| invalid(file, &doc, "a collection has a top-level `manifests` list"))?;
        for group in list.items() {
            match group.get("manifests") {
                Some(inner) => {
                    let name = group.get("name").and_then(Node::as_str);
                    let tag = group.get("tag").and_then(Node::as_str);
                    for m in inner.items() {
                        out.push(entry(file, m, name, tag)?);
                    }
                }
                None => out.push(entry(file, group, None, None)?),
            }
        }
    }
    Ok(out)
}

fn check_trusted(path: &Path, meta: &std::fs::Metadata) -> Result<(), CollectionError> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let bad = |reason: String| CollectionError::Untrusted {
        path: path.to_owned(),
        reason,
    };
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(bad(format!("it belongs to uid {}", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(bad(format!(
            "its mode {:o} lets others write it",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Reads every collection of `dir` (name order). A missing directory is no
/// collection; a file or directory others may write is refused, as the
/// policy itself would be.
pub fn load_dir(dir: &Path) -> Result<Vec<Entry>, CollectionError> {
    use std::os::unix::fs::OpenOptionsExt;
    let read_err = |path: &Path, source| CollectionError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(read_err(dir, e)),
    };
    check_trusted(dir, &meta)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| read_err(dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    if files.len() > MAX_FILES {
        return Err(CollectionError::TooLarge {
            path: dir.to_owned(),
            reason: format!("more than {MAX_FILES} files"),
        });
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&f)
            .map_err(|e| read_err(&f, e))?;
        let meta = file.metadata().map_err(|e| read_err(&f, e))?;
        if !meta.is_file() {
            continue;
        }
        check_trusted(&f, &meta)?;
        let bytes = crate::io::read_bounded(file, MAX_FILE_BYTES).map_err(|e| match e {
            crate::io::ReadError::Io(e) => read_err(&f, e),
            crate::io::ReadError::TooLarge { limit } => CollectionError::TooLarge {
                path: f.clone(),
                reason: format!("larger than {limit} bytes"),
            },
        })?;
        out.extend(parse(
            &String::from_utf8_lossy(&bytes),
            &f.display().to_string(),
        )?);
    }
    Ok(out)
}

/// An image reference split the Docker way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `registry/repository` with Docker Hub's defaults filled in.
    pub name: String,
    /// Tag (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// `sha256:...`.
    pub digest: Option<String>,
}

/// Normalises `quay.io/x/y:tag`, `ubuntu`, `repo@sha256:...`, or a bare
/// `sha256:...` (a digest only).
pub fn normalize(reference: &str) -> Reference {
    let r = reference.trim();
    if r.starts_with("sha256:") || r.starts_with("sha512:") {
        return Reference {
            name: String::new(),
            tag: None,
            digest: Some(r.to_owned()),
        };
    }
    let (rest, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d.to_owned())),
        None => (r, None),
    };
    // A tag is after the last ':' that follows the last '/' (a registry may
    // have a port).
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_owned())),
        _ => (rest, None),
    };
    let first = name.split('/').next().unwrap_or_default();
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let name = if has_registry {
        name.to_owned()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    let tag = tag.or_else(|| digest.is_none().then(|| "latest".to_owned()));
    Reference { name, tag, digest }
}

/// Whether `wanted` (what the engine named) is `entry_ref`.
fn same(wanted: &Reference, entry_ref: &Reference) -> bool {
    if let (Some(a), Some(b)) = (&wanted.digest, &entry_ref.digest) {
        return a == b;
    }
    !wanted.name.is_empty() && wanted.name == entry_ref.name && wanted.tag == entry_ref.tag
}

/// The references the launch's annotations give for the image.
pub fn identity(annotations: &BTreeMap<String, String>) -> Vec<Reference> {
    IMAGE_NAME_KEYS
        .iter()
        .chain(IMAGE_DIGEST_KEYS)
        .filter_map(|k| annotations.get(*k))
        .filter(|v| !v.is_empty() && v.len() <= 1024)
        .map(|v| normalize(v))
        .collect()
}

/// The image's names in the order they are trusted: the engine's digest
/// and name keys first (set by CRI-O or containerd, not by the image), then
/// `io.containerd.image.name`, then `hpcc.image.name` (which podman and
/// Slurm users, and the image's own labels, set).
fn trusted_refs(annotations: &BTreeMap<String, String>) -> Vec<Reference> {
    const ORDER: &[&str] = &[
        "io.kubernetes.cri-o.ImageRef",
        "io.kubernetes.cri.image-ref",
        "io.kubernetes.cri-o.ImageName",
        "io.kubernetes.cri.image-name",
        "io.containerd.image.name",
        HPCC_IMAGE_NAME,
    ];
    ORDER
        .iter()
        .filter_map(|k| annotations.get(*k))
        .filter(|v| !v.is_empty() && v.len() <= 1024)
        .map(|v| normalize(v))
        .collect()
}

/// The entries for an image named by `refs`, on this machine's platform.
pub fn find<'a>(entries: &'a [Entry], refs: &[Reference]) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| e.arch.as_deref().is_none_or(|a| a == host_goarch()))
        .filter(|e| {
            let concrete = normalize(&e.image);
            let logical = e
                .name
                .as_ref()
                .map(|n| normalize(&format!("{n}:{}", e.tag.as_deref().unwrap_or("latest"))));
            refs.iter()
                .any(|r| same(r, &concrete) || logical.as_ref().is_some_and(|l| same(r, l)))
        })
        .collect()
}

/// What merging a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The entry used (`file:line image`).
    pub entry: Option<String>,
    /// Keys the collection set.
    pub set: Vec<String>,
    /// Keys the image already had and kept (`image_wins`).
    pub kept: Vec<String>,
    /// Why nothing was merged, or what was ambiguous.
    pub notes: Vec<String>,
}

/// The entry's annotations, with `platform.features: [cpu:X]` turned into
/// the CPU target when the entry does not name one.
fn entry_annotations(e: &Entry) -> BTreeMap<String, String> {
    let mut a = e.annotations.clone();
    let key = "org.supercontainers.hardware.cpu.optimized.version";
    let has_target = a.contains_key(key)
        || a.contains_key("org.supercontainers.hardware.cpu.optimized.architecture");
    if !has_target {
        if let Some(cpu) = e.features.iter().find_map(|f| f.strip_prefix("cpu:")) {
            a.insert(key.to_owned(), cpu.to_owned());
        }
    }
    a
}

/// Merges `entries`' annotations for the image `annotations` name into
/// `annotations` itself.
pub fn merge(
    annotations: &mut BTreeMap<String, String>,
    entries: &[Entry],
    image_wins: bool,
) -> Applied {
    let refs = identity(annotations);
    let mut applied = Applied::default();
    if refs.is_empty() {
        applied.notes.push(format!(
            "no annotation names the image ({}): no collection applies",
            IMAGE_NAME_KEYS.join(", ")
        ));
        return applied;
    }
    // The entry of the most trustworthy name: the engine's own (digest,
    // then name) before `hpcc.image.name`, which the image itself can
    // carry. An image naming itself after another, laxer entry must not
    // displace the entry the site wrote for the image the engine started.
    let found = trusted_refs(annotations)
        .iter()
        .map(|r| find(entries, std::slice::from_ref(r)))
        .find(|f| !f.is_empty())
        .unwrap_or_else(|| find(entries, &refs));
    let Some(e) = found.first() else {
        return applied;
    };
    let others: Vec<&Entry> = find(entries, &refs)
        .into_iter()
        .filter(|x| !found.iter().any(|f| std::ptr::eq(*f, *x)))
        .collect();
    if !others.is_empty() {
        applied.notes.push(format!(
            "a less trusted name of the image (hpcc.image.name, which the image can set) also matches {}: not used, the engine's name decides",
            others
                .iter()
                .map(|x| x.origin.clone())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if found.len() > 1 {
        applied.notes.push(format!(
            "{} collection entries match; using the first ({}), ignoring {}",
            found.len(),
            e.origin,
            found[1..]
                .iter()
                .map(|x| x.origin.clone())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    applied.entry = Some(format!("{} {}", e.origin, e.image));
    for (k, v) in entry_annotations(e) {
        if image_wins && annotations.contains_key(&k) {
            applied.kept.push(k);
        } else {
            annotations.insert(k.clone(), v);
            applied.set.push(k);
        }
    }
    applied
}

/// Merges the policy's collections into a launch's annotations: the one
/// call entry points make before deciding. Without `[collections] dir` it
/// does nothing.
pub fn apply(ctx: &mut LaunchContext, policy: &Policy) -> Result<Applied, CollectionError> {
    let Some(dir) = &policy.collections.dir else {
        return Ok(Applied::default());
    };
    let entries = load_dir(dir)?;
    let applied = merge(
        &mut ctx.annotations,
        &entries,
        policy.collections.image_wins,
    );
    if let Some(e) = &applied.entry {
        tracing::info!(
            container = ctx.id.as_str(),
            entry = crate::text::escape(e).as_str(),
            set = applied.set.len(),
            kept = applied.kept.len(),
            "curated annotations merged"
        );
    }
    for n in &applied.notes {
        tracing::debug!(container = ctx.id.as_str(), "{}", crate::text::escape(n));
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_image_naming_itself_after_a_laxer_entry_does_not_displace_the_engines() {
        let entries = parse(
            "manifests:\n\
             - image: docker.io/library/lax:1\n  annotations:\n    org.supercontainers.hardware.cpu.optimized.version: x86_64\n\
             - image: quay.io/site/strict:1\n  annotations:\n    org.supercontainers.hardware.cpu.optimized.version: x86_64_v4\n",
            "site.yaml",
        )
        .unwrap();
        let mut a = BTreeMap::from([
            (
                "io.kubernetes.cri-o.ImageName".to_owned(),
                "quay.io/site/strict:1".to_owned(),
            ),
            (HPCC_IMAGE_NAME.to_owned(), "lax:1".to_owned()),
        ]);
        let applied = merge(&mut a, &entries, false);
        assert_eq!(
            a["org.supercontainers.hardware.cpu.optimized.version"], "x86_64_v4",
            "{applied:?}"
        );
        assert!(
            applied.entry.as_deref().unwrap().contains("strict"),
            "{applied:?}"
        );
        assert!(
            applied.notes.iter().any(|n| n.contains("less trusted")),
            "{applied:?}"
        );
    }
    use super::*;
    use crate::testutil::TempDir;

    const METAHUB: &str = r#"
manifests:
  - name: gromacs/mpich
    tag: 2021.5
    manifests:
      - image: quay.io/cqnib/gromacs/gcc-7.3.1/2021.5/mpich:x86_64_v4
        platform:
          os: linux
          arch: amd64
        annotations:
          org.supercontainers.mpi.provider: mpich
          org.supercontainers.mpich.abi.version: 12.0
          org.supercontainers.mpi.portability.mode: mpich_replace
      - image: quay.io/cqnib/gromacs-2021.5_gcc-11.3.0:zen3
        platform:
          os: linux
          arch: amd64
          features: [cpu:zen3]
      - image: quay.io/cqnib/gromacs-2021.5_gcc-7.3.1:aarch64
        platform:
          os: linux
          arch: arm64
"#;

    #[test]
    fn metahub_format_keeps_scalar_text() {
        let e = parse(METAHUB, "gromacs.yaml").unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[0].annotations["org.supercontainers.mpich.abi.version"],
            "12.0"
        );
        assert_eq!(e[0].tag.as_deref(), Some("2021.5"));
        assert_eq!(e[1].features, ["cpu:zen3"]);
        assert!(e[0].origin.starts_with("gromacs.yaml:"));
    }

    #[test]
    fn references_normalise() {
        assert_eq!(normalize("ubuntu").name, "docker.io/library/ubuntu");
        assert_eq!(normalize("ubuntu").tag.as_deref(), Some("latest"));
        assert_eq!(normalize("localhost:5000/a/b:1").name, "localhost:5000/a/b");
        assert_eq!(normalize("localhost:5000/a/b:1").tag.as_deref(), Some("1"));
        let d = normalize("quay.io/x/y@sha256:abc");
        assert_eq!(
            (d.name.as_str(), d.tag, d.digest.as_deref()),
            ("quay.io/x/y", None, Some("sha256:abc"))
        );
    }

    #[test]
    fn cri_o_name_selects_the_entry_and_the_image_wins() {
        let entries = parse(METAHUB, "g.yaml").unwrap();
        let mut ann = BTreeMap::from([
            (
                "io.kubernetes.cri-o.ImageName".to_owned(),
                "quay.io/cqnib/gromacs/gcc-7.3.1/2021.5/mpich:x86_64_v4".to_owned(),
            ),
            (
                "org.supercontainers.mpi.provider".to_owned(),
                "openmpi".to_owned(),
            ),
        ]);
        let a = merge(&mut ann, &entries, true);
        assert!(a.entry.is_some(), "{a:?}");
        assert_eq!(ann["org.supercontainers.mpi.provider"], "openmpi");
        assert_eq!(ann["org.supercontainers.mpich.abi.version"], "12.0");
        assert_eq!(a.kept, ["org.supercontainers.mpi.provider"]);
        let mut ann2 = BTreeMap::from([
            (
                "io.kubernetes.cri.image-name".to_owned(),
                "quay.io/cqnib/gromacs/gcc-7.3.1/2021.5/mpich:x86_64_v4".to_owned(),
            ),
            (
                "org.supercontainers.mpi.provider".to_owned(),
                "openmpi".to_owned(),
            ),
        ]);
        merge(&mut ann2, &entries, false);
        assert_eq!(ann2["org.supercontainers.mpi.provider"], "mpich");
    }

    #[test]
    fn features_give_a_cpu_target_and_other_arches_are_skipped() {
        let entries = parse(METAHUB, "g.yaml").unwrap();
        let mut ann = BTreeMap::from([(
            HPCC_IMAGE_NAME.to_owned(),
            "quay.io/cqnib/gromacs-2021.5_gcc-11.3.0:zen3".to_owned(),
        )]);
        merge(&mut ann, &entries, true);
        assert_eq!(
            ann["org.supercontainers.hardware.cpu.optimized.version"],
            "zen3"
        );
        let mut ann = BTreeMap::from([(
            HPCC_IMAGE_NAME.to_owned(),
            "quay.io/cqnib/gromacs-2021.5_gcc-7.3.1:aarch64".to_owned(),
        )]);
        let a = merge(&mut ann, &entries, true);
        assert!(a.entry.is_none() || host_goarch() == "arm64");
        let mut ann = BTreeMap::new();
        assert!(!merge(&mut ann, &entries, true).notes.is_empty());
    }

    #[test]
    fn logical_name_matches_a_group() {
        let entries = parse(METAHUB, "g.yaml").unwrap();
        let mut ann = BTreeMap::from([(
            HPCC_IMAGE_NAME.to_owned(),
            "gromacs/mpich:2021.5".to_owned(),
        )]);
        let a = merge(&mut ann, &entries, true);
        assert!(a.entry.is_some());
        assert!(
            a.notes.iter().any(|n| n.contains("match")),
            "two amd64 entries: {a:?}"
        );
    }

    #[test]
    fn load_dir_and_apply() {
        let t = TempDir::new("collections");
        std::fs::write(t.0.join("10-gromacs.yaml"), METAHUB).unwrap();
        std::fs::write(t.0.join("README"), "not yaml").unwrap();
        let mut policy = Policy::default();
        policy.collections.dir = Some(t.0.clone());
        let mut ctx = crate::testutil::ctx(&[], &[]);
        ctx.annotations.insert(
            HPCC_IMAGE_NAME.into(),
            "quay.io/cqnib/gromacs/gcc-7.3.1/2021.5/mpich:x86_64_v4".into(),
        );
        let a = apply(&mut ctx, &policy).unwrap();
        assert_eq!(a.set.len(), 3, "{a:?}");
        assert_eq!(
            ctx.annotations["org.supercontainers.mpi.portability.mode"],
            "mpich_replace"
        );
        // A collection others can write is refused.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            t.0.join("10-gromacs.yaml"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        assert!(matches!(
            apply(&mut ctx, &policy),
            Err(CollectionError::Untrusted { .. })
        ));
        // No directory configured: nothing happens.
        assert_eq!(
            apply(&mut ctx, &Policy::default()).unwrap(),
            Applied::default()
        );
    }

    #[test]
    fn not_a_collection() {
        let e = parse("images: []\n", "x.yaml").unwrap_err();
        assert!(e.to_string().contains("manifests"), "{e}");
        let e = parse("manifests:\n- platform: {arch: amd64}\n", "x.yaml").unwrap_err();
        assert!(e.to_string().contains("image"), "{e}");
    }
}
