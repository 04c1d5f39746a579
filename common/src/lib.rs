//! hpcc core: what an image asks ([`annotations`]), what the node has
//! ([`fingerprint`]), whether the two fit ([`matcher`]), and what a launch
//! will do about it ([`launch`], which makes a [`plan`]). Decision and
//! effect are kept apart: everything up to the plan is plain data. The
//! container is changed only by [`apply`] (hook mode) or by the spec edit
//! of `hpcc-runtime` (`apply::spec`); the other writes on the host are
//! hpcc's own files, listed in the README ("Where things happen").

pub mod annotations;
pub mod apply;
pub mod cdi_offer;
pub mod collections;
pub mod date;
/// The bounded ELF reader for untrusted files: the launch and the image side
/// (`hpcc-image`) both read ELF only through it.
pub mod elf;
pub mod fingerprint;
pub mod handoff;
pub mod host;
pub mod io;
pub mod launch;
pub mod logging;
pub mod matcher;
pub mod node_features;
pub mod oci;
pub mod plan;
pub mod process;
pub mod report;
pub(crate) mod rootfs;
pub mod schema;
pub mod slurm_conf;
/// Test helpers (temporary directories, synthetic nodes), for this crate's
/// tests and, with the `testutil` feature, `hpcc-image`'s.
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
pub mod text;
pub(crate) mod tweaks;
pub mod verdict;
pub mod version;
pub mod yaml;

/// glibc's linker cache format (read and written by hpcc; see
/// `apply::ldcache_file`).
pub use tweaks::ldcache;
/// A Slurm MPI step's wiring planned from the facts the runtime's Slurm
/// mode gathered (`hpcc-runtime`, `hpcc match --plan --slurm-step`).
pub use tweaks::slurm;

/// What the budget tests (`common/tests/budgets.rs`, a process of their
/// own so that its peak memory is theirs alone) reach inside the crate.
/// Not an API.
#[doc(hidden)]
pub mod budget_probe {
    pub use crate::elf::{ElfError, ElfInfo};
    pub use crate::rootfs::Rootfs;
    pub use crate::tweaks::image::{ImageLibs, MAX_CANDIDATES};
}

/// What the fuzz targets (`fuzz/fuzz_targets/`, a crate of their own) reach
/// inside the crate: the parsers of image and engine input. Not an API.
#[doc(hidden)]
pub mod fuzz_probe {
    pub use crate::elf::{ElfError, ElfInfo};
    pub use crate::tweaks::cdi::{parse_spec, requests, QualifiedName};
}
