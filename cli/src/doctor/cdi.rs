//! hpcc's CDI specs (`hpcc cdi generate`): present and what the policy
//! and the host libraries make now, in `/var/run/cdi` (or `/etc/cdi` when
//! the admin put them there). `--fix` writes them again.

use super::{Finding, Layout};
use hpcc_common::cdi_offer;
use std::path::PathBuf;

/// The CDI directories, in the order engines give them priority last.
const DIRS: [&str; 2] = ["/etc/cdi", cdi_offer::DEFAULT_OUTPUT_DIR];

/// Checks (and with `layout.fix`, regenerates) the specs.
pub fn check(layout: &Layout, findings: &mut Vec<Finding>) {
    let specs = match crate::cdi::plan(&layout.policy, &layout.hook) {
        Ok((s, _)) => s,
        Err(e) => {
            findings.push(Finding::fail(
                "cdi",
                format!("hpcc's CDI specs cannot be generated: {e}"),
                "fix the policy or the host libraries it names, then run hpcc cdi generate",
            ));
            return;
        }
    };
    // Where they are: the directory that holds one of hpcc's specs, else
    // the default one.
    let dir = DIRS
        .iter()
        .rev()
        .map(|d| layout.at(d))
        .find(|d| {
            cdi_offer::CLASSES.iter().any(|c| {
                d.join(cdi_offer::file_name(&format!("{}/{c}", cdi_offer::VENDOR)))
                    .exists()
            })
        })
        .unwrap_or_else(|| layout.at(cdi_offer::DEFAULT_OUTPUT_DIR));
    if specs.is_empty() {
        findings.push(Finding::skip(
            "cdi",
            "the policy offers no host MPI, libfabric or UCX: no CDI spec to write",
        ));
        return;
    }
    let stale: Vec<PathBuf> = specs
        .iter()
        .map(|s| {
            (
                dir.join(cdi_offer::file_name(&s.kind)),
                cdi_offer::render(s),
            )
        })
        .filter(|(p, bytes)| std::fs::read(p).ok().as_ref() != Some(bytes))
        .map(|(p, _)| p)
        .collect();
    if stale.is_empty() {
        findings.push(Finding::ok(
            "cdi",
            format!(
                "hpcc's CDI specs in {} are current ({})",
                dir.display(),
                specs
                    .iter()
                    .map(|s| s.kind.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
        return;
    }
    let which = stale
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if layout.fix {
        match cdi_offer::write_specs(&dir, &specs) {
            Ok(files) => findings.push(Finding::ok(
                "cdi",
                format!(
                    "hpcc's CDI specs regenerated (--fix): {}",
                    files
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            Err(e) => findings.push(Finding::fail(
                "cdi",
                format!("hpcc's CDI specs cannot be written: {e}"),
                "run hpcc cdi generate as root",
            )),
        }
    } else {
        findings.push(Finding::warn(
            "cdi",
            format!("hpcc's CDI specs are missing or older than the policy and the host libraries: {which}"),
            "hpcc doctor --fix (or hpcc cdi generate); hpcc-cdi-refresh.service does it at boot",
        ));
    }
}
