//! Credentials: who the plugin acts as, and how it changes that.
//!
//! slurmstepd calls `user_init` with the job user as effective uid and root
//! as real and saved uid. The plugin needs root for the per-boot
//! fingerprint cache and the step's policy file ([`EffectiveRoot`]), the
//! job user's file access for the image's rootfs ([`FsIdentity`]), and a
//! full, irreversible drop in a forked child that reads the user's bundle
//! ([`drop_for_good`]).

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

/// Drops to `who` for good (real, effective and saved ids, groups) and
/// checks that root cannot be taken back. Raw system calls only: the libc
/// wrappers of setuid and friends broadcast to all threads through a lock,
/// which a forked child of a threaded process must never take; the raw
/// calls change exactly this (only) thread. Returns false on any failure.
///
/// # Safety
/// Only in a single-threaded process (a freshly forked child), which then
/// runs as `who` for the rest of its life.
pub unsafe fn drop_for_good(who: &Identity, groups: &[libc::gid_t]) -> bool {
    // SAFETY: raw credential system calls on plain integers and on a slice
    // that outlives the call; the caller guarantees one thread.
    unsafe {
        // Take root back first (user_init runs with the job user as
        // effective uid), or setgroups fails. Failing here is fine: then we
        // were not root at all.
        libc::syscall(libc::SYS_setresuid, -1i64, 0i64, -1i64);
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
            || libc::syscall(libc::SYS_setresgid, who.gid, who.gid, who.gid) != 0
            || libc::syscall(libc::SYS_setresuid, who.uid, who.uid, who.uid) != 0
        {
            return false;
        }
        // A uid 0 target is allowed (root's own jobs); anything else must
        // have lost root.
        !(who.uid != 0 && libc::syscall(libc::SYS_setresuid, 0, 0, 0) == 0)
    }
}
