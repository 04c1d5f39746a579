//! slurmstepd on the compute node (the remote context): the decision of a
//! `--container` step in `user_init`, its refusal in `task_init`, and the
//! step's handoff file removed at `exit`.

use crate::args::{PluginArgs, UserOptions};
use crate::creds::{EffectiveRoot, Identity};
use crate::slurm::{self, Level, Spank};
use crate::step;
use crate::State;
use hpcc_common::handoff;
use hpcc_common::launch::{Outcome, RefusedBy};
use std::path::Path;

/// `user_init`: decides the step when it has a container. Never fails the
/// callback itself: an error returned here is not shown to the srun user
/// (SchedMD bug 7573), so a refusal is kept for `task_init`.
pub fn user_init(spank: &Spank, state: &std::sync::Mutex<State>) {
    // Jobs without a container are none of our business.
    let Some(bundle) = spank.getenv("SLURM_CONTAINER").filter(|b| !b.is_empty()) else {
        return;
    };
    let (args, options) = {
        let st = crate::lock(state);
        (st.args.clone().unwrap_or_default(), st.options)
    };
    let Some(ids) = spank.job_ids() else {
        slurm::log(
            Level::Error,
            "hpcc: cannot read the job's ids and user from Slurm",
        );
        crate::lock(state).outcome = Some(Outcome::Refuse {
            line: hpcc_common::text::escape(&format!(
                "hpcc: refused to start container {bundle}: Slurm did not give the job's user"
            )),
            by: RefusedBy::Failure,
        });
        return;
    };
    // slurmstepd calls user_init with the job user as effective uid (root
    // stays real and saved uid). The decision needs root for the per-boot
    // fingerprint cache and the step's policy file under /run; the user's
    // bundle is read in a child that drops to the user.
    let _root = EffectiveRoot::take();
    let node = slurm_node_name(spank);
    decide(&bundle, &ids, &args, &options, node.as_deref(), state);
}

/// This node as Slurm names it: `SLURMD_NODENAME`, which slurmstepd sets
/// in its own environment (the job's has it too, per task). The lines name
/// it rather than the host name: several nodes may share one host name
/// (containers, virtual nodes) and the user knows the node by Slurm's name.
fn slurm_node_name(spank: &Spank) -> Option<String> {
    let ok = |n: &String| !n.is_empty() && n.len() <= 256 && !n.contains(['/', '\n', '\0']);
    std::env::var("SLURMD_NODENAME")
        .ok()
        .filter(ok)
        .or_else(|| spank.getenv("SLURMD_NODENAME").filter(ok))
}

fn decide(
    bundle: &str,
    ids: &slurm::JobIds,
    args: &PluginArgs,
    options: &UserOptions,
    node: Option<&str>,
    state: &std::sync::Mutex<State>,
) {
    if let Ok(p) = hpcc_config::Policy::load(&args.config) {
        // tracing goes to journald only: slurmstepd's stderr reaches the
        // srun user, who must see one line, and Slurm's log has the rest.
        if p.log.journald {
            hpcc_common::logging::init_journald_only("hpcc-spank", &p.log.level);
        }
        crate::lock(state).on_error_allow = p.on_error == hpcc_config::OnError::Allow;
    }
    let user = Identity {
        uid: ids.uid,
        gid: ids.gid,
        groups: ids.groups.clone(),
    };
    let decided = step::decide(&step::StepInput {
        bundle: Path::new(bundle),
        user: &user,
        policy_path: &args.config,
        request: options.request(args),
        node,
    });
    let summary = step::summary(&decided.outcome, decided.elapsed);
    let step_name = format!("StepId={}.{}", ids.job, ids.step);
    let ms = decided.elapsed.as_secs_f64() * 1e3;
    match &decided.outcome {
        Outcome::Start(plan) => {
            slurm::log(Level::Info, &summary);
            tracing::info!(step = %step_name, uid = ids.uid, bundle, score = plan.verdict.score().as_str(), ms, decision = "start", "{summary}");
            if let Some(effective) = &decided.effective {
                let dir = Path::new(handoff::DEFAULT_DIR);
                let decision = handoff::StepDecision {
                    policy: effective.clone(),
                    plan: (**plan).clone(),
                };
                match handoff::write(dir, ids.job, ids.step, &decision) {
                    Ok(_) => {
                        crate::lock(state).handoff = Some((dir.to_owned(), ids.job, ids.step))
                    }
                    // hpcc-runtime then decides itself with the admin's
                    // policy: stricter, never looser, than what was decided
                    // here.
                    Err(e) => slurm::log(
                        Level::Error,
                        &format!("hpcc: cannot write the step's decision under {}: {e}; hpcc-runtime will decide with {}", dir.display(), args.config.display()),
                    ),
                }
            }
        }
        Outcome::StartUnchecked(error) => {
            slurm::log(Level::Info, &summary);
            tracing::warn!(step = %step_name, uid = ids.uid, bundle, error = %error, decision = "start-unchecked", "{summary}");
        }
        Outcome::Refuse { line, .. } => {
            // Info, not error: slurmstepd forwards its errors to srun, and
            // task_init prints the line the user must see exactly once.
            slurm::log(Level::Info, &format!("{step_name} uid={}: {line}", ids.uid));
            tracing::error!(step = %step_name, uid = ids.uid, bundle, ms, decision = "refuse", "{line}");
        }
    }
    let mut st = crate::lock(state);
    st.outcome = Some(decided.outcome);
    st.step = Some((ids.job, ids.step));
}

/// The name a container step's task carries from its fork until it
/// executes the runtime (at most 15 bytes: the kernel's `comm`).
pub const STARTING_TASK_NAME: &str = "hpcc-starting";

/// How long slurmstepd waits, per task, for the task to take that name.
const RENAME_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// `task_init_privileged` (in each task, right after slurmstepd forked it):
/// a container step's task renames itself from `slurmstepd`.
///
/// Why: with proctrack/linuxproc, a cancel that reaches a node while its
/// tasks are forked but not yet executed is lost: that plugin never
/// signals a process named `slurmstepd`, to spare slurmstepd itself, and a
/// task keeps that name until its exec (proctrack/cgroup signals forked
/// tasks by parentage, and is not affected). When one node refuses a step,
/// srun cancels the others within milliseconds, often in exactly that
/// window: the container then started and its MPI rank waited in
/// `MPI_Init` for the refused node until srun gave up 32 s later (1 of 4
/// runs on the two-node rig). Renamed, the task is killed like any task,
/// and its container never starts. [`task_post_fork`] makes slurmstepd
/// wait for the rename before it releases the tasks.
pub fn task_init_privileged(state: &std::sync::Mutex<State>) {
    if crate::lock(state).outcome.is_none() {
        return;
    }
    let name = std::ffi::CString::new(STARTING_TASK_NAME).unwrap_or_default();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16
    // bytes from a pointer valid for the call; it only renames this
    // thread (the task's only one, just forked).
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        slurm::log(
            Level::Info,
            "hpcc: could not rename the starting task (a cancel before its exec may be lost)",
        );
    }
}

/// `task_post_fork` (in slurmstepd, once per task, before it releases the
/// tasks and marks the step running, which is what a cancel waits for):
/// waits, at most [`RENAME_WAIT`], until the task has taken its new name
/// or has ended. Without the wait a slow task could still be called
/// `slurmstepd` when the cancel comes.
pub fn task_post_fork(spank: &Spank, state: &std::sync::Mutex<State>) {
    if crate::lock(state).outcome.is_none() {
        return;
    }
    let Some(pid) = spank.task_pid() else {
        return;
    };
    let deadline = std::time::Instant::now() + RENAME_WAIT;
    loop {
        match task_name(pid) {
            // Gone, or a zombie: nothing left to signal.
            None => return,
            Some(n) if n == STARTING_TASK_NAME => return,
            Some(_) if std::time::Instant::now() >= deadline => {
                slurm::log(
                    Level::Info,
                    &format!(
                        "hpcc: task {pid} did not take its name within {} ms (a cancel before its exec may be lost)",
                        RENAME_WAIT.as_millis()
                    ),
                );
                return;
            }
            Some(_) => std::thread::sleep(std::time::Duration::from_micros(200)),
        }
    }
}

/// The `comm` of a live process (`None` when it is gone or a zombie).
fn task_name(pid: libc::pid_t) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let state = stat.get(close + 1..)?.split_whitespace().next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    Some(stat.get(open + 1..close)?.to_owned())
}

/// `task_init` (in each task, as the user, before the container runtime
/// is executed). A refused step: the line, where srun shows it, then the
/// whole step ended on every node (`slurm_kill_job_step`), so that the
/// ranks of the healthy nodes do not wait in `MPI_Init` for this one until
/// a timeout, whatever `KillOnBadExit` is. Returns the line; `None`: go on.
///
/// A started step: the per-task PMI variables that slurmstepd set for this
/// task (`PMI_*`, `PMIX_*`, `SLURM_PROCID`, `SLURM_LOCALID`) are copied
/// into this process's environment, which slurmstepd passes to the
/// runtime: `hpcc-runtime` puts them in the container (a `--container`
/// step's `process.env` lacks them).
pub fn task_init(spank: &Spank, state: &std::sync::Mutex<State>) -> Option<String> {
    let (refusal, step, container) = {
        let st = crate::lock(state);
        (
            st.outcome
                .as_ref()
                .and_then(|o| o.refusal().map(str::to_owned)),
            st.step,
            st.outcome.is_some(),
        )
    };
    if let Some(line) = refusal {
        slurm::log(Level::Error, &line);
        if let Some((job, step)) = step {
            if !slurm::kill_job_step(job, step) {
                slurm::log(
                    Level::Info,
                    "hpcc: could not end the step on the other nodes (slurm_kill_job_step unavailable)",
                );
            }
        }
        return Some(line);
    }
    if container {
        pass_pmi_env(spank);
    }
    None
}

/// The per-task MPI variables, from the task's environment into this
/// process's (only these names: nothing else of the job's environment).
fn pass_pmi_env(spank: &Spank) {
    for kv in spank.job_env(4096) {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        let wanted = k.starts_with("PMIX_")
            || matches!(
                k,
                "PMI_FD" | "PMI_RANK" | "PMI_SIZE" | "PMI_JOBID" | "SLURM_PROCID" | "SLURM_LOCALID"
            );
        if wanted && !v.contains('\0') {
            // The task process has one thread (slurmstepd forked it) and
            // execs the runtime next: nothing reads the environment
            // concurrently.
            std::env::set_var(k, v);
        }
    }
}

/// `exit`: removes the step's handoff file.
pub fn exit(state: &std::sync::Mutex<State>) {
    if let Some((dir, job, step)) = crate::lock(state).handoff.take() {
        handoff::remove(&dir, job, step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_name_is_read_from_proc_and_a_gone_task_has_none() {
        let me = task_name(std::process::id() as libc::pid_t).unwrap();
        assert!(!me.is_empty() && me.len() <= 15, "{me:?}");
        // A child that renames itself, as a task does, is seen renamed;
        // once reaped it has no name.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "printf hpcc-starting > /proc/self/comm; sleep 5"])
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while task_name(pid).as_deref() != Some(STARTING_TASK_NAME) {
            assert!(std::time::Instant::now() < deadline, "{:?}", task_name(pid));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.kill().unwrap();
        // A zombie counts as gone.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(task_name(pid), None);
        child.wait().unwrap();
        assert_eq!(task_name(pid), None);
    }
}
