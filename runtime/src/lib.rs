//! `hpcc-runtime`: an OCI runtime shim. On `create` and `run` it takes the
//! launch decision with the same core as `hpcc-hook` and the SPANK plugin
//! (`hpcc_common::launch`), writes the plan into a copy of the bundle's
//! `config.json` in a private bundle of its own ([`private`]; the user's
//! bundle is never written) (`hpcc_common::apply::spec`: mounts, devices
//! with their cgroup rules, environment, the container's linker cache) and
//! executes the real runtime on it (runc or crun, by absolute path: `--hpcc-runtime` or
//! the policy's `[runtime] path`). Every other command goes to the real
//! runtime unchanged. A refusal exits with the one line on stderr, which
//! podman, docker and srun show as the runtime's error.
//!
//! Engines name it instead of runc: podman (`--runtime`,
//! `containers.conf` `[engine.runtimes]`), docker (`daemon.json`
//! `runtimes`), containerd, CRI-O, plain users, and Slurm (oci.conf
//! `RunTimeRun` with `--hpcc-slurm`: see [`slurm`]). It works as a normal
//! user with rootless runc: it reads only what the user can read and
//! writes only the bundle's config and the user's own linker cache store.
//!
//! - [`args`]: the command line;
//! - [`bundle`]: reading and writing `config.json`;
//! - [`slurm`]: the Slurm mode (spool checks, the plugin's decision, MPI);
//! - [`pmi`]: PMI-2 ranks from Slurm's step variables;
//! - [`private`]: the private bundle the edited config goes into.

pub mod args;
pub mod bundle;
pub mod pmi;
pub mod private;
pub mod slurm;

use args::{Args, Launch};
use bundle::Config;
use hpcc_common::apply::spec;
use hpcc_common::fingerprint::GpuProbe;
use hpcc_common::launch::{self, exit, LaunchError, Outcome};
use hpcc_common::oci::{self, LaunchContext};
use hpcc_common::plan::{Plan, UserRequest};
use hpcc_config::Policy;
use serde_json::Value;
use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// The real runtime when neither the command line nor a readable policy
/// names one.
pub const DEFAULT_RUNTIME: &str = "/usr/sbin/runc";

/// What `main` does once the config is edited (or not).
#[derive(Debug)]
pub enum Next {
    /// Execute the real runtime with these arguments; `pmi_fd`, when set,
    /// is moved to fd 3 first (the runtime passes it on with
    /// `--preserve-fds`).
    Exec {
        /// The real runtime.
        runtime: PathBuf,
        /// Its arguments.
        args: Vec<OsString>,
        /// An fd to hand to the container as fd 3.
        pmi_fd: Option<RawFd>,
    },
    /// Stop with this code (the line was printed).
    Exit(i32),
}

/// `hpcc-runtime`'s whole life: arguments in, exit code out (or an exec).
pub fn main(argv: impl IntoIterator<Item = OsString>) -> i32 {
    let args = match Args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hpcc-runtime: {e}");
            return exit::USAGE;
        }
    };
    let policy_path = args
        .options
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(hpcc_config::DEFAULT_PATH));
    let next = match args.launch() {
        Err(e) => {
            eprintln!("hpcc-runtime: {e}");
            return exit::USAGE;
        }
        // state, kill, delete...: never blocked by hpcc, even when its
        // policy is broken (a container must always be deletable).
        Ok(None) => match args.deleted() {
            Some(id) if !args.options.slurm => delete(&args, &policy_path, &id),
            _ => Next::Exec {
                runtime: passthrough_runtime(&args, &policy_path),
                args: args.runtime.clone(),
                pmi_fd: None,
            },
        },
        Ok(Some(l)) if args.options.slurm => slurm::prepare(&args, &l, &policy_path),
        Ok(Some(l)) => prepare(&args, &l, &policy_path),
    };
    run(next)
}

/// Executes the runtime (or returns the exit code).
fn run(next: Next) -> i32 {
    match next {
        Next::Exit(code) => code,
        Next::Exec {
            runtime,
            args,
            pmi_fd,
        } => {
            if let Some(fd) = pmi_fd {
                if let Err(e) = move_to_fd3(fd) {
                    eprintln!("hpcc-runtime: cannot pass the PMI socket to the container: {e}");
                    return exit::ERROR;
                }
            }
            let err = std::process::Command::new(&runtime).args(args).exec();
            eprintln!(
                "hpcc-runtime: cannot execute the runtime {}: {err}",
                runtime.display()
            );
            exit::ERROR
        }
    }
}

/// Puts `fd` at 3 (without close-on-exec) and closes the original.
fn move_to_fd3(fd: RawFd) -> std::io::Result<()> {
    if fd == 3 {
        // SAFETY: fcntl on a descriptor this process holds.
        let flags = unsafe { libc::fcntl(3, libc::F_GETFD) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok(());
    }
    // SAFETY: dup2 onto 3 (whatever was there is closed by the kernel;
    // every fd of ours is close-on-exec anyway), then the original closed.
    unsafe {
        if libc::dup2(fd, 3) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::close(fd);
    }
    Ok(())
}

/// The real runtime for a command hpcc does not act on.
fn passthrough_runtime(args: &Args, policy_path: &Path) -> PathBuf {
    args.options.runtime.clone().unwrap_or_else(|| {
        Policy::load(policy_path)
            .map(|p| p.runtime.path)
            .unwrap_or_else(|_| PathBuf::from(DEFAULT_RUNTIME))
    })
}

/// Where this runtime gets GPU facts on a fingerprint cache miss: NVML in
/// process when it is built dynamically (`cargo build`), the `hpcc` helper
/// when it is statically linked, as packages and the benchmarks build it
/// (`packaging/build-static-hook.sh`: one program start and no dynamic
/// loader in front of every container start).
pub fn gpu_probe(policy: &Policy) -> GpuProbe {
    GpuProbe::for_this_build(std::time::Duration::from_millis(
        policy.limits.probe_timeout_ms,
    ))
}

/// The real runtime for a launch.
pub fn runtime_path(args: &Args, policy: &Policy) -> PathBuf {
    args.options
        .runtime
        .clone()
        .unwrap_or_else(|| policy.runtime.path.clone())
}

/// Prints a refusal and stops. The line also goes to the runtime's
/// `--log` file, as a runc JSON log record: containerd's and docker's runc
/// shim show the last error of that file to the user, not stderr.
pub fn refuse(args: &Args, outcome: &Outcome) -> Next {
    if let Some(line) = outcome.refusal() {
        eprintln!("{line}");
        if let Some(log) = args.log_file() {
            log_error(&log, line);
        }
    }
    Next::Exit(outcome.exit_code())
}

/// Appends `{"level":"error","msg":...,"time":...}` to a runc log file.
fn log_error(path: &Path, msg: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let record =
        serde_json::json!({"level": "error", "msg": msg, "time": hpcc_common::date::rfc3339(now)});
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    if let Ok(mut f) = f {
        let _ = writeln!(f, "{record}");
    }
}

/// The generic mode: any engine's bundle.
fn prepare(args: &Args, l: &Launch, policy_path: &Path) -> Next {
    let policy = match launch::load_policy(policy_path, Some(&l.id)) {
        Ok(p) => p,
        Err(refused) => return refuse(args, &refused),
    };
    hpcc_common::logging::init("hpcc-runtime", &policy.log);
    // On a cold cache one launch of a burst fills it while the others
    // wait: held until the private bundle is written.
    let (node, _fill) = launch::coldfill::fingerprint(&policy, &gpu_probe(&policy));
    let here = Some(node.hostname.as_str());
    let read = Config::read(&l.bundle)
        .map_err(LaunchError::input)
        .and_then(|c| {
            let spec = oci::read_config(&c.bytes[..], &c.path.display().to_string())?;
            let mut ctx = LaunchContext::from_bundle(&l.bundle, &spec);
            ctx.id = l.id.clone();
            // SAFETY: geteuid has no preconditions.
            ctx.rootless = unsafe { libc::geteuid() } != 0;
            Ok((c, ctx))
        });
    let (config, ctx) = match read {
        Ok(x) => x,
        Err(e) => {
            let input = launch::RunInput {
                policy: &policy,
                policy_path,
                id: Some(&l.id),
                node: here,
                planned: Err(e),
            };
            // Nothing to write: on_error allows at most an unchecked start.
            let (outcome, _) = launch::run(input, &mut |_: &mut Outcome| Ok(()));
            return finish(args, &policy, outcome, args.runtime.clone());
        }
    };
    // One snapshot of the image for the planner and the cache builder.
    let image = launch::LaunchImage::new(&ctx.rootfs);
    let input = launch::RunInput {
        policy: &policy,
        policy_path,
        id: Some(&l.id),
        node: here,
        planned: launch::decide_in(&ctx, &node, &policy, &UserRequest::default(), &image),
    };
    let mut effect = |outcome: &mut Outcome| -> Result<Vec<OsString>, LaunchError> {
        // A start with nothing to add (the image is only checked) leaves
        // config.json as the engine wrote it: no rewrite on the start path.
        let plan = match outcome {
            Outcome::Start(plan) if !plan.tweaks.is_empty() => plan,
            _ => return Ok(args.runtime.clone()),
        };
        // The user's bundle is never written (two nodes may start it from
        // one shared file system): the edited config goes into a private
        // bundle of hpcc's own, and the runtime is given that one.
        let mut v = config.json().map_err(LaunchError::input)?;
        write_plan(&mut v, plan, &image, &policy, "hpcc-runtime")?;
        let bundle = std::path::absolute(&l.bundle).map_err(|e| {
            LaunchError::input(bundle::BundleError::Read {
                path: l.bundle.clone(),
                source: e,
            })
        })?;
        private::absolutize(&mut v, &bundle).map_err(LaunchError::input)?;
        let runtime = runtime_path(args, &policy);
        let state = private::state_dir(&runtime, args.runtime_root().as_deref(), &l.id);
        let dir = private::write(&private::store(&policy.cache.dir), &state, &v)
            .map_err(LaunchError::input)?;
        tracing::info!(container = %l.id, bundle = %dir.display(), "the plan is in a private bundle; the user's bundle is unchanged");
        Ok(args.with_bundle(l, &dir, &runtime))
    };
    let (outcome, runtime_args) = launch::run(input, &mut effect);
    let runtime_args = runtime_args.unwrap_or_else(|| args.runtime.clone());
    finish(args, &policy, outcome, runtime_args)
}

/// `delete`: the runtime deletes the container (as a child, not by exec),
/// then the container's private bundle goes with it.
fn delete(args: &Args, policy_path: &Path, id: &str) -> Next {
    let runtime = passthrough_runtime(args, policy_path);
    let status = std::process::Command::new(&runtime)
        .args(&args.runtime)
        .status();
    let code = match status {
        Ok(s) => s.code().unwrap_or(exit::ERROR),
        Err(e) => {
            eprintln!(
                "hpcc-runtime: cannot execute the runtime {}: {e}",
                runtime.display()
            );
            return Next::Exit(exit::ERROR);
        }
    };
    if code == 0 {
        let cache = Policy::load(policy_path)
            .map(|p| p.cache.dir)
            .unwrap_or_else(|_| Policy::default().cache.dir);
        let state = private::state_dir(&runtime, args.runtime_root().as_deref(), id);
        private::remove(&private::store(&cache), &state);
    }
    Next::Exit(code)
}

/// Says what to do with a logged outcome: run the runtime with
/// `runtime_args` (the private bundle's when the plan was written).
fn finish(args: &Args, policy: &Policy, outcome: Outcome, runtime_args: Vec<OsString>) -> Next {
    match outcome {
        Outcome::Refuse { .. } => refuse(args, &outcome),
        _ => Next::Exec {
            runtime: runtime_path(args, policy),
            args: runtime_args,
            pmi_fd: None,
        },
    }
}

/// The annotation that says which part of hpcc took the decision written
/// into a config (`hpcc-runtime`, or `hpcc_spank.so` for a Slurm step whose
/// plugin decided): `runc state` shows it to an admin. Outside Slurm a
/// start with no tweaks leaves the config untouched, so without it.
pub const DECIDED_BY: &str = "run.hpcc.decided-by";

/// Writes a start's plan into the config: the container's linker cache
/// (built from the image's own, read through the launch's `image`, stored in this user's store),
/// every mount, device and variable of the plan, and who decided.
pub fn write_plan(
    config: &mut Value,
    plan: &Plan,
    image: &launch::LaunchImage,
    policy: &Policy,
    decided_by: &str,
) -> Result<spec::Edited, LaunchError> {
    let cache = image.linker_cache(&plan.tweaks.ld_cache, &policy.cache.dir)?;
    // One bind of hpcc's host library stack where the plan has one file
    // each in hpcc's directories (root only: a rootless user keeps them).
    let tweaks = hpcc_common::apply::stack::realize(
        &plan.tweaks,
        &hpcc_common::apply::stack::store_dir(&policy.cache.dir),
    )
    .map_err(hpcc_common::apply::ApplyError::from)?;
    let edited = spec::edit(config, &tweaks, cache.as_deref()).map_err(LaunchError::input)?;
    if let Some(obj) = config.as_object_mut() {
        let ann = obj
            .entry("annotations")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(a) = ann.as_object_mut() {
            a.insert(DECIDED_BY.into(), decided_by.into());
        }
    }
    tracing::info!(container = %plan.container, mounts = edited.mounts, devices = edited.devices, env = edited.env, "plan written into config.json");
    Ok(edited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_log_records_carry_the_line_and_a_utc_time() {
        let d = std::env::temp_dir().join(format!("hpcc-rtlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("log.json");
        log_error(&p, "hpcc: refused to start container x: \"why\"");
        let v: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&p).unwrap().trim()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "hpcc: refused to start container x: \"why\"");
        let t = v["time"].as_str().unwrap();
        assert!(
            t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
