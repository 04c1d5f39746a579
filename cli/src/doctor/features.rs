//! The node's published features against its fingerprint (issue 20): Slurm
//! places `--container` jobs by the `hpcc.*` features a node publishes
//! (`hpcc-node-features`), so a node whose published set is not what its
//! fingerprint says now (a new CPU, a driver update, a policy change, a
//! slurmctld restart that dropped them) gets jobs it cannot run, or none.
//! Also the fingerprint saved for the submit hosts (`[scheduling] fleet`).

use super::{Finding, Layout};
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::node_features::PREFIX;
use hpcc_common::text::escape;
use hpcc_config::Policy;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

const CHECK: &str = "node-features";
/// What the boot unit runs.
const PUBLISH: &str = "/usr/libexec/hpcc/hpcc-node-features";

/// The `hpcc.*` names of a comma-separated Slurm feature list.
fn ours(list: &str) -> BTreeSet<String> {
    list.split(',')
        .map(str::trim)
        .filter(|f| f.starts_with(PREFIX))
        .map(str::to_owned)
        .collect()
}

/// The value of `key=` in a `scontrol -o show node` line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Compares what node `node` publishes (`scontrol -o show node` line) with
/// the features of its fingerprint.
pub fn compare(node: &str, show: &str, want: &BTreeSet<String>) -> Finding {
    let fix = format!(
        "run {PUBLISH} on {} (or `systemctl restart hpcc-node-features`)",
        escape(node)
    );
    let avail = ours(field(show, "AvailableFeatures").unwrap_or(""));
    let active = ours(field(show, "ActiveFeatures").unwrap_or(""));
    if avail.is_empty() {
        return Finding::warn(
            CHECK,
            format!(
                "node {} publishes no hpcc feature: the submit filter's --constraint never selects it",
                escape(node)
            ),
            format!("enable hpcc-node-features.service, or {fix}"),
        );
    }
    let list = |s: Vec<&String>| s.iter().map(|f| escape(f)).collect::<Vec<_>>().join(",");
    let missing: Vec<&String> = want.difference(&avail).collect();
    let stale: Vec<&String> = avail.difference(want).collect();
    if !missing.is_empty() || !stale.is_empty() {
        let mut what = Vec::new();
        if !missing.is_empty() {
            what.push(format!("missing {}", list(missing)));
        }
        if !stale.is_empty() {
            what.push(format!("not true any more {}", list(stale)));
        }
        return Finding::fail(
            CHECK,
            format!(
                "node {}'s published features disagree with its fingerprint: {}: jobs are placed by the published set",
                escape(node),
                what.join("; ")
            ),
            fix,
        );
    }
    if active != avail {
        return Finding::fail(
            CHECK,
            format!(
                "node {}'s active hpcc features differ from its available ones: constraints match the active set",
                escape(node)
            ),
            fix,
        );
    }
    Finding::ok(
        CHECK,
        format!(
            "node {} publishes the {} hpcc features of its fingerprint",
            escape(node),
            want.len()
        ),
    )
}

/// The fingerprint saved for the submit hosts against this node's.
pub fn compare_saved(node: &str, saved: &NodeFingerprint, want: &BTreeSet<String>) -> Finding {
    let have: BTreeSet<String> = hpcc_common::node_features::of(saved).into_iter().collect();
    if &have == want {
        Finding::ok(
            CHECK,
            format!("the fleet's fingerprint of {} is current", escape(node)),
        )
    } else {
        Finding::fail(
            CHECK,
            format!(
                "the fleet's fingerprint of {} is stale: the submit filter scores images against another node",
                escape(node)
            ),
            format!("run {PUBLISH} on {}", escape(node)),
        )
    }
}

/// The check, on a real node only (it asks slurmctld).
pub fn check(layout: &Layout, policy: &Policy, out: &mut Vec<Finding>) {
    if layout.root != std::path::Path::new("/") {
        return;
    }
    if super::find_program(layout, "scontrol").is_none() || !layout.slurm_conf.exists() {
        out.push(Finding::skip(CHECK, "no Slurm client here"));
        return;
    }
    // As hpcc-node-features names the node.
    let node = std::env::var("HPCC_NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            hpcc_common::fingerprint::NodeFingerprint::cached(policy)
                .hostname
                .split('.')
                .next()
                .unwrap_or_default()
                .to_owned()
        });
    let mut cmd = Command::new("scontrol");
    cmd.args(["-o", "show", "node", &node])
        .env("SLURM_CONF", &layout.slurm_conf);
    let show = match super::super::schedule::bounded_output(cmd, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            out.push(Finding::skip(
                CHECK,
                format!(
                    "slurmctld does not know this host as node {} ({e}): not a compute node",
                    escape(&node)
                ),
            ));
            return;
        }
    };
    let fp = NodeFingerprint::cached(policy);
    let want: BTreeSet<String> = hpcc_common::node_features::of(&fp).into_iter().collect();
    out.push(compare(&node, &show, &want));
    let saved = policy.scheduling.fleet.join(format!("{node}.json"));
    if let Ok(text) = hpcc_common::io::read_text_bounded(&saved, 16 << 20) {
        match serde_json::from_str::<NodeFingerprint>(&text) {
            Ok(s) => out.push(compare_saved(&node, &s, &want)),
            Err(e) => out.push(Finding::fail(
                CHECK,
                format!("{} is not a fingerprint: {e}", saved.display()),
                format!("run {PUBLISH}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn want() -> BTreeSet<String> {
        ["hpcc.cpu.x86_64", "hpcc.cpu.x86_64_v2", "hpcc.glibc.2.36"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn published_features_are_compared_with_the_fingerprints() {
        let good = "NodeName=n2 Arch=x86_64 AvailableFeatures=site.old,hpcc.cpu.x86_64,hpcc.cpu.x86_64_v2,hpcc.glibc.2.36 ActiveFeatures=site.old,hpcc.cpu.x86_64,hpcc.cpu.x86_64_v2,hpcc.glibc.2.36 Gres=(null)";
        assert_eq!(compare("n2", good, &want()).status, Status::Ok);
        let old = "NodeName=n2 AvailableFeatures=hpcc.cpu.x86_64,hpcc.cpu.x86_64_v3,hpcc.glibc.2.36 ActiveFeatures=hpcc.cpu.x86_64,hpcc.cpu.x86_64_v3,hpcc.glibc.2.36";
        let f = compare("n2", old, &want());
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.message.contains("missing hpcc.cpu.x86_64_v2")
                && f.message.contains("not true any more hpcc.cpu.x86_64_v3"),
            "{}",
            f.message
        );
        let none = "NodeName=n2 AvailableFeatures=(null) ActiveFeatures=(null)";
        assert_eq!(compare("n2", none, &want()).status, Status::Warn);
        let inactive = "NodeName=n2 AvailableFeatures=hpcc.cpu.x86_64,hpcc.cpu.x86_64_v2,hpcc.glibc.2.36 ActiveFeatures=hpcc.cpu.x86_64";
        assert_eq!(compare("n2", inactive, &want()).status, Status::Fail);
    }
}
