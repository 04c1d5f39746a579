//! hpcc core: what an image asks ([`annotations`]), what the node has
//! ([`fingerprint`]), whether the two fit ([`matcher`]), and what a launch
//! will do about it ([`plan`]). Decision and effect are kept apart: everything
//! up to the plan is plain data; only [`apply`] touches the system.

pub mod annotations;
pub mod apply;
pub mod collections;
pub(crate) mod elf;
pub mod fingerprint;
pub mod handoff;
pub mod image;
pub mod io;
pub mod launch;
pub mod logging;
pub mod matcher;
pub mod oci;
pub mod plan;
pub mod report;
pub(crate) mod rootfs;
#[cfg(test)]
pub(crate) mod testutil;
pub mod text;
pub(crate) mod tweaks;
pub mod version;
