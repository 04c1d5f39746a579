//! The host libraries the policy declares: they exist, are ELF objects of
//! this node's class and machine, and everything they need (`DT_NEEDED`,
//! transitively) resolves through the host linker cache, their
//! `DT_RUNPATH`/`DT_RPATH` or the default directories. The directories the
//! policy names (libfabric providers, UCX modules, MPI mounts) exist.

use super::elf::{self, ElfFacts};
use super::Finding;
use hpcc_config::Policy;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

const CHECK: &str = "host-libraries";

/// Most libraries followed per declared library.
const MAX_CLOSURE: usize = 512;

/// Where the policy names a library: (dotted key, path).
pub fn declared(policy: &Policy) -> Vec<(String, PathBuf)> {
    let mut v = Vec::new();
    for (name, m) in &policy.mpi {
        for p in &m.libraries {
            v.push((format!("mpi.{name}.libraries"), p.clone()));
        }
        for p in &m.dependencies {
            v.push((format!("mpi.{name}.dependencies"), p.clone()));
        }
    }
    if let Some(lf) = &policy.libfabric {
        v.push(("libfabric.library".into(), lf.library.clone()));
        for p in &lf.dependencies {
            v.push(("libfabric.dependencies".into(), p.clone()));
        }
    }
    if let Some(u) = &policy.ucx {
        for p in &u.libraries {
            v.push(("ucx.libraries".into(), p.clone()));
        }
    }
    v
}

/// Directories (and mount sources) the policy names: (dotted key, path).
fn declared_paths(policy: &Policy) -> Vec<(String, PathBuf)> {
    let mut v = Vec::new();
    for (name, m) in &policy.mpi {
        for p in &m.mounts {
            v.push((format!("mpi.{name}.mounts"), p.clone()));
        }
    }
    if let Some(p) = policy.libfabric.as_ref().and_then(|l| l.providers.clone()) {
        v.push(("libfabric.providers".into(), p));
    }
    if let Some(p) = policy.ucx.as_ref().and_then(|u| u.modules.clone()) {
        v.push(("ucx.modules".into(), p));
    }
    v
}

/// The host linker's view: `ldconfig -p` (soname -> paths) and the
/// default directories.
#[derive(Debug, Default)]
pub struct Resolver {
    cache: BTreeMap<String, Vec<PathBuf>>,
    defaults: Vec<PathBuf>,
    /// Why the linker cache could not be listed.
    pub cache_problem: Option<String>,
}

impl Resolver {
    /// The host's resolver.
    pub fn host() -> Resolver {
        let mut r = Resolver {
            defaults: [
                "/lib/x86_64-linux-gnu",
                "/usr/lib/x86_64-linux-gnu",
                "/lib/aarch64-linux-gnu",
                "/usr/lib/aarch64-linux-gnu",
                "/lib64",
                "/usr/lib64",
                "/lib",
                "/usr/lib",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            ..Default::default()
        };
        let ldconfig = ["/sbin/ldconfig", "/usr/sbin/ldconfig"]
            .iter()
            .find(|p| Path::new(p).exists());
        match ldconfig.map(|l| std::process::Command::new(l).arg("-p").output()) {
            Some(Ok(out)) if out.status.success() => {
                r.cache = parse_ldconfig(&String::from_utf8_lossy(&out.stdout));
            }
            Some(Ok(out)) => {
                r.cache_problem = Some(format!(
                    "ldconfig -p failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
            Some(Err(e)) => r.cache_problem = Some(format!("cannot run ldconfig -p: {e}")),
            None => r.cache_problem = Some("ldconfig not found".into()),
        }
        r
    }

    /// Where `soname`, needed by a library in `origin` with these
    /// RUNPATH/RPATH entries, is found with the node's class and machine.
    pub fn find(
        &self,
        soname: &str,
        origin: &Path,
        search: &[String],
        class: (bool, u16),
    ) -> Option<PathBuf> {
        let fits = |p: &Path| elf::read(p).is_ok_and(|f| (f.is_64, f.machine) == class);
        let runpath = search.iter().map(|s| {
            PathBuf::from(
                s.replace("${ORIGIN}", &origin.to_string_lossy())
                    .replace("$ORIGIN", &origin.to_string_lossy()),
            )
            .join(soname)
        });
        let cached = self.cache.get(soname).into_iter().flatten().cloned();
        let defaults = self.defaults.iter().map(|d| d.join(soname));
        runpath
            .chain(cached)
            .chain(defaults)
            .find(|p| p.exists() && fits(p))
    }
}

/// `ldconfig -p` lines: `\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1`.
pub fn parse_ldconfig(text: &str) -> BTreeMap<String, Vec<PathBuf>> {
    let mut m: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for line in text.lines() {
        let Some((left, path)) = line.split_once(" => ") else {
            continue;
        };
        let Some(name) = left.split_whitespace().next() else {
            continue;
        };
        m.entry(name.to_owned())
            .or_default()
            .push(PathBuf::from(path.trim()));
    }
    m
}

/// The `DT_NEEDED` closure of one library: (found count, missing
/// `(soname, needed by)`).
pub fn closure(
    root: &Path,
    facts: &ElfFacts,
    resolver: &Resolver,
    class: (bool, u16),
) -> (usize, Vec<(String, String)>) {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    if let Some(s) = &facts.soname {
        seen.insert(s.clone());
    }
    let root_name = root.file_name().map_or_else(
        || root.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut queue: VecDeque<(String, String, PathBuf, Vec<String>)> = facts
        .needed
        .iter()
        .map(|n| {
            (
                n.clone(),
                root_name.clone(),
                root.parent().unwrap_or(Path::new("/")).to_owned(),
                facts.search.clone(),
            )
        })
        .collect();
    let mut found = 0;
    let mut missing = Vec::new();
    while let Some((soname, by, origin, search)) = queue.pop_front() {
        if !seen.insert(soname.clone()) || found >= MAX_CLOSURE {
            continue;
        }
        match resolver.find(&soname, &origin, &search, class) {
            Some(p) => {
                found += 1;
                if let Ok(f) = elf::read(&p) {
                    let dir = p.parent().unwrap_or(Path::new("/")).to_owned();
                    for n in &f.needed {
                        queue.push_back((n.clone(), soname.clone(), dir.clone(), f.search.clone()));
                    }
                }
            }
            None => missing.push((soname, by)),
        }
    }
    (found, missing)
}

/// Records a finding per declared library and per declared directory.
pub fn check(policy: &Policy, out: &mut Vec<Finding>) {
    let libs = declared(policy);
    let paths = declared_paths(policy);
    if libs.is_empty() && paths.is_empty() {
        out.push(Finding::ok(
            CHECK,
            "the policy declares no host MPI, libfabric or UCX (mpi_replace, libfabric_inject \
             and ucx_replace have nothing to offer)",
        ));
        return;
    }
    let class = elf::node_class();
    let resolver = Resolver::host();
    if let Some(p) = &resolver.cache_problem {
        out.push(Finding::warn(
            CHECK,
            format!("the host linker cache cannot be listed ({p}): dependencies are looked up in the default directories only"),
            "run ldconfig as root",
        ));
    }
    for (key, path) in &libs {
        out.push(library(key, path, &resolver, class));
    }
    for (key, path) in &paths {
        if path.exists() {
            out.push(Finding::ok(
                CHECK,
                format!("{key}: {} exists", path.display()),
            ));
        } else {
            out.push(Finding::warn(
                CHECK,
                format!("{key}: {} does not exist", path.display()),
                format!(
                    "create it, install what provides it, or remove it from `{key}` in the policy"
                ),
            ));
        }
    }
}

fn library(key: &str, path: &Path, resolver: &Resolver, class: (bool, u16)) -> Finding {
    let table = key.rsplit_once('.').map_or(key, |(t, _)| t);
    if !path.exists() {
        return Finding::fail(
            CHECK,
            format!("{key}: {} does not exist", path.display()),
            format!(
                "install the package that provides it (Debian: `apt-file search {name}`, RPM: \
                 `dnf provides '*/{name}'`), or correct the path or remove [{table}] in the policy",
                name = path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            ),
        );
    }
    let facts = match elf::read(path) {
        Ok(f) => f,
        Err(e) => {
            return Finding::fail(
                CHECK,
                format!("{key}: {e}"),
                format!(
                "point `{key}` at the shared library itself (not a linker script or a directory)"
            ),
            )
        }
    };
    if (facts.is_64, facts.machine) != class {
        return Finding::fail(
            CHECK,
            format!(
                "{key}: {} is a {} object, but this node runs {} binaries: images could not load it",
                path.display(),
                facts.describe(),
                elf::describe(class.0, class.1)
            ),
            format!("name the node's native build of this library in `{key}` (e.g. the one under /usr/lib/<multiarch>/ or /usr/lib64/)"),
        );
    }
    let (found, missing) = closure(path, &facts, resolver, class);
    if missing.is_empty() {
        Finding::ok(
            CHECK,
            format!(
                "{key}: {} ({}, {found} dependenc{} resolved)",
                path.display(),
                facts.describe(),
                if found == 1 { "y" } else { "ies" }
            ),
        )
    } else {
        let list: Vec<String> = missing
            .iter()
            .map(|(s, by)| format!("{s} (needed by {by})"))
            .collect();
        Finding::fail(
            CHECK,
            format!(
                "{key}: {} needs libraries the host linker cannot find: {}",
                path.display(),
                list.join(", ")
            ),
            "install the packages that provide them and run ldconfig, or add their directory to \
             /etc/ld.so.conf.d/ and run ldconfig",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldconfig_output_parses() {
        let m = parse_ldconfig(
            "1234 libs found in cache `/etc/ld.so.cache'\n\
             \tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1\n\
             \tlibz.so.1 (libc6) => /lib/i386-linux-gnu/libz.so.1\n\
             Cache generated by: ldconfig (GNU libc) stable release version 2.36\n",
        );
        assert_eq!(m["libz.so.1"].len(), 2);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn missing_library_names_the_key_and_a_fix() {
        let f = library(
            "mpi.mpich.libraries",
            Path::new("/nonexistent/libmpich.so.12"),
            &Resolver::default(),
            elf::node_class(),
        );
        assert_eq!(f.status, super::super::Status::Fail);
        assert!(f.message.contains("mpi.mpich.libraries"), "{f:?}");
        assert!(f.fix.unwrap().contains("[mpi.mpich]"));
    }

    #[test]
    fn a_host_library_of_this_node_resolves() {
        // libc's own closure is the dynamic loader only: always there.
        let resolver = Resolver::host();
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
            "/lib64/libc.so.6",
        ]
        .iter()
        .map(Path::new)
        .find(|p| p.exists());
        let Some(libc) = libc else { return };
        let f = library("mpi.x.libraries", libc, &resolver, elf::node_class());
        assert_eq!(f.status, super::super::Status::Ok, "{f:?}");
    }

    #[test]
    fn a_text_file_is_not_a_library() {
        let f = library(
            "ucx.libraries",
            Path::new("/etc/hostname"),
            &Resolver::default(),
            elf::node_class(),
        );
        if Path::new("/etc/hostname").exists() {
            assert_eq!(f.status, super::super::Status::Fail);
            assert!(f.message.contains("not an ELF"), "{f:?}");
        }
    }
}
