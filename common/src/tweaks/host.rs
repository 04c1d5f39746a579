//! What the planner asks of the host: its linker cache, ELF facts of its
//! libraries, device numbers, directory listings and the CDI spec files.
//!
//! Behind a trait so the planner is unit-tested with a fake host (GPUs,
//! libraries and devices this machine does not have); [`RealHost`] is the
//! only implementation that touches the system. Host paths come from the
//! admin's policy and the host's own linker cache: they are trusted, but
//! still read with bounds.

use super::hostcache::{FileKey, HostLibCache};
use super::ldcache::{native_flags, LdCache, LdCacheError, MAX_CACHE_BYTES};
use crate::elf::{ElfError, ElfInfo};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A device node's identity, as `stat` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceId {
    /// `c` or `b`.
    pub kind: char,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
}

/// The host as the planner sees it.
pub trait Host {
    /// Where the host's linker finds `soname` (native architecture only).
    fn find_library(&self, soname: &str) -> Option<PathBuf>;
    /// ELF facts of a host library.
    fn elf(&self, path: &Path) -> Result<ElfInfo, ElfError>;
    /// The device node at `path`, `None` when absent or not a device.
    fn device(&self, path: &Path) -> Option<DeviceId>;
    /// The file `path` resolves to (symlinks followed), for version
    /// comparisons (`libmpich.so.12` -> `libmpich.so.12.2.2`).
    fn canonical(&self, path: &Path) -> Option<PathBuf>;
    /// Whether `path` exists (following symlinks).
    fn exists(&self, path: &Path) -> bool;
    /// Whether `path` is a directory (following symlinks).
    fn is_dir(&self, path: &Path) -> bool;
    /// Entries of a directory as full paths, sorted, at most `limit`.
    fn list_dir(&self, path: &Path, limit: usize) -> Vec<PathBuf>;
    /// A small trusted file (CDI spec), at most `limit` bytes; larger is an
    /// error.
    fn read_file(&self, path: &Path, limit: u64) -> std::io::Result<Vec<u8>>;
}

/// The real host: `/etc/ld.so.cache` parsed once, when first needed (most
/// launches plan no library tweak), `stat`, `readdir`. With a per-boot
/// cache ([`RealHost::for_policy`]) the ELF facts and linker cache answers
/// of earlier launches are reused while the files are unchanged
/// ([`super::hostcache`]), and [`RealHost::save`] keeps what this launch
/// learnt.
#[derive(Debug, Default)]
pub struct RealHost {
    path: PathBuf,
    cache: std::cell::OnceCell<(LdCache, Option<String>)>,
    /// ELF facts already read: an MPI library is tens of MiB and several
    /// components ask about it.
    elves: std::cell::RefCell<std::collections::BTreeMap<PathBuf, ElfInfo>>,
    /// The per-boot cache's directory, when used.
    store_dir: Option<PathBuf>,
    /// The per-boot cache, loaded when first needed.
    store: std::cell::OnceCell<std::cell::RefCell<HostLibCache>>,
}

impl RealHost {
    /// A host whose linker cache is at `path`, without the per-boot cache
    /// (`hpcc doctor`: what is there now, through [`crate::host`]).
    pub fn uncached(path: &Path) -> RealHost {
        RealHost {
            path: path.to_owned(),
            ..Default::default()
        }
    }

    /// Why the host linker cache cannot be used, if it cannot (parses it
    /// now when not yet parsed).
    pub fn cache_problem_now(&self) -> Option<String> {
        self.cache();
        self.cache.get().and_then(|(_, p)| p.clone())
    }

    /// A host that reuses the per-boot host library cache in the policy's
    /// `[cache] dir` (none when the policy disables caching).
    pub fn for_policy(path: &Path, policy: &hpcc_config::Policy) -> RealHost {
        RealHost {
            path: path.to_owned(),
            store_dir: policy.cache.enabled.then(|| policy.cache.dir.clone()),
            ..Default::default()
        }
    }

    fn store(&self) -> Option<&std::cell::RefCell<HostLibCache>> {
        let dir = self.store_dir.as_ref()?;
        Some(
            self.store
                .get_or_init(|| std::cell::RefCell::new(HostLibCache::load(dir, &self.path))),
        )
    }

    /// Writes what this launch learnt into the per-boot cache (root only;
    /// nothing when nothing changed or no cache is used).
    pub fn save(&self) {
        if let Some(s) = self.store.get() {
            s.borrow().save();
        }
    }

    fn cache(&self) -> &LdCache {
        &self
            .cache
            .get_or_init(|| {
                let parsed = read_bounded(&self.path, MAX_CACHE_BYTES)
                    .map_err(|e| e.to_string())
                    .and_then(|b| LdCache::parse(&b).map_err(|e: LdCacheError| e.to_string()));
                match parsed {
                    Ok(c) => (c, None),
                    Err(e) => {
                        tracing::warn!(cache = %self.path.display(), error = %e, "host linker cache unusable");
                        (LdCache::default(), Some(format!("{}: {e}", self.path.display())))
                    }
                }
            })
            .0
    }
}

fn readable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::R_OK).is_ok()
}

fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "{} is larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

impl Host for RealHost {
    fn find_library(&self, soname: &str) -> Option<PathBuf> {
        let store = self.store();
        if let Some(hit) = store.and_then(|s| s.borrow().lookup(soname)) {
            return hit;
        }
        let found = self.cache().find(soname, native_flags());
        // An unusable linker cache answers nothing: not worth remembering.
        if self
            .cache
            .get()
            .is_some_and(|(_, problem)| problem.is_none())
        {
            if let Some(s) = store {
                s.borrow_mut().record_lookup(soname, found.as_deref());
            }
        }
        found
    }

    fn elf(&self, path: &Path) -> Result<ElfInfo, ElfError> {
        if let Some(i) = self.elves.borrow().get(path) {
            return Ok(i.clone());
        }
        let store = self.store();
        // A non-root launch gets cached facts only of files it can read
        // itself, as it would without the cache.
        let cached = store
            .and_then(|s| s.borrow_mut().elf(path))
            .filter(|_| nix::unistd::geteuid().is_root() || readable(path));
        let info = match cached {
            Some(i) => i,
            None => {
                // Only the headers, dynamic section, strings and version
                // sections are read: a 40 MiB MPI library costs a few
                // pages, not a 40 MiB copy (about 23 ms here).
                let name = path.display().to_string();
                let f = std::fs::File::open(path).map_err(|source| ElfError::Read {
                    path: name.clone(),
                    source,
                })?;
                let info = ElfInfo::read_sparse(&f, &name)?;
                // The identity of the file read, not of what the path
                // names a moment later.
                if let (Some(s), Ok(m)) = (store, f.metadata()) {
                    s.borrow_mut().record_elf(path, FileKey::of(&m), &info);
                }
                info
            }
        };
        self.elves
            .borrow_mut()
            .insert(path.to_owned(), info.clone());
        Ok(info)
    }

    fn device(&self, path: &Path) -> Option<DeviceId> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::metadata(path).ok()?;
        let kind = if m.file_type().is_char_device() {
            'c'
        } else if m.file_type().is_block_device() {
            'b'
        } else {
            return None;
        };
        let rdev = m.rdev();
        Some(DeviceId {
            kind,
            major: nix::sys::stat::major(rdev),
            minor: nix::sys::stat::minor(rdev),
        })
    }

    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn list_dir(&self, path: &Path, limit: usize) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|d| {
                d.filter_map(Result::ok)
                    .take(limit)
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn read_file(&self, path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
        read_bounded(path, limit)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A host written by hand: libraries with chosen ELF facts, devices,
    //! files.
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Default)]
    pub(crate) struct FakeHost {
        pub cache: BTreeMap<String, PathBuf>,
        pub elves: BTreeMap<PathBuf, ElfInfo>,
        pub devices: BTreeMap<PathBuf, DeviceId>,
        pub files: BTreeMap<PathBuf, Vec<u8>>,
        pub dirs: BTreeSet<PathBuf>,
        /// Symlinks: path -> real file.
        pub real: BTreeMap<PathBuf, PathBuf>,
    }

    /// ELF facts of an x86-64 library.
    pub(crate) fn lib(soname: &str, needed: &[&str], glibc: &[&str]) -> ElfInfo {
        ElfInfo {
            is_64: true,
            machine: 62,
            soname: Some(soname.into()),
            needed: needed.iter().map(|s| s.to_string()).collect(),
            version_defs: Default::default(),
            version_needs: glibc
                .iter()
                .map(|v| ("libc.so.6".to_string(), format!("GLIBC_{v}")))
                .collect(),
        }
    }

    impl FakeHost {
        /// Adds a library under `dir/soname`, in the cache.
        pub(crate) fn add(&mut self, dir: &str, info: ElfInfo) -> PathBuf {
            let so = info.soname.clone().unwrap();
            let p = Path::new(dir).join(&so);
            self.cache.insert(so, p.clone());
            self.elves.insert(p.clone(), info);
            p
        }
    }

    impl Host for FakeHost {
        fn find_library(&self, soname: &str) -> Option<PathBuf> {
            self.cache.get(soname).cloned()
        }
        fn elf(&self, path: &Path) -> Result<ElfInfo, ElfError> {
            self.elves.get(path).cloned().ok_or_else(|| ElfError::Read {
                path: path.display().to_string(),
                source: std::io::ErrorKind::NotFound.into(),
            })
        }
        fn device(&self, path: &Path) -> Option<DeviceId> {
            self.devices.get(path).copied()
        }
        fn canonical(&self, path: &Path) -> Option<PathBuf> {
            Some(
                self.real
                    .get(path)
                    .cloned()
                    .unwrap_or_else(|| path.to_owned()),
            )
        }
        fn exists(&self, path: &Path) -> bool {
            self.elves.contains_key(path)
                || self.devices.contains_key(path)
                || self.files.contains_key(path)
                || self.dirs.contains(path)
        }
        fn is_dir(&self, path: &Path) -> bool {
            self.dirs.contains(path)
        }
        fn list_dir(&self, path: &Path, limit: usize) -> Vec<PathBuf> {
            let mut all: BTreeSet<PathBuf> = BTreeSet::new();
            for p in self
                .elves
                .keys()
                .chain(self.devices.keys())
                .chain(self.files.keys())
                .chain(self.dirs.iter())
            {
                if p.parent() == Some(path) {
                    all.insert(p.clone());
                }
            }
            all.into_iter().take(limit).collect()
        }
        fn read_file(&self, path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
            let b = self
                .files
                .get(path)
                .cloned()
                .ok_or(std::io::ErrorKind::NotFound)?;
            if b.len() as u64 > limit {
                return Err(std::io::Error::other("too large"));
            }
            Ok(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_host_reads_libraries_sparsely_and_remembers_them() {
        let h = RealHost::uncached(Path::new("/etc/ld.so.cache"));
        let libc = h.find_library("libc.so.6").unwrap();
        let info = h.elf(&libc).unwrap();
        assert_eq!(info, ElfInfo::read(&libc).unwrap());
        assert_eq!(h.elves.borrow().len(), 1);
        assert_eq!(h.elf(&libc).unwrap(), info);
        assert!(h.elf(Path::new("/etc/hostname")).is_err());
        assert!(h.elf(Path::new("/nonexistent.so")).is_err());
    }

    #[test]
    fn cached_host_answers_like_the_uncached_one_and_rereads_changed_files() {
        if !nix::unistd::geteuid().is_root() {
            return; // only root writes the per-boot cache
        }
        let t = crate::testutil::TempDir::new("realhost-cache");
        let mut policy = hpcc_config::Policy::default();
        policy.cache.dir = t.0.join("cache");
        let ld = Path::new("/etc/ld.so.cache");
        let plain = RealHost::uncached(ld);
        let libc = plain.find_library("libc.so.6").unwrap();
        // A library of our own, to rewrite.
        let lib = t.0.join("libown.so");
        std::fs::copy(&libc, &lib).unwrap();
        let names = ["libc.so.6", "libm.so.6", "libhpcc-none.so.9"];

        let cold = RealHost::for_policy(ld, &policy);
        for n in names {
            assert_eq!(cold.find_library(n), plain.find_library(n), "{n}");
        }
        assert_eq!(cold.elf(&libc).unwrap(), plain.elf(&libc).unwrap());
        assert_eq!(cold.elf(&lib).unwrap().soname.as_deref(), Some("libc.so.6"));
        cold.save();

        // Warm: the same answers, and the host linker cache is not even
        // parsed.
        let warm = RealHost::for_policy(ld, &policy);
        for n in names {
            assert_eq!(warm.find_library(n), plain.find_library(n), "{n}");
        }
        assert_eq!(warm.elf(&libc).unwrap(), plain.elf(&libc).unwrap());
        assert!(
            warm.cache.get().is_none(),
            "the host linker cache was parsed"
        );

        // The library replaced by another: its new facts, not the cached.
        let libm = plain.find_library("libm.so.6").unwrap();
        std::fs::copy(&libm, &lib).unwrap();
        let after = RealHost::for_policy(ld, &policy);
        assert_eq!(
            after.elf(&lib).unwrap().soname.as_deref(),
            Some("libm.so.6")
        );
        after.save();
        let again = RealHost::for_policy(ld, &policy);
        assert_eq!(
            again.elf(&lib).unwrap().soname.as_deref(),
            Some("libm.so.6")
        );

        // A policy without the cache neither reads nor writes it.
        policy.cache.enabled = false;
        let off = RealHost::for_policy(ld, &policy);
        assert!(off.store().is_none());
    }

    #[test]
    fn real_host_finds_libraries_and_devices() {
        let h = RealHost::uncached(Path::new("/etc/ld.so.cache"));
        assert!(
            h.cache_problem_now().is_none(),
            "{:?}",
            h.cache_problem_now()
        );
        assert!(h.find_library("libc.so.6").is_some());
        let null = h.device(Path::new("/dev/null")).unwrap();
        assert_eq!((null.kind, null.major, null.minor), ('c', 1, 3));
        assert!(h.device(Path::new("/etc/hostname")).is_none());
        assert!(h.device(Path::new("/nonexistent")).is_none());
        let missing = RealHost::uncached(Path::new("/nonexistent/ld.so.cache"));
        assert!(missing.cache_problem_now().is_some());
        assert!(missing.find_library("libc.so.6").is_none());
    }
}
