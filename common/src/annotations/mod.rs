//! What an image says about itself: the `org.supercontainers.*`
//! annotations of the HPC container conformance proposal and the other
//! spellings published for the same facts ([`keys`]), read into an
//! [`ImageSpec`].
//!
//! Annotation text is hostile input: every value is bounded in size, nothing
//! in it can make reading fail or panic, and every piece of it that reaches
//! a message is escaped ([`crate::text::escape`]). A value hpcc cannot read
//! does not invalidate the image: it becomes a [`KeyProblem`] on that key,
//! with the key, the value and a close known value when there is one, and
//! the matcher decides what it costs (only a check that is enforced and
//! cannot be decided without the value refuses a start).

pub mod cpu;
pub(crate) mod cpu_table;
pub mod gpu;
pub mod keys;
pub mod mpi;

pub use cpu::{CpuMode, CpuTarget};
pub use gpu::{GpuNeed, NvidiaRequire, SmArch};
pub use keys::{Field, Source};
pub use mpi::{CommFramework, LibcImplementation, MpiImplementation, PortabilityMode};

use crate::verdict::Check;
use crate::version::Version;
use base64::Engine as _;
use keys::{Class, KEYS};
use mpi::{ModeValue, MpiValue};
use serde::{Deserialize, Serialize};

/// Why host libraries (glibc builds) may not go into an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoHostLibraries {
    /// The image's libc is musl.
    #[error("the image uses musl and host libraries are glibc builds")]
    Musl,
    /// The libc annotation was given but could not be read.
    #[error("the image's libc could not be read")]
    LibcUnreadable,
}
use std::collections::BTreeMap;
use std::fmt;

/// The prefix of the proposal's annotations.
pub const PREFIX: &str = "org.supercontainers.";

/// Largest accepted value of an ordinary annotation.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Largest accepted value of a `docs.*` annotation (base64 markdown).
pub const MAX_DOC_BYTES: usize = 256 * 1024;
/// Largest accepted `NVIDIA_REQUIRE_CUDA`.
pub const MAX_ENV_BYTES: usize = 16 * 1024;
/// Most keys of hpcc's namespaces (and look-alikes) read from one image.
pub const MAX_KEYS: usize = 256;
/// Most annotations looked at in all (most belong to others).
pub const MAX_SCANNED: usize = 4096;
/// Most entries in a list-valued annotation.
pub const MAX_LIST: usize = 32;
/// Longest value shown in a message.
const SHOWN: usize = 80;

/// Why a value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "error")]
pub enum ValueError {
    /// Over the size limit.
    #[error("value longer than {limit} bytes")]
    TooLong {
        /// The limit.
        limit: usize,
    },
    /// A NUL byte.
    #[error("value contains a NUL byte")]
    Nul,
    /// Nothing in it.
    #[error("value is empty")]
    Empty,
    /// Too many list entries.
    #[error("more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: usize,
    },
    /// Not a CPU target.
    #[error("not a CPU target hpcc knows (archspec names such as x86_64_v3, skylake_avx512, zen3, neoverse_v1, or GCC/LLVM -march names such as znver3)")]
    NotACpuTarget,
    /// `native`.
    #[error("`native` names the build host's CPU, not a target")]
    NativeTarget,
    /// Not a CPU mode.
    #[error("expected architecture, genericMicro or microarchitecture")]
    NotACpuMode,
    /// Not an MPI implementation.
    #[error("not an MPI implementation hpcc knows (Open MPI, HPC-X, Spectrum MPI, MPICH, Intel MPI, Cray MPICH, MVAPICH, thread-MPI)")]
    NotAnMpi,
    /// Not a portability mode.
    #[error("not a portability mode (expected mpi_replace, libfabric_inject or ucx_replace)")]
    NotAMode,
    /// Not a libc.
    #[error("expected glibc or musl")]
    NotALibc,
    /// Not a communication framework.
    #[error("expected ucx or libfabric")]
    NotAFramework,
    /// Not a version.
    #[error("not a version (e.g. 12.1, 4.1.6-1ubuntu1, 5.0.0rc12)")]
    NotAVersion,
    /// Not a GPU architecture.
    #[error("not a GPU architecture (sm_80, compute_86 or 8.0)")]
    NotAGpuArch,
    /// Not yes/no.
    #[error("expected yes or no")]
    NotYesNo,
    /// Not a GPU API of the 2019 label.
    #[error("expected cuda, opencl, rocm or unknown")]
    NotAGpuApi,
    /// Not an absolute path.
    #[error("not an absolute path")]
    NotAbsolutePath,
    /// Characters outside the allowed set.
    #[error("has characters outside [A-Za-z0-9-_.+/:]")]
    BadCharacters,
    /// Not an http(s) URL.
    #[error("a docs link must be an http(s) URL")]
    NotHttpUrl,
    /// Not an `NVIDIA_REQUIRE_CUDA` expression.
    #[error("not an NVIDIA requirement (e.g. cuda>=12.0 brand=tesla,driver>=470,driver<471)")]
    NotARequirement,
}

/// What is wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ProblemKind {
    /// The value cannot be read; the key gives nothing.
    #[error("{error}{}", did_you_mean(.suggestion))]
    Unreadable {
        /// Why.
        error: ValueError,
        /// A close value hpcc knows.
        suggestion: Option<String>,
    },
    /// One entry of a list cannot be read; the others are used.
    #[error("entry {:?} ignored: {error}{}", crate::text::escape(.entry), did_you_mean(.suggestion))]
    UnknownEntry {
        /// The entry.
        entry: String,
        /// Why.
        error: ValueError,
        /// A close value hpcc knows.
        suggestion: Option<String>,
    },
    /// A value a published draft lists without defining it.
    #[error("{:?} is listed by a 2022 draft without a defined meaning: not acted on{}", crate::text::escape(.entry), did_you_mean(.suggestion))]
    Undefined {
        /// The value.
        entry: String,
        /// What was probably meant.
        suggestion: Option<String>,
    },
    /// Another key says something else about the same fact.
    #[error("contradicts {}={:?}", crate::text::escape(.other_key), crate::text::escape(.other_value))]
    Conflict {
        /// The other key.
        other_key: String,
        /// Its value.
        other_value: String,
    },
    /// A key in hpcc's namespaces that hpcc does not know.
    #[error("unknown key, ignored{}", did_you_mean(.suggestion))]
    UnknownKey {
        /// The known key it is probably a typo of.
        suggestion: Option<String>,
    },
    /// A key that reads like one of hpcc's but is not.
    #[error("this key looks like {} but is not (other case, script or invisible characters): ignored", crate::text::escape(.like))]
    LookAlike {
        /// What it looks like.
        like: String,
    },
    /// An old key, read as its current name.
    #[error("2019 label, read as {current}")]
    Legacy {
        /// The key that says it today.
        current: String,
    },
    /// Too many keys: the rest were not read.
    #[error("the image carries more than {limit} annotations in hpcc's namespaces (or {scanned} in all): the rest were not read")]
    TooManyKeys {
        /// The limit on hpcc's keys.
        limit: usize,
        /// The limit on all keys.
        scanned: usize,
    },
    /// `cpu.optimized.mode` does not describe the target.
    #[error("mode {mode} does not describe the target {target}: the target decides")]
    ModeMismatch {
        /// The declared mode.
        mode: CpuMode,
        /// The target.
        target: String,
    },
    /// A glibc version on a musl image.
    #[error("glibc version on a musl image: ignored")]
    GlibcOnMusl,
}

fn did_you_mean(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean {}?)", crate::text::escape(s)),
        None => String::new(),
    }
}

/// One key that did not give hpcc what it says, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProblem {
    /// The key as the image spells it (shortened when long).
    pub key: String,
    /// Its value (shortened when long).
    pub value: String,
    /// The fact it was meant to give, when the key is known.
    pub field: Option<Field>,
    /// What is wrong.
    pub problem: ProblemKind,
}

impl KeyProblem {
    fn new(key: &str, value: &str, field: Option<Field>, problem: ProblemKind) -> KeyProblem {
        KeyProblem {
            key: shorten(key),
            value: shorten(value),
            field,
            problem,
        }
    }

    /// The check the key feeds ([`Check::Annotations`] for an unknown key).
    pub fn check(&self) -> Check {
        self.field.map_or(Check::Annotations, Field::check)
    }

    /// `key=value`, escaped, for evidence.
    pub fn shown(&self) -> String {
        // The key with every non-ASCII letter escaped, so a look-alike
        // shows which letter is not what it seems.
        format!(
            "{}={}",
            crate::text::escape_key(&self.key),
            crate::text::escape(&format!("{:?}", self.value))
        )
    }

    /// Whether the key's value is lost (unreadable, or contradicted).
    pub fn loses_value(&self) -> bool {
        matches!(
            self.problem,
            ProblemKind::Unreadable { .. }
                | ProblemKind::UnknownEntry { .. }
                | ProblemKind::Conflict { .. }
        )
    }
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.shown(), self.problem)
    }
}

/// Kept for callers of [`ImageSpec::from_annotations`]: reading no longer
/// fails, every problem is a [`KeyProblem`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}={value:?}: {reason}")]
pub struct AnnotationError {
    /// The full key.
    pub key: String,
    /// The value, shortened when it is long.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A `docs.*` annotation: a link, or base64 markdown decoded on demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Doc {
    /// An URL.
    Link(String),
    /// Base64 text, still encoded.
    Base64(String),
}

/// Why a document could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    /// Not base64.
    #[error("invalid base64: {0}")]
    Base64(String),
    /// Not UTF-8 once decoded.
    #[error("decoded document is not UTF-8")]
    NotUtf8,
}

impl Doc {
    /// Decodes a base64 document (bounded by [`MAX_DOC_BYTES`] on input).
    pub fn decode(&self) -> Result<String, DocError> {
        match self {
            Doc::Link(l) => Ok(l.clone()),
            Doc::Base64(b) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|e| DocError::Base64(e.to_string()))?;
                String::from_utf8(bytes).map_err(|_| DocError::NotUtf8)
            }
        }
    }
}

/// Everything an image says about itself, folded from its annotations
/// (and, when the engine passes it, its environment).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// CPU build mode.
    pub cpu_mode: Option<CpuMode>,
    /// The CPU target (the most demanding one when keys agree).
    pub cpu_target: Option<CpuTarget>,
    /// Every CPU target to check: [`ImageSpec::cpu_target`] and any other
    /// target of the same platform a second key declares that neither
    /// covers.
    #[serde(default)]
    pub cpu_targets: Vec<CpuTarget>,
    /// Minimum NVIDIA driver.
    pub nvidia_driver: Option<Version>,
    /// CUDA version built against.
    pub cuda: Option<Version>,
    /// GPU architectures built for.
    pub gpu_architectures: Vec<SmArch>,
    /// Whether a GPU is needed.
    #[serde(default)]
    pub gpu: Option<GpuNeed>,
    /// `NVIDIA_REQUIRE_CUDA` from the image's environment.
    #[serde(default)]
    pub nvidia_require: Option<NvidiaRequire>,
    /// MPI implementation.
    pub mpi_implementation: Option<MpiImplementation>,
    /// Every MPI implementation declared (two ABI families contradict).
    #[serde(default)]
    pub mpi_implementations: Vec<MpiImplementation>,
    /// MPI version.
    pub mpi_version: Option<Version>,
    /// MPI ABI version.
    pub mpi_abi_version: Option<Version>,
    /// Communication frameworks.
    pub comm_frameworks: Vec<CommFramework>,
    /// libfabric ABI.
    pub libfabric_abi: Option<Version>,
    /// MPI portability optimisation tag.
    pub mpi_optimization: Option<String>,
    /// Tweaks the image allows.
    pub portability_modes: Vec<PortabilityMode>,
    /// libc implementation.
    pub libc: Option<LibcImplementation>,
    /// glibc version.
    pub glibc: Option<Version>,
    /// Python version.
    pub python: Option<Version>,
    /// Shells carried.
    pub shells: Vec<String>,
    /// Tools carried.
    pub tools: Vec<String>,
    /// Extra PATH entries.
    pub path_extra: Vec<String>,
    /// Kernel the image was built on.
    pub kernel_version: Option<Version>,
    /// Minimum host kernel.
    pub host_kernel_min: Option<Version>,
    /// Kernel features expected on the host.
    pub kernel_expectations: Vec<String>,
    /// Documentation entries by name.
    pub docs: BTreeMap<String, Doc>,
    /// Facts recorded and shown but not checked (`os.*`, `pmi.version`,
    /// the build host's CPU model), by key.
    #[serde(default)]
    pub info: BTreeMap<String, String>,
    /// The key each fact was taken from.
    #[serde(default)]
    pub sources: BTreeMap<Field, String>,
    /// How many `org.supercontainers.*` keys the image carried.
    pub annotated_keys: usize,
    /// How many keys hpcc knows that feed a check (see
    /// [`ImageSpec::has_known_keys`]).
    #[serde(default)]
    pub known_keys: usize,
    /// The keys in hpcc's namespaces the image carried, as it spells them
    /// (shortened; at most [`MAX_SEEN`]): what the `unannotated` refusal
    /// names when none of them could be checked.
    #[serde(default)]
    pub seen_keys: Vec<String>,
    /// Every key that did not give hpcc what it says.
    #[serde(default)]
    pub problems: Vec<KeyProblem>,
    /// [`ImageSpec::problems`] as sentences, escaped.
    pub warnings: Vec<String>,
}

impl ImageSpec {
    /// Reads an image's annotations (or a `config.json`'s) and the
    /// environment its process gets (`NAME=value`; NVIDIA images carry
    /// `NVIDIA_REQUIRE_CUDA` there). Never fails: what cannot be read is in
    /// [`ImageSpec::problems`].
    pub fn read<'a, I, E>(annotations: I, env: E) -> ImageSpec
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
        E: IntoIterator<Item = &'a str>,
    {
        let mut spec = ImageSpec::default();
        let mut known: Vec<(usize, &str, &str)> = Vec::new();
        let mut ours = 0usize;
        let mut over_limit = false;
        for (scanned, (key, value)) in annotations.into_iter().enumerate() {
            if scanned >= MAX_SCANNED {
                over_limit = true;
                break;
            }
            if key.starts_with(PREFIX) {
                spec.annotated_keys += 1;
            }
            let class = if key.len() > keys::MAX_KEY_BYTES {
                match keys::classify(&key[..key.floor_char_boundary_compat(keys::MAX_KEY_BYTES)]) {
                    Class::Foreign => Class::Foreign,
                    _ => Class::Unknown,
                }
            } else {
                keys::classify(key)
            };
            if class == Class::Foreign {
                continue;
            }
            ours += 1;
            if spec.seen_keys.len() < MAX_SEEN {
                spec.seen_keys.push(shorten(key));
            }
            if ours > MAX_KEYS {
                over_limit = true;
                break;
            }
            match class {
                Class::Known(i) => known.push((i, key, value)),
                Class::Doc => spec.read_doc(key, value),
                Class::Unknown => {
                    let suggestion = keys::suggest_key(key).map(str::to_owned);
                    let field = suggestion
                        .as_deref()
                        .and_then(|s| KEYS.iter().find(|k| k.key == s))
                        .map(|k| k.field);
                    spec.problem(
                        key,
                        value,
                        field.filter(|f| f.counts()),
                        ProblemKind::UnknownKey { suggestion },
                    );
                }
                Class::LookAlike => {
                    let like = keys::looks_like(key);
                    spec.problem(key, value, None, ProblemKind::LookAlike { like });
                }
                Class::Foreign => {}
            }
        }
        if over_limit {
            spec.problem(
                "(annotations)",
                "",
                None,
                ProblemKind::TooManyKeys {
                    limit: MAX_KEYS,
                    scanned: MAX_SCANNED,
                },
            );
        }
        // Keys in priority order, so the canonical spelling wins whatever
        // order the engine passes them in.
        known.sort_by_key(|(i, _, _)| *i);
        for (i, key, value) in known {
            let k = &KEYS[i];
            if k.field.counts() {
                spec.known_keys += 1;
            }
            if let Some(current) = k.current {
                spec.problem(
                    key,
                    value,
                    None,
                    ProblemKind::Legacy {
                        current: current.to_owned(),
                    },
                );
            }
            spec.read_value(k.field, key, value);
        }
        spec.read_env(env);
        spec.check_consistency();
        spec.warnings = spec.problems.iter().map(ToString::to_string).collect();
        spec
    }

    /// [`ImageSpec::read`] without an environment, in the old signature:
    /// never fails any more (problems are in [`ImageSpec::problems`]).
    pub fn from_annotations<'a, I>(annotations: I) -> Result<ImageSpec, AnnotationError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        Ok(Self::read(annotations, std::iter::empty()))
    }

    /// Whether a requirement hpcc checks was read from the image's
    /// annotations: a key hpcc knows, that feeds a check, whose value was
    /// read. The one definition behind `unannotated = "refuse"` (every
    /// entry point decides through [`crate::matcher::evaluate`]).
    ///
    /// What does not count, because nothing could be checked with it: no
    /// key, unknown keys (whatever "did you mean" suggests), look-alikes
    /// (other case, script, invisible characters, a trailing space, the
    /// singular `org.supercontainer.`), documentation and informational
    /// keys, the CPU mode alone, a known key whose value could not be read
    /// or said nothing (`none`, `unknown`, only unknown list entries), and
    /// the image's environment (`NVIDIA_REQUIRE_CUDA` is checked, but is
    /// not an annotation). A fact is recorded in [`ImageSpec::sources`]
    /// only when its value was read, so that map decides.
    pub fn has_checkable_requirement(&self) -> bool {
        self.sources
            .iter()
            .any(|(field, key)| field.counts() && !key.starts_with(ENV_SOURCE))
    }

    /// Whether the image carries a key hpcc knows that feeds a check,
    /// read or not: the checks then run (an unreadable value has its
    /// cost there), whatever [`ImageSpec::has_checkable_requirement`] says.
    pub fn has_known_keys(&self) -> bool {
        self.known_keys > 0
    }

    /// The keys of [`ImageSpec::seen_keys`], each with why it gives hpcc
    /// nothing to check (its problem, with the "did you mean" hint), for
    /// the `unannotated` finding and refusal. Escaped: keys with every
    /// non-ASCII character as an escape.
    pub fn uncheckable_keys(&self) -> Vec<String> {
        self.seen_keys
            .iter()
            .map(|key| {
                let text = match self.problems.iter().find(|p| &p.key == key) {
                    Some(p) => p.to_string(),
                    None if key.starts_with(keys::DOCS_PREFIX) => {
                        format!("{}: documentation", crate::text::escape_key(key))
                    }
                    None => format!(
                        "{}: gives nothing hpcc checks",
                        crate::text::escape_key(key)
                    ),
                };
                crate::text::escape(&text)
            })
            .collect()
    }

    /// Whether the image's environment said something hpcc checks.
    pub fn has_env_facts(&self) -> bool {
        self.nvidia_require.is_some()
    }

    /// Problems of one fact.
    pub fn problems_of(&self, field: Field) -> impl Iterator<Item = &KeyProblem> {
        self.problems.iter().filter(move |p| p.field == Some(field))
    }

    /// Whether a key of this fact was given but its value is lost
    /// (unreadable or contradicted).
    pub fn value_lost(&self, field: Field) -> bool {
        self.problems_of(field).any(KeyProblem::loses_value)
    }

    /// Whether host libraries (glibc builds) may be put into the image: not
    /// into a musl image, nor one whose libc could not be read.
    pub fn takes_host_libraries(&self) -> Result<(), NoHostLibraries> {
        if self.libc == Some(LibcImplementation::Musl) {
            return Err(NoHostLibraries::Musl);
        }
        if self.value_lost(Field::Libc) {
            return Err(NoHostLibraries::LibcUnreadable);
        }
        Ok(())
    }

    /// The MPI families the image declares (more than one contradicts).
    pub fn mpi_families(&self) -> Vec<hpcc_config::MpiAbi> {
        let mut f: Vec<hpcc_config::MpiAbi> = Vec::new();
        for a in self.mpi_implementations.iter().filter_map(|m| m.abi()) {
            if !f.contains(&a) {
                f.push(a);
            }
        }
        f
    }

    fn problem(&mut self, key: &str, value: &str, field: Option<Field>, problem: ProblemKind) {
        self.problems
            .push(KeyProblem::new(key, value, field, problem));
    }

    fn unreadable(
        &mut self,
        key: &str,
        value: &str,
        field: Field,
        e: (ValueError, Option<String>),
    ) {
        self.problem(
            key,
            value,
            Some(field),
            ProblemKind::Unreadable {
                error: e.0,
                suggestion: e.1,
            },
        );
    }

    fn conflict(&mut self, key: &str, value: &str, field: Field, other_value: String) {
        let other_key = self.sources.get(&field).cloned().unwrap_or_default();
        self.problem(
            key,
            value,
            Some(field),
            ProblemKind::Conflict {
                other_key,
                other_value: shorten(&other_value),
            },
        );
    }

    fn read_doc(&mut self, key: &str, value: &str) {
        let name = key[keys::DOCS_PREFIX.len()..].to_owned();
        if value.len() > MAX_DOC_BYTES {
            return self.unreadable(
                key,
                value,
                Field::Doc,
                (
                    ValueError::TooLong {
                        limit: MAX_DOC_BYTES,
                    },
                    None,
                ),
            );
        }
        if name.ends_with(".link") {
            let v = value.trim();
            if !(v.starts_with("https://") || v.starts_with("http://")) || v.len() > MAX_VALUE_BYTES
            {
                return self.unreadable(key, value, Field::Doc, (ValueError::NotHttpUrl, None));
            }
            self.docs.insert(name, Doc::Link(v.to_owned()));
        } else {
            self.docs.insert(name, Doc::Base64(value.to_owned()));
        }
    }

    /// Sets a single-valued fact: the first key (by priority) wins; a
    /// different value from a later key is a conflict.
    fn set<T: PartialEq + fmt::Display>(
        &mut self,
        field: Field,
        key: &str,
        value: &str,
        slot: impl Fn(&mut ImageSpec) -> &mut Option<T>,
        v: T,
    ) {
        let state = match slot(self) {
            Some(old) if *old != v => Some(Some(old.to_string())),
            Some(_) => Some(None),
            None => None,
        };
        match state {
            Some(Some(old)) => self.conflict(key, value, field, old),
            Some(None) => {}
            None => {
                *slot(self) = Some(v);
                self.sources.insert(field, key.to_owned());
            }
        }
    }

    /// Sets a minimum requirement: two keys that disagree are a conflict,
    /// and the higher one is kept (the safe one to check).
    fn set_min(
        &mut self,
        field: Field,
        key: &str,
        value: &str,
        slot: impl Fn(&mut ImageSpec) -> &mut Option<Version>,
        v: Version,
    ) {
        match slot(self).clone() {
            Some(old) if old != v => {
                self.conflict(key, value, field, old.to_string());
                if v > old {
                    *slot(self) = Some(v);
                    self.sources.insert(field, key.to_owned());
                }
            }
            Some(_) => {}
            None => {
                *slot(self) = Some(v);
                self.sources.insert(field, key.to_owned());
            }
        }
    }

    fn read_value(&mut self, field: Field, key: &str, value: &str) {
        if value.len() > MAX_VALUE_BYTES {
            return self.unreadable(
                key,
                value,
                field,
                (
                    ValueError::TooLong {
                        limit: MAX_VALUE_BYTES,
                    },
                    None,
                ),
            );
        }
        if value.contains('\0') {
            return self.unreadable(key, value, field, (ValueError::Nul, None));
        }
        let version = |v: &str| Version::parse(v).map_err(|_| (ValueError::NotAVersion, None));
        match field {
            Field::CpuMode => match CpuMode::parse(value) {
                Ok(m) => self.set(field, key, value, |s| &mut s.cpu_mode, m),
                Err(e) => self.unreadable(key, value, field, e),
            },
            Field::CpuTarget => match CpuTarget::parse(value) {
                Ok(t) => self.add_cpu_target(key, value, t),
                Err(e) => self.unreadable(key, value, field, e),
            },
            Field::NvidiaDriver => match version(value) {
                Ok(v) => self.set_min(field, key, value, |s| &mut s.nvidia_driver, v),
                Err(e) => self.unreadable(key, value, field, e),
            },
            Field::Cuda => match version(value) {
                Ok(v) => self.set_min(field, key, value, |s| &mut s.cuda, v),
                Err(e) => self.unreadable(key, value, field, e),
            },
            Field::GpuArchitectures => {
                for entry in self.list(key, value, field) {
                    match SmArch::parse(&entry) {
                        Ok(a) if !self.gpu_architectures.contains(&a) => {
                            self.gpu_architectures.push(a);
                            self.sources.insert(field, key.to_owned());
                        }
                        Ok(_) => {}
                        Err(error) => self.problem(
                            key,
                            value,
                            Some(field),
                            ProblemKind::UnknownEntry {
                                entry: shorten(&entry),
                                error,
                                suggestion: None,
                            },
                        ),
                    }
                }
            }
            Field::GpuNeed => {
                let parsed = if key == "org.supercontainers.gpu" {
                    GpuNeed::parse_api(value)
                } else {
                    GpuNeed::parse_yes_no(value).map(Some)
                };
                match parsed {
                    Ok(Some(n)) => match &self.gpu {
                        Some(old) if *old != n => {
                            let old = old.to_string();
                            self.conflict(key, value, field, old);
                        }
                        Some(_) => {}
                        None => {
                            self.gpu = Some(n);
                            self.sources.insert(field, key.to_owned());
                        }
                    },
                    Ok(None) => {}
                    Err(e) => self.unreadable(key, value, field, (e, None)),
                }
            }
            Field::NvidiaRequire => {}
            Field::MpiImplementation => match MpiImplementation::parse(value) {
                Ok(MpiValue::Is(m)) => self.add_mpi(key, value, m),
                Ok(MpiValue::Nothing) => {}
                Err(e) => self.unreadable(key, value, field, e),
            },
            Field::MpiVersion => match version(value) {
                Ok(v) => {
                    self.set(field, key, value, |s| &mut s.mpi_version, v);
                    // `openmpi.version`/`mpich.version` also say which MPI.
                    let implied = match key {
                        "org.supercontainers.openmpi.version" => Some(MpiImplementation::Openmpi),
                        "org.supercontainers.mpich.version" => Some(MpiImplementation::Mpich),
                        _ => None,
                    };
                    if let Some(m) = implied {
                        self.add_mpi(key, value, m);
                    }
                }
                Err(e) => self.unreadable(key, value, field, e),
            },
            Field::MpiAbiVersion => match version(value) {
                Ok(v) => self.set(field, key, value, |s| &mut s.mpi_abi_version, v),
                Err(e) => self.unreadable(key, value, field, e),
            },
            Field::CommFrameworks => {
                for entry in self.list(key, value, field) {
                    match CommFramework::parse(&entry) {
                        Ok(c) if !self.comm_frameworks.contains(&c) => self.comm_frameworks.push(c),
                        Ok(_) => {}
                        Err((error, suggestion)) => self.problem(
                            key,
                            value,
                            Some(field),
                            ProblemKind::UnknownEntry {
                                entry: shorten(&entry),
                                error,
                                suggestion,
                            },
                        ),
                    }
                }
            }
            Field::LibfabricAbi => match version(value) {
                Ok(v) => self.set_min(field, key, value, |s| &mut s.libfabric_abi, v),
                Err(e) => self.unreadable(key, value, field, e),
            },
            Field::MpiOptimization => {
                if let Some(w) = self.words(key, value, field).into_iter().next() {
                    self.set(field, key, value, |s| &mut s.mpi_optimization, w)
                }
            }
            Field::PortabilityModes => {
                for entry in self.list(key, value, field) {
                    match PortabilityMode::parse(&entry) {
                        Ok(ModeValue::Is(m)) => {
                            if !self.portability_modes.contains(&m) {
                                self.portability_modes.push(m);
                                self.sources.insert(field, key.to_owned());
                            }
                        }
                        Ok(ModeValue::Undefined) => self.problem(
                            key,
                            value,
                            Some(field),
                            ProblemKind::Undefined {
                                entry: shorten(&entry),
                                suggestion: Some("mpi_replace".into()),
                            },
                        ),
                        Err((error, suggestion)) => self.problem(
                            key,
                            value,
                            Some(field),
                            ProblemKind::UnknownEntry {
                                entry: shorten(&entry),
                                error,
                                suggestion,
                            },
                        ),
                    }
                }
            }
            Field::Libc => match LibcImplementation::parse(value) {
                Ok(l) => self.set(field, key, value, |s| &mut s.libc, l),
                Err(e) => self.unreadable(key, value, field, e),
            },
            Field::Glibc => match version(value) {
                Ok(v) => self.set(field, key, value, |s| &mut s.glibc, v),
                Err(e) => self.unreadable(key, value, field, e),
            },
            Field::Python => match version(value) {
                Ok(v) => self.set(field, key, value, |s| &mut s.python, v),
                Err(e) => self.unreadable(key, value, field, e),
            },
            Field::KernelVersion => match version(value) {
                Ok(v) => self.set(field, key, value, |s| &mut s.kernel_version, v),
                Err(e) => self.unreadable(key, value, field, e),
            },
            Field::HostKernelMin => match version(value) {
                Ok(v) => self.set_min(field, key, value, |s| &mut s.host_kernel_min, v),
                Err(e) => self.unreadable(key, value, field, e),
            },
            Field::Shells => self.shells = self.words(key, value, field),
            Field::Tools => self.tools = self.words(key, value, field),
            Field::KernelExpectations => {
                let words = self.words(key, value, field);
                // Only an entry that was read is a requirement: an empty
                // value or only unreadable entries give the check nothing.
                if !words.is_empty() {
                    self.sources.insert(field, key.to_owned());
                }
                self.kernel_expectations = words;
            }
            Field::PathExtra => {
                let paths = self.list(key, value, field);
                if let Some(p) = paths.iter().find(|p| !p.starts_with('/')) {
                    let p = p.clone();
                    return self.problem(
                        key,
                        value,
                        Some(field),
                        ProblemKind::UnknownEntry {
                            entry: shorten(&p),
                            error: ValueError::NotAbsolutePath,
                            suggestion: None,
                        },
                    );
                }
                self.path_extra = paths;
            }
            Field::Doc => self.read_doc(key, value),
            Field::Info => {
                let v: String = value.trim().chars().take(256).collect();
                self.info.insert(key.to_owned(), v);
            }
        }
    }

    /// A list value: comma, space or semicolon separated, bounded.
    fn list(&mut self, key: &str, value: &str, field: Field) -> Vec<String> {
        let items: Vec<String> = value
            .split([',', ' ', ';'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .take(MAX_LIST + 1)
            .map(str::to_owned)
            .collect();
        if items.len() > MAX_LIST {
            self.unreadable(
                key,
                value,
                field,
                (ValueError::TooManyEntries { limit: MAX_LIST }, None),
            );
            return Vec::new();
        }
        if items.is_empty() {
            self.unreadable(key, value, field, (ValueError::Empty, None));
        }
        items
    }

    /// A list of plain words (tool names, kernel modules).
    fn words(&mut self, key: &str, value: &str, field: Field) -> Vec<String> {
        let items = self.list(key, value, field);
        let (good, bad): (Vec<String>, Vec<String>) = items.into_iter().partition(|i| {
            i.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+/:".contains(c))
        });
        for b in bad {
            self.problem(
                key,
                value,
                Some(field),
                ProblemKind::UnknownEntry {
                    entry: shorten(&b),
                    error: ValueError::BadCharacters,
                    suggestion: None,
                },
            );
        }
        good
    }

    /// Adds a CPU target: a target another one covers adds nothing; a
    /// stricter one replaces it; one of another platform contradicts.
    fn add_cpu_target(&mut self, key: &str, value: &str, t: CpuTarget) {
        if let Some(other) = self.cpu_targets.iter().find(|e| e.family() != t.family()) {
            let other = other.to_string();
            return self.conflict(key, value, Field::CpuTarget, other);
        }
        if self.cpu_targets.iter().any(|e| e.covers(&t)) {
            return;
        }
        let before = self.cpu_targets.len();
        self.cpu_targets.retain(|e| !t.covers(e));
        if self.cpu_targets.len() == before && !self.cpu_targets.is_empty() {
            // Same platform, neither covers the other: both are checked.
            let other = self.cpu_targets[0].to_string();
            self.conflict(key, value, Field::CpuTarget, other);
        } else {
            self.sources.insert(Field::CpuTarget, key.to_owned());
        }
        self.cpu_targets.push(t);
        self.cpu_target = self.cpu_targets.first().cloned();
    }

    /// Adds an MPI implementation: two of different ABI families
    /// contradict each other.
    fn add_mpi(&mut self, key: &str, value: &str, m: MpiImplementation) {
        if self.mpi_implementations.contains(&m) {
            return;
        }
        if let Some(first) = self.mpi_implementation {
            if first.abi() != m.abi() {
                self.conflict(key, value, Field::MpiImplementation, first.to_string());
            }
        } else {
            self.mpi_implementation = Some(m);
            self.sources
                .insert(Field::MpiImplementation, key.to_owned());
        }
        self.mpi_implementations.push(m);
    }

    fn read_env<'a>(&mut self, env: impl IntoIterator<Item = &'a str>) {
        let mut require = None;
        let mut disabled = false;
        for entry in env.into_iter().take(MAX_SCANNED) {
            let Some((name, value)) = entry.split_once('=') else {
                continue;
            };
            if name == keys::ENV_DISABLE_REQUIRE {
                disabled = matches!(
                    value.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes"
                );
            } else if name == keys::ENV_REQUIRE_CUDA {
                require = Some(value);
            }
        }
        let (Some(value), false) = (require, disabled) else {
            return;
        };
        let key = format!("{ENV_SOURCE}{}", keys::ENV_REQUIRE_CUDA);
        if value.len() > MAX_VALUE_BYTES {
            return self.unreadable(
                &key,
                value,
                Field::NvidiaRequire,
                (
                    ValueError::TooLong {
                        limit: MAX_VALUE_BYTES,
                    },
                    None,
                ),
            );
        }
        match NvidiaRequire::parse(value) {
            Ok(r) => {
                self.nvidia_require = Some(r);
                self.sources.insert(Field::NvidiaRequire, key);
            }
            Err(e) => self.unreadable(&key, value, Field::NvidiaRequire, (e, None)),
        }
    }

    fn check_consistency(&mut self) {
        if let (Some(mode), Some(target)) = (self.cpu_mode, self.cpu_target.clone()) {
            if !mode.describes(&target) {
                let key = self
                    .sources
                    .get(&Field::CpuMode)
                    .cloned()
                    .unwrap_or_default();
                self.problem(
                    &key,
                    mode.as_str(),
                    Some(Field::CpuMode),
                    ProblemKind::ModeMismatch {
                        mode,
                        target: target.name().to_owned(),
                    },
                );
            }
        }
        if self.glibc.is_some() && self.libc == Some(LibcImplementation::Musl) {
            let key = self.sources.get(&Field::Glibc).cloned().unwrap_or_default();
            let v = self.glibc.take().map(|v| v.to_string()).unwrap_or_default();
            self.problem(&key, &v, Some(Field::Glibc), ProblemKind::GlibcOnMusl);
        }
    }
}

/// How many keys [`ImageSpec::seen_keys`] keeps.
pub const MAX_SEEN: usize = 8;

/// How [`ImageSpec::sources`] names a fact read from the environment.
const ENV_SOURCE: &str = "env ";

/// `s` cut to [`SHOWN`] bytes with a note of its size.
fn shorten(s: &str) -> String {
    if s.len() <= SHOWN {
        return s.to_owned();
    }
    let end = s.floor_char_boundary_compat(SHOWN);
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// `str::floor_char_boundary` for the toolchains this crate supports.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, i: usize) -> usize {
        if i >= self.len() {
            return self.len();
        }
        let mut end = i;
        while !self.is_char_boundary(end) {
            end -= 1;
        }
        end
    }
}

#[cfg(test)]
mod tests;
