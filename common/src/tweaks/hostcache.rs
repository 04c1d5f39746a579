//! The per-boot cache of what planning learns about the host's libraries:
//! the ELF facts of each host library read (soname, `DT_NEEDED`, symbol
//! versions) and the answers of the host linker cache (soname -> path).
//!
//! Planning an MPI replacement reads the policy's library and the whole
//! `DT_NEEDED` closure of it through the host's `/etc/ld.so.cache`: a few
//! dozen ELF files and a cache parse at every container start, for facts
//! that change only when the admin installs something. They are kept in
//! `<[cache] dir>/host-libs.json` (next to the node fingerprint):
//!
//! - an ELF entry is keyed by its path and the file's identity as `stat`
//!   gives it through that path: device, inode, size, mtime and ctime
//!   (ctime cannot be set back by anyone), so a replaced, rewritten or
//!   re-pointed library is read again;
//! - the linker cache answers are keyed by the identity of
//!   `/etc/ld.so.cache` itself: running `ldconfig` replaces the file and
//!   drops every answer, negative ones too;
//! - the whole file is keyed by the boot id, hpcc's version and
//!   [`SCHEMA`], so a reboot or an upgrade starts afresh.
//!
//! Only root writes it (atomically, [`crate::io::write_atomic_unsynced`]: a per-boot file needs no flush, a crash ends the boot it is keyed to), only a
//! regular root-owned file that no one else can write is read (opened
//! without following links, checked on the open file), and a cache that
//! cannot be read or trusted is simply not used: it is a speed-up, never a
//! source of truth. Facts about image files are never cached here (the
//! image is the user's).

use crate::elf::ElfInfo;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The cache's file name in the policy's `[cache] dir`.
pub const FILE: &str = "host-libs.json";
/// Bumped when the file's shape or the facts' meaning changes.
pub const SCHEMA: u32 = 1;
/// Largest cache file read (a node's host libraries take tens of KiB).
pub const MAX_BYTES: u64 = 4 << 20;
/// Most ELF entries kept; beyond it, only what the last launch used is kept.
pub const MAX_ELF_ENTRIES: usize = 2048;
/// Most linker cache answers kept.
pub const MAX_LOOKUPS: usize = 8192;

/// A file's identity: what changes when it is replaced or rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileKey {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_size`.
    pub size: u64,
    /// `st_mtime` seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// `st_ctime` seconds and nanoseconds.
    pub ctime: (i64, i64),
}

impl FileKey {
    /// The identity in `m`.
    pub fn of(m: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// The identity of the file `path` names now (links followed).
    pub fn stat(path: &Path) -> Option<FileKey> {
        std::fs::metadata(path).ok().map(|m| FileKey::of(&m))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ElfEntry {
    path: String,
    key: FileKey,
    info: ElfInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lookup {
    soname: String,
    path: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    /// boot id / hpcc version / schema.
    key: String,
    /// The host linker cache the lookups were answered from.
    ld_cache: Option<FileKey>,
    lookups: Vec<Lookup>,
    elves: Vec<ElfEntry>,
}

/// The cache as one launch uses it: loaded once, consulted, extended with
/// what the launch had to read, saved (by root) when it changed.
#[derive(Debug)]
pub struct HostLibCache {
    file: PathBuf,
    key: Option<String>,
    /// The host linker cache's identity now.
    ld_key: Option<FileKey>,
    lookups: HashMap<String, Option<PathBuf>>,
    elves: HashMap<PathBuf, (FileKey, ElfInfo)>,
    /// ELF entries this launch used or added (kept when trimming).
    used: std::collections::HashSet<PathBuf>,
    dirty: bool,
    /// Why the file on disk was not used (tests and debug logs).
    pub(crate) rejected: Option<&'static str>,
}

fn boot_key() -> Option<String> {
    let boot =
        crate::io::read_text_bounded(Path::new("/proc/sys/kernel/random/boot_id"), 128).ok()?;
    Some(format!(
        "{}/{}/{}",
        boot.trim(),
        env!("CARGO_PKG_VERSION"),
        SCHEMA
    ))
}

/// Reads the cache file if it can be trusted: a regular file (no link
/// followed), owned by root, writable by no one else, within
/// [`MAX_BYTES`]. Checked on the open file, so it cannot be swapped
/// between the check and the read.
fn read_trusted(path: &Path) -> Result<Vec<u8>, &'static str> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|_| "absent or not openable")?;
    let m = f.metadata().map_err(|_| "cannot stat")?;
    if !m.is_file() {
        return Err("not a regular file");
    }
    if m.uid() != 0 {
        return Err("not owned by root");
    }
    if m.mode() & 0o022 != 0 {
        return Err("writable by group or others");
    }
    if m.len() > MAX_BYTES {
        return Err("too large");
    }
    crate::io::read_bounded(f, MAX_BYTES).map_err(|_| "unreadable")
}

impl HostLibCache {
    /// The cache in `dir` for a host whose linker cache is `ld_cache`. A
    /// missing, untrusted, stale or broken file gives an empty cache.
    pub fn load(dir: &Path, ld_cache: &Path) -> HostLibCache {
        let file = dir.join(FILE);
        let mut c = HostLibCache {
            file,
            key: boot_key(),
            ld_key: FileKey::stat(ld_cache),
            lookups: HashMap::new(),
            elves: HashMap::new(),
            used: Default::default(),
            dirty: false,
            rejected: None,
        };
        let parsed = read_trusted(&c.file).and_then(|b| {
            serde_json::from_slice::<CacheFile>(&b).map_err(|_| "not a host library cache")
        });
        match parsed {
            Err(why) => c.rejected = Some(why),
            Ok(f) if c.key.is_none() || Some(&f.key) != c.key.as_ref() => {
                c.rejected = Some("another boot or another hpcc");
            }
            Ok(f) => {
                if f.ld_cache.is_some() && f.ld_cache == c.ld_key {
                    c.lookups = f
                        .lookups
                        .into_iter()
                        .map(|l| (l.soname, l.path.map(PathBuf::from)))
                        .collect();
                } else if !f.lookups.is_empty() {
                    // ldconfig ran: every answer is dropped at the next save.
                    c.dirty = true;
                }
                c.elves = f
                    .elves
                    .into_iter()
                    .map(|e| (PathBuf::from(e.path), (e.key, e.info)))
                    .collect();
            }
        }
        if let Some(why) = c.rejected {
            tracing::debug!(cache = %c.file.display(), why, "host library cache not used");
        }
        c
    }

    /// The host linker cache's answer for `soname`, if known: `Some(None)`
    /// is a known miss.
    pub fn lookup(&self, soname: &str) -> Option<Option<PathBuf>> {
        self.ld_key?;
        self.lookups.get(soname).cloned()
    }

    /// Records the host linker cache's answer for `soname`.
    pub fn record_lookup(&mut self, soname: &str, path: Option<&Path>) {
        if self.ld_key.is_none() || self.lookups.len() >= MAX_LOOKUPS {
            return;
        }
        self.lookups
            .insert(soname.to_owned(), path.map(Path::to_owned));
        self.dirty = true;
    }

    /// The cached facts of `path` if the file there is still the one they
    /// were read from.
    pub fn elf(&mut self, path: &Path) -> Option<ElfInfo> {
        let (key, info) = self.elves.get(path)?;
        if FileKey::stat(path) != Some(*key) {
            self.elves.remove(path);
            self.dirty = true;
            return None;
        }
        let info = info.clone();
        self.used.insert(path.to_owned());
        Some(info)
    }

    /// Records the facts of `path`, read from the file whose identity is
    /// `key`.
    pub fn record_elf(&mut self, path: &Path, key: FileKey, info: &ElfInfo) {
        if path.to_str().is_none() {
            return; // not representable in the file; read every time
        }
        self.elves.insert(path.to_owned(), (key, info.clone()));
        self.used.insert(path.to_owned());
        self.dirty = true;
    }

    /// Whether the launch added or dropped anything.
    #[cfg(test)]
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Writes the cache back if it changed and this process is root; a
    /// failure is logged, never fatal.
    pub fn save(&self) {
        if !self.dirty || !nix::unistd::geteuid().is_root() {
            return;
        }
        let Some(key) = &self.key else { return };
        let keep_all = self.elves.len() <= MAX_ELF_ENTRIES;
        let mut elves: Vec<ElfEntry> = self
            .elves
            .iter()
            .filter(|(p, _)| keep_all || self.used.contains(*p))
            .filter_map(|(p, (k, i))| {
                Some(ElfEntry {
                    path: p.to_str()?.to_owned(),
                    key: *k,
                    info: i.clone(),
                })
            })
            .collect();
        elves.sort_by(|a, b| a.path.cmp(&b.path));
        let mut lookups: Vec<Lookup> = self
            .lookups
            .iter()
            .filter_map(|(s, p)| {
                Some(Lookup {
                    soname: s.clone(),
                    path: match p {
                        Some(p) => Some(p.to_str()?.to_owned()),
                        None => None,
                    },
                })
            })
            .collect();
        lookups.sort_by(|a, b| a.soname.cmp(&b.soname));
        let body = CacheFile {
            key: key.clone(),
            ld_cache: self.ld_key,
            lookups,
            elves,
        };
        let res = serde_json::to_vec(&body)
            .map_err(std::io::Error::other)
            .and_then(|b| {
                if b.len() as u64 > MAX_BYTES {
                    return Err(std::io::Error::other("larger than the cache bound"));
                }
                use std::os::unix::fs::DirBuilderExt;
                let dir = self.file.parent().unwrap_or(Path::new("/"));
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)?;
                crate::io::write_atomic_unsynced(
                    &self.file,
                    &b,
                    crate::io::FileMode {
                        mode: 0o644,
                        owner: Some((0, 0)),
                    },
                )
            });
        match res {
            Ok(()) => tracing::debug!(cache = %self.file.display(), "host library cache written"),
            Err(e) => {
                tracing::debug!(cache = %self.file.display(), error = %e, "host library cache not written")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    /// The cache is written by root only: these tests need root (as
    /// `tests/run.sh` runs them) and fail rather than pass unseen.
    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: only root writes the host library cache"
        );
    }

    fn info(soname: &str) -> ElfInfo {
        ElfInfo {
            is_64: true,
            machine: 62,
            soname: Some(soname.into()),
            needed: vec!["libc.so.6".into()],
            version_defs: Default::default(),
            version_needs: vec![],
        }
    }

    /// Gives `path` the atime and mtime of `like` (as a careful upgrade
    /// tool or `touch -r` would).
    fn set_times(path: &Path, like: &std::fs::Metadata) {
        let times = [
            libc::timespec {
                tv_sec: like.atime(),
                tv_nsec: like.atime_nsec(),
            },
            libc::timespec {
                tv_sec: like.mtime(),
                tv_nsec: like.mtime_nsec(),
            },
        ];
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path and an array of two timespecs.
        let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
        assert_eq!(r, 0);
    }

    /// A cache dir with a fake linker cache file and one library file.
    fn setup() -> (TempDir, PathBuf, PathBuf) {
        let t = TempDir::new("hostcache");
        let ld = t.0.join("ld.so.cache");
        std::fs::write(&ld, "cache v1").unwrap();
        let lib = t.0.join("libfoo.so.1");
        std::fs::write(&lib, "elf v1").unwrap();
        (t, ld, lib)
    }

    #[test]
    fn round_trip_then_each_key_change_invalidates() {
        require_root();
        let (t, ld, lib) = setup();
        let dir = t.0.join("cache");
        let mut c = HostLibCache::load(&dir, &ld);
        assert_eq!(c.rejected, Some("absent or not openable"));
        assert!(c.lookup("libfoo.so.1").is_none());
        c.record_lookup("libfoo.so.1", Some(&lib));
        c.record_lookup("libnone.so.1", None);
        c.record_elf(&lib, FileKey::stat(&lib).unwrap(), &info("libfoo.so.1"));
        assert!(c.dirty());
        c.save();
        let m = std::fs::metadata(dir.join(FILE)).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o644));

        // Read back: everything answers, nothing to write.
        let mut c = HostLibCache::load(&dir, &ld);
        assert_eq!(c.rejected, None);
        assert_eq!(c.lookup("libfoo.so.1"), Some(Some(lib.clone())));
        assert_eq!(c.lookup("libnone.so.1"), Some(None));
        assert_eq!(c.lookup("libother.so.1"), None);
        assert_eq!(c.elf(&lib), Some(info("libfoo.so.1")));
        assert!(!c.dirty());

        // The library rewritten (size and mtime change): read again.
        std::fs::write(&lib, "elf v2, longer").unwrap();
        assert_eq!(c.elf(&lib), None);
        assert!(c.dirty());
        c.save();
        let mut c = HostLibCache::load(&dir, &ld);
        assert_eq!(c.elf(&lib), None, "the stale entry was dropped on save");

        // Replaced by another file of the same size and mtime (a new
        // inode, as a package upgrade renames over it): read again.
        c.record_elf(&lib, FileKey::stat(&lib).unwrap(), &info("libfoo.so.1"));
        c.save();
        let before = std::fs::metadata(&lib).unwrap();
        let tmp = t.0.join("libfoo.new");
        std::fs::write(&tmp, "elf v2, LONGER").unwrap();
        set_times(&tmp, &before);
        std::fs::rename(&tmp, &lib).unwrap();
        let mut c = HostLibCache::load(&dir, &ld);
        assert_eq!(c.elf(&lib), None);

        // Same inode rewritten with mtime set back: ctime still differs.
        c.record_elf(&lib, FileKey::stat(&lib).unwrap(), &info("libfoo.so.1"));
        c.save();
        let before = std::fs::metadata(&lib).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&lib, "elf v3, LONGER").unwrap();
        set_times(&lib, &before);
        let mut c = HostLibCache::load(&dir, &ld);
        assert_eq!(c.elf(&lib), None);

        // ldconfig replaced the linker cache: every answer is dropped.
        c.record_lookup("libfoo.so.1", Some(&lib));
        c.save();
        assert!(HostLibCache::load(&dir, &ld)
            .lookup("libfoo.so.1")
            .is_some());
        let new = t.0.join("ld.so.cache.new");
        std::fs::write(&new, "cache v2").unwrap();
        std::fs::rename(&new, &ld).unwrap();
        let c = HostLibCache::load(&dir, &ld);
        assert_eq!(c.lookup("libfoo.so.1"), None);
        assert_eq!(c.lookup("libnone.so.1"), None);
        assert!(c.dirty(), "the dropped answers are written away");
    }

    #[test]
    fn another_boot_or_version_is_not_used() {
        require_root();
        let (t, ld, lib) = setup();
        let dir = t.0.join("cache");
        let mut c = HostLibCache::load(&dir, &ld);
        c.record_elf(&lib, FileKey::stat(&lib).unwrap(), &info("libfoo.so.1"));
        c.key = Some("another-boot/0.0.0/1".into());
        c.save();
        let mut c = HostLibCache::load(&dir, &ld);
        assert_eq!(c.rejected, Some("another boot or another hpcc"));
        assert_eq!(c.elf(&lib), None);
    }

    #[test]
    fn an_untrusted_file_is_not_used() {
        require_root();
        let (t, ld, lib) = setup();
        let dir = t.0.join("cache");
        let mut c = HostLibCache::load(&dir, &ld);
        c.record_elf(&lib, FileKey::stat(&lib).unwrap(), &info("libfoo.so.1"));
        c.save();
        let file = dir.join(FILE);
        // Writable by others.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(
            HostLibCache::load(&dir, &ld).rejected,
            Some("writable by group or others")
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Owned by someone else.
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        assert_eq!(
            HostLibCache::load(&dir, &ld).rejected,
            Some("not owned by root")
        );
        std::os::unix::fs::chown(&file, Some(0), None).unwrap();
        // A symlink to a good file.
        let real = t.0.join("real.json");
        std::fs::rename(&file, &real).unwrap();
        std::os::unix::fs::symlink(&real, &file).unwrap();
        assert_eq!(
            HostLibCache::load(&dir, &ld).rejected,
            Some("absent or not openable")
        );
        std::fs::remove_file(&file).unwrap();
        // Garbage.
        std::fs::write(&file, "{not json").unwrap();
        assert_eq!(
            HostLibCache::load(&dir, &ld).rejected,
            Some("not a host library cache")
        );
        // A directory.
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        assert!(HostLibCache::load(&dir, &ld).rejected.is_some());
    }

    #[test]
    fn nothing_is_written_when_nothing_changed_or_not_root() {
        let (t, ld, _) = setup();
        let dir = t.0.join("cache");
        let c = HostLibCache::load(&dir, &ld);
        c.save();
        assert!(!dir.join(FILE).exists());
    }
}
