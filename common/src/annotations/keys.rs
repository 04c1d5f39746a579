//! The vocabulary: every key hpcc reads, the check it feeds, and where the
//! spelling comes from. Published annotation sets use several generations
//! of names for the same fact (the 2023 proposal, the 2022 drafts, MetaHub
//! collections, compspec artifacts, the OCI image-compatibility working
//! group, the 2019 labels, NVIDIA's image labels); each is listed here once
//! and documented in `docs/annotations.md` with its source.
//!
//! Keys are matched exactly. A key that only looks like one of ours (other
//! case, Cyrillic or full-width letters, invisible characters) is never
//! read: it is reported as a look-alike, since an image should not be able
//! to pass a check with a key that a person reads as a known one.

use crate::verdict::Check;
use serde::{Deserialize, Serialize};

/// Where a key's spelling comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The HPC container conformance proposal (Kniep, 2023).
    Proposal2023,
    /// The container-hpc-conformance `ANNOTATIONS.md` drafts (2022).
    Draft2022,
    /// MetaHub community collections (shown in the 2023 proposal).
    MetaHub,
    /// compspec / compspec-go compatibility artifacts (flattened).
    Compspec,
    /// OCI image-compatibility working group proposals.
    OciWg,
    /// The 2019 supercontainers labels (CANOPIE-HPC 2019, containerspec).
    Labels2019,
    /// NVIDIA CUDA images (labels and environment).
    Nvidia,
    /// hpcc's own keys (docs/annotations.md, "hpcc").
    Hpcc,
}

impl Source {
    /// Where to read about it.
    pub fn describe(self) -> &'static str {
        match self {
            Source::Proposal2023 => "HPC container conformance proposal (2023)",
            Source::Draft2022 => "container-hpc-conformance ANNOTATIONS.md draft (2022)",
            Source::MetaHub => "MetaHub community collection",
            Source::Compspec => "compspec artifact",
            Source::OciWg => "OCI image-compatibility working group proposal",
            Source::Labels2019 => "2019 supercontainers label",
            Source::Nvidia => "NVIDIA CUDA image",
            Source::Hpcc => "hpcc's own key",
        }
    }
}

/// The fact a key gives; several keys may give the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// How the CPU code was built (consistency only).
    CpuMode,
    /// The CPU target.
    CpuTarget,
    /// Minimum NVIDIA driver.
    NvidiaDriver,
    /// CUDA version.
    Cuda,
    /// GPU architectures.
    GpuArchitectures,
    /// Whether a GPU is needed (and which API).
    GpuNeed,
    /// `NVIDIA_REQUIRE_CUDA`.
    NvidiaRequire,
    /// MPI implementation.
    MpiImplementation,
    /// MPI version.
    MpiVersion,
    /// MPI ABI version.
    MpiAbiVersion,
    /// UCX / libfabric.
    CommFrameworks,
    /// libfabric ABI.
    LibfabricAbi,
    /// MPI optimisation tag.
    MpiOptimization,
    /// Tweaks the image allows.
    PortabilityModes,
    /// libc implementation.
    Libc,
    /// glibc version.
    Glibc,
    /// Python version.
    Python,
    /// Shells.
    Shells,
    /// Tools.
    Tools,
    /// Extra PATH entries.
    PathExtra,
    /// Kernel the image was built on.
    KernelVersion,
    /// Minimum host kernel.
    HostKernelMin,
    /// Kernel features expected.
    KernelExpectations,
    /// Documentation.
    Doc,
    /// Recorded and shown, never checked (OS, PMI, build host CPU).
    Info,
}

impl Field {
    /// The check this fact feeds; [`Check::Annotations`] for facts that are
    /// only reported.
    pub fn check(self) -> Check {
        match self {
            Field::CpuMode | Field::CpuTarget => Check::Cpu,
            Field::NvidiaDriver
            | Field::Cuda
            | Field::GpuArchitectures
            | Field::GpuNeed
            | Field::NvidiaRequire => Check::Gpu,
            Field::MpiImplementation
            | Field::CommFrameworks
            | Field::LibfabricAbi
            | Field::PortabilityModes => Check::Mpi,
            Field::Libc | Field::Glibc => Check::Libc,
            Field::HostKernelMin | Field::KernelExpectations => Check::Kernel,
            Field::MpiVersion
            | Field::MpiAbiVersion
            | Field::MpiOptimization
            | Field::Python
            | Field::Shells
            | Field::Tools
            | Field::PathExtra
            | Field::KernelVersion
            | Field::Doc
            | Field::Info => Check::Annotations,
        }
    }

    /// Whether a key of this field makes an image "annotated" for the
    /// `unannotated` policy: it feeds a check. The CPU mode only feeds a
    /// consistency warning, so it does not count.
    pub fn counts(self) -> bool {
        self.check() != Check::Annotations && self != Field::CpuMode
    }
}

/// One key hpcc reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The full key.
    pub key: &'static str,
    /// What it gives.
    pub field: Field,
    /// Where the spelling comes from.
    pub source: Source,
    /// For an old key: the key that says the same today.
    pub current: Option<&'static str>,
}

const fn k(key: &'static str, field: Field, source: Source) -> Key {
    Key {
        key,
        field,
        source,
        current: None,
    }
}

const fn old(key: &'static str, field: Field, source: Source, current: &'static str) -> Key {
    Key {
        key,
        field,
        source,
        current: Some(current),
    }
}

/// Every key hpcc reads, in priority order: when two keys give the same
/// fact, the earlier one is kept and a disagreement is reported.
pub const KEYS: &[Key] = {
    use Field::*;
    use Source::*;
    &[
        k(
            "org.supercontainers.hardware.cpu.optimized.mode",
            CpuMode,
            Proposal2023,
        ),
        k(
            "org.supercontainers.hardware.cpu.optimized.version",
            CpuTarget,
            Proposal2023,
        ),
        k(
            "org.supercontainers.hardware.cpu.optimized.architecture",
            CpuTarget,
            Proposal2023,
        ),
        k("io.archspec.cpu.target", CpuTarget, Compspec),
        k("io.archspec.target", CpuTarget, OciWg),
        k("io.archspec.cpu.vendor", Info, Compspec),
        k("io.archspec.cpu.model", Info, Compspec),
        k(
            "org.supercontainers.hardware.gpu.nvidia.driver.version",
            NvidiaDriver,
            Proposal2023,
        ),
        k(
            "org.supercontainers.hardware.gpu.driver.version",
            NvidiaDriver,
            OciWg,
        ),
        k(
            "org.supercontainers.hardware.gpu.nvidia.cuda.version",
            Cuda,
            Proposal2023,
        ),
        k("org.supercontainers.hardware.gpu.cuda.version", Cuda, OciWg),
        k("com.nvidia.cuda.version", Cuda, Nvidia),
        k(
            "org.supercontainers.hardware.gpu.nvidia.architecture",
            GpuArchitectures,
            Proposal2023,
        ),
        k(
            "org.supercontainers.hardware.gpu.architecture",
            GpuArchitectures,
            OciWg,
        ),
        k(
            "org.supercontainers.hardware.gpu.available",
            GpuNeed,
            Compspec,
        ),
        k("org.supercontainers.hardware.gpu.enabled", GpuNeed, OciWg),
        old(
            "org.supercontainers.gpu",
            GpuNeed,
            Labels2019,
            "org.supercontainers.hardware.gpu.available",
        ),
        k("org.supercontainers.hardware.gpu.driver", Info, OciWg),
        k(
            "org.supercontainers.mpi.implementation",
            MpiImplementation,
            Proposal2023,
        ),
        k(
            "org.supercontainers.mpi.provider",
            MpiImplementation,
            Draft2022,
        ),
        k("org.supercontainers.mpi.variant", MpiImplementation, OciWg),
        old(
            "org.supercontainers.mpi",
            MpiImplementation,
            Labels2019,
            "org.supercontainers.mpi.implementation",
        ),
        k("org.supercontainers.mpi.version", MpiVersion, Compspec),
        k(
            "org.supercontainers.openmpi.version",
            MpiVersion,
            Proposal2023,
        ),
        k("org.supercontainers.mpich.version", MpiVersion, MetaHub),
        k(
            "org.supercontainers.mpi.abi.version",
            MpiAbiVersion,
            MetaHub,
        ),
        k(
            "org.supercontainers.mpich.abi.version",
            MpiAbiVersion,
            MetaHub,
        ),
        k(
            "org.supercontainers.communication.framework",
            CommFrameworks,
            Proposal2023,
        ),
        k(
            "org.supercontainers.libfabric.abi.version",
            LibfabricAbi,
            Proposal2023,
        ),
        k("org.supercontainers.libfabric.abi", LibfabricAbi, Draft2022),
        k(
            "org.supercontainers.mpi.portability.optimization",
            MpiOptimization,
            Proposal2023,
        ),
        k(
            "org.supercontainers.mpi.portability.optimized",
            MpiOptimization,
            Draft2022,
        ),
        k(
            "org.supercontainers.mpi.portability.mode",
            PortabilityModes,
            Proposal2023,
        ),
        k("org.supercontainers.pmi.version", Info, Draft2022),
        k(
            "org.supercontainers.libc.implementation",
            Libc,
            Proposal2023,
        ),
        k("org.supercontainers.libc.provider", Libc, Draft2022),
        k("org.supercontainers.glibc.version", Glibc, Proposal2023),
        old(
            "org.supercontainers.glibc",
            Glibc,
            Labels2019,
            "org.supercontainers.glibc.version",
        ),
        k("org.supercontainers.python.version", Python, Proposal2023),
        k(
            "org.supercontainers.shell.implementation",
            Shells,
            Proposal2023,
        ),
        k("org.supercontainers.tools.includes", Tools, Proposal2023),
        k("org.supercontainers.path.extra", PathExtra, Proposal2023),
        k(
            "org.supercontainers.kernel.version",
            KernelVersion,
            Proposal2023,
        ),
        k(
            "org.supercontainers.host.kernel.version.min",
            HostKernelMin,
            Proposal2023,
        ),
        k(
            "org.supercontainers.host.kernel.modules.expectation",
            KernelExpectations,
            Proposal2023,
        ),
        k("org.supercontainers.os.name", Info, Compspec),
        k("org.supercontainers.os.release", Info, Compspec),
        k("org.supercontainers.os.vendor", Info, Compspec),
        k("org.supercontainers.os.version", Info, Compspec),
        // The image's own check program for `hpcc verify` (cli/src/verify).
        k("org.supercontainers.hpcc.verify.command", Info, Hpcc),
    ]
};

/// `org.supercontainers.docs.*`: documentation, any name below it.
pub const DOCS_PREFIX: &str = "org.supercontainers.docs.";

/// The environment variables hpcc reads, when the engine passes the
/// image's environment (NVIDIA CUDA images carry their requirement there).
pub const ENV_REQUIRE_CUDA: &str = "NVIDIA_REQUIRE_CUDA";
/// Disables `NVIDIA_REQUIRE_CUDA`, as in the NVIDIA container toolkit.
pub const ENV_DISABLE_REQUIRE: &str = "NVIDIA_DISABLE_REQUIRE";

/// Namespaces whose unknown keys are reported (an unknown key there is
/// probably a typo or a newer spelling).
pub const OWN_NAMESPACES: &[&str] = &["org.supercontainers.", "io.archspec."];

/// Namespaces a look-alike key is compared with.
const WATCHED_NAMESPACES: &[&str] = &["org.supercontainers.", "io.archspec.", "com.nvidia."];

/// Longest key examined; longer keys in our namespaces are reported, others
/// ignored (known keys are far shorter).
pub const MAX_KEY_BYTES: usize = 256;

/// How a key is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// One of [`KEYS`] (its index is its priority).
    Known(usize),
    /// `org.supercontainers.docs.*`.
    Doc,
    /// In one of our namespaces, but not a key hpcc knows.
    Unknown,
    /// Not ours but folds to one of our keys or namespaces.
    LookAlike,
    /// Someone else's key.
    Foreign,
}

/// How hpcc reads `key`.
pub fn classify(key: &str) -> Class {
    if let Some(i) = KEYS.iter().position(|k| k.key == key) {
        return Class::Known(i);
    }
    if key.starts_with(DOCS_PREFIX) && key.len() > DOCS_PREFIX.len() && key.is_ascii() {
        return Class::Doc;
    }
    let folded = fold(key);
    let folds_to_ours = KEYS.iter().any(|k| k.key == folded)
        || WATCHED_NAMESPACES.iter().any(|ns| folded.starts_with(ns));
    if folded != key && folds_to_ours {
        return Class::LookAlike;
    }
    if OWN_NAMESPACES.iter().any(|ns| key.starts_with(ns)) {
        return Class::Unknown;
    }
    // A misspelt namespace is the image author's typo (or a way to look
    // annotated to a person while hpcc ignores the key): reported, with
    // the known key it is closest to.
    if NEAR_NAMESPACES.iter().any(|ns| folded.starts_with(ns)) {
        return if folded != key {
            Class::LookAlike
        } else {
            Class::Unknown
        };
    }
    Class::Foreign
}

/// Misspellings of hpcc's namespaces: keys there are reported, not
/// skipped as another vendor's.
const NEAR_NAMESPACES: &[&str] = &[
    "org.supercontainer.",
    "org.super-containers.",
    "org.super.containers.",
    "org.supercontainers-",
    "io.archspecs.",
];

/// The known key `key` looks like, or the namespace it looks like.
pub fn looks_like(key: &str) -> String {
    let folded = fold(key);
    if let Some(k) = KEYS.iter().find(|k| k.key == folded) {
        return k.key.to_owned();
    }
    WATCHED_NAMESPACES
        .iter()
        .find(|ns| folded.starts_with(*ns))
        .map(|ns| format!("{ns}*"))
        .unwrap_or(folded)
}

/// The closest known key to an unknown one, when it is close enough to be a
/// typo.
pub fn suggest_key(key: &str) -> Option<&'static str> {
    closest(key, KEYS.iter().map(|k| k.key))
}

/// `key` folded for comparison: ASCII lower case, look-alike letters of
/// other scripts and full-width forms mapped to ASCII, invisible characters
/// dropped, `_` read as `-` is left alone (keys use dots). Bounded: only the
/// first [`MAX_KEY_BYTES`] characters are looked at.
pub fn fold(key: &str) -> String {
    key.chars()
        .take(MAX_KEY_BYTES)
        .filter_map(fold_char)
        .collect()
}

fn fold_char(c: char) -> Option<char> {
    if crate::text::escape(c.encode_utf8(&mut [0; 4])).len() != c.len_utf8() || c.is_whitespace() {
        // Controls and invisible formatting characters: a person does not
        // see them, so they do not make a key different.
        return None;
    }
    let c = match c {
        // Full-width ASCII forms.
        '\u{ff01}'..='\u{ff5e}' => char::from_u32(c as u32 - 0xff01 + 0x21).unwrap_or(c),
        '\u{3002}' | '\u{ff61}' | '\u{2024}' | '\u{2e31}' => '.',
        '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
        // Cyrillic letters that look Latin.
        'а' | 'А' => 'a',
        'в' | 'В' => 'b',
        'с' | 'С' | 'ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'Е' | 'ё' => 'e',
        'һ' | 'Н' => 'h',
        'і' | 'І' | 'ї' | 'ı' | 'ɩ' => 'i',
        'ј' | 'Ј' => 'j',
        'к' | 'К' => 'k',
        'ӏ' | 'ℓ' => 'l',
        'м' | 'М' => 'm',
        'п' => 'n',
        'о' | 'О' | 'ο' | 'Ο' | 'օ' => 'o',
        'р' | 'Р' | 'ρ' | 'Ρ' => 'p',
        'ԛ' => 'q',
        'г' => 'r',
        'ѕ' | 'Ѕ' => 's',
        'т' | 'Т' | 'τ' | 'Τ' => 't',
        'υ' | 'ս' => 'u',
        'ν' | 'ѵ' => 'v',
        'ԝ' => 'w',
        'х' | 'Х' | 'χ' | 'Χ' => 'x',
        'у' | 'У' | 'γ' => 'y',
        'α' | 'Α' => 'a',
        'β' | 'Β' => 'b',
        'ε' | 'Ε' => 'e',
        'ι' | 'Ι' => 'i',
        'κ' | 'Κ' => 'k',
        'μ' | 'Μ' => 'm',
        'η' | 'Ν' => 'n',
        'Ζ' => 'z',
        other => other,
    };
    Some(c.to_ascii_lowercase())
}

/// The candidate closest to `word` by edit distance, when it is close: at
/// most 2 edits, or a third of the word for long words (4 at most). Case
/// and `-`/`_` are ignored. Bounded: long inputs are not compared, and a
/// candidate costs `O(length x limit)` ([`edit_distance_within`]): an image
/// asks for a suggestion for each of up to 256 keys and 32 list entries,
/// each compared with every name hpcc knows (a full Levenshtein table per
/// pair took 400 ms for a fuzzed 1.6 KB set of annotations).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let w: Vec<char> = normalize(word).chars().collect();
    if w.is_empty() || w.len() > 96 {
        return None;
    }
    let limit = (w.len() / 3).clamp(2, 4);
    let mut rows = Rows::default();
    candidates
        .into_iter()
        .filter_map(|c| {
            let n: Vec<char> = normalize(c).chars().collect();
            Some((rows.within(&w, &n, limit)?, c))
        })
        // Ties go to the first name in order, so the suggestion does not
        // depend on a hash map's iteration order.
        .min()
        .map(|(_, c)| c)
}

fn normalize(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let limit = a.len().max(b.len());
    Rows::default()
        .within(&a, &b, limit)
        .expect("never more edits than the longer word")
}

/// The Levenshtein distance of `a` and `b` when it is at most `limit`,
/// else None: only the band of `2 x limit + 1` diagonals is computed, in two
/// reused rows, and a row whose every cell is over the limit ends it.
pub fn edit_distance_within(a: &[char], b: &[char], limit: usize) -> Option<usize> {
    Rows::default().within(a, b, limit)
}

/// The two rows of [`edit_distance_within`], kept across candidates.
#[derive(Default)]
struct Rows {
    prev: Vec<usize>,
    cur: Vec<usize>,
}

impl Rows {
    fn within(&mut self, a: &[char], b: &[char], limit: usize) -> Option<usize> {
        const FAR: usize = usize::MAX / 4;
        let (n, m) = (a.len(), b.len());
        if n.abs_diff(m) > limit {
            return None;
        }
        self.prev.clear();
        self.prev.resize(m + 2, FAR);
        self.cur.clear();
        self.cur.resize(m + 2, FAR);
        for (j, p) in self.prev.iter_mut().enumerate().take(m.min(limit) + 1) {
            *p = j;
        }
        for i in 1..=n {
            let lo = i.saturating_sub(limit).max(1);
            let hi = (i + limit).min(m);
            // Left of the band: the first column (i edits) or far.
            self.cur[lo - 1] = if lo == 1 { i } else { FAR };
            let mut best = self.cur[lo - 1];
            for j in lo..=hi {
                let sub = self.prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
                let v = sub.min(self.prev[j] + 1).min(self.cur[j - 1] + 1);
                self.cur[j] = v;
                best = best.min(v);
            }
            // Right of the band, read by the next row.
            self.cur[hi + 1] = FAR;
            if best > limit {
                return None;
            }
            std::mem::swap(&mut self.prev, &mut self.cur);
        }
        let d = self.prev[m];
        (d <= limit).then_some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_in_a_namespace_and_unique() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(
                WATCHED_NAMESPACES.iter().any(|ns| k.key.starts_with(ns)),
                "{}",
                k.key
            );
            assert!(
                KEYS[..i].iter().all(|o| o.key != k.key),
                "duplicate {}",
                k.key
            );
            assert_eq!(classify(k.key), Class::Known(i));
            assert_eq!(fold(k.key), k.key, "keys are folded already");
        }
    }

    #[test]
    fn banded_distance_is_levenshtein_within_the_limit() {
        // Against the plain table, on every pair of short words over a small
        // alphabet (all lengths 0..=5: 3,906 words, 15 million pairs would be
        // too many; every pair of the first 400 is plenty).
        fn full(a: &[char], b: &[char]) -> usize {
            let mut prev: Vec<usize> = (0..=b.len()).collect();
            for (i, ca) in a.iter().enumerate() {
                let mut cur = vec![i + 1; b.len() + 1];
                for (j, cb) in b.iter().enumerate() {
                    let sub = prev[j] + usize::from(ca != cb);
                    cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
                }
                prev = cur;
            }
            prev[b.len()]
        }
        let mut words: Vec<Vec<char>> = vec![vec![]];
        let mut i = 0;
        while words.len() < 400 {
            let w = words[i].clone();
            for c in ['a', 'b', 'c'] {
                let mut x = w.clone();
                x.push(c);
                words.push(x);
            }
            i += 1;
        }
        for a in &words {
            for b in &words {
                let d = full(a, b);
                for limit in 0..5 {
                    let got = edit_distance_within(a, b, limit);
                    assert_eq!(got, (d <= limit).then_some(d), "{a:?} {b:?} {limit}");
                }
            }
        }
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn look_alikes_are_caught() {
        // Cyrillic `о` in `org`.
        let cyr = "\u{43e}rg.supercontainers.hardware.cpu.optimized.version";
        assert_eq!(classify(cyr), Class::LookAlike);
        assert_eq!(
            looks_like(cyr),
            "org.supercontainers.hardware.cpu.optimized.version"
        );
        // Another case.
        let upper = "org.supercontainers.Hardware.CPU.optimized.version";
        assert_eq!(classify(upper), Class::LookAlike);
        // Zero-width space inside.
        let zw = "org.super\u{200b}containers.mpi.implementation";
        assert_eq!(classify(zw), Class::LookAlike);
        // Full-width dot.
        let fw = "org\u{ff0e}supercontainers.future";
        assert_eq!(classify(fw), Class::LookAlike);
        assert_eq!(looks_like(fw), "org.supercontainers.*");
        assert_eq!(classify("ORG.SUPERCONTAINERS.x"), Class::LookAlike);
    }

    #[test]
    fn unknown_and_foreign_keys() {
        assert_eq!(classify("org.supercontainers.future.thing"), Class::Unknown);
        let singular = "org.supercontainer.hardware.cpu.optimized.version";
        assert_eq!(classify(singular), Class::Unknown);
        assert_eq!(
            suggest_key(singular),
            Some("org.supercontainers.hardware.cpu.optimized.version")
        );
        assert_eq!(classify("ORG.supercontainer.gpu"), Class::LookAlike);
        assert_eq!(classify("org.opencontainers.image.title"), Class::Foreign);
        assert_eq!(classify("io.archspec.cpu.flags"), Class::Unknown);
        assert_eq!(classify("org.opencontainers.image.title"), Class::Foreign);
        assert_eq!(classify("com.nvidia.cudnn.version"), Class::Foreign);
        assert_eq!(
            classify("org.supercontainers.docs.quickstart.link"),
            Class::Doc
        );
        assert_eq!(
            suggest_key("org.supercontainers.hardware.cpu.optimised.version"),
            Some("org.supercontainers.hardware.cpu.optimized.version")
        );
        assert_eq!(suggest_key("org.supercontainers.future.thing"), None);
    }

    #[test]
    fn closest_ignores_case_and_dashes() {
        let c = ["skylake_avx512", "zen3", "neoverse_v1"];
        assert_eq!(closest("Skylake-AVX512", c), Some("skylake_avx512"));
        assert_eq!(closest("zen33", c), Some("zen3"));
        assert_eq!(closest("pentium9000", c), None);
        assert_eq!(closest(&"x".repeat(1000), c), None);
    }

    #[test]
    fn fold_is_bounded() {
        let long = "а".repeat(100_000);
        assert_eq!(fold(&long).len(), MAX_KEY_BYTES);
    }
}
