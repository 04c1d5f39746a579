//! The wiring of a Slurm MPI step into its container, as plan data
//! (tests/setup/MPI-RIG.md has the measurements). Pure: the runtime's
//! Slurm mode gathers the facts ([`SlurmStep`]: the PMI rank, PMIx's
//! variables and directories, munged's socket, whether the container has
//! a user namespace) and this turns them into environment, mounts and
//! namespace edits ([`SlurmWiring`]), which `hpcc match --plan` and the
//! plan's log line show and [`crate::apply::spec::edit_slurm`] applies.

use crate::plan::{EnvVar, Mount, NamespaceEdit, SlurmWiring};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The node's POSIX message queue filesystem.
pub const HOST_MQUEUE: &str = "/dev/mqueue";

/// What one step on one node is, as the runtime found it (also read from
/// a file by `hpcc match --plan --slurm-step`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmStep {
    /// This node's Slurm name.
    pub node: String,
    /// The step's MPI interface and what it gave.
    pub mpi: StepMpi,
    /// Policy `[slurm] mpi_node_namespaces`.
    pub node_namespaces: bool,
    /// The container has a user namespace of its own (rootless runc,
    /// Slurm's non-root jobs).
    pub userns: bool,
    /// The node has an `mqueue` filesystem at [`HOST_MQUEUE`].
    pub node_has_mqueue: bool,
}

/// The step's MPI interface (`SLURM_MPI_TYPE`) and what Slurm gave for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StepMpi {
    /// No `--mpi`, or `--mpi=none`: the step is left alone.
    None,
    /// PMI-2: its socket becomes the container's fd 3.
    Pmi2 {
        /// This task's rank.
        rank: usize,
        /// `PMI_SIZE` as Slurm gave it, else the step's task count.
        size: String,
        /// `PMI_JOBID` as Slurm gave it, else `<job>.<step>`.
        jobid: String,
    },
    /// PMIx.
    Pmix {
        /// The task's `PMIX_*` variables, in Slurm's order.
        vars: Vec<(String, String)>,
        /// The PMIx server's directory and Open MPI's session directory,
        /// checked to be the step's own (read-write at the same paths).
        dirs: Vec<PathBuf>,
        /// `PMIX_SECURITY_MODE` of the task.
        security_mode: Option<String>,
        /// The node's munged socket directory, when it has one.
        munge_dir: Option<PathBuf>,
    },
}

fn var(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value,
        reason: "Slurm MPI step".into(),
    }
}

/// The step's wiring; `None` for a step without MPI (left alone).
pub fn wiring(s: &SlurmStep) -> Option<SlurmWiring> {
    let mut w = SlurmWiring::default();
    match &s.mpi {
        StepMpi::None => return None,
        StepMpi::Pmi2 { rank, size, jobid } => {
            w.env.push(var("PMI_FD", "3".into()));
            w.env.push(var("PMI_RANK", rank.to_string()));
            w.env.push(var("PMI_SIZE", size.clone()));
            w.env.push(var("PMI_JOBID", jobid.clone()));
            w.env.push(var("SLURM_PROCID", rank.to_string()));
        }
        StepMpi::Pmix {
            vars,
            dirs,
            security_mode,
            munge_dir,
        } => {
            for (k, v) in vars {
                w.env.push(var(k, v.clone()));
                if k == "PMIX_RANK" {
                    w.env.push(var("SLURM_PROCID", v.clone()));
                }
            }
            for d in dirs {
                w.mounts.push(Mount {
                    source: d.clone(),
                    destination: d.clone(),
                    readonly: false,
                    reason: "PMIx".into(),
                });
            }
            if let Some(m) = munge_mount(s.userns, security_mode.as_deref(), munge_dir.as_deref()) {
                w.mounts.push(m);
            }
        }
    }
    w.env.push(var("SLURMD_NODENAME", s.node.clone()));
    if s.node_namespaces {
        w.namespaces = node_namespaces(s.userns, s.node_has_mqueue);
        w.mounts.push(Mount {
            source: "/dev/shm".into(),
            destination: "/dev/shm".into(),
            readonly: false,
            reason: "the node's shared memory, for MPI".into(),
        });
    }
    Some(w)
}

/// The node's munge socket directory, read-only, for a PMIx rank in a user
/// namespace. There the rank's uid is not the job's (`runc spec
/// --rootless` maps the user to root, and runc needs root mapped), and
/// PMIx's `native` security over TCP sends the uid the rank sees: Slurm's
/// PMIx server refuses it, and every rank stops with `OPAL ERROR:
/// Unreachable in file ext3x_client.c` (measured, rootless runc). With
/// munged's socket, the client's `munge` module (the server offers
/// `munge,native`, in that order) gets a credential from munged, which
/// takes the uid from the socket: the job user's. Anyone on the node may
/// talk to munged, so this gives the job nothing it did not have.
pub fn munge_mount(
    userns: bool,
    security_mode: Option<&str>,
    munge_dir: Option<&Path>,
) -> Option<Mount> {
    if !userns || !security_mode.is_some_and(|m| m.split(',').any(|x| x.trim() == "munge")) {
        return None;
    }
    if munge_dir.is_none() {
        tracing::warn!("PMIx step in a user namespace and no munged socket in /run/munge: Slurm's PMIx server may refuse the ranks (the uid they see is not the job's)");
    }
    munge_dir.map(|d| Mount {
        source: d.to_owned(),
        destination: d.to_owned(),
        readonly: true,
        reason: "munged's socket: PMIx security for a rank in a user namespace".into(),
    })
}

/// The container joins the node's network, IPC and PID namespaces: the
/// interconnect, the PMI server on the node's loopback, shared memory and
/// cross-memory attach between the ranks of a node (UCX's CMA transport
/// needs the peers in one PID namespace) must be reachable, as with
/// Pyxis/enroot and Apptainer; a rank that hangs then also gets the
/// signals of a cancelled step (as pid 1 of its own namespace it ignores
/// SIGTERM). A container with a user namespace keeps its PID namespace (it
/// could not mount `/proc` without one), and its mounts of the node's IPC
/// and network filesystems become binds of the node's: it is not
/// privileged over the node's namespaces, so it cannot mount a new mqueue
/// or sysfs there ([`crate::apply::namespaces`] has the audit).
pub fn node_namespaces(userns: bool, node_has_mqueue: bool) -> Vec<NamespaceEdit> {
    let share = |ns: &str| NamespaceEdit::Share {
        namespace: ns.into(),
        why: "removed: the MPI step uses the node's".into(),
    };
    let mut out = vec![share("network"), share("ipc")];
    if !userns {
        out.push(share("pid"));
        // Root over the node's namespaces may mount their filesystems.
        return out;
    }
    out.push(if node_has_mqueue {
        NamespaceEdit::Bind {
            destination: HOST_MQUEUE.into(),
            kind: "mqueue".into(),
            source: HOST_MQUEUE.into(),
            options: ["rbind", "nosuid", "nodev", "noexec", "rprivate"].map(String::from).to_vec(),
            why: "bound from the node: a container with its own user namespace cannot mount a new mqueue in the node's IPC namespace".into(),
        }
    } else {
        NamespaceEdit::Remove {
            destination: HOST_MQUEUE.into(),
            kind: "mqueue".into(),
            why: "removed: a container with its own user namespace cannot mount a new mqueue in the node's IPC namespace, and the node has no /dev/mqueue to bind".into(),
        }
    });
    out.push(NamespaceEdit::Bind {
        destination: "/sys".into(),
        kind: "sysfs".into(),
        source: "/sys".into(),
        options: ["rbind", "ro", "nosuid", "noexec", "nodev", "rprivate"].map(String::from).to_vec(),
        why: "bound read-only from the node: a container with its own user namespace cannot mount sysfs without its own network namespace".into(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(mpi: StepMpi) -> SlurmStep {
        SlurmStep {
            node: "n1".into(),
            mpi,
            node_namespaces: true,
            userns: false,
            node_has_mqueue: true,
        }
    }

    fn names(w: &SlurmWiring) -> Vec<(&str, &str)> {
        w.env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect()
    }

    #[test]
    fn a_step_without_mpi_gets_nothing() {
        assert_eq!(wiring(&step(StepMpi::None)), None);
    }

    #[test]
    fn pmi2_gets_fd_3_its_rank_and_the_nodes_namespaces() {
        let w = wiring(&step(StepMpi::Pmi2 {
            rank: 1,
            size: "2".into(),
            jobid: "7.0".into(),
        }))
        .unwrap();
        assert_eq!(
            names(&w),
            [
                ("PMI_FD", "3"),
                ("PMI_RANK", "1"),
                ("PMI_SIZE", "2"),
                ("PMI_JOBID", "7.0"),
                ("SLURM_PROCID", "1"),
                ("SLURMD_NODENAME", "n1")
            ]
        );
        assert_eq!(w.mounts.len(), 1);
        assert_eq!(w.mounts[0].destination, Path::new("/dev/shm"));
        assert!(!w.mounts[0].readonly);
        let shared: Vec<&str> = w
            .namespaces
            .iter()
            .filter_map(|e| match e {
                NamespaceEdit::Share { namespace, .. } => Some(namespace.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(shared, ["network", "ipc", "pid"]);
        assert_eq!(w.namespaces.len(), 3, "root: no mount edits");
        // Without the policy's node namespaces: no namespace edit, no shm.
        let mut s = step(StepMpi::Pmi2 {
            rank: 0,
            size: "1".into(),
            jobid: "7.0".into(),
        });
        s.node_namespaces = false;
        let w = wiring(&s).unwrap();
        assert!(w.namespaces.is_empty() && w.mounts.is_empty(), "{w:?}");
    }

    #[test]
    fn pmix_gets_its_variables_directories_and_munge_in_a_user_namespace() {
        let mut s = step(StepMpi::Pmix {
            vars: vec![
                ("PMIX_NAMESPACE".into(), "slurm.pmix.7.0".into()),
                ("PMIX_RANK".into(), "3".into()),
            ],
            dirs: vec!["/var/spool/slurmd/pmix.7.0".into()],
            security_mode: Some("munge,native".into()),
            munge_dir: Some("/run/munge".into()),
        });
        s.userns = true;
        let w = wiring(&s).unwrap();
        assert_eq!(
            names(&w),
            [
                ("PMIX_NAMESPACE", "slurm.pmix.7.0"),
                ("PMIX_RANK", "3"),
                ("SLURM_PROCID", "3"),
                ("SLURMD_NODENAME", "n1")
            ]
        );
        let dests: Vec<&Path> = w.mounts.iter().map(|m| m.destination.as_path()).collect();
        assert_eq!(
            dests,
            [
                Path::new("/var/spool/slurmd/pmix.7.0"),
                Path::new("/run/munge"),
                Path::new("/dev/shm")
            ]
        );
        assert!(w.mounts[1].readonly && !w.mounts[0].readonly);
        // In a user namespace the PID namespace stays; mqueue and sysfs
        // become binds of the node's.
        assert!(!w
            .namespaces
            .iter()
            .any(|e| matches!(e, NamespaceEdit::Share { namespace, .. } if namespace == "pid")));
        assert!(w.namespaces.iter().any(
            |e| matches!(e, NamespaceEdit::Bind { destination, .. } if destination == Path::new("/dev/mqueue"))
        ));
    }

    #[test]
    fn munge_is_bound_only_for_a_user_namespace_and_a_munge_server() {
        let d = Some(Path::new("/run/munge"));
        // Root's ranks keep their uid: native security works, nothing added.
        assert!(munge_mount(false, Some("munge,native"), d).is_none());
        // A server without munge: nothing to talk to.
        assert!(munge_mount(true, Some("native"), d).is_none());
        assert!(munge_mount(true, None, d).is_none());
        // No munged on the node: nothing to bind.
        assert!(munge_mount(true, Some("munge,native"), None).is_none());
        let m = munge_mount(true, Some("munge,native"), d).unwrap();
        assert_eq!(
            (m.source.as_path(), m.destination.as_path(), m.readonly),
            (Path::new("/run/munge"), Path::new("/run/munge"), true)
        );
    }

    #[test]
    fn the_wiring_is_serialised_for_the_plan() {
        let w = wiring(&step(StepMpi::Pmi2 {
            rank: 0,
            size: "1".into(),
            jobid: "1.0".into(),
        }))
        .unwrap();
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(v["namespaces"][0]["edit"], "share");
        assert_eq!(v["namespaces"][0]["namespace"], "network");
        let back: SlurmWiring = serde_json::from_value(v).unwrap();
        assert_eq!(back, w);
    }
}

#[cfg(test)]
mod report_tests {
    use super::*;
    use crate::plan::{Decision, Plan};

    /// `hpcc match --plan --slurm-step` prints the step's wiring: every
    /// mount, variable and namespace edit of the plan's `slurm` section.
    #[test]
    fn the_plan_report_shows_the_slurm_wiring() {
        let w = wiring(&SlurmStep {
            node: "n1".into(),
            mpi: StepMpi::Pmi2 {
                rank: 1,
                size: "2".into(),
                jobid: "7.0".into(),
            },
            node_namespaces: true,
            userns: true,
            node_has_mqueue: false,
        })
        .unwrap();
        let plan = Plan {
            container: "c".into(),
            node: "n1".into(),
            verdict: Default::default(),
            decision: Decision::Start { warnings: vec![] },
            tweaks: Default::default(),
            notes: vec![],
            slurm: Some(w),
        };
        let text = crate::report::plan(&plan, false);
        for line in [
            "slurm step:",
            "  mount  /dev/shm -> /dev/shm  (the node's shared memory, for MPI)",
            "  env    PMI_FD=3  (Slurm MPI step)",
            "  env    SLURMD_NODENAME=n1  (Slurm MPI step)",
            "  ns     network namespace: removed: the MPI step uses the node's",
            "  ns     /dev/mqueue (mqueue): removed: a container with its own user namespace",
            "  ns     /sys (sysfs) -> bind of /sys: bound read-only",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(!text.contains("pid namespace"), "{text}");
        // Step facts as `--slurm-step` reads them.
        let facts: SlurmStep = serde_json::from_str(
            r#"{"node":"n1","mpi":{"type":"none"},"node_namespaces":true,"userns":false,"node_has_mqueue":true}"#,
        )
        .unwrap();
        assert_eq!(facts.mpi, StepMpi::None);
    }
}
