//! `hpcc_spank.so`: the hpcc checks for `srun --container` and
//! `sbatch --container` steps, as a Slurm SPANK plugin.
//!
//! Built for the Slurm release of the installed `libslurm-dev` headers
//! (Debian 12: Slurm 22.05); `plugin_version` is that release's
//! `SLURM_VERSION_NUMBER`, and Slurm refuses the plugin under any other
//! release.
//!
//! - local (srun) and allocator (sbatch, salloc) contexts: register and
//!   validate `--hpcc=enforce|warn|off` and `--hpcc-mpi=auto|replace|none`;
//! - remote (slurmstepd), `user_init`: when the step has a container
//!   (`SLURM_CONTAINER` in the job environment), read its `config.json` as the
//!   job user, fingerprint the node (per-boot cache), decide with the same
//!   core as `hpcc-hook`, log the decision, and leave the effective policy
//!   for `hpcc-runc-wrapper`;
//! - remote, `task_init`: fail a refused step with its one line. An error
//!   returned from `user_init` is not shown to the srun user (SchedMD bug
//!   7573); from `task_init` it is, and the container has not started yet;
//! - remote, `exit`: remove the step's file.
//!
//! Jobs without `--container` are untouched: no fingerprint, no file read.
//! No panic crosses into Slurm: every callback runs under `catch_unwind`.

pub mod args;
pub mod ffi;
pub mod handoff;
pub mod slurm;
pub mod step;
pub mod userfile;
pub mod wrapper;

use args::{PluginArgs, UserOptions};
use slurm::{Context, Level, OptionSpec, Spank};
use std::os::raw::{c_char, c_int};
use std::path::PathBuf;
use std::sync::Mutex;

/// The plugin's name in Slurm's logs (`spank: hpcc: ...`).
#[no_mangle]
pub static plugin_name: [u8; 5] = *b"hpcc\0";

/// A SPANK plugin.
#[no_mangle]
pub static plugin_type: [u8; 6] = *b"spank\0";

/// The Slurm release this plugin is built against.
#[no_mangle]
pub static plugin_version: u32 = ffi::SLURM_VERSION_NUMBER;

/// SPANK callback return values.
const OK: c_int = 0;
const FAIL: c_int = -1;

const OPT_HPCC: c_int = 1;
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
const OPT_MPI: c_int = 2;

static OPTIONS: [OptionSpec; 2] = [
    OptionSpec {
        name: c"hpcc",
        arginfo: c"enforce|warn|off",
        usage: c"hpcc checks of a --container image against this node: enforce (refuse what cannot run), warn (start and log), off. Users may relax only as far as the site allows.",
        val: OPT_HPCC,
        cb: option_cb,
    },
    OptionSpec {
        name: c"hpcc-mpi",
        arginfo: c"auto|replace|none",
        usage: c"host MPI for a --container image that allows mpi_replace: auto (replace when possible), replace (fail when impossible), none (keep the image's MPI).",
        val: OPT_MPI,
        cb: option_cb,
    },
];

/// What the plugin remembers between the callbacks of one process (srun,
/// sbatch, or the slurmstepd of one step; task_init runs in a fork of it).
struct State {
    args: Option<PluginArgs>,
    options: UserOptions,
    /// Set in user_init when the step has a container.
    outcome: Option<step::Outcome>,
    /// The step's handoff file, removed at exit.
    handoff: Option<(PathBuf, u32, u32)>,
    on_error_allow: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    args: None,
    options: UserOptions {
        hpcc: None,
        mpi: None,
    },
    outcome: None,
    handoff: None,
    on_error_allow: false,
});

fn state() -> std::sync::MutexGuard<'static, State> {
    // A panic while holding the lock poisons it; the data is still
    // consistent enough to decide on (every field is set in one statement).
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs one callback body; a panic becomes a logged failure, or a pass
/// when the policy says `on_error = "allow"`.
fn guard(name: &str, body: impl FnOnce() -> c_int + std::panic::UnwindSafe) -> c_int {
    match std::panic::catch_unwind(body) {
        Ok(rc) => rc,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let allow = state().on_error_allow;
            slurm::log(
                Level::Error,
                &format!(
                    "hpcc: internal error in {name}: {msg} ({})",
                    if allow {
                        "ignored: on_error = \"allow\""
                    } else {
                        "step refused: on_error = \"refuse\""
                    }
                ),
            );
            tracing::error!(callback = name, panic = %msg, "hpcc_spank internal error");
            if allow {
                OK
            } else {
                if name == "user_init" {
                    state().outcome = Some(step::Outcome::Refuse {
                        line: format!(
                            "hpcc: refused to start the container: internal error ({msg})"
                        ),
                    });
                }
                FAIL
            }
        }
    }
}

/// Collects the plugstack.conf arguments.
///
/// # Safety
/// `av` must hold `ac` valid C strings (Slurm's contract).
unsafe fn plugin_argv<'a>(ac: c_int, av: *mut *mut c_char) -> Vec<std::borrow::Cow<'a, str>> {
    if av.is_null() || ac <= 0 {
        return Vec::new();
    }
    (0..ac as usize)
        .filter_map(|i| {
            let p = *av.add(i);
            (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy())
        })
        .collect()
}

/// Slurm's `slurm_spank_init`: parse the arguments, register the options.
///
/// # Safety
/// Called by Slurm with a valid handle and argument vector.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_init(
    sp: ffi::spank_t,
    ac: c_int,
    av: *mut *mut c_char,
) -> c_int {
    let argv = plugin_argv(ac, av);
    let spank = Spank::from_raw(sp);
    guard("init", move || {
        let args = match PluginArgs::parse(argv.iter().map(|s| s.as_ref())) {
            Ok(a) => a,
            Err(e) => {
                slurm::log(Level::Error, &format!("hpcc: {e}"));
                return FAIL;
            }
        };
        state().args = Some(args);
        match slurm::context() {
            Context::Local | Context::Remote | Context::Allocator => {
                for opt in &OPTIONS {
                    if let Err(e) = spank.register_option(opt) {
                        slurm::log(Level::Error, &format!("hpcc: {e}"));
                        return FAIL;
                    }
                }
                OK
            }
            _ => OK,
        }
    })
}

/// Slurm calls this with the value of `--hpcc`/`--hpcc-mpi` in each
/// context that registered them; a bad value fails srun at once.
unsafe extern "C" fn option_cb(val: c_int, optarg: *const c_char, _remote: c_int) -> c_int {
    let value = if optarg.is_null() {
        String::new()
    } else {
        std::ffi::CStr::from_ptr(optarg)
            .to_string_lossy()
            .into_owned()
    };
    guard("option", move || {
        let mut st = state();
        let res = match val {
            OPT_HPCC => st.options.set_hpcc(&value),
            OPT_MPI => st.options.set_mpi(&value),
            _ => return FAIL,
        };
        match res {
            Ok(()) => OK,
            Err(e) => {
                drop(st);
                slurm::log(Level::Error, &format!("hpcc: {e}"));
                FAIL
            }
        }
    })
}

/// Slurm's `slurm_spank_user_init` (remote, root, before the tasks fork):
/// decide the step.
///
/// # Safety
/// Called by Slurm with a valid handle.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_user_init(
    sp: ffi::spank_t,
    _ac: c_int,
    _av: *mut *mut c_char,
) -> c_int {
    let spank = Spank::from_raw(sp);
    guard("user_init", move || {
        if slurm::context() != Context::Remote {
            return OK;
        }
        // Jobs without a container are none of our business.
        let Some(bundle) = spank.getenv("SLURM_CONTAINER").filter(|b| !b.is_empty()) else {
            return OK;
        };
        let (args, options) = {
            let st = state();
            (st.args.clone().unwrap_or_default(), st.options)
        };
        let Some(ids) = spank.job_ids() else {
            slurm::log(
                Level::Error,
                "hpcc: cannot read the job's ids and user from Slurm",
            );
            state().outcome = Some(step::Outcome::Refuse {
                line: format!(
                    "hpcc: refused to start container {bundle}: Slurm did not give the job's user"
                ),
            });
            return OK;
        };
        // slurmstepd calls user_init with the job user as effective uid
        // (root stays real and saved uid). The decision needs root for the
        // per-boot fingerprint cache and the step's policy file under /run;
        // the user's bundle is read in a child that drops to the user.
        let _root = EffectiveRoot::take();
        remote_decide(&bundle, &ids, &args, &options);
        OK
    })
}

/// Effective uid 0 for a scope, the previous effective uid restored after.
struct EffectiveRoot(Option<libc::uid_t>);

impl EffectiveRoot {
    fn take() -> EffectiveRoot {
        // SAFETY: plain credential calls; slurmstepd itself switches its
        // effective uid this way around the SPANK callbacks.
        unsafe {
            let euid = libc::geteuid();
            if euid == 0 || libc::seteuid(0) != 0 {
                return EffectiveRoot(None);
            }
            EffectiveRoot(Some(euid))
        }
    }
}

impl Drop for EffectiveRoot {
    fn drop(&mut self) {
        if let Some(euid) = self.0 {
            // SAFETY: back to the uid slurmstepd had set.
            if unsafe { libc::seteuid(euid) } != 0 {
                slurm::log(
                    Level::Error,
                    "hpcc: cannot restore the job user's effective uid after the check",
                );
            }
        }
    }
}

fn remote_decide(bundle: &str, ids: &slurm::JobIds, args: &PluginArgs, options: &UserOptions) {
    if let Ok(p) = hpcc_config::Policy::load(&args.config) {
        // tracing goes to journald only: slurmstepd's stderr reaches the
        // srun user, who must see one line, and Slurm's log has the rest.
        if p.log.journald && std::path::Path::new(JOURNAL_SOCKET).exists() {
            hpcc_common::logging::init("hpcc-spank", &p.log.level, true);
        }
        state().on_error_allow = p.on_error == hpcc_config::OnError::Allow;
    }
    let user = userfile::Identity {
        uid: ids.uid,
        gid: ids.gid,
        groups: ids.groups.clone(),
    };
    let request = options.request(args);
    let decided = step::decide(&step::StepInput {
        bundle: std::path::Path::new(bundle),
        user: &user,
        policy_path: &args.config,
        request,
    });
    let summary = step::summary(&decided.outcome, decided.elapsed);
    let step_name = format!("StepId={}.{}", ids.job, ids.step);
    match &decided.outcome {
        step::Outcome::Start { effective, plan } => {
            slurm::log(Level::Info, &summary);
            tracing::info!(step = %step_name, uid = ids.uid, bundle, score = plan.verdict.score.as_str(), ms = decided.elapsed.as_secs_f64() * 1e3, decision = "start", "{summary}");
            let dir = std::path::Path::new(handoff::DEFAULT_DIR);
            match handoff::write(dir, ids.job, ids.step, effective) {
                Ok(_) => state().handoff = Some((dir.to_owned(), ids.job, ids.step)),
                // The wrapper then uses the admin's policy unchanged: stricter,
                // never looser, than what was decided here.
                Err(e) => slurm::log(
                    Level::Error,
                    &format!("hpcc: cannot write the step's policy under {}: {e}; the container hook will use {} unchanged", dir.display(), args.config.display()),
                ),
            }
        }
        step::Outcome::StartUnchecked { error } => {
            slurm::log(Level::Info, &summary);
            tracing::warn!(step = %step_name, uid = ids.uid, bundle, error = %error, decision = "start-unchecked", "{summary}");
        }
        step::Outcome::Refuse { line } => {
            // Info, not error: slurmstepd forwards its errors to srun, and
            // task_init prints the line the user must see exactly once.
            slurm::log(Level::Info, &format!("{step_name} uid={}: {line}", ids.uid));
            tracing::error!(step = %step_name, uid = ids.uid, bundle, ms = decided.elapsed.as_secs_f64() * 1e3, decision = "refuse", "{line}");
        }
    }
    state().outcome = Some(decided.outcome);
}

/// Slurm's `slurm_spank_task_init` (remote, in each task, as the user,
/// before the container runtime is executed): fail a refused step here,
/// where srun shows the message.
///
/// # Safety
/// Called by Slurm with a valid handle.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_task_init(
    _sp: ffi::spank_t,
    _ac: c_int,
    _av: *mut *mut c_char,
) -> c_int {
    guard("task_init", || {
        if slurm::context() != Context::Remote {
            return OK;
        }
        let line = match &state().outcome {
            Some(step::Outcome::Refuse { line }) => line.clone(),
            _ => return OK,
        };
        slurm::log(Level::Error, &line);
        FAIL
    })
}

/// Slurm's `slurm_spank_exit`: remove the step's file.
///
/// # Safety
/// Called by Slurm with a valid handle.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_exit(
    _sp: ffi::spank_t,
    _ac: c_int,
    _av: *mut *mut c_char,
) -> c_int {
    guard("exit", || {
        if slurm::context() == Context::Remote {
            if let Some((dir, job, step)) = state().handoff.take() {
                handoff::remove(&dir, job, step);
            }
        }
        OK
    })
}
