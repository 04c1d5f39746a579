//! The host libraries the policy declares: they exist, are ELF objects of
//! this node's class and machine, and everything they need (`DT_NEEDED`,
//! transitively) resolves as the launch resolves it: through the host
//! linker cache, read by the launch's own reader (`hpcc_common::host`), or
//! among the libraries the policy declares. A dependency found only through
//! a `DT_RUNPATH`/`DT_RPATH` or in a directory the cache does not list is
//! reported: the launch would not inject it. The directories the policy
//! names (libfabric providers, UCX modules, MPI mounts) exist.

use super::elf::{self, ElfFacts};
use super::Finding;
use hpcc_common::host::HostLibraries;
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

/// The launch's view of the host's libraries ([`HostLibraries`]), the
/// sonames of the libraries the policy declares (the launch injects those
/// by path), and, only to explain a miss, the default directories.
#[derive(Debug, Default)]
pub struct Resolver {
    host: Option<HostLibraries>,
    declared: BTreeMap<String, PathBuf>,
    defaults: Vec<PathBuf>,
    /// Why the linker cache cannot be used.
    pub cache_problem: Option<String>,
}

/// Where a dependency was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// As the launch finds it (the linker cache, or a declared library).
    Launch(PathBuf),
    /// Only through a RUNPATH/RPATH or a default directory the cache does
    /// not list: the launch would not inject it.
    Elsewhere(PathBuf),
}

impl Found {
    /// Where it is, however it was found.
    pub fn into_path(self) -> PathBuf {
        match self {
            Found::Launch(p) | Found::Elsewhere(p) => p,
        }
    }
}

impl Resolver {
    /// The host's resolver for a policy's declared libraries.
    pub fn host(policy: &Policy) -> Resolver {
        let host = HostLibraries::system();
        let declared = declared(policy)
            .into_iter()
            .filter_map(|(_, p)| {
                let soname = host.elf(&p).ok()?.soname?;
                Some((soname, p))
            })
            .collect();
        let cache_problem = host.cache_problem().map(str::to_owned);
        Resolver {
            host: Some(host),
            declared,
            cache_problem,
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
        }
    }

    /// Where `soname`, needed by a library in `origin` with these
    /// RUNPATH/RPATH entries, is found with the node's class and machine:
    /// as the launch finds it, else (to say why the launch will not) where
    /// the loader on the host would.
    pub fn find(
        &self,
        soname: &str,
        origin: &Path,
        search: &[String],
        class: (bool, u16),
    ) -> Option<Found> {
        let fits = |p: &Path| elf::read(p).is_ok_and(|f| (f.is_64, f.machine) == class);
        if let Some(p) = self.declared.get(soname) {
            return Some(Found::Launch(p.clone()));
        }
        if let Some(p) = self.host.as_ref().and_then(|h| h.find(soname)) {
            return Some(Found::Launch(p));
        }
        let runpath = search.iter().map(|s| {
            PathBuf::from(
                s.replace("${ORIGIN}", &origin.to_string_lossy())
                    .replace("$ORIGIN", &origin.to_string_lossy()),
            )
            .join(soname)
        });
        let defaults = self.defaults.iter().map(|d| d.join(soname));
        runpath
            .chain(defaults)
            .find(|p| p.exists() && fits(p))
            .map(Found::Elsewhere)
    }
}

/// The `DT_NEEDED` closure of one library: (found count, missing
/// `(soname, needed by, where the host's loader would find it)`).
pub fn closure(
    root: &Path,
    facts: &ElfFacts,
    resolver: &Resolver,
    class: (bool, u16),
) -> (usize, Vec<(String, String, Option<PathBuf>)>) {
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
            Some(Found::Launch(p)) => {
                found += 1;
                if let Ok(f) = elf::read(&p) {
                    let dir = p.parent().unwrap_or(Path::new("/")).to_owned();
                    for n in &f.needed {
                        queue.push_back((n.clone(), soname.clone(), dir.clone(), f.search.clone()));
                    }
                }
            }
            Some(Found::Elsewhere(p)) => missing.push((soname, by, Some(p))),
            None => missing.push((soname, by, None)),
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
    let resolver = Resolver::host(policy);
    if let Some(p) = &resolver.cache_problem {
        out.push(Finding::warn(
            CHECK,
            format!("the host linker cache cannot be used ({p}): the launch finds no dependency of a host library but those the policy declares"),
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
            .map(|(s, by, elsewhere)| match elsewhere {
                Some(p) => format!(
                    "{s} (needed by {by}; at {} through a RUNPATH or a directory the linker cache does not list, which the launch does not search)",
                    p.display()
                ),
                None => format!("{s} (needed by {by})"),
            })
            .collect();
        Finding::fail(
            CHECK,
            format!(
                "{key}: {} needs libraries the launch cannot find in the host linker cache: {}",
                path.display(),
                list.join(", ")
            ),
            format!(
                "install the packages that provide them and run ldconfig, add their directory to \
                 /etc/ld.so.conf.d/ and run ldconfig, or list them in `{table}.dependencies`"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_outside_the_cache_is_reported_with_where_it_is() {
        // A library whose only dependency sits beside it, found through
        // RUNPATH=$ORIGIN: the loader finds it, the launch does not.
        let d = std::env::temp_dir().join(format!("hpcc-doctor-rp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let libc = HostLibraries::system().find("libc.so.6").unwrap();
        let dep = d.join("libhpccdep.so.1");
        std::fs::copy(&libc, &dep).unwrap();
        let facts = ElfFacts {
            is_64: elf::node_class().0,
            machine: elf::node_class().1,
            soname: Some("libhpccroot.so.1".into()),
            needed: vec!["libhpccdep.so.1".into()],
            search: vec!["$ORIGIN".into()],
        };
        let resolver = Resolver::host(&Policy::default());
        let root = d.join("libhpccroot.so.1");
        let (found, missing) = closure(&root, &facts, &resolver, elf::node_class());
        assert_eq!(found, 0);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing[0].0, "libhpccdep.so.1");
        assert_eq!(missing[0].2.as_deref(), Some(dep.as_path()));
        std::fs::remove_dir_all(&d).unwrap();
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
        let resolver = Resolver::host(&Policy::default());
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
