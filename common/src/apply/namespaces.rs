//! A container that joins the node's namespaces (Slurm MPI steps, policy
//! `[slurm] mpi_node_namespaces`), as edits of `config.json`.
//!
//! Dropping a namespace from `linux.namespaces` is not enough: the mounts
//! that `runc spec` and `runc spec --rootless` put in every config mount a
//! new instance of a filesystem that belongs to that namespace, and the
//! kernel allows that only to a process privileged over the namespace's
//! owning user namespace. A container with its own user namespace
//! (rootless runc, Slurm's non-root jobs) is not privileged over the
//! node's namespaces, so runc fails on them (`error mounting "mqueue" to
//! rootfs at "/dev/mqueue": ... operation not permitted`). Audit, for the
//! namespaces hpcc makes the container share (see [`share_node_namespaces`]):
//!
//! | mount | namespace shared | root (no user ns) | user ns (rootless) |
//! | --- | --- | --- | --- |
//! | `/dev/mqueue` (`mqueue`) | IPC | kept: it mounts the node's queues | bind of the node's `/dev/mqueue` (`rbind,nosuid,nodev,noexec,rprivate`); removed when the node has none |
//! | `/dev/shm` (`tmpfs`) | IPC | bind of the node's `/dev/shm` (the MPI wiring) | same |
//! | `/sys` (`sysfs`) | network | kept: root may mount sysfs for the node's network | bind of the node's `/sys` read-only (`runc spec --rootless` already binds it) |
//! | `/proc` (`proc`) | PID | kept: root may mount the node's procfs | not reached: the container keeps its PID namespace |
//! | `/sys/fs/cgroup`, `/dev/pts`, `/dev` | none of them | kept | kept |

use crate::plan::NamespaceEdit;
use crate::tweaks::slurm::HOST_MQUEUE;
use serde_json::{json, Value};
use std::path::Path;
/// `MQUEUE_MAGIC` of `linux/magic.h`.
const MQUEUE_MAGIC: i64 = 0x1980_0202;

/// One change to the config and why (for the runtime's log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsEdit {
    /// The namespace or mount destination changed.
    pub what: String,
    /// What was done and why.
    pub why: String,
}

/// What the node offers that the edits depend on.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    /// The node has a mounted `mqueue` filesystem at `/dev/mqueue`.
    pub has_mqueue: bool,
}

impl Node {
    /// This node, as seen from the runtime's mount namespace.
    pub fn this() -> Node {
        Node {
            has_mqueue: is_mqueue(Path::new(HOST_MQUEUE)),
        }
    }
}

// f_type is __fsword_t, whose width depends on the target.
#[allow(clippy::unnecessary_cast)]
fn is_mqueue(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 as i64 == MQUEUE_MAGIC)
}

fn has_ns(config: &Value, kind: &str) -> bool {
    config["linux"]["namespaces"]
        .as_array()
        .is_some_and(|a| a.iter().any(|n| n["type"] == kind))
}

/// The container joins the node's network and IPC namespaces, and its PID
/// namespace unless it has a user namespace (there it could not mount
/// `/proc` without one of its own), then the mounts that would need the
/// dropped namespaces are made binds of the node's, as the table of this
/// module says: the plan of [`crate::tweaks::slurm::node_namespaces`] for
/// this config, applied. Returns what was changed. A config without
/// `linux.namespaces` is left as it is.
pub fn share_node_namespaces(config: &mut Value, node: Node) -> Vec<NsEdit> {
    let plan = crate::tweaks::slurm::node_namespaces(has_ns(config, "user"), node.has_mqueue);
    apply(config, &plan)
}

/// Applies the namespace edits of a plan: each namespace to share is
/// removed from `linux.namespaces`, each mount edit acts on the mount of
/// its type at its destination. Returns what was changed, in the config's
/// order. A config without `linux.namespaces` is left as it is (there is
/// nothing the mounts would lose), and applying twice changes nothing more.
pub fn apply(config: &mut Value, edits: &[NamespaceEdit]) -> Vec<NsEdit> {
    let mut out = Vec::new();
    let shared = |kind: &str| {
        edits
            .iter()
            .any(|e| matches!(e, NamespaceEdit::Share { namespace, .. } if namespace == kind))
    };
    // pointer_mut, not indexing: IndexMut would insert the missing keys.
    let Some(ns) = config
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    else {
        return out;
    };
    ns.retain(|n| {
        let kind = n["type"].as_str().unwrap_or_default();
        let Some(why) = edits.iter().find_map(|e| match e {
            NamespaceEdit::Share { namespace, why } if namespace == kind => Some(why),
            _ => None,
        }) else {
            return true;
        };
        out.push(NsEdit {
            what: format!("{kind} namespace"),
            why: why.clone(),
        });
        false
    });
    // A mount of a namespace the container still has is its own to make.
    let (own_ipc, own_net) = (
        has_ns(config, "ipc") && !shared("ipc"),
        has_ns(config, "network") && !shared("network"),
    );
    let Some(mounts) = config.get_mut("mounts").and_then(Value::as_array_mut) else {
        return out;
    };
    let mut i = 0;
    while i < mounts.len() {
        let dest = mounts[i]["destination"].as_str().unwrap_or_default();
        let kind = mounts[i]["type"].as_str().unwrap_or_default().to_owned();
        let clean = dest.trim_end_matches('/').to_owned();
        let owned = match kind.as_str() {
            "mqueue" => own_ipc,
            "sysfs" => own_net,
            _ => false,
        };
        let edit = edits.iter().find(|e| match e {
            NamespaceEdit::Bind {
                destination,
                kind: k,
                ..
            }
            | NamespaceEdit::Remove {
                destination,
                kind: k,
                ..
            } => !owned && Path::new(&clean) == destination && *k == kind,
            NamespaceEdit::Share { .. } => false,
        });
        match edit {
            Some(NamespaceEdit::Bind {
                destination,
                source,
                options,
                why,
                ..
            }) => {
                mounts[i] = json!({
                    "destination": destination,
                    "type": "bind",
                    "source": source,
                    "options": options,
                });
                out.push(NsEdit {
                    what: clean,
                    why: why.clone(),
                });
            }
            Some(NamespaceEdit::Remove { why, .. }) => {
                out.push(NsEdit {
                    what: clean,
                    why: why.clone(),
                });
                mounts.remove(i);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `runc spec` (runc 1.1.5) as written.
    fn runc_spec() -> Value {
        json!({
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
            ],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
        })
    }

    /// `runc spec --rootless` (runc 1.1.5) as written.
    fn runc_spec_rootless() -> Value {
        json!({
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
            ],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "user"}]}
        })
    }

    const WITH_MQUEUE: Node = Node { has_mqueue: true };

    fn ns(c: &Value) -> Vec<&str> {
        c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect()
    }

    fn mount<'a>(c: &'a Value, dest: &str) -> Option<&'a Value> {
        c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == dest)
    }

    #[test]
    fn root_shares_network_ipc_and_pid_and_keeps_every_mount() {
        let mut c = runc_spec();
        let before = c["mounts"].clone();
        let edits = share_node_namespaces(&mut c, WITH_MQUEUE);
        assert_eq!(ns(&c), ["uts", "mount"]);
        // Root may mount mqueue, sysfs and proc of the node's namespaces.
        assert_eq!(c["mounts"], before);
        let what: Vec<&str> = edits.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(
            what,
            ["pid namespace", "network namespace", "ipc namespace"]
        );
    }

    #[test]
    fn rootless_binds_the_nodes_mqueue_and_keeps_its_pid_namespace() {
        let mut c = runc_spec_rootless();
        let edits = share_node_namespaces(&mut c, WITH_MQUEUE);
        assert_eq!(ns(&c), ["pid", "uts", "mount", "user"]);
        assert_eq!(
            mount(&c, "/dev/mqueue").unwrap(),
            &json!({"destination": "/dev/mqueue", "type": "bind", "source": "/dev/mqueue",
                    "options": ["rbind", "nosuid", "nodev", "noexec", "rprivate"]})
        );
        // The rootless spec already binds /sys; /proc stays a procfs of
        // the container's own PID namespace.
        assert_eq!(mount(&c, "/sys").unwrap()["type"], "none");
        assert_eq!(mount(&c, "/proc").unwrap()["type"], "proc");
        assert!(edits
            .iter()
            .any(|e| e.what == "/dev/mqueue" && e.why.contains("bound from the node")));
        assert_eq!(c["mounts"].as_array().unwrap().len(), 7);
    }

    #[test]
    fn rootless_without_a_node_mqueue_drops_the_mount_and_says_why() {
        let mut c = runc_spec_rootless();
        let edits = share_node_namespaces(&mut c, Node { has_mqueue: false });
        assert!(mount(&c, "/dev/mqueue").is_none());
        assert_eq!(c["mounts"].as_array().unwrap().len(), 6);
        let e = edits.iter().find(|e| e.what == "/dev/mqueue").unwrap();
        assert!(e.why.starts_with("removed: "), "{e:?}");
        assert!(e.why.contains("no /dev/mqueue"), "{e:?}");
    }

    #[test]
    fn a_root_shaped_spec_in_a_user_namespace_gets_sysfs_and_mqueue_bound() {
        // `runc spec` edited into a user namespace (what a user gets who
        // adds one by hand): sysfs needs its own network namespace there.
        let mut c = runc_spec();
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        share_node_namespaces(&mut c, WITH_MQUEUE);
        assert_eq!(ns(&c), ["pid", "uts", "mount", "user"]);
        assert_eq!(
            mount(&c, "/sys").unwrap(),
            &json!({"destination": "/sys", "type": "bind", "source": "/sys",
                    "options": ["rbind", "ro", "nosuid", "noexec", "nodev", "rprivate"]})
        );
        assert_eq!(mount(&c, "/dev/mqueue").unwrap()["type"], "bind");
        assert_eq!(mount(&c, "/proc").unwrap()["type"], "proc");
        // Mounts of no shared namespace are untouched.
        for d in ["/dev", "/dev/pts", "/sys/fs/cgroup"] {
            assert_eq!(
                mount(&c, d).unwrap(),
                mount(&runc_spec(), d).unwrap(),
                "{d}"
            );
        }
    }

    #[test]
    fn editing_twice_gives_the_same_config_and_no_namespaces_means_no_edit() {
        for mut c in [runc_spec(), runc_spec_rootless()] {
            share_node_namespaces(&mut c, WITH_MQUEUE);
            let once = c.clone();
            assert!(share_node_namespaces(&mut c, WITH_MQUEUE).is_empty());
            assert_eq!(c, once);
        }
        let mut c = json!({"mounts": [{"destination": "/dev/mqueue", "type": "mqueue"}]});
        let before = c.clone();
        assert!(share_node_namespaces(&mut c, WITH_MQUEUE).is_empty());
        assert_eq!(c, before);
    }

    #[test]
    fn this_node_has_an_mqueue_where_one_is_mounted() {
        // Whatever this machine has, the answer must match /proc/mounts.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let listed = mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/dev/mqueue") && l.contains(" mqueue "));
        assert_eq!(Node::this().has_mqueue, listed, "{mounts}");
    }
}
