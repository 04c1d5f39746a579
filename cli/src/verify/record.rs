//! `hpcc verify --record`: the result in the per-boot cache (the policy's
//! `cache.dir`, `/run/hpcc`, a tmpfs: gone at reboot), keyed by image digest
//! and plan digest, for `hpcc match` to show beside its prediction.
//!
//! - image digest: the manifest digest of an IMAGE; for a bundle, the
//!   SHA-256 of its annotations (as sorted JSON) and its absolute rootfs
//!   path, `bundle-sha256:...` (a bundle has no manifest);
//! - plan digest: the SHA-256 of the plan's decision and tweaks as JSON
//!   (what would be done at launch: another policy, another host MPI, a
//!   changed host library path gives another key);
//! - file: `<cache.dir>/verify/<image hex>.<plan hex>.json`, root-owned,
//!   mode 0644, with this boot's id: a file of another boot, or one anybody
//!   but root could have written, is ignored.

use super::report::Report;
use super::VerifyError;
use hpcc_common::oci::LaunchContext;
use hpcc_common::plan::Plan;
use hpcc_config::Policy;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of a bundle (no manifest): its annotations and its rootfs.
pub fn bundle_digest(ctx: &LaunchContext) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&ctx.annotations).unwrap_or_default());
    h.update(b"\0");
    h.update(ctx.rootfs.as_os_str().as_encoded_bytes());
    format!("bundle-sha256:{}", hex(&h.finalize()))
}

/// The key of a plan: its decision and its tweaks.
pub fn plan_digest(plan: &Plan) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&(plan.decision.allows_start(), &plan.tweaks)).unwrap_or_default());
    format!("sha256:{}", hex(&h.finalize()))
}

fn digest_hex(d: &str) -> String {
    // Only the hex part names the file: a digest from an image is text
    // from the image and must not choose a path.
    let tail = d.rsplit(':').next().unwrap_or_default();
    let clean: String = tail
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(128)
        .collect();
    if clean.is_empty() {
        hex(&Sha256::digest(d.as_bytes()))
    } else {
        clean
    }
}

/// Where the record of `image` under `plan` goes.
pub fn path(policy: &Policy, image: &str, plan: &str) -> PathBuf {
    policy
        .cache
        .dir
        .join("verify")
        .join(format!("{}.{}.json", digest_hex(image), digest_hex(plan)))
}

fn boot_id() -> Option<String> {
    hpcc_common::io::read_text_bounded(Path::new("/proc/sys/kernel/random/boot_id"), 128)
        .ok()
        .map(|s| s.trim().to_owned())
}

#[derive(Serialize, Deserialize)]
struct File {
    boot_id: String,
    report: Report,
}

/// Writes the record; root only (the cache is root's).
pub fn write(policy: &Policy, report: &Report) -> Result<PathBuf, VerifyError> {
    use std::os::unix::fs::DirBuilderExt;
    let p = path(policy, &report.image_digest, &report.plan_digest);
    let fail = |source| VerifyError::Io {
        what: format!("cannot record into {}", p.display()),
        source,
    };
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(fail(std::io::Error::other(
            "only root writes the per-boot cache",
        )));
    }
    let dir = p.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(fail)?;
    let body = serde_json::to_vec_pretty(&File {
        boot_id: boot_id().unwrap_or_default(),
        report: report.clone(),
    })
    .map_err(VerifyError::Json)?;
    hpcc_common::io::write_atomic(
        &p,
        &body,
        hpcc_common::io::FileMode {
            mode: 0o644,
            owner: None,
        },
    )
    .map_err(fail)?;
    Ok(p)
}

/// The record of `image` under `plan` from this boot, if any.
pub fn read(policy: &Policy, image: &str, plan: &str) -> Option<Report> {
    use std::os::unix::fs::MetadataExt;
    let p = path(policy, image, plan);
    let meta = std::fs::symlink_metadata(&p).ok()?;
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return None;
    }
    let text = hpcc_common::io::read_text_bounded(&p, 1 << 20).ok()?;
    let f: File = serde_json::from_str(&text).ok()?;
    (Some(&f.boot_id) == boot_id().as_ref()
        && f.report.image_digest == image
        && f.report.plan_digest == plan)
        .then_some(f.report)
}

/// The record for a bundle's launch plan (what `hpcc match --bundle` shows).
pub fn for_bundle(policy: &Policy, ctx: &LaunchContext, plan: &Plan) -> Option<Report> {
    read(policy, &bundle_digest(ctx), &plan_digest(plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_never_choose_a_path() {
        let mut p = Policy::default();
        p.cache.dir = "/run/hpcc".into();
        let f = path(&p, "sha256:../../etc/x", "sha256:abc");
        assert_eq!(f, Path::new("/run/hpcc/verify/ec.abc.json"));
        let f = path(&p, "../../", "sha256:0f");
        assert!(f.starts_with("/run/hpcc/verify/"));
        assert_eq!(f.components().count(), 5);
    }

    #[test]
    fn bundle_digest_follows_annotations_and_rootfs() {
        let mut a = LaunchContext::from_annotations("x", Default::default());
        a.rootfs = "/srv/a".into();
        let d1 = bundle_digest(&a);
        a.annotations.insert("k".into(), "v".into());
        let d2 = bundle_digest(&a);
        a.rootfs = "/srv/b".into();
        let d3 = bundle_digest(&a);
        assert!(d1.starts_with("bundle-sha256:"));
        assert!(d1 != d2 && d2 != d3 && d1 != d3);
    }
}
