//! GPU needs: architectures, whether a GPU is needed at all, and NVIDIA's
//! `NVIDIA_REQUIRE_CUDA` expression.

use super::ValueError;
use crate::version::Version;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An NVIDIA GPU architecture (`sm_80`), kept as its compute capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SmArch {
    /// Compute capability major.
    pub major: u32,
    /// Compute capability minor.
    pub minor: u32,
}

impl SmArch {
    /// Parses `sm_80`, `sm_90a`, `compute_86`, `SM80` or `8.0`.
    pub fn parse(s: &str) -> Result<SmArch, ValueError> {
        let lower = s.trim().to_ascii_lowercase();
        let bad = || ValueError::NotAGpuArch;
        if let Some((maj, min)) = lower.split_once('.') {
            if maj.len() > 3 || min.len() > 2 {
                return Err(bad());
            }
            return Ok(SmArch {
                major: maj.parse().map_err(|_| bad())?,
                minor: min.parse().map_err(|_| bad())?,
            });
        }
        let digits = lower
            .strip_prefix("sm_")
            .or_else(|| lower.strip_prefix("sm"))
            .or_else(|| lower.strip_prefix("compute_"))
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

/// Whether the image needs a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuNeed {
    /// Needs a GPU (`hardware.gpu.available=yes`, 2019 `gpu=opencl`).
    Any,
    /// Needs an NVIDIA GPU (2019 `gpu=cuda`).
    Nvidia,
    /// Needs a GPU of another API that hpcc cannot see (2019 `gpu=rocm`).
    Other(String),
    /// Says it needs none (`hardware.gpu.available=no`).
    No,
}

impl GpuNeed {
    /// `yes`/`no` (`true`/`false`, `1`/`0`, `on`/`off`) of
    /// `hardware.gpu.available` and `hardware.gpu.enabled`.
    pub fn parse_yes_no(value: &str) -> Result<GpuNeed, ValueError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "yes" | "y" | "true" | "1" | "on" => Ok(GpuNeed::Any),
            "no" | "n" | "false" | "0" | "off" | "none" => Ok(GpuNeed::No),
            _ => Err(ValueError::NotYesNo),
        }
    }

    /// The 2019 `org.supercontainers.gpu` label: `cuda`, `opencl`, `rocm`,
    /// `unknown` (nothing said).
    pub fn parse_api(value: &str) -> Result<Option<GpuNeed>, ValueError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "cuda" | "nvidia" => Ok(Some(GpuNeed::Nvidia)),
            "opencl" => Ok(Some(GpuNeed::Any)),
            "rocm" | "hip" => Ok(Some(GpuNeed::Other("ROCm".into()))),
            "oneapi" | "level_zero" | "levelzero" | "sycl" => {
                Ok(Some(GpuNeed::Other("oneAPI".into())))
            }
            "unknown" | "none" | "" => Ok(None),
            _ => Err(ValueError::NotAGpuApi),
        }
    }

    /// Whether a GPU is needed at all.
    pub fn needs_gpu(&self) -> bool {
        !matches!(self, GpuNeed::No)
    }
}

impl fmt::Display for GpuNeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuNeed::Any => f.write_str("a GPU"),
            GpuNeed::Nvidia => f.write_str("an NVIDIA GPU"),
            GpuNeed::Other(api) => write!(f, "a {} GPU", crate::text::escape(api)),
            GpuNeed::No => f.write_str("no GPU"),
        }
    }
}

/// What one `NVIDIA_REQUIRE_CUDA` constraint is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequireKey {
    /// CUDA version the driver supports.
    Cuda,
    /// Driver version.
    Driver,
    /// Compute capability.
    Arch,
    /// GPU brand (`tesla`, `geforce`): hpcc does not fingerprint it.
    Brand,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequireOp {
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `=` or `==`
    #[serde(rename = "=")]
    Eq,
}

impl RequireOp {
    /// Whether `have op want` holds.
    pub fn holds(self, have: &Version, want: &Version) -> bool {
        match self {
            RequireOp::Ge => have >= want,
            RequireOp::Gt => have > want,
            RequireOp::Le => have <= want,
            RequireOp::Lt => have < want,
            RequireOp::Eq => have == want,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RequireOp::Ge => ">=",
            RequireOp::Gt => ">",
            RequireOp::Le => "<=",
            RequireOp::Lt => "<",
            RequireOp::Eq => "=",
        }
    }
}

/// One constraint (`driver>=470`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// What it is about.
    pub key: RequireKey,
    /// How it compares.
    pub op: RequireOp,
    /// The version (brands are kept as text in `brand`).
    pub version: Option<Version>,
    /// The brand, for `brand=`.
    pub brand: Option<String>,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match self.key {
            RequireKey::Cuda => "cuda",
            RequireKey::Driver => "driver",
            RequireKey::Arch => "arch",
            RequireKey::Brand => "brand",
        };
        match (&self.version, &self.brand) {
            (Some(v), _) => write!(f, "{key}{}{v}", self.op.as_str()),
            (None, Some(b)) => write!(f, "{key}={}", crate::text::escape(b)),
            (None, None) => f.write_str(key),
        }
    }
}

/// `NVIDIA_REQUIRE_CUDA`: space-separated alternatives, each a
/// comma-separated conjunction (the NVIDIA container toolkit's rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvidiaRequire {
    /// Alternatives; one that holds is enough.
    pub alternatives: Vec<Vec<Constraint>>,
}

/// Most alternatives read (NVIDIA's own images list about 60).
const MAX_ALTERNATIVES: usize = 256;

impl NvidiaRequire {
    /// Parses `cuda>=12.0 brand=tesla,driver>=470,driver<471 ...`.
    pub fn parse(value: &str) -> Result<NvidiaRequire, ValueError> {
        let bad = || ValueError::NotARequirement;
        let mut alternatives = Vec::new();
        for alt in value.split_whitespace() {
            if alternatives.len() == MAX_ALTERNATIVES {
                return Err(ValueError::TooManyEntries {
                    limit: MAX_ALTERNATIVES,
                });
            }
            let mut all = Vec::new();
            for c in alt.split(',').filter(|c| !c.is_empty()) {
                let split = c.find(['<', '>', '=']).ok_or_else(bad)?;
                let (key, rest) = c.split_at(split);
                let (op, val) = if let Some(v) = rest.strip_prefix(">=") {
                    (RequireOp::Ge, v)
                } else if let Some(v) = rest.strip_prefix("<=") {
                    (RequireOp::Le, v)
                } else if let Some(v) = rest.strip_prefix("==") {
                    (RequireOp::Eq, v)
                } else if let Some(v) = rest.strip_prefix('>') {
                    (RequireOp::Gt, v)
                } else if let Some(v) = rest.strip_prefix('<') {
                    (RequireOp::Lt, v)
                } else if let Some(v) = rest.strip_prefix('=') {
                    (RequireOp::Eq, v)
                } else {
                    return Err(bad());
                };
                let key = match key.to_ascii_lowercase().as_str() {
                    "cuda" => RequireKey::Cuda,
                    "driver" => RequireKey::Driver,
                    "arch" => RequireKey::Arch,
                    "brand" => RequireKey::Brand,
                    _ => return Err(bad()),
                };
                let constraint = if key == RequireKey::Brand {
                    if op != RequireOp::Eq || val.is_empty() || val.len() > 32 {
                        return Err(bad());
                    }
                    Constraint {
                        key,
                        op,
                        version: None,
                        brand: Some(val.to_owned()),
                    }
                } else {
                    Constraint {
                        key,
                        op,
                        version: Some(Version::parse(val).map_err(|_| bad())?),
                        brand: None,
                    }
                };
                all.push(constraint);
            }
            if !all.is_empty() {
                alternatives.push(all);
            }
        }
        if alternatives.is_empty() {
            return Err(ValueError::Empty);
        }
        Ok(NvidiaRequire { alternatives })
    }

    /// The `cuda>=X` of the first alternative, the requirement without
    /// forward compatibility.
    pub fn cuda(&self) -> Option<&Version> {
        self.alternatives.first().and_then(|a| {
            a.iter()
                .find(|c| c.key == RequireKey::Cuda)
                .and_then(|c| c.version.as_ref())
        })
    }
}

impl fmt::Display for NvidiaRequire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first: Vec<String> = self
            .alternatives
            .first()
            .map(|a| a.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        f.write_str(&first.join(","))?;
        match self.alternatives.len() {
            0 | 1 => Ok(()),
            n => write!(f, " (or {} driver alternatives)", n - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            SmArch::parse("SM80").unwrap(),
            SmArch { major: 8, minor: 0 }
        );
        assert_eq!(
            SmArch::parse("sm_100").unwrap(),
            SmArch {
                major: 10,
                minor: 0
            }
        );
        assert!(SmArch::parse("ampere").is_err());
        assert!(SmArch::parse("99999999999.1").is_err());
    }

    #[test]
    fn require_cuda_expression() {
        let r = NvidiaRequire::parse(
            "cuda>=12.0 brand=tesla,driver>=450,driver<451 brand=tesla,driver>=470,driver<471",
        )
        .unwrap();
        assert_eq!(r.alternatives.len(), 3);
        assert_eq!(r.cuda().unwrap().to_string(), "12.0");
        assert_eq!(r.to_string(), "cuda>=12.0 (or 2 driver alternatives)");
        assert!(NvidiaRequire::parse("cuda>=twelve").is_err());
        assert!(NvidiaRequire::parse("gpu>=1").is_err());
        assert!(NvidiaRequire::parse("   ").is_err());
    }

    #[test]
    fn gpu_need_values() {
        assert_eq!(GpuNeed::parse_yes_no("Yes").unwrap(), GpuNeed::Any);
        assert_eq!(GpuNeed::parse_yes_no("no").unwrap(), GpuNeed::No);
        assert!(GpuNeed::parse_yes_no("maybe").is_err());
        assert_eq!(GpuNeed::parse_api("cuda").unwrap(), Some(GpuNeed::Nvidia));
        assert_eq!(GpuNeed::parse_api("unknown").unwrap(), None);
    }
}
