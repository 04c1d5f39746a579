//! What a node offers images, as scheduler feature names: the same facts
//! as its fingerprint, in the small, stable vocabulary a scheduler keeps
//! per node (Slurm `Features=`/`AvailableFeatures`, Kubernetes NFD labels).
//!
//! | feature | meaning |
//! | --- | --- |
//! | `hpcc.cpu.NAME` | the node's archspec microarchitecture, and every ancestor it runs code of (`hpcc.cpu.zen3`, `hpcc.cpu.zen2`, `hpcc.cpu.x86_64_v3`, ...) |
//! | `hpcc.glibc.MAJOR.MINOR` | the node's glibc |
//! | `hpcc.mpi.ABI` | a host MPI the policy offers and that is usable here (`mpich`, `openmpi`, `mpi-abi`) |
//! | `hpcc.libfabric`, `hpcc.ucx` | the policy's host libfabric / UCX, usable here |
//! | `hpcc.gpu.sm_XY` | an NVIDIA GPU of that compute capability |
//! | `hpcc.cuda.MAJOR.MINOR` | the highest CUDA version the NVIDIA driver supports |
//!
//! Names use only lower-case letters, digits, `.`, `_` and `-`: valid Slurm
//! feature names and Kubernetes label names. The set depends only on the
//! fingerprint, so two nodes of one class publish the same set.

use crate::annotations::cpu_table;
use crate::fingerprint::NodeFingerprint;

/// The prefix of every feature hpcc publishes.
pub const PREFIX: &str = "hpcc.";

/// The node's features, sorted, without duplicates.
pub fn of(node: &NodeFingerprint) -> Vec<String> {
    let mut f = std::collections::BTreeSet::new();
    let micro = node.cpu.microarchitecture.as_str();
    f.insert(format!("{PREFIX}cpu.{}", clean(micro)));
    if let Some(t) = cpu_table::target(micro) {
        for a in t.ancestors {
            f.insert(format!("{PREFIX}cpu.{}", clean(a)));
        }
    }
    if let Some(v) = &node.libc.version {
        if node.libc.implementation == "glibc" {
            f.insert(format!("{PREFIX}glibc.{}.{}", v.major(), v.minor()));
        }
    }
    for m in node.mpi.iter().filter(|m| m.usable()) {
        f.insert(format!("{PREFIX}mpi.{}", m.abi.as_str()));
    }
    if node.libfabric.as_ref().is_some_and(|l| l.usable()) {
        f.insert(format!("{PREFIX}libfabric"));
    }
    if !node.ucx.is_empty() && node.ucx.iter().all(|l| l.usable()) {
        f.insert(format!("{PREFIX}ucx"));
    }
    if let Some(nv) = &node.gpu.nvidia {
        for d in &nv.devices {
            let (maj, min) = d.compute_capability;
            f.insert(format!("{PREFIX}gpu.sm_{maj}{min}"));
        }
        if let Some(c) = &nv.cuda_driver_version {
            f.insert(format!("{PREFIX}cuda.{}.{}", c.major(), c.minor()));
        }
    }
    f.into_iter().collect()
}

/// Slurm's form: the names joined by commas, for `Features=` in
/// slurm.conf or `scontrol update NodeName=N AvailableFeatures=...`.
pub fn slurm(node: &NodeFingerprint) -> String {
    of(node).join(",")
}

/// Kubernetes Node Feature Discovery's local feature file
/// (`/etc/kubernetes/node-feature-discovery/features.d/hpcc`): one
/// `name=value` a line; NFD labels the node
/// `feature.node.kubernetes.io/NAME=true`.
pub fn nfd(node: &NodeFingerprint) -> String {
    let mut out = String::from("# hpcc node features (hpcc fingerprint --format nfd-features)\n");
    for name in of(node) {
        out.push_str(&name);
        out.push_str("=true\n");
    }
    out
}

/// A name as Slurm and Kubernetes accept it: lower case, and anything
/// but letters, digits, `.`, `_`, `-` made `_`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, with_mpich};

    #[test]
    fn a_zen3_node_with_mpich_publishes_its_tree_glibc_and_mpi() {
        let n = with_mpich(node("zen3"));
        let f = of(&n);
        for want in [
            "hpcc.cpu.zen3",
            "hpcc.cpu.zen2",
            "hpcc.cpu.zen",
            "hpcc.cpu.x86_64_v3",
            "hpcc.cpu.x86_64",
        ] {
            assert!(f.iter().any(|x| x == want), "{want} missing: {f:?}");
        }
        assert!(!f.iter().any(|x| x == "hpcc.cpu.x86_64_v4"), "{f:?}");
        assert!(!f.iter().any(|x| x == "hpcc.cpu.icelake"), "{f:?}");
        assert!(f.iter().any(|x| x == "hpcc.mpi.mpich"), "{f:?}");
        assert!(!f.iter().any(|x| x.starts_with("hpcc.gpu.")), "{f:?}");
        let mut sorted = f.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, f);
    }

    #[test]
    fn names_are_valid_slurm_features_and_kubernetes_label_names() {
        let f = of(&with_mpich(node("icelake")));
        for name in &f {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)),
                "{name}"
            );
            assert!(name.starts_with(PREFIX));
        }
        let s = slurm(&node("icelake"));
        assert!(!s.contains(' ') && s.contains("hpcc.cpu.icelake,"), "{s}");
        let n = nfd(&node("icelake"));
        assert!(n.lines().skip(1).all(|l| l.ends_with("=true")), "{n}");
        assert!(n.contains("hpcc.cpu.icelake=true\n"), "{n}");
    }

    /// One line of an NFD `features.d` file is valid as NFD's local
    /// source documents it: `# comment`, or `NAME[=VALUE]` where NAME
    /// without a `prefix/` gets `feature.node.kubernetes.io/` and must be a
    /// label name (at most 63 characters, alphanumeric at both ends, `-`,
    /// `_`, `.` inside) and VALUE a label value (empty, or the same form).
    fn nfd_line_is_valid(line: &str) -> bool {
        fn label_part(s: &str, empty_ok: bool) -> bool {
            let b = s.as_bytes();
            if b.is_empty() {
                return empty_ok;
            }
            b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        }
        if line.starts_with('#') {
            return true;
        }
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        !name.contains('/') && label_part(name, false) && label_part(value, true)
    }

    #[test]
    fn the_nfd_file_follows_nfds_local_source_format() {
        let mut n = with_mpich(node("icelake"));
        // An odd name from a future archspec still makes valid labels.
        n.cpu.microarchitecture = "Neo+Verse_V2".into();
        for text in [nfd(&with_mpich(node("zen3"))), nfd(&n)] {
            assert!(text.starts_with('#'), "{text}");
            assert!(text.ends_with('\n'));
            for line in text.lines() {
                assert!(nfd_line_is_valid(line), "{line:?} in\n{text}");
            }
        }
        assert!(nfd(&n).contains("hpcc.cpu.neo_verse_v2=true\n"));
        // The checker itself refuses what NFD refuses.
        for bad in ["-x=true", "x.=true", "a/b=true", "x=tr ue", &"x".repeat(64)] {
            assert!(!nfd_line_is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn an_unusable_host_mpi_is_not_offered() {
        let mut n = with_mpich(node("zen3"));
        for m in &mut n.mpi {
            for l in &mut m.libraries {
                l.error = Some("missing".into());
            }
        }
        assert!(!of(&n).iter().any(|x| x.starts_with("hpcc.mpi.")));
    }
}
