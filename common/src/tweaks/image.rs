//! The image's libraries, found the way its own loader would find them:
//! its linker cache (`/etc/ld.so.cache`) and the library directories
//! (standard ones and those of its `ld.so.conf`).
//!
//! Both are read because either can lie by omission: a cache is often
//! stale or absent (a conda MPI installed without `ldconfig`), and a
//! library may live only in a directory the cache names. Every read goes
//! through [`Rootfs`], so an absolute symlink in the image resolves inside
//! it, and every read is bounded.
//!
//! Both can also lie by excess, so the work is bounded too: the scan keeps
//! at most [`MAX_SCANNED_NAMES`] library names, and a name yields at most
//! [`MAX_CANDIDATES`] candidate files, resolved only once picked (each
//! resolution is a system call, each candidate a mount for the planner).
//! An image whose cache lists 60,000 paths for `libmpich.so.12` costs the
//! same as one that lists one, and [`Found`] says what was left out.
//! Planning is `n log n` in the image's size: sets and maps, no linear
//! searches inside loops over the image's entries.

use super::ldcache::{native_flags, LdCache, MAX_CACHE_BYTES};
use super::soname::split_soname;
use crate::elf::{ElfError, ElfInfo};
use crate::rootfs::{Rootfs, RootfsError};
use crate::version::Version;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Library directories searched whatever the cache says (the loader's
/// defaults, Debian's multiarch ones, and the usual prefixes).
pub fn standard_dirs() -> Vec<&'static str> {
    let triplet = if cfg!(target_arch = "aarch64") {
        "aarch64-linux-gnu"
    } else if cfg!(target_arch = "powerpc64") {
        "powerpc64le-linux-gnu"
    } else {
        "x86_64-linux-gnu"
    };
    let mut v = match triplet {
        "aarch64-linux-gnu" => vec!["/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu"],
        "powerpc64le-linux-gnu" => {
            vec![
                "/lib/powerpc64le-linux-gnu",
                "/usr/lib/powerpc64le-linux-gnu",
            ]
        }
        _ => vec!["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"],
    };
    v.extend(["/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib"]);
    v
}

/// Most `ld.so.conf` files followed through `include` lines.
const MAX_CONF_FILES: usize = 64;
/// Most library directories scanned.
const MAX_DIRS: usize = 128;
/// Largest `ld.so.conf` file read.
const MAX_CONF_BYTES: u64 = 64 << 10;
/// Most candidate files considered for one library name: the first ones
/// the loader would try. A real image has one or two (a merged `/usr` lists
/// the same file under `/lib` and `/usr/lib`).
pub const MAX_CANDIDATES: usize = 8;
/// Most library file names kept from all the directories scanned. A full
/// Debian image has a few thousand.
pub const MAX_SCANNED_NAMES: usize = 65_536;
/// Longest name looked at by [`ImageLibs::majors`]: a file name, or a
/// soname a file could carry (`NAME_MAX`).
const MAX_NAME_LEN: usize = 255;
/// Most cache entries resolved to count stale ones, for messages only.
const MAX_STALE_CHECKS: usize = 4096;

/// Why a fact about the image's libraries is unknown.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageLibError {
    /// Reading the image failed (the message names the path in the image).
    #[error(transparent)]
    Rootfs(#[from] Arc<RootfsError>),
    /// The file is not an ELF object hpcc inspects.
    #[error(transparent)]
    Elf(#[from] Arc<ElfError>),
    /// No `libc.so.6` anywhere the loader looks.
    #[error("the image has no libc.so.6 ({searched})")]
    NoLibc {
        /// Where was looked ([`ImageLibs::searched`]).
        searched: String,
    },
    /// A `libc.so.6` without glibc's symbol versions.
    #[error("the image's {} defines no GLIBC_* symbol versions", .path.display())]
    NoGlibcVersions {
        /// The file, in the image.
        path: PathBuf,
    },
}

// Errors are shared (an `Arc`) so a remembered result can be handed out
// again; these let `?` wrap the plain errors.
impl From<RootfsError> for ImageLibError {
    fn from(e: RootfsError) -> ImageLibError {
        ImageLibError::Rootfs(Arc::new(e))
    }
}

impl From<ElfError> for ImageLibError {
    fn from(e: ElfError) -> ImageLibError {
        ImageLibError::Elf(Arc::new(e))
    }
}

/// One library of the image, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLib {
    /// The name it was found under (`libmpich.so.12`).
    pub name: String,
    /// The file it resolves to inside the image (symlinks followed in the
    /// root): where a replacement is mounted.
    pub path: PathBuf,
}

/// The image's copies of one library name: at most [`MAX_CANDIDATES`]
/// files, and how many candidates there were. Derefs to the files, and
/// iterates over them, like the `Vec` it replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Distinct files, in the loader's order (cache first, then the
    /// directories), symlinks resolved.
    pub libs: Vec<ImageLib>,
    /// Candidates the image lists for the name (cache entries and
    /// directory hits, duplicates included).
    pub listed: usize,
    /// How many of those were looked at: the first ones, up to
    /// [`MAX_CANDIDATES`] distinct paths.
    pub considered: usize,
}

impl Found {
    /// Whether candidates were left out.
    pub fn truncated(&self) -> bool {
        self.listed > self.considered
    }

    /// For messages, when candidates were left out: `the image lists 60000
    /// candidates for libmpich.so.12 (linker cache and library directories);
    /// the first 8 were used`.
    pub fn note(&self, name: &str) -> Option<String> {
        self.truncated().then(|| {
            format!(
                "the image lists {} candidates for {name} (linker cache and library directories); the first {} were used",
                self.listed, self.considered
            )
        })
    }
}

impl std::ops::Deref for Found {
    type Target = [ImageLib];
    fn deref(&self) -> &[ImageLib] {
        &self.libs
    }
}

impl IntoIterator for Found {
    type Item = ImageLib;
    type IntoIter = std::vec::IntoIter<ImageLib>;
    fn into_iter(self) -> Self::IntoIter {
        self.libs.into_iter()
    }
}

impl<'f> IntoIterator for &'f Found {
    type Item = &'f ImageLib;
    type IntoIter = std::slice::Iter<'f, ImageLib>;
    fn into_iter(self) -> Self::IntoIter {
        self.libs.iter()
    }
}

/// Raw candidate paths, deduplicated, at most [`MAX_CANDIDATES`].
struct Picker<'s> {
    taken: Vec<Cow<'s, Path>>,
    considered: usize,
}

impl<'s> Picker<'s> {
    fn new() -> Self {
        Picker {
            taken: Vec::new(),
            considered: 0,
        }
    }

    fn full(&self) -> bool {
        self.taken.len() >= MAX_CANDIDATES
    }

    /// Takes `p` unless full or already taken. Many cache entries may share
    /// one string: the same address compares in constant time.
    fn offer(&mut self, p: Cow<'s, Path>) {
        if self.full() {
            return;
        }
        self.considered += 1;
        let b = p.as_os_str().as_bytes();
        let dup = self.taken.iter().any(|t| {
            let t = t.as_os_str().as_bytes();
            std::ptr::eq(t, b) || t == b
        });
        if !dup {
            self.taken.push(p);
        }
    }
}

/// What the image offers its loader.
pub struct ImageLibs<'a> {
    root: &'a Rootfs,
    cache: Option<LdCache>,
    cache_note: String,
    dirs: Vec<PathBuf>,
    /// File name -> indices in `dirs` of the directories that contain it.
    names: BTreeMap<String, Vec<usize>>,
    /// Library names the scan left out (over [`MAX_SCANNED_NAMES`]).
    names_dropped: usize,
    elves: RefCell<BTreeMap<PathBuf, Result<ElfInfo, ImageLibError>>>,
}

impl<'a> ImageLibs<'a> {
    /// Reads the image's cache and lists its library directories. Problems
    /// (no cache, unreadable directory) are remembered for messages, never
    /// fatal: the image is only ever asked, never trusted to be well formed.
    pub fn scan(root: &'a Rootfs) -> ImageLibs<'a> {
        let (cache, cache_note) = read_cache(root);
        // A directory the cache has entries in, and older than the cache,
        // was there whole when ldconfig wrote it (adding, removing or
        // renaming an entry makes a directory newer): the cache already
        // names its libraries, and listing it again is read traffic on the
        // shared file system for nothing, a lot of it for a big directory.
        // A newer one (a conda install without ldconfig, files added by a
        // later layer) or one the cache never scanned is listed. The same
        // timestamp (coarse clocks) is not older. An image that lies about
        // times only hides its own libraries from the replacement.
        let cache_time = cache
            .as_ref()
            .and_then(|_| root.modified(Path::new(CACHE_PATH)).ok().flatten());
        let mut cache_dirs: BTreeSet<PathBuf> = BTreeSet::new();
        if let (Some(c), Some(_)) = (&cache, cache_time) {
            for parent in c.entries().filter_map(|e| e.path.parent()) {
                if !cache_dirs.contains(parent) {
                    cache_dirs.insert(parent.to_owned());
                }
            }
        }
        let mut wanted: Vec<PathBuf> = standard_dirs().into_iter().map(PathBuf::from).collect();
        wanted.extend(conf_dirs(root));
        let mut libs = ImageLibs {
            root,
            cache,
            cache_note,
            dirs: Vec::new(),
            names: BTreeMap::new(),
            names_dropped: 0,
            elves: RefCell::new(BTreeMap::new()),
        };
        let mut seen = BTreeSet::new();
        let mut kept = 0usize;
        for d in wanted.into_iter().take(MAX_DIRS) {
            // Merged /usr makes /lib and /usr/lib one directory: resolve
            // first so each is scanned once.
            let Some(real) = root.resolve_dir(&d).ok().flatten() else {
                continue;
            };
            if !seen.insert(real.clone()) {
                continue;
            }
            let in_cache = cache_dirs.contains(&d) || cache_dirs.contains(&real);
            let covered = in_cache
                && cache_time
                    .is_some_and(|c| root.modified(&real).ok().flatten().is_some_and(|d| d < c));
            if covered {
                libs.dirs.push(real);
                continue;
            }
            match root.list_dir(&real) {
                Ok(entries) => {
                    let i = libs.dirs.len();
                    for n in entries.into_iter().filter(|n| n.contains(".so")) {
                        if kept >= MAX_SCANNED_NAMES {
                            libs.names_dropped += 1;
                            continue;
                        }
                        kept += 1;
                        libs.names.entry(n).or_default().push(i);
                    }
                    libs.dirs.push(real);
                }
                Err(e) => {
                    tracing::debug!(dir = %d.display(), error = %e, "image library dir skipped")
                }
            }
        }
        libs
    }

    /// The image's rootfs.
    pub fn root(&self) -> &'a Rootfs {
        self.root
    }

    /// The library directories the scan found (resolved in the image).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Resolves the picked paths (one system call each), without duplicate
    /// files.
    fn resolve(&self, name: &str, picked: Picker<'_>, listed: usize) -> Found {
        let mut seen = HashSet::new();
        let mut libs = Vec::new();
        for p in picked.taken {
            if let Some(real) = self.root.resolve(&p).ok().flatten() {
                // A symlink into the runtime's /proc or /sys mounts is no
                // library of the image: never a file to read or replace.
                if crate::rootfs::KERNEL_DIRS
                    .iter()
                    .any(|k| real.starts_with(k))
                {
                    continue;
                }
                if seen.insert(real.clone()) {
                    libs.push(ImageLib {
                        name: name.to_owned(),
                        path: real,
                    });
                }
            }
        }
        Found {
            libs,
            listed,
            considered: picked.considered,
        }
    }

    /// Where `name` (an exact soname) resolves in the image: its cache
    /// entries and the directories that hold a file of that name, the first
    /// [`MAX_CANDIDATES`] distinct paths of them, each resolved to the real
    /// file; those that do not exist are left out.
    pub fn find(&self, name: &str) -> Found {
        let mut pick = Picker::new();
        let mut listed = 0;
        if let Some(c) = &self.cache {
            for e in c.lookup(name, native_flags()) {
                listed += 1;
                pick.offer(Cow::Borrowed(e.path));
            }
        }
        if let Some(dirs) = self.names.get(name) {
            listed += dirs.len();
            for &d in dirs.iter().take(MAX_CANDIDATES) {
                pick.offer(Cow::Owned(self.dirs[d].join(name)));
            }
        }
        self.resolve(name, pick, listed)
    }

    /// Whether the image has `name` (an exact soname) at all: what
    /// [`ImageLibs::find`] would say is not empty, resolving candidates
    /// only until one exists (`find` resolves them all).
    pub fn has(&self, name: &str) -> bool {
        let mut pick = Picker::new();
        if let Some(c) = &self.cache {
            for e in c.lookup(name, native_flags()) {
                pick.offer(Cow::Borrowed(e.path));
            }
        }
        if let Some(dirs) = self.names.get(name) {
            for &d in dirs.iter().take(MAX_CANDIDATES) {
                pick.offer(Cow::Owned(self.dirs[d].join(name)));
            }
        }
        pick.taken.iter().any(|p| {
            self.root.resolve(p).ok().flatten().is_some_and(|real| {
                !crate::rootfs::KERNEL_DIRS
                    .iter()
                    .any(|k| real.starts_with(k))
            })
        })
    }

    /// The majors under which the image has a library of this stem
    /// (`libmpi` -> {12, 40} when both `libmpi.so.12*` and `libmpi.so.40*`
    /// exist), from the cache and the directories.
    pub fn majors(&self, stem: &str) -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        let cache_names = self
            .cache
            .iter()
            .flat_map(|c| c.entries().map(|e| e.soname));
        let prefix = format!("{stem}.so.");
        for n in cache_names.chain(self.names.keys().map(String::as_str)) {
            // The prefix test first: most names are another library's, and
            // a name longer than a file name can be is no library's.
            if n.len() > MAX_NAME_LEN || !n.starts_with(&prefix) {
                continue;
            }
            if let Some((s, v)) = split_soname(n) {
                if s == stem {
                    if let Some(&m) = v.first() {
                        out.insert(m);
                    }
                }
            }
        }
        out
    }

    /// The image's copies of `stem.so.MAJOR`: by that exact name first; when
    /// no such name exists (no soname link), the versioned files
    /// `stem.so.MAJOR.x.y` in its directories. At most [`MAX_CANDIDATES`]
    /// each way; the counts of both are in the result.
    pub fn find_major(&self, stem: &str, major: u64) -> Found {
        let name = format!("{stem}.so.{major}");
        let found = self.find(&name);
        if !found.is_empty() {
            return found;
        }
        let prefix = format!("{name}.");
        let mut pick = Picker::new();
        let mut listed = 0;
        for (n, dirs) in self.names.range(prefix.clone()..) {
            if !n.starts_with(&prefix) {
                break;
            }
            listed += dirs.len();
            for &d in dirs {
                pick.offer(Cow::Owned(self.dirs[d].join(n)));
            }
        }
        let mut versioned = self.resolve(&name, pick, listed);
        versioned.listed += found.listed;
        versioned.considered += found.considered;
        versioned
    }

    /// ELF facts of an image file: only its headers, dynamic section,
    /// strings and version sections are read, through the rootfs.
    /// Remembered, failures included.
    pub fn elf(&self, path: &Path) -> Result<ElfInfo, ImageLibError> {
        if let Some(r) = self.elves.borrow().get(path) {
            return r.clone();
        }
        let r = self
            .root
            .open_file(path)
            .map_err(ImageLibError::from)
            .and_then(|f| {
                let name = format!("{} in the image", path.display());
                ElfInfo::read_sparse(&f, &name).map_err(ImageLibError::from)
            });
        self.elves.borrow_mut().insert(path.to_owned(), r.clone());
        r
    }

    /// The image's musl loader (`/lib/ld-musl-x86_64.so.1`), when it has
    /// one: a musl image, whatever its annotations say ([`musl_loader`]).
    pub fn musl_loader(&self) -> Option<PathBuf> {
        musl_loader(self.root)
    }

    /// The image's glibc release: the highest `GLIBC_x.y` its `libc.so.6`
    /// defines. An error says why it is unknown (no glibc, unreadable).
    pub fn glibc(&self) -> Result<Version, ImageLibError> {
        let Some(libc) = self.find("libc.so.6").into_iter().next() else {
            return Err(ImageLibError::NoLibc {
                searched: self.searched(),
            });
        };
        let info = self.elf(&libc.path)?;
        info.max_glibc_defined()
            .ok_or(ImageLibError::NoGlibcVersions { path: libc.path })
    }

    /// Where was looked, for "not found" messages: the cache's state and
    /// the directories.
    pub fn searched(&self) -> String {
        // Counted only for the message, and bounded: resolving an entry is
        // a system call.
        let stale = self.cache.as_ref().map_or(0, |c| {
            c.entries()
                .filter(|e| e.flags == native_flags())
                .take(MAX_STALE_CHECKS)
                .filter(|e| self.root.resolve(e.path).ok().flatten().is_none())
                .count()
        });
        let cache = if stale > 0 {
            format!(
                "linker cache /etc/ld.so.cache: {}, {} stale",
                self.cache_note, stale
            )
        } else {
            format!("linker cache /etc/ld.so.cache: {}", self.cache_note)
        };
        let dropped = if self.names_dropped > 0 {
            format!(
                " (only the first {MAX_SCANNED_NAMES} library names were kept, {} left out)",
                self.names_dropped
            )
        } else {
            String::new()
        };
        format!(
            "searched the image's {cache}, and the directories {}{dropped}",
            if self.dirs.is_empty() {
                "(none exist)".to_owned()
            } else {
                self.dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )
    }

    /// Whether the image has a usable linker cache (for messages).
    #[cfg(test)]
    pub fn has_cache(&self) -> bool {
        self.cache.is_some()
    }
}

/// The image's `/etc/ld.so.cache`, parsed, and a note on its state for
/// messages.
/// The image's linker cache.
const CACHE_PATH: &str = "/etc/ld.so.cache";

fn read_cache(root: &Rootfs) -> (Option<LdCache>, String) {
    let cache_path = Path::new(CACHE_PATH);
    match root.read_bounded(cache_path, MAX_CACHE_BYTES) {
        Ok(b) => match LdCache::parse(&b) {
            Ok(c) => {
                let n = format!("{} entries", c.len());
                (Some(c), n)
            }
            Err(e) => (None, format!("unreadable: {e}")),
        },
        Err(e) if root.kind(cache_path).ok().flatten().is_none() => {
            tracing::debug!(error = %e, "image has no linker cache");
            (None, "absent".to_owned())
        }
        Err(e) => (None, format!("unreadable: {e}")),
    }
}

/// What reading the image's `ld.so.conf` files may cost: they are the
/// image's, and one `include` line lists a directory and matches a pattern
/// against every name in it.
struct ConfBudget {
    /// `include` lines still followed, all files together.
    includes: usize,
    /// Glob matching steps left ([`MAX_GLOB_STEPS`]).
    glob_steps: usize,
    /// Directory entries still listed for patterns ([`MAX_SCANNED_NAMES`]):
    /// each listing is a system call per few dozen names.
    listed: usize,
}

/// Most `include` lines followed, all `ld.so.conf` files together.
const MAX_INCLUDES: usize = 64;
/// Most glob matching steps for one image: a crafted pattern (`*a*a*a…b`)
/// costs |pattern| x |name| steps per name; `*.conf` costs about |name|.
const MAX_GLOB_STEPS: usize = 1 << 22;
/// Longest pattern component: a file name is at most this long, so a
/// longer pattern matches nothing.
const MAX_PATTERN_LEN: usize = 255;

/// Library directories named by the image's `/etc/ld.so.conf` and the
/// files it includes (glob in the last component only, as Debian and
/// Red Hat write them), bounded: [`MAX_CONF_FILES`] files,
/// [`MAX_INCLUDES`] includes, [`MAX_DIRS`] directories, [`MAX_GLOB_STEPS`].
fn conf_dirs(root: &Rootfs) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut queue = vec![PathBuf::from("/etc/ld.so.conf")];
    let mut read = BTreeSet::new();
    let mut budget = ConfBudget {
        includes: MAX_INCLUDES,
        glob_steps: MAX_GLOB_STEPS,
        listed: MAX_SCANNED_NAMES,
    };
    while let Some(f) = queue.pop() {
        if read.len() >= MAX_CONF_FILES || !read.insert(f.clone()) {
            continue;
        }
        let Ok(bytes) = root.read_bounded(&f, MAX_CONF_BYTES) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() || line.starts_with("hwcap ") {
                continue;
            }
            if let Some(pat) = line.strip_prefix("include") {
                if budget.includes == 0 {
                    continue;
                }
                budget.includes -= 1;
                let pat = pat.trim();
                let pat = if pat.starts_with('/') {
                    PathBuf::from(pat)
                } else {
                    f.parent().unwrap_or(Path::new("/")).join(pat)
                };
                queue.extend(expand(root, &pat, &mut budget));
            } else if line.starts_with('/') && dirs.len() < MAX_DIRS {
                // `dir=type` (libc5 era) is still accepted by ldconfig.
                let d = line.split('=').next().unwrap_or(line).trim();
                dirs.push(PathBuf::from(d));
            }
        }
    }
    dirs
}

/// Expands a pattern whose last component may hold `*` and `?`, within
/// the budget (what is left when it runs out is not expanded).
fn expand(root: &Rootfs, pat: &Path, budget: &mut ConfBudget) -> Vec<PathBuf> {
    let (Some(dir), Some(last)) = (pat.parent(), pat.file_name()) else {
        return vec![];
    };
    let last = last.to_string_lossy();
    if !last.contains(['*', '?']) {
        return vec![pat.to_owned()];
    }
    if last.len() > MAX_PATTERN_LEN || budget.glob_steps == 0 || budget.listed == 0 {
        return vec![];
    }
    let p: Vec<char> = last.chars().collect();
    let names = root.list_dir(dir).unwrap_or_default();
    budget.listed = budget.listed.saturating_sub(names.len());
    let mut v = Vec::new();
    for n in names {
        let s: Vec<char> = n.chars().collect();
        match glob(&p, &s, &mut budget.glob_steps) {
            Some(true) => v.push(dir.join(n)),
            Some(false) => {}
            None => {
                tracing::debug!(pattern = %pat.display(), "ld.so.conf glob budget spent");
                break;
            }
        }
        if v.len() >= MAX_CONF_FILES {
            break;
        }
    }
    // The queue pops from the end: reverse so files are read in order.
    v.reverse();
    v
}

/// Shell-style `*` and `?` matching (no classes), iterative.
pub fn wildcard(pat: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    let mut unbounded = usize::MAX;
    glob(&p, &s, &mut unbounded).unwrap_or(false)
}

/// [`wildcard`] on characters, one step of `steps` per comparison; `None`
/// when they run out. Backtracks to the last `*` only: at most
/// |pattern| x |name| steps.
fn glob(p: &[char], s: &[char], steps: &mut usize) -> Option<bool> {
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        *steps = steps.checked_sub(1)?;
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return Some(false);
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    Some(pi == p.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::symlink;

    #[test]
    fn wildcard_matches_like_glob() {
        assert!(wildcard("*.conf", "libc.conf"));
        assert!(wildcard("*.conf", ".conf"));
        assert!(!wildcard("*.conf", "libc.conf.bak"));
        assert!(wildcard("a?c*", "abcdef"));
        assert!(!wildcard("a?c", "ac"));
    }

    #[test]
    fn hostile_ld_so_conf_is_bounded() {
        let t = TempDir::new("confbomb");
        let r = &t.0;
        std::fs::create_dir_all(r.join("etc/d")).unwrap();
        // 2000 long names, and a pattern that backtracks on each of them:
        // |pattern| x |name| = 50,000 steps a name, 100 million a listing,
        // included 150 times (1.5e10 steps unbounded), in a 61 KB file.
        let name = "a".repeat(200);
        for i in 0..2000 {
            std::fs::write(r.join(format!("etc/d/{i:04}{name}")), b"").unwrap();
        }
        let pat = format!("{}b", "*a".repeat(120));
        let mut conf = String::new();
        for _ in 0..150 {
            conf.push_str(&format!("include /etc/d/{pat}\n"));
        }
        for i in 0..2000 {
            conf.push_str(&format!("/opt/lib{i}\n"));
        }
        std::fs::write(r.join("etc/ld.so.conf"), &conf).unwrap();
        let root = Rootfs::open_snapshot(r).unwrap();
        let t0 = std::time::Instant::now();
        let dirs = conf_dirs(&root);
        let took = t0.elapsed();
        assert!(conf.len() as u64 <= MAX_CONF_BYTES);
        assert_eq!(dirs.len(), MAX_DIRS);
        assert!(
            took < crate::tweaks::ldcache::tests::DEBUG_BOUND,
            "{took:?}"
        );
        // The budget does not get in the way of real patterns.
        let mut budget = ConfBudget {
            includes: MAX_INCLUDES,
            glob_steps: MAX_GLOB_STEPS,
            listed: MAX_SCANNED_NAMES,
        };
        let one = expand(&root, Path::new("/etc/d/0001*"), &mut budget);
        assert_eq!(one, [PathBuf::from(format!("/etc/d/0001{name}"))]);
        let long = PathBuf::from(format!("/etc/d/{}*", "y".repeat(300)));
        assert!(expand(&root, &long, &mut budget).is_empty());
    }

    #[test]
    fn finds_through_conf_and_cache_and_resolves_in_root() {
        let t = TempDir::new("imglibs");
        let r = &t.0;
        std::fs::create_dir_all(r.join("etc/ld.so.conf.d")).unwrap();
        std::fs::create_dir_all(r.join("opt/conda/lib")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::write(
            r.join("etc/ld.so.conf"),
            "include /etc/ld.so.conf.d/*.conf\n",
        )
        .unwrap();
        std::fs::write(
            r.join("etc/ld.so.conf.d/conda.conf"),
            "# conda\n/opt/conda/lib\n",
        )
        .unwrap();
        std::fs::write(r.join("opt/conda/lib/libmpi.so.12.4.1"), b"x").unwrap();
        symlink("libmpi.so.12.4.1", r.join("opt/conda/lib/libmpi.so.12")).unwrap();
        // An absolute symlink to a host path resolves inside the image.
        symlink(
            "/usr/lib/x86_64-linux-gnu/libfabric.so.1.20.0",
            r.join("opt/conda/lib/libfabric.so.1"),
        )
        .unwrap();
        std::fs::write(r.join("usr/lib/x86_64-linux-gnu/libfabric.so.1.20.0"), b"x").unwrap();
        // Only a versioned file, no soname link.
        std::fs::write(r.join("usr/lib/x86_64-linux-gnu/libucp.so.0.0.0"), b"x").unwrap();
        let root = Rootfs::open_snapshot(r).unwrap();
        let libs = ImageLibs::scan(&root);
        assert!(!libs.has_cache());
        assert!(libs.searched().contains("absent"), "{}", libs.searched());
        assert!(libs.searched().contains("/opt/conda/lib"));
        let mpi = libs.find("libmpi.so.12");
        assert_eq!(mpi.len(), 1);
        assert_eq!(
            mpi[0].path,
            PathBuf::from("/opt/conda/lib/libmpi.so.12.4.1")
        );
        let fab = libs.find("libfabric.so.1");
        assert_eq!(
            fab[0].path,
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libfabric.so.1.20.0")
        );
        assert_eq!(libs.majors("libmpi"), BTreeSet::from([12]));
        assert!(libs.find("libucp.so.0").is_empty());
        assert_eq!(
            libs.find_major("libucp", 0)[0].path,
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libucp.so.0.0.0")
        );
        let e = libs.glibc().unwrap_err();
        assert!(matches!(e, ImageLibError::NoLibc { .. }), "{e}");
        assert!(e.to_string().contains("no libc.so.6"), "{e}");
    }

    #[test]
    fn cache_entries_are_used_and_stale_ones_counted() {
        let t = TempDir::new("imgcache");
        let r = &t.0;
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("srv/mpi")).unwrap();
        std::fs::write(r.join("srv/mpi/libmpich.so.12"), b"x").unwrap();
        let cache = super::super::ldcache::tests::build_new(&[
            ("libmpich.so.12", "/srv/mpi/libmpich.so.12", native_flags()),
            ("libgone.so.1", "/srv/mpi/libgone.so.1", native_flags()),
        ]);
        std::fs::write(r.join("etc/ld.so.cache"), cache).unwrap();
        let root = Rootfs::open_snapshot(r).unwrap();
        let libs = ImageLibs::scan(&root);
        assert_eq!(
            libs.find("libmpich.so.12")[0].path,
            PathBuf::from("/srv/mpi/libmpich.so.12")
        );
        assert!(libs.searched().contains("1 stale"), "{}", libs.searched());
        assert_eq!(libs.majors("libmpich"), BTreeSet::from([12]));
    }

    #[test]
    fn reads_glibc_of_a_real_libc_copied_in() {
        let t = TempDir::new("imgglibc");
        let r = &t.0;
        std::fs::create_dir_all(r.join("lib/x86_64-linux-gnu")).unwrap();
        std::fs::copy(
            "/lib/x86_64-linux-gnu/libc.so.6",
            r.join("lib/x86_64-linux-gnu/libc.so.6"),
        )
        .unwrap();
        let root = Rootfs::open_snapshot(r).unwrap();
        let libs = ImageLibs::scan(&root);
        let v = libs.glibc().unwrap();
        // Debian 12: glibc 2.36.
        assert_eq!(v.major(), 2);
        assert!(v.minor() >= 36, "{v}");
    }
}

/// The review's quadratic planning input: an image whose linker cache lists
/// N distinct existing paths for `libmpich.so.12`.
#[cfg(test)]
mod many_candidates {
    use super::super::{Inputs, Part};
    use super::*;
    use crate::elf::crafted::one_name_cache;
    use crate::matcher::tests::{node, with_mpich};
    use crate::matcher::Selection;
    use crate::testutil::ctx;
    use crate::testutil::policy_mpich;
    use crate::testutil::TempDir;
    use crate::tweaks::ldcache::tests::DEBUG_BOUND;
    use std::time::Instant;

    const MPICH: &str = "/usr/lib/x86_64-linux-gnu/libmpich.so.12";
    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

    /// A rootfs with the host's libc, and `n` hard links to one copy of the
    /// host's libmpich, each listed in the image's cache for
    /// `libmpich.so.12`.
    fn image_with_candidates(n: usize) -> TempDir {
        let t = TempDir::new("manycands");
        let r = &t.0;
        for d in ["etc", "srv/mpi", "lib/x86_64-linux-gnu"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::copy(LIBC, r.join(&LIBC[1..])).unwrap();
        let first = r.join("srv/mpi/c0");
        std::fs::copy(MPICH, &first).unwrap();
        let paths: Vec<PathBuf> = (0..n)
            .map(|i| PathBuf::from(format!("/srv/mpi/c{i}")))
            .collect();
        for p in &paths[1..] {
            std::fs::hard_link(&first, r.join(p.strip_prefix("/").unwrap())).unwrap();
        }
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let cache = one_name_cache("libmpich.so.12", &refs, native_flags());
        std::fs::write(r.join("etc/ld.so.cache"), cache).unwrap();
        t
    }

    /// Plans host MPICH over the image, as `tweaks::plan` would.
    fn plan_mpich(root: &Rootfs) -> Part {
        let libs = ImageLibs::scan(root);
        let c = ctx(&[], &[]);
        let n = with_mpich(node("icelake"));
        let policy = policy_mpich(&[MPICH]);
        let sel = Selection {
            mpi: Some("mpich".into()),
            ..Default::default()
        };
        let host = super::super::host::RealHost::uncached(Path::new("/etc/ld.so.cache"));
        let input = Inputs {
            ctx: &c,
            node: &n,
            policy: &policy,
            selection: &sel,
            host: &host,
            image: Some(&libs),
        };
        super::super::mpi::plan(&input, "mpich").unwrap()
    }

    #[test]
    fn candidates_per_soname_are_capped_counted_and_cheap() {
        let one = image_with_candidates(1);
        let baseline = plan_mpich(&Rootfs::open_snapshot(&one.0).unwrap());
        assert!(!baseline.fatal(), "{:#?}", baseline.findings);
        for n in [20_000, 60_000] {
            let t = image_with_candidates(n);
            let root = Rootfs::open_snapshot(&t.0).unwrap();
            let start = Instant::now();
            let libs = ImageLibs::scan(&root);
            let found = libs.find("libmpich.so.12");
            let find_took = start.elapsed();
            assert_eq!(found.len(), MAX_CANDIDATES);
            assert_eq!((found.listed, found.considered), (n, MAX_CANDIDATES));
            let note = found.note("libmpich.so.12").unwrap();
            assert!(note.contains(&format!("lists {n} candidates")), "{note}");
            assert!(note.contains("the first 8 were used"), "{note}");
            // The whole planning of the component, as the hook does it.
            let start = Instant::now();
            let part = plan_mpich(&root);
            let plan_took = start.elapsed();
            assert!(!part.fatal(), "{:#?}", part.findings);
            // At most MAX_CANDIDATES replacements: the baseline's mounts
            // plus the other 7 candidates.
            assert_eq!(
                part.tweaks.mounts.len(),
                baseline.tweaks.mounts.len() + MAX_CANDIDATES - 1,
                "{:#?}",
                part.tweaks.mounts
            );
            eprintln!(
                "{n} candidates: scan+find {find_took:?}, plan {plan_took:?}, {} mounts",
                part.tweaks.mounts.len()
            );
            // The review measured 18 s (20,000) and 258 s (60,000).
            assert!(find_took < DEBUG_BOUND, "{find_took:?}");
            assert!(plan_took < DEBUG_BOUND, "{plan_took:?}");
        }
    }

    #[test]
    fn duplicates_and_stale_paths_do_not_use_up_the_cap_unseen() {
        let t = TempDir::new("dupcands");
        let r = &t.0;
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("srv")).unwrap();
        std::fs::write(r.join("srv/real"), b"x").unwrap();
        // 1000 copies of one path, then a real second file: duplicates are
        // skipped, so the second is found.
        let mut paths = vec![Path::new("/srv/real"); 1000];
        std::fs::write(r.join("srv/other"), b"x").unwrap();
        paths.push(Path::new("/srv/other"));
        std::fs::write(
            r.join("etc/ld.so.cache"),
            one_name_cache("libx.so.1", &paths, native_flags()),
        )
        .unwrap();
        let root = Rootfs::open_snapshot(r).unwrap();
        let libs = ImageLibs::scan(&root);
        let f = libs.find("libx.so.1");
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(!f.truncated());
        // Nine stale paths first: the real one is past the cap, and the
        // result says so.
        let stale: Vec<String> = (0..9).map(|i| format!("/gone/{i}")).collect();
        let mut paths: Vec<&Path> = stale.iter().map(Path::new).collect();
        paths.push(Path::new("/srv/real"));
        std::fs::write(
            r.join("etc/ld.so.cache"),
            one_name_cache("libx.so.1", &paths, native_flags()),
        )
        .unwrap();
        // Another launch: a snapshot remembers the cache it read.
        let root = Rootfs::open_snapshot(r).unwrap();
        let libs = ImageLibs::scan(&root);
        let f = libs.find("libx.so.1");
        assert!(f.is_empty());
        assert!(f.truncated());
        assert!(f.note("libx.so.1").unwrap().contains("lists 10 candidates"));
    }
}

/// The musl dynamic loader of an image (`/lib/ld-musl-<arch>.so.1`,
/// where every musl build installs it; Alpine's included), found by
/// listing `/lib` in the root (bounded by the rootfs' listing limit). Host
/// libraries are glibc builds: a musl image never gets them.
pub fn musl_loader(root: &Rootfs) -> Option<PathBuf> {
    root.list_dir(Path::new("/lib"))
        .ok()?
        .into_iter()
        .find(|n| n.starts_with("ld-musl-") && n.ends_with(".so.1"))
        .map(|n| Path::new("/lib").join(n))
}
