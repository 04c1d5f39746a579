//! The hpcc policy: what `/etc/hpcc/hook.toml` may say, its defaults, and its
//! validation.
//!
//! The image can only ask; this file decides. A missing file means the
//! documented defaults ([`Policy::default`]); a file that does not parse, has
//! an unknown key or a bad value is an error that names the line and the key,
//! because a silently ignored typo in a security policy is worse than a
//! refused start.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the policy lives unless `HPCC_CONFIG` names another file.
pub const DEFAULT_PATH: &str = "/etc/hpcc/hook.toml";

/// The environment variable that overrides [`DEFAULT_PATH`].
pub const CONFIG_ENV: &str = "HPCC_CONFIG";

/// Largest policy file we read: the file is admin-owned, but bounding it costs
/// nothing and keeps a mistaken path (a device, a log) from eating memory.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Someone other than root can change the file.
    #[error("policy file {path} is not trusted: {reason} (it must be owned by root and writable only by its owner)")]
    Untrusted {
        /// The policy file.
        path: PathBuf,
        /// Owner or mode.
        reason: String,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("policy file {path} is {size} bytes, larger than the limit of {MAX_CONFIG_BYTES}")]
    TooLarge {
        /// The policy file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// TOML syntax error, unknown key or a value of the wrong type. The
    /// message comes from the TOML parser and names line, column and key.
    #[error("invalid policy file {path}: {message}")]
    Parse {
        /// The policy file.
        path: PathBuf,
        /// Parser message, with line and key.
        message: String,
    },
    /// The file parsed but a value is not acceptable.
    #[error("invalid policy file {path}: key `{key}` = {value:?}: {reason}")]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// Dotted key, e.g. `mpi.mpich.libraries`.
        key: String,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How strictly one check is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// The check is not evaluated for the decision (still reported).
    Off,
    /// A fatal finding is logged, the container starts.
    Warn,
    /// A fatal finding refuses the start.
    #[default]
    Enforce,
}

impl Enforcement {
    /// The lowercase name used in the policy file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Off => "off",
            Enforcement::Warn => "warn",
            Enforcement::Enforce => "enforce",
        }
    }
}

impl std::str::FromStr for Enforcement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(Enforcement::Enforce),
            "warn" => Ok(Enforcement::Warn),
            "off" => Ok(Enforcement::Off),
            other => Err(format!(
                "unknown enforcement level {other:?} (expected enforce, warn or off)"
            )),
        }
    }
}

impl std::fmt::Display for Enforcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with an image that carries no `org.supercontainers.*` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnannotatedAction {
    /// Start it, and log that it was not checked.
    #[default]
    Allow,
    /// Refuse it: the site only runs conformant images.
    Refuse,
}

/// What to do when hpcc itself fails (unreadable state, broken bundle, a
/// fingerprint that cannot be taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Fail closed: refuse the start.
    #[default]
    Refuse,
    /// Fail open: log the error and start the container untouched.
    Allow,
}

/// Per-check enforcement levels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checks {
    /// Platform and CPU microarchitecture (the SIGILL check).
    pub cpu: Enforcement,
    /// NVIDIA driver, CUDA version and GPU architecture.
    pub gpu: Enforcement,
    /// MPI implementation, ABI and portability mode.
    pub mpi: Enforcement,
    /// libc implementation and glibc version.
    pub libc: Enforcement,
    /// Host kernel minimum version and expected kernel features.
    pub kernel: Enforcement,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            cpu: Enforcement::Enforce,
            gpu: Enforcement::Enforce,
            mpi: Enforcement::Enforce,
            libc: Enforcement::Warn,
            kernel: Enforcement::Enforce,
        }
    }
}

/// What users may change for their own launches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Users {
    /// The lowest enforcement a user may ask for (`srun --hpcc=warn`). With
    /// `enforce`, users cannot relax anything.
    pub may_relax_to: Enforcement,
}

impl Default for Users {
    fn default() -> Self {
        Users {
            may_relax_to: Enforcement::Warn,
        }
    }
}

/// Which tweaks the site allows images to ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tweaks {
    /// Host MPI replacement (`mpi_replace`).
    pub mpi_replace: bool,
    /// Host libfabric injection (`libfabric_inject`).
    pub libfabric_inject: bool,
    /// Host UCX replacement (`ucx_replace`).
    pub ucx_replace: bool,
    /// GPU device and driver exposure.
    pub gpu: bool,
}

impl Default for Tweaks {
    fn default() -> Self {
        Tweaks {
            mpi_replace: true,
            libfabric_inject: true,
            ucx_replace: true,
            gpu: true,
        }
    }
}

/// ABI family of a host MPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MpiAbi {
    /// The MPICH ABI (`libmpi.so.12` family: MPICH, Intel MPI, Cray MPICH,
    /// MVAPICH).
    Mpich,
    /// Open MPI (`libmpi.so.40`).
    Openmpi,
    /// The MPI-5 standard ABI (`libmpi_abi.so`).
    MpiAbi,
}

impl MpiAbi {
    /// The name used in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            MpiAbi::Mpich => "mpich",
            MpiAbi::Openmpi => "openmpi",
            MpiAbi::MpiAbi => "mpi-abi",
        }
    }
}

impl std::fmt::Display for MpiAbi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One host MPI offered to images (`[mpi.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostMpi {
    /// ABI family.
    pub abi: MpiAbi,
    /// The MPI libraries themselves (absolute host paths).
    pub libraries: Vec<PathBuf>,
    /// Further host libraries the MPI needs that cannot be found through
    /// `DT_NEEDED` (dlopen'ed plugins).
    #[serde(default)]
    pub dependencies: Vec<PathBuf>,
    /// Further host paths bound at the same path (spool dirs, `/dev/cxi*`).
    #[serde(default)]
    pub mounts: Vec<PathBuf>,
    /// Environment set in the container when this MPI is injected.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// The host libfabric (`[libfabric]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Libfabric {
    /// The host `libfabric.so.1`.
    pub library: PathBuf,
    /// The provider directory (`FI_PROVIDER_PATH`).
    #[serde(default)]
    pub providers: Option<PathBuf>,
    /// Further libraries to inject.
    #[serde(default)]
    pub dependencies: Vec<PathBuf>,
    /// The host's NCCL network plugin over libfabric (aws-ofi-nccl's
    /// `libnccl-net-ofi.so` or `libnccl-net.so`), put in images that carry
    /// NCCL, over their own copies, with `NCCL_NET_PLUGIN` set. Unset: no
    /// plugin is injected (the default).
    #[serde(default)]
    pub nccl_plugin: Option<PathBuf>,
    /// `NCCL_NET` set with the plugin (aws-ofi-nccl's network is named
    /// `"AWS Libfabric"`): NCCL then fails to start rather than fall back
    /// to sockets when the plugin cannot be used. Unset: NCCL chooses.
    #[serde(default)]
    pub nccl_net: Option<String>,
}

/// The host UCX (`[ucx]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ucx {
    /// `libucp`, `libuct`, `libucs`, `libucm`.
    pub libraries: Vec<PathBuf>,
    /// The UCX modules directory (`UCX_MODULE_DIR`).
    #[serde(default)]
    pub modules: Option<PathBuf>,
}

/// GPU exposure (`[gpu]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gpu {
    /// Directories searched for CDI specs (`*.json`, `*.yaml` is not read).
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// Devices a container may be given that nothing allocated to it:
    /// CDI names `vendor.com/class=name`, `vendor.com/class=*` (every
    /// device of a kind) or `*` (every device: nodes given whole to one
    /// job). NVIDIA GPUs are `nvidia.com/gpu=INDEX` or
    /// `nvidia.com/gpu=GPU-UUID`. Otherwise a device is exposed only when
    /// the engine already lists it in `config.json` (`linux.devices`) or,
    /// in a Slurm step, the step's GPU list names it (`SLURM_STEP_GPUS`,
    /// `SLURM_JOB_GPUS`, else `CUDA_VISIBLE_DEVICES`): an
    /// image's annotations and `ENV` may ask, never grant.
    pub allowed: Vec<String>,
}

impl Default for Gpu {
    fn default() -> Self {
        Gpu {
            cdi_spec_dirs: vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
            allowed: Vec::new(),
        }
    }
}

impl Gpu {
    /// Whether the policy allows the device `kind=name` (`nvidia.com/gpu`,
    /// `0`) without an allocation.
    pub fn allows(&self, kind: &str, name: &str) -> bool {
        self.allowed.iter().any(|a| match a.split_once('=') {
            None => a == "*",
            Some((k, n)) => k == kind && (n == "*" || n == name),
        })
    }
}

/// Whether `s` is a `[gpu] allowed` entry: `*`, `vendor.com/class=*` or
/// `vendor.com/class=name` (CDI's characters).
fn valid_device_pattern(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let Some((kind, name)) = s.split_once('=') else {
        return false;
    };
    let Some((vendor, class)) = kind.split_once('/') else {
        return false;
    };
    let part = |p: &str, extra: &[u8]| {
        !p.is_empty()
            && p.len() <= 128
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    };
    part(vendor, b".-") && part(class, b"_.-") && (name == "*" || part(name, b"_.:-"))
}

/// The per-boot caches (`[cache]`): the node fingerprint and the host
/// library facts planning reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// Use the cache at all.
    pub enabled: bool,
    /// Directory of the cache (root-owned, on tmpfs).
    pub dir: PathBuf,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            enabled: true,
            dir: PathBuf::from("/run/hpcc"),
        }
    }
}

/// Bounds of one launch (`[limits]`): an image must not be able to make
/// hpcc wait, or mount, without end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Deadline of the apply helper of `hpcc-hook` (milliseconds): past it
    /// the helper is killed, what it did dies with the container's mount
    /// namespace, and `on_error` decides.
    pub apply_timeout_ms: u64,
    /// Deadline of `hpcc-hook`'s GPU helper (`hpcc fingerprint --gpus`,
    /// run on a fingerprint cache miss; milliseconds). Past it the helper
    /// is killed and the launch goes on as on a node without NVIDIA GPU;
    /// nothing is cached, the next launch asks again.
    pub probe_timeout_ms: u64,
    /// Most bind mounts one launch may add.
    pub max_mounts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            apply_timeout_ms: 5000,
            probe_timeout_ms: 10_000,
            max_mounts: 256,
        }
    }
}

/// `hpcc-runtime` (`[runtime]`): the OCI runtime it executes after editing
/// the container's `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Absolute path of the real runtime (runc or crun); never looked up
    /// in `PATH`.
    pub path: PathBuf,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            path: PathBuf::from("/usr/sbin/runc"),
        }
    }
}

/// Slurm `--container` steps (`[slurm]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Slurm {
    /// An MPI step's container shares the node's network, IPC and PID
    /// namespaces (PID: not for rootless containers) and its `/dev/shm`
    /// (the interconnect, the PMI server on the node's loopback, shared
    /// memory and cross-memory attach must be reachable), as Pyxis/enroot
    /// and Apptainer do. `false` keeps the namespaces the bundle asks for.
    pub mpi_node_namespaces: bool,
}

impl Default for Slurm {
    fn default() -> Self {
        Slurm {
            mpi_node_namespaces: true,
        }
    }
}

/// Placement at submission (`[scheduling]`): what the submit filter
/// (`cli_filter.lua` of the `hpcc-slurm` package, through `hpcc match
/// --submit`) does with `sbatch/srun --container=B` before the job queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scheduling {
    /// `enforce`: the job gets the `--constraint` of the node classes that
    /// run the image (combined with the user's own), and an image no node
    /// of the partition can run is refused before it queues. `warn`: the
    /// job is left as it is and the user is told. `off`: the filter does
    /// nothing.
    pub submit: Enforcement,
    /// Directory of saved node fingerprints (`hpcc fingerprint --json`, one
    /// `NODE.json` per node, written by the `hpcc-node-features` boot unit
    /// or by the admin) that the submit host scores images against.
    pub fleet: PathBuf,
    /// Bound of one submit-time decision, `sinfo` included (milliseconds).
    pub timeout_ms: u64,
    /// How long (seconds) a submitting user's cached `sinfo` answer is
    /// reused (`$XDG_RUNTIME_DIR/hpcc/`); 0: ask slurmctld every time.
    pub sinfo_cache_s: u64,
}

impl Default for Scheduling {
    fn default() -> Self {
        Scheduling {
            submit: Enforcement::Enforce,
            fleet: PathBuf::from("/etc/hpcc/fleet"),
            timeout_ms: 5000,
            sinfo_cache_s: 30,
        }
    }
}

/// Logging (`[log]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Send records to journald when its socket exists.
    pub journald: bool,
    /// Minimum level for journald: `error`, `warn`, `info`, `debug`,
    /// `trace`.
    pub level: String,
    /// Minimum level on stderr (same values). Default `warn`: runc shows a
    /// failing hook's whole stderr and Slurm the runtime's to the user, and
    /// the refusal line must stand out; `info` on nodes without journald
    /// keeps every decision in the engine's or the job's log.
    pub stderr: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            journald: true,
            level: "info".into(),
            stderr: "warn".into(),
        }
    }
}

/// Curated annotation collections (`[collections]`): MetaHub-format YAML
/// files naming images the site does not control, merged into their
/// annotations at launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Collections {
    /// Directory of `*.yaml` collection files; `None`: no collections.
    pub dir: Option<PathBuf>,
    /// When the image and a collection set the same key, the image's value
    /// is kept (`false`: the collection's).
    pub image_wins: bool,
}

impl Default for Collections {
    fn default() -> Self {
        Collections {
            dir: None,
            image_wins: true,
        }
    }
}

/// The whole policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Per-check enforcement.
    pub checks: Checks,
    /// Images without `org.supercontainers.*` annotations.
    pub unannotated: UnannotatedAction,
    /// hpcc's own failures.
    pub on_error: OnError,
    /// What users may relax.
    pub users: Users,
    /// Which tweaks images may ask for.
    pub tweaks: Tweaks,
    /// Host MPIs offered to images, by name.
    pub mpi: BTreeMap<String, HostMpi>,
    /// Bounds of one launch.
    pub limits: Limits,
    /// `hpcc-runtime`'s real runtime.
    pub runtime: Runtime,
    /// Slurm steps.
    pub slurm: Slurm,
    /// Placement at submission.
    pub scheduling: Scheduling,
    /// Host libfabric.
    pub libfabric: Option<Libfabric>,
    /// Host UCX.
    pub ucx: Option<Ucx>,
    /// GPU exposure.
    pub gpu: Gpu,
    /// Fingerprint cache.
    pub cache: Cache,
    /// Logging.
    pub log: Log,
    /// Curated annotation collections.
    pub collections: Collections,
}

/// A policy decides what root does at every container start: it is only
/// read when root (or the user running hpcc, for a rootless runtime that
/// can only affect that user's own containers) owns it and nobody else
/// can write it.
fn check_trusted(file: &std::fs::File, path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let untrusted = |reason: String| ConfigError::Untrusted {
        path: path.to_owned(),
        reason,
    };
    let meta = file.metadata().map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(untrusted("it is not a regular file".into()));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(untrusted(format!(
            "it belongs to uid {}, not to root",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(untrusted(format!(
            "its mode {:o} lets others write it",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Where the policy comes from: `HPCC_CONFIG` when set, else [`DEFAULT_PATH`].
/// Only for the `hpcc` command line: the hook and the runtime never read
/// their environment (an image's `process.env` can reach a hook's).
pub fn policy_path_from_env() -> PathBuf {
    std::env::var_os(CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

impl Policy {
    /// Loads the policy at `path`. A missing file gives the defaults; any other
    /// problem is an error.
    pub fn load(path: &Path) -> Result<Policy, ConfigError> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        // Never blocks: a FIFO at the path is refused by check_trusted
        // (not a regular file) instead of waiting for a writer.
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Policy::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        check_trusted(&file, path)?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
                size: text.len() as u64,
            });
        }
        Policy::parse(&text, path)
    }

    /// Parses and validates policy text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Policy, ConfigError> {
        let policy: Policy = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}: {}", e.message())
                }
                None => e.message().to_owned(),
            },
        })?;
        policy.validate(path)?;
        Ok(policy)
    }

    /// Checks values that the types alone cannot: absolute host paths,
    /// non-empty library lists, a known log level.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, value: String, reason: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            value,
            reason: reason.to_owned(),
        };
        let absolute = |key: String, p: &Path| -> Result<(), ConfigError> {
            if !p.is_absolute() {
                return Err(invalid(
                    key,
                    p.display().to_string(),
                    "must be an absolute host path",
                ));
            }
            if p.components().any(|c| c == std::path::Component::ParentDir) {
                return Err(invalid(
                    key,
                    p.display().to_string(),
                    "must not contain `..`",
                ));
            }
            Ok(())
        };
        for (name, mpi) in &self.mpi {
            if mpi.libraries.is_empty() {
                return Err(invalid(
                    format!("mpi.{name}.libraries"),
                    "[]".into(),
                    "lists no library: name the host MPI's libmpi",
                ));
            }
            for p in &mpi.libraries {
                absolute(format!("mpi.{name}.libraries"), p)?;
            }
            for p in &mpi.dependencies {
                absolute(format!("mpi.{name}.dependencies"), p)?;
            }
            for p in &mpi.mounts {
                absolute(format!("mpi.{name}.mounts"), p)?;
            }
            for k in mpi.env.keys() {
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    return Err(invalid(
                        format!("mpi.{name}.env"),
                        k.clone(),
                        "is not a valid environment variable name",
                    ));
                }
            }
        }
        if let Some(lf) = &self.libfabric {
            absolute("libfabric.library".into(), &lf.library)?;
            if let Some(p) = &lf.providers {
                absolute("libfabric.providers".into(), p)?;
            }
            for p in &lf.dependencies {
                absolute("libfabric.dependencies".into(), p)?;
            }
            if let Some(p) = &lf.nccl_plugin {
                absolute("libfabric.nccl_plugin".into(), p)?;
            }
            if let Some(n) = &lf.nccl_net {
                if n.trim().is_empty() || n.contains('\0') || n.contains('\n') {
                    return Err(invalid(
                        "libfabric.nccl_net".into(),
                        n.clone(),
                        "is not a network name NCCL knows (aws-ofi-nccl's is \"AWS Libfabric\")",
                    ));
                }
            }
        }
        if let Some(ucx) = &self.ucx {
            if ucx.libraries.is_empty() {
                return Err(invalid(
                    "ucx.libraries".into(),
                    "[]".into(),
                    "lists no library",
                ));
            }
            for p in &ucx.libraries {
                absolute("ucx.libraries".into(), p)?;
            }
            if let Some(p) = &ucx.modules {
                absolute("ucx.modules".into(), p)?;
            }
        }
        for p in &self.gpu.cdi_spec_dirs {
            absolute("gpu.cdi_spec_dirs".into(), p)?;
        }
        for a in &self.gpu.allowed {
            if !valid_device_pattern(a) {
                return Err(invalid(
                    "gpu.allowed".into(),
                    a.clone(),
                    "expected \"*\", \"vendor.com/class=*\" or \"vendor.com/class=name\"",
                ));
            }
        }
        absolute("cache.dir".into(), &self.cache.dir)?;
        absolute("runtime.path".into(), &self.runtime.path)?;
        if !(100..=600_000).contains(&self.limits.apply_timeout_ms) {
            return Err(invalid(
                "limits.apply_timeout_ms".into(),
                self.limits.apply_timeout_ms.to_string(),
                "must be between 100 and 600000 (milliseconds)",
            ));
        }
        if !(100..=600_000).contains(&self.limits.probe_timeout_ms) {
            return Err(invalid(
                "limits.probe_timeout_ms".into(),
                self.limits.probe_timeout_ms.to_string(),
                "must be between 100 and 600000 (milliseconds)",
            ));
        }
        if !(1..=65_536).contains(&self.limits.max_mounts) {
            return Err(invalid(
                "limits.max_mounts".into(),
                self.limits.max_mounts.to_string(),
                "must be between 1 and 65536",
            ));
        }
        if let Some(d) = &self.collections.dir {
            absolute("collections.dir".into(), d)?;
        }
        absolute("scheduling.fleet".into(), &self.scheduling.fleet)?;
        if !(100..=60_000).contains(&self.scheduling.timeout_ms) {
            return Err(invalid(
                "scheduling.timeout_ms".into(),
                self.scheduling.timeout_ms.to_string(),
                "must be between 100 and 60000 (milliseconds)",
            ));
        }
        if self.scheduling.sinfo_cache_s > 3600 {
            return Err(invalid(
                "scheduling.sinfo_cache_s".into(),
                self.scheduling.sinfo_cache_s.to_string(),
                "must be between 0 and 3600 (seconds)",
            ));
        }
        for (key, value) in [
            ("log.level", &self.log.level),
            ("log.stderr", &self.log.stderr),
        ] {
            if !["error", "warn", "info", "debug", "trace"].contains(&value.as_str()) {
                return Err(invalid(
                    key.into(),
                    value.clone(),
                    "expected error, warn, info, debug or trace",
                ));
            }
        }
        Ok(())
    }

    /// The enforcement a launch gets once the user's wish is applied: a user
    /// may always ask for stricter, and may relax a level only down to
    /// `users.may_relax_to`.
    pub fn effective(&self, configured: Enforcement, user: Option<Enforcement>) -> Enforcement {
        match user {
            None => configured,
            Some(wish) if wish >= configured => wish,
            Some(wish) => wish.max(self.users.may_relax_to),
        }
    }
}

/// The commented reference policy shipped as `config/hook.toml`.
pub const EXAMPLE: &str = include_str!("../hook.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, ConfigError> {
        Policy::parse(text, Path::new("/etc/hpcc/hook.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let p = parse("").unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(p.checks.cpu, Enforcement::Enforce);
        assert_eq!(p.checks.libc, Enforcement::Warn);
        assert_eq!(p.unannotated, UnannotatedAction::Allow);
        assert_eq!(p.on_error, OnError::Refuse);
    }

    #[test]
    fn missing_file_gives_defaults() {
        let p = Policy::load(Path::new("/nonexistent/hpcc/hook.toml")).unwrap();
        assert_eq!(p, Policy::default());
    }

    #[test]
    fn shipped_example_parses_and_validates() {
        let p = parse(EXAMPLE).expect("config/hook.toml must stay valid");
        assert!(p.mpi.contains_key("mpich"));
        assert_eq!(p.mpi["mpich"].abi, MpiAbi::Mpich);
    }

    #[test]
    fn nccl_plugin_is_off_by_default_and_checked_when_named() {
        let lf = "[libfabric]\nlibrary = \"/usr/lib/x86_64-linux-gnu/libfabric.so.1\"\n";
        let p = parse(lf).unwrap();
        let l = p.libfabric.unwrap();
        assert_eq!((l.nccl_plugin, l.nccl_net), (None, None));
        let p = parse(&format!(
            "{lf}nccl_plugin = \"/opt/aws-ofi-nccl/lib/libnccl-net-ofi.so\"\nnccl_net = \"AWS Libfabric\"\n"
        ))
        .unwrap();
        let l = p.libfabric.unwrap();
        assert_eq!(
            l.nccl_plugin.as_deref(),
            Some(Path::new("/opt/aws-ofi-nccl/lib/libnccl-net-ofi.so"))
        );
        assert_eq!(l.nccl_net.as_deref(), Some("AWS Libfabric"));
        let e = parse(&format!("{lf}nccl_plugin = \"lib/libnccl-net.so\"\n")).unwrap_err();
        assert!(e.to_string().contains("libfabric.nccl_plugin"), "{e}");
        let e = parse(&format!("{lf}nccl_net = \" \"\n")).unwrap_err();
        assert!(e.to_string().contains("libfabric.nccl_net"), "{e}");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("[checks]\ncpu = \"enforce\"\ncpus = \"warn\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cpus"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn bad_enforcement_value_is_named() {
        let msg = parse("[checks]\ncpu = \"strict\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("strict"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn relative_library_path_is_rejected() {
        let msg = parse("[mpi.mpich]\nabi = \"mpich\"\nlibraries = [\"libmpich.so.12\"]\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("mpi.mpich.libraries"), "{msg}");
        assert!(msg.contains("libmpich.so.12"), "{msg}");
        assert!(msg.contains("absolute"), "{msg}");
    }

    #[test]
    fn unknown_abi_is_rejected() {
        let msg = parse("[mpi.x]\nabi = \"lam\"\nlibraries = [\"/usr/lib/libmpi.so\"]\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("lam"), "{msg}");
    }

    #[test]
    fn collections_table() {
        let p = parse("[collections]\ndir = \"/etc/hpcc/collections.d\"\nimage_wins = false\n")
            .unwrap();
        assert_eq!(
            p.collections.dir.as_deref(),
            Some(Path::new("/etc/hpcc/collections.d"))
        );
        assert!(!p.collections.image_wins);
        assert!(Policy::default().collections.image_wins);
        let msg = parse("[collections]\ndir = \"collections.d\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("collections.dir"), "{msg}");
    }

    #[test]
    fn a_fifo_as_policy_is_refused_not_waited_for() {
        let p = std::env::temp_dir().join(format!("hpcc-policy-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = Policy::load(&p).unwrap_err().to_string();
        std::fs::remove_file(&p).unwrap();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn device_allow_list() {
        let p = parse("[gpu]\nallowed = [\"nvidia.com/gpu=0\", \"amd.com/gpu=*\"]\n").unwrap();
        assert!(p.gpu.allows("nvidia.com/gpu", "0"));
        assert!(!p.gpu.allows("nvidia.com/gpu", "1"));
        assert!(p.gpu.allows("amd.com/gpu", "card3"));
        assert!(!p.gpu.allows("amd.com/gpux", "card3"));
        assert!(!Policy::default().gpu.allows("nvidia.com/gpu", "0"));
        assert!(parse("[gpu]\nallowed = [\"*\"]\n")
            .unwrap()
            .gpu
            .allows("a.b/c", "d"));
        for bad in [
            "nvidia.com/gpu",
            "gpu=0",
            "a.b/c=x y",
            "a.b/c=*x",
            "",
            "a.b/c=\\n",
        ] {
            let text = format!("[gpu]\nallowed = [{:?}]\n", bad);
            let msg = parse(&text).unwrap_err().to_string();
            assert!(msg.contains("gpu.allowed"), "{bad}: {msg}");
        }
    }

    #[test]
    fn scheduling_keys_are_read_and_checked() {
        let p = parse("[scheduling]\nsubmit = \"warn\"\nfleet = \"/srv/fleet\"\n").unwrap();
        assert_eq!(p.scheduling.submit, Enforcement::Warn);
        assert_eq!(p.scheduling.fleet, Path::new("/srv/fleet"));
        assert_eq!(Policy::default().scheduling.submit, Enforcement::Enforce);
        let msg = parse("[scheduling]\nfleet = \"fleet\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("scheduling.fleet"), "{msg}");
        let msg = parse("[scheduling]\ntimeout_ms = 5\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("scheduling.timeout_ms"), "{msg}");
        assert!(parse("[scheduling]\nsubmit = \"maybe\"\n").is_err());
    }

    #[test]
    fn bad_log_level_is_rejected() {
        let msg = parse("[log]\nlevel = \"loud\"\n").unwrap_err().to_string();
        assert!(msg.contains("log.level") && msg.contains("loud"), "{msg}");
    }

    #[test]
    fn user_may_relax_only_as_far_as_allowed() {
        let mut p = Policy::default();
        p.users.may_relax_to = Enforcement::Warn;
        assert_eq!(
            p.effective(Enforcement::Enforce, Some(Enforcement::Off)),
            Enforcement::Warn
        );
        assert_eq!(
            p.effective(Enforcement::Enforce, Some(Enforcement::Warn)),
            Enforcement::Warn
        );
        p.users.may_relax_to = Enforcement::Enforce;
        assert_eq!(
            p.effective(Enforcement::Enforce, Some(Enforcement::Off)),
            Enforcement::Enforce
        );
        // Asking for stricter is always fine.
        assert_eq!(
            p.effective(Enforcement::Warn, Some(Enforcement::Enforce)),
            Enforcement::Enforce
        );
        assert_eq!(p.effective(Enforcement::Warn, None), Enforcement::Warn);
    }

    #[test]
    fn enforcement_from_str() {
        assert_eq!("warn".parse::<Enforcement>().unwrap(), Enforcement::Warn);
        assert!("WARN".parse::<Enforcement>().is_err());
    }
}
