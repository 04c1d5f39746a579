//! The `org.supercontainers.*` annotations of the HPC container conformance
//! proposal, parsed into typed values.
//!
//! Annotations are hostile input: every value is bounded in size and parsed
//! strictly, and a bad one is an [`AnnotationError`] naming the key and the
//! value. Keys outside `org.supercontainers.` are ignored; unknown keys inside
//! it are kept as warnings, since images are annotated by tools newer than us.

use crate::version::Version;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The prefix of every annotation hpcc reads.
pub const PREFIX: &str = "org.supercontainers.";

/// Largest accepted value of an ordinary annotation.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Largest accepted value of a `docs.*` annotation (base64 markdown).
pub const MAX_DOC_BYTES: usize = 256 * 1024;
/// Most `org.supercontainers.*` keys read from one image.
pub const MAX_KEYS: usize = 256;
/// Most entries in a list-valued annotation.
pub const MAX_LIST: usize = 32;

/// Why an annotation was rejected.
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

impl AnnotationError {
    fn new(key: &str, value: &str, reason: impl Into<String>) -> Self {
        let value = if value.len() > 80 {
            let mut end = 80;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}... ({} bytes)", &value[..end], value.len())
        } else {
            value.to_owned()
        };
        AnnotationError {
            key: key.to_owned(),
            value,
            reason: reason.into(),
        }
    }
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

/// A CPU target: an archspec microarchitecture name (platforms and generic
/// levels are archspec targets too). Only names archspec knows are accepted,
/// so the matcher can always compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CpuTarget(String);

impl CpuTarget {
    /// Validates `name` against archspec's table (`amd64`/`arm64` are taken
    /// as the OCI spellings of `x86_64`/`aarch64`).
    pub fn parse(name: &str) -> Result<CpuTarget, String> {
        let name = match name.trim() {
            "amd64" => "x86_64",
            "arm64" => "aarch64",
            other => other,
        };
        if archspec::cpu::Microarchitecture::known_targets().contains_key(name) {
            Ok(CpuTarget(name.to_owned()))
        } else {
            Err("not a CPU target archspec knows (e.g. x86_64, x86_64_v3, skylake_avx512, zen3, aarch64, neoverse_v2)".into())
        }
    }

    /// The archspec name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The archspec entry; always present since [`CpuTarget::parse`] checked.
    pub fn microarchitecture(&self) -> std::sync::Arc<archspec::cpu::Microarchitecture> {
        archspec::cpu::Microarchitecture::known_targets()[&self.0].clone()
    }

    /// The platform this target belongs to (`x86_64`, `aarch64`, ...).
    pub fn family(&self) -> String {
        self.microarchitecture().family().name().to_owned()
    }
}

impl fmt::Display for CpuTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An NVIDIA GPU architecture (`sm_80`), kept as its compute capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SmArch {
    /// Compute capability major.
    pub major: u32,
    /// Compute capability minor.
    pub minor: u32,
}

impl SmArch {
    /// Parses `sm_80`, `sm_90a`, `compute_86` or `8.0`.
    pub fn parse(s: &str) -> Result<SmArch, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is not a GPU architecture (expected sm_XY, e.g. sm_80)");
        if let Some((maj, min)) = s.split_once('.') {
            return Ok(SmArch {
                major: maj.parse().map_err(|_| bad())?,
                minor: min.parse().map_err(|_| bad())?,
            });
        }
        let digits = s
            .strip_prefix("sm_")
            .or_else(|| s.strip_prefix("compute_"))
            .ok_or_else(bad)?;
        let digits = digits.trim_end_matches(['a', 'f']);
        if digits.len() < 2 || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (maj, min) = digits.split_at(digits.len() - 1);
        Ok(SmArch {
            major: maj.parse().map_err(|_| bad())?,
            minor: min.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for SmArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sm_{}{}", self.major, self.minor)
    }
}

/// `org.supercontainers.mpi.implementation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MpiImplementation {
    /// Open MPI.
    Openmpi,
    /// MPICH.
    Mpich,
    /// GROMACS thread-MPI: no MPI library to replace.
    Threadmpi,
    /// Intel MPI (MPICH ABI).
    Intelmpi,
    /// Cray MPICH (MPICH ABI).
    CrayMpich,
    /// MVAPICH (MPICH ABI).
    Mvapich,
}

impl MpiImplementation {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "openmpi" | "open-mpi" | "ompi" => Self::Openmpi,
            "mpich" => Self::Mpich,
            "threadmpi" | "thread-mpi" | "tmpi" => Self::Threadmpi,
            "intelmpi" | "intel-mpi" | "impi" => Self::Intelmpi,
            "cray-mpich" | "craympich" | "cray_mpich" => Self::CrayMpich,
            "mvapich" | "mvapich2" => Self::Mvapich,
            _ => return Err("unknown MPI implementation (expected openmpi, mpich, threadmpi, intelmpi, cray-mpich or mvapich)".into()),
        })
    }

    /// The ABI family a host MPI must belong to for replacement; `None` for
    /// thread-MPI, which links no MPI library.
    pub fn abi(self) -> Option<hpcc_config::MpiAbi> {
        match self {
            Self::Openmpi => Some(hpcc_config::MpiAbi::Openmpi),
            Self::Mpich | Self::Intelmpi | Self::CrayMpich | Self::Mvapich => {
                Some(hpcc_config::MpiAbi::Mpich)
            }
            Self::Threadmpi => None,
        }
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openmpi => "openmpi",
            Self::Mpich => "mpich",
            Self::Threadmpi => "threadmpi",
            Self::Intelmpi => "intelmpi",
            Self::CrayMpich => "cray-mpich",
            Self::Mvapich => "mvapich",
        }
    }
}

impl fmt::Display for MpiImplementation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `org.supercontainers.communication.framework`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommFramework {
    /// UCX.
    Ucx,
    /// libfabric (OFI).
    Libfabric,
}

/// `org.supercontainers.mpi.portability.mode`: how the image may be tweaked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortabilityMode {
    /// Replace the image's MPI with the host's (`mpi_replace`, also spelled
    /// `mpich_replace` in published collections).
    MpiReplace,
    /// Inject the host's libfabric.
    LibfabricInject,
    /// Replace the image's UCX with the host's.
    UcxReplace,
}

impl PortabilityMode {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s.trim() {
            "mpi_replace" | "mpich_replace" | "openmpi_replace" => Self::MpiReplace,
            "libfabric_inject" => Self::LibfabricInject,
            "ucx_replace" => Self::UcxReplace,
            _ => return Err(
                "unknown portability mode (expected mpi_replace, libfabric_inject or ucx_replace)"
                    .into(),
            ),
        })
    }

    /// The annotation spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MpiReplace => "mpi_replace",
            Self::LibfabricInject => "libfabric_inject",
            Self::UcxReplace => "ucx_replace",
        }
    }
}

impl fmt::Display for PortabilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `org.supercontainers.libc.implementation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LibcImplementation {
    /// GNU libc.
    Glibc,
    /// musl.
    Musl,
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

impl Doc {
    /// Decodes a base64 document (bounded by [`MAX_DOC_BYTES`] on input).
    pub fn decode(&self) -> Result<String, String> {
        match self {
            Doc::Link(l) => Ok(l.clone()),
            Doc::Base64(b) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|e| format!("invalid base64: {e}"))?;
                String::from_utf8(bytes).map_err(|_| "decoded document is not UTF-8".into())
            }
        }
    }
}

/// One recognised annotation with its typed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "key", content = "value", rename_all = "snake_case")]
pub enum Annotation {
    /// `hardware.cpu.optimized.mode`
    CpuMode(CpuMode),
    /// `hardware.cpu.optimized.version` (alias `...architecture`)
    CpuTarget(CpuTarget),
    /// `hardware.gpu.nvidia.driver.version`
    NvidiaDriver(Version),
    /// `hardware.gpu.nvidia.cuda.version`
    Cuda(Version),
    /// `hardware.gpu.nvidia.architecture`
    GpuArchitectures(Vec<SmArch>),
    /// `mpi.implementation` (alias `mpi.provider`)
    MpiImplementation(MpiImplementation),
    /// `mpi.version`, `openmpi.version`, `mpich.version`
    MpiVersion(Version),
    /// `mpi.abi.version` (alias `mpich.abi.version`)
    MpiAbiVersion(Version),
    /// `communication.framework`
    CommFrameworks(Vec<CommFramework>),
    /// `libfabric.abi.version`
    LibfabricAbi(Version),
    /// `mpi.portability.optimization` (alias `...optimized`)
    MpiOptimization(String),
    /// `mpi.portability.mode`
    PortabilityModes(Vec<PortabilityMode>),
    /// `libc.implementation`
    Libc(LibcImplementation),
    /// `glibc.version`
    Glibc(Version),
    /// `python.version`
    Python(Version),
    /// `shell.implementation`
    Shells(Vec<String>),
    /// `tools.includes`
    Tools(Vec<String>),
    /// `path.extra`
    PathExtra(Vec<String>),
    /// `kernel.version`: the kernel the image was built or tested on.
    KernelVersion(Version),
    /// `host.kernel.version.min`
    HostKernelMin(Version),
    /// `host.kernel.modules.expectation`
    KernelExpectations(Vec<String>),
    /// `docs.*`: the part after `docs.` and the document.
    Doc(String, Doc),
}

fn list(key: &str, value: &str) -> Result<Vec<String>, AnnotationError> {
    let items: Vec<String> = value
        .split([',', ' ', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if items.len() > MAX_LIST {
        return Err(AnnotationError::new(
            key,
            value,
            format!("more than {MAX_LIST} entries"),
        ));
    }
    if items.is_empty() {
        return Err(AnnotationError::new(key, value, "empty list"));
    }
    Ok(items)
}

fn word_list(key: &str, value: &str) -> Result<Vec<String>, AnnotationError> {
    let items = list(key, value)?;
    for i in &items {
        if !i
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+/:".contains(c))
        {
            return Err(AnnotationError::new(
                key,
                value,
                format!("entry {i:?} has characters outside [A-Za-z0-9-_.+/:]"),
            ));
        }
    }
    Ok(items)
}

impl Annotation {
    /// Parses one key/value. `Ok(None)`: the key is not one hpcc knows (the
    /// caller decides whether that is a warning).
    pub fn parse(key: &str, value: &str) -> Result<Option<Annotation>, AnnotationError> {
        let Some(short) = key.strip_prefix(PREFIX) else {
            return Ok(None);
        };
        let limit = if short.starts_with("docs.") {
            MAX_DOC_BYTES
        } else {
            MAX_VALUE_BYTES
        };
        if value.len() > limit {
            return Err(AnnotationError::new(
                key,
                value,
                format!("value longer than {limit} bytes"),
            ));
        }
        if value.contains('\0') {
            return Err(AnnotationError::new(
                key,
                value,
                "value contains a NUL byte",
            ));
        }
        let err = |reason: String| AnnotationError::new(key, value, reason);
        let version = || Version::parse(value).map_err(|e| err(e.to_string()));
        let a = match short {
            "hardware.cpu.optimized.mode" => Annotation::CpuMode(match value.trim() {
                "architecture" => CpuMode::Architecture,
                "genericMicro" | "generic_micro" | "genericmicro" => CpuMode::GenericMicro,
                "microarchitecture" => CpuMode::Microarchitecture,
                _ => {
                    return Err(err(
                        "expected architecture, genericMicro or microarchitecture".into(),
                    ))
                }
            }),
            "hardware.cpu.optimized.version" | "hardware.cpu.optimized.architecture" => {
                Annotation::CpuTarget(CpuTarget::parse(value).map_err(err)?)
            }
            "hardware.gpu.nvidia.driver.version" => Annotation::NvidiaDriver(version()?),
            "hardware.gpu.nvidia.cuda.version" => Annotation::Cuda(version()?),
            "hardware.gpu.nvidia.architecture" => Annotation::GpuArchitectures(
                list(key, value)?
                    .iter()
                    .map(|s| SmArch::parse(s))
                    .collect::<Result<_, _>>()
                    .map_err(err)?,
            ),
            "mpi.implementation" | "mpi.provider" => {
                Annotation::MpiImplementation(MpiImplementation::parse(value).map_err(err)?)
            }
            "mpi.version" | "openmpi.version" | "mpich.version" => {
                Annotation::MpiVersion(version()?)
            }
            "mpi.abi.version" | "mpich.abi.version" => Annotation::MpiAbiVersion(version()?),
            "communication.framework" => Annotation::CommFrameworks(
                list(key, value)?
                    .iter()
                    .map(|s| match s.to_ascii_lowercase().as_str() {
                        "ucx" => Ok(CommFramework::Ucx),
                        "libfabric" | "libfabrics" | "ofi" => Ok(CommFramework::Libfabric),
                        _ => Err(err(format!(
                            "unknown framework {s:?} (expected ucx or libfabric)"
                        ))),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "libfabric.abi.version" => Annotation::LibfabricAbi(version()?),
            "mpi.portability.optimization" | "mpi.portability.optimized" => {
                Annotation::MpiOptimization(word_list(key, value)?.join(","))
            }
            "mpi.portability.mode" => {
                let mut modes = list(key, value)?
                    .iter()
                    .map(|s| PortabilityMode::parse(s))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?;
                modes.sort();
                modes.dedup();
                Annotation::PortabilityModes(modes)
            }
            "libc.implementation" => Annotation::Libc(match value.trim() {
                "glibc" | "gnu" => LibcImplementation::Glibc,
                "musl" => LibcImplementation::Musl,
                _ => return Err(err("expected glibc or musl".into())),
            }),
            "glibc.version" => Annotation::Glibc(version()?),
            "python.version" => Annotation::Python(version()?),
            "shell.implementation" => Annotation::Shells(word_list(key, value)?),
            "tools.includes" => Annotation::Tools(word_list(key, value)?),
            "path.extra" => {
                let paths = list(key, value)?;
                if let Some(p) = paths.iter().find(|p| !p.starts_with('/')) {
                    return Err(err(format!("{p:?} is not an absolute path")));
                }
                Annotation::PathExtra(paths)
            }
            "kernel.version" => Annotation::KernelVersion(version()?),
            "host.kernel.version.min" => Annotation::HostKernelMin(version()?),
            "host.kernel.modules.expectation" => {
                Annotation::KernelExpectations(word_list(key, value)?)
            }
            s if s.starts_with("docs.") => {
                let name = s["docs.".len()..].to_owned();
                if name.ends_with(".link") {
                    let v = value.trim();
                    if !(v.starts_with("https://") || v.starts_with("http://")) {
                        return Err(err("a docs link must be an http(s) URL".into()));
                    }
                    Annotation::Doc(name, Doc::Link(v.to_owned()))
                } else {
                    Annotation::Doc(name, Doc::Base64(value.to_owned()))
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(a))
    }
}

/// Everything an image says about itself, folded from its annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// CPU build mode.
    pub cpu_mode: Option<CpuMode>,
    /// CPU target.
    pub cpu_target: Option<CpuTarget>,
    /// Minimum NVIDIA driver.
    pub nvidia_driver: Option<Version>,
    /// CUDA version built against.
    pub cuda: Option<Version>,
    /// GPU architectures built for.
    pub gpu_architectures: Vec<SmArch>,
    /// MPI implementation.
    pub mpi_implementation: Option<MpiImplementation>,
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
    /// Tweaks the image accepts.
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
    /// How many `org.supercontainers.*` keys the image carried.
    pub annotated_keys: usize,
    /// Problems that did not stop parsing: unknown keys, aliases, conflicts.
    pub warnings: Vec<String>,
}

impl ImageSpec {
    /// Parses the annotations of an image (or `config.json`). Non-hpcc keys
    /// are ignored; the first invalid hpcc key is an error.
    pub fn from_annotations<'a, I>(annotations: I) -> Result<ImageSpec, AnnotationError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut spec = ImageSpec::default();
        for (key, value) in annotations {
            if !key.starts_with(PREFIX) {
                continue;
            }
            spec.annotated_keys += 1;
            if spec.annotated_keys > MAX_KEYS {
                return Err(AnnotationError::new(
                    key,
                    value,
                    format!("the image carries more than {MAX_KEYS} {PREFIX}* annotations"),
                ));
            }
            match Annotation::parse(key, value)? {
                Some(a) => spec.fold(key, a),
                None => spec
                    .warnings
                    .push(format!("unknown annotation {key} ignored")),
            }
        }
        spec.check_consistency();
        Ok(spec)
    }

    /// Whether the image carries any `org.supercontainers.*` key.
    pub fn is_annotated(&self) -> bool {
        self.annotated_keys > 0
    }

    fn set<T: PartialEq + fmt::Debug>(
        warnings: &mut Vec<String>,
        key: &str,
        slot: &mut Option<T>,
        v: T,
    ) {
        if let Some(old) = slot.as_ref() {
            if *old != v {
                warnings.push(format!(
                    "{key}: {v:?} conflicts with an alias that said {old:?}; keeping {v:?}"
                ));
            }
        }
        *slot = Some(v);
    }

    fn fold(&mut self, key: &str, a: Annotation) {
        let w = &mut self.warnings;
        match a {
            Annotation::CpuMode(m) => Self::set(w, key, &mut self.cpu_mode, m),
            Annotation::CpuTarget(t) => Self::set(w, key, &mut self.cpu_target, t),
            Annotation::NvidiaDriver(v) => Self::set(w, key, &mut self.nvidia_driver, v),
            Annotation::Cuda(v) => Self::set(w, key, &mut self.cuda, v),
            Annotation::GpuArchitectures(v) => self.gpu_architectures = v,
            Annotation::MpiImplementation(m) => Self::set(w, key, &mut self.mpi_implementation, m),
            Annotation::MpiVersion(v) => Self::set(w, key, &mut self.mpi_version, v),
            Annotation::MpiAbiVersion(v) => Self::set(w, key, &mut self.mpi_abi_version, v),
            Annotation::CommFrameworks(v) => self.comm_frameworks = v,
            Annotation::LibfabricAbi(v) => Self::set(w, key, &mut self.libfabric_abi, v),
            Annotation::MpiOptimization(s) => Self::set(w, key, &mut self.mpi_optimization, s),
            Annotation::PortabilityModes(v) => self.portability_modes = v,
            Annotation::Libc(l) => Self::set(w, key, &mut self.libc, l),
            Annotation::Glibc(v) => Self::set(w, key, &mut self.glibc, v),
            Annotation::Python(v) => Self::set(w, key, &mut self.python, v),
            Annotation::Shells(v) => self.shells = v,
            Annotation::Tools(v) => self.tools = v,
            Annotation::PathExtra(v) => self.path_extra = v,
            Annotation::KernelVersion(v) => Self::set(w, key, &mut self.kernel_version, v),
            Annotation::HostKernelMin(v) => Self::set(w, key, &mut self.host_kernel_min, v),
            Annotation::KernelExpectations(v) => self.kernel_expectations = v,
            Annotation::Doc(name, d) => {
                self.docs.insert(name, d);
            }
        }
    }

    fn check_consistency(&mut self) {
        if let (Some(mode), Some(target)) = (self.cpu_mode, &self.cpu_target) {
            let m = target.microarchitecture();
            let is_platform = m.family().name() == m.name();
            let is_generic = m.vendor() == "generic";
            let fits = match mode {
                CpuMode::Architecture => is_platform,
                CpuMode::GenericMicro => is_generic,
                CpuMode::Microarchitecture => !is_platform,
            };
            if !fits {
                self.warnings.push(format!(
                    "{PREFIX}hardware.cpu.optimized.mode={mode:?} does not describe target {target}; the target decides"
                ));
            }
        }
        if self.glibc.is_some() && self.libc == Some(LibcImplementation::Musl) {
            self.warnings.push(format!(
                "{PREFIX}glibc.version is set on a musl image; ignored"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pairs: &[(&str, &str)]) -> Result<ImageSpec, AnnotationError> {
        ImageSpec::from_annotations(pairs.iter().copied())
    }

    #[test]
    fn parses_every_group() {
        let s = spec(&[
            (
                "org.supercontainers.hardware.cpu.optimized.mode",
                "microarchitecture",
            ),
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "skylake_avx512",
            ),
            (
                "org.supercontainers.hardware.gpu.nvidia.driver.version",
                "535.104.05",
            ),
            (
                "org.supercontainers.hardware.gpu.nvidia.cuda.version",
                "12.1",
            ),
            (
                "org.supercontainers.hardware.gpu.nvidia.architecture",
                "sm_80,sm_90",
            ),
            ("org.supercontainers.mpi.implementation", "mpich"),
            ("org.supercontainers.mpich.version", "4.0.2"),
            ("org.supercontainers.mpi.abi.version", "12.0"),
            ("org.supercontainers.communication.framework", "libfabrics"),
            ("org.supercontainers.libfabric.abi.version", "1.6"),
            ("org.supercontainers.mpi.portability.optimization", "stock"),
            (
                "org.supercontainers.mpi.portability.mode",
                "mpi_replace,libfabric_inject",
            ),
            ("org.supercontainers.libc.implementation", "glibc"),
            ("org.supercontainers.glibc.version", "2.35"),
            ("org.supercontainers.python.version", "3.10"),
            ("org.supercontainers.shell.implementation", "bash,sh"),
            ("org.supercontainers.tools.includes", "jq,wget,awscli"),
            ("org.supercontainers.path.extra", "/usr/local/bin"),
            ("org.supercontainers.kernel.version", "5.1"),
            ("org.supercontainers.host.kernel.version.min", "5.1"),
            (
                "org.supercontainers.host.kernel.modules.expectation",
                "user-namespaces",
            ),
            (
                "org.supercontainers.docs.quickstart.link",
                "https://example.org/gmx",
            ),
            ("org.supercontainers.docs.quickstart.base64", "IyBIZWxsbw=="),
            ("org.opencontainers.image.title", "ignored"),
        ])
        .unwrap();
        assert_eq!(s.cpu_target.as_ref().unwrap().name(), "skylake_avx512");
        assert_eq!(s.cpu_target.as_ref().unwrap().family(), "x86_64");
        assert_eq!(
            s.gpu_architectures,
            vec![SmArch { major: 8, minor: 0 }, SmArch { major: 9, minor: 0 }]
        );
        assert_eq!(s.mpi_implementation, Some(MpiImplementation::Mpich));
        assert_eq!(s.comm_frameworks, vec![CommFramework::Libfabric]);
        assert_eq!(
            s.portability_modes,
            vec![
                PortabilityMode::MpiReplace,
                PortabilityMode::LibfabricInject
            ]
        );
        assert_eq!(s.docs["quickstart.base64"].decode().unwrap(), "# Hello");
        assert_eq!(s.annotated_keys, 23);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn collection_spellings_are_accepted() {
        // As published in the MetaHub community collection.
        let s = spec(&[
            ("org.supercontainers.mpi.provider", "mpich"),
            ("org.supercontainers.mpich.abi.version", "12.0"),
            ("org.supercontainers.mpi.portability.optimized", "stock"),
            ("org.supercontainers.mpi.portability.mode", "mpich_replace"),
            (
                "org.supercontainers.hardware.cpu.optimized.architecture",
                "x86_64",
            ),
        ])
        .unwrap();
        assert_eq!(s.portability_modes, vec![PortabilityMode::MpiReplace]);
        assert_eq!(s.mpi_abi_version.unwrap().to_string(), "12.0");
        assert_eq!(s.cpu_target.unwrap().name(), "x86_64");
    }

    #[test]
    fn error_names_key_and_value() {
        let e = spec(&[(
            "org.supercontainers.hardware.cpu.optimized.version",
            "pentium9000",
        )])
        .unwrap_err();
        assert_eq!(e.key, "org.supercontainers.hardware.cpu.optimized.version");
        assert_eq!(e.value, "pentium9000");
        let msg = e.to_string();
        assert!(msg.contains("pentium9000") && msg.contains("cpu.optimized.version"));

        let e = spec(&[("org.supercontainers.mpi.portability.mode", "magic")]).unwrap_err();
        assert!(e.reason.contains("mpi_replace"), "{e}");
        let e = spec(&[(
            "org.supercontainers.hardware.gpu.nvidia.cuda.version",
            "twelve",
        )])
        .unwrap_err();
        assert!(e.to_string().contains("twelve"));
    }

    #[test]
    fn unknown_keys_are_warnings() {
        let s = spec(&[("org.supercontainers.future.thing", "1")]).unwrap();
        assert!(s.is_annotated());
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].contains("future.thing"));
    }

    #[test]
    fn sizes_are_bounded() {
        let big = "x".repeat(MAX_VALUE_BYTES + 1);
        let e = spec(&[("org.supercontainers.tools.includes", &big)]).unwrap_err();
        assert!(e.value.len() < 200, "the error must not echo a huge value");
        let keys: Vec<String> = (0..=MAX_KEYS)
            .map(|i| format!("org.supercontainers.x{i}"))
            .collect();
        let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "1")).collect();
        assert!(ImageSpec::from_annotations(pairs).is_err());
    }

    #[test]
    fn unannotated_image() {
        let s = spec(&[("org.opencontainers.image.title", "busybox")]).unwrap();
        assert!(!s.is_annotated());
    }

    #[test]
    fn mode_target_mismatch_warns() {
        let s = spec(&[
            (
                "org.supercontainers.hardware.cpu.optimized.mode",
                "architecture",
            ),
            ("org.supercontainers.hardware.cpu.optimized.version", "zen3"),
        ])
        .unwrap();
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    }

    #[test]
    fn sm_arch_spellings() {
        assert_eq!(
            SmArch::parse("sm_90a").unwrap(),
            SmArch { major: 9, minor: 0 }
        );
        assert_eq!(
            SmArch::parse("compute_86").unwrap(),
            SmArch { major: 8, minor: 6 }
        );
        assert_eq!(SmArch::parse("8.0").unwrap(), SmArch { major: 8, minor: 0 });
        assert_eq!(
            SmArch::parse("sm_100").unwrap(),
            SmArch {
                major: 10,
                minor: 0
            }
        );
        assert!(SmArch::parse("ampere").is_err());
    }

    #[test]
    fn mpi_families() {
        assert_eq!(
            MpiImplementation::parse("cray-mpich").unwrap().abi(),
            Some(hpcc_config::MpiAbi::Mpich)
        );
        assert_eq!(
            MpiImplementation::parse("openmpi").unwrap().abi(),
            Some(hpcc_config::MpiAbi::Openmpi)
        );
        assert_eq!(MpiImplementation::parse("threadmpi").unwrap().abi(), None);
    }
}
