//! `hpcc_spank.so`: the hpcc checks for `srun --container` and
//! `sbatch --container` steps, as a Slurm SPANK plugin.
//!
//! Built for the Slurm release of the installed `libslurm-dev` headers
//! (Debian 12: Slurm 22.05); `plugin_version` is that release's
//! `SLURM_VERSION_NUMBER`, and Slurm refuses the plugin under any other
//! release.
//!
//! This file holds the exported symbols only and dispatches on the
//! context, as Pyxis does:
//! - [`local`]: srun, sbatch, salloc: the `--hpcc` and `--hpcc-mpi`
//!   options;
//! - [`remote`]: slurmstepd: the step's decision in `user_init` (the
//!   bundle read as the job user, the same core as `hpcc-hook` and
//!   `hpcc-runtime`), its refusal in `task_init` (an error returned from
//!   `user_init` is not shown to the srun user, SchedMD bug 7573), the
//!   task renamed in `task_init_privileged`, slurmstepd waiting for that
//!   in `task_post_fork` (with proctrack/linuxproc a cancel before the
//!   task's exec is otherwise lost), and the step's file for `hpcc-runtime` removed at
//!   `exit`.
//!
//! Jobs without `--container` are untouched: no fingerprint, no file read.
//! No panic crosses into Slurm: every callback runs under `catch_unwind`.

pub mod args;
pub mod creds;
pub mod ffi;
pub mod local;
pub mod remote;
pub mod slurm;
pub mod step;
pub mod userfile;

use args::{PluginArgs, UserOptions};
use hpcc_common::launch::{Outcome, RefusedBy};
use slurm::{Context, Level, Spank};
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

/// What the plugin remembers between the callbacks of one process (srun,
/// sbatch, or the slurmstepd of one step; task_init runs in a fork of it).
pub struct State {
    args: Option<PluginArgs>,
    options: UserOptions,
    /// Set in user_init when the step has a container.
    outcome: Option<Outcome>,
    /// The step's handoff file, removed at exit.
    handoff: Option<(PathBuf, u32, u32)>,
    /// Job and step ids of a container step (remote context).
    step: Option<(u32, u32)>,
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
    step: None,
    on_error_allow: false,
});

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic while holding the lock poisons it; the data is still
    // consistent enough to decide on (every field is set in one statement).
    state.lock().unwrap_or_else(|p| p.into_inner())
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
            let allow = lock(&STATE).on_error_allow;
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
                    lock(&STATE).outcome = Some(Outcome::Refuse {
                        line: hpcc_common::text::escape(&format!(
                            "hpcc: refused to start the container: internal error ({msg})"
                        )),
                        by: RefusedBy::Failure,
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
            // SAFETY: i < ac, and Slurm gives ac valid pointers.
            let p = unsafe { *av.add(i) };
            // SAFETY: a non-null entry is a NUL-terminated C string.
            (!p.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy())
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
    // SAFETY: Slurm's arguments, as documented above.
    let argv = unsafe { plugin_argv(ac, av) };
    // SAFETY: the handle of this callback.
    let spank = unsafe { Spank::from_raw(sp) };
    guard("init", move || {
        let args = match PluginArgs::parse(argv.iter().map(|s| s.as_ref())) {
            Ok(a) => a,
            Err(e) => {
                slurm::log(Level::Error, &format!("hpcc: {e}"));
                return FAIL;
            }
        };
        lock(&STATE).args = Some(args);
        match slurm::context() {
            Context::Local | Context::Remote | Context::Allocator => {
                match local::register(&spank) {
                    Ok(()) => OK,
                    Err(e) => {
                        slurm::log(Level::Error, &format!("hpcc: {e}"));
                        FAIL
                    }
                }
            }
            _ => OK,
        }
    })
}

/// Slurm calls this with the value of `--hpcc`/`--hpcc-mpi` in each
/// context that registered them; a bad value fails srun at once.
///
/// # Safety
/// `optarg` is null or a NUL-terminated string (Slurm's contract).
unsafe extern "C" fn option_cb(val: c_int, optarg: *const c_char, _remote: c_int) -> c_int {
    let value = if optarg.is_null() {
        String::new()
    } else {
        // SAFETY: non-null, NUL-terminated (see above).
        unsafe { std::ffi::CStr::from_ptr(optarg) }
            .to_string_lossy()
            .into_owned()
    };
    guard("option", move || {
        let mut st = lock(&STATE);
        if local::option(&mut st.options, val, &value) {
            OK
        } else {
            FAIL
        }
    })
}

/// Slurm's `slurm_spank_local_user_init` (srun, once the job has its
/// nodes, before the step is launched): a `--container` step with more
/// than one task on a node fails here, with a line that says why and what
/// to do, instead of Slurm 22.05's "Unspecified error" from every node.
///
/// # Safety
/// Called by Slurm with a valid handle.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_local_user_init(
    sp: ffi::spank_t,
    _ac: c_int,
    _av: *mut *mut c_char,
) -> c_int {
    // SAFETY: the handle of this callback.
    let spank = unsafe { Spank::from_raw(sp) };
    guard("local_user_init", move || {
        if slurm::context() != Context::Local {
            return OK;
        }
        match local::one_task_per_node(&spank) {
            Ok(()) => OK,
            Err(e) => {
                slurm::log(Level::Error, &e.to_string());
                FAIL
            }
        }
    })
}

/// Slurm's `slurm_spank_user_init` (remote, before the tasks fork):
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
    // SAFETY: the handle of this callback.
    let spank = unsafe { Spank::from_raw(sp) };
    guard("user_init", move || {
        if slurm::context() == Context::Remote {
            remote::user_init(&spank, &STATE);
        }
        OK
    })
}

/// Slurm's `slurm_spank_task_init_privileged` (remote, in each task right
/// after its fork, as root): a container step's task renames itself so
/// that a cancel before its exec is not lost ([`remote::task_init_privileged`]).
///
/// # Safety
/// Called by Slurm with a valid handle.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_task_init_privileged(
    _sp: ffi::spank_t,
    _ac: c_int,
    _av: *mut *mut c_char,
) -> c_int {
    guard("task_init_privileged", || {
        if slurm::context() == Context::Remote {
            remote::task_init_privileged(&STATE);
        }
        OK
    })
}

/// Slurm's `slurm_spank_task_post_fork` (remote, in slurmstepd once per
/// task, before the tasks are released): waits for the task's rename
/// ([`remote::task_post_fork`]).
///
/// # Safety
/// Called by Slurm with a valid handle.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_task_post_fork(
    sp: ffi::spank_t,
    _ac: c_int,
    _av: *mut *mut c_char,
) -> c_int {
    // SAFETY: the handle of this callback.
    let spank = unsafe { Spank::from_raw(sp) };
    guard("task_post_fork", move || {
        if slurm::context() == Context::Remote {
            remote::task_post_fork(&spank, &STATE);
        }
        OK
    })
}

/// Slurm's `slurm_spank_task_init` (remote, in each task, as the user,
/// before the container runtime is executed): fail a refused step here,
/// where srun shows the message.
///
/// # Safety
/// Called by Slurm with a valid handle.
#[no_mangle]
pub unsafe extern "C" fn slurm_spank_task_init(
    sp: ffi::spank_t,
    _ac: c_int,
    _av: *mut *mut c_char,
) -> c_int {
    // SAFETY: the handle of this callback.
    let spank = unsafe { Spank::from_raw(sp) };
    guard("task_init", move || {
        if slurm::context() != Context::Remote {
            return OK;
        }
        match remote::task_init(&spank, &STATE) {
            Some(_) => FAIL,
            None => OK,
        }
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
            remote::exit(&STATE);
        }
        OK
    })
}
