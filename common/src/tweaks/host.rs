//! What the planner asks of the host: its linker cache, ELF facts of its
//! libraries, device numbers, directory listings and the CDI spec files.
//!
//! Behind a trait so the planner is unit-tested with a fake host (GPUs,
//! libraries and devices this machine does not have); [`RealHost`] is the
//! only implementation that touches the system. Host paths come from the
//! admin's policy and the host's own linker cache: they are trusted, but
//! still read with bounds.

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
/// launches plan no library tweak), `stat`, `readdir`.
#[derive(Debug, Default)]
pub struct RealHost {
    path: PathBuf,
    cache: std::cell::OnceCell<(LdCache, Option<String>)>,
    /// ELF facts already read: an MPI library is tens of MiB and several
    /// components ask about it.
    elves: std::cell::RefCell<std::collections::BTreeMap<PathBuf, ElfInfo>>,
}

impl RealHost {
    /// A host whose linker cache is at `path` (normally `/etc/ld.so.cache`).
    /// A missing or broken cache is not an error: it is logged, and
    /// dependency lookups then fail one by one, each reported.
    pub fn new(path: &Path) -> RealHost {
        RealHost {
            path: path.to_owned(),
            ..Default::default()
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

    /// Why the host linker cache cannot be used, if it cannot.
    #[cfg(test)]
    pub fn cache_problem(&self) -> Option<String> {
        self.cache();
        self.cache.get().and_then(|(_, p)| p.clone())
    }
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

/// Section types whose bytes are never needed for [`ElfInfo`]: code and
/// data (`SHT_PROGBITS`), `.bss` (`SHT_NOBITS`) and the static symbol
/// table (`SHT_SYMTAB`).
const SKIPPED_SECTIONS: [u32; 3] = [1, 8, 2];

/// Reads only the parts of a 64-bit little-endian ELF file that
/// [`ElfInfo`] looks at (headers, dynamic section, dynamic strings and
/// symbols, symbol versions) into an otherwise zeroed buffer of the file's
/// size, then parses that. A 40 MiB MPI library costs a few pages instead
/// of a 40 MiB copy (about 23 ms here): this runs at every container
/// launch. `None` (then the whole file is read) for anything unexpected.
fn sparse_elf(path: &Path) -> Option<ElfInfo> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    if !(64..=crate::elf::MAX_ELF_BYTES).contains(&len) {
        return None;
    }
    let mut head = [0u8; 64];
    f.read_exact_at(&mut head, 0).ok()?;
    // ELFCLASS64, ELFDATA2LSB: the layout read below.
    if &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let (phoff, shoff) = (u64_at(&head, 32), u64_at(&head, 40));
    let (phentsize, phnum) = (u16_at(&head, 54) as u64, u16_at(&head, 56) as u64);
    let (shentsize, shnum) = (u16_at(&head, 58) as u64, u16_at(&head, 60) as u64);
    if shentsize != 64 || shnum == 0 || phentsize != 56 {
        return None;
    }
    // vec![0; n] is calloc: untouched pages are never materialised.
    let mut buf = vec![0u8; len as usize];
    let fill = |buf: &mut [u8], off: u64, size: u64| -> Option<()> {
        let end = off.checked_add(size)?;
        if end > len {
            return None;
        }
        f.read_exact_at(&mut buf[off as usize..end as usize], off)
            .ok()
    };
    fill(&mut buf, 0, 64)?;
    fill(&mut buf, phoff, phentsize * phnum)?;
    fill(&mut buf, shoff, shentsize * shnum)?;
    let shdrs = buf[shoff as usize..(shoff + shentsize * shnum) as usize].to_vec();
    for i in 0..shnum as usize {
        let sh = &shdrs[i * 64..(i + 1) * 64];
        let kind = u32_at(sh, 4);
        if SKIPPED_SECTIONS.contains(&kind) || kind == 0 {
            continue;
        }
        fill(&mut buf, u64_at(sh, 24), u64_at(sh, 32))?;
    }
    ElfInfo::parse(&buf, &path.display().to_string()).ok()
}

impl Host for RealHost {
    fn find_library(&self, soname: &str) -> Option<PathBuf> {
        self.cache().find(soname, native_flags())
    }

    fn elf(&self, path: &Path) -> Result<ElfInfo, ElfError> {
        if let Some(i) = self.elves.borrow().get(path) {
            return Ok(i.clone());
        }
        let info = match sparse_elf(path) {
            Some(i) => i,
            None => ElfInfo::read(path)?,
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
    fn sparse_read_equals_full_read_on_every_host_library() {
        // Every shared library of this Debian host: the sparse reader must
        // see exactly what a full read sees.
        let mut n = 0;
        for e in std::fs::read_dir("/usr/lib/x86_64-linux-gnu").unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !name.contains(".so.") || p.is_symlink() || !p.is_file() {
                continue;
            }
            let Ok(full) = ElfInfo::read(&p) else {
                continue;
            };
            let sparse =
                sparse_elf(&p).unwrap_or_else(|| panic!("{} not read sparsely", p.display()));
            assert_eq!(sparse, full, "{}", p.display());
            n += 1;
        }
        assert!(n > 100, "only {n} libraries compared");
        assert!(sparse_elf(Path::new("/etc/hostname")).is_none());
    }

    #[test]
    fn real_host_finds_libraries_and_devices() {
        let h = RealHost::new(Path::new("/etc/ld.so.cache"));
        assert!(h.cache_problem().is_none(), "{:?}", h.cache_problem());
        assert!(h.find_library("libc.so.6").is_some());
        let null = h.device(Path::new("/dev/null")).unwrap();
        assert_eq!((null.kind, null.major, null.minor), ('c', 1, 3));
        assert!(h.device(Path::new("/etc/hostname")).is_none());
        assert!(h.device(Path::new("/nonexistent")).is_none());
        let missing = RealHost::new(Path::new("/nonexistent/ld.so.cache"));
        assert!(missing.cache_problem().is_some());
        assert!(missing.find_library("libc.so.6").is_none());
    }
}
