//! `hpcc-runtime`: the launch decision as edits of `config.json`, before the
//! real OCI runtime runs it.
//!
//! - [`slurm`]: the Slurm mode (oci.conf `RunTimeRun`): only slurmstepd's
//!   spooled, root-written config is edited.

pub mod slurm;
