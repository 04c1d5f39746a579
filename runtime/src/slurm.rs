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
//!    wired ([`wire_mpi`]): PMI-2's socket passed as fd 3 with `PMI_*`, or
//!    PMIx's variables and directories, and the node's network and IPC
//!    namespaces shared (policy `[slurm] mpi_node_namespaces`);
//! 5. the real runtime is executed.

use crate::args::{Args, Launch};
use crate::bundle::Config;
use crate::{pmi, refuse, runtime_path, write_plan, Next};
use hpcc_common::apply::namespaces;
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::handoff;
use hpcc_common::launch::{self, LaunchError, Outcome};
use hpcc_common::oci::{self, LaunchContext};
use hpcc_common::plan::{EnvVar, Mount, Tweaks, UserRequest};
use hpcc_config::Policy;
use serde_json::Value;
use std::os::fd::RawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
    Mpi(String),
    /// The PMI rank could not be computed.
    #[error(transparent)]
    Pmi(#[from] pmi::PmiError),
}

/// The runtime's own environment (slurmstepd's, with what the plugin set
/// in `task_init`): never the user's job environment.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// slurm.conf (its `Include`s in place, as slurmd reads them):
/// `SLURM_CONF` (slurmstepd passes it) when root owns that file, else the
/// default path.
fn slurm_conf() -> String {
    let path = env("SLURM_CONF")
        .map(PathBuf::from)
        .filter(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.uid() == 0 && m.mode() & 0o022 == 0)
        })
        .unwrap_or_else(|| PathBuf::from(SLURM_CONF));
    hpcc_common::slurm_conf::read(&path, hpcc_common::slurm_conf::MAX_BYTES).unwrap_or_default()
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
            let o = launch::failed(&policy, policy_path, Some(&l.id), Some(&node), e.into());
            return after_decision(args, l, &policy, o, None, job, step);
        }
    };
    let mut ctx = LaunchContext::from_bundle(&bundle, &spec);
    // The spooled config's process.env is the step's: slurmstepd replaced
    // the bundle's (and the image's) with it, so its GPU list is the job's.
    ctx.env_from_scheduler = true;
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
    let fp = NodeFingerprint::cached(&policy);
    // The line names the node as Slurm does (several nodes may share a
    // host name).
    let image = launch::LaunchImage::new(&ctx.rootfs);
    let planned =
        launch::decide_in(&ctx, &fp, &policy, &UserRequest::default(), &image).map(|mut plan| {
            plan.node = node.clone();
            plan
        });
    let outcome = launch::outcome(&policy, policy_path, Some(&l.id), Some(&node), planned);
    let edit = |outcome: &Outcome| -> Result<Option<RawFd>, LaunchError> {
        let mut v = config.json().map_err(LaunchError::input)?;
        if let Outcome::Start(plan) = outcome {
            write_plan(&mut v, plan, &image, &policy, decided_by)?;
        }
        let fd = wire_mpi(
            &mut v,
            &policy,
            &Step {
                conf: &conf,
                node: &node,
                spool: &spool,
                job,
                step,
            },
        )
        .map_err(LaunchError::input)?;
        config.write(&v).map_err(LaunchError::input)?;
        Ok(fd)
    };
    let (outcome, fd) = match &outcome {
        Outcome::Refuse { .. } => (outcome, None),
        _ => match edit(&outcome) {
            Ok(fd) => (outcome, fd),
            Err(e) => (
                launch::failed(&policy, policy_path, Some(&l.id), Some(&node), e),
                None,
            ),
        },
    };
    after_decision(args, l, &policy, outcome, fd, job, step)
}

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
    launch::log(&outcome, &l.id);
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

/// A variable of the container's `process.env` (the step's environment).
fn step_var(config: &Value, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    config["process"]["env"]
        .as_array()?
        .iter()
        .rev()
        .find_map(|e| e.as_str()?.strip_prefix(&prefix).map(str::to_owned))
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

/// A directory Slurm made for this step, to bind read-write: it must be
/// what its name says, under the directory it belongs to, and no symlink
/// may lead it elsewhere (a runtime running as root must never bind an
/// arbitrary host directory into a user's container).
fn step_dir(path: &Path, parent: &Path, name: &str) -> Option<PathBuf> {
    let real = std::fs::canonicalize(path).ok()?;
    let want = std::fs::canonicalize(parent).ok()?.join(name);
    (real == want && real.is_dir()).then_some(real)
}

/// Wires an MPI step into the container (tests/setup/MPI-RIG.md): the PMI
/// variables, the PMI-2 socket (returned, to become fd 3), PMIx's
/// directories, and the node's network and IPC namespaces. Steps without
/// `--mpi` (or `--mpi=none`) are left alone.
pub fn wire_mpi(
    config: &mut Value,
    policy: &Policy,
    s: &Step<'_>,
) -> Result<Option<RawFd>, SlurmError> {
    let (node, job, step) = (s.node, s.job, s.step);
    let mpi = step_var(config, "SLURM_MPI_TYPE").or_else(|| env("SLURM_MPI_TYPE"));
    let mut tw = Tweaks::default();
    let mut fd = None;
    let var = |name: &str, value: String, tw: &mut Tweaks| {
        tw.env.push(EnvVar {
            name: name.into(),
            value,
            reason: "Slurm MPI step".into(),
        })
    };
    match mpi.as_deref() {
        Some(t) if t.starts_with("pmi2") => {
            let ntasks = step_var(config, "SLURM_NTASKS")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| SlurmError::Mpi("SLURM_NTASKS is missing from the step".into()))?;
            let rank = match env("PMI_RANK").and_then(|r| r.parse::<usize>().ok()) {
                Some(r) => r,
                None => {
                    let list = step_var(config, "SLURM_STEP_NODELIST").unwrap_or_default();
                    let map = step_var(config, "SLURM_PMI2_PROC_MAPPING").unwrap_or_default();
                    pmi::pmi2_rank(node, &list, &map, ntasks)?
                }
            };
            fd = Some(pmi2_socket()?);
            var("PMI_FD", "3".into(), &mut tw);
            var("PMI_RANK", rank.to_string(), &mut tw);
            var(
                "PMI_SIZE",
                env("PMI_SIZE").unwrap_or_else(|| ntasks.to_string()),
                &mut tw,
            );
            var(
                "PMI_JOBID",
                env("PMI_JOBID").unwrap_or_else(|| format!("{job}.{step}")),
                &mut tw,
            );
            var("SLURM_PROCID", rank.to_string(), &mut tw);
        }
        Some(t) if t.starts_with("pmix") => {
            let pmix: Vec<(String, String)> = std::env::vars()
                .filter(|(k, _)| k.starts_with("PMIX_"))
                .take(256)
                .collect();
            if !pmix.iter().any(|(k, _)| k == "PMIX_RANK") {
                return Err(SlurmError::Mpi(
                    "the task's PMIX_* variables were not given: load hpcc_spank.so as `required` in plugstack.conf (it passes them in task_init)".into(),
                ));
            }
            for (k, v) in &pmix {
                var(k, v.clone(), &mut tw);
                if k == "PMIX_RANK" {
                    var("SLURM_PROCID", v.clone(), &mut tw);
                }
            }
            // The PMIx server's directory (in the spool) and Open MPI's
            // session directory (in TmpFS), read-write at the same paths.
            let uid = unsafe_uid();
            let tmpfs = tmpfs_dir(s.conf, node);
            let dirs = [
                env("PMIX_SERVER_TMPDIR")
                    .and_then(|d| step_dir(Path::new(&d), s.spool, &format!("pmix.{job}.{step}"))),
                step_dir(
                    &tmpfs.join(format!("spmix_appdir_{uid}_{job}.{step}")),
                    &tmpfs,
                    &format!("spmix_appdir_{uid}_{job}.{step}"),
                ),
            ];
            for d in dirs.into_iter().flatten() {
                {
                    tw.mounts.push(Mount {
                        source: d.clone(),
                        destination: d,
                        readonly: false,
                        reason: "PMIx".into(),
                    });
                }
            }
            if let Some(m) = pmix_munge_mount(config, env("PMIX_SECURITY_MODE").as_deref()) {
                tw.mounts.push(m);
            }
        }
        _ => return Ok(None),
    }
    var("SLURMD_NODENAME", node.into(), &mut tw);
    if policy.slurm.mpi_node_namespaces {
        share_node_namespaces(config);
        tw.mounts.push(Mount {
            source: "/dev/shm".into(),
            destination: "/dev/shm".into(),
            readonly: false,
            reason: "the node's shared memory, for MPI".into(),
        });
    }
    hpcc_common::apply::spec::edit(config, &tw, None)
        .map_err(|e| SlurmError::Mpi(e.to_string()))?;
    Ok(fd)
}

/// Where munged listens on a Debian/RHEL node (`/var/run` is `/run`).
const MUNGE_DIRS: &[&str] = &["/run/munge", "/var/run/munge"];

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
fn pmix_munge_mount(config: &Value, security_mode: Option<&str>) -> Option<Mount> {
    let userns = config["linux"]["namespaces"]
        .as_array()
        .is_some_and(|a| a.iter().any(|n| n["type"] == "user"));
    if !userns || !security_mode.is_some_and(|m| m.split(',').any(|x| x.trim() == "munge")) {
        return None;
    }
    let dir = munge_dir(MUNGE_DIRS);
    if dir.is_none() {
        tracing::warn!("PMIx step in a user namespace and no munged socket in /run/munge: Slurm's PMIx server may refuse the ranks (the uid they see is not the job's)");
    }
    dir.map(|d| Mount {
        source: d.clone(),
        destination: d,
        readonly: true,
        reason: "munged's socket: PMIx security for a rank in a user namespace".into(),
    })
}

/// The first of `dirs` (canonical) that holds munged's socket.
fn munge_dir(dirs: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    dirs.iter().find_map(|d| {
        let d = std::fs::canonicalize(d).ok()?;
        let sock = std::fs::symlink_metadata(d.join("munge.socket.2")).ok()?;
        sock.file_type().is_socket().then_some(d)
    })
}

fn unsafe_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The container joins the node's network, IPC and PID namespaces: the
/// interconnect, the PMI server on the node's loopback, shared memory and
/// cross-memory attach between the ranks of a node (UCX's CMA transport
/// needs the peers in one PID namespace) must be reachable, as with
/// Pyxis/enroot and Apptainer; a rank that hangs then also gets the
/// signals of a cancelled step (as pid 1 of its own namespace it ignores
/// SIGTERM). A rootless container keeps its PID namespace (in a user
/// namespace it could not mount /proc without one), and its mounts of the
/// node's IPC and network filesystems become binds of the node's
/// (`hpcc_common::apply::namespaces`: rootless runc cannot mount a new
/// mqueue or sysfs there). Every change is logged with its reason.
fn share_node_namespaces(config: &mut Value) {
    for e in namespaces::share_node_namespaces(config, namespaces::Node::this()) {
        tracing::info!(what = %e.what, "MPI step: {}", e.why);
    }
}

/// The PMI-2 socket slurmstepd left open: `PMI_FD` when the plugin gave
/// it, else the only socket among the fds above 2.
fn pmi2_socket() -> Result<RawFd, SlurmError> {
    let is_socket = |fd: RawFd| {
        // SAFETY: fstat on an integer fd with a zeroed stat buffer; an fd
        // that is not open just fails.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        (unsafe { libc::fstat(fd, &mut st) } == 0) && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    };
    if let Some(fd) = env("PMI_FD").and_then(|v| v.parse::<RawFd>().ok()) {
        if fd > 2 && is_socket(fd) {
            return Ok(fd);
        }
    }
    let socks: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| SlurmError::Mpi(format!("cannot list /proc/self/fd: {e}")))?
        .flatten()
        .take(4096)
        .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&fd| fd > 2 && is_socket(fd))
        .collect();
    match socks[..] {
        [fd] => Ok(fd),
        [] => Err(SlurmError::Mpi(
            "no PMI-2 socket was given to the runtime (is the step started with --mpi=pmi2?)"
                .into(),
        )),
        _ => Err(SlurmError::Mpi(format!(
            "{} sockets are open and PMI_FD does not say which is PMI-2's",
            socks.len()
        ))),
    }
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
    use serde_json::json;

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

    fn step() -> Step<'static> {
        Step {
            conf: "",
            node: "n1",
            spool: Path::new("/nonexistent-spool"),
            job: 1,
            step: 0,
        }
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
    fn steps_without_mpi_are_left_alone_and_namespaces_are_shared_for_mpi() {
        let mut c = json!({"process": {"env": ["SLURM_MPI_TYPE=none"]}, "linux": {"namespaces": [{"type": "network"}, {"type": "mount"}]}});
        let before = c.clone();
        assert_eq!(wire_mpi(&mut c, &Policy::default(), &step()).unwrap(), None);
        assert_eq!(c, before);
        let mut c = json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "mount"}]}});
        share_node_namespaces(&mut c);
        assert_eq!(c["linux"]["namespaces"], json!([{"type": "mount"}]));
        // Rootless: the PID namespace stays (/proc needs it in a user namespace).
        let mut c = json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "user"}]}});
        share_node_namespaces(&mut c);
        assert_eq!(
            c["linux"]["namespaces"],
            json!([{"type": "pid"}, {"type": "user"}])
        );
        // Rootless with the node's IPC: runc could not mount a new mqueue
        // (`operation not permitted`): the node's is bound, or none at all.
        let mut c = json!({
            "mounts": [{"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}, {"type": "user"}]}
        });
        share_node_namespaces(&mut c);
        let mounts = c["mounts"].as_array().unwrap();
        assert!(mounts.iter().all(|m| m["type"] != "mqueue"), "{mounts:?}");
        if namespaces::Node::this().has_mqueue {
            assert_eq!(mounts[0]["source"], "/dev/mqueue");
            assert_eq!(mounts[0]["type"], "bind");
        } else {
            assert!(mounts.is_empty());
        }
    }

    #[test]
    fn a_pmix_rank_in_a_user_namespace_gets_munged_s_socket() {
        let base = std::env::temp_dir().join(format!("hpcc-munge-test-{}", std::process::id()));
        let (dir, other) = (base.join("a"), base.join("b"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(dir.join("munge.socket.2")).unwrap();
        let d = dir.to_str().unwrap();
        let real = std::fs::canonicalize(d).unwrap();
        assert_eq!(munge_dir(&["/nonexistent/munge", d]), Some(real));
        // A plain file of that name is not munged.
        std::fs::write(other.join("munge.socket.2"), "").unwrap();
        assert_eq!(munge_dir(&[other.to_str().unwrap()]), None);
        let _ = std::fs::remove_dir_all(&base);

        let rootless = json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "user"}]}});
        let root = json!({"linux": {"namespaces": [{"type": "pid"}]}});
        // Root's ranks keep their uid: native security works, nothing added.
        assert!(pmix_munge_mount(&root, Some("munge,native")).is_none());
        // A server without munge: nothing to talk to.
        assert!(pmix_munge_mount(&rootless, Some("native")).is_none());
        assert!(pmix_munge_mount(&rootless, None).is_none());
        // Where this node has munged, its directory is bound read-only.
        if let Some(d) = munge_dir(MUNGE_DIRS) {
            let m = pmix_munge_mount(&rootless, Some("munge,native")).unwrap();
            assert_eq!(
                (m.source, m.destination.clone(), m.readonly),
                (d.clone(), d, true)
            );
        }
    }

    #[test]
    fn pmix_without_the_plugins_variables_is_a_clear_error() {
        if std::env::var_os("PMIX_RANK").is_some() {
            return;
        }
        let mut c = json!({"process": {"env": ["SLURM_MPI_TYPE=pmix"]}});
        let e = wire_mpi(&mut c, &Policy::default(), &step()).unwrap_err();
        assert!(e.to_string().contains("hpcc_spank.so"), "{e}");
    }

    #[test]
    fn slurm_conf_values() {
        let conf = "SlurmdSpoolDir=/s/%n\nTmpFS=/t/%n # tmp\n";
        assert_eq!(tmpfs_dir(conf, "n2"), PathBuf::from("/t/n2"));
        assert_eq!(tmpfs_dir("", "n2"), PathBuf::from("/tmp"));
        assert_eq!(spool_dir(conf, "n2"), PathBuf::from("/s/n2"));
    }
}
