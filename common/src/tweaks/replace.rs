//! Replacing image libraries with host ones, the part MPI, libfabric and
//! UCX share: find the image's copy, check that the host's may stand in
//! for it (ELF class and machine, soname major, version, glibc), mount it
//! over the image's file, and bring its own dependencies along.

use super::host::Host;
use super::image::{ImageLib, ImageLibs};
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
    /// The image's private library directories (Python packages,
    /// `LD_LIBRARY_PATH`, vendor prefixes), searched for more copies to
    /// replace; `None`: the loader's search only.
    pub private: Option<std::sync::Arc<super::private::PrivateDirs>>,
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

/// What is known of one host library of a component.
#[derive(Debug, Clone)]
pub(crate) struct HostLib {
    /// Its ELF facts.
    pub info: ElfInfo,
    /// The name it answers to for its stems (soname or file name).
    pub abi: String,
    /// The stem of that name (`libmpich`).
    pub stem: String,
    /// Its soname major.
    pub major: u64,
    /// Its soname (the ABI name when it has none).
    pub soname: String,
}

/// The libraries a component puts in the container, and the names it
/// provides (which the dependency closure must not look up again).
#[derive(Debug, Default)]
struct Acc {
    roots: Vec<(String, ElfInfo)>,
    provided: Vec<(PathBuf, ElfInfo)>,
    skip: BTreeSet<String>,
}

/// Plans one component into `part`, in named steps: each host library is
/// inspected, then put over the image's copies (or provided when the image
/// has none, or when there is no image to look at); the policy's extra
/// dependencies are added; the dependency closure is mounted; and what the
/// host libraries need of glibc is checked against the image. Returns the
/// host libraries (path and ELF facts) the plan puts in the container.
pub(crate) fn plan(
    input: &Inputs<'_>,
    comp: &Component,
    part: &mut Part,
) -> Result<Vec<(PathBuf, ElfInfo)>, TweakError> {
    let mut acc = Acc::default();
    for lib in &comp.libs {
        let h = inspect_host(input.host, lib)?;
        acc.skip.insert(h.soname.clone());
        acc.skip.insert(h.abi.clone());
        match input.image {
            None => provide_uninspected(part, comp, lib, &h),
            Some(image) => replace_in_image(input.host, image, comp, lib, &h, part, &mut acc.skip),
        }
        acc.roots.push((h.soname.clone(), h.info.clone()));
        acc.provided.push((lib.host_path.clone(), h.info));
    }
    extra_dependencies(input.host, comp, part, &mut acc)?;
    let glibc_needs = dependency_closure(input.host, comp, part, &mut acc);
    ucx_modules(input, comp, part, &acc.provided);
    if let Some(image) = input.image {
        if check_glibc(image, comp, &acc.provided, part) {
            glibc_family(input, image, comp, &glibc_needs, part, &mut acc.provided);
        }
    }
    Ok(acc.provided)
}

/// Step 1: the host library's ELF facts and the name it answers to.
/// Failures here are the site's (a policy naming a missing or foreign
/// file), not the image's.
pub(crate) fn inspect_host(host: &dyn Host, lib: &LibSpec) -> Result<HostLib, TweakError> {
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
    Ok(HostLib {
        info,
        abi,
        stem,
        major,
        soname,
    })
}

/// Step 2a, no image to inspect (`hpcc match --annotations`): the host
/// library is shown in hpcc's own directory under both its names.
fn provide_uninspected(part: &mut Part, comp: &Component, lib: &LibSpec, h: &HostLib) {
    provide(
        part,
        comp,
        &lib.host_path,
        &h.soname,
        "no rootfs to inspect",
    );
    if h.abi != h.soname {
        provide(part, comp, &lib.host_path, &h.abi, "no rootfs to inspect");
    }
}

/// Step 2b: the image's copies of the library, under any alias stem with
/// the same major, each replaced by the host's; or what to do when it has
/// none.
#[allow(clippy::too_many_arguments)]
fn replace_in_image(
    host: &dyn Host,
    image: &ImageLibs<'_>,
    comp: &Component,
    lib: &LibSpec,
    h: &HostLib,
    part: &mut Part,
    skip: &mut BTreeSet<String>,
) {
    let cands = image_copies(image, comp, lib, h, part);
    if cands.is_empty() {
        missing_from_image(image, comp, lib, h, part);
        return;
    }
    for c in cands {
        replace_copy(host, image, comp, lib, h, &c, part, skip);
    }
}

/// The image's copies (one per distinct file); a soname the image lists
/// more often than hpcc follows is reported, so the cut is never silent.
fn image_copies(
    image: &ImageLibs<'_>,
    comp: &Component,
    lib: &LibSpec,
    h: &HostLib,
    part: &mut Part,
) -> Vec<ImageLib> {
    let stems = std::iter::once(&h.stem).chain(lib.stems.iter().filter(|s| **s != h.stem));
    let mut out: Vec<ImageLib> = Vec::new();
    // Paths already in `out`: an image can make the copies many.
    let mut have: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    for s in stems {
        let found = image.find_major(s, h.major);
        if let Some(note) = found.note(&format!("{s}.so.{}", h.major)) {
            part.finding(comp.check, Level::Degraded, note);
        }
        for l in found.libs {
            if have.insert(l.path.clone()) {
                out.push(l);
            }
        }
        if let Some(private) = &comp.private {
            let copies = private.copies(image.root(), s, h.major);
            for c in copies.found {
                if have.insert(c.path.clone()) {
                    out.push(ImageLib {
                        name: c.name,
                        path: c.path,
                    });
                }
            }
            if copies.more {
                part.finding(
                    comp.check,
                    Level::Degraded,
                    format!(
                        "more than {} copies of {s}.so.{} in the image: the first {} are replaced, the others are left in it",
                        super::private::MAX_COPIES,
                        h.major,
                        super::private::MAX_COPIES
                    ),
                );
            }
            if !copies.others.is_empty() {
                let more = copies.others_total - copies.others.len();
                part.finding(
                    comp.check,
                    Level::Degraded,
                    format!(
                        "left in the image: {}{} (another soname major than the {}, {}): a program that loads it does not get the host's",
                        copies
                            .others
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        },
                        comp.what,
                        h.abi
                    ),
                );
            }
        }
    }
    out
}

/// The image has no copy: another major is an ABI break; no copy of the
/// MPI library itself means nothing to replace; any other library is
/// simply provided in hpcc's directory.
fn missing_from_image(
    image: &ImageLibs<'_>,
    comp: &Component,
    lib: &LibSpec,
    h: &HostLib,
    part: &mut Part,
) {
    let major = h.major;
    let others: Vec<String> = std::iter::once(&h.stem)
        .chain(lib.stems.iter().filter(|s| **s != h.stem))
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
                "the soname major differs: the image carries {}, the {} is {} (major {major}): libraries of another major are not interchangeable",
                others.join(", "),
                comp.what,
                h.abi
            ),
        )
        .image = Some(others.join(", "));
    } else if lib.required {
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
    } else {
        provide(part, comp, &lib.host_path, &h.soname, "the image has none");
    }
}

/// One image copy: checked (ELF class and machine, version), replaced, and
/// the host library provided under the image's names when they differ.
#[allow(clippy::too_many_arguments)]
fn replace_copy(
    host: &dyn Host,
    image: &ImageLibs<'_>,
    comp: &Component,
    lib: &LibSpec,
    h: &HostLib,
    c: &ImageLib,
    part: &mut Part,
    skip: &mut BTreeSet<String>,
) {
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
            return;
        }
    };
    if img.is_64 != h.info.is_64 || img.machine != h.info.machine {
        part.finding(
            comp.check,
            Level::Fatal,
            format!(
                "the image's {} is a {} object, the {} ({}) is {}: it cannot load in its place",
                c.path.display(),
                describe(&img),
                comp.what,
                lib.host_path.display(),
                describe(&h.info)
            ),
        )
        .image = Some(describe(&img));
        return;
    }
    let host_real = host
        .canonical(&lib.host_path)
        .unwrap_or_else(|| lib.host_path.clone());
    if let (Some(hv), Some(iv)) = (file_version(&host_real), file_version(&c.path)) {
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
    // Programs of the image ask for the image library's own soname; the
    // linker cache knows the host file under the host soname only: provide
    // both names.
    let img_soname = img.soname.clone().unwrap_or_else(|| c.name.clone());
    for n in [&img_soname, &c.name] {
        skip.insert(n.clone());
    }
    if img_soname != h.soname || c.name != h.soname {
        provide(
            part,
            comp,
            &lib.host_path,
            &h.soname,
            "its soname differs from the image's",
        );
        for n in [&img_soname, &c.name] {
            if *n != h.soname {
                provide(part, comp, &lib.host_path, n, "under the image's name");
            }
        }
    }
}

/// Step 3: the policy's `dependencies` (dlopen'ed, so no `DT_NEEDED`
/// names them), mounted in the component's directory.
fn extra_dependencies(
    host: &dyn Host,
    comp: &Component,
    part: &mut Part,
    acc: &mut Acc,
) -> Result<(), TweakError> {
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
        acc.skip.insert(name.clone());
        acc.roots.push((name, info.clone()));
        acc.provided.push((d.clone(), info));
    }
    Ok(())
}

/// Step 4: the `DT_NEEDED` closure of what the component puts in, from
/// the host linker cache, mounted in the component's directory. Returns
/// glibc's own libraries the tree needs (those always come from the
/// image: see [`glibc_family`]).
fn dependency_closure(
    host: &dyn Host,
    comp: &Component,
    part: &mut Part,
    acc: &mut Acc,
) -> Vec<(String, String)> {
    let cl = closure(host, &acc.roots, &acc.skip);
    for d in &cl.deps {
        part.mount(
            &d.host_path,
            comp.deps_dir.join(&d.soname),
            format!("{} needed by {} ({})", d.soname, d.needed_by, comp.what),
        );
        part.ld_path(comp.deps_dir.clone());
        acc.provided.push((d.host_path.clone(), d.info.clone()));
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
    cl.glibc
}

/// Step 6: glibc's own libraries the host libraries need (`libm.so.6`,
/// `libpthread.so.0`, ...) are never assumed to be in the image: each one
/// the image lacks is provided from the host when the two glibc releases
/// are the same (the host's copy then matches the image's loader and
/// libc), and refuses the component otherwise, with the reason, instead
/// of a program that dies at load time.
fn glibc_family(
    input: &Inputs<'_>,
    image: &ImageLibs<'_>,
    comp: &Component,
    needs: &[(String, String)],
    part: &mut Part,
    provided: &mut Vec<(PathBuf, ElfInfo)>,
) {
    let image_glibc = image.glibc().ok();
    let host_glibc = input.node.libc.version.clone();
    let same = image_glibc.is_some() && image_glibc == host_glibc;
    let mut lacking = Vec::new();
    for (soname, by) in needs {
        if soname == "libc.so.6" || image.has(soname) {
            continue;
        }
        let host_copy = input
            .host
            .find_library(soname)
            .and_then(|p| input.host.elf(&p).ok().map(|i| (p, i)));
        match host_copy {
            Some((p, info)) if same => {
                part.mount(
                    &p,
                    comp.deps_dir.join(soname),
                    format!(
                        "{soname} needed by {by} ({}): the image lacks it and has the host's glibc release",
                        comp.what
                    ),
                );
                part.ld_path(comp.deps_dir.clone());
                provided.push((p, info));
            }
            _ => lacking.push(format!("{soname} (needed by {by})")),
        }
    }
    if lacking.is_empty() {
        return;
    }
    let show = |v: &Option<crate::version::Version>| {
        v.as_ref().map_or("unknown".into(), |v| v.to_string())
    };
    let f = part.finding(
        Check::Libc,
        Level::Fatal,
        format!(
            "the image lacks glibc libraries the {} needs: {}; the host's copies belong to glibc {}, the image's glibc is {}, so they cannot be provided: the programs would fail to load (install them in the image: they are part of its glibc)",
            comp.what,
            lacking.join(", "),
            show(&host_glibc),
            show(&image_glibc)
        ),
    );
    f.image = Some(format!("glibc {}", show(&image_glibc)));
    f.node = Some(format!("glibc {}", show(&host_glibc)));
}

/// Whether `name` can be a file name in a directory of hpcc's: one plain
/// component. Sonames and cache names come from the image's files; joined
/// as they are, `/home/u/.rc` would replace the directory and `..` leave it.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c.is_control())
}

/// Mounts a host library into the component's dependency directory under
/// `name`; a name that is not one plain file name (the image chose it) is
/// skipped with a finding.
fn provide(part: &mut Part, comp: &Component, host_path: &Path, name: &str, why: &str) {
    if !plain_file_name(name) {
        part.finding(
            comp.check,
            Level::Degraded,
            format!(
                "the {} is not provided as \"{}\" ({why}): not a file name",
                comp.what,
                crate::text::escape(name)
            ),
        );
        return;
    }
    part.mount(
        host_path,
        comp.deps_dir.join(name),
        format!("{} as {name} ({why})", comp.what),
    );
    part.ld_path(comp.deps_dir.clone());
}

/// Step 5: every host library put in the container must load on the
/// image's glibc: a `GLIBC_x.y` it needs beyond what the image's libc
/// defines is the classic "version `GLIBC_2.38' not found" crash at run
/// time. Returns whether the image's glibc is known and enough.
pub(crate) fn check_glibc(
    image: &super::image::ImageLibs<'_>,
    comp: &Component,
    libs: &[(PathBuf, ElfInfo)],
    part: &mut Part,
) -> bool {
    let have = match image.glibc() {
        Ok(v) => v,
        Err(e) => {
            let reason = match image.musl_loader() {
                Some(loader) => format!(
                    "the image uses musl (its loader {}): the {}, built against glibc, cannot load in it and is not injected",
                    loader.display(),
                    comp.what
                ),
                None => format!(
                    "the image's glibc version is unknown ({e}): the {}, built against glibc, cannot be checked and is not injected",
                    comp.what
                ),
            };
            let f = part.finding(Check::Libc, Level::Fatal, reason);
            if image.musl_loader().is_some() {
                f.image = Some("musl".into());
                f.node = Some("glibc builds".into());
            }
            return false;
        }
    };
    let mut too_new = Vec::new();
    for (path, info) in libs {
        if let Some(v) = glibc_beyond(info, &have).first() {
            too_new.push((path, v.clone()));
        }
    }
    if too_new.is_empty() {
        return true;
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
    false
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
    plugin_deps(input, comp, part, dir, plugin_kind, max, skip);
}

/// Step 4b: UCX loads its transports (CMA, InfiniBand, RDMA CM, ...) as
/// modules from `<directory of libucs>/ucx`. A host MPI built on UCX (Debian's
/// MPICH is `ch4:ucx`) that gets the host's libucs in hpcc's directory gets
/// the host's modules next to it, at `<deps dir>/ucx`, where that libucs
/// looks (no variable needed, so it works in hook mode too). Without them
/// UCX has only its built-in transports: no InfiniBand, no cross-process
/// memory copy.
fn ucx_modules(
    input: &Inputs<'_>,
    comp: &Component,
    part: &mut Part,
    provided: &[(PathBuf, ElfInfo)],
) {
    if part.tweaks.env.iter().any(|e| e.name == "UCX_MODULE_DIR") {
        // ucx_replace names its own module directory.
        return;
    }
    let Some((libucs, _)) = provided
        .iter()
        .find(|(p, i)| i.soname.as_deref() == Some("libucs.so.0") || p.ends_with("libucs.so.0"))
    else {
        return;
    };
    let real = input
        .host
        .canonical(libucs)
        .unwrap_or_else(|| libucs.clone());
    let Some(dir) = real.parent().map(|d| d.join("ucx")) else {
        return;
    };
    if !input.host.is_dir(&dir) {
        return;
    }
    part.mount(
        &dir,
        comp.deps_dir.join("ucx"),
        format!("UCX transport modules of the {}", comp.what),
    );
    let skip: BTreeSet<String> = provided
        .iter()
        .filter_map(|(_, i)| i.soname.clone())
        .collect();
    plugin_deps(input, comp, part, &dir, "UCX module", 256, &skip);
}

/// The dependencies of a directory of dlopen'ed plugins, mounted in the
/// component's directory (no `DT_NEEDED` of the injected libraries names
/// them), and checked against the image's glibc.
#[allow(clippy::too_many_arguments)]
fn plugin_deps(
    input: &Inputs<'_>,
    comp: &Component,
    part: &mut Part,
    dir: &Path,
    plugin_kind: &str,
    max: usize,
    skip: &BTreeSet<String>,
) {
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

#[cfg(test)]
mod tests {
    use super::super::host::fake::{lib, FakeHost};
    use super::super::image::ImageLibs;
    use super::super::ldcache;
    use super::*;
    use crate::matcher::Selection;
    use crate::rootfs::Rootfs;
    use crate::testutil::{ctx, node, rootfs_with};
    use hpcc_config::Policy;

    const D: &str = "/usr/lib/x86_64-linux-gnu";
    const LIBC: (&str, &str) = (
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/x86_64-linux-gnu/libc.so.6",
    );

    fn spec(host_path: &str, stems: &[&str], required: bool) -> LibSpec {
        LibSpec {
            host_path: host_path.into(),
            key: "mpi.x.libraries".into(),
            stems: stems.iter().map(|s| s.to_string()).collect(),
            required,
        }
    }

    fn comp(libs: Vec<LibSpec>) -> Component {
        Component {
            what: "host MPI `x` (mpich ABI)".into(),
            check: Check::Mpi,
            deps_dir: "/dev/hpcc/lib/x".into(),
            libs,
            extra_deps: vec![],
            extra_key: "mpi.x.dependencies".into(),
            private: None,
        }
    }

    #[test]
    fn a_name_from_the_image_is_provided_only_as_a_plain_file_name() {
        for bad in [
            "/home/u/.rc",
            "/etc/x",
            "../../../x",
            "a/b",
            "..",
            ".",
            "",
            "x\ny",
        ] {
            assert!(!plain_file_name(bad), "{bad:?}");
            let mut part = Part::default();
            let c = comp(vec![]);
            provide(
                &mut part,
                &c,
                Path::new("/usr/lib/libmpi.so.40"),
                bad,
                "test",
            );
            assert!(
                part.tweaks.mounts.is_empty(),
                "{bad:?}: {:?}",
                part.tweaks.mounts
            );
            assert_eq!(part.findings.len(), 1);
            assert_eq!(part.findings[0].level, Level::Degraded);
            assert!(!part.findings[0].reason.contains('\n'));
        }
        let mut part = Part::default();
        provide(
            &mut part,
            &comp(vec![]),
            Path::new("/usr/lib/libmpi.so.40"),
            "libmpi.so.12",
            "test",
        );
        assert_eq!(part.mount_destinations(), ["/dev/hpcc/lib/x/libmpi.so.12"]);
        assert!(part.findings.is_empty());
    }

    #[test]
    fn inspect_host_takes_the_soname_or_the_file_name_and_names_the_key() {
        let mut h = FakeHost::default();
        let p = h.add(D, lib("libmpich.so.12", &[], &[]));
        let got = inspect_host(
            &h,
            &spec(p.to_str().unwrap(), &["libmpi", "libmpich"], true),
        )
        .unwrap();
        assert_eq!((got.stem.as_str(), got.major), ("libmpich", 12));
        // Cray: the file name answers for the family, the soname does not.
        h.elves.insert(
            "/opt/cray/libmpi.so.12".into(),
            lib("libmpich_gnu_71.so.3", &[], &[]),
        );
        let got = inspect_host(&h, &spec("/opt/cray/libmpi.so.12", &["libmpi"], true)).unwrap();
        assert_eq!(got.abi, "libmpi.so.12");
        assert_eq!(got.soname, "libmpich_gnu_71.so.3");
        h.elves
            .insert("/opt/x/libfoo.so.1".into(), lib("libfoo.so.1", &[], &[]));
        let e = inspect_host(&h, &spec("/opt/x/libfoo.so.1", &["libmpi"], true)).unwrap_err();
        assert!(e.to_string().contains("mpi.x.libraries"), "{e}");
        let e = inspect_host(&h, &spec("/nope/libmpi.so.12", &["libmpi"], true)).unwrap_err();
        assert!(matches!(e, TweakError::HostLibrary { .. }), "{e}");
    }

    #[test]
    fn image_copies_are_distinct_files_and_a_cut_list_is_reported() {
        // Both stems resolve to the same file: replaced once.
        let t = rootfs_with(
            &[(
                &format!("{D}/libmpich.so.12"),
                "/usr/lib/libmpich.so.12.0.0",
            )],
            &[
                ("libmpich.so.12.0.0", "/usr/lib/libmpich.so.12"),
                ("libmpich.so.12.0.0", "/usr/lib/libmpi.so.12"),
            ],
        );
        let root = Rootfs::open_snapshot(&t.0).unwrap();
        let image = ImageLibs::scan(&root);
        let mut h = FakeHost::default();
        let p = h.add(D, lib("libmpich.so.12", &[], &[]));
        let l = spec(p.to_str().unwrap(), &["libmpi", "libmpich"], true);
        let hl = inspect_host(&h, &l).unwrap();
        let mut part = Part::default();
        let c = image_copies(&image, &comp(vec![l.clone()]), &l, &hl, &mut part);
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(part.findings.is_empty());
        // A cache listing far more candidates than hpcc follows.
        let many = crate::testutil::TempDir::new("replace-many");
        std::fs::create_dir_all(many.0.join("etc")).unwrap();
        std::fs::create_dir_all(many.0.join("m")).unwrap();
        let entries: Vec<ldcache::CacheEntry> = (0..40)
            .map(|i| {
                let f = format!("m/{i}.so");
                std::fs::write(many.0.join(&f), b"x").unwrap();
                ldcache::CacheEntry {
                    soname: "libmpich.so.12".into(),
                    path: format!("/{f}").into(),
                    flags: ldcache::native_flags(),
                }
            })
            .collect();
        std::fs::write(
            many.0.join("etc/ld.so.cache"),
            ldcache::write_cache(&entries).unwrap(),
        )
        .unwrap();
        let root = Rootfs::open_snapshot(&many.0).unwrap();
        let image = ImageLibs::scan(&root);
        let mut part = Part::default();
        let c = image_copies(&image, &comp(vec![l.clone()]), &l, &hl, &mut part);
        assert!(c.len() < 40, "{}", c.len());
        assert!(
            part.findings
                .iter()
                .any(|f| f.level == Level::Degraded && f.reason.contains("40 candidates")),
            "{:?}",
            part.findings
        );
    }

    #[test]
    fn a_library_the_image_does_not_need_is_provided_not_fatal() {
        let t = rootfs_with(&[LIBC], &[]);
        let root = Rootfs::open_snapshot(&t.0).unwrap();
        let image = ImageLibs::scan(&root);
        let mut h = FakeHost::default();
        let p = h.add(D, lib("libmpichfort.so.12", &[], &[]));
        let l = spec(p.to_str().unwrap(), &["libmpifort", "libmpichfort"], false);
        let hl = inspect_host(&h, &l).unwrap();
        let mut part = Part::default();
        missing_from_image(&image, &comp(vec![l.clone()]), &l, &hl, &mut part);
        assert!(part.findings.is_empty(), "{:?}", part.findings);
        assert_eq!(
            part.mount_destinations(),
            ["/dev/hpcc/lib/x/libmpichfort.so.12"]
        );
        // Required and absent: fatal, naming where hpcc looked.
        let l = spec(p.to_str().unwrap(), &["libmpifort"], true);
        let mut part = Part::default();
        missing_from_image(&image, &comp(vec![l.clone()]), &l, &hl, &mut part);
        assert!(part.fatal());
        assert!(part.findings[0].reason.contains("searched the image's"));
    }

    fn glibc_run(node_glibc: &str) -> Part {
        // An image with glibc (the host's libc, 2.36) but without libm.
        let t = rootfs_with(&[LIBC], &[]);
        let root = Rootfs::open_snapshot(&t.0).unwrap();
        let image = ImageLibs::scan(&root);
        let mut h = FakeHost::default();
        h.add(
            "/lib/x86_64-linux-gnu",
            lib("libm.so.6", &["libc.so.6"], &[]),
        );
        let mut n = node("icelake");
        n.libc.version = crate::version::Version::parse_prefix(node_glibc);
        let c = ctx(&[], &[]);
        let p = Policy::default();
        let sel = Selection::default();
        let input = Inputs {
            ctx: &c,
            node: &n,
            policy: &p,
            selection: &sel,
            host: &h,
            image: Some(&image),
        };
        let mut part = Part::default();
        let mut provided = Vec::new();
        glibc_family(
            &input,
            &image,
            &comp(vec![]),
            &[
                ("libm.so.6".into(), "libmpich.so.12".into()),
                ("libc.so.6".into(), "libmpich.so.12".into()),
            ],
            &mut part,
            &mut provided,
        );
        part
    }

    #[test]
    fn a_glibc_library_the_image_lacks_comes_from_the_same_release_only() {
        let glibc = crate::elf::ElfInfo::read(std::path::Path::new(LIBC.0))
            .unwrap()
            .max_glibc_defined()
            .unwrap()
            .to_string();
        let same = glibc_run(&glibc);
        assert!(same.findings.is_empty(), "{:?}", same.findings);
        assert_eq!(same.mount_destinations(), ["/dev/hpcc/lib/x/libm.so.6"]);
        let other = glibc_run("2.99");
        assert!(other.fatal());
        let f = &other.findings[0];
        assert_eq!(f.check, Check::Libc);
        assert!(
            f.reason.contains("libm.so.6 (needed by libmpich.so.12)")
                && f.reason.contains("2.99")
                && f.reason.contains(&glibc),
            "{}",
            f.reason
        );
        assert!(other.tweaks.mounts.is_empty());
    }
}
