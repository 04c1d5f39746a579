//! What the SPANK plugin (`hpcc_spank.so`) leaves for `hpcc-runtime` in the
//! same Slurm step (`/run/hpcc/slurm/<job>.<step>.json`, root-owned): its
//! decision (the plan, with the user's `--hpcc`/`--hpcc-mpi` choices
//! applied) and the policy it was taken under. The runtime decides again
//! under that policy on slurmstepd's root-owned copy of the config (the
//! plugin read the bundle of the job's `SLURM_CONTAINER`, which the user can
//! point elsewhere); the plan stays in the file for the admin's record.
//! Here, not in the plugin's crate, because the runtime builds without
//! Slurm.

use crate::plan::{MpiChoice, Plan, UserRequest};
use hpcc_config::Policy;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where the per-step files live (tmpfs, cleared at boot).
pub const DEFAULT_DIR: &str = "/run/hpcc/slurm";

/// Largest step file read.
const MAX_BYTES: u64 = 4 << 20;

/// The file of one step.
pub fn path(dir: &Path, job: u32, step: u32) -> PathBuf {
    dir.join(format!("{job}.{step}.json"))
}

/// One step's decision, as the plugin took it on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDecision {
    /// The admin's policy with the user's request applied.
    pub policy: Policy,
    /// The plan (a start: a refused step never reaches the runtime).
    pub plan: Plan,
}

/// The admin's policy with the user's request applied: every check at its
/// effective level (bounded by `users.may_relax_to`, see
/// [`Policy::effective`]), MPI replacement off when the user declined it.
/// `--hpcc-mpi=replace` needs nothing here: the plugin already refused the
/// step when replacement is impossible.
pub fn effective_policy(policy: &Policy, request: &UserRequest) -> Policy {
    let mut p = policy.clone();
    for level in [
        &mut p.checks.cpu,
        &mut p.checks.gpu,
        &mut p.checks.mpi,
        &mut p.checks.libc,
        &mut p.checks.kernel,
    ] {
        *level = policy.effective(*level, request.enforcement);
    }
    if request.mpi == MpiChoice::None {
        p.tweaks.mpi_replace = false;
    }
    p
}

/// Writes one step's decision atomically, root-owned, 0644 (the runtime
/// runs as the job user for non-root jobs and must read it). Not synced:
/// the same step reads it and removes it; after a crash there is no step.
pub fn write(dir: &Path, job: u32, step: u32, decision: &StepDecision) -> std::io::Result<PathBuf> {
    let body = serde_json::to_vec(decision).map_err(std::io::Error::other)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let target = path(dir, job, step);
    crate::io::write_atomic_unsynced(
        &target,
        &body,
        crate::io::FileMode {
            mode: 0o644,
            owner: None,
        },
    )?;
    Ok(target)
}

/// The decision of one step when its file can be trusted (see
/// [`trusted`]) and reads back; `None` otherwise (the runtime then decides
/// with the admin's policy: never looser than the plugin).
pub fn read(dir: &Path, job: u32, step: u32, owner: u32) -> Option<StepDecision> {
    let p = trusted(dir, job, step, owner)?;
    let bytes = crate::io::read_file_bounded(&p, MAX_BYTES).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes the file of one step (end of step). Missing is fine.
pub fn remove(dir: &Path, job: u32, step: u32) {
    let _ = std::fs::remove_file(path(dir, job, step));
}

/// The file of one step when it can be trusted: a regular file owned by
/// `owner` (root in production) that no one else may write, in a directory
/// with the same properties. Anything else could have been planted by a user.
pub fn trusted(dir: &Path, job: u32, step: u32, owner: u32) -> Option<PathBuf> {
    let ok = |p: &Path, want_dir: bool| {
        std::fs::symlink_metadata(p).is_ok_and(|m| {
            (if want_dir { m.is_dir() } else { m.is_file() })
                && m.uid() == owner
                && m.mode() & 0o022 == 0
        })
    };
    let p = path(dir, job, step);
    (ok(dir, true) && ok(&p, false)).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpcc_config::Enforcement;

    #[test]
    fn effective_policy_is_bounded_and_round_trips() {
        let admin = Policy::parse(hpcc_config::EXAMPLE, Path::new("hook.toml")).unwrap();
        let req = UserRequest {
            enforcement: Some(Enforcement::Off),
            mpi: MpiChoice::None,
        };
        let eff = effective_policy(&admin, &req);
        // may_relax_to = "warn" in the reference file: off becomes warn.
        assert_eq!(eff.checks.cpu, Enforcement::Warn);
        assert_eq!(eff.checks.libc, Enforcement::Warn);
        assert!(!eff.tweaks.mpi_replace);
        assert_eq!(eff.mpi, admin.mpi);

        let dir = std::env::temp_dir().join(format!("hpcc-handoff-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let decision = StepDecision {
            policy: eff.clone(),
            plan: Plan {
                container: "c".into(),
                node: "n1".into(),
                verdict: Default::default(),
                decision: crate::plan::Decision::Start { warnings: vec![] },
                tweaks: Default::default(),
                notes: vec![],
                slurm: None,
            },
        };
        let p = write(&dir, 7, 0, &decision).unwrap();
        // SAFETY: geteuid has no preconditions.
        let me0 = unsafe { libc::geteuid() };
        assert_eq!(read(&dir, 7, 0, me0), Some(decision));
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        assert_eq!(trusted(&dir, 7, 0, me), Some(p.clone()));
        assert_eq!(trusted(&dir, 7, 1, me), None);
        assert_eq!(trusted(&dir, 7, 0, me + 1), None);
        // A group-writable file is not trusted.
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o664)).unwrap();
        assert_eq!(trusted(&dir, 7, 0, me), None);
        remove(&dir, 7, 0);
        assert!(!p.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn enforce_wish_tightens_and_no_wish_keeps() {
        let admin = Policy::default();
        let same = effective_policy(&admin, &UserRequest::default());
        assert_eq!(same, admin);
        let strict = effective_policy(
            &admin,
            &UserRequest {
                enforcement: Some(Enforcement::Enforce),
                ..Default::default()
            },
        );
        assert_eq!(strict.checks.libc, Enforcement::Enforce);
    }
}
