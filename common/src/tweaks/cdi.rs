//! CDI (Container Device Interface) devices: how AMD, Intel and other GPUs
//! (and any device a vendor describes) reach the container.
//!
//! Specs are read from the policy's `[gpu] cdi_spec_dirs` (admin-owned):
//! `*.json` files only — YAML specs are not read (hpcc carries no YAML
//! parser; convert them with `yq -o json`), and each skipped file is logged.
//! A spec in a later directory overrides a device of the same name in an
//! earlier one (CDI gives `/var/run/cdi` priority over `/etc/cdi`).
//! Bounded: [`MAX_SPEC_BYTES`] per file, [`MAX_SPEC_FILES`] per directory,
//! [`MAX_DEVICES`] per spec.
//!
//! Which devices a container gets: the CDI standard's annotations,
//! `cdi.k8s.io/<any-name>` = a comma-separated list of fully qualified
//! device names `vendor.com/class=name` (what CRI-O and containerd pass
//! for Kubernetes device plugins; `podman --annotation` sets them by hand).
//! An image may only ask, never grant: the annotation may come from the
//! image itself (`umoci unpack` copies an image's labels into the bundle's
//! annotations, CRI-O and podman pass them through), so a requested device
//! is exposed only when
//! - it is defined by a spec the admin installed, `[tweaks] gpu` allows
//!   exposure, and
//! - it was allocated to the container: every device node of it is already
//!   in `config.json`'s `linux.devices` (the engine's or the bundle
//!   author's choice, which the image cannot make), or the policy allows it
//!   without allocation (`[gpu] allowed`, e.g. `"vendor.com/class=*"`).
//!
//! A device asked for but not allocated is left out with a finding that
//! says why. CDI hooks are never run (they would be host binaries chosen by
//! a spec for every container): a spec that needs them is exposed without
//! them and a finding says so. Image text in messages (annotation keys and
//! values) is escaped where it is written.

use super::{Inputs, Part};
use crate::matcher::{Check, Level};
use crate::plan::Device;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Annotation prefix of CDI device requests.
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";
/// Largest spec file read.
pub const MAX_SPEC_BYTES: u64 = 1 << 20;
/// Most spec files read per directory.
pub const MAX_SPEC_FILES: usize = 128;
/// Most devices accepted in one spec.
pub const MAX_DEVICES: usize = 1024;
/// Most device requests honoured for one container.
pub const MAX_REQUESTS: usize = 64;

/// A CDI spec (the JSON fields hpcc uses; unknown fields are ignored so
/// newer spec versions still parse).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiSpec {
    /// `0.3.0` .. `0.8.0`.
    pub cdi_version: String,
    /// `vendor.com/class`.
    pub kind: String,
    /// Devices.
    #[serde(default)]
    pub devices: Vec<CdiDevice>,
    /// Edits applied whenever any device of this spec is used.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// One device of a spec.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiDevice {
    /// Name within the kind.
    pub name: String,
    /// Its edits.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// What a device adds to a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    /// `NAME=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Device nodes.
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    /// Bind mounts.
    #[serde(default)]
    pub mounts: Vec<CdiMount>,
    /// OCI hooks (never run by hpcc).
    #[serde(default)]
    pub hooks: Vec<serde_json::Value>,
}

/// A device node edit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    /// Path in the container.
    pub path: String,
    /// Path on the host (default: `path`).
    #[serde(default)]
    pub host_path: Option<String>,
    /// `c`, `b` or `u` (default: from the host node).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Major (default: from the host node).
    #[serde(default)]
    pub major: Option<u64>,
    /// Minor (default: from the host node).
    #[serde(default)]
    pub minor: Option<u64>,
    /// Cgroup access, subset of `rwm` (default `rwm`).
    #[serde(default)]
    pub permissions: Option<String>,
}

/// A mount edit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdiMount {
    /// Host path.
    pub host_path: String,
    /// Path in the container.
    pub container_path: String,
    /// Mount options (`ro`, `nosuid`, `bind`...).
    #[serde(default)]
    pub options: Vec<String>,
    /// Mount type (only bind mounts are supported).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// A fully qualified device name, `vendor.com/class=name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QualifiedName {
    /// `vendor.com/class`.
    pub kind: String,
    /// `name`.
    pub name: String,
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.kind, self.name)
    }
}

fn valid_kind(kind: &str) -> bool {
    let Some((vendor, class)) = kind.split_once('/') else {
        return false;
    };
    let ok = |s: &str, extra: &[u8]| {
        !s.is_empty()
            && s.len() <= 128
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    };
    ok(vendor, b".-") && ok(class, b"_.-")
}

impl QualifiedName {
    /// Parses `vendor.com/class=name` (CDI's syntax).
    pub fn parse(s: &str) -> Result<QualifiedName, String> {
        let (kind, name) = s.split_once('=').ok_or_else(|| {
            format!("{s:?} is not a CDI device name (expected vendor.com/class=name)")
        })?;
        if !valid_kind(kind) {
            return Err(format!(
                "{s:?}: {kind:?} is not a CDI kind (expected vendor.com/class)"
            ));
        }
        let ok = !name.is_empty()
            && name.len() <= 128
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !ok {
            return Err(format!("{s:?}: {name:?} is not a CDI device name"));
        }
        Ok(QualifiedName {
            kind: kind.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// Parses and validates one spec file's bytes.
pub fn parse_spec(bytes: &[u8]) -> Result<CdiSpec, String> {
    let spec: CdiSpec = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if !valid_kind(&spec.kind) {
        return Err(format!("kind {:?} is not vendor.com/class", spec.kind));
    }
    if spec.devices.len() > MAX_DEVICES {
        return Err(format!("more than {MAX_DEVICES} devices"));
    }
    let edits = std::iter::once(&spec.container_edits)
        .chain(spec.devices.iter().map(|d| &d.container_edits));
    for e in edits {
        for d in &e.device_nodes {
            if !d.path.starts_with('/')
                || d.host_path.as_deref().is_some_and(|h| !h.starts_with('/'))
            {
                return Err(format!("device node {:?}: paths must be absolute", d.path));
            }
            if let Some(k) = &d.kind {
                if !["c", "b", "u"].contains(&k.as_str()) {
                    return Err(format!(
                        "device node {:?}: type {k:?} is not c, b or u",
                        d.path
                    ));
                }
            }
            if let Some(p) = &d.permissions {
                if p.is_empty() || !p.chars().all(|c| "rwm".contains(c)) {
                    return Err(format!(
                        "device node {:?}: permissions {p:?} are not a subset of rwm",
                        d.path
                    ));
                }
            }
        }
        for m in &e.mounts {
            if !m.host_path.starts_with('/') || !m.container_path.starts_with('/') {
                return Err(format!(
                    "mount {:?}: paths must be absolute",
                    m.container_path
                ));
            }
        }
        for v in &e.env {
            if !v.contains('=') {
                return Err(format!("env entry {v:?} is not NAME=VALUE"));
            }
        }
    }
    Ok(spec)
}

/// A device and where it was defined.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The spec file.
    pub file: PathBuf,
    /// The spec (for its spec-wide edits).
    pub spec: std::sync::Arc<CdiSpec>,
    /// Index of the device in `spec.devices`.
    pub device: usize,
}

/// Every device defined in `dirs`, later directories overriding earlier
/// ones; the second value lists the files skipped and why.
pub fn load(
    host: &dyn super::host::Host,
    dirs: &[PathBuf],
) -> (BTreeMap<QualifiedName, Resolved>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut skipped = Vec::new();
    for dir in dirs {
        for file in host.list_dir(dir, MAX_SPEC_FILES) {
            let name = file.to_string_lossy();
            if name.ends_with(".yaml") || name.ends_with(".yml") {
                tracing::info!(spec = %file.display(), "CDI spec skipped: YAML specs are not read, convert it to JSON");
                skipped.push(format!("{} (YAML is not read)", file.display()));
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let spec = host
                .read_file(&file, MAX_SPEC_BYTES)
                .map_err(|e| e.to_string())
                .and_then(|b| parse_spec(&b));
            match spec {
                Ok(spec) => {
                    let spec = std::sync::Arc::new(spec);
                    for (i, d) in spec.devices.iter().enumerate() {
                        let q = QualifiedName {
                            kind: spec.kind.clone(),
                            name: d.name.clone(),
                        };
                        out.insert(
                            q,
                            Resolved {
                                file: file.clone(),
                                spec: spec.clone(),
                                device: i,
                            },
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(spec = %file.display(), error = %e, "CDI spec skipped");
                    skipped.push(format!("{} ({e})", file.display()));
                }
            }
        }
    }
    (out, skipped)
}

/// The devices a container's annotations ask for, or the first invalid
/// annotation as `(key, value, reason)`.
pub fn requests(
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<QualifiedName>, (String, String, String)> {
    let mut out = Vec::new();
    for (k, v) in annotations {
        if !k.starts_with(ANNOTATION_PREFIX) {
            continue;
        }
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let q = QualifiedName::parse(item).map_err(|e| (k.clone(), v.clone(), e))?;
            if !out.contains(&q) {
                out.push(q);
            }
            if out.len() > MAX_REQUESTS {
                return Err((
                    k.clone(),
                    v.clone(),
                    format!("more than {MAX_REQUESTS} CDI devices requested"),
                ));
            }
        }
    }
    Ok(out)
}

fn apply_edits(
    input: &Inputs<'_>,
    edits: &ContainerEdits,
    why: &str,
    part: &mut Part,
) -> Result<(), String> {
    let host = input.host;
    for d in &edits.device_nodes {
        let path = PathBuf::from(&d.path);
        if input
            .ctx
            .allocated_devices
            .iter()
            .any(|a| crate::rootfs::normalize(&a.path).ok() == crate::rootfs::normalize(&path).ok())
        {
            // The engine creates this node itself (it allocated it):
            // binding over it would only fail on its device node.
            continue;
        }
        let host_path = PathBuf::from(d.host_path.as_deref().unwrap_or(&d.path));
        let stat = host.device(&host_path);
        let kind = match d.kind.as_deref() {
            Some("b") => 'b',
            Some(_) => 'c',
            None => stat.map(|s| s.kind).ok_or_else(|| {
                format!(
                    "device node {}: no type in the spec and {} is no device on this node",
                    d.path,
                    host_path.display()
                )
            })?,
        };
        let (major, minor) = match (d.major, d.minor) {
            (Some(a), Some(b)) => (a, b),
            _ => stat.map(|s| (s.major, s.minor)).ok_or_else(|| {
                format!(
                    "device node {}: no major/minor in the spec and {} is no device on this node",
                    d.path,
                    host_path.display()
                )
            })?,
        };
        if !part.tweaks.devices.iter().any(|x| x.path == path) {
            part.tweaks.devices.push(Device {
                path,
                host_path,
                kind,
                major,
                minor,
                access: d.permissions.clone().unwrap_or_else(|| "rwm".into()),
                cgroup_rule: true,
                reason: why.to_owned(),
            });
        }
    }
    for m in &edits.mounts {
        if m.kind.as_deref().is_some_and(|k| k != "bind") {
            part.finding(
                Check::Gpu,
                Level::Degraded,
                format!(
                    "{why}: the {} mount on {} is not a bind mount and is not supported; skipped",
                    m.kind.as_deref().unwrap_or(""),
                    m.container_path
                ),
            );
            continue;
        }
        let readonly = m.options.iter().any(|o| o == "ro");
        let dest = PathBuf::from(&m.container_path);
        if !part.tweaks.mounts.iter().any(|x| x.destination == dest) {
            part.tweaks.mounts.push(crate::plan::Mount {
                source: PathBuf::from(&m.host_path),
                destination: dest,
                readonly,
                reason: why.to_owned(),
            });
        }
    }
    for e in &edits.env {
        let (k, v) = e.split_once('=').expect("validated");
        part.env(k, v, why.to_owned());
    }
    if !edits.hooks.is_empty() {
        part.finding(
            Check::Gpu,
            Level::Degraded,
            format!(
                "{why}: the spec asks for {} OCI hook(s), which hpcc never runs; the device is exposed without them",
                edits.hooks.len()
            ),
        );
    }
    Ok(())
}

/// The device nodes of a device (its own edits and its spec's), as `kind
/// major:minor`, from the spec or the host node; None when one cannot be
/// told (then it cannot be matched with an allocation).
fn nodes(host: &dyn super::host::Host, r: &Resolved) -> Option<Vec<(char, u64, u64)>> {
    let own = &r.spec.devices[r.device].container_edits.device_nodes;
    let shared = &r.spec.container_edits.device_nodes;
    own.iter()
        .chain(shared)
        .map(|d| {
            let host_path = PathBuf::from(d.host_path.as_deref().unwrap_or(&d.path));
            let stat = host.device(&host_path);
            let kind = match d.kind.as_deref() {
                Some("b") => 'b',
                Some(_) => 'c',
                None => stat?.kind,
            };
            match (d.major, d.minor) {
                (Some(a), Some(b)) => Some((kind, a, b)),
                _ => stat.map(|s| (kind, s.major, s.minor)),
            }
        })
        .collect()
}

/// Whether the container may have the requested device: the policy allows
/// it, or the engine allocated every node of it. The error says which was
/// missing.
fn permitted(input: &Inputs<'_>, q: &QualifiedName, r: &Resolved) -> Result<(), String> {
    if input.policy.gpu.allows(&q.kind, &q.name) {
        return Ok(());
    }
    let allocated = input.ctx.allocated_devices.as_slice();
    match nodes(input.host, r) {
        Some(ns) if !ns.is_empty() => {
            let missing: Vec<String> = ns
                .iter()
                .filter(|(k, a, b)| !allocated.iter().any(|d| d.is(*k, *a, *b)))
                .map(|(k, a, b)| format!("{k} {a}:{b}"))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "its device node(s) {} are not allocated to this container (config.json linux.devices) and the policy does not allow it ([gpu] allowed)",
                    missing.join(", ")
                ))
            }
        }
        _ => Err(
            "it has no device node the engine could have allocated, and the policy does not allow it ([gpu] allowed)".into(),
        ),
    }
}

/// Plans the CDI devices the container's annotations ask for.
pub(crate) fn plan(input: &Inputs<'_>) -> Part {
    let mut part = Part::default();
    let wanted = match requests(&input.ctx.annotations) {
        Ok(w) => w,
        Err((k, v, e)) => {
            let esc = crate::text::escape;
            part.finding(
                Check::Gpu,
                Level::Fatal,
                format!("annotation {} = {:?}: {}", esc(&k), v, esc(&e)),
            )
            .image = Some(esc(&format!("{k}={v:?}")));
            return part;
        }
    };
    if wanted.is_empty() {
        return part;
    }
    let list = wanted
        .iter()
        .map(|q| q.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if !input.policy.tweaks.gpu {
        part.finding(
            Check::Gpu,
            Level::Degraded,
            format!("the image asks for the CDI devices {list}, the site does not allow device exposure ([tweaks] gpu = false)"),
        );
        return part;
    }
    let dirs = &input.policy.gpu.cdi_spec_dirs;
    let (known, skipped) = load(input.host, dirs);
    let mut spec_edits_done: Vec<PathBuf> = Vec::new();
    for q in &wanted {
        let Some(r) = known.get(q) else {
            let f = part.finding(
                Check::Gpu,
                Level::Fatal,
                format!(
                    "the CDI device {q} is not defined by any spec in {}{}",
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!(" (skipped: {})", skipped.join("; "))
                    }
                ),
            );
            f.image = Some(q.to_string());
            f.node = Some(format!("{} CDI device(s) defined", known.len()));
            continue;
        };
        let why = format!("CDI {q} ({})", r.file.display());
        if let Err(not) = permitted(input, q, r) {
            let f = part.finding(
                Check::Gpu,
                Level::Degraded,
                format!("the CDI device {q} is asked for by an annotation but {not}: it is not exposed (an annotation may ask for a device, only the engine's allocation or the policy [gpu] allowed can grant it)"),
            );
            f.image = Some(q.to_string());
            continue;
        }
        let mut res = Ok(());
        if !spec_edits_done.contains(&r.file) {
            spec_edits_done.push(r.file.clone());
            res = apply_edits(input, &r.spec.container_edits, &why, &mut part);
        }
        let res = res.and_then(|_| {
            apply_edits(
                input,
                &r.spec.devices[r.device].container_edits,
                &why,
                &mut part,
            )
        });
        if let Err(e) = res {
            part.finding(Check::Gpu, Level::Fatal, format!("{why}: {e}"));
        }
    }
    part
}

#[cfg(test)]
mod tests {
    use super::super::host::fake::FakeHost;
    use super::super::host::{DeviceId, RealHost};
    use super::*;
    use crate::matcher::Selection;
    use crate::testutil::ctx;
    use crate::testutil::node;
    use hpcc_config::Policy;
    use std::path::Path;
    use std::path::PathBuf;

    const SPEC: &str = r#"{
      "cdiVersion": "0.6.0",
      "kind": "hpcc.test/dev",
      "containerEdits": {"env": ["HPCC_CDI_SPEC=1"]},
      "devices": [
        {"name": "test0", "containerEdits": {
          "deviceNodes": [{"path": "/dev/hpcc-test0", "hostPath": "/dev/null", "type": "c", "major": 1, "minor": 3, "permissions": "rw"}],
          "mounts": [{"hostPath": "/etc/hostname", "containerPath": "/etc/hpcc-host", "options": ["ro", "bind"]}],
          "env": ["HPCC_TEST_DEVICE=test0"]
        }},
        {"name": "stat", "containerEdits": {"deviceNodes": [{"path": "/dev/hpcc-null", "hostPath": "/dev/null"}]}},
        {"name": "hooked", "containerEdits": {"hooks": [{"hookName": "createContainer", "path": "/bin/true"}]}}
      ]
    }"#;

    #[test]
    fn names_and_requests() {
        let q = QualifiedName::parse("hpcc.test/dev=test0").unwrap();
        assert_eq!(
            (q.kind.as_str(), q.name.as_str()),
            ("hpcc.test/dev", "test0")
        );
        for bad in [
            "nodev", "vendor=x", "/class=x", "v/c=", "v/c=../x", "v/c=a b",
        ] {
            assert!(QualifiedName::parse(bad).is_err(), "{bad}");
        }
        let a: BTreeMap<String, String> = [
            (
                "cdi.k8s.io/job".to_string(),
                "hpcc.test/dev=test0, amd.com/gpu=0".to_string(),
            ),
            ("other".to_string(), "x".to_string()),
        ]
        .into();
        assert_eq!(requests(&a).unwrap().len(), 2);
        let bad: BTreeMap<String, String> =
            [("cdi.k8s.io/x".to_string(), "nope".to_string())].into();
        let (k, v, e) = requests(&bad).unwrap_err();
        assert_eq!((k.as_str(), v.as_str()), ("cdi.k8s.io/x", "nope"));
        assert!(e.contains("vendor.com/class=name"));
    }

    #[test]
    fn spec_parsing_and_validation() {
        let s = parse_spec(SPEC.as_bytes()).unwrap();
        assert_eq!(s.kind, "hpcc.test/dev");
        assert_eq!(s.devices.len(), 3);
        let n = &s.devices[0].container_edits.device_nodes[0];
        assert_eq!(
            (n.major, n.minor, n.kind.as_deref()),
            (Some(1), Some(3), Some("c"))
        );
        assert!(parse_spec(b"{").is_err());
        assert!(parse_spec(br#"{"cdiVersion":"0.6.0","kind":"nokind"}"#).is_err());
        let rel = br#"{"cdiVersion":"0.6.0","kind":"a.b/c","devices":[{"name":"x","containerEdits":{"deviceNodes":[{"path":"dev/x"}]}}]}"#;
        assert!(parse_spec(rel).unwrap_err().contains("absolute"));
        let perm = br#"{"cdiVersion":"0.6.0","kind":"a.b/c","devices":[{"name":"x","containerEdits":{"deviceNodes":[{"path":"/dev/x","permissions":"rwx"}]}}]}"#;
        assert!(parse_spec(perm).unwrap_err().contains("rwm"));
    }

    fn run(
        annotations: &[(&str, &str)],
        host: &dyn super::super::host::Host,
        policy: &Policy,
    ) -> Part {
        run_ctx(ctx(&[], annotations), host, policy)
    }

    /// The policy of the tests: the test kind allowed without allocation.
    fn allowing() -> Policy {
        let mut p = Policy::default();
        p.gpu.allowed = vec!["hpcc.test/dev=*".into()];
        p
    }

    fn run_ctx(
        c: crate::oci::LaunchContext,
        host: &dyn super::super::host::Host,
        policy: &Policy,
    ) -> Part {
        let n = node("icelake");
        let sel = Selection::default();
        let input = Inputs {
            ctx: &c,
            node: &n,
            policy,
            selection: &sel,
            host,
            image: None,
        };
        plan(&input)
    }

    fn host_with_spec() -> FakeHost {
        let mut h = FakeHost::default();
        h.files
            .insert("/etc/cdi/hpcc-test.json".into(), SPEC.as_bytes().to_vec());
        h.files
            .insert("/etc/cdi/vendor.yaml".into(), b"cdiVersion: 0.6.0".to_vec());
        h.files.insert("/etc/cdi/broken.json".into(), b"{".to_vec());
        h.devices.insert(
            "/dev/null".into(),
            DeviceId {
                kind: 'c',
                major: 1,
                minor: 3,
            },
        );
        h
    }

    #[test]
    fn requested_device_is_planned_with_spec_edits() {
        let h = host_with_spec();
        let p = allowing();
        let part = run(
            &[("cdi.k8s.io/test", "hpcc.test/dev=test0,hpcc.test/dev=stat")],
            &h,
            &p,
        );
        assert!(!part.fatal(), "{:#?}", part.findings);
        let d = &part.tweaks.devices[0];
        assert_eq!(d.path, PathBuf::from("/dev/hpcc-test0"));
        assert_eq!(d.host_path, PathBuf::from("/dev/null"));
        assert_eq!(
            (d.kind, d.major, d.minor, d.access.as_str()),
            ('c', 1, 3, "rw")
        );
        // Missing type/major/minor come from the host node.
        let d = &part.tweaks.devices[1];
        assert_eq!(
            (d.kind, d.major, d.minor, d.access.as_str()),
            ('c', 1, 3, "rwm")
        );
        assert_eq!(
            part.tweaks.mounts[0].destination,
            PathBuf::from("/etc/hpcc-host")
        );
        assert!(part.tweaks.mounts[0].readonly);
        let env: Vec<&str> = part.tweaks.env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(env, ["HPCC_CDI_SPEC", "HPCC_TEST_DEVICE"]);
    }

    #[test]
    fn unknown_device_refuses_and_names_skipped_specs() {
        let h = host_with_spec();
        let part = run(
            &[("cdi.k8s.io/x", "hpcc.test/dev=test9")],
            &h,
            &Policy::default(),
        );
        assert!(part.fatal());
        let r = &part.findings[0].reason;
        assert!(
            r.contains("hpcc.test/dev=test9") && r.contains("/etc/cdi"),
            "{r}"
        );
        assert!(r.contains("YAML") && r.contains("broken.json"), "{r}");
    }

    #[test]
    fn hooks_are_not_run_and_policy_can_forbid() {
        let h = host_with_spec();
        let part = run(&[("cdi.k8s.io/x", "hpcc.test/dev=hooked")], &h, &allowing());
        assert!(!part.fatal());
        assert!(part
            .findings
            .iter()
            .any(|f| f.reason.contains("never runs")));
        let mut p = allowing();
        p.tweaks.gpu = false;
        let part = run(&[("cdi.k8s.io/x", "hpcc.test/dev=test0")], &h, &p);
        assert!(part.tweaks.is_empty());
        assert!(part.findings[0].reason.contains("gpu = false"));
        // No annotation: nothing, whatever the specs.
        assert!(run(&[], &h, &Policy::default()).tweaks.is_empty());
    }

    #[test]
    fn real_spec_files_on_disk() {
        let t = crate::testutil::TempDir::new("cdi");
        std::fs::write(t.0.join("test.json"), SPEC).unwrap();
        let mut p = Policy::default();
        p.gpu.cdi_spec_dirs = vec![PathBuf::from("/nonexistent-cdi"), t.0.clone()];
        let h = RealHost::uncached(Path::new("/etc/ld.so.cache"));
        // Allocated by the engine: /dev/null's numbers in linux.devices.
        let mut c = ctx(&[], &[("cdi.k8s.io/x", "hpcc.test/dev=stat")]);
        c.allocated_devices = vec![crate::oci::AllocatedDevice {
            path: "/dev/null".into(),
            kind: 'c',
            major: 1,
            minor: 3,
        }];
        let part = run_ctx(c, &h, &p);
        assert!(!part.fatal(), "{:#?}", part.findings);
        let d = &part.tweaks.devices[0];
        assert_eq!((d.kind, d.major, d.minor), ('c', 1, 3));
    }

    #[test]
    fn an_annotation_asks_but_never_grants() {
        let h = host_with_spec();
        // Nothing allocated, nothing allowed: nothing exposed, and why.
        let part = run(
            &[("cdi.k8s.io/x", "hpcc.test/dev=test0")],
            &h,
            &Policy::default(),
        );
        assert!(part.tweaks.is_empty(), "{:#?}", part.tweaks);
        assert!(!part.fatal());
        let r = &part.findings[0].reason;
        assert!(
            r.contains("hpcc.test/dev=test0") && r.contains("c 1:3") && r.contains("[gpu] allowed"),
            "{r}"
        );
        // Allocated by the engine under another path: granted by numbers.
        let mut c = ctx(&[], &[("cdi.k8s.io/x", "hpcc.test/dev=test0")]);
        c.allocated_devices = vec![crate::oci::AllocatedDevice {
            path: "/dev/other".into(),
            kind: 'c',
            major: 1,
            minor: 3,
        }];
        let part = run_ctx(c.clone(), &h, &Policy::default());
        assert_eq!(part.tweaks.devices.len(), 1, "{:#?}", part.findings);
        // Allocated at its own path: the engine makes the node, hpcc adds
        // the rest of the device's edits.
        let mut same = c.clone();
        same.allocated_devices[0].path = "/dev/hpcc-test0".into();
        let part = run_ctx(same, &h, &Policy::default());
        assert!(part.tweaks.devices.is_empty());
        assert_eq!(part.tweaks.mounts.len(), 1);
        // Another device allocated: not this one.
        c.allocated_devices[0].minor = 5;
        assert!(run_ctx(c, &h, &Policy::default()).tweaks.is_empty());
        // A device without nodes (mounts only) needs the policy.
        let mut p = Policy::default();
        p.gpu.allowed = vec!["hpcc.test/dev=hooked".into()];
        let part = run(
            &[("cdi.k8s.io/x", "hpcc.test/dev=hooked,hpcc.test/dev=test0")],
            &h,
            &p,
        );
        assert!(part.tweaks.devices.is_empty());
        assert!(part
            .findings
            .iter()
            .any(|f| f.reason.contains("never runs")));
        assert!(part
            .findings
            .iter()
            .any(|f| f.reason.contains("test0") && f.reason.contains("not exposed")));
    }

    #[test]
    fn invalid_request_is_escaped_where_written() {
        let h = host_with_spec();
        let key = "cdi.k8s.io/x\nhpcc: container may start";
        let part = run(&[(key, "a\nhpcc: forged")], &h, &allowing());
        assert!(part.fatal());
        let f = &part.findings[0];
        assert!(!f.reason.contains('\n'), "{}", f.reason);
        assert!(!f.image.as_deref().unwrap().contains('\n'));
    }
}
