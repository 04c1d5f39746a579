//! The apply layer: the only part of hpcc that changes a container. In hook
//! mode it takes the [`Tweaks`] of a plan the core decided and makes them
//! true inside the starting container, through [`Syscalls`] alone; for
//! `hpcc-runtime`, [`spec`] writes the same plan into `config.json` and the
//! runtime makes it true. (The other files hpcc writes on the host are
//! listed in the README's "Where things happen".)
//!
//! Where it acts: in the container's own mount namespace
//! (`/proc/PID/ns/mnt`), before `pivot_root` (OCI `prestart` /
//! `createRuntime`), on `<rootfs>/<path>`, every path resolved inside the
//! rootfs. If the container's mount namespace is the caller's own (a hook
//! run as `createContainer`, or a container without a mount namespace),
//! nothing is applied and the launch fails with
//! [`ApplyError::SharedNamespace`]: mounts made there would stay on the host
//! after the container exits, which is exactly how a known MPI hook once
//! wrote through a leftover bind into a host library.
//!
//! Ordering and safety:
//! 1. enter the namespace, open the rootfs there, make it recursively slave
//!    (nothing below can propagate back to the host, whatever
//!    `rootfsPropagation` the config asked for);
//! 2. each mount: create a missing target inside the root (a file for a
//!    file, a directory for a directory), then clone the host source
//!    detached, make it private/read-only/nosuid before it is attached, and
//!    move it onto an fd of the target;
//! 3. each device: bind the host node onto an empty file (no device node is
//!    ever created in the image), then grant it in the device cgroup;
//! 4. last, the container's linker cache: a file hpcc wrote on the host
//!    (glibc's format, the image's own cache with hpcc's libraries in
//!    front, see [`ldcache_file`]) bound read-only over the image's
//!    `/etc/ld.so.cache`. No ldconfig runs: a root process chrooted into a
//!    rootfs whose `/etc` may point at `/proc/1/root/...` would write onto
//!    the host.
//!
//! A failure at any step undoes every earlier mount and grant in reverse,
//! by the handles kept when they were made (never by looking a path up
//! again). Mount targets hpcc had to create are left in place, as runc
//! leaves those of `config.json`: they are created idempotently, normally
//! inside the container's own `/dev` tmpfs, and another container started
//! from the same image at the same time may be using them. The namespace
//! work needs a single-threaded process (`setns` returns EINVAL otherwise):
//! [`child`] runs it in a fresh, bounded helper process.

pub mod child;
pub mod ldcache_file;
pub mod linux;
pub mod namespaces;
#[cfg(test)]
pub(crate) mod recording;
pub mod spec;
pub mod stack;
pub mod syscalls;

use crate::plan::Tweaks;
use crate::rootfs::{normalize, EntryKind};
// In rootfs.rs, below this layer: the image library scan skips them too.
pub use crate::rootfs::KERNEL_DIRS;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};
pub use syscalls::{BindOptions, CgroupGrant, HostKind, MountHandle, SysError, Syscalls};

/// Where to apply: the container's rootfs on the host and its init pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Rootfs host path (`root.path` made absolute).
    pub rootfs: PathBuf,
    /// Container init pid (from the OCI state).
    pub pid: i32,
    /// The container's linker cache, written by hpcc on the host
    /// ([`ldcache_file`]), to bind over `/etc/ld.so.cache`.
    #[serde(default)]
    pub ld_cache: Option<PathBuf>,
}

/// Where the container sees its linker cache.
pub const LD_CACHE: &str = "/etc/ld.so.cache";

/// One mount made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedMount {
    /// Host path.
    pub source: PathBuf,
    /// Container path.
    pub destination: PathBuf,
    /// Read-only.
    pub readonly: bool,
    /// Why (from the plan).
    pub reason: String,
}

/// One device exposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedDevice {
    /// Container path.
    pub path: PathBuf,
    /// Host node bound there.
    pub host_path: PathBuf,
    /// What the device cgroup said.
    pub grant: CgroupGrant,
    /// Why (from the plan).
    pub reason: String,
}

/// What was done, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Mounts, in order.
    pub mounts: Vec<AppliedMount>,
    /// Devices, in order.
    pub devices: Vec<AppliedDevice>,
    /// The host file bound over the container's linker cache.
    pub ld_cache: Option<PathBuf>,
    /// Entries created in the rootfs as mount targets.
    pub created: Vec<PathBuf>,
    /// Environment variables a prestart hook cannot set, with why (an
    /// expected limit of the hook, logged at info).
    pub env_not_applied: Vec<String>,
    /// Things not fully applied, with why (cgroup v2 device permission):
    /// logged as warnings.
    pub notes: Vec<String>,
}

/// Why the tweaks could not be applied. Any of these means hpcc failed
/// (`on_error` decides), and everything done before was undone.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A tweak is malformed (a bug in the planner or a hand-written plan).
    #[error("invalid tweak {field} = {value:?}: {reason}")]
    InvalidTweak {
        /// `mounts[0].destination`, ...
        field: String,
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// No pid in the OCI state.
    #[error("the OCI state has no container pid: cannot reach the container's mount namespace")]
    NoPid,
    /// The container's mount namespace is the caller's own, or cannot be
    /// told apart from it (the hook runs as `createContainer`, inside the
    /// container's namespaces, or the container has no mount namespace).
    #[error("container pid {pid} shares the hook's mount namespace, or its namespace cannot be told apart from the hook's ({why}): mounts made here could stay on the host after it exits, so none are made; register hpcc-hook as a prestart or createRuntime hook")]
    SharedNamespace {
        /// The container pid.
        pid: i32,
        /// What was seen.
        why: String,
    },
    /// Entering the namespace or opening the rootfs failed.
    #[error("cannot reach the container's root filesystem: {0}")]
    Setup(#[source] SysError),
    /// One step failed; everything before it was undone (`rollback` lists
    /// what could not be).
    #[error("{step}: {source}{}", rollback_note(.rollback))]
    Step {
        /// What was being done.
        step: String,
        /// Why it failed.
        source: SysError,
        /// Undo steps that failed too.
        rollback: Vec<String>,
    },
    /// The helper process failed or answered nonsense.
    #[error("the apply helper failed: {0}")]
    Helper(#[from] child::HelperError),
    /// The helper's own error, as it reported it (already rolled back
    /// there).
    #[error(transparent)]
    Remote(#[from] child::RemoteError),
    /// The container's linker cache could not be written.
    #[error(transparent)]
    LdCache(#[from] ldcache_file::LdCacheFileError),
    /// The host library stack could not be filled.
    #[error(transparent)]
    Stack(#[from] stack::StackError),
    /// The hook runs without root (a rootless runtime): it cannot enter
    /// the container's mount namespace.
    #[error("hpcc-hook runs as uid {uid} (rootless runtime): it cannot enter the container's mount namespace to mount the host libraries; use hpcc-runtime, which writes them into config.json for the runtime to mount")]
    Rootless {
        /// The hook's effective uid.
        uid: u32,
    },
}

fn rollback_note(r: &[String]) -> String {
    if r.is_empty() {
        " (everything done before was undone)".into()
    } else {
        format!(" (rollback incomplete: {})", r.join("; "))
    }
}

/// One step to undo.
#[derive(Debug)]
enum Undo {
    Mount(MountHandle),
    Device {
        cgroup: PathBuf,
        rule: (char, u64, u64, String),
    },
}

/// The notes for what a prestart hook cannot do (the environment).
pub fn env_notes(tweaks: &Tweaks) -> Vec<String> {
    tweaks
        .env
        .iter()
        .map(|e| {
            format!(
                "environment {}={} not set: a prestart hook cannot change the container's environment; hpcc-runtime sets it ({})",
                e.name, e.value, e.reason
            )
        })
        .collect()
}

/// Whether the tweaks need the container's namespace at all.
pub fn touches_container(tweaks: &Tweaks) -> bool {
    !(tweaks.mounts.is_empty() && tweaks.devices.is_empty() && tweaks.ld_cache.is_empty())
}

fn check_abs(field: String, p: &Path) -> Result<(), ApplyError> {
    let bad = |reason: &str| ApplyError::InvalidTweak {
        field: field.clone(),
        value: p.display().to_string(),
        reason: reason.into(),
    };
    if !p.is_absolute() {
        return Err(bad("must be an absolute path"));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(bad("must not contain `..`"));
    }
    if normalize(p).map_err(|e| bad(&e.to_string()))? == Path::new("/") {
        return Err(bad("must not be the root itself"));
    }
    Ok(())
}

fn check_not_kernel(field: String, p: &Path) -> Result<(), ApplyError> {
    let n = normalize(p).map_err(|e| ApplyError::InvalidTweak {
        field: field.clone(),
        value: p.display().to_string(),
        reason: e.to_string(),
    })?;
    if KERNEL_DIRS.iter().any(|k| n.starts_with(k)) {
        return Err(ApplyError::InvalidTweak {
            field,
            value: p.display().to_string(),
            reason: "is under /proc or /sys in the container: kernel files are never mount targets"
                .into(),
        });
    }
    Ok(())
}

fn validate(t: &Tweaks) -> Result<(), ApplyError> {
    for (i, m) in t.mounts.iter().enumerate() {
        check_abs(format!("mounts[{i}].source"), &m.source)?;
        check_abs(format!("mounts[{i}].destination"), &m.destination)?;
        check_not_kernel(format!("mounts[{i}].destination"), &m.destination)?;
    }
    for (i, d) in t.devices.iter().enumerate() {
        check_abs(format!("devices[{i}].path"), &d.path)?;
        check_not_kernel(format!("devices[{i}].path"), &d.path)?;
        check_abs(format!("devices[{i}].host_path"), &d.host_path)?;
        if d.kind != 'c' && d.kind != 'b' {
            return Err(ApplyError::InvalidTweak {
                field: format!("devices[{i}].kind"),
                value: d.kind.to_string(),
                reason: "must be `c` or `b`".into(),
            });
        }
        if d.access.is_empty() || !d.access.chars().all(|c| "rwm".contains(c)) {
            return Err(ApplyError::InvalidTweak {
                field: format!("devices[{i}].access"),
                value: d.access.clone(),
                reason: "must be letters of `rwm`".into(),
            });
        }
    }
    for (i, c) in t.ld_cache.iter().enumerate() {
        check_abs(format!("ld_cache[{i}].path"), &c.path)?;
    }
    Ok(())
}

/// Applies the tweaks to the container. Must run in a single-threaded
/// process (see [`child`]); the hook calls it through
/// [`child::apply_in_child`].
pub fn apply(tweaks: &Tweaks, target: &Target, sys: &dyn Syscalls) -> Result<Applied, ApplyError> {
    let mut applied = Applied {
        env_not_applied: env_notes(tweaks),
        ..Applied::default()
    };
    if !touches_container(tweaks) {
        return Ok(applied);
    }
    validate(tweaks)?;
    if let Some(f) = &target.ld_cache {
        check_abs("ld_cache file".into(), f)?;
    }
    // The guard comes first, before anything that could fail for another
    // reason: at createContainer the state's pid may name nothing this
    // process can see, and that must read as "wrong stage", not as some
    // other error.
    let own = sys.mount_namespace(None).map_err(ApplyError::Setup)?;
    match sys.mount_namespace(Some(target.pid)) {
        Ok(theirs) if theirs != own => {}
        Ok(_) => {
            return Err(ApplyError::SharedNamespace {
                pid: target.pid,
                why: "the same namespace".into(),
            })
        }
        Err(e) => {
            return Err(ApplyError::SharedNamespace {
                pid: target.pid,
                why: e.to_string(),
            })
        }
    }
    sys.enter_mount_namespace(target.pid)
        .map_err(ApplyError::Setup)?;
    sys.open_rootfs(&target.rootfs).map_err(ApplyError::Setup)?;
    sys.make_rslave().map_err(ApplyError::Setup)?;

    let mut undo = Vec::new();
    match apply_steps(tweaks, target, sys, &mut applied, &mut undo) {
        Ok(()) => Ok(applied),
        Err((step, source)) => {
            let rollback = roll_back(sys, undo);
            Err(ApplyError::Step {
                step,
                source,
                rollback,
            })
        }
    }
}

type StepError = (String, SysError);

fn apply_steps(
    tweaks: &Tweaks,
    target: &Target,
    sys: &dyn Syscalls,
    applied: &mut Applied,
    undo: &mut Vec<Undo>,
) -> Result<(), StepError> {
    for m in &tweaks.mounts {
        let step = format!(
            "mounting {} on {}",
            m.source.display(),
            m.destination.display()
        );
        let at = |e: SysError| (step.clone(), e);
        let want = match sys.host_kind(&m.source).map_err(at)? {
            HostKind::File => EntryKind::File,
            HostKind::Dir => EntryKind::Dir,
            other => {
                return Err(at(mismatch(
                    &m.source,
                    &format!("host path is {other:?}: only files and directories are bind-mounted (devices go through `devices`)"),
                )))
            }
        };
        ensure_target(sys, &m.destination, want, applied).map_err(at)?;
        let h = sys
            .bind_mount(
                &m.source,
                &m.destination,
                BindOptions {
                    readonly: m.readonly,
                    recursive: want == EntryKind::Dir,
                    device: false,
                },
            )
            .map_err(at)?;
        undo.push(Undo::Mount(h));
        applied.mounts.push(AppliedMount {
            source: m.source.clone(),
            destination: m.destination.clone(),
            readonly: m.readonly,
            reason: m.reason.clone(),
        });
    }
    for d in &tweaks.devices {
        let step = format!(
            "exposing device {} ({} {}:{}) at {}",
            d.host_path.display(),
            d.kind,
            d.major,
            d.minor,
            d.path.display()
        );
        let at = |e: SysError| (step.clone(), e);
        let host = sys.host_kind(&d.host_path).map_err(at)?;
        if host != HostKind::Device(d.kind, d.major, d.minor) {
            return Err(at(mismatch(
                &d.host_path,
                &format!(
                    "host node is {host:?}, the plan says {} {}:{}",
                    d.kind, d.major, d.minor
                ),
            )));
        }
        ensure_target(sys, &d.path, EntryKind::File, applied).map_err(at)?;
        let h = sys
            .bind_mount(
                &d.host_path,
                &d.path,
                BindOptions {
                    readonly: false,
                    recursive: false,
                    device: true,
                },
            )
            .map_err(at)?;
        undo.push(Undo::Mount(h));
        let grant = if d.cgroup_rule {
            sys.allow_device(target.pid, d.kind, d.major, d.minor, &d.access)
                .map_err(at)?
        } else {
            CgroupGrant::NotApplicable(
                "the runtime runs without root: the container's cgroup confines the device".into(),
            )
        };
        match &grant {
            CgroupGrant::Added(cg) => undo.push(Undo::Device {
                cgroup: cg.clone(),
                rule: (d.kind, d.major, d.minor, d.access.clone()),
            }),
            CgroupGrant::AlreadyAllowed(_) => {}
            CgroupGrant::NotApplicable(why) => applied.notes.push(format!(
                "device {}: cgroup permission not granted by hpcc: {why}",
                d.path.display()
            )),
        }
        applied.devices.push(AppliedDevice {
            path: d.path.clone(),
            host_path: d.host_path.clone(),
            grant,
            reason: d.reason.clone(),
        });
    }
    if let Some(file) = &target.ld_cache {
        // Last: the container's programs load through it, and it names
        // the libraries mounted above.
        let step = format!(
            "installing the container's linker cache {} on {LD_CACHE}",
            file.display()
        );
        let at = |e: SysError| (step.clone(), e);
        ensure_target(sys, Path::new(LD_CACHE), EntryKind::File, applied).map_err(at)?;
        let h = sys
            .bind_mount(
                file,
                Path::new(LD_CACHE),
                BindOptions {
                    readonly: true,
                    recursive: false,
                    device: false,
                },
            )
            .map_err(at)?;
        undo.push(Undo::Mount(h));
        applied.ld_cache = Some(file.clone());
    }
    Ok(())
}

fn mismatch(path: &Path, why: &str) -> SysError {
    SysError::io(
        "check",
        path.display(),
        std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_owned()),
    )
}

/// Makes sure a mount target of the right kind exists inside the root,
/// creating it (and its parents) when absent. What is created stays (see
/// the module comment): it is recorded in `applied.created` for the log.
fn ensure_target(
    sys: &dyn Syscalls,
    dest: &Path,
    want: EntryKind,
    applied: &mut Applied,
) -> Result<(), SysError> {
    match sys.target_kind(dest)? {
        Some(k) if k == want => return Ok(()),
        Some(k) => {
            return Err(mismatch(
                dest,
                &format!(
                    "the image has a {} there, the mount needs a {}",
                    k.as_str(),
                    want.as_str()
                ),
            ))
        }
        None => {}
    }
    if want == EntryKind::Dir {
        applied.created.extend(sys.mkdir_all(dest)?);
    } else {
        let parent = dest.parent().unwrap_or(Path::new("/"));
        applied.created.extend(sys.mkdir_all(parent)?);
        if !sys.create_file(dest)? {
            // Present but unresolvable: a dangling symlink (possibly aimed
            // at the host). Never create through it.
            return Err(mismatch(
                dest,
                "an entry is there that does not resolve inside the rootfs (dangling symbolic link?)",
            ));
        }
        applied.created.push(normalize(dest)?);
    }
    // Whatever was created must now be what we wanted, resolved in root.
    match sys.target_kind(dest)? {
        Some(k) if k == want => Ok(()),
        other => Err(mismatch(
            dest,
            &format!("created a {} but found {other:?}", want.as_str()),
        )),
    }
}

/// Undoes in reverse order; returns what could not be undone.
fn roll_back(sys: &dyn Syscalls, undo: Vec<Undo>) -> Vec<String> {
    let mut failed = Vec::new();
    for u in undo.into_iter().rev() {
        let r = match &u {
            Undo::Mount(h) => sys.unmount(*h),
            Undo::Device {
                cgroup,
                rule: (k, ma, mi, acc),
            } => sys.deny_device(cgroup, *k, *ma, *mi, acc),
        };
        match r {
            Ok(()) => tracing::info!(undo = ?u, "rolled back"),
            Err(e) => {
                tracing::error!(undo = ?u, error = %e, "rollback step failed");
                failed.push(format!("{u:?}: {e}"));
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests;
