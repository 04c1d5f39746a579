//! The launch plan as plain data: the decision (start or refuse, with
//! reasons) and the tweaks to apply (mounts, devices, environment). It is
//! made by [`crate::launch::decide`]; the hook, the runtime, the SPANK
//! plugin and `hpcc match --plan` print the same thing, and tests assert on
//! it without touching the system.

use crate::verdict::{Check, Verdict};
use hpcc_config::Enforcement;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What the user asked for MPI (`srun --hpcc-mpi`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MpiChoice {
    /// Replace when the image allows it and the site can.
    #[default]
    Auto,
    /// Replace, and fail the launch when that is impossible.
    Replace,
    /// Keep the image's MPI.
    None,
}

/// An MPI choice that is not `auto`, `replace` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown MPI choice {0:?} (expected auto, replace or none)")]
pub struct UnknownMpiChoice(pub String);

impl std::str::FromStr for MpiChoice {
    type Err = UnknownMpiChoice;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(MpiChoice::Auto),
            "replace" => Ok(MpiChoice::Replace),
            "none" => Ok(MpiChoice::None),
            o => Err(UnknownMpiChoice(o.to_owned())),
        }
    }
}

/// What a user may ask for one launch (SPANK options, CLI flags). Images
/// cannot set these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRequest {
    /// Wished enforcement for every check (bounded by `users.may_relax_to`).
    pub enforcement: Option<Enforcement>,
    /// MPI replacement wish.
    pub mpi: MpiChoice,
}

/// One reason a start is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Area.
    pub check: Check,
    /// The reason, as the matcher wrote it.
    pub reason: String,
    /// What the image needs.
    pub image: Option<String>,
    /// What the node has.
    pub node: Option<String>,
    /// The policy rule that refused (`checks.cpu = "enforce"`).
    pub policy: String,
}

/// Start or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Decision {
    /// Start the container; `warnings` were logged instead of refusing.
    Start {
        /// Fatal findings let through by `warn`, and other notes.
        warnings: Vec<String>,
    },
    /// Do not start it.
    Refuse {
        /// Why, one entry per refusing rule.
        reasons: Vec<Refusal>,
    },
}

impl Decision {
    /// Whether the container may start.
    pub fn allows_start(&self) -> bool {
        matches!(self, Decision::Start { .. })
    }
}

/// A bind mount of a host path into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Host path (trusted: from the policy or the host linker cache).
    pub source: PathBuf,
    /// Absolute path inside the container, resolved inside the rootfs at
    /// apply time.
    pub destination: PathBuf,
    /// Read-only bind.
    pub readonly: bool,
    /// Why (shown by `hpcc match --plan` and logged).
    pub reason: String,
}

/// A device node exposed to the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Path inside the container.
    pub path: PathBuf,
    /// Host path it comes from.
    pub host_path: PathBuf,
    /// `c` or `b`.
    pub kind: char,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Device cgroup access (`rwm`).
    pub access: String,
    /// Whether a device cgroup rule allowing it goes with it
    /// (`linux.resources.devices`). False under a runtime without root
    /// (rootless runc, Slurm's non-root jobs): it binds the node in the
    /// container's user namespace and cannot load a rule (that needs
    /// privileges over the node's cgroup), so the cgroup the container
    /// runs in (a Slurm step's, under `ConstrainDevices=yes`) is what
    /// confines it.
    #[serde(default = "yes")]
    pub cgroup_rule: bool,
    /// Why.
    pub reason: String,
}

fn yes() -> bool {
    true
}

/// An environment variable for the container process. A prestart hook
/// cannot change it (the runtime already read `config.json`); the entry
/// points that edit the config before the runtime (the Slurm runtime
/// wrapper) apply it, the hook reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Why.
    pub reason: String,
}

/// The tweaks of one launch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tweaks {
    /// Bind mounts, in order.
    pub mounts: Vec<Mount>,
    /// Devices.
    pub devices: Vec<Device>,
    /// Environment.
    pub env: Vec<EnvVar>,
    /// Entries hpcc puts in front of the image's own linker cache (the
    /// libraries it mounts in its own directories); empty = the image's
    /// cache is left alone. hpcc writes that cache itself (glibc's format)
    /// and binds it over the container's `/etc/ld.so.cache`: no ldconfig.
    pub ld_cache: Vec<CacheEntry>,
}

/// One entry hpcc adds to the container's linker cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The name the loader looks up (`libhwloc.so.15`).
    pub soname: String,
    /// Where it is in the container.
    pub path: PathBuf,
    /// glibc's entry flags (library type and architecture).
    pub flags: i32,
}

impl Tweaks {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
            && self.devices.is_empty()
            && self.env.is_empty()
            && self.ld_cache.is_empty()
    }
}

/// The complete outcome of one launch decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Container id.
    pub container: String,
    /// Node name.
    pub node: String,
    /// The matcher's verdict (with findings added by user requests).
    pub verdict: Verdict,
    /// Start or refuse.
    pub decision: Decision,
    /// Tweaks to apply when starting.
    pub tweaks: Tweaks,
    /// What the plan could not look at, for people (not findings: they
    /// say nothing about the image).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What a Slurm MPI step adds on top of the tweaks (the runtime's
    /// Slurm mode, [`crate::tweaks::slurm`]): its own section, since it is
    /// applied after the tweaks and also to a step that starts unchecked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmWiring>,
}

/// The wiring of a Slurm MPI step into its container, planned from the
/// facts the runtime's Slurm mode gathered ([`crate::tweaks::slurm::wiring`])
/// and applied by [`crate::apply::spec::edit_slurm`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmWiring {
    /// PMI/PMIx variables, `SLURM_PROCID`, `SLURMD_NODENAME`.
    pub env: Vec<EnvVar>,
    /// PMIx's directories, munged's socket, the node's `/dev/shm`.
    pub mounts: Vec<Mount>,
    /// The node's namespaces the container joins, and the mounts that
    /// change with them.
    pub namespaces: Vec<NamespaceEdit>,
}

/// One edit of the container's namespaces, or of a mount that belongs to
/// a namespace it no longer has of its own
/// ([`crate::apply::namespaces`] has the audit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "edit", rename_all = "snake_case")]
pub enum NamespaceEdit {
    /// The namespace of this type is removed from `linux.namespaces`: the
    /// container uses the node's.
    Share {
        /// `network`, `ipc`, `pid`.
        namespace: String,
        /// Why.
        why: String,
    },
    /// A mount of `kind` at `destination` becomes a bind of the node's
    /// `source`.
    Bind {
        /// Where.
        destination: PathBuf,
        /// The filesystem type it replaces (`mqueue`, `sysfs`).
        kind: String,
        /// The node's path.
        source: PathBuf,
        /// The bind's options.
        options: Vec<String>,
        /// Why.
        why: String,
    },
    /// A mount of `kind` at `destination` is removed.
    Remove {
        /// Where.
        destination: PathBuf,
        /// The filesystem type it removes.
        kind: String,
        /// Why.
        why: String,
    },
}
