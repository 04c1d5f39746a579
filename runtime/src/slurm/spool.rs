//! Where a Slurm step's files are, and which of them the runtime may
//! trust: slurm.conf's `SlurmdSpoolDir` and `TmpFS`, the spooled bundle
//! (`<SlurmdSpoolDir>/oci-job<J>-<S>/`, its `config.json` root's), and the
//! step's own directories. Reads only; nothing here is written.

use super::SlurmError;
use hpcc_common::oci;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A directory Slurm made for this step, to bind read-write: it must be
/// what its name says, under the directory it belongs to, and no symlink
/// may lead it elsewhere (a runtime running as root must never bind an
/// arbitrary host directory into a user's container).
pub(crate) fn step_dir(path: &Path, parent: &Path, name: &str) -> Option<PathBuf> {
    let real = std::fs::canonicalize(path).ok()?;
    let want = std::fs::canonicalize(parent).ok()?.join(name);
    (real == want && real.is_dir()).then_some(real)
}

/// The last value of a slurm.conf key (case-insensitive), as Slurm reads
/// it (the doctor reads it the same way: [`hpcc_common::slurm_conf`]).
pub fn conf_value(slurm_conf: &str, key: &str) -> Option<String> {
    hpcc_common::slurm_conf::SlurmConf::parse(slurm_conf)
        .get(key)
        .map(str::to_owned)
}

/// `SlurmdSpoolDir` from slurm.conf text (last one wins, `%n`/`%h` replaced
/// by the node name), Slurm's default otherwise.
pub fn spool_dir(slurm_conf: &str, node: &str) -> PathBuf {
    let dir =
        conf_value(slurm_conf, "SlurmdSpoolDir").unwrap_or_else(|| "/var/spool/slurmd".into());
    PathBuf::from(dir.replace("%n", node).replace("%h", node))
}

/// `TmpFS` from slurm.conf (`%n` replaced), `/tmp` otherwise.
pub fn tmpfs_dir(slurm_conf: &str, node: &str) -> PathBuf {
    let dir = conf_value(slurm_conf, "TmpFS").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(dir.replace("%n", node).replace("%h", node))
}

/// The step id of a spool directory name's step part: a number, or the
/// name slurmstepd uses for its special steps (their ids in `slurm.h`, as
/// `S_JOB_STEPID` gives them to the plugin).
fn step_id(s: &str) -> Option<u32> {
    match s {
        "batch" => Some(0xffff_fffb),
        "extern" => Some(0xffff_fffc),
        "interactive" => Some(0xffff_fffa),
        n => n.parse().ok(),
    }
}

/// Checks that `bundle` is `<spool>/oci-job<J>-<S>` and returns its
/// canonical path, job and step.
pub fn validate_bundle(bundle: &Path, spool: &Path) -> Result<(PathBuf, u32, u32), SlurmError> {
    let bad = |reason: String| SlurmError::Bundle {
        bundle: bundle.display().to_string(),
        reason,
    };
    let real = std::fs::canonicalize(bundle).map_err(|e| bad(format!("cannot resolve it: {e}")))?;
    let spool_real = std::fs::canonicalize(spool).map_err(|e| {
        bad(format!(
            "cannot resolve SlurmdSpoolDir {}: {e}",
            spool.display()
        ))
    })?;
    if real.parent() != Some(spool_real.as_path()) {
        return Err(bad(format!(
            "not a directory of SlurmdSpoolDir {} (only slurmstepd's spooled copies are edited)",
            spool_real.display()
        )));
    }
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ids = name
        .strip_prefix("oci-job")
        .and_then(|r| r.split_once('-'))
        .and_then(|(j, s)| Some((j.parse::<u32>().ok()?, step_id(s)?)));
    let Some((job, step)) = ids else {
        return Err(bad(format!("{name} is not named oci-job<JOB>-<STEP>")));
    };
    Ok((real, job, step))
}

/// Reads the spooled config; it must be a regular file that root wrote
/// (slurmstepd), since the spool directory itself belongs to the user.
pub fn read_spooled(bundle: &Path) -> Result<(Vec<u8>, std::fs::Metadata), SlurmError> {
    let path = bundle.join("config.json");
    let bad = |reason: String| SlurmError::Bundle {
        bundle: bundle.display().to_string(),
        reason,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| bad(format!("cannot open config.json: {e}")))?;
    let meta = f.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o002 != 0 {
        return Err(bad(
            "config.json is not a root-owned regular file: it was not written by slurmstepd".into(),
        ));
    }
    let buf = hpcc_common::io::read_bounded(f, oci::MAX_CONFIG_BYTES)
        .map_err(|e| bad(format!("config.json: {e}")))?;
    Ok((buf, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nix_is_root() -> bool {
        // SAFETY: no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn spool_dir_from_slurm_conf() {
        assert_eq!(
            spool_dir("# x\nSlurmdSpoolDir=/tmp/slurm/spool # c\n", "n1"),
            PathBuf::from("/tmp/slurm/spool")
        );
        assert_eq!(
            spool_dir("slurmdspooldir = /var/spool/%n\n", "n1"),
            PathBuf::from("/var/spool/n1")
        );
        assert_eq!(spool_dir("", "n1"), PathBuf::from("/var/spool/slurmd"));
    }

    #[test]
    fn only_spool_bundles_are_accepted() {
        let root = std::env::temp_dir().join(format!("hpcc-wrap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let spool = root.join("spool");
        std::fs::create_dir_all(spool.join("oci-job00012-00003")).unwrap();
        std::fs::create_dir_all(root.join("user/oci-job00012-00003")).unwrap();
        std::fs::create_dir_all(spool.join("other")).unwrap();
        std::os::unix::fs::symlink(
            root.join("user/oci-job00012-00003"),
            spool.join("oci-job00013-00000"),
        )
        .unwrap();
        let (_, j, s) = validate_bundle(&spool.join("oci-job00012-00003/"), &spool).unwrap();
        assert_eq!((j, s), (12, 3));
        std::fs::create_dir_all(spool.join("oci-job00012-batch")).unwrap();
        let (_, _, s) = validate_bundle(&spool.join("oci-job00012-batch"), &spool).unwrap();
        assert_eq!(s, 0xffff_fffb);
        assert!(validate_bundle(&root.join("user/oci-job00012-00003"), &spool).is_err());
        assert!(validate_bundle(&spool.join("other"), &spool).is_err());
        // A symlink in the spool that leads out of it is resolved and refused.
        assert!(validate_bundle(&spool.join("oci-job00013-00000"), &spool).is_err());
        assert!(validate_bundle(&spool.join("oci-job00012-00003/../other"), &spool).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// The spooled config must be a regular file root wrote (slurmstepd):
    /// the spool directory belongs to the job user, who could otherwise put
    /// a config of their own there. Root only (it chowns files); the
    /// workspace tests run as root in CI (tests/run.sh), so this asserts
    /// root instead of passing without having run.
    #[test]
    fn only_a_root_owned_spooled_config_is_read() {
        use std::os::unix::fs::PermissionsExt;
        assert!(
            nix_is_root(),
            "this test needs root (it makes files owned by root and by another user): run the workspace tests as root, as tests/run.sh and CI do"
        );
        let bundle = std::env::temp_dir().join(format!("hpcc-spooled-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&bundle);
        std::fs::create_dir_all(&bundle).unwrap();
        let cfg = bundle.join("config.json");
        let refused = |why: &str| {
            let e = read_spooled(&bundle).expect_err(why);
            assert!(e.to_string().contains(&bundle.display().to_string()), "{e}");
            e.to_string()
        };
        // Root's, 0644: read.
        std::fs::write(&cfg, r#"{"ociVersion":"1.0.2"}"#).unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (buf, meta) = read_spooled(&bundle).unwrap();
        assert_eq!(buf, br#"{"ociVersion":"1.0.2"}"#);
        assert_eq!(meta.uid(), 0);
        // The job user's (or anyone's but root's): refused.
        std::os::unix::fs::chown(&cfg, Some(65534), Some(65534)).unwrap();
        let e = refused("a config owned by uid 65534 was read");
        assert!(e.contains("not a root-owned regular file"), "{e}");
        // Root's but writable by anyone: refused.
        std::os::unix::fs::chown(&cfg, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = refused("a world-writable config was read");
        assert!(e.contains("not a root-owned regular file"), "{e}");
        // A symlink to root's file: not followed.
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&cfg, bundle.join("real.json")).unwrap();
        std::os::unix::fs::symlink(bundle.join("real.json"), &cfg).unwrap();
        let e = refused("a symlinked config was followed");
        assert!(e.contains("cannot open config.json"), "{e}");
        // A directory: refused.
        std::fs::remove_file(&cfg).unwrap();
        std::fs::create_dir(&cfg).unwrap();
        refused("a directory was read as config.json");
        std::fs::remove_dir_all(&bundle).unwrap();
    }

    #[test]
    fn a_step_dir_must_be_where_slurm_puts_it() {
        let root = std::env::temp_dir().join(format!("hpcc-stepdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("spool/pmix.7.0")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(root.join("etc"), root.join("spool/pmix.8.0")).unwrap();
        let spool = root.join("spool");
        assert!(step_dir(&spool.join("pmix.7.0/"), &spool, "pmix.7.0").is_some());
        // Another step's, a symlink out, or anything else: refused.
        assert!(step_dir(&spool.join("pmix.7.0"), &spool, "pmix.7.1").is_none());
        assert!(step_dir(&spool.join("pmix.8.0"), &spool, "pmix.8.0").is_none());
        assert!(step_dir(&root.join("etc"), &spool, "pmix.7.0").is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn slurm_conf_values() {
        let conf = "SlurmdSpoolDir=/s/%n\nTmpFS=/t/%n # tmp\n";
        assert_eq!(tmpfs_dir(conf, "n2"), PathBuf::from("/t/n2"));
        assert_eq!(tmpfs_dir("", "n2"), PathBuf::from("/tmp"));
        assert_eq!(spool_dir(conf, "n2"), PathBuf::from("/s/n2"));
    }
}
