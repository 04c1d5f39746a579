//! The only place that calls into Slurm: a safe face over the SPANK handle
//! and Slurm's logging functions. Everything above it deals in Rust types.

use crate::ffi;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};

/// Largest environment value read with `spank_getenv` (a bundle path).
const MAX_ENV_VALUE: usize = 4096;

/// Which Slurm program loaded the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// srun.
    Local,
    /// slurmstepd on the compute node.
    Remote,
    /// sbatch or salloc.
    Allocator,
    /// slurmd itself (job prolog/epilog).
    Slurmd,
    /// The job script's context (prolog/epilog scripts).
    JobScript,
    /// Slurm said it does not know.
    Unknown,
}

/// Where the plugin is running now.
pub fn context() -> Context {
    // SAFETY: spank_context takes no arguments and only reads a global.
    match unsafe { ffi::spank_context() } {
        ffi::S_CTX_LOCAL => Context::Local,
        ffi::S_CTX_REMOTE => Context::Remote,
        ffi::S_CTX_ALLOCATOR => Context::Allocator,
        ffi::S_CTX_SLURMD => Context::Slurmd,
        ffi::S_CTX_JOB_SCRIPT => Context::JobScript,
        _ => Context::Unknown,
    }
}

/// The SPANK handle Slurm passes to every callback, valid for that call.
#[derive(Clone, Copy)]
pub struct Spank(ffi::spank_t);

/// The job facts the remote context needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobIds {
    /// Job id.
    pub job: u32,
    /// Step id.
    pub step: u32,
    /// The job user's uid.
    pub uid: u32,
    /// The job user's primary gid.
    pub gid: u32,
    /// The job user's supplementary gids.
    pub groups: Vec<u32>,
}

impl Spank {
    /// Wraps the handle of one callback.
    ///
    /// # Safety
    /// `sp` must be the handle Slurm passed to the running callback.
    pub unsafe fn from_raw(sp: ffi::spank_t) -> Spank {
        Spank(sp)
    }

    /// A variable of the job's environment (remote context: the step's,
    /// not slurmstepd's own). `None` when unset or too long.
    pub fn getenv(&self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        let mut buf = vec![0u8; MAX_ENV_VALUE];
        // SAFETY: buf is writable for its length, name is NUL-terminated.
        let rc = unsafe {
            ffi::spank_getenv(
                self.0,
                name.as_ptr(),
                buf.as_mut_ptr() as *mut c_char,
                buf.len() as c_int,
            )
        };
        if rc != ffi::ESPANK_SUCCESS {
            return None;
        }
        let s = CStr::from_bytes_until_nul(&buf).ok()?;
        Some(s.to_string_lossy().into_owned())
    }

    fn item_u32(&self, item: ffi::spank_item_t) -> Option<u32> {
        let mut v: u32 = 0;
        // SAFETY: S_JOB_UID/GID/ID/STEPID take one uint32_t* (uid_t and
        // gid_t are u32 on Linux).
        let rc = unsafe { ffi::spank_get_item(self.0, item, &mut v as *mut u32) };
        (rc == ffi::ESPANK_SUCCESS).then_some(v)
    }

    /// Job and step ids and the job user's identity (remote context).
    pub fn job_ids(&self) -> Option<JobIds> {
        let mut gids: *mut libc::gid_t = std::ptr::null_mut();
        let mut n: c_int = 0;
        // SAFETY: S_JOB_SUPPLEMENTARY_GIDS takes gid_t ** and int *; Slurm
        // keeps ownership of the array, which we copy at once.
        let rc = unsafe {
            ffi::spank_get_item(
                self.0,
                ffi::S_JOB_SUPPLEMENTARY_GIDS,
                &mut gids as *mut *mut libc::gid_t,
                &mut n as *mut c_int,
            )
        };
        let groups = if rc == ffi::ESPANK_SUCCESS && !gids.is_null() && n > 0 {
            // SAFETY: Slurm says the array has n entries.
            unsafe { std::slice::from_raw_parts(gids, n.min(65536) as usize) }.to_vec()
        } else {
            Vec::new()
        };
        Some(JobIds {
            job: self.item_u32(ffi::S_JOB_ID)?,
            step: self.item_u32(ffi::S_JOB_STEPID)?,
            uid: self.item_u32(ffi::S_JOB_UID)?,
            gid: self.item_u32(ffi::S_JOB_GID)?,
            groups,
        })
    }

    /// The pid of the task of this callback (`S_TASK_PID`: remote
    /// `task_post_fork` and later).
    pub fn task_pid(&self) -> Option<libc::pid_t> {
        let mut pid: libc::pid_t = 0;
        // SAFETY: S_TASK_PID takes one pid_t *.
        let rc =
            unsafe { ffi::spank_get_item(self.0, ffi::S_TASK_PID, &mut pid as *mut libc::pid_t) };
        (rc == ffi::ESPANK_SUCCESS && pid > 0).then_some(pid)
    }

    /// A count item (`S_JOB_TOTAL_TASK_COUNT`, `S_JOB_NNODES`), where the
    /// context has it.
    pub fn count(&self, item: ffi::spank_item_t) -> Option<u32> {
        self.item_u32(item)
    }

    /// The job's environment (`S_JOB_ENV`: in a task, the task's, with
    /// what the MPI plugin set), as `NAME=value`, at most `limit` entries.
    pub fn job_env(&self, limit: usize) -> Vec<String> {
        let mut env: *mut *mut c_char = std::ptr::null_mut();
        // SAFETY: S_JOB_ENV takes one char *** and gives Slurm's array,
        // which it keeps owning; it is read at once.
        let rc = unsafe {
            ffi::spank_get_item(self.0, ffi::S_JOB_ENV, &mut env as *mut *mut *mut c_char)
        };
        if rc != ffi::ESPANK_SUCCESS || env.is_null() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for i in 0..limit {
            // SAFETY: a NULL-terminated array of C strings (Slurm's
            // contract); i stops at the first NULL.
            let p = unsafe { *env.add(i) };
            if p.is_null() {
                break;
            }
            // SAFETY: a non-null entry is a NUL-terminated string.
            out.push(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
        }
        out
    }

    /// Registers one option (`srun --help` lists it).
    pub fn register_option(&self, opt: &'static OptionSpec) -> Result<(), RegisterError> {
        let mut raw = ffi::spank_option {
            name: opt.name.as_ptr() as *mut c_char,
            arginfo: opt.arginfo.as_ptr() as *mut c_char,
            usage: opt.usage.as_ptr() as *mut c_char,
            has_arg: 1,
            val: opt.val,
            cb: Some(opt.cb),
        };
        // SAFETY: the strings are 'static and NUL-terminated; Slurm copies
        // the struct (spank_option_register duplicates it).
        let rc = unsafe { ffi::spank_option_register(self.0, &mut raw) };
        if rc == ffi::ESPANK_SUCCESS {
            Ok(())
        } else {
            Err(RegisterError {
                option: opt.name.to_string_lossy().into_owned(),
                reason: strerror(rc),
            })
        }
    }
}

/// Slurm did not take an option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spank_option_register(--{option}) failed: {reason}")]
pub struct RegisterError {
    /// The option.
    pub option: String,
    /// Slurm's message.
    pub reason: String,
}

fn strerror(rc: ffi::spank_err_t) -> String {
    // SAFETY: spank_strerror returns a static string for any value.
    let p = unsafe { ffi::spank_strerror(rc) };
    if p.is_null() {
        return format!("error {rc}");
    }
    // SAFETY: non-null, NUL-terminated static string.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// One SPANK option, with its callback.
pub struct OptionSpec {
    /// Option name without dashes.
    pub name: &'static CStr,
    /// Placeholder of the argument in `--help`.
    pub arginfo: &'static CStr,
    /// The help text.
    pub usage: &'static CStr,
    /// Identifies the option in the callback.
    pub val: c_int,
    /// Called by Slurm with the value, in every context that registered it.
    pub cb: unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int,
}

/// Ends a whole job step on every node (libslurm's `slurm_kill_job_step`,
/// found at run time in the slurmstepd that loaded the plugin). Returns
/// false when the symbol is not there or the call failed.
pub fn kill_job_step(job: u32, step: u32) -> bool {
    type KillStep = unsafe extern "C" fn(u32, u32, u16) -> c_int;
    let name = c"slurm_kill_job_step";
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks
    // the symbol up.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if sym.is_null() {
        return false;
    }
    // SAFETY: Slurm 22.05 declares `int slurm_kill_job_step(uint32_t
    // job_id, uint32_t step_id, uint16_t signal)` in slurm.h; the pointer
    // is that function.
    let kill: KillStep = unsafe { std::mem::transmute::<*mut libc::c_void, KillStep>(sym) };
    // SAFETY: plain integers.
    unsafe { kill(job, step, libc::SIGKILL as u16) == 0 }
}

/// Severity of a line sent to Slurm's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `slurm_error`: slurmd's log, and the user's stderr where Slurm
    /// forwards it (srun, task context).
    Error,
    /// `slurm_info`.
    Info,
    /// `slurm_verbose`.
    Verbose,
    /// `slurm_debug`.
    Debug,
}

/// Sends one line to Slurm's log. The text is passed as an argument of a
/// constant `"%s"` format: a `%` in an image annotation must never be read
/// as a format directive.
pub fn log(level: Level, msg: &str) {
    let Ok(text) = CString::new(msg.replace('\0', "\\0")) else {
        return;
    };
    let fmt = c"%s";
    // SAFETY: fmt is a constant "%s", text is NUL-terminated.
    unsafe {
        match level {
            Level::Error => ffi::slurm_error(fmt.as_ptr(), text.as_ptr()),
            Level::Info => ffi::slurm_info(fmt.as_ptr(), text.as_ptr()),
            Level::Verbose => ffi::slurm_verbose(fmt.as_ptr(), text.as_ptr()),
            Level::Debug => ffi::slurm_debug(fmt.as_ptr(), text.as_ptr()),
        }
    }
}
