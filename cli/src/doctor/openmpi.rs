//! A host Open MPI (`[mpi.NAME] abi = "openmpi"`) is more than
//! `libmpi.so.40` and its `DT_NEEDED` closure: `MPI_Init` dlopens its
//! components (`mca_*.so`) from its compiled-in directory, and the PMIx
//! client library dlopens its own plugins (`pmix_mca_*.so`) from the
//! directory next to `libpmix`. In a container those directories exist
//! only when the policy's `mounts` bind them, and the libraries the
//! components need only when `dependencies` lists them (hpcc puts those
//! into the container's linker cache). Without them every rank ends in
//! `Local abort before MPI_INIT completed successfully` (PMIx cannot
//! start: no `libpmix.so.2`, or no PMIx plugins), which says nothing about
//! the cause. This check derives both from the host's own files and names
//! what the policy lacks.

use super::elf;
use super::libraries::{Found, Resolver};
use super::Finding;
use hpcc_config::{HostMpi, MpiAbi, Policy};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

const CHECK: &str = "open-mpi";
/// Most libraries followed from one set of roots.
const MAX_CLOSURE: usize = 1024;
/// The C library's parts: the image's own are used, never the host's.
const LIBC: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "libpthread.so.0",
    "librt.so.1",
    "libutil.so.1",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];
/// OpenSHMEM's frameworks: opened by `shmem_init`, never by `MPI_Init`.
const OSHMEM: &[&str] = &["atomic", "memheap", "scoll", "spml", "sshmem"];
/// Open MPI's defaults file: components it excludes are never opened.
const MCA_PARAMS: &str = "/etc/openmpi/openmpi-mca-params.conf";

/// Component directories of one Open MPI: Open MPI's own and PMIx's.
#[derive(Debug, Default)]
struct Layout {
    ompi: Option<PathBuf>,
    pmix: Option<PathBuf>,
}

fn has_components(dir: &Path, prefix: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".so")
        })
    })
}

/// Open MPI's component directory next to `libmpi`: Debian's
/// `openmpi/lib/openmpi3`, upstream's `openmpi` (in `<prefix>/lib`).
fn ompi_dir(libmpi: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(libmpi).ok()?;
    let dir = real.parent()?;
    [
        dir.join("openmpi3"),
        dir.join("openmpi"),
        dir.join("openmpi/lib/openmpi3"),
        dir.join("openmpi/lib/openmpi"),
    ]
    .into_iter()
    .find(|d| has_components(d, "mca_"))
}

/// PMIx's plugin directory next to the real `libpmix`: `<libdir>/pmix`.
fn pmix_dir(libpmix: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(libpmix).ok()?;
    let d = real.parent()?.join("pmix");
    has_components(&d, "pmix_mca_").then_some(d)
}

/// The `DT_NEEDED` closure of `roots`: soname -> where the host has it.
fn closure(
    roots: &[PathBuf],
    resolver: &Resolver,
    class: (bool, u16),
) -> BTreeMap<String, PathBuf> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut queue: VecDeque<PathBuf> = roots.iter().cloned().collect();
    let mut done: BTreeSet<PathBuf> = BTreeSet::new();
    while let Some(p) = queue.pop_front() {
        if found.len() >= MAX_CLOSURE || !done.insert(p.clone()) {
            continue;
        }
        let Ok(f) = elf::read(&p) else { continue };
        if let Some(s) = &f.soname {
            found.entry(s.clone()).or_insert_with(|| p.clone());
        }
        let origin = p.parent().unwrap_or(Path::new("/")).to_owned();
        for n in &f.needed {
            if found.contains_key(n) {
                continue;
            }
            if let Some(q) = resolver
                .find(n, &origin, &f.search, class)
                .map(Found::into_path)
            {
                found.insert(n.clone(), q.clone());
                queue.push_back(q);
            }
        }
    }
    found
}

/// Components excluded by `framework = ^a,b` lines of Open MPI's defaults
/// (`mca_<framework>_<a>`): Open MPI never opens them.
pub fn excluded(params: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in params.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if let Some(list) = v.trim().strip_prefix('^') {
            for c in list.split(',') {
                out.insert(format!("mca_{}_{}", k.trim(), c.trim()));
            }
        }
    }
    out
}

/// What one component needs that the container will not have.
fn component_gaps(
    dir: &Path,
    prefix: &str,
    skip: &BTreeSet<String>,
    have: &BTreeMap<String, PathBuf>,
    resolver: &Resolver,
    class: (bool, u16),
) -> BTreeMap<String, (PathBuf, Vec<String>)> {
    let mut gaps: BTreeMap<String, (PathBuf, Vec<String>)> = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return gaps;
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".so")
        })
        .collect();
    files.sort();
    for comp in files {
        let name = comp
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if skip.contains(&name)
            || OSHMEM
                .iter()
                .any(|f| name.starts_with(&format!("mca_{f}_")))
        {
            continue;
        }
        for (soname, path) in closure(std::slice::from_ref(&comp), resolver, class) {
            if LIBC.contains(&soname.as_str()) || have.contains_key(&soname) {
                continue;
            }
            // The component itself (soname-less plugins are keyed by file).
            if path == comp {
                continue;
            }
            gaps.entry(soname)
                .or_insert_with(|| (path, Vec::new()))
                .1
                .push(name.clone());
        }
    }
    gaps
}

fn covered(dir: &Path, mounts: &[PathBuf]) -> bool {
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    mounts.iter().any(|m| {
        let m = std::fs::canonicalize(m).unwrap_or_else(|_| m.clone());
        real.starts_with(&m)
    })
}

/// Records findings for every `[mpi.NAME]` of the Open MPI ABI.
pub fn check(policy: &Policy, out: &mut Vec<Finding>) {
    let offers: Vec<(&String, &HostMpi)> = policy
        .mpi
        .iter()
        .filter(|(_, m)| m.abi == MpiAbi::Openmpi)
        .collect();
    if offers.is_empty() {
        return;
    }
    let class = elf::node_class();
    let resolver = Resolver::host(policy);
    let skip = std::fs::read_to_string(MCA_PARAMS)
        .map(|t| excluded(&t))
        .unwrap_or_default();
    for (name, m) in offers {
        check_one(name, m, &skip, &resolver, class, out);
    }
}

fn check_one(
    name: &str,
    m: &HostMpi,
    skip: &BTreeSet<String>,
    resolver: &Resolver,
    class: (bool, u16),
    out: &mut Vec<Finding>,
) {
    let key = format!("mpi.{name}");
    let Some(libmpi) = m.libraries.iter().find(|p| p.exists()) else {
        // host-libraries already says that the library is missing.
        return;
    };
    let roots: Vec<PathBuf> = m
        .libraries
        .iter()
        .chain(&m.dependencies)
        .filter(|p| p.exists())
        .cloned()
        .collect();
    let have = closure(&roots, resolver, class);
    let mut layout = Layout {
        ompi: ompi_dir(libmpi),
        pmix: None,
    };
    let Some(ompi) = layout.ompi.clone() else {
        out.push(Finding::warn(
            CHECK,
            format!(
                "{key}: no Open MPI component directory (mca_*.so) found next to {}",
                libmpi.display()
            ),
            format!("add the directory of Open MPI's mca_*.so files to `{key}.mounts`"),
        ));
        return;
    };
    // libpmix as Open MPI's PMIx component finds it.
    let libpmix = std::fs::read_dir(&ompi)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("mca_pmix_"))
        })
        .flat_map(|p| closure(&[p], resolver, class))
        .find(|(s, _)| s.starts_with("libpmix.so"));
    layout.pmix = libpmix.as_ref().and_then(|(_, p)| pmix_dir(p));

    let mut fails = Vec::new();
    let mut fix = Vec::new();
    let mut unmounted = Vec::new();
    for d in [Some(&ompi), layout.pmix.as_ref()].into_iter().flatten() {
        if !covered(d, &m.mounts) {
            unmounted.push(d.display().to_string());
        }
    }
    if !unmounted.is_empty() {
        fails.push(format!(
            "its component directories are not in `{key}.mounts`: {} (Open MPI and PMIx dlopen their plugins from there at their compiled-in paths)",
            unmounted.join(", ")
        ));
        fix.push(format!("add {} to `{key}.mounts`", unmounted.join(", ")));
    }
    let mut gaps = component_gaps(&ompi, "mca_", skip, &have, resolver, class);
    if let Some(p) = &layout.pmix {
        // Merged, not extended: PMIx's plugins need libpmix too, and the
        // Open MPI components that need it must stay named.
        for (soname, (path, by)) in component_gaps(p, "pmix_mca_", skip, &have, resolver, class) {
            gaps.entry(soname)
                .or_insert_with(|| (path, Vec::new()))
                .1
                .extend(by);
        }
    }
    // Without libpmix MPI_Init cannot reach Slurm's PMIx server at all;
    // other gaps lose single components (a transport, an I/O module).
    let (vital, other): (Vec<_>, Vec<_>) = gaps.iter().partition(|(_, (_, by))| {
        by.iter()
            .any(|c| c.starts_with("mca_pmix_") || c.starts_with("mca_ess_pmi"))
    });
    if !vital.is_empty() {
        let libs: Vec<String> = vital
            .iter()
            .map(|(_, (p, _))| p.display().to_string())
            .collect();
        fails.push(format!(
            "its PMIx component needs {}, which the container will not have",
            libs.join(", ")
        ));
        fix.push(format!("add {} to `{key}.dependencies`", libs.join(", ")));
    }
    if !fails.is_empty() {
        out.push(Finding::fail(
            CHECK,
            format!(
                "{key}: Open MPI cannot start in a container (each rank prints `Local abort before MPI_INIT completed successfully`): {}",
                fails.join("; ")
            ),
            fix.join("; "),
        ));
    }
    if !other.is_empty() {
        let list: Vec<String> = other
            .iter()
            .map(|(_, (p, by))| format!("{} ({})", p.display(), by.join(" ")))
            .collect();
        let paths: Vec<String> = other
            .iter()
            .map(|(_, (p, _))| p.display().to_string())
            .collect();
        out.push(Finding::warn(
            CHECK,
            format!(
                "{key}: Open MPI components that will not load in a container (`mca_base_component_repository_open: unable to open ...`): they need {}",
                list.join(", ")
            ),
            format!(
                "add {} to `{key}.dependencies`, or exclude the components in {MCA_PARAMS} (e.g. `btl = ^openib`)",
                paths.join(", ")
            ),
        ));
    }
    if fails.is_empty() && other.is_empty() {
        out.push(Finding::ok(
            CHECK,
            format!(
                "{key}: Open MPI's components ({}{}) are mounted and find their libraries",
                ompi.display(),
                layout
                    .pmix
                    .as_ref()
                    .map(|p| format!(", {}", p.display()))
                    .unwrap_or_default()
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBDIR: &str = "/usr/lib/x86_64-linux-gnu";

    fn has_open_mpi() -> bool {
        Path::new(&format!("{LIBDIR}/libmpi.so.40")).exists()
    }

    fn offer(deps: &[&str], mounts: &[&str]) -> Policy {
        let mut p = Policy::default();
        p.mpi.insert(
            "openmpi".into(),
            HostMpi {
                abi: MpiAbi::Openmpi,
                libraries: vec![format!("{LIBDIR}/libmpi.so.40").into()],
                dependencies: deps
                    .iter()
                    .map(|d| format!("{LIBDIR}/{d}").into())
                    .collect(),
                mounts: mounts.iter().map(PathBuf::from).collect(),
                env: Default::default(),
            },
        );
        p
    }

    #[test]
    fn excluded_components_come_from_caret_lists() {
        let e = excluded("# Debian\nbtl = ^openib,ofi\npml = ^ucx  # no UCX\nmtl = psm2\n");
        assert_eq!(
            e.into_iter().collect::<Vec<_>>(),
            ["mca_btl_ofi", "mca_btl_openib", "mca_pml_ucx"]
        );
    }

    /// The policy of docs/slurm.md passes; without the PMIx plugin
    /// directory and the libraries the components need (what the issue's
    /// site had), the check fails and names both.
    #[test]
    fn the_docs_policy_passes_and_a_short_one_is_named() {
        assert!(
            has_open_mpi(),
            "Open MPI is not installed (apt-get install openmpi-bin libopenmpi-dev)"
        );
        let mounts = [
            "/usr/lib/x86_64-linux-gnu/openmpi/lib",
            "/usr/lib/x86_64-linux-gnu/pmix2/lib/pmix",
            "/usr/share/openmpi",
            "/etc/openmpi",
        ];
        let docs = offer(
            &[
                "libpmix.so.2",
                "libmunge.so.2",
                "libnl-3.so.200",
                "libmca_common_sm.so.40",
                "libmca_common_ompio.so.41",
                "libmca_common_monitoring.so.50",
                "libpsm2.so.2",
                "libpsm_infinipath.so.1",
            ],
            &mounts,
        );
        let mut out = Vec::new();
        check(&docs, &mut out);
        let fails: Vec<_> = out
            .iter()
            .filter(|f| f.status == super::super::Status::Fail)
            .collect();
        assert!(fails.is_empty(), "{fails:#?}");
        assert!(
            out.iter()
                .any(|f| f.status == super::super::Status::Ok
                    && f.message.contains("pmix2/lib/pmix")),
            "{out:#?}"
        );

        let short = offer(
            &[],
            &[
                "/usr/lib/x86_64-linux-gnu/openmpi/lib",
                "/usr/share/openmpi",
            ],
        );
        let mut out = Vec::new();
        check(&short, &mut out);
        let fail = out
            .iter()
            .find(|f| f.status == super::super::Status::Fail)
            .unwrap_or_else(|| panic!("no failure: {out:#?}"));
        assert!(fail.message.contains("pmix2/lib/pmix"), "{}", fail.message);
        assert!(fail.message.contains("libpmix.so.2"), "{}", fail.message);
        assert!(
            fail.message.contains("Local abort before MPI_INIT"),
            "{}",
            fail.message
        );
        let fix = fail.fix.as_deref().unwrap();
        assert!(
            fix.contains("mpi.openmpi.mounts") && fix.contains("mpi.openmpi.dependencies"),
            "{fix}"
        );
    }
}
