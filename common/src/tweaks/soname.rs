//! Library names and the rules that decide whether a host library may
//! stand in for an image's: soname majors, glibc symbol versions, and the
//! closure of a host library's own dependencies.

use super::host::Host;
use crate::elf::ElfInfo;
use crate::version::Version;
use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;

/// Deepest `DT_NEEDED` chain followed from a host library.
pub const MAX_DEPTH: usize = 16;
/// Most dependencies collected for one component: a real MPI has a few
/// dozen; more means a loop or a runaway tree.
pub const MAX_DEPENDENCIES: usize = 256;

/// Splits `libmpich.so.12.2.2` into `("libmpich", [12, 2, 2])`. `None` for
/// names without a numeric version after `.so.` (`libmpich.so`, `foo`).
pub fn split_soname(name: &str) -> Option<(&str, Vec<u64>)> {
    let i = name.find(".so.")?;
    let (stem, rest) = (&name[..i], &name[i + 4..]);
    if stem.is_empty() {
        return None;
    }
    let parts: Option<Vec<u64>> = rest
        .split('.')
        .take(8)
        .map(|p| {
            if p.is_empty() || p.len() > 12 {
                None
            } else {
                p.parse().ok()
            }
        })
        .collect();
    Some((stem, parts?))
}

/// Whether a soname belongs to glibc itself. These always come from the
/// image (its glibc matches its loader); host copies would break it.
pub fn is_glibc_library(soname: &str) -> bool {
    const GLIBC: &[&str] = &[
        "libc.so.6",
        "libm.so.6",
        "libmvec.so.1",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libutil.so.1",
        "libresolv.so.2",
        "libanl.so.1",
        "libnsl.so.1",
        "libBrokenLocale.so.1",
        "libthread_db.so.1",
        "libc_malloc_debug.so.0",
        "libmemusage.so",
        "libpcprofile.so",
    ];
    GLIBC.contains(&soname) || soname.starts_with("ld-linux") || soname.starts_with("ld64.so")
}

/// One host library pulled in by `DT_NEEDED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The name it is needed under (the file name it gets in the
    /// container's dependency directory).
    pub soname: String,
    /// Where the host linker cache says it is.
    pub host_path: PathBuf,
    /// Which library needed it first (for messages).
    pub needed_by: String,
    /// Its ELF facts.
    pub info: ElfInfo,
}

/// The dependency closure of some host libraries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closure {
    /// Found, in breadth-first order.
    pub deps: Vec<Dependency>,
    /// `(soname, needed by)` that the host linker cache does not know or
    /// that could not be read.
    pub missing: Vec<(String, String)>,
    /// Stopped at [`MAX_DEPENDENCIES`] or [`MAX_DEPTH`].
    pub truncated: bool,
    /// glibc's own libraries the tree needs (`(soname, needed by)`): never
    /// taken from the host, so the image must have them.
    pub glibc: Vec<(String, String)>,
}

/// Follows `DT_NEEDED` of `roots` through the host linker cache,
/// breadth-first, skipping glibc's own libraries and the names in `skip`
/// (libraries the plan already provides under that name).
pub fn closure(host: &dyn Host, roots: &[(String, ElfInfo)], skip: &BTreeSet<String>) -> Closure {
    let mut out = Closure::default();
    let mut seen: BTreeSet<String> = skip.clone();
    let mut queue: VecDeque<(String, String, usize)> = VecDeque::new();
    for (name, info) in roots {
        if let Some(s) = &info.soname {
            seen.insert(s.clone());
        }
        for n in &info.needed {
            queue.push_back((n.clone(), name.clone(), 1));
        }
    }
    while let Some((soname, by, depth)) = queue.pop_front() {
        if is_glibc_library(&soname) {
            if !out.glibc.iter().any(|(s, _)| *s == soname) {
                out.glibc.push((soname, by));
            }
            continue;
        }
        if !seen.insert(soname.clone()) {
            continue;
        }
        if depth > MAX_DEPTH || out.deps.len() >= MAX_DEPENDENCIES {
            out.truncated = true;
            break;
        }
        let Some(path) = host.find_library(&soname) else {
            out.missing.push((soname, by));
            continue;
        };
        match host.elf(&path) {
            Ok(info) => {
                for n in &info.needed {
                    queue.push_back((n.clone(), soname.clone(), depth + 1));
                }
                out.deps.push(Dependency {
                    soname,
                    host_path: path,
                    needed_by: by,
                    info,
                });
            }
            Err(e) => {
                tracing::warn!(library = %path.display(), error = %e, "host dependency unreadable");
                out.missing.push((soname, by));
            }
        }
    }
    out
}

/// The `GLIBC_x.y` versions a library needs beyond `have`, highest first
/// (empty when it loads on that glibc).
pub fn glibc_beyond(info: &ElfInfo, have: &Version) -> Vec<Version> {
    let mut v: Vec<Version> = info
        .version_needs
        .iter()
        .filter(|(lib, _)| is_glibc_library(lib))
        .filter_map(|(_, v)| v.strip_prefix("GLIBC_"))
        .filter_map(|v| Version::parse(v).ok())
        .filter(|v| v > have)
        .collect();
    v.sort();
    v.dedup();
    v.reverse();
    v
}

#[cfg(test)]
mod tests {
    use super::super::host::fake::{lib, FakeHost};
    use super::*;

    #[test]
    fn sonames_split() {
        assert_eq!(
            split_soname("libmpich.so.12.2.2"),
            Some(("libmpich", vec![12, 2, 2]))
        );
        assert_eq!(
            split_soname("libmpi_abi.so.1"),
            Some(("libmpi_abi", vec![1]))
        );
        assert_eq!(split_soname("libmpich.so"), None);
        assert_eq!(split_soname("libfoo.so.1a"), None);
        assert_eq!(split_soname(".so.1"), None);
    }

    #[test]
    fn glibc_libraries_are_recognised() {
        for s in [
            "libc.so.6",
            "libm.so.6",
            "libpthread.so.0",
            "ld-linux-x86-64.so.2",
        ] {
            assert!(is_glibc_library(s), "{s}");
        }
        assert!(!is_glibc_library("libgcc_s.so.1"));
        assert!(!is_glibc_library("libstdc++.so.6"));
    }

    #[test]
    fn closure_follows_needed_skips_glibc_and_loops() {
        let mut h = FakeHost::default();
        let d = "/usr/lib/x86_64-linux-gnu";
        h.add(
            d,
            lib("libhwloc.so.15", &["libudev.so.1", "libc.so.6"], &["2.34"]),
        );
        h.add(
            d,
            lib("libudev.so.1", &["libc.so.6", "libhwloc.so.15"], &["2.17"]),
        );
        h.add(d, lib("libucp.so.0", &["libucs.so.0"], &[]));
        h.add(d, lib("libucs.so.0", &["libucp.so.0", "libm.so.6"], &[]));
        let root = lib(
            "libmpich.so.12",
            &["libhwloc.so.15", "libucp.so.0", "libgone.so.3", "libc.so.6"],
            &["2.34"],
        );
        let c = closure(&h, &[("libmpich.so.12".into(), root)], &BTreeSet::new());
        let names: Vec<&str> = c.deps.iter().map(|d| d.soname.as_str()).collect();
        assert_eq!(
            names,
            [
                "libhwloc.so.15",
                "libucp.so.0",
                "libudev.so.1",
                "libucs.so.0"
            ]
        );
        assert_eq!(
            c.missing,
            vec![("libgone.so.3".into(), "libmpich.so.12".into())]
        );
        assert!(!c.truncated);
        // What the plan already provides is not pulled again.
        let skip = BTreeSet::from(["libucp.so.0".to_string()]);
        let root = lib("libmpich.so.12", &["libucp.so.0"], &[]);
        let c = closure(&h, &[("libmpich.so.12".into(), root)], &skip);
        assert!(c.deps.is_empty());
    }

    #[test]
    fn closure_is_bounded() {
        let mut h = FakeHost::default();
        // A chain longer than MAX_DEPTH.
        for i in 0..(MAX_DEPTH + 5) {
            h.add(
                "/l",
                lib(
                    &format!("libc{i}.so.1"),
                    &[&format!("libc{}.so.1", i + 1)],
                    &[],
                ),
            );
        }
        let root = lib("libroot.so.1", &["libc0.so.1"], &[]);
        let c = closure(&h, &[("libroot.so.1".into(), root)], &BTreeSet::new());
        assert!(c.truncated);
        assert!(c.deps.len() <= MAX_DEPTH);
    }

    #[test]
    fn glibc_needs_beyond_the_image() {
        let l = lib("libmpich.so.12", &[], &["2.2.5", "2.34", "2.38", "2.17"]);
        let have = Version::parse("2.31").unwrap();
        let v: Vec<String> = glibc_beyond(&l, &have)
            .iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(v, ["2.38", "2.34"]);
        assert!(glibc_beyond(&l, &Version::parse("2.38").unwrap()).is_empty());
    }

    #[test]
    fn real_host_mpich_closure() {
        let h = super::super::host::RealHost::uncached(std::path::Path::new("/etc/ld.so.cache"));
        let p = h.find_library("libmpich.so.12").expect("mpich installed");
        let info = h.elf(&p).unwrap();
        let c = closure(&h, &[("libmpich.so.12".into(), info)], &BTreeSet::new());
        let names: BTreeSet<&str> = c.deps.iter().map(|d| d.soname.as_str()).collect();
        assert!(names.contains("libhwloc.so.15"), "{names:?}");
        assert!(names.contains("libucp.so.0"), "{names:?}");
        assert!(!names.contains("libc.so.6"));
        assert!(c.missing.is_empty(), "{:?}", c.missing);
    }
}
