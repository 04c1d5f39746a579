//! The image's libraries, found the way its own loader would find them:
//! its linker cache (`/etc/ld.so.cache`) and the library directories
//! (standard ones and those of its `ld.so.conf`).
//!
//! Both are read because either can lie by omission: a cache is often
//! stale or absent (a conda MPI installed without `ldconfig`), and a
//! library may live only in a directory the cache names. Every read goes
//! through [`Rootfs`], so an absolute symlink in the image resolves inside
//! it, and every read is bounded.

use super::ldcache::{native_flags, LdCache, MAX_CACHE_BYTES};
use super::soname::split_soname;
use crate::elf::{ElfInfo, MAX_ELF_BYTES};
use crate::rootfs::Rootfs;
use crate::version::Version;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

/// One library of the image, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLib {
    /// The name it was found under (`libmpich.so.12`).
    pub name: String,
    /// The file it resolves to inside the image (symlinks followed in the
    /// root): where a replacement is mounted.
    pub path: PathBuf,
}

/// What the image offers its loader.
pub struct ImageLibs<'a> {
    root: &'a Rootfs,
    cache: Option<LdCache>,
    cache_note: String,
    dirs: Vec<PathBuf>,
    /// File name -> directories (resolved, in root) that contain it.
    names: BTreeMap<String, Vec<PathBuf>>,
    elves: RefCell<BTreeMap<PathBuf, Result<ElfInfo, String>>>,
}

impl<'a> ImageLibs<'a> {
    /// Reads the image's cache and lists its library directories. Problems
    /// (no cache, unreadable directory) are remembered for messages, never
    /// fatal: the image is only ever asked, never trusted to be well formed.
    pub fn scan(root: &'a Rootfs) -> ImageLibs<'a> {
        let cache_path = Path::new("/etc/ld.so.cache");
        let (cache, cache_note) = match root.read_bounded(cache_path, MAX_CACHE_BYTES) {
            Ok(b) => match LdCache::parse(&b) {
                Ok(c) => {
                    let n = format!("{} entries", c.entries.len());
                    (Some(c), n)
                }
                Err(e) => (None, format!("unreadable: {e}")),
            },
            Err(e) if root.kind(cache_path).ok().flatten().is_none() => {
                tracing::debug!(error = %e, "image has no linker cache");
                (None, "absent".to_owned())
            }
            Err(e) => (None, format!("unreadable: {e}")),
        };
        let mut wanted: Vec<PathBuf> = standard_dirs().into_iter().map(PathBuf::from).collect();
        wanted.extend(conf_dirs(root));
        let mut dirs = Vec::new();
        let mut seen = BTreeSet::new();
        let mut names: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for d in wanted.into_iter().take(MAX_DIRS) {
            // Merged /usr makes /lib and /usr/lib one directory: resolve
            // first so each is scanned once.
            let Some(real) = root.resolve(&d).ok().flatten() else {
                continue;
            };
            if !seen.insert(real.clone()) {
                continue;
            }
            match root.list_dir(&real) {
                Ok(entries) => {
                    for n in entries.into_iter().filter(|n| n.contains(".so")) {
                        names.entry(n).or_default().push(real.clone());
                    }
                    dirs.push(real);
                }
                Err(e) => {
                    tracing::debug!(dir = %d.display(), error = %e, "image library dir skipped")
                }
            }
        }
        ImageLibs {
            root,
            cache,
            cache_note,
            dirs,
            names,
            elves: RefCell::new(BTreeMap::new()),
        }
    }

    /// Where `name` (an exact soname) resolves in the image: its cache
    /// entries that still exist and the directories that hold a file of that
    /// name; each resolved to the real file, without duplicates.
    pub fn find(&self, name: &str) -> Vec<ImageLib> {
        let mut out: Vec<ImageLib> = Vec::new();
        let mut push = |p: &Path| {
            if let Some(real) = self.root.resolve(p).ok().flatten() {
                if !out.iter().any(|l| l.path == real) {
                    out.push(ImageLib {
                        name: name.to_owned(),
                        path: real,
                    });
                }
            }
        };
        if let Some(c) = &self.cache {
            for e in c.lookup(name, native_flags()) {
                push(&e.path);
            }
        }
        if let Some(dirs) = self.names.get(name) {
            for d in dirs {
                push(&d.join(name));
            }
        }
        out
    }

    /// The majors under which the image has a library of this stem
    /// (`libmpi` -> {12, 40} when both `libmpi.so.12*` and `libmpi.so.40*`
    /// exist), from the cache and the directories.
    pub fn majors(&self, stem: &str) -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        let cache_names = self
            .cache
            .iter()
            .flat_map(|c| c.entries.iter().map(|e| e.soname.as_str()));
        for n in cache_names.chain(self.names.keys().map(String::as_str)) {
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
    /// `stem.so.MAJOR.x.y` in its directories.
    pub fn find_major(&self, stem: &str, major: u64) -> Vec<ImageLib> {
        let name = format!("{stem}.so.{major}");
        let found = self.find(&name);
        if !found.is_empty() {
            return found;
        }
        let prefix = format!("{name}.");
        let mut out: Vec<ImageLib> = Vec::new();
        for (n, dirs) in self.names.range(prefix.clone()..) {
            if !n.starts_with(&prefix) {
                break;
            }
            for d in dirs {
                if let Some(real) = self.root.resolve(&d.join(n)).ok().flatten() {
                    if !out.iter().any(|l| l.path == real) {
                        out.push(ImageLib {
                            name: name.clone(),
                            path: real,
                        });
                    }
                }
            }
        }
        out
    }

    /// ELF facts of an image file (bounded read through the rootfs).
    pub fn elf(&self, path: &Path) -> Result<ElfInfo, String> {
        if let Some(r) = self.elves.borrow().get(path) {
            return r.clone();
        }
        let r = self
            .root
            .read_bounded(path, MAX_ELF_BYTES)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                ElfInfo::parse(&b, &format!("{} in the image", path.display()))
                    .map_err(|e| e.to_string())
            });
        self.elves.borrow_mut().insert(path.to_owned(), r.clone());
        r
    }

    /// The image's glibc release: the highest `GLIBC_x.y` its `libc.so.6`
    /// defines. An error says why it is unknown (no glibc, unreadable).
    pub fn glibc(&self) -> Result<Version, String> {
        let Some(libc) = self.find("libc.so.6").into_iter().next() else {
            return Err(format!("the image has no libc.so.6 ({})", self.searched()));
        };
        let info = self.elf(&libc.path)?;
        info.max_glibc_defined().ok_or_else(|| {
            format!(
                "the image's {} defines no GLIBC_* symbol versions",
                libc.path.display()
            )
        })
    }

    /// Where was looked, for "not found" messages: the cache's state and
    /// the directories.
    pub fn searched(&self) -> String {
        // Counted only for the message: resolving every entry of a large
        // cache costs a system call each.
        let stale = self.cache.as_ref().map_or(0, |c| {
            c.entries
                .iter()
                .filter(|e| e.flags == native_flags())
                .take(4096)
                .filter(|e| self.root.resolve(&e.path).ok().flatten().is_none())
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
        format!(
            "searched the image's {cache}, and the directories {}",
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

/// Library directories named by the image's `/etc/ld.so.conf` and the
/// files it includes (glob in the last component only, as Debian and
/// Red Hat write them), bounded.
fn conf_dirs(root: &Rootfs) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut queue = vec![PathBuf::from("/etc/ld.so.conf")];
    let mut read = BTreeSet::new();
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
                let pat = pat.trim();
                let pat = if pat.starts_with('/') {
                    PathBuf::from(pat)
                } else {
                    f.parent().unwrap_or(Path::new("/")).join(pat)
                };
                queue.extend(expand(root, &pat));
            } else if line.starts_with('/') {
                // `dir=type` (libc5 era) is still accepted by ldconfig.
                let d = line.split('=').next().unwrap_or(line).trim();
                dirs.push(PathBuf::from(d));
            }
        }
    }
    dirs
}

/// Expands a pattern whose last component may hold `*` and `?`.
fn expand(root: &Rootfs, pat: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(last)) = (pat.parent(), pat.file_name()) else {
        return vec![];
    };
    let last = last.to_string_lossy();
    if !last.contains(['*', '?']) {
        return vec![pat.to_owned()];
    }
    let mut v: Vec<PathBuf> = root
        .list_dir(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| wildcard(&last, n))
        .map(|n| dir.join(n))
        .take(MAX_CONF_FILES)
        .collect();
    // The queue pops from the end: reverse so files are read in order.
    v.reverse();
    v
}

/// Shell-style `*` and `?` matching (no classes), iterative.
pub fn wildcard(pat: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pat.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
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
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::tests::TempDir;
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
        let root = Rootfs::open(r).unwrap();
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
        assert!(libs.glibc().unwrap_err().contains("no libc.so.6"));
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
        let root = Rootfs::open(r).unwrap();
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
        let root = Rootfs::open(r).unwrap();
        let libs = ImageLibs::scan(&root);
        let v = libs.glibc().unwrap();
        // Debian 12: glibc 2.36.
        assert_eq!(v.major(), 2);
        assert!(v.minor() >= 36, "{v}");
    }
}
