//! Credentials: who the plugin acts as, and how it changes that.
//!
//! slurmstepd calls `user_init` with the job user as effective uid and root
//! as real and saved uid. The plugin needs root for the per-boot
//! fingerprint cache and the step's policy file ([`EffectiveRoot`]), the
//! job user's file access for the image's rootfs ([`FsIdentity`]), and
//! the job user's file access rights, groups included, for good in the
//! thread that reads the user's bundle ([`fs_identity_for_this_thread`]).

/// A job user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub groups: Vec<u32>,
}

/// Effective uid 0 for a scope, the previous effective uid restored after.
pub struct EffectiveRoot(Option<libc::uid_t>);

impl EffectiveRoot {
    /// Takes effective root back when the real or saved uid is root.
    pub fn take() -> EffectiveRoot {
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
                crate::slurm::log(
                    crate::slurm::Level::Error,
                    "hpcc: cannot restore the job user's effective uid after the check",
                );
            }
        }
    }
}

/// The job user's fsuid/fsgid on this thread for a scope (root only; a
/// no-op otherwise). setfsuid is per thread and changes nothing but file
/// access checks, which is all the planner needs; the previous ids come
/// back on drop, also when the closure panics.
pub struct FsIdentity(Option<(u32, u32)>);

impl FsIdentity {
    /// Switches file access checks to `who`.
    pub fn enter(who: &Identity) -> FsIdentity {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || who.uid == 0 {
            return FsIdentity(None);
        }
        // SAFETY: setfsgid/setfsuid return the previous id and only affect
        // this thread's file access checks.
        let (old_gid, old_uid) = unsafe { (libc::setfsgid(who.gid), libc::setfsuid(who.uid)) };
        FsIdentity(Some((old_uid as u32, old_gid as u32)))
    }

    /// Runs `f` with these file access rights.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        let out = f();
        drop(self);
        out
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        if let Some((uid, gid)) = self.0 {
            // SAFETY: see enter.
            unsafe {
                libc::setfsuid(uid);
                libc::setfsgid(gid);
            }
        }
    }
}

/// Gives this thread `who`'s file access rights for the rest of its life:
/// supplementary groups, fsgid and fsuid, by raw system calls, which in
/// Linux change the calling thread's credentials only (the libc wrappers
/// of setgroups broadcast to every thread of the process). Real, effective
/// and saved ids stay as they are, so the job user can neither signal nor
/// trace the thread; the kernel drops the file-system capabilities
/// (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`, ...) from the thread's
/// effective set as its fsuid leaves 0. Returns false when the ids did not
/// take. Call it only in a thread of its own that ends after its work.
pub fn fs_identity_for_this_thread(who: &Identity, groups: &[libc::gid_t]) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        // Not root: no other identity to take; our own rights are never
        // more than the user's only when we are that user.
        return who.uid == euid;
    }
    // SAFETY: raw credential system calls on plain integers and on a slice
    // that outlives the call; they change this thread's credentials only.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
            return false;
        }
        libc::syscall(libc::SYS_setfsgid, who.gid);
        libc::syscall(libc::SYS_setfsuid, who.uid);
        // setfsuid/setfsgid report no error; an invalid id (-1) changes
        // nothing and returns the current one.
        libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 == who.gid
            && libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 == who.uid
    }
}
