//! What this node offers images as CDI devices (`hpcc cdi generate`): the
//! host MPIs, libfabric and UCX of the policy, each as one CDI device
//! whose edits are the mounts, devices and environment of hpcc's own plan
//! for that component alone, planned with no image to inspect (the plan
//! `hpcc match --plan --annotations` shows). The library closure, the
//! dependency directories and the names are the tweak planner's
//! ([`crate::tweaks::plan`]): nothing here decides which file goes where.
//!
//! | kind | device | the plan of |
//! | --- | --- | --- |
//! | `hpcc.io/mpi` | the `[mpi.NAME]` table's name | `mpi_replace` by that host MPI |
//! | `hpcc.io/fabric` | `libfabric` | `libfabric_inject` |
//! | `hpcc.io/ucx` | `host` | `ucx_replace` |
//!
//! CDI has no linker cache. The plan's linker-cache entries (the libraries
//! in hpcc's own directories under `/dev/hpcc/lib`) reach the container
//! through a CDI hook that runs `hpcc-hook createRuntime --cdi KIND=NAME`:
//! the same hook binary, in the same runtime namespace as at `prestart`,
//! which decides the launch (annotations, fail-fast) and binds hpcc's
//! cache (the image's own with these entries in front) over the
//! container's `/etc/ld.so.cache` ([`cdi_request`] reads those arguments
//! back). Not `LD_LIBRARY_PATH`: the image's own `LD_LIBRARY_PATH` would be
//! replaced, a setuid program ignores it, and it would be put in front of
//! every library lookup of every process, glibc's own included, for a musl
//! image too.
//!
//! Every kind is glibc's: the libraries are the host's glibc builds. A
//! musl image that asks for one gets the mounts (CDI cannot look at the
//! image) but not the linker cache: the hook logs why and adds nothing, so
//! nothing loads them.
//!
//! The spec files are written at the lowest `cdiVersion` their fields
//! need ([`min_version`]), atomically (temporary file and rename), mode
//! 0644, as `hpcc.io-<class>.json`; a kind the node no longer offers has
//! its file removed.

use crate::fingerprint::NodeFingerprint;
use crate::matcher::{Finding, Level, Selection};
use crate::oci::LaunchContext;
use crate::plan::Tweaks;
use crate::tweaks::{self, host::Host};
use hpcc_config::Policy;
use serde::Serialize;
use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The vendor of hpcc's CDI kinds.
pub const VENDOR: &str = "hpcc.io";
/// The CDI class of host MPIs.
pub const CLASS_MPI: &str = "mpi";
/// The CDI class of the host libfabric.
pub const CLASS_FABRIC: &str = "fabric";
/// The CDI class of the host UCX.
pub const CLASS_UCX: &str = "ucx";
/// The device name of the host libfabric.
pub const DEVICE_FABRIC: &str = "libfabric";
/// The device name of the host UCX.
pub const DEVICE_UCX: &str = "host";
/// The hook's argument that names the CDI devices its entry was made for.
pub const HOOK_ARG: &str = "--cdi";
/// Where CDI specs generated at boot go (as `nvidia-cdi-refresh` does):
/// a tmpfs, regenerated at every boot, read by every CDI engine.
pub const DEFAULT_OUTPUT_DIR: &str = "/var/run/cdi";
/// The installed hook the spec's hook entries run.
pub const DEFAULT_HOOK: &str = "/usr/libexec/hpcc/hpcc-hook";

/// One CDI device this node offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// `hpcc.io/mpi`.
    pub kind: String,
    /// `mpich`.
    pub device: String,
    /// The plan's tweaks for this component alone, no image inspected.
    pub tweaks: Tweaks,
}

impl Offer {
    /// `hpcc.io/mpi=mpich`.
    pub fn qualified(&self) -> String {
        format!("{}={}", self.kind, self.device)
    }
}

/// A component the node does not offer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    /// `hpcc.io/mpi=mpich`.
    pub device: String,
    /// Why.
    pub reason: String,
}

/// What the node offers and what it holds back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offers {
    /// Offered, in kind order.
    pub offers: Vec<Offer>,
    /// Not offered.
    pub withheld: Vec<Withheld>,
}

/// Why specs cannot be generated or written.
#[derive(Debug, thiserror::Error)]
pub enum CdiOfferError {
    /// A `[mpi.NAME]` table name CDI cannot carry as a device name.
    #[error("policy [mpi.{0}]: the name is not a CDI device name (letters, digits, '_', '-', '.', ':', starting with a letter or digit)")]
    DeviceName(String),
    /// Writing or removing a spec file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A CDI device name: letters, digits, `_`, `-`, `.`, `:`, starting with
/// a letter or a digit (a digit needs `cdiVersion` 0.5.0).
fn valid_device_name(n: &str) -> bool {
    n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
}

/// The devices this node offers under `policy`, each planned by the tweak
/// planner for that component alone with no image ([`tweaks::plan`] with
/// no rootfs, the engine's `/dev` tmpfs assumed as every CDI engine gives
/// one). A component the policy disables (`[tweaks]`) is withheld, and
/// so is one whose plan fails or has a fatal finding.
pub fn offers(
    node: &NodeFingerprint,
    policy: &Policy,
    host: &dyn Host,
) -> Result<Offers, CdiOfferError> {
    let mut out = Offers::default();
    let mut wanted: Vec<(String, String, Selection, bool, &str)> = Vec::new();
    for name in policy.mpi.keys() {
        if !valid_device_name(name) {
            return Err(CdiOfferError::DeviceName(name.clone()));
        }
        wanted.push((
            format!("{VENDOR}/{CLASS_MPI}"),
            name.clone(),
            Selection {
                mpi: Some(name.clone()),
                ..Default::default()
            },
            policy.tweaks.mpi_replace,
            "tweaks.mpi_replace",
        ));
    }
    if policy.libfabric.is_some() {
        wanted.push((
            format!("{VENDOR}/{CLASS_FABRIC}"),
            DEVICE_FABRIC.into(),
            Selection {
                libfabric: true,
                ..Default::default()
            },
            policy.tweaks.libfabric_inject,
            "tweaks.libfabric_inject",
        ));
    }
    if policy.ucx.is_some() {
        wanted.push((
            format!("{VENDOR}/{CLASS_UCX}"),
            DEVICE_UCX.into(),
            Selection {
                ucx: true,
                ..Default::default()
            },
            policy.tweaks.ucx_replace,
            "tweaks.ucx_replace",
        ));
    }
    let ctx = LaunchContext::from_annotations("cdi", BTreeMap::new());
    for (kind, device, sel, allowed, key) in wanted {
        let qualified = format!("{kind}={device}");
        if !allowed {
            out.withheld.push(Withheld {
                device: qualified,
                reason: format!("policy {key} = false"),
            });
            continue;
        }
        // hpcc's own failure for one component (a policy library that is
        // missing or not what it says) withholds that device only: the
        // others are still offered, and `hpcc doctor` names the library.
        let planned = match tweaks::plan(&ctx, node, policy, &sel, host, None) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(device = %qualified, "CDI device withheld: {e}");
                out.withheld.push(Withheld {
                    device: qualified,
                    reason: format!("cannot be planned: {e}"),
                });
                continue;
            }
        };
        let fatal: Vec<&Finding> = planned
            .findings
            .iter()
            .filter(|f| f.level == Level::Fatal)
            .collect();
        if !fatal.is_empty() || planned.tweaks.is_empty() {
            out.withheld.push(Withheld {
                device: qualified,
                reason: if fatal.is_empty() {
                    "the plan puts nothing in the container".into()
                } else {
                    fatal
                        .iter()
                        .map(|f| f.reason.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            });
            continue;
        }
        out.offers.push(Offer {
            kind,
            device,
            tweaks: planned.tweaks,
        });
    }
    Ok(out)
}

/// [`offers`] on this node: host libraries read through the host's linker
/// cache and the per-boot host library cache of the policy (saved back
/// when root).
pub fn offers_here(node: &NodeFingerprint, policy: &Policy) -> Result<Offers, CdiOfferError> {
    let host =
        crate::tweaks::host::RealHost::for_policy(Path::new(crate::launch::HOST_LD_CACHE), policy);
    let out = offers(node, policy, &host);
    host.save();
    out
}

/// The image's musl loader, when it has one (hpcc's kinds are glibc's).
pub use crate::tweaks::image::musl_loader;

/// The spec's hook entries: which hook binary and policy they name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRef {
    /// The static `hpcc-hook` ([`DEFAULT_HOOK`]).
    pub path: PathBuf,
    /// The policy it reads (`--config`).
    pub config: PathBuf,
    /// Its timeout in seconds.
    pub timeout: u32,
}

impl Default for HookRef {
    fn default() -> Self {
        HookRef {
            path: PathBuf::from(DEFAULT_HOOK),
            config: PathBuf::from(hpcc_config::DEFAULT_PATH),
            timeout: 30,
        }
    }
}

/// A CDI spec as hpcc writes it (the subset of the CDI fields it uses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecOut {
    /// The lowest version that carries what the spec uses.
    pub cdi_version: String,
    /// `hpcc.io/mpi`.
    pub kind: String,
    /// One per offer of the kind.
    pub devices: Vec<DeviceOut>,
}

/// One CDI device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceOut {
    /// `mpich`.
    pub name: String,
    /// Its edits.
    pub container_edits: EditsOut,
}

/// A device's container edits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EditsOut {
    /// `NAME=VALUE`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Device nodes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNodeOut>,
    /// Bind mounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountOut>,
    /// The linker-cache hook.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookOut>,
}

/// A CDI device node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNodeOut {
    /// In the container.
    pub path: String,
    /// On the host, when not `path` (needs 0.5.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `c` or `b`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Cgroup access.
    pub permissions: String,
}

/// A CDI mount (no `type`: that field needs 0.4.0, and a bind needs none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountOut {
    /// On the host.
    pub host_path: String,
    /// In the container.
    pub container_path: String,
    /// `ro`, `nosuid`, `nodev`, `bind`.
    pub options: Vec<String>,
}

/// A CDI hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookOut {
    /// `createRuntime`.
    pub hook_name: String,
    /// The hook binary.
    pub path: String,
    /// Its argv.
    pub args: Vec<String>,
    /// Its environment (never the container's).
    pub env: Vec<String>,
    /// Seconds.
    pub timeout: u32,
}

/// The hook's argv for the devices of one spec entry.
pub fn hook_args(hook: &HookRef, device: &str) -> Vec<String> {
    vec![
        "hpcc-hook".into(),
        "createRuntime".into(),
        format!("--config={}", hook.config.display()),
        format!("{HOOK_ARG}={device}"),
    ]
}

/// The CDI devices named by a hook entry's argv (its `--cdi=` arguments),
/// for the hook and for a prestart hook that finds such an entry.
pub fn cdi_request(args: &[String]) -> Vec<String> {
    args.iter()
        .filter_map(|a| a.strip_prefix(HOOK_ARG)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

fn edits(offer: &Offer, hook: &HookRef) -> EditsOut {
    let t = &offer.tweaks;
    let mut out = EditsOut {
        env: t
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect(),
        ..Default::default()
    };
    for d in &t.devices {
        out.device_nodes.push(DeviceNodeOut {
            path: d.path.display().to_string(),
            host_path: (d.host_path != d.path).then(|| d.host_path.display().to_string()),
            kind: d.kind.to_string(),
            major: d.major,
            minor: d.minor,
            permissions: d.access.clone(),
        });
    }
    for m in &t.mounts {
        let mut options = vec![if m.readonly { "ro" } else { "rw" }.to_owned()];
        options.extend(["nosuid", "nodev", "bind"].map(str::to_owned));
        out.mounts.push(MountOut {
            host_path: m.source.display().to_string(),
            container_path: m.destination.display().to_string(),
            options,
        });
    }
    if !t.ld_cache.is_empty() {
        out.hooks.push(HookOut {
            hook_name: "createRuntime".into(),
            path: hook.path.display().to_string(),
            args: hook_args(hook, &offer.qualified()),
            env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
            timeout: hook.timeout,
        });
    }
    out
}

/// The lowest `cdiVersion` that carries `spec`, by the CDI project's rules
/// (`specs-go/version.go`): 0.3.0, or 0.5.0 for a device node's
/// `hostPath` or a device name that starts with a digit. hpcc writes no
/// mount `type` (0.4.0), no annotations (0.6.0), no dotted class (0.6.0),
/// no GIDs or RDT (0.7.0).
pub fn min_version(spec: &SpecOut) -> &'static str {
    let v050 = spec.devices.iter().any(|d| {
        d.name.starts_with(|c: char| c.is_ascii_digit())
            || d.container_edits
                .device_nodes
                .iter()
                .any(|n| n.host_path.is_some())
    });
    if v050 {
        "0.5.0"
    } else {
        "0.3.0"
    }
}

/// The specs of `offers`, one per kind, in kind order.
pub fn specs(offers: &[Offer], hook: &HookRef) -> Vec<SpecOut> {
    let mut by_kind: BTreeMap<&str, Vec<DeviceOut>> = BTreeMap::new();
    for o in offers {
        by_kind.entry(&o.kind).or_default().push(DeviceOut {
            name: o.device.clone(),
            container_edits: edits(o, hook),
        });
    }
    by_kind
        .into_iter()
        .map(|(kind, devices)| {
            let mut s = SpecOut {
                cdi_version: String::new(),
                kind: kind.to_owned(),
                devices,
            };
            s.cdi_version = min_version(&s).to_owned();
            s
        })
        .collect()
}

/// The file name of a kind's spec: `hpcc.io-mpi.json`.
pub fn file_name(kind: &str) -> String {
    format!("{}.json", kind.replace('/', "-"))
}

/// The bytes of a spec file (pretty JSON, a final newline).
pub fn render(spec: &SpecOut) -> Vec<u8> {
    // Strings, numbers and vectors only: serializing cannot fail.
    let mut bytes = serde_json::to_vec_pretty(spec).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The classes hpcc writes specs for (a stale file of one is removed).
pub const CLASSES: [&str; 3] = [CLASS_MPI, CLASS_FABRIC, CLASS_UCX];

/// Writes `specs` into `dir` (created 0755 when missing), each atomically
/// with mode 0644 (root's when root writes it), and removes hpcc's spec of
/// any class not in `specs`. Returns the files written.
pub fn write_specs(dir: &Path, specs: &[SpecOut]) -> Result<Vec<PathBuf>, CdiOfferError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CdiOfferError::Io { path, source }
    };
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io(dir))?;
    }
    let mut written = Vec::new();
    for s in specs {
        let path = dir.join(file_name(&s.kind));
        let bytes = render(s);
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let mode = crate::io::FileMode {
            mode: 0o644,
            owner: root.then_some((0, 0)),
        };
        crate::io::write_atomic(&path, &bytes, mode).map_err(io(&path))?;
        written.push(path);
    }
    for class in CLASSES {
        let path = dir.join(file_name(&format!("{VENDOR}/{class}")));
        if !written.contains(&path) {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(file = %path.display(), "stale hpcc CDI spec removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests;

/// The linker-cache entries the hook adds for the CDI devices `requested`
/// (`hpcc.io/mpi=mpich`): the offers' own entries, each kept only when the
/// container's config has the mount it points to, from the same host file
/// (`mounts`: `(source, destination)` of `config.json`): the engine made
/// what the spec said, so a spec older than the policy (not regenerated)
/// never puts an entry to a file that is not there. Returns the entries and
/// a line for each device or entry left out.
pub fn cache_entries_for(
    offers: &Offers,
    requested: &[String],
    mounts: &[(PathBuf, PathBuf)],
) -> (Vec<crate::plan::CacheEntry>, Vec<String>) {
    let mut entries: Vec<crate::plan::CacheEntry> = Vec::new();
    let mut notes = Vec::new();
    for q in requested {
        let Some(o) = offers.offers.iter().find(|o| &o.qualified() == q) else {
            notes.push(format!(
                "CDI device {} is not offered by this node's policy now: its linker cache entries are not added (regenerate the specs: hpcc cdi generate)",
                crate::text::escape(q)
            ));
            continue;
        };
        for e in &o.tweaks.ld_cache {
            let source = o
                .tweaks
                .mounts
                .iter()
                .find(|m| m.destination == e.path)
                .map(|m| &m.source);
            let mounted =
                source.is_some_and(|s| mounts.iter().any(|(ms, md)| ms == s && md == &e.path));
            if !mounted {
                notes.push(format!(
                    "CDI device {q}: {} is not mounted from the host file the policy names now: left out of the linker cache (regenerate the specs: hpcc cdi generate)",
                    e.path.display()
                ));
            } else if !entries.contains(e) {
                entries.push(e.clone());
            }
        }
    }
    (entries, notes)
}
