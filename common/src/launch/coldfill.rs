//! The first start after boot when many start at once.
//!
//! A parallel launcher (`pdsh`, `clush`, `srun` across a node's ranks)
//! starts one job's containers at the same instant. On a cold per-boot
//! cache each of them would do the whole work itself: the fingerprint (on
//! a hook, a helper process), the host library facts, the stack and the
//! linker cache, 128 times over on the node's few cores. Instead one
//! launch fills the cache while the others wait for it, then find it
//! warm.
//!
//! The protocol is one `flock` on `<cache dir>/fill.lock`:
//! - a launch that finds the fingerprint cache cold takes the lock
//!   exclusively, without waiting; it is the filler and holds the lock
//!   until its effect is done (the stack and linker cache written), by
//!   keeping the returned [`FillGuard`];
//! - a launch that cannot take it (someone fills), or that finds the
//!   fingerprint warm while the lock is held (the filler wrote the
//!   fingerprint and is still at the rest), waits for a shared lock, lets
//!   it go at once and carries on with the now warm cache;
//! - a launch that finds the fingerprint warm and the lock free pays one
//!   `open` and one `flock`.
//!
//! Waiting is bounded ([`WAIT`]): a filler that hangs costs the others
//! that much, then each does its own work as before. The lock only orders
//! work that is correct in any order (every cache write is atomic and
//! checked on read), so a lost or skipped lock costs time, never
//! correctness. Only root takes it (only root writes the cache); the lock
//! file is opened without following links in the root-owned cache
//! directory.

use crate::fingerprint::{GpuProbe, NodeFingerprint};
use hpcc_config::Policy;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a launch waits for another one's fill: well above a fill's
/// own time (tens of milliseconds), well below a runtime's hook timeout.
pub const WAIT: Duration = Duration::from_secs(3);

/// The lock's file in the cache directory.
pub const LOCK_FILE: &str = "fill.lock";

/// Held by the launch that fills the cold cache until its effect is done;
/// dropping it lets the waiting launches go.
#[derive(Debug, Default)]
#[must_use = "the fill lock is released when this is dropped"]
pub struct FillGuard {
    // Held for its lock: closing the descriptor releases it.
    _lock: Option<File>,
}

impl FillGuard {
    /// Whether this launch is the one filling the cache.
    pub fn is_filler(&self) -> bool {
        self._lock.is_some()
    }
}

/// The node's fingerprint for a launch, and the fill lock when this
/// launch is the one to fill the cold per-boot cache (see the module).
pub fn fingerprint(policy: &Policy, probe: &GpuProbe) -> (NodeFingerprint, FillGuard) {
    if !policy.cache.enabled || !nix::unistd::geteuid().is_root() {
        return (
            NodeFingerprint::cached_with(policy, probe),
            FillGuard::default(),
        );
    }
    let lock = match open_lock(&policy.cache.dir) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(dir = %policy.cache.dir.display(), error = %e, "no fill lock: the cache is filled without one");
            return (
                NodeFingerprint::cached_with(policy, probe),
                FillGuard::default(),
            );
        }
    };
    if let Some(fp) = NodeFingerprint::from_cache(policy) {
        // Warm, unless a filler is still at the rest of the cache.
        if !flock(&lock, libc::LOCK_SH | libc::LOCK_NB) {
            wait_for_filler(&lock, &policy.cache.dir);
        }
        return (fp, FillGuard::default());
    }
    if flock(&lock, libc::LOCK_EX | libc::LOCK_NB) {
        tracing::debug!(dir = %policy.cache.dir.display(), "cold cache: this launch fills it");
        // Another filler may have finished between the look and the lock:
        // `cached_with` reads the cache again before taking anything.
        let fp = NodeFingerprint::cached_with(policy, probe);
        return (fp, FillGuard { _lock: Some(lock) });
    }
    wait_for_filler(&lock, &policy.cache.dir);
    drop(lock);
    (
        NodeFingerprint::cached_with(policy, probe),
        FillGuard::default(),
    )
}

/// Waits, at most [`WAIT`], until no launch holds the lock exclusively.
fn wait_for_filler(lock: &File, dir: &Path) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if flock(lock, libc::LOCK_SH | libc::LOCK_NB) {
            tracing::debug!(
                waited_ms = start.elapsed().as_millis() as u64,
                "another launch filled the cache"
            );
            return;
        }
        if start.elapsed() >= WAIT {
            tracing::warn!(dir = %dir.display(), "another launch has been filling the per-boot cache for {} s: this one does its own work", WAIT.as_secs());
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(16));
    }
}

fn open_lock(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    // A directory someone else can write (a pre-made or misconfigured
    // `[cache] dir`) would let them hold the lock and stall every root
    // launch by WAIT: no lock there.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(
            "the cache directory is not root's alone",
        ));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(LOCK_FILE))
}

/// `flock(op)`: whether it was granted (`false` when it would block or
/// failed).
fn flock(f: &File, op: libc::c_int) -> bool {
    // SAFETY: flock on a descriptor owned by `f`, alive for the call; no
    // memory is passed.
    unsafe { libc::flock(f.as_raw_fd(), op) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn policy(dir: &Path) -> Policy {
        let mut p = Policy::default();
        p.cache.dir = dir.to_owned();
        p
    }

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn a_cold_cache_makes_one_filler_and_a_warm_one_none() {
        if !root() {
            return;
        }
        let t = TempDir::new("coldfill");
        let p = policy(&t.0.join("cache"));
        let (fp, guard) = fingerprint(&p, &GpuProbe::InProcess);
        assert!(
            guard.is_filler(),
            "the first launch on a cold cache fills it"
        );
        drop(guard);
        assert!(t.0.join("cache/fingerprint.json").is_file());
        let (again, guard) = fingerprint(&p, &GpuProbe::InProcess);
        assert!(!guard.is_filler(), "a warm cache has no filler");
        assert_eq!(fp, again);
    }

    #[test]
    fn a_launch_waits_for_the_filler_then_finds_the_cache_warm() {
        if !root() {
            return;
        }
        let t = TempDir::new("coldfill-wait");
        let p = policy(&t.0.join("cache"));
        let (_, filler) = fingerprint(&p, &GpuProbe::InProcess);
        assert!(filler.is_filler());
        // A second launch (its own descriptor, as another process has)
        // waits while the filler holds the lock, even though the
        // fingerprint is already written.
        let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (p2, r2) = (p.clone(), released.clone());
        let waiter = std::thread::spawn(move || {
            let start = Instant::now();
            let (_, g) = fingerprint(&p2, &GpuProbe::InProcess);
            // Read as soon as the wait is over: it must come after the
            // filler let go.
            let after_release = r2.load(std::sync::atomic::Ordering::SeqCst);
            tx.send((start.elapsed(), after_release, g.is_filler()))
                .unwrap();
        });
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            rx.try_recv().is_err(),
            "the waiter went on while the fill lock was held"
        );
        released.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(filler);
        let (waited, after_release, filled) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
        assert!(after_release, "the waiter went on before the filler let go");
        assert!(waited < WAIT, "{waited:?}");
        assert!(!filled);
    }

    #[test]
    fn a_planted_link_is_not_followed() {
        if !root() {
            return;
        }
        let t = TempDir::new("coldfill-link");
        let dir = t.0.join("cache");
        std::fs::create_dir_all(&dir).unwrap();
        let target = t.0.join("elsewhere");
        std::os::unix::fs::symlink(&target, dir.join(LOCK_FILE)).unwrap();
        let (_, g) = fingerprint(&policy(&dir), &GpuProbe::InProcess);
        assert!(!g.is_filler(), "no lock through a link");
        assert!(!target.exists(), "the link's target was created");
    }

    #[test]
    fn a_directory_others_can_write_gets_no_lock() {
        if !root() {
            return;
        }
        let t = TempDir::new("coldfill-open");
        let dir = t.0.join("cache");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let (_, g) = fingerprint(&policy(&dir), &GpuProbe::InProcess);
        assert!(!g.is_filler());
        assert!(!dir.join(LOCK_FILE).exists());
    }
}
