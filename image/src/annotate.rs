//! `hpcc annotate`: annotations proposed from what the layers contain,
//! each with the evidence it rests on. Nothing from the image is run: every
//! fact comes from file names, symlinks resolved in the layer tree, ELF
//! headers and notes, sampled instructions, and `/var/lib/dpkg/status`.
//!
//! | key | from |
//! | --- | --- |
//! | `libc.implementation`, `glibc.version` | `ld-musl-*`; `libc.so.6`'s highest `GLIBC_2.x` definition |
//! | `mpi.implementation`, `mpi.version`, `mpi.abi.version` | `libmpi.so.40` / `libmpich.so.12` / `libmpi.so.12` sonames, product strings, version strings, dpkg |
//! | `libfabric.abi.version` | the highest `FABRIC_1.x` any object of the image needs from `libfabric.so.1` |
//! | `communication.framework` | `libfabric.so.1`, `libucp.so.0` |
//! | `python.version`, `shell.implementation`, `tools.includes` | `pythonX.Y` files, shells and tools found through the tree |
//! | `hardware.cpu.optimized.*` | x86-64 ISA notes per object; otherwise the instructions of the largest objects, sampled |
//! | `host.kernel.version.min` | the highest `.note.ABI-tag` of the executables |

use super::elfscan::{self, ElfFacts, ElfKind};
use super::layers::{self, Kind, Scan, ScanRequest};
use super::layout::Image;
use super::{ImageError, Limits};
// The findings' data lives in `proposals.rs`, below this module and `nfd`;
// re-exported where callers have always found it.
pub use super::proposals::{CpuNeeds, Proposal, Proposals};
use hpcc_common::version::Version;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Files read whole when present.
const CAPTURE: &[&str] = &[
    "var/lib/dpkg/status",
    "etc/os-release",
    "usr/lib/os-release",
];

/// Tools reported in `tools.includes` when found in `PATH`.
const TOOLS: &[&str] = &[
    "jq", "wget", "curl", "git", "rsync", "ssh", "scp", "vim", "nano", "make", "cmake", "gcc",
    "gfortran", "perl", "strace", "gdb", "tar", "gzip", "unzip", "aws", "srun", "mpirun",
];

/// Shells looked for.
const SHELLS: &[&str] = &[
    "bash", "sh", "zsh", "dash", "ash", "ksh", "tcsh", "csh", "fish",
];

/// Installed package versions from a dpkg status file.
pub fn dpkg_versions(status: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(status);
    let mut out = BTreeMap::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        if let (Some(p), Some(v)) = (field("Package"), field("Version")) {
            if field("Status").is_none_or(|s| s.ends_with("installed")) {
                out.insert(p.to_owned(), v.to_owned());
            }
        }
    }
    out
}

/// `4.0.2-3+b1` -> `4.0.2`, `1:2.36-9` -> `2.36`.
fn upstream(debian_version: &str) -> Option<Version> {
    let v = debian_version
        .split_once(':')
        .map_or(debian_version, |(_, v)| v);
    Version::parse_prefix(v)
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// The name an object is known by: its soname, else its file name.
fn soname_of<'a>(path: &'a str, f: &'a ElfFacts) -> &'a str {
    f.soname.as_deref().unwrap_or_else(|| basename(path))
}

/// Walks the layers and proposes annotations.
pub fn propose(image: &Image, limits: &Limits) -> Result<Proposals, ImageError> {
    let req = ScanRequest {
        capture: CAPTURE.iter().map(|s| (*s).to_owned()).collect(),
        capture_limit: 32 << 20,
        elf: true,
        sample: true,
        only_layers: None,
    };
    let scan = layers::scan(image, &req, limits)?;
    Ok(from_scan(image, &scan, limits))
}

/// Proposals from an already walked image.
pub fn from_scan(image: &Image, scan: &Scan, limits: &Limits) -> Proposals {
    let mut p = Proposals {
        image: image.reference.clone(),
        stats: scan.stats.clone(),
        ..Proposals::default()
    };
    let dpkg = scan
        .captured
        .get("var/lib/dpkg/status")
        .map(|s| dpkg_versions(s))
        .unwrap_or_default();
    let deb = |pkg: &str| dpkg.get(pkg).map(|v| format!("dpkg: {pkg} {v}"));
    libc(scan, &dpkg, &mut p);
    mpi(scan, &dpkg, &mut p);
    fabric(scan, &dpkg, &mut p);
    python(scan, &mut p);
    shells_and_tools(image, scan, &mut p);
    cpu(image, scan, limits, &mut p);
    kernel(scan, &mut p);
    if !dpkg.is_empty() {
        p.notes
            .push(format!("{} packages in /var/lib/dpkg/status", dpkg.len()));
    }
    if let Some(v) = deb("libucx0") {
        p.notes.push(v);
    }
    p.proposals.sort_by(|a, b| a.key.cmp(&b.key));
    p
}

fn libc(scan: &Scan, dpkg: &BTreeMap<String, String>, p: &mut Proposals) {
    if let Some((path, _)) = scan
        .tree
        .iter()
        .find(|(k, e)| basename(k).starts_with("ld-musl-") && e.kind != Kind::Dir)
    {
        p.add(
            "libc.implementation",
            "musl",
            vec![format!("/{path} is musl's dynamic loader")],
        );
        return;
    }
    let libc = scan
        .elf
        .iter()
        .filter(|(k, f)| soname_of(k, f) == "libc.so.6")
        .filter_map(|(k, f)| {
            let v = f
                .version_defs
                .iter()
                .filter_map(|d| d.strip_prefix("GLIBC_"))
                .filter_map(|d| Version::parse(d).ok())
                .max()?;
            Some((k, v))
        })
        .max_by(|a, b| a.1.cmp(&b.1));
    if let Some((path, v)) = libc {
        let mut ev = vec![format!("/{path} (soname libc.so.6) defines GLIBC_{v}")];
        if let Some(d) = dpkg.get("libc6") {
            ev.push(format!("dpkg: libc6 {d}"));
        }
        p.add("libc.implementation", "glibc", ev.clone());
        p.add("glibc.version", v.to_string(), ev);
    }
}

/// The MPI family of an `libmpi.so.12`-ABI library from its markers.
fn mpich_family(f: &ElfFacts) -> &'static str {
    let has = |m: &str| f.markers.iter().any(|x| x == m);
    if has("Intel(R) MPI Library") {
        "intelmpi"
    } else if has("MVAPICH") {
        "mvapich"
    } else if has("Cray MPICH") {
        "cray-mpich"
    } else {
        "mpich"
    }
}

/// A version from standalone version strings: the `vX.Y.Z` form first, else
/// the only three-part version with a non-zero major.
fn version_from_strings(strings: &[String]) -> Option<(Version, String)> {
    if let Some(s) = strings
        .iter()
        .find(|s| s.starts_with('v') && s.matches('.').count() == 2)
    {
        // `v4.1.4` (Open MPI's spelling): the version is what follows.
        return Version::parse(&s[1..]).ok().map(|v| (v, s.clone()));
    }
    let three: Vec<&String> = strings
        .iter()
        .filter(|s| !s.starts_with('v') && s.matches('.').count() == 2 && !s.starts_with("0."))
        .collect();
    match three.as_slice() {
        [one] => Version::parse(one).ok().map(|v| (v, (*one).clone())),
        _ => None,
    }
}

fn mpi(scan: &Scan, dpkg: &BTreeMap<String, String>, p: &mut Proposals) {
    // (implementation, soname, path, facts)
    let mut found: Vec<(&'static str, String, &String, &ElfFacts)> = Vec::new();
    for (path, f) in &scan.elf {
        let so = soname_of(path, f);
        let imp = match so {
            "libmpi.so.40" => "openmpi",
            "libmpich.so.12" | "libmpi.so.12" => mpich_family(f),
            _ => continue,
        };
        if f.kind == ElfKind::SharedObject {
            found.push((imp, so.to_owned(), path, f));
        }
    }
    if found.is_empty() {
        return;
    }
    // Several MPIs: the one most objects link decides.
    let users = |so: &str| {
        scan.elf
            .values()
            .filter(|f| f.needed.iter().any(|n| n == so))
            .count()
    };
    found.sort_by_key(|(_, so, path, _)| (std::cmp::Reverse(users(so)), (*path).clone()));
    let (imp, so, path, f) = &found[0];
    if found.iter().any(|(i, ..)| i != imp) {
        p.notes.push(format!(
            "several MPI libraries: {}; proposing {imp}, which {} objects link",
            found
                .iter()
                .map(|(i, s, pth, _)| format!("{i} (/{pth}, {s})"))
                .collect::<Vec<_>>()
                .join(", "),
            users(so)
        ));
    }
    let mut ev = vec![format!("/{path} has soname {so}")];
    if !f.markers.is_empty() {
        ev.push(format!("/{path} contains {:?}", f.markers.join("\", \"")));
    }
    let n = users(so);
    if n > 0 {
        ev.push(format!("{n} objects of the image link {so}"));
    }
    p.add("mpi.implementation", *imp, ev);
    let abi = so.rsplit('.').next().unwrap_or_default();
    p.add(
        "mpi.abi.version",
        abi,
        vec![format!("the soname {so} names ABI {abi}")],
    );
    // Open MPI's version is also in libopen-pal.
    let mut strings = f.version_strings.clone();
    if *imp == "openmpi" {
        for (k, g) in &scan.elf {
            if basename(k).starts_with("libopen-pal") {
                strings.extend(g.version_strings.iter().cloned());
            }
        }
    }
    let pkg = match *imp {
        "openmpi" => ["libopenmpi3", "libopenmpi3t64"],
        _ => ["libmpich12", "libmpich12t64"],
    };
    if let Some((v, s)) = version_from_strings(&strings) {
        let mut ev = vec![format!("/{path} contains the version string {s:?}")];
        ev.extend(
            pkg.iter()
                .filter_map(|k| dpkg.get(*k).map(|d| format!("dpkg: {k} {d}"))),
        );
        p.add("mpi.version", v.to_string(), ev);
    } else if let Some((k, d)) = pkg.iter().find_map(|k| dpkg.get(*k).map(|d| (k, d))) {
        if let Some(v) = upstream(d) {
            p.add("mpi.version", v.to_string(), vec![format!("dpkg: {k} {d}")]);
        }
    } else {
        p.notes.push(format!(
            "the version of {so} could not be read from its strings"
        ));
    }
}

fn fabric(scan: &Scan, dpkg: &BTreeMap<String, String>, p: &mut Proposals) {
    let mut frameworks = Vec::new();
    let mut fw_ev = Vec::new();
    if let Some((path, lib)) = scan
        .elf
        .iter()
        .find(|(k, f)| soname_of(k, f) == "libfabric.so.1" && f.kind == ElfKind::SharedObject)
    {
        frameworks.push("libfabric");
        let mut lib_ev = format!("/{path} has soname libfabric.so.1");
        if let Some((v, _)) = version_from_strings(&lib.version_strings) {
            let _ = write!(lib_ev, ", version string {v}");
        } else if let Some(d) = dpkg.get("libfabric1") {
            let _ = write!(lib_ev, ", dpkg: libfabric1 {d}");
        }
        fw_ev.push(lib_ev.clone());
        // The ABI the image needs: the highest FABRIC_1.x any object asks for.
        let mut needs: BTreeMap<Version, Vec<&str>> = BTreeMap::new();
        for (k, f) in &scan.elf {
            for (l, v) in &f.version_needs {
                if l == "libfabric.so.1" {
                    if let Some(ver) = v
                        .strip_prefix("FABRIC_")
                        .and_then(|x| Version::parse(x).ok())
                    {
                        needs.entry(ver).or_default().push(k);
                    }
                }
            }
        }
        match needs.iter().next_back() {
            Some((v, who)) => {
                let mut ev = vec![lib_ev];
                ev.push(format!(
                    "FABRIC_{v} is the highest symbol version needed, by {}",
                    who.iter().take(3).map(|w| format!("/{w}")).collect::<Vec<_>>().join(", ")
                ));
                let all: Vec<String> = needs.keys().map(|v| format!("FABRIC_{v}")).collect();
                ev.push(format!("versions needed: {}", all.join(", ")));
                p.add("libfabric.abi.version", v.to_string(), ev);
            }
            None => p.notes.push(format!(
                "{lib_ev}, but no object of the image links it with versioned symbols: libfabric.abi.version left to the author"
            )),
        }
    }
    if let Some((path, _)) = scan
        .elf
        .iter()
        .find(|(k, f)| soname_of(k, f) == "libucp.so.0")
    {
        frameworks.push("ucx");
        let mut e = format!("/{path} has soname libucp.so.0");
        if let Some(d) = dpkg.get("libucx0") {
            let _ = write!(e, ", dpkg: libucx0 {d}");
        }
        fw_ev.push(e);
    }
    if !frameworks.is_empty() {
        p.add("communication.framework", frameworks.join(","), fw_ev);
    }
}

fn python(scan: &Scan, p: &mut Proposals) {
    let mut best: Option<(Version, String)> = None;
    for (path, e) in scan.tree.iter() {
        let name = basename(path);
        let v = name
            .strip_prefix("python")
            .filter(|_| path.contains("bin/") && e.kind != Kind::Dir)
            .or_else(|| {
                name.strip_prefix("libpython")
                    .and_then(|r| r.split(".so").next())
                    .filter(|_| e.kind != Kind::Dir)
            });
        let Some(v) = v else { continue };
        let v = v.trim_end_matches('m');
        if v.matches('.').count() != 1 {
            continue;
        }
        if let Ok(ver) = Version::parse(v) {
            if best.as_ref().is_none_or(|(b, _)| ver > *b) {
                best = Some((ver, path.clone()));
            }
        }
    }
    if let Some((v, path)) = best {
        p.add("python.version", v.to_string(), vec![format!("/{path}")]);
    }
}

/// Finds an executable named `name` in `PATH` (resolved in the tree).
pub fn which(scan: &Scan, dirs: &[String], name: &str) -> Option<(String, String)> {
    dirs.iter().find_map(|d| {
        let p = format!("{}/{name}", d.trim_end_matches('/'));
        let (resolved, e) = scan.tree.lookup(&p)?;
        e.is_executable_file().then_some((p, resolved))
    })
}

fn shells_and_tools(image: &Image, scan: &Scan, p: &mut Proposals) {
    let mut dirs = image.path_dirs();
    for d in ["/bin", "/usr/bin"] {
        if !dirs.iter().any(|x| x == d) {
            dirs.push(d.to_owned());
        }
    }
    let mut shells = Vec::new();
    let mut ev = Vec::new();
    for s in SHELLS {
        if let Some((p, r)) = which(scan, &dirs, s) {
            shells.push(*s);
            ev.push(format!("{p} -> /{r}"));
        }
    }
    if !shells.is_empty() {
        p.add("shell.implementation", shells.join(","), ev);
    }
    let dirs = image.path_dirs();
    let mut tools = Vec::new();
    let mut ev = Vec::new();
    for t in TOOLS {
        if let Some((p, r)) = which(scan, &dirs, t) {
            tools.push(*t);
            ev.push(format!("{p} -> /{r}"));
        }
    }
    if !tools.is_empty() {
        p.add("tools.includes", tools.join(","), ev);
    }
}

/// One object's level and how it was found. An ISA note above the
/// baseline is believed; a baseline-only note is not evidence (GCC records a
/// level only with `-mneeded`, and the startup files mark every program
/// "baseline"), so the object's instructions decide when they were sampled.
fn object_level(f: &ElfFacts) -> Option<(u8, String)> {
    let note = f.isa_needed.map(elfscan::level_of_bits);
    if let Some(l) = note.filter(|l| *l > 1) {
        return Some((
            l,
            format!(
                "ISA note GNU_PROPERTY_X86_ISA_1_NEEDED = {}",
                elfscan::level_name(l)
            ),
        ));
    }
    let Some(s) = f.sample.as_ref() else {
        return note.map(|l| {
            (
                l,
                format!(
                    "ISA note GNU_PROPERTY_X86_ISA_1_NEEDED = {}",
                    elfscan::level_name(l)
                ),
            )
        });
    };
    Some((
        s.level,
        format!(
            "{} instructions in {} KiB of .text sampled, highest {}{}{}",
            s.instructions,
            s.bytes / 1024,
            elfscan::level_name(s.level),
            s.witness
                .as_ref()
                .map_or(String::new(), |w| format!(" at {w}")),
            if note.is_some() {
                " (its ISA note says only baseline)"
            } else {
                ""
            }
        ),
    ))
}

fn cpu(image: &Image, scan: &Scan, limits: &Limits, p: &mut Proposals) {
    let platform = match image.platform.architecture.as_str() {
        "amd64" | "" => {
            let machines: BTreeSet<u16> = scan.elf.values().map(|f| f.machine).collect();
            if machines.contains(&elfscan::EM_X86_64) || image.platform.architecture == "amd64" {
                "x86_64".to_owned()
            } else {
                return;
            }
        }
        "arm64" => "aarch64".to_owned(),
        "ppc64le" => "ppc64le".to_owned(),
        other => other.to_owned(),
    };
    p.cpu.platform = platform.clone();
    if platform != "x86_64" {
        p.add(
            "hardware.cpu.optimized.mode",
            "architecture",
            vec![format!(
                "image config architecture {}",
                image.platform.architecture
            )],
        );
        p.add(
            "hardware.cpu.optimized.version",
            platform,
            vec![format!(
                "image config architecture {}",
                image.platform.architecture
            )],
        );
        return;
    }
    let x86: Vec<(&String, &ElfFacts, u64)> = scan
        .elf
        .iter()
        .filter(|(_, f)| f.machine == elfscan::EM_X86_64)
        .map(|(k, f)| (k, f, scan.tree.get(k).map_or(0, |e| e.size)))
        .collect();
    // The hot objects: the application's own (outside the system
    // directories) and the largest of the distribution's, each judged by
    // its ISA note when it has one, else by its sampled instructions.
    let judged =
        |(_, f, _): &&(&String, &ElfFacts, u64)| f.isa_needed.is_some() || f.sample.is_some();
    let mut app: Vec<(&String, &ElfFacts, u64)> = x86
        .iter()
        .filter(|o| layers::is_app_path(o.0))
        .filter(judged)
        .cloned()
        .collect();
    let mut system: Vec<(&String, &ElfFacts, u64)> = x86
        .iter()
        .filter(|o| !layers::is_app_path(o.0))
        .filter(judged)
        .cloned()
        .collect();
    for v in [&mut app, &mut system] {
        v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
        v.truncate(limits.hot_objects);
    }
    let mut considered = app;
    considered.extend(system);
    let mut level = 1u8;
    let mut ev = Vec::new();
    let mut ignored = Vec::new();
    let mut extra = BTreeSet::new();
    for (path, f, size) in &considered {
        let Some((l, how)) = object_level(f) else {
            continue;
        };
        let noted = f.isa_needed.is_some_and(|b| elfscan::level_of_bits(b) > 1);
        let dispatch = !noted && (f.ifunc || f.sample.as_ref().is_some_and(|s| s.dispatches));
        if dispatch && l > 1 {
            ignored.push(format!("/{path}: {how}, but it checks CPUID or uses IFUNCs: run-time dispatch, not counted"));
            continue;
        }
        if let Some(s) = &f.sample {
            extra.extend(
                s.features
                    .keys()
                    .filter(|k| elfscan_level_of(k).is_none())
                    .cloned(),
            );
        }
        if l > level {
            level = l;
        }
        ev.push((l, format!("/{path} ({} KiB): {how}", size / 1024)));
    }
    if ev.is_empty() {
        p.notes
            .push("no x86-64 object could be sampled: the CPU level is left to the author".into());
        p.add(
            "hardware.cpu.optimized.mode",
            "architecture",
            vec!["no ELF object to sample; image config architecture amd64".into()],
        );
        p.add(
            "hardware.cpu.optimized.version",
            "x86_64",
            vec!["image config architecture amd64".into()],
        );
        p.cpu.level = Some(1);
        return;
    }
    // The objects that set the level first, then the rest.
    ev.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut evidence: Vec<String> = ev.into_iter().map(|(_, e)| e).collect();
    evidence.extend(ignored);
    if !extra.is_empty() {
        evidence.push(format!(
            "also used, outside the x86-64 levels: {}",
            extra.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    p.cpu.level = Some(level);
    p.cpu.extra_features = extra;
    let mode = if level > 1 {
        "genericMicro"
    } else {
        "architecture"
    };
    p.add("hardware.cpu.optimized.mode", mode, evidence.clone());
    p.add(
        "hardware.cpu.optimized.version",
        elfscan::level_name(level),
        evidence,
    );
}

/// `feature_level` by iced-x86 feature name (what samples store).
fn elfscan_level_of(name: &str) -> Option<u8> {
    if name.starts_with("AVX512") {
        return Some(4);
    }
    if name.starts_with("AVX_") {
        return Some(3);
    }
    match name {
        "AVX" | "AVX2" | "BMI1" | "BMI2" | "F16C" | "FMA" | "LZCNT" | "MOVBE" | "XSAVE" => Some(3),
        "CMPXCHG16B" | "POPCNT" | "SSE3" | "SSSE3" | "SSE4_1" | "SSE4_2" => Some(2),
        _ => None,
    }
}

fn kernel(scan: &Scan, p: &mut Proposals) {
    let best = scan
        .elf
        .iter()
        .filter(|(_, f)| f.kind == ElfKind::Executable)
        .filter_map(|(k, f)| f.abi_kernel.clone().map(|v| (v, k)))
        .max_by(|a, b| a.0.cmp(&b.0));
    if let Some((v, path)) = best {
        p.kernel_min = Some(v.to_string());
        p.add(
            "host.kernel.version.min",
            v.to_string(),
            vec![format!("/{path}: .note.ABI-tag says Linux {v} or later")],
        );
    }
}

/// Output formats of `hpcc annotate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `# evidence` comments, then `key=value`.
    Text,
    /// `key=value` only (for `buildah config --annotation`, `umoci config
    /// --config.label`).
    Plain,
    /// Dockerfile `LABEL` lines.
    Dockerfile,
    /// JSON with evidence.
    Json,
    /// NFD image compatibility spec (YAML).
    Nfd,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "text" => Format::Text,
            "plain" | "lines" => Format::Plain,
            "dockerfile" | "label" => Format::Dockerfile,
            "json" => Format::Json,
            "nfd" => Format::Nfd,
            o => {
                return Err(format!(
                    "unknown format {o:?} (expected text, plain, dockerfile, json or nfd)"
                ))
            }
        })
    }
}

/// Renders proposals. Evidence lines are escaped: they carry image paths.
pub fn render(p: &Proposals, format: Format) -> Result<String, serde_json::Error> {
    let esc = hpcc_common::text::escape;
    let mut out = String::new();
    match format {
        Format::Text => {
            let _ = writeln!(
                out,
                "# hpcc annotate {}: {} layers, {} entries, {} ELF objects ({} sampled) in {:.1} s",
                esc(&p.image),
                p.stats.layers,
                p.stats.entries,
                p.stats.elf_objects,
                p.stats.sampled,
                p.stats.seconds
            );
            for n in &p.notes {
                let _ = writeln!(out, "# note: {}", esc(n));
            }
            for pr in &p.proposals {
                for e in &pr.evidence {
                    let _ = writeln!(out, "#   {}", esc(e));
                }
                let _ = writeln!(out, "{}={}", pr.key, pr.value);
            }
        }
        Format::Plain => {
            for pr in &p.proposals {
                let _ = writeln!(out, "{}={}", pr.key, pr.value);
            }
        }
        Format::Dockerfile => {
            for (i, pr) in p.proposals.iter().enumerate() {
                let lead = if i == 0 { "LABEL " } else { "      " };
                let tail = if i + 1 == p.proposals.len() {
                    ""
                } else {
                    " \\"
                };
                let _ = writeln!(
                    out,
                    "{lead}{}=\"{}\"{tail}",
                    pr.key,
                    pr.value.replace('"', "\\\"")
                );
            }
        }
        Format::Json => {
            out = hpcc_common::schema::to_string_pretty(hpcc_common::schema::Kind::Annotate, p)?;
        }
        Format::Nfd => out = super::nfd::spec_yaml(p),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status() {
        let s = b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: libmpich12\nVersion: 4.0.2-3\n";
        let v = dpkg_versions(s);
        assert_eq!(v["libc6"], "2.36-9+deb12u4");
        assert!(!v.contains_key("gone"));
        assert_eq!(upstream(&v["libmpich12"]).unwrap().to_string(), "4.0.2");
        assert_eq!(upstream("1:2.36-9").unwrap().to_string(), "2.36");
    }

    #[test]
    fn versions_from_strings() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            version_from_strings(&s(&["4.1.4", "v4.1.4"]))
                .unwrap()
                .0
                .to_string(),
            "4.1.4"
        );
        assert_eq!(
            version_from_strings(&s(&["0.13.99", "4.0.2", "4.1"]))
                .unwrap()
                .0
                .to_string(),
            "4.0.2"
        );
        assert!(version_from_strings(&s(&["1.2.3", "4.5.6"])).is_none());
    }

    #[test]
    fn formats() {
        let mut p = Proposals::default();
        p.add(
            "glibc.version",
            "2.36",
            vec!["/lib/libc.so.6\nforged".into()],
        );
        let t = render(&p, Format::Text).unwrap();
        assert!(t.contains("org.supercontainers.glibc.version=2.36\n"));
        assert!(!t.contains("\nforged"), "evidence is escaped: {t}");
        assert_eq!(
            render(&p, Format::Plain).unwrap(),
            "org.supercontainers.glibc.version=2.36\n"
        );
        assert!(render(&p, Format::Dockerfile)
            .unwrap()
            .starts_with("LABEL org.supercontainers.glibc.version=\"2.36\""));
        assert!("yaml".parse::<Format>().is_err());
    }
}
