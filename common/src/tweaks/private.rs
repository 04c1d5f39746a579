//! Library copies the image's loader search does not show: those inside
//! Python packages (a PyTorch wheel's `torch/lib/`, NVIDIA's
//! `nvidia/nccl/lib/`, auditwheel's `*.libs/`), found by their users'
//! `RPATH` or by `dlopen` with a path; those in the directories of the
//! container's `LD_LIBRARY_PATH` (an image `ENV`, which the loader reads
//! before its cache); and those of vendor prefixes that images of the AI
//! stack carry (`/opt/amazon/efa/lib`, aws-ofi-nccl's). An NGC or AWS
//! PyTorch image has two or three `libfabric.so.1` this way; replacing one
//! leaves the others to be loaded.
//!
//! Bounded like the rest of the image scan: at most [`MAX_PACKAGES`]
//! package directories looked at, [`MAX_DIRS`] library directories
//! listed, [`MAX_FILES`] names read from each; [`PrivateDirs::cut`] says
//! when a bound was reached, so that a copy left unseen is never silent.

use super::image::ImageLibs;
use super::soname::split_soname;
use crate::rootfs::Rootfs;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Prefixes whose `python3*/{dist,site}-packages` are looked in.
const PYTHON_PREFIXES: &[&str] = &[
    "/usr/local/lib",
    "/usr/lib",
    "/usr/local/lib64",
    "/usr/lib64",
    "/opt/conda/lib",
];
/// Vendor directories of the AI network stack.
pub const VENDOR_DIRS: &[&str] = &[
    "/opt/amazon/efa/lib",
    "/opt/amazon/efa/lib64",
    "/opt/amazon/aws-ofi-nccl/lib",
    "/opt/amazon/ofi-nccl/lib",
    "/opt/amazon/ofi-nccl/lib/x86_64-linux-gnu",
    "/opt/amazon/ofi-nccl/lib/aarch64-linux-gnu",
    "/opt/aws-ofi-nccl/lib",
    "/opt/hpcx/nccl_rdma_sharp_plugin/lib",
];
/// Most `LD_LIBRARY_PATH` entries followed.
const MAX_LD_PATH: usize = 32;
/// Most package directories of all `site-packages` looked at.
pub const MAX_PACKAGES: usize = 4096;
/// Most library directories listed.
pub const MAX_DIRS: usize = 256;
/// Most names kept from one directory.
const MAX_FILES: usize = 4096;
/// Most copies of one library replaced: past it, the rest is named in a
/// finding (an image can give one file thousands of hard-linked names).
pub const MAX_COPIES: usize = 64;
/// Most paths of another major named in a finding.
pub const MAX_OTHERS: usize = 16;

/// The image's private library directories and their file names.
#[derive(Debug, Default)]
pub struct PrivateDirs {
    /// Each directory (resolved in the image) and the library names in it.
    pub dirs: Vec<(PathBuf, Vec<String>)>,
    /// Which bound cut the scan short, when one did.
    pub cut: Option<String>,
}

/// What [`PrivateDirs::copies`] found of one library.
#[derive(Debug, Default)]
pub struct Copies {
    /// The copies to replace, at most [`MAX_COPIES`].
    pub found: Vec<PrivateCopy>,
    /// Whether there were more than [`MAX_COPIES`].
    pub more: bool,
    /// Files of the stem with another major (left alone), at most
    /// [`MAX_OTHERS`] of them.
    pub others: Vec<PathBuf>,
    /// How many of those there were in all.
    pub others_total: usize,
}

/// One private copy of a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateCopy {
    /// The file in the image (resolved).
    pub path: PathBuf,
    /// Its name in its directory.
    pub name: String,
}

impl PrivateDirs {
    /// Scans the image: `LD_LIBRARY_PATH` (the container's), the vendor
    /// directories, then the Python packages. Directories the loader
    /// search already lists (`image`) are left out: their copies are found
    /// there.
    pub fn scan(root: &Rootfs, image: &ImageLibs<'_>, ld_library_path: Option<&str>) -> Self {
        let mut out = PrivateDirs::default();
        let mut seen: BTreeSet<PathBuf> = image.dirs().iter().cloned().collect();
        let mut wanted: Vec<PathBuf> = ld_library_path
            .unwrap_or_default()
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(PathBuf::from)
            .collect();
        if wanted.len() > MAX_LD_PATH {
            wanted.truncate(MAX_LD_PATH);
            out.cut = Some(format!("more than {MAX_LD_PATH} LD_LIBRARY_PATH entries"));
        }
        wanted.extend(VENDOR_DIRS.iter().map(PathBuf::from));
        wanted.extend(python_lib_dirs(root, &mut out.cut));
        // Every directory listed counts, with or without libraries in it.
        let mut listed = 0usize;
        for d in wanted {
            if listed >= MAX_DIRS {
                out.cut
                    .get_or_insert_with(|| format!("more than {MAX_DIRS} library directories"));
                break;
            }
            let Some(real) = root.resolve_dir(&d).ok().flatten() else {
                continue;
            };
            if !seen.insert(real.clone()) {
                continue;
            }
            listed += 1;
            let Ok(names) = root.list_dir(&real) else {
                out.cut
                    .get_or_insert_with(|| format!("{} could not be listed", real.display()));
                continue;
            };
            let mut libs: Vec<String> = names.into_iter().filter(|n| n.contains(".so")).collect();
            if libs.len() > MAX_FILES {
                libs.truncate(MAX_FILES);
                out.cut.get_or_insert_with(|| {
                    format!("more than {MAX_FILES} library names in {}", real.display())
                });
            }
            if !libs.is_empty() {
                out.dirs.push((real, libs));
            }
        }
        out
    }

    /// The copies of `stem.so.MAJOR` (the soname link, else its versioned
    /// files), one per distinct regular file, at most [`MAX_COPIES`]; and
    /// the files of the stem with another major, left alone, as their
    /// paths.
    pub fn copies(&self, root: &Rootfs, stem: &str, major: u64) -> Copies {
        let mut found = Vec::new();
        let mut more = false;
        let mut others = BTreeSet::new();
        let mut files = BTreeSet::new();
        'dirs: for (dir, names) in &self.dirs {
            let mut here: Vec<&String> = Vec::new();
            for n in names {
                let Some((s, v)) = split_soname(n) else {
                    continue;
                };
                if s != stem {
                    continue;
                }
                match v.first() {
                    Some(m) if *m == major => here.push(n),
                    Some(_) => {
                        others.insert(dir.join(n));
                    }
                    None => {}
                }
            }
            // The soname link first: it is what programs load.
            here.sort_by_key(|n| n.len());
            for n in here {
                let Some(real) = root.resolve(&dir.join(n)).ok().flatten() else {
                    continue;
                };
                if !replaceable(root, &real) || files.contains(&real) {
                    continue;
                }
                if found.len() >= MAX_COPIES {
                    more = true;
                    break 'dirs;
                }
                files.insert(real.clone());
                found.push(PrivateCopy {
                    path: real,
                    name: format!("{stem}.so.{major}"),
                });
            }
        }
        let others_total = others.len();
        Copies {
            found,
            more,
            others: others.into_iter().take(MAX_OTHERS).collect(),
            others_total,
        }
    }

    /// The files named exactly `name` (`libnccl-net.so`), resolved.
    pub fn named(&self, root: &Rootfs, name: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for (dir, names) in &self.dirs {
            if names.iter().any(|n| n == name) {
                // Only a regular file outside the kernel's file systems: a
                // link to a directory or to /proc is no plugin to replace.
                let Some(real) = root.resolve(&dir.join(name)).ok().flatten() else {
                    continue;
                };
                if replaceable(root, &real) && !out.contains(&real) {
                    out.push(real);
                }
            }
        }
        out
    }
}

/// Whether `real` (resolved in the image) is a file a bind may replace: a
/// regular file outside the kernel's file systems (a link to a directory,
/// a device or `/proc` is no library).
fn replaceable(root: &Rootfs, real: &Path) -> bool {
    matches!(root.kind(real), Ok(Some(crate::rootfs::EntryKind::File)))
        && !crate::rootfs::KERNEL_DIRS
            .iter()
            .any(|k| real.starts_with(k))
}

/// Most `python3*` directories looked in under one prefix.
const MAX_PYTHONS: usize = 16;

/// The library directories of Python packages: `<pkg>/lib`, `<pkg>/lib64`,
/// `nvidia/<pkg>/lib` (NVIDIA's wheels) and `<pkg>.libs` (auditwheel's).
///
/// Every name read counts against [`MAX_PACKAGES`], an `nvidia/` entry as
/// much as a package, and a `site-packages` reached twice (links between
/// `python3.N` directories, which an image can make by the thousand) is
/// read once: the work and the list are bounded by the budget whatever
/// the image's shape.
fn python_lib_dirs(root: &Rootfs, cut: &mut Option<String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut packages = 0usize;
    let mut seen_sp: BTreeSet<PathBuf> = BTreeSet::new();
    let mut budget = |cut: &mut Option<String>| {
        if packages >= MAX_PACKAGES {
            cut.get_or_insert_with(|| format!("more than {MAX_PACKAGES} Python packages"));
            return false;
        }
        packages += 1;
        true
    };
    for prefix in PYTHON_PREFIXES {
        let prefix = Path::new(prefix);
        let Ok(entries) = root.list_dir(prefix) else {
            continue;
        };
        // list_dir's names come sorted.
        let pythons: Vec<String> = entries
            .into_iter()
            .filter(|e| e.starts_with("python3"))
            .take(MAX_PYTHONS)
            .collect();
        for py in pythons {
            for kind in ["dist-packages", "site-packages"] {
                let Some(sp) = root
                    .resolve_dir(&prefix.join(&py).join(kind))
                    .ok()
                    .flatten()
                else {
                    continue;
                };
                if !seen_sp.insert(sp.clone()) {
                    continue;
                }
                let Ok(pkgs) = root.list_dir(&sp) else {
                    continue;
                };
                for p in pkgs {
                    if !budget(cut) {
                        return out;
                    }
                    let dir = sp.join(&p);
                    if p.ends_with(".libs") {
                        out.push(dir);
                    } else if p == "nvidia" {
                        let Ok(subs) = root.list_dir(&dir) else {
                            continue;
                        };
                        for s in subs {
                            if !budget(cut) {
                                return out;
                            }
                            out.push(dir.join(s).join("lib"));
                        }
                    } else if !p.contains('.') {
                        out.push(dir.join("lib"));
                        out.push(dir.join("lib64"));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    /// Hundreds of `python3.N` links to one `site-packages` whose
    /// `nvidia/` holds more names than the budget: the scan reads that
    /// `site-packages` once and stops at [`MAX_PACKAGES`], saying so.
    #[test]
    fn linked_pythons_and_a_huge_nvidia_dir_stay_within_the_budget() {
        let t = TempDir::new("private-scan");
        let lib = t.0.join("usr/lib");
        let sp = lib.join("python3.11/site-packages");
        let nv = sp.join("nvidia");
        std::fs::create_dir_all(&nv).unwrap();
        for i in 0..(MAX_PACKAGES + 100) {
            std::fs::write(nv.join(format!("p{i}")), b"").unwrap();
        }
        for n in 0..300 {
            std::os::unix::fs::symlink("python3.11", lib.join(format!("python3.{}", 1000 + n)))
                .unwrap();
        }
        let root = Rootfs::open(&t.0).unwrap();
        let mut cut = None;
        let dirs = python_lib_dirs(&root, &mut cut);
        assert!(dirs.len() < MAX_PACKAGES, "{}", dirs.len());
        assert!(
            cut.as_deref()
                .is_some_and(|c| c.contains("Python packages")),
            "{cut:?}"
        );
    }

    #[test]
    fn a_small_image_is_read_whole() {
        let t = TempDir::new("private-small");
        let sp = t.0.join("usr/local/lib/python3.10/dist-packages");
        std::fs::create_dir_all(sp.join("torch/lib")).unwrap();
        std::fs::create_dir_all(sp.join("nvidia/nccl/lib")).unwrap();
        std::fs::create_dir_all(sp.join("numpy.libs")).unwrap();
        let root = Rootfs::open(&t.0).unwrap();
        let mut cut = None;
        let dirs = python_lib_dirs(&root, &mut cut);
        assert!(cut.is_none(), "{cut:?}");
        let sp = Path::new("/usr/local/lib/python3.10/dist-packages");
        for d in ["torch/lib", "nvidia/nccl/lib", "numpy.libs"] {
            assert!(dirs.contains(&sp.join(d)), "{d} not in {dirs:?}");
        }
    }

    #[test]
    fn copies_are_capped_and_only_regular_files_count() {
        let t = TempDir::new("private-copies");
        let d = t.0.join("opt/x/lib");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("libfabric.so.1.0.0"), b"elf").unwrap();
        // Hard links: each its own path, one file; an image can make many.
        let mut names = vec!["libfabric.so.1.0.0".to_owned()];
        for i in 0..(MAX_COPIES + 10) {
            let n = format!("libfabric.so.1.{i}.9");
            std::fs::hard_link(d.join("libfabric.so.1.0.0"), d.join(&n)).unwrap();
            names.push(n);
        }
        // Another major, more than the finding names.
        for i in 0..(MAX_OTHERS + 3) {
            let n = format!("libfabric.so.{}", 2 + i);
            std::fs::write(d.join(&n), b"elf").unwrap();
            names.push(n);
        }
        // A link to a directory is no copy to bind over.
        let e = t.0.join("opt/y/lib");
        std::fs::create_dir_all(&e).unwrap();
        std::os::unix::fs::symlink("/opt", e.join("libfabric.so.1")).unwrap();
        let root = Rootfs::open(&t.0).unwrap();
        let dirs = PrivateDirs {
            dirs: vec![
                (PathBuf::from("/opt/y/lib"), vec!["libfabric.so.1".into()]),
                (PathBuf::from("/opt/x/lib"), names),
            ],
            cut: None,
        };
        let c = dirs.copies(&root, "libfabric", 1);
        assert_eq!(c.found.len(), MAX_COPIES);
        assert!(c.more);
        assert!(
            c.found.iter().all(|f| f.path.starts_with("/opt/x/lib")),
            "{:?}",
            c.found
        );
        assert_eq!(c.others.len(), MAX_OTHERS);
        assert_eq!(c.others_total, MAX_OTHERS + 3);
    }
}
