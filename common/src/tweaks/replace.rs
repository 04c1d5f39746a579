//! Replacing image libraries with host ones, the part MPI, libfabric and
//! UCX share: find the image's copy, check that the host's may stand in
//! for it (ELF class and machine, soname major, version, glibc), mount it
//! over the image's file, and bring its own dependencies along.

use super::soname::{closure, glibc_beyond, split_soname};
use super::{Inputs, Part, TweakError};
use crate::elf::ElfInfo;
use crate::matcher::{Check, Level};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One host library to put in place of the image's.
#[derive(Debug, Clone)]
pub(crate) struct LibSpec {
    /// Host path, from the policy.
    pub host_path: PathBuf,
    /// The policy key that names it (for errors).
    pub key: String,
    /// Stems under which the image may carry it (`libmpi`, `libmpich`).
    pub stems: Vec<String>,
    /// Whether the image must carry it: for the MPI library itself a
    /// missing image copy means there is nothing to replace; for others the
    /// host's is simply provided in the dependency directory.
    pub required: bool,
}

/// One component to replace.
#[derive(Debug, Clone)]
pub(crate) struct Component {
    /// How messages name it (`host MPI \`mpich\` (mpich ABI)`).
    pub what: String,
    /// The check its image-side failures belong to.
    pub check: Check,
    /// Its dependency directory in the container.
    pub deps_dir: PathBuf,
    /// Its libraries.
    pub libs: Vec<LibSpec>,
    /// Policy `dependencies` (dlopen'ed libraries), with their key.
    pub extra_deps: Vec<PathBuf>,
    /// The key of `extra_deps`.
    pub extra_key: String,
}

/// ELF machine names for messages.
fn machine(m: u16) -> String {
    match m {
        3 => "i386".into(),
        62 => "x86-64".into(),
        183 => "AArch64".into(),
        21 => "PowerPC64".into(),
        22 => "S/390".into(),
        243 => "RISC-V".into(),
        o => format!("machine {o}"),
    }
}

fn describe(info: &ElfInfo) -> String {
    format!(
        "{}-bit {}",
        if info.is_64 { 64 } else { 32 },
        machine(info.machine)
    )
}

/// The name under which a host library answers for its stems, and its
/// major: its soname when that has one of the stems, else its file name
/// (Cray's `libmpi.so.12` has the soname `libmpich_gnu_71.so.3`).
fn abi_name(lib: &LibSpec, info: &ElfInfo) -> Option<(String, String, u64)> {
    let file = lib
        .host_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    for n in info.soname.iter().chain(file.iter()) {
        if let Some((stem, v)) = split_soname(n) {
            if lib.stems.iter().any(|s| s == stem) {
                return Some((n.clone(), stem.to_owned(), *v.first()?));
            }
        }
    }
    None
}

/// The version of a library file from its name (`libmpich.so.12.2.2` ->
/// 12.2.2); only names with more than the major say anything.
fn file_version(p: &Path) -> Option<Vec<u64>> {
    let n = p.file_name()?.to_string_lossy().into_owned();
    let (_, v) = split_soname(&n)?;
    (v.len() > 1).then_some(v)
}

fn dotted(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// Plans one component into `part`. Returns the host libraries (path and
/// ELF facts) that the plan puts in the container, dependencies included.
pub(crate) fn plan(
    input: &Inputs<'_>,
    comp: &Component,
    part: &mut Part,
) -> Result<Vec<(PathBuf, ElfInfo)>, TweakError> {
    let host = input.host;
    let mut roots: Vec<(String, ElfInfo)> = Vec::new();
    let mut provided: Vec<(PathBuf, ElfInfo)> = Vec::new();
    let mut skip: BTreeSet<String> = BTreeSet::new();
    for lib in &comp.libs {
        let info = host
            .elf(&lib.host_path)
            .map_err(|e| TweakError::HostLibrary {
                key: lib.key.clone(),
                path: lib.host_path.clone(),
                reason: e.to_string(),
            })?;
        let Some((abi, stem, major)) = abi_name(lib, &info) else {
            return Err(TweakError::Policy {
                key: lib.key.clone(),
                value: lib.host_path.display().to_string(),
                reason: format!(
                    "neither its soname ({}) nor its file name is a {} library with a version",
                    info.soname.as_deref().unwrap_or("none"),
                    lib.stems.join("/")
                ),
            });
        };
        let soname = info.soname.clone().unwrap_or_else(|| abi.clone());
        skip.insert(soname.clone());
        skip.insert(abi.clone());
        // The image's copies, under any alias stem with the same major.
        let stems: Vec<&String> = std::iter::once(&stem)
            .chain(lib.stems.iter().filter(|s| **s != stem))
            .collect();
        match input.image {
            None => {
                provide(part, comp, &lib.host_path, &soname, "no rootfs to inspect");
                if abi != soname {
                    provide(part, comp, &lib.host_path, &abi, "no rootfs to inspect");
                }
            }
            Some(image) => {
                let cands: Vec<_> = stems
                    .iter()
                    .flat_map(|s| image.find_major(s, major))
                    .collect();
                if cands.is_empty() {
                    let others: Vec<String> = stems
                        .iter()
                        .flat_map(|s| {
                            image
                                .majors(s)
                                .into_iter()
                                .filter(|m| *m != major)
                                .map(move |m| format!("{s}.so.{m}"))
                        })
                        .collect();
                    if !others.is_empty() && lib.required {
                        part.finding(
                            comp.check,
                            Level::Fatal,
                            format!(
                                "the soname major differs: the image carries {}, the {} is {abi} (major {major}): libraries of another major are not interchangeable",
                                others.join(", "),
                                comp.what
                            ),
                        )
                        .image = Some(others.join(", "));
                        continue;
                    }
                    if lib.required {
                        part.finding(
                            comp.check,
                            Level::Fatal,
                            format!(
                                "the image's {} was not found, so there is nothing for the {} to replace ({}); if the image does carry it, its linker cache is stale or absent: run ldconfig when building the image",
                                lib.stems
                                    .iter()
                                    .map(|s| format!("{s}.so.{major}"))
                                    .collect::<Vec<_>>()
                                    .join(" or "),
                                comp.what,
                                image.searched()
                            ),
                        );
                        continue;
                    }
                    provide(part, comp, &lib.host_path, &soname, "the image has none");
                    continue;
                }
                for c in cands {
                    let img = match image.elf(&c.path) {
                        Ok(i) => i,
                        Err(e) => {
                            part.finding(
                                comp.check,
                                Level::Fatal,
                                format!(
                                    "the image's {} ({}) cannot be inspected, so the {} cannot be checked against it: {e}",
                                    c.name,
                                    c.path.display(),
                                    comp.what
                                ),
                            );
                            continue;
                        }
                    };
                    if img.is_64 != info.is_64 || img.machine != info.machine {
                        part.finding(
                            comp.check,
                            Level::Fatal,
                            format!(
                                "the image's {} is a {} object, the {} ({}) is {}: it cannot load in its place",
                                c.path.display(),
                                describe(&img),
                                comp.what,
                                lib.host_path.display(),
                                describe(&info)
                            ),
                        )
                        .image = Some(describe(&img));
                        continue;
                    }
                    let host_real = host
                        .canonical(&lib.host_path)
                        .unwrap_or_else(|| lib.host_path.clone());
                    if let (Some(hv), Some(iv)) = (file_version(&host_real), file_version(&c.path))
                    {
                        if hv < iv {
                            let f = part.finding(
                                comp.check,
                                Level::Degraded,
                                format!(
                                    "the {} ({}) is older than the image's {} ({}): same major, so it loads, but functions added in {} may be missing",
                                    comp.what,
                                    dotted(&hv),
                                    c.name,
                                    dotted(&iv),
                                    dotted(&iv)
                                ),
                            );
                            f.image = Some(format!("{} {}", c.name, dotted(&iv)));
                            f.node = Some(format!("{} {}", host_real.display(), dotted(&hv)));
                        }
                    }
                    part.mount(
                        &lib.host_path,
                        c.path.clone(),
                        format!("{} replaces the image's {}", comp.what, c.name),
                    );
                    // Programs of the image ask for the image library's own
                    // soname; the linker cache knows the host file under the
                    // host soname only: provide both names.
                    let img_soname = img.soname.clone().unwrap_or_else(|| c.name.clone());
                    for n in [&img_soname, &c.name] {
                        skip.insert(n.clone());
                    }
                    if img_soname != soname || c.name != soname {
                        provide(
                            part,
                            comp,
                            &lib.host_path,
                            &soname,
                            "its soname differs from the image's",
                        );
                        for n in [&img_soname, &c.name] {
                            if *n != soname {
                                provide(part, comp, &lib.host_path, n, "under the image's name");
                            }
                        }
                    }
                }
            }
        }
        roots.push((soname, info.clone()));
        provided.push((lib.host_path.clone(), info));
    }
    for d in &comp.extra_deps {
        let info = host.elf(d).map_err(|e| TweakError::HostLibrary {
            key: comp.extra_key.clone(),
            path: d.clone(),
            reason: e.to_string(),
        })?;
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        part.mount(
            d,
            comp.deps_dir.join(&name),
            format!("policy {} of the {}", comp.extra_key, comp.what),
        );
        part.ld_path(comp.deps_dir.clone());
        skip.insert(name.clone());
        roots.push((name, info.clone()));
        provided.push((d.clone(), info));
    }
    let cl = closure(host, &roots, &skip);
    for d in &cl.deps {
        part.mount(
            &d.host_path,
            comp.deps_dir.join(&d.soname),
            format!("{} needed by {} ({})", d.soname, d.needed_by, comp.what),
        );
        part.ld_path(comp.deps_dir.clone());
        provided.push((d.host_path.clone(), d.info.clone()));
    }
    if !cl.missing.is_empty() {
        part.finding(
            comp.check,
            Level::Degraded,
            format!(
                "dependencies of the {} are not in the host linker cache: {}; the image's own copies, if any, are used",
                comp.what,
                cl.missing
                    .iter()
                    .map(|(s, by)| format!("{s} (needed by {by})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    if cl.truncated {
        part.finding(
            comp.check,
            Level::Degraded,
            format!(
                "the dependency tree of the {} is larger than hpcc follows ({} libraries, depth {}): the rest comes from the image",
                comp.what,
                super::soname::MAX_DEPENDENCIES,
                super::soname::MAX_DEPTH
            ),
        );
    }
    if let Some(image) = input.image {
        check_glibc(image, comp, &provided, part);
    }
    Ok(provided)
}

/// Mounts a host library into the component's dependency directory under
/// `name`.
fn provide(part: &mut Part, comp: &Component, host_path: &Path, name: &str, why: &str) {
    part.mount(
        host_path,
        comp.deps_dir.join(name),
        format!("{} as {name} ({why})", comp.what),
    );
    part.ld_path(comp.deps_dir.clone());
}

/// Every host library put in the container must load on the image's glibc:
/// a `GLIBC_x.y` it needs beyond what the image's libc defines is the
/// classic "version `GLIBC_2.38' not found" crash at run time.
pub(crate) fn check_glibc(
    image: &super::image::ImageLibs<'_>,
    comp: &Component,
    libs: &[(PathBuf, ElfInfo)],
    part: &mut Part,
) {
    let have = match image.glibc() {
        Ok(v) => v,
        Err(e) => {
            part.finding(
                Check::Libc,
                Level::Fatal,
                format!(
                    "the image's glibc version is unknown ({e}): the {}, built against glibc, cannot be checked and is not injected",
                    comp.what
                ),
            );
            return;
        }
    };
    let mut too_new = Vec::new();
    for (path, info) in libs {
        if let Some(v) = glibc_beyond(info, &have).first() {
            too_new.push((path, v.clone()));
        }
    }
    if too_new.is_empty() {
        return;
    }
    let max = too_new
        .iter()
        .map(|(_, v)| v)
        .max()
        .cloned()
        .expect("non-empty");
    let f = part.finding(
        Check::Libc,
        Level::Fatal,
        format!(
            "the {} needs glibc {max} (GLIBC_{max}), the image's glibc is {have}: {}; it would fail to load in the container, so it is not injected",
            comp.what,
            too_new
                .iter()
                .map(|(p, v)| format!("{} needs GLIBC_{v}", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    f.image = Some(format!("glibc {have}"));
    f.node = Some(format!("host libraries need glibc {max}"));
}

/// Plans a directory of dlopen'ed plugins (libfabric providers, UCX
/// modules): bound at its host path, its variable set, and the plugins' own
/// dependencies mounted into the component's directory, since no
/// `DT_NEEDED` of the injected libraries names them. `skip` holds sonames
/// the component already provides.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_plugin_dir(
    input: &Inputs<'_>,
    comp: &Component,
    part: &mut Part,
    dir: &Path,
    (var, policy_key): (&str, &str),
    plugin_kind: &str,
    max: usize,
    skip: &BTreeSet<String>,
) {
    part.mount(
        dir,
        dir.to_owned(),
        format!("{plugin_kind}s (policy {policy_key})"),
    );
    part.env(
        var,
        &dir.display().to_string(),
        format!("policy {policy_key}"),
    );
    let plugins: Vec<(String, ElfInfo)> = input
        .host
        .list_dir(dir, max)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".so"))
        })
        .filter_map(|p| Some((p.display().to_string(), input.host.elf(&p).ok()?)))
        .collect();
    let cl = closure(input.host, &plugins, skip);
    let mut checked: Vec<(PathBuf, ElfInfo)> = plugins
        .iter()
        .map(|(p, i)| (PathBuf::from(p), i.clone()))
        .collect();
    for d in cl.deps {
        part.mount(
            &d.host_path,
            comp.deps_dir.join(&d.soname),
            format!("{} needed by {plugin_kind} {}", d.soname, d.needed_by),
        );
        part.ld_path(comp.deps_dir.clone());
        checked.push((d.host_path, d.info));
    }
    if let Some(image) = input.image {
        check_glibc(image, comp, &checked, part);
    }
}
