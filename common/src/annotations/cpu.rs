//! CPU targets and build modes, as people and tools spell them.
//!
//! A target is an archspec microarchitecture. Also read: any case, `-` for
//! `_` (`skylake-avx512`, `x86-64-v3`), the OCI platform names (`amd64`,
//! `arm64`), GCC/LLVM `-march`/`-mcpu` names through archspec's own
//! compiler table (`znver3` is zen3, `core-avx2` is haswell), and a few
//! `-march` names archspec does not list, each given as an archspec base
//! plus the instruction-set extensions the compiler adds ([`EXTRA`]).

use super::{cpu_table, ValueError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, OnceLock};

type Micro = archspec::cpu::Microarchitecture;

/// A GCC `-march` name archspec lacks, described as an archspec base and
/// the extensions (archspec/Linux flag names) the compiler enables on top.
#[derive(Debug, PartialEq, Eq)]
pub struct ExtraTarget {
    /// The `-march` name, normalised (`_` for `-`).
    pub name: &'static str,
    /// The archspec target whose features it has.
    pub base: &'static str,
    /// Its vendor.
    pub vendor: &'static str,
    /// Extensions beyond the base.
    pub features: &'static [&'static str],
}

/// `-march` names that archspec does not list.
pub const EXTRA: &[ExtraTarget] = &[
    // AMD Bobcat / Jaguar (GCC's btver1/btver2).
    ExtraTarget {
        name: "btver1",
        base: "x86_64",
        vendor: "AuthenticAMD",
        features: &["sse3", "ssse3", "sse4a", "cx16", "abm", "popcnt", "lahf_lm"],
    },
    ExtraTarget {
        name: "btver2",
        base: "x86_64_v2",
        vendor: "AuthenticAMD",
        features: &[
            "sse4a",
            "abm",
            "avx",
            "aes",
            "pclmulqdq",
            "bmi1",
            "f16c",
            "movbe",
        ],
    },
    ExtraTarget {
        name: "cooperlake",
        base: "cascadelake",
        vendor: "GenuineIntel",
        features: &["avx512_bf16"],
    },
    ExtraTarget {
        name: "tigerlake",
        base: "icelake",
        vendor: "GenuineIntel",
        features: &["avx512_vp2intersect"],
    },
    ExtraTarget {
        name: "alderlake",
        base: "x86_64_v3",
        vendor: "GenuineIntel",
        features: &[
            "aes",
            "pclmulqdq",
            "sha_ni",
            "gfni",
            "vaes",
            "vpclmulqdq",
            "avx_vnni",
            "adx",
        ],
    },
    ExtraTarget {
        name: "graniterapids",
        base: "sapphirerapids",
        vendor: "GenuineIntel",
        features: &["amx_fp16"],
    },
];

/// Other names for archspec targets: OCI and `uname -m` platform names,
/// `-march` names whose code is the same as an archspec target's, and
/// product names.
const ALIASES: &[(&str, &str)] = &[
    ("amd64", "x86_64"),
    ("x64", "x86_64"),
    ("x86_64_v1", "x86_64"),
    ("arm64", "aarch64"),
    ("armv8", "aarch64"),
    ("armv8a", "aarch64"),
    ("armv8.0a", "aarch64"),
    ("386", "x86"),
    ("i386", "x86"),
    ("powerpc64le", "ppc64le"),
    ("powerpc64", "ppc64"),
    // GCC's icelake-server and rocketlake add only instructions compilers
    // do not emit on their own (pconfig, wbnoinvd) to icelake-client.
    ("icelake_server", "icelake"),
    ("icelake_client", "icelake"),
    ("rocketlake", "icelake"),
    ("emeraldrapids", "sapphirerapids"),
    ("grace", "neoverse_v2"),
    ("graviton2", "neoverse_n1"),
    ("graviton3", "neoverse_v1"),
    ("graviton4", "neoverse_v2"),
];

/// The compilers whose `-march`/`-mcpu` names are read from archspec's
/// table (`intel`, `nvhpc`, `oneapi` map many targets to one generic flag,
/// so their names would be ambiguous).
const COMPILERS: &[&str] = &["gcc", "clang", "aocc"];

/// A CPU target hpcc can compare with a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct CpuTarget {
    name: String,
    given: Option<String>,
}

impl CpuTarget {
    /// Reads a target, as archspec names it or as a compiler or platform
    /// does. The error carries a close known name when there is one.
    pub fn parse(value: &str) -> Result<CpuTarget, (ValueError, Option<String>)> {
        let given = value.trim();
        if given.is_empty()
            || given.len() > 64
            || !given
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+-=".contains(c))
        {
            return Err((ValueError::NotACpuTarget, None));
        }
        let flagless = given
            .strip_prefix("-march=")
            .or_else(|| given.strip_prefix("-mcpu="))
            .or_else(|| given.strip_prefix("march="))
            .or_else(|| given.strip_prefix("mcpu="))
            .unwrap_or(given);
        let norm = normalize(flagless);
        if norm == "native" {
            return Err((ValueError::NativeTarget, None));
        }
        let name = resolve(&norm).ok_or_else(|| {
            let suggestion = super::keys::closest(&norm, every_name()).map(str::to_owned);
            (ValueError::NotACpuTarget, suggestion)
        })?;
        Ok(CpuTarget {
            given: (name != given).then(|| given.to_owned()),
            name: name.to_owned(),
        })
    }

    /// The canonical name (archspec's, or the `-march` name of an
    /// [`ExtraTarget`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The spelling the image used, when it differs.
    pub fn given(&self) -> Option<&str> {
        self.given.as_deref()
    }

    fn extra(&self) -> Option<&'static ExtraTarget> {
        EXTRA.iter().find(|e| e.name == self.name)
    }

    /// The archspec entry the target is (or is built on, for an extra).
    /// This loads archspec's whole database (about 0.6 ms, once per
    /// process): the other methods read the same facts from
    /// [`super::cpu_table`].
    pub fn microarchitecture(&self) -> Arc<Micro> {
        let base = self.base();
        match Micro::known_targets().get(base) {
            Some(m) => m.clone(),
            // Unreachable for a parsed target; a generic entry keeps
            // deserialised data from panicking.
            None => Arc::new(Micro::generic(base)),
        }
    }

    /// The archspec target's name this one is (or is built on).
    fn base(&self) -> &str {
        self.extra().map_or(self.name.as_str(), |e| e.base)
    }

    /// The archspec facts of [`Self::base`]; `None` only for a name no
    /// parse gives (archspec's generic entry: its own family, no vendor,
    /// no features).
    fn facts(&self) -> Option<&'static cpu_table::Target> {
        cpu_table::target(self.base())
    }

    /// The platform this target belongs to (`x86_64`, `aarch64`, ...).
    pub fn family(&self) -> String {
        self.facts()
            .map_or_else(|| self.base().to_owned(), |t| t.family.to_owned())
    }

    /// The vendor (`GenuineIntel`, `AuthenticAMD`, `ARM`, or `generic`).
    pub fn vendor(&self) -> String {
        match self.extra() {
            Some(e) => e.vendor.to_owned(),
            None => self.facts().map_or("generic", |t| t.vendor).to_owned(),
        }
    }

    /// A platform (`x86_64`) rather than a microarchitecture.
    pub fn is_platform(&self) -> bool {
        self.extra().is_none() && self.facts().is_none_or(|t| t.family == t.name)
    }

    /// A vendor-neutral level (`x86_64_v3`, `armv8.2a`, or a platform).
    pub fn is_generic(&self) -> bool {
        self.extra().is_none() && self.facts().is_none_or(|t| t.vendor == "generic")
    }

    /// Every feature code built for this target may use (archspec names).
    pub fn features(&self) -> BTreeSet<String> {
        let mut f: BTreeSet<String> = self
            .facts()
            .map(|t| t.features.iter().map(|s| (*s).to_owned()).collect())
            .unwrap_or_default();
        if let Some(e) = self.extra() {
            f.extend(e.features.iter().map(|s| (*s).to_owned()));
        }
        f
    }

    /// Whether code for `other` runs wherever code for `self` runs: same
    /// platform, and `self` needs at least every feature `other` needs.
    pub fn covers(&self, other: &CpuTarget) -> bool {
        self.family() == other.family() && self.features().is_superset(&other.features())
    }

    /// Whether a node detected as `micro` is this target or descends from it.
    pub fn is_ancestor_of(&self, micro: &str) -> bool {
        let Some(host) = cpu_table::target(micro) else {
            return false;
        };
        match self.extra() {
            // An extra target is not in archspec's tree: only its base is.
            Some(_) => false,
            None => host.name == self.name || host.ancestors.contains(&self.name.as_str()),
        }
    }
}

impl fmt::Display for CpuTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.given {
            Some(g) if !g.eq_ignore_ascii_case(&self.name) && normalize(g) != self.name => {
                write!(f, "{} (given as {})", self.name, crate::text::escape(g))
            }
            _ => f.write_str(&self.name),
        }
    }
}

impl From<CpuTarget> for String {
    fn from(t: CpuTarget) -> String {
        t.name
    }
}

impl TryFrom<String> for CpuTarget {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        CpuTarget::parse(&s).map_err(|(e, _)| e)
    }
}

/// Lower case, `_` for `-`, and archspec's `armv8.2a` for GCC's
/// `armv8.2-a`.
fn normalize(s: &str) -> String {
    let n: String = s
        .trim()
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    if n.starts_with("armv") {
        n.replace('_', "")
    } else {
        n
    }
}

fn resolve(norm: &str) -> Option<&'static str> {
    if let Some(t) = cpu_table::target(norm) {
        return Some(t.name);
    }
    if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == norm) {
        return Some(to);
    }
    if let Some(e) = EXTRA.iter().find(|e| e.name == norm) {
        return Some(e.name);
    }
    compiler_names().get(norm).copied()
}

/// `-march`/`-mcpu` names of [`COMPILERS`] to archspec targets. A name that
/// several targets use (old compilers approximate new targets with an older
/// name) means the least capable of them, the one its code was built for.
fn compiler_names() -> &'static HashMap<String, &'static str> {
    static NAMES: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let schema = archspec::schema::MicroarchitecturesSchema::schema();
        let mut candidates: HashMap<String, Vec<&'static str>> = HashMap::new();
        for (target, m) in &schema.microarchitectures {
            for (compiler, set) in m.compilers.iter().flatten() {
                if !COMPILERS.contains(&compiler.as_str()) {
                    continue;
                }
                let entries: Vec<&archspec::schema::Compiler> = match set {
                    archspec::schema::CompilerSet::Several(v) => v.iter().collect(),
                    archspec::schema::CompilerSet::Single(c) => vec![c],
                };
                for c in entries {
                    let name = c.name.as_deref().unwrap_or(target);
                    let flags = c.flags.replace("{name}", name);
                    for flag in flags.split_whitespace() {
                        if let Some(v) = flag
                            .strip_prefix("-march=")
                            .or_else(|| flag.strip_prefix("-mcpu="))
                        {
                            candidates
                                .entry(normalize(v))
                                .or_default()
                                .push(target.as_str());
                        }
                    }
                }
            }
        }
        let known = Micro::known_targets();
        candidates
            .into_iter()
            .filter(|(name, _)| !known.contains_key(name))
            .filter_map(|(name, targets)| {
                // The candidate every other candidate descends from.
                let least = targets.iter().copied().find(|t| {
                    targets
                        .iter()
                        .all(|o| o == t || known[*o].decendent_of(&known[*t]))
                })?;
                Some((name, least))
            })
            .collect()
    })
}

/// Every name [`CpuTarget::parse`] accepts, for suggestions.
fn every_name() -> impl Iterator<Item = &'static str> {
    cpu_table::names()
        .chain(ALIASES.iter().map(|(a, _)| *a))
        .chain(EXTRA.iter().map(|e| e.name))
        .chain(compiler_names().keys().map(String::as_str))
}

/// `org.supercontainers.hardware.cpu.optimized.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CpuMode {
    /// Built for a platform only (`x86_64`, `aarch64`).
    Architecture,
    /// Built for a generic level (`x86_64_v3`).
    GenericMicro,
    /// Built for one microarchitecture (`skylake_avx512`, `zen3`).
    Microarchitecture,
}

impl CpuMode {
    /// Reads a mode in any case, with `-`/`_`; `generic` (an OCI working
    /// group example) is the generic level.
    pub fn parse(value: &str) -> Result<CpuMode, (ValueError, Option<String>)> {
        let n: String = value
            .trim()
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        Ok(match n.as_str() {
            "architecture" | "arch" | "platform" => CpuMode::Architecture,
            "genericmicro" | "genericmicroarchitecture" | "generic" | "genericarchitecture" => {
                CpuMode::GenericMicro
            }
            "microarchitecture" | "microarch" | "uarch" => CpuMode::Microarchitecture,
            _ => {
                let s =
                    super::keys::closest(&n, ["architecture", "genericMicro", "microarchitecture"])
                        .map(str::to_owned);
                return Err((ValueError::NotACpuMode, s));
            }
        })
    }

    /// The proposal's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CpuMode::Architecture => "architecture",
            CpuMode::GenericMicro => "genericMicro",
            CpuMode::Microarchitecture => "microarchitecture",
        }
    }

    /// Whether `target` is the kind of target this mode describes.
    pub fn describes(self, target: &CpuTarget) -> bool {
        match self {
            CpuMode::Architecture => target.is_platform(),
            CpuMode::GenericMicro => target.is_generic() && !target.is_platform(),
            CpuMode::Microarchitecture => !target.is_platform(),
        }
    }
}

impl fmt::Display for CpuMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> String {
        CpuTarget::parse(s).unwrap().name().to_owned()
    }

    #[test]
    fn archspec_names_in_any_case_and_dashes() {
        assert_eq!(name("Skylake"), "skylake");
        assert_eq!(name("X86_64"), "x86_64");
        assert_eq!(name("x86-64-v3"), "x86_64_v3");
        assert_eq!(name("skylake-avx512"), "skylake_avx512");
        assert_eq!(name("neoverse-v1"), "neoverse_v1");
        assert_eq!(name("cortex-a72"), "cortex_a72");
        assert_eq!(name("armv8.2-a"), "armv8.2a");
    }

    #[test]
    fn platform_names() {
        assert_eq!(name("amd64"), "x86_64");
        assert_eq!(name("arm64"), "aarch64");
        assert_eq!(name("AARCH64"), "aarch64");
    }

    #[test]
    fn compiler_march_names() {
        assert_eq!(name("znver3"), "zen3");
        assert_eq!(name("znver4"), "zen4");
        assert_eq!(name("znver1"), "zen");
        assert_eq!(name("core-avx2"), "haswell");
        assert_eq!(name("corei7"), "nehalem");
        assert_eq!(name("icelake-client"), "icelake");
        assert_eq!(name("icelake-server"), "icelake");
        assert_eq!(name("bdver4"), "excavator");
        assert_eq!(name("knl"), "mic_knl");
        assert_eq!(name("-march=znver3"), "zen3");
        assert_eq!(name("x86-64"), "x86_64");
    }

    #[test]
    fn march_names_archspec_lacks() {
        let t = CpuTarget::parse("btver2").unwrap();
        assert_eq!(t.name(), "btver2");
        assert_eq!(t.family(), "x86_64");
        assert_eq!(t.vendor(), "AuthenticAMD");
        assert!(t.features().contains("avx") && !t.features().contains("avx2"));
        assert!(!t.is_generic() && !t.is_platform());
    }

    #[test]
    fn unknown_names_suggest_a_close_one() {
        let (e, s) = CpuTarget::parse("zen33").unwrap_err();
        assert_eq!(e, ValueError::NotACpuTarget);
        assert_eq!(s.as_deref(), Some("zen3"));
        let (_, s) = CpuTarget::parse("skylake_avx521").unwrap_err();
        assert_eq!(s.as_deref(), Some("skylake_avx512"));
        let (_, s) = CpuTarget::parse("pentium9000").unwrap_err();
        assert_eq!(s, None);
        assert_eq!(
            CpuTarget::parse("native").unwrap_err().0,
            ValueError::NativeTarget
        );
        assert!(CpuTarget::parse("x86_64; rm -rf").is_err());
        assert!(CpuTarget::parse(&"a".repeat(10_000)).is_err());
    }

    #[test]
    fn display_is_canonical_with_the_spelling() {
        assert_eq!(
            CpuTarget::parse("znver3").unwrap().to_string(),
            "zen3 (given as znver3)"
        );
        assert_eq!(CpuTarget::parse("Skylake").unwrap().to_string(), "skylake");
        assert_eq!(
            CpuTarget::parse("x86_64_v4").unwrap().to_string(),
            "x86_64_v4"
        );
    }

    #[test]
    fn covers() {
        let t = |s| CpuTarget::parse(s).unwrap();
        assert!(t("skylake").covers(&t("x86_64")));
        assert!(!t("x86_64").covers(&t("skylake")));
        assert!(!t("zen3").covers(&t("icelake")));
        assert!(!t("neoverse_v1").covers(&t("aarch64")) || t("neoverse_v1").family() == "aarch64");
    }

    #[test]
    fn modes() {
        assert_eq!(
            CpuMode::parse("Microarchitecture").unwrap(),
            CpuMode::Microarchitecture
        );
        assert_eq!(
            CpuMode::parse("genericMicro").unwrap(),
            CpuMode::GenericMicro
        );
        assert_eq!(CpuMode::parse("generic").unwrap(), CpuMode::GenericMicro);
        assert_eq!(
            CpuMode::parse("generic-micro").unwrap(),
            CpuMode::GenericMicro
        );
        let (_, s) = CpuMode::parse("microarchitecure").unwrap_err();
        assert_eq!(s.as_deref(), Some("microarchitecture"));
    }
}
