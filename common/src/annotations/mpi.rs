//! MPI implementations with their ABI families, the portability modes an
//! image allows, communication frameworks and libc, as people spell them.

use super::ValueError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An MPI implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MpiImplementation {
    /// Open MPI.
    Openmpi,
    /// NVIDIA HPC-X (Open MPI).
    Hpcx,
    /// IBM Spectrum MPI (Open MPI).
    SpectrumMpi,
    /// MPICH.
    Mpich,
    /// Intel MPI (MPICH ABI).
    Intelmpi,
    /// Cray MPICH (MPICH ABI).
    CrayMpich,
    /// MVAPICH (MPICH ABI).
    Mvapich,
    /// GROMACS thread-MPI: no MPI library to replace.
    Threadmpi,
}

/// What an MPI annotation value says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MpiValue {
    /// An implementation.
    Is(MpiImplementation),
    /// `unknown`, `none`: nothing declared.
    Nothing,
}

impl MpiImplementation {
    /// Reads a name in any case and spacing (`Open MPI`, `OpenMPI`,
    /// `open-mpi`, `hpcx`, `spectrum-mpi`, `intel-mpi`, `mvapich2`).
    pub fn parse(value: &str) -> Result<MpiValue, (ValueError, Option<String>)> {
        let n: String = value
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '_' | '.'))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let imp = match n.as_str() {
            "openmpi" | "ompi" => Self::Openmpi,
            "hpcx" | "nvidiahpcx" | "hpcxmpi" => Self::Hpcx,
            "spectrummpi" | "spectrum" | "ibmspectrummpi" | "smpi" => Self::SpectrumMpi,
            "mpich" | "mpich2" | "mpich3" | "mpich4" => Self::Mpich,
            "intelmpi" | "impi" | "oneapimpi" | "intelonempi" => Self::Intelmpi,
            "craympich" | "craympi" | "craympt" => Self::CrayMpich,
            "mvapich" | "mvapich2" | "mvapich3" | "mvapich2gdr" | "mvapichplus" => Self::Mvapich,
            "threadmpi" | "tmpi" => Self::Threadmpi,
            "unknown" | "none" | "" => return Ok(MpiValue::Nothing),
            _ => {
                let names = [
                    "openmpi",
                    "hpcx",
                    "spectrum-mpi",
                    "mpich",
                    "intel-mpi",
                    "cray-mpich",
                    "mvapich",
                    "threadmpi",
                ];
                let s = super::keys::closest(&n, names).map(str::to_owned);
                return Err((ValueError::NotAnMpi, s));
            }
        };
        Ok(MpiValue::Is(imp))
    }

    /// The ABI family a host MPI must belong to for replacement; `None` for
    /// thread-MPI, which links no MPI library.
    pub fn abi(self) -> Option<hpcc_config::MpiAbi> {
        match self {
            Self::Openmpi | Self::Hpcx | Self::SpectrumMpi => Some(hpcc_config::MpiAbi::Openmpi),
            Self::Mpich | Self::Intelmpi | Self::CrayMpich | Self::Mvapich => {
                Some(hpcc_config::MpiAbi::Mpich)
            }
            Self::Threadmpi => None,
        }
    }

    /// The canonical identifier (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openmpi => "openmpi",
            Self::Hpcx => "hpcx",
            Self::SpectrumMpi => "spectrum-mpi",
            Self::Mpich => "mpich",
            Self::Intelmpi => "intelmpi",
            Self::CrayMpich => "cray-mpich",
            Self::Mvapich => "mvapich",
            Self::Threadmpi => "threadmpi",
        }
    }

    /// The name people use.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Openmpi => "Open MPI",
            Self::Hpcx => "HPC-X",
            Self::SpectrumMpi => "Spectrum MPI",
            Self::Mpich => "MPICH",
            Self::Intelmpi => "Intel MPI",
            Self::CrayMpich => "Cray MPICH",
            Self::Mvapich => "MVAPICH",
            Self::Threadmpi => "thread-MPI",
        }
    }
}

impl fmt::Display for MpiImplementation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
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

impl CommFramework {
    /// `ucx`, `libfabric`, `libfabrics`, `ofi`, in any case.
    pub fn parse(value: &str) -> Result<CommFramework, (ValueError, Option<String>)> {
        match value.trim().to_ascii_lowercase().as_str() {
            "ucx" => Ok(Self::Ucx),
            "libfabric" | "libfabrics" | "ofi" => Ok(Self::Libfabric),
            other => Err((
                ValueError::NotAFramework,
                super::keys::closest(other, ["ucx", "libfabric"]).map(str::to_owned),
            )),
        }
    }
}

impl fmt::Display for CommFramework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ucx => "UCX",
            Self::Libfabric => "libfabric",
        })
    }
}

/// `org.supercontainers.mpi.portability.mode`: a tweak the image allows.
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

/// What one entry of a mode list says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeValue {
    /// A mode hpcc can act on.
    Is(PortabilityMode),
    /// A value of a published draft whose meaning was never defined
    /// (`mpi_system` of the 2022 draft): known, not acted on.
    Undefined,
}

impl PortabilityMode {
    /// Every mode, best first: replacing the MPI brings the host's whole
    /// stack, the other two only its transport.
    pub const ALL: [PortabilityMode; 3] = [
        PortabilityMode::MpiReplace,
        PortabilityMode::LibfabricInject,
        PortabilityMode::UcxReplace,
    ];

    /// Reads one mode in any case, `-` for `_`.
    pub fn parse(value: &str) -> Result<ModeValue, (ValueError, Option<String>)> {
        let n: String = value
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
        Ok(ModeValue::Is(match n.as_str() {
            "mpi_replace" | "mpich_replace" | "openmpi_replace" => Self::MpiReplace,
            "libfabric_inject" | "ofi_inject" => Self::LibfabricInject,
            "ucx_replace" => Self::UcxReplace,
            "mpi_system" => return Ok(ModeValue::Undefined),
            _ => {
                let s =
                    super::keys::closest(&n, ["mpi_replace", "libfabric_inject", "ucx_replace"])
                        .map(str::to_owned);
                return Err((ValueError::NotAMode, s));
            }
        }))
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

impl LibcImplementation {
    /// `glibc` (`gnu`, `GNU libc`) or `musl`, in any case.
    pub fn parse(value: &str) -> Result<LibcImplementation, (ValueError, Option<String>)> {
        let n: String = value
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '_'))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        match n.as_str() {
            "glibc" | "gnu" | "gnulibc" | "libc6" => Ok(Self::Glibc),
            "musl" | "musllibc" => Ok(Self::Musl),
            other => Err((
                ValueError::NotALibc,
                super::keys::closest(other, ["glibc", "musl"]).map(str::to_owned),
            )),
        }
    }
}

impl fmt::Display for LibcImplementation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Glibc => "glibc",
            Self::Musl => "musl",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpcc_config::MpiAbi;

    fn imp(s: &str) -> MpiImplementation {
        match MpiImplementation::parse(s).unwrap() {
            MpiValue::Is(i) => i,
            MpiValue::Nothing => panic!("{s}: nothing"),
        }
    }

    #[test]
    fn mpi_names_and_families() {
        for (s, abi) in [
            ("Open MPI", MpiAbi::Openmpi),
            ("OpenMPI", MpiAbi::Openmpi),
            ("openmpi", MpiAbi::Openmpi),
            ("hpcx", MpiAbi::Openmpi),
            ("HPC-X", MpiAbi::Openmpi),
            ("spectrum-mpi", MpiAbi::Openmpi),
            ("mpich", MpiAbi::Mpich),
            ("intel-mpi", MpiAbi::Mpich),
            ("Intel MPI", MpiAbi::Mpich),
            ("cray-mpich", MpiAbi::Mpich),
            ("MVAPICH2", MpiAbi::Mpich),
        ] {
            assert_eq!(imp(s).abi(), Some(abi), "{s}");
        }
        assert_eq!(imp("threadmpi").abi(), None);
        assert_eq!(
            MpiImplementation::parse("unknown").unwrap(),
            MpiValue::Nothing
        );
        let (_, s) = MpiImplementation::parse("mpitch").unwrap_err();
        assert_eq!(s.as_deref(), Some("mpich"));
        assert_eq!(imp("intel-mpi").to_string(), "Intel MPI");
    }

    #[test]
    fn modes() {
        assert_eq!(
            PortabilityMode::parse("MPI-Replace").unwrap(),
            ModeValue::Is(PortabilityMode::MpiReplace)
        );
        assert_eq!(
            PortabilityMode::parse("mpich_replace").unwrap(),
            ModeValue::Is(PortabilityMode::MpiReplace)
        );
        assert_eq!(
            PortabilityMode::parse("mpi_system").unwrap(),
            ModeValue::Undefined
        );
        let (_, s) = PortabilityMode::parse("libfabric_injection").unwrap_err();
        assert_eq!(s.as_deref(), Some("libfabric_inject"));
    }

    #[test]
    fn libc_and_frameworks() {
        assert_eq!(
            LibcImplementation::parse("GNU libc").unwrap(),
            LibcImplementation::Glibc
        );
        assert_eq!(
            LibcImplementation::parse("Musl").unwrap(),
            LibcImplementation::Musl
        );
        assert!(LibcImplementation::parse("uclibc").is_err());
        assert_eq!(
            CommFramework::parse("libfabrics").unwrap(),
            CommFramework::Libfabric
        );
        assert_eq!(CommFramework::parse("UCX").unwrap(), CommFramework::Ucx);
    }
}
