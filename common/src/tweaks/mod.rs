//! Tweak planning: the matcher's [`Selection`] + the policy + the node
//! fingerprint + the image's rootfs -> [`Tweaks`] (mounts, devices,
//! environment, linker paths), or findings that refuse the start.
//!
//! Pure where it can be: the host is reached through [`host::Host`] (a fake
//! in tests) and the image only through [`Rootfs`] (reads resolved inside
//! the root, bounded). Nothing is mounted here; `apply` executes the plan.
//!
//! Every component (MPI, libfabric, UCX, NVIDIA GPUs, CDI devices) is planned
//! on its own. A component whose checks fail is dropped whole — never half
//! applied — and its failure becomes a [`Finding`]: fatal when it is the
//! image's fault (wrong family, soname major, glibc too old), so the
//! policy's enforcement decides between refusing and starting without it.
//! hpcc's own failures (an unreadable host library the policy names) are
//! [`TweakError`]s, handled by `on_error`.

pub mod cdi;
pub mod gpu;
pub mod host;
pub mod hostcache;
pub mod image;
pub mod ldcache;
pub mod libfabric;
pub mod mpi;
pub mod private;
pub mod replace;
pub mod slurm;
pub mod soname;
pub mod stack;
pub mod ucx;

use crate::fingerprint::NodeFingerprint;
use crate::matcher::{Check, Finding, Level, Selection};
use crate::oci::LaunchContext;
use crate::plan::{CacheEntry, Device, EnvVar, Mount, Tweaks};
use crate::rootfs::Rootfs;
use host::Host;
use hpcc_config::Policy;
use image::ImageLibs;
use std::path::{Path, PathBuf};

/// hpcc's own failure while planning (not the image's fault).
#[derive(Debug, thiserror::Error)]
pub enum TweakError {
    /// A host library named by the policy cannot be inspected.
    #[error("host library {path} (policy {key}) cannot be inspected: {reason}")]
    HostLibrary {
        /// Policy key (`mpi.mpich.libraries`).
        key: String,
        /// The library.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A host path named by the policy does not exist.
    #[error("host path {path} (policy {key}) does not exist")]
    MissingHostPath {
        /// Policy key (`mpi.mpich.mounts`).
        key: String,
        /// The path.
        path: PathBuf,
    },
    /// A policy value cannot be used as asked.
    #[error("policy {key} = {value:?}: {reason}")]
    Policy {
        /// Policy key.
        key: String,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The image's rootfs cannot be opened at all.
    #[error("{0}")]
    Rootfs(#[from] crate::rootfs::RootfsError),
}

/// What the planner decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Planned {
    /// The tweaks of the components that passed their checks.
    pub tweaks: Tweaks,
    /// Findings to add to the verdict (fatal ones refuse under `enforce`).
    pub findings: Vec<Finding>,
    /// The selection, with dropped components cleared.
    pub selection: Selection,
    /// What could not be looked at (see [`crate::plan::Plan::notes`]).
    pub notes: Vec<String>,
}

/// One component's share of the plan; dropped whole when it has a fatal
/// finding.
#[derive(Debug, Clone, Default)]
pub(crate) struct Part {
    pub tweaks: Tweaks,
    pub findings: Vec<Finding>,
    /// hpcc's own library directories in the container: what is mounted in
    /// them goes into the container's linker cache.
    pub lib_dirs: Vec<PathBuf>,
}

impl Part {
    pub(crate) fn finding(&mut self, check: Check, level: Level, reason: String) -> &mut Finding {
        self.findings.push(Finding {
            check,
            level,
            reason,
            image: None,
            node: None,
        });
        self.findings.last_mut().expect("just pushed")
    }

    pub(crate) fn fatal(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Fatal)
    }

    /// Adds a mount unless one with the same destination exists (a library
    /// needed by two components is mounted once).
    pub(crate) fn mount(&mut self, source: &Path, destination: PathBuf, reason: String) {
        push_mount(&mut self.tweaks, source, destination, reason);
    }

    pub(crate) fn ld_path(&mut self, dir: PathBuf) {
        if !self.lib_dirs.contains(&dir) {
            self.lib_dirs.push(dir);
        }
    }

    /// The container paths of the planned mounts, in order (for tests).
    #[cfg(test)]
    pub(crate) fn mount_destinations(&self) -> Vec<String> {
        self.tweaks
            .mounts
            .iter()
            .map(|m| m.destination.display().to_string())
            .collect()
    }

    pub(crate) fn env(&mut self, name: &str, value: &str, reason: String) {
        self.tweaks.env.retain(|e| e.name != name);
        self.tweaks.env.push(EnvVar {
            name: name.to_owned(),
            value: value.to_owned(),
            reason,
        });
    }
}

fn push_mount(t: &mut Tweaks, source: &Path, destination: PathBuf, reason: String) {
    if t.mounts.iter().any(|m| m.destination == destination) {
        return;
    }
    t.mounts.push(Mount {
        source: source.to_owned(),
        destination,
        readonly: true,
        reason,
    });
}

/// Everything a component planner reads.
pub(crate) struct Inputs<'a> {
    pub ctx: &'a LaunchContext,
    pub node: &'a NodeFingerprint,
    pub policy: &'a Policy,
    pub selection: &'a Selection,
    pub host: &'a dyn Host,
    /// `None` when there is no rootfs (`hpcc match --annotations`).
    pub image: Option<&'a ImageLibs<'a>>,
}

/// Plans the tweaks of one launch. `rootfs` is `None` when only annotations
/// are known: what depends on the image (where its libraries are, its
/// glibc) is then not checked, and a finding says so.
pub fn plan(
    ctx: &LaunchContext,
    node: &NodeFingerprint,
    policy: &Policy,
    selection: &Selection,
    host: &dyn Host,
    rootfs: Option<&Rootfs>,
) -> Result<Planned, TweakError> {
    let needs_image = selection.needs_image();
    let libs = match rootfs {
        Some(r) if needs_image => Some(ImageLibs::scan(r)),
        _ => None,
    };
    let input = Inputs {
        ctx,
        node,
        policy,
        selection,
        host,
        image: libs.as_ref(),
    };
    let mut out = Planned {
        selection: selection.clone(),
        ..Default::default()
    };
    if needs_image && rootfs.is_none() {
        out.notes.push("no rootfs given: the image side (where its libraries are, its glibc, its libfabric needs) was not inspected; host libraries are shown in hpcc's own directories".into());
    }
    let mut lib_dirs: Vec<PathBuf> = Vec::new();
    let mut merge = |part: Part, what: &str, out: &mut Planned| -> bool {
        let ok = !part.fatal();
        if ok {
            merge_tweaks(&mut out.tweaks, part.tweaks);
            for d in part.lib_dirs {
                if !lib_dirs.contains(&d) {
                    lib_dirs.push(d);
                }
            }
        } else {
            tracing::warn!(component = what, "tweak dropped: its checks failed");
        }
        out.findings.extend(part.findings);
        ok
    };
    if let Some(name) = &selection.mpi {
        let part = mpi::plan(&input, name)?;
        if !merge(part, "mpi", &mut out) {
            out.selection.mpi = None;
        }
    }
    if selection.libfabric {
        let part = libfabric::plan(&input)?;
        if !merge(part, "libfabric", &mut out) {
            out.selection.libfabric = false;
        }
    }
    if selection.ucx {
        let part = ucx::plan(&input)?;
        if !merge(part, "ucx", &mut out) {
            out.selection.ucx = false;
        }
    }
    if selection.nvidia_gpus {
        let part = gpu::plan(&input);
        if !merge(part, "nvidia", &mut out) {
            out.selection.nvidia_gpus = false;
        }
    }
    let part = cdi::plan(&input);
    merge(part, "cdi", &mut out);
    if ctx.rootless && !out.tweaks.devices.is_empty() {
        rootless_devices(&mut out);
    }
    out.tweaks.ld_cache = cache_entries(&out.tweaks, &lib_dirs, host);
    if out.tweaks.mounts.len() > policy.limits.max_mounts {
        out.findings.push(Finding::new(
            Check::Mpi,
            Level::Fatal,
            format!(
                "the launch would add {} mounts, more than this site allows (limits.max_mounts = {}): no tweak is applied",
                out.tweaks.mounts.len(),
                policy.limits.max_mounts
            ),
        ));
        out.tweaks = Tweaks::default();
        out.selection = Selection::default();
    }
    for m in &out.tweaks.mounts {
        tracing::info!(container = %ctx.id, source = %m.source.display(), destination = %m.destination.display(), "planned mount: {}", m.reason);
    }
    for d in &out.tweaks.devices {
        tracing::info!(container = %ctx.id, device = %d.path.display(), major = d.major, minor = d.minor, "planned device: {}", d.reason);
    }
    Ok(out)
}

/// A container started by a runtime without root (rootless runc, Slurm's
/// non-root jobs) gets its device nodes bound by the runtime (in its user
/// namespace), and no device cgroup rule: loading one needs privileges
/// over the node's cgroup that it lacks. The cgroup it runs in confines the devices: a
/// Slurm step's, under `ConstrainDevices=yes`.
fn rootless_devices(out: &mut Planned) {
    for d in &mut out.tweaks.devices {
        d.cgroup_rule = false;
    }
    // Rootless runc binds a device from the host at its container path
    // (libcontainer's bindMountDeviceNode): a node found elsewhere on the
    // host (a CDI hostPath) is not what it would bind.
    let moved: Vec<String> = out
        .tweaks
        .devices
        .iter()
        .filter(|d| d.path != d.host_path)
        .map(|d| format!("{} (host {})", d.path.display(), d.host_path.display()))
        .collect();
    if !moved.is_empty() {
        out.findings.push(Finding::new(
            Check::Gpu,
            Level::Degraded,
            format!(
                "the runtime runs without root and binds a device from the host at its container path: {} will not be the node hpcc found",
                moved.join(", ")
            ),
        ));
    }
    out.findings.push(Finding::new(
        Check::Gpu,
        Level::Ok,
        format!(
            "the runtime runs without root (rootless): {} bound by the runtime, with no device cgroup rule from hpcc (a rootless runtime cannot load one); the cgroup it runs in (a Slurm step's, under ConstrainDevices=yes) confines them",
            out.tweaks
                .devices
                .iter()
                .map(|d| d.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));
}

fn merge_tweaks(into: &mut Tweaks, from: Tweaks) {
    for m in from.mounts {
        push_mount(into, &m.source, m.destination, m.reason);
    }
    for d in from.devices {
        if !into.devices.iter().any(|x| x.path == d.path) {
            into.devices.push(d);
        }
    }
    for e in from.env {
        into.env.retain(|x| x.name != e.name);
        into.env.push(e);
    }
}

/// The container's linker cache entries for what hpcc mounts in its own
/// library directories: the loader finds those libraries through the cache
/// hpcc writes (glibc's format), with no `LD_LIBRARY_PATH` and no ldconfig.
/// The flags come from the host file's ELF header, so a 32-bit library is
/// never offered to 64-bit programs.
fn cache_entries(t: &Tweaks, lib_dirs: &[PathBuf], host: &dyn Host) -> Vec<CacheEntry> {
    t.mounts
        .iter()
        .filter(|m| {
            m.destination
                .parent()
                .is_some_and(|d| lib_dirs.iter().any(|l| l == d))
        })
        .filter_map(|m| {
            let info = host.elf(&m.source).ok()?;
            Some(CacheEntry {
                soname: m.destination.file_name()?.to_string_lossy().into_owned(),
                path: m.destination.clone(),
                flags: ldcache::flags_for(info.machine, info.is_64)?,
            })
        })
        .collect()
}

/// A device entry from the host's node (`stat`), `None` when absent.
pub(crate) fn device(
    host: &dyn Host,
    host_path: &Path,
    path: &Path,
    access: &str,
    reason: String,
) -> Option<Device> {
    let id = host.device(host_path)?;
    Some(Device {
        path: path.to_owned(),
        host_path: host_path.to_owned(),
        kind: id.kind,
        major: id.major,
        minor: id.minor,
        access: access.to_owned(),
        cgroup_rule: true,
        reason,
    })
}

/// Policy `mounts`: host paths bound at the same path. A device node
/// becomes a [`Device`] (it needs the device cgroup permission too); a `*`
/// or `?` in the last component is expanded on the host; a literal path
/// that does not exist is the admin's error.
pub(crate) fn policy_mounts(
    host: &dyn Host,
    key: &str,
    paths: &[PathBuf],
    part: &mut Part,
) -> Result<(), TweakError> {
    for p in paths {
        if !p.is_absolute() {
            return Err(TweakError::Policy {
                key: key.to_owned(),
                value: p.display().to_string(),
                reason: "must be an absolute host path".into(),
            });
        }
        let last = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let expanded: Vec<PathBuf> = if last.contains(['*', '?']) {
            let dir = p.parent().unwrap_or(Path::new("/"));
            host.list_dir(dir, 4096)
                .into_iter()
                .filter(|e| {
                    e.file_name()
                        .is_some_and(|n| image::wildcard(&last, &n.to_string_lossy()))
                })
                .collect()
        } else {
            if !host.exists(p) {
                return Err(TweakError::MissingHostPath {
                    key: key.to_owned(),
                    path: p.clone(),
                });
            }
            vec![p.clone()]
        };
        for e in expanded {
            let reason = format!("policy {key}");
            match device(host, &e, &e, "rwm", reason.clone()) {
                Some(d) => {
                    if !part.tweaks.devices.iter().any(|x| x.path == d.path) {
                        part.tweaks.devices.push(d);
                    }
                }
                None => part.mount(&e, e.clone(), reason),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::host::fake::{lib, FakeHost};
    use super::host::DeviceId;
    use super::*;
    use crate::testutil::{ctx, node};

    #[test]
    fn policy_mounts_devices_globs_and_missing_paths() {
        let mut h = FakeHost::default();
        h.dirs.insert("/var/spool/pmi".into());
        h.devices.insert(
            "/dev/cxi0".into(),
            DeviceId {
                kind: 'c',
                major: 240,
                minor: 0,
            },
        );
        h.devices.insert(
            "/dev/cxi1".into(),
            DeviceId {
                kind: 'c',
                major: 240,
                minor: 1,
            },
        );
        h.elves.insert("/dev/other".into(), lib("x.so.1", &[], &[]));
        let mut part = Part::default();
        policy_mounts(
            &h,
            "mpi.x.mounts",
            &["/var/spool/pmi".into(), "/dev/cxi*".into()],
            &mut part,
        )
        .unwrap();
        assert_eq!(part.tweaks.mounts.len(), 1);
        assert_eq!(
            part.tweaks.mounts[0].destination,
            PathBuf::from("/var/spool/pmi")
        );
        let devs: Vec<_> = part
            .tweaks
            .devices
            .iter()
            .map(|d| (d.path.clone(), d.minor))
            .collect();
        assert_eq!(devs, [("/dev/cxi0".into(), 0), ("/dev/cxi1".into(), 1)]);
        let e = policy_mounts(&h, "mpi.x.mounts", &["/nope".into()], &mut part).unwrap_err();
        assert!(e.to_string().contains("/nope") && e.to_string().contains("mpi.x.mounts"));
        let e = policy_mounts(&h, "mpi.x.mounts", &["rel".into()], &mut part).unwrap_err();
        assert!(e.to_string().contains("absolute"));
    }

    #[test]
    fn nothing_selected_plans_nothing() {
        let h = FakeHost::default();
        let p = plan(
            &ctx(&[], &[]),
            &node("icelake"),
            &Policy::default(),
            &Selection::default(),
            &h,
            None,
        )
        .unwrap();
        assert!(p.tweaks.is_empty());
        assert!(p.findings.is_empty());
    }
}
