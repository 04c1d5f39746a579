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
/// access checks, which is all the planner needs; the thread's effective
/// capabilities are emptied for the scope too (the kernel drops only the
/// file-system ones with the fsuid: `CAP_SYS_PTRACE` would still open
/// `/proc/<pid>/root` of other processes, `CAP_SYS_ADMIN` more). The
/// previous ids, capabilities and the process's dumpable flag (which the
/// fsuid change clears) come back on drop, also when the closure panics.
pub struct FsIdentity(Option<Saved>);

struct Saved {
    uid: u32,
    gid: u32,
    caps: Option<Caps>,
    dumpable: Dumpable,
}

impl FsIdentity {
    /// Switches file access checks to `who`.
    pub fn enter(who: &Identity) -> FsIdentity {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || who.uid == 0 {
            return FsIdentity(None);
        }
        let dumpable = Dumpable::get();
        let caps = Caps::get();
        // SAFETY: setfsgid/setfsuid return the previous id and only affect
        // this thread's file access checks.
        let (old_gid, old_uid) = unsafe { (libc::setfsgid(who.gid), libc::setfsuid(who.uid)) };
        if let Some(c) = &caps {
            // Permitted kept: the scope's end raises the effective set
            // back.
            c.with_effective(0).set();
        }
        FsIdentity(Some(Saved {
            uid: old_uid as u32,
            gid: old_gid as u32,
            caps,
            dumpable,
        }))
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
        if let Some(s) = &self.0 {
            // SAFETY: see enter.
            unsafe {
                libc::setfsuid(s.uid);
                libc::setfsgid(s.gid);
            }
            if let Some(c) = &s.caps {
                c.set();
            }
            s.dumpable.restore();
        }
    }
}

/// A thread's capability sets (`capget`/`capset` are per thread when
/// called on thread id 0, this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps([libc::c_uint; 6]);

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_V3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

impl Caps {
    /// This thread's sets; `None` when the kernel does not say.
    pub fn get() -> Option<Caps> {
        let mut h = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        // effective, permitted, inheritable for words 0 and 1.
        let mut d = [0 as libc::c_uint; 6];
        // SAFETY: capget writes two 12-byte data structs (6 u32) for
        // version 3; both pointers are valid for the call.
        let rc = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
        (rc == 0).then_some(Caps(d))
    }

    /// The same sets with the effective one set to `bits` in both words.
    fn with_effective(&self, bits: libc::c_uint) -> Caps {
        let mut d = self.0;
        d[0] = bits;
        d[3] = bits;
        Caps(d)
    }

    /// Makes these this thread's sets; false when refused.
    pub fn set(&self) -> bool {
        let mut h = CapHeader {
            version: CAP_V3,
            pid: 0,
        };
        // SAFETY: capset reads two 12-byte data structs for version 3;
        // both pointers are valid for the call. Thread id 0 is this
        // thread only.
        unsafe { libc::syscall(libc::SYS_capset, &mut h, self.0.as_ptr()) == 0 }
    }

    /// Whether every set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

/// The process's dumpable flag, which a change of this thread's fsuid
/// resets for the whole process (the kernel's `commit_creds`): saved
/// before, put back after, so slurmstepd is left as it was.
#[derive(Debug, Clone, Copy)]
pub struct Dumpable(libc::c_int);

impl Dumpable {
    /// The flag now.
    pub fn get() -> Dumpable {
        // SAFETY: PR_GET_DUMPABLE takes no pointer.
        Dumpable(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) })
    }

    /// Puts it back when it changed.
    pub fn restore(&self) {
        if self.0 >= 0 && Dumpable::get().0 != self.0 {
            // SAFETY: PR_SET_DUMPABLE takes a plain value.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, self.0 as libc::c_ulong, 0, 0, 0) };
        }
    }
}

/// Gives this thread `who`'s file access rights for the rest of its life:
/// supplementary groups, fsgid and fsuid, by raw system calls, which in
/// Linux change the calling thread's credentials only (the libc wrappers
/// of setgroups broadcast to every thread of the process), then no
/// capability at all (the fsuid change drops only the file-system ones;
/// `CAP_SYS_PTRACE` would still open `/proc/<pid>/root` of processes in
/// other mount namespaces). Real, effective and saved ids stay root's, so
/// the job user can neither signal nor trace the thread. Returns false when
/// any of it did not take. Call it only in a thread of its own that ends
/// after its work; the caller restores the dumpable flag ([`Dumpable`]).
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
    let ids = unsafe {
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
            return false;
        }
        libc::syscall(libc::SYS_setfsgid, who.gid);
        libc::syscall(libc::SYS_setfsuid, who.uid);
        // setfsuid/setfsgid report no error; an invalid id (-1) changes
        // nothing and returns the current one.
        libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 == who.gid
            && libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 == who.uid
    };
    ids && Caps([0; 6]).set() && Caps::get().is_some_and(|c| c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() {
        // SAFETY: no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "this test needs root (it changes credentials): run the workspace tests as root, as tests/run.sh and CI do"
        );
    }

    const NOBODY: Identity = Identity {
        uid: 65534,
        gid: 65534,
        groups: vec![],
    };

    /// The reading thread ends with no capability at all (CAP_SYS_PTRACE
    /// would open other processes' /proc/<pid>/root), and what it drops is
    /// its own: the caller keeps its sets; the process's dumpable flag is
    /// put back by the caller.
    #[test]
    fn the_reading_thread_has_no_capability_and_the_caller_keeps_its_own() {
        root();
        let before = Caps::get().unwrap();
        assert!(!before.is_empty());
        let dumpable = Dumpable::get();
        let (ok, caps) = std::thread::spawn(|| {
            let ok = fs_identity_for_this_thread(&NOBODY, &[]);
            (ok, Caps::get().unwrap())
        })
        .join()
        .unwrap();
        assert!(ok);
        assert!(caps.is_empty(), "{caps:?}");
        assert_eq!(Caps::get().unwrap(), before);
        dumpable.restore();
        assert_eq!(Dumpable::get().0, dumpable.0);
    }

    /// The planner's scope: no effective capability inside, everything
    /// back after (ids, sets, dumpable flag).
    #[test]
    fn the_planners_scope_empties_the_effective_set_and_restores_it() {
        root();
        let before = Caps::get().unwrap();
        let dumpable = Dumpable::get();
        let inside = FsIdentity::enter(&NOBODY).run(|| {
            // SAFETY: setfsuid(-1) changes nothing and returns the current id.
            (Caps::get().unwrap(), unsafe { libc::setfsuid(u32::MAX) })
        });
        assert_eq!(inside.0 .0[0], 0, "effective set inside: {:?}", inside.0);
        assert_eq!(inside.0 .0[3], 0, "effective set inside: {:?}", inside.0);
        assert_eq!(inside.1, 65534);
        assert_eq!(Caps::get().unwrap(), before);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setfsuid(u32::MAX) }, 0);
        assert_eq!(Dumpable::get().0, dumpable.0);
    }
}
