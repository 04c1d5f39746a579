//! The Slurm mode of `hpcc-runtime` (oci.conf `RunTimeRun`, with
//! `--hpcc-slurm`).
//!
//! Slurm has no admin hooks directory: slurmstepd copies the user's
//! `config.json` into its spool (`<SlurmdSpoolDir>/oci-job<J>-<S>/`) and runs
//! the runtime on that copy, as the job user for non-root jobs (rootless
//! runc). Here, in that order:
//! 1. the bundle must be such a spool directory, and its `config.json` must
//!    be root's (slurmstepd's), not the user's;
//! 2. the step is decided on that copy, under the policy `hpcc_spank.so`
//!    left in its root-owned step file (the user's `--hpcc` choices within
//!    the admin's bounds), else the admin's policy (a node without the
//!    plugin). Not the plugin's plan itself: the plugin read the bundle the
//!    job's `SLURM_CONTAINER` names, which the user controls;
//! 3. a refusal prints its line, then ends the whole step (`scancel`), so
//!    the ranks on the healthy nodes do not wait in `MPI_Init` for a peer
//!    that never comes;
//! 4. the plan is written into the spooled config, and an MPI step is
//!    wired: its facts gathered ([`mpi`]: PMI-2's socket, to become fd 3,
//!    and rank, or PMIx's variables and directories), planned by the core
//!    (`hpcc_common::slurm`: `PMI_*`/`PMIX_*`, the mounts, the node's
//!    network and IPC namespaces under policy `[slurm] mpi_node_namespaces`)
//!    into the plan's `slurm` section, and applied with the plan
//!    (`hpcc_common::apply::spec::edit_slurm`);
//! 5. the real runtime is executed.
//!
//! [`spool`] finds and checks the step's files; nothing in this mode
//! decides what the container gets.

pub mod mpi;
pub mod spool;

use crate::args::{Args, Launch};
use crate::bundle::Config;
use crate::{gpu_probe, refuse, runtime_path, write_plan, Next};
use hpcc_common::apply::spec;
use hpcc_common::handoff;
use hpcc_common::launch::{self, LaunchError, Outcome};
use hpcc_common::oci::{self, LaunchContext};
use hpcc_common::plan::UserRequest;
use hpcc_config::Policy;
use spool::{read_spooled, spool_dir, validate_bundle};
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where Slurm's configuration lives unless slurmstepd says otherwise.
pub const SLURM_CONF: &str = "/etc/slurm/slurm.conf";
/// How long `scancel` may take.
const SCANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the Slurm mode refuses to go on.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// The bundle is not a Slurm spool directory or its config is not
    /// slurmstepd's.
    #[error("hpcc-runtime: refusing bundle {bundle}: {reason}")]
    Bundle {
        /// The bundle argument.
        bundle: String,
        /// What is wrong.
        reason: String,
    },
    /// An MPI step cannot be wired.
    #[error("the MPI step cannot be wired into the container: {0}")]
    Mpi(#[from] mpi::MpiError),
    /// The wiring does not fit the spooled config.
    #[error("the MPI step cannot be wired into the container: {0}")]
    Spec(#[from] spec::SpecError),
}

/// The runtime's own environment (slurmstepd's, with what the plugin set
/// in `task_init`): never the user's job environment.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A configuration file root owns and only root may write.
fn roots(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.uid() == 0 && m.mode() & 0o022 == 0)
}

/// slurm.conf's path: `SLURM_CONF` (slurmstepd passes it) when root owns
/// that file, else the default path.
fn slurm_conf_path() -> PathBuf {
    env("SLURM_CONF")
        .map(PathBuf::from)
        .filter(|p| roots(p))
        .unwrap_or_else(|| PathBuf::from(SLURM_CONF))
}

/// slurm.conf (its `Include`s in place, as slurmd reads them).
fn slurm_conf() -> String {
    hpcc_common::slurm_conf::read(&slurm_conf_path(), hpcc_common::slurm_conf::MAX_BYTES)
        .unwrap_or_default()
}

/// Whether Slurm numbers this step's GPUs from 0 in `CUDA_VISIBLE_DEVICES`:
/// cgroup.conf, beside slurm.conf as Slurm looks for it, root's only.
fn gpus_renumbered(conf: &str) -> bool {
    let cgroup = slurm_conf_path().with_file_name("cgroup.conf");
    let text = if roots(&cgroup) {
        hpcc_common::slurm_conf::read(&cgroup, hpcc_common::slurm_conf::MAX_BYTES)
            .unwrap_or_default()
    } else {
        String::new()
    };
    hpcc_common::slurm_conf::gpus_renumbered(conf, &text)
}

/// This node's Slurm name: `--hpcc-node=%n`, `SLURMD_NODENAME`, else the
/// host name (several nodes may share one host name: prefer the first two).
fn node_name(args: &Args) -> String {
    args.options
        .node
        .clone()
        .or_else(|| env("SLURMD_NODENAME").filter(|n| !n.contains('/')))
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default()
        })
}

/// The Slurm mode's launch.
pub fn prepare(args: &Args, l: &Launch, policy_path: &Path) -> Next {
    let conf = slurm_conf();
    let node = node_name(args);
    let spool = args
        .options
        .spool
        .clone()
        .unwrap_or_else(|| spool_dir(&conf, &node));
    let (bundle, job, step) = match validate_bundle(&l.bundle, &spool) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return Next::Exit(launch::exit::ERROR);
        }
    };
    let (config, meta) = match read_spooled(&bundle) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return Next::Exit(launch::exit::ERROR);
        }
    };
    let state = args
        .options
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(handoff::DEFAULT_DIR));
    let step_file = handoff::read(&state, job, step, 0);
    let policy = match &step_file {
        Some(d) => d.policy.clone(),
        None => match launch::load_policy(policy_path, Some(&l.id)) {
            Ok(p) => p,
            Err(refused) => return refused_step(args, &refused, job, step),
        },
    };
    hpcc_common::logging::init("hpcc-runtime", &policy.log);
    let config = Config {
        path: bundle.join("config.json"),
        bytes: config,
        meta,
    };
    let spec = match oci::read_config(&config.bytes[..], "the spooled config.json") {
        Ok(s) => s,
        Err(e) => {
            let input = launch::RunInput {
                policy: &policy,
                policy_path,
                id: Some(&l.id),
                node: Some(&node),
                planned: Err(e.into()),
            };
            // A config that is no OCI config is not wired either.
            let (o, _) = launch::run(input, &mut |_: &mut Outcome| Ok(()));
            return after_decision(args, l, &policy, o, None, job, step);
        }
    };
    let mut ctx = LaunchContext::from_bundle(&bundle, &spec);
    // The spooled config's process.env is the step's: slurmstepd replaced
    // the bundle's (and the image's) with it, so its GPU list is the job's.
    ctx.env_from_scheduler = true;
    // Which of the step's GPU variables name the node's devices
    // (hpcc_common::tweaks::gpu::slurm_gpus).
    ctx.slurm_constrain_devices = gpus_renumbered(&conf);
    // The runtime runs as the job user for non-root jobs (rootless runc).
    // SAFETY: geteuid has no preconditions.
    ctx.rootless = unsafe { libc::geteuid() } != 0;
    let decided_by = if step_file.is_some() {
        "hpcc_spank.so"
    } else {
        "hpcc-runtime"
    };
    // Decided again here, on slurmstepd's root-owned copy, even when the
    // plugin left its decision: the plugin read the bundle that the job's
    // SLURM_CONTAINER names, which the user can set apart from --container
    // (srun keeps an existing SLURM_CONTAINER) or swap before slurmstepd
    // copies it. The step file gives only the policy the plugin decided
    // under (the user's --hpcc/--hpcc-mpi within the admin's bounds).
    if step_file.is_some() {
        tracing::info!(container = %l.id, "deciding under the step policy hpcc_spank.so left for this step");
    }
    // A step's tasks start at once: on a cold cache one fills it while
    // the others wait (held until this function has written the config).
    let (fp, _fill) = launch::coldfill::fingerprint(&policy, &gpu_probe(&policy));
    // The line names the node as Slurm does (several nodes may share a
    // host name).
    let image = launch::LaunchImage::new(&ctx.rootfs);
    let planned =
        launch::decide_in(&ctx, &fp, &policy, &UserRequest::default(), &image).map(|mut plan| {
            plan.node = node.clone();
            plan
        });
    let input = launch::RunInput {
        policy: &policy,
        policy_path,
        id: Some(&l.id),
        node: Some(&node),
        planned,
    };
    let step_ids = Step {
        conf: &conf,
        node: &node,
        spool: &spool,
        job,
        step,
    };
    // The step's wiring goes into the plan (and so into its log line)
    // before anything is written; a start unchecked gets it too.
    let mut edit = |outcome: &mut Outcome| -> Result<Option<RawFd>, LaunchError> {
        let mut v = config.json().map_err(LaunchError::input)?;
        let wired = mpi::wire(&v, &policy, &step_ids)
            .map_err(|e| LaunchError::input(SlurmError::from(e)))?;
        if let Outcome::Start(plan) = outcome {
            plan.slurm.clone_from(&wired.wiring);
            write_plan(&mut v, plan, &image, &policy, decided_by)?;
        }
        if let Some(w) = &wired.wiring {
            let edits =
                spec::edit_slurm(&mut v, w).map_err(|e| LaunchError::input(SlurmError::from(e)))?;
            for e in edits {
                tracing::info!(what = %e.what, "MPI step: {}", e.why);
            }
        }
        config.write(&v).map_err(LaunchError::input)?;
        Ok(wired.pmi_fd)
    };
    let (outcome, fd) = launch::run(input, &mut edit);
    after_decision(args, l, &policy, outcome, fd.flatten(), job, step)
}

/// Says what to do with an outcome [`launch::run`] logged: the refusal
/// ends the step, a start executes the runtime (with the PMI-2 socket).
#[allow(clippy::too_many_arguments)]
fn after_decision(
    args: &Args,
    l: &Launch,
    policy: &Policy,
    outcome: Outcome,
    pmi_fd: Option<RawFd>,
    job: u32,
    step: u32,
) -> Next {
    match outcome {
        Outcome::Refuse { .. } => refused_step(args, &outcome, job, step),
        _ => Next::Exec {
            runtime: runtime_path(args, policy),
            args: match pmi_fd {
                Some(_) => args.with_preserved_fds(l, 1),
                None => args.runtime.clone(),
            },
            pmi_fd,
        },
    }
}

/// Prints the refusal, then ends the whole step: the ranks of the other
/// nodes would otherwise wait in `MPI_Init` for this one until a timeout
/// (Slurm's default `KillOnBadExit=0` leaves them running). The line goes
/// out first: a step killed before it is printed loses it.
fn refused_step(args: &Args, outcome: &Outcome, job: u32, step: u32) -> Next {
    let next = refuse(args, outcome);
    kill_step(job, step);
    next
}

/// `scancel --signal=KILL J.S`, bounded in time.
fn kill_step(job: u32, step: u32) {
    let Some(scancel) = ["/usr/bin/scancel", "/usr/local/bin/scancel"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        tracing::warn!("scancel not found: the step's other tasks end at their own pace");
        return;
    };
    let mut cmd = std::process::Command::new(scancel);
    cmd.arg("--signal=KILL")
        .arg(format!("{job}.{step}"))
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(c) = env("SLURM_CONF") {
        cmd.env("SLURM_CONF", c);
    }
    let Ok(mut child) = cmd.spawn() else {
        return;
    };
    let deadline = std::time::Instant::now() + SCANCEL_TIMEOUT;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What identifies one step on one node.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// slurm.conf's text.
    pub conf: &'a str,
    /// This node's Slurm name.
    pub node: &'a str,
    /// SlurmdSpoolDir.
    pub spool: &'a Path,
    /// Job id.
    pub job: u32,
    /// Step id.
    pub step: u32,
}
