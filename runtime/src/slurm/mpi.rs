//! The facts of an MPI step (tests/setup/MPI-RIG.md): which PMI the step
//! uses, the PMI-2 socket and rank, PMIx's variables and directories,
//! munged's socket, whether the container has a user namespace. Only
//! gathered here; `hpcc_common::slurm::wiring` plans the container's
//! environment, mounts and namespaces from them, and
//! `hpcc_common::apply::spec::edit_slurm` applies the plan.

use super::spool::{step_dir, tmpfs_dir};
use super::{env, Step};
use crate::pmi;
use hpcc_common::apply::namespaces;
use hpcc_common::plan::SlurmWiring;
use hpcc_common::slurm::{self, SlurmStep, StepMpi};
use hpcc_config::Policy;
use serde_json::Value;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

/// Where munged listens on a Debian/RHEL node (`/var/run` is `/run`).
pub(crate) const MUNGE_DIRS: &[&str] = &["/run/munge", "/var/run/munge"];
/// Most `PMIX_*` variables passed on.
const MAX_PMIX_VARS: usize = 256;

/// Why an MPI step cannot be wired.
#[derive(Debug, thiserror::Error)]
pub enum MpiError {
    /// A PMI-2 step without its task count.
    #[error("SLURM_NTASKS is missing from the step")]
    NoTaskCount,
    /// A PMIx step without the plugin's variables.
    #[error("the task's PMIX_* variables were not given: load hpcc_spank.so as `required` in plugstack.conf (it passes them in task_init)")]
    NoPmixVariables,
    /// The runtime's fds cannot be listed.
    #[error("cannot list /proc/self/fd: {0}")]
    ListFds(#[source] std::io::Error),
    /// No socket among the fds.
    #[error("no PMI-2 socket was given to the runtime (is the step started with --mpi=pmi2?)")]
    NoPmi2Socket,
    /// Several sockets and no `PMI_FD`.
    #[error("{0} sockets are open and PMI_FD does not say which is PMI-2's")]
    ManySockets(usize),
    /// The PMI rank could not be computed.
    #[error(transparent)]
    Pmi(#[from] pmi::PmiError),
}

/// What an MPI step gets: the wiring (none for a step without MPI) and
/// the PMI-2 socket to become the container's fd 3.
#[derive(Debug, Default)]
pub struct Wired {
    /// The plan's Slurm section.
    pub wiring: Option<SlurmWiring>,
    /// PMI-2's socket.
    pub pmi_fd: Option<RawFd>,
}

/// A variable of the container's `process.env` (the step's environment).
fn step_var(config: &Value, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    config["process"]["env"]
        .as_array()?
        .iter()
        .rev()
        .find_map(|e| e.as_str()?.strip_prefix(&prefix).map(str::to_owned))
}

/// The step's facts from the spooled config and the runtime's own
/// environment, planned into its wiring. Steps without `--mpi` (or
/// `--mpi=none`) get none.
pub fn wire(config: &Value, policy: &Policy, s: &Step<'_>) -> Result<Wired, MpiError> {
    let (mpi, pmi_fd) = step_mpi(config, s)?;
    // A step without MPI gets no wiring: the node is not looked at for it.
    let node_has_mqueue = mpi != StepMpi::None && namespaces::Node::this().has_mqueue;
    let facts = SlurmStep {
        node: s.node.to_owned(),
        mpi,
        node_namespaces: policy.slurm.mpi_node_namespaces,
        userns: has_userns(config),
        node_has_mqueue,
    };
    Ok(Wired {
        wiring: slurm::wiring(&facts),
        pmi_fd,
    })
}

fn has_userns(config: &Value) -> bool {
    config["linux"]["namespaces"]
        .as_array()
        .is_some_and(|a| a.iter().any(|n| n["type"] == "user"))
}

/// The step's PMI and what Slurm gave for it.
fn step_mpi(config: &Value, s: &Step<'_>) -> Result<(StepMpi, Option<RawFd>), MpiError> {
    let (node, job, step) = (s.node, s.job, s.step);
    let mpi = step_var(config, "SLURM_MPI_TYPE").or_else(|| env("SLURM_MPI_TYPE"));
    match mpi.as_deref() {
        Some(t) if t.starts_with("pmi2") => {
            let ntasks = step_var(config, "SLURM_NTASKS")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or(MpiError::NoTaskCount)?;
            let rank = match env("PMI_RANK").and_then(|r| r.parse::<usize>().ok()) {
                Some(r) => r,
                None => {
                    let list = step_var(config, "SLURM_STEP_NODELIST").unwrap_or_default();
                    let map = step_var(config, "SLURM_PMI2_PROC_MAPPING").unwrap_or_default();
                    pmi::pmi2_rank(node, &list, &map, ntasks)?
                }
            };
            let fd = pmi2_socket()?;
            Ok((
                StepMpi::Pmi2 {
                    rank,
                    size: env("PMI_SIZE").unwrap_or_else(|| ntasks.to_string()),
                    jobid: env("PMI_JOBID").unwrap_or_else(|| format!("{job}.{step}")),
                },
                Some(fd),
            ))
        }
        Some(t) if t.starts_with("pmix") => {
            let vars: Vec<(String, String)> = std::env::vars()
                .filter(|(k, _)| k.starts_with("PMIX_"))
                .take(MAX_PMIX_VARS)
                .collect();
            if !vars.iter().any(|(k, _)| k == "PMIX_RANK") {
                return Err(MpiError::NoPmixVariables);
            }
            // The PMIx server's directory (in the spool) and Open MPI's
            // session directory (in TmpFS), read-write at the same paths.
            let uid = euid();
            let tmpfs = tmpfs_dir(s.conf, node);
            let appdir = format!("spmix_appdir_{uid}_{job}.{step}");
            let dirs = [
                env("PMIX_SERVER_TMPDIR")
                    .and_then(|d| step_dir(Path::new(&d), s.spool, &format!("pmix.{job}.{step}"))),
                step_dir(&tmpfs.join(&appdir), &tmpfs, &appdir),
            ];
            let security_mode = env("PMIX_SECURITY_MODE");
            // munged is looked for only where the plan would bind it.
            let munge = has_userns(config)
                && security_mode
                    .as_deref()
                    .is_some_and(|m| m.split(',').any(|x| x.trim() == "munge"));
            Ok((
                StepMpi::Pmix {
                    vars,
                    dirs: dirs.into_iter().flatten().collect(),
                    security_mode,
                    munge_dir: munge.then(|| munge_dir(MUNGE_DIRS)).flatten(),
                },
                None,
            ))
        }
        _ => Ok((StepMpi::None, None)),
    }
}

/// The first of `dirs` (canonical) that holds munged's socket.
pub(crate) fn munge_dir(dirs: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    dirs.iter().find_map(|d| {
        let d = std::fs::canonicalize(d).ok()?;
        let sock = std::fs::symlink_metadata(d.join("munge.socket.2")).ok()?;
        sock.file_type().is_socket().then_some(d)
    })
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The PMI-2 socket slurmstepd left open: `PMI_FD` when the plugin gave
/// it, else the only socket among the fds above 2.
fn pmi2_socket() -> Result<RawFd, MpiError> {
    let is_socket = |fd: RawFd| {
        // SAFETY: fstat on an integer fd with a zeroed stat buffer; an fd
        // that is not open just fails.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        (unsafe { libc::fstat(fd, &mut st) } == 0) && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    };
    if let Some(fd) = env("PMI_FD").and_then(|v| v.parse::<RawFd>().ok()) {
        if fd > 2 && is_socket(fd) {
            return Ok(fd);
        }
    }
    let socks: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(MpiError::ListFds)?
        .flatten()
        .take(4096)
        .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&fd| fd > 2 && is_socket(fd))
        .collect();
    match socks[..] {
        [fd] => Ok(fd),
        [] => Err(MpiError::NoPmi2Socket),
        _ => Err(MpiError::ManySockets(socks.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step() -> Step<'static> {
        Step {
            conf: "",
            node: "n1",
            spool: Path::new("/nonexistent-spool"),
            job: 1,
            step: 0,
        }
    }

    /// The namespace part of the wiring of this config, applied as
    /// prepare applies it.
    fn share_node_namespaces(c: &mut Value) {
        let plan = slurm::node_namespaces(has_userns(c), namespaces::Node::this().has_mqueue);
        namespaces::apply(c, &plan);
    }

    fn pmix_munge_mount(c: &Value, mode: Option<&str>) -> Option<hpcc_common::plan::Mount> {
        slurm::munge_mount(has_userns(c), mode, munge_dir(MUNGE_DIRS).as_deref())
    }

    #[test]
    fn steps_without_mpi_are_left_alone_and_namespaces_are_shared_for_mpi() {
        let mut c = json!({"process": {"env": ["SLURM_MPI_TYPE=none"]}, "linux": {"namespaces": [{"type": "network"}, {"type": "mount"}]}});
        let before = c.clone();
        let wired = wire(&c, &Policy::default(), &step()).unwrap();
        assert_eq!((wired.wiring.is_none(), wired.pmi_fd), (true, None));
        // As prepare applies it: nothing.
        if let Some(w) = &wired.wiring {
            hpcc_common::apply::spec::edit_slurm(&mut c, w).unwrap();
        }
        assert_eq!(c, before);
        let mut c = json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "mount"}]}});
        share_node_namespaces(&mut c);
        assert_eq!(c["linux"]["namespaces"], json!([{"type": "mount"}]));
        // Rootless: the PID namespace stays (/proc needs it in a user namespace).
        let mut c = json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "user"}]}});
        share_node_namespaces(&mut c);
        assert_eq!(
            c["linux"]["namespaces"],
            json!([{"type": "pid"}, {"type": "user"}])
        );
        // Rootless with the node's IPC: runc could not mount a new mqueue
        // (`operation not permitted`): the node's is bound, or none at all.
        let mut c = json!({
            "mounts": [{"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}, {"type": "user"}]}
        });
        share_node_namespaces(&mut c);
        let mounts = c["mounts"].as_array().unwrap();
        assert!(mounts.iter().all(|m| m["type"] != "mqueue"), "{mounts:?}");
        if namespaces::Node::this().has_mqueue {
            assert_eq!(mounts[0]["source"], "/dev/mqueue");
            assert_eq!(mounts[0]["type"], "bind");
        } else {
            assert!(mounts.is_empty());
        }
    }

    #[test]
    fn a_pmix_rank_in_a_user_namespace_gets_munged_s_socket() {
        let base = std::env::temp_dir().join(format!("hpcc-munge-test-{}", std::process::id()));
        let (dir, other) = (base.join("a"), base.join("b"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(dir.join("munge.socket.2")).unwrap();
        let d = dir.to_str().unwrap();
        let real = std::fs::canonicalize(d).unwrap();
        assert_eq!(munge_dir(&["/nonexistent/munge", d]), Some(real));
        // A plain file of that name is not munged.
        std::fs::write(other.join("munge.socket.2"), "").unwrap();
        assert_eq!(munge_dir(&[other.to_str().unwrap()]), None);
        let _ = std::fs::remove_dir_all(&base);

        let rootless = json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "user"}]}});
        let root = json!({"linux": {"namespaces": [{"type": "pid"}]}});
        // Root's ranks keep their uid: native security works, nothing added.
        assert!(pmix_munge_mount(&root, Some("munge,native")).is_none());
        // A server without munge: nothing to talk to.
        assert!(pmix_munge_mount(&rootless, Some("native")).is_none());
        assert!(pmix_munge_mount(&rootless, None).is_none());
        // Where this node has munged, its directory is bound read-only.
        if let Some(d) = munge_dir(MUNGE_DIRS) {
            let m = pmix_munge_mount(&rootless, Some("munge,native")).unwrap();
            assert_eq!(
                (m.source, m.destination.clone(), m.readonly),
                (d.clone(), d, true)
            );
        }
    }

    #[test]
    fn pmix_without_the_plugins_variables_is_a_clear_error() {
        if std::env::var_os("PMIX_RANK").is_some() {
            return;
        }
        let c = json!({"process": {"env": ["SLURM_MPI_TYPE=pmix"]}});
        let e = wire(&c, &Policy::default(), &step()).unwrap_err();
        assert!(e.to_string().contains("hpcc_spank.so"), "{e}");
    }
}
