//! The image side: what an OCI image says about itself before it runs.
//!
//! - [`layout`]: an image reference (`DIR:tag`, an OCI archive, an image
//!   config JSON), its index, manifest and config, read with digests
//!   verified, and where its annotations come from ([`layout::Source`]);
//! - [`layers`]: its layers (tar, gzip, zstd) walked in memory, never
//!   extracted, with bounds on entries, bytes, ratio and time;
//! - [`elfscan`]: what an ELF object in a layer says (sonames, symbol
//!   versions, ISA notes, sampled instructions);
//! - [`annotate`]: annotations proposed from the layers, each with evidence
//!   (as [`proposals`]);
//! - [`check`]: the conformance findings of `hpcc check IMAGE`;
//! - [`nfd`]: the Kubernetes NFD image compatibility spec (`v1alpha1`),
//!   written from proposals and scored against this node;
//! - YAML (collections, NFD specs) goes through the core's small,
//!   alias-free reader, `hpcc_common::yaml`.
//!
//! This is a crate of its own so that only the `hpcc` command line links it
//! (tar, gzip, zstd, the x86 decoder): not the hook, the runtime or the
//! SPANK plugin that slurmstepd loads.
//!
//! Everything here reads hostile input: an image may be crafted to make a
//! reader follow a symlink out, fill memory, decompress forever or run
//! something. Nothing here writes to disk, follows a link outside the image
//! tree, or executes anything from the image.

pub mod annotate;
pub mod check;
pub mod commands;
pub mod elfscan;
pub mod layers;
pub mod layout;
pub mod nfd;
pub mod proposals;
pub mod registry;
pub mod select;

use std::time::Duration;

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file of the image could not be read.
    #[error("cannot read {what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The reference names nothing usable.
    #[error("{input:?} is not an image reference: {reason}")]
    BadRef {
        /// What the user gave.
        input: String,
        /// Why it was not accepted.
        reason: String,
    },
    /// A JSON document of the image is not what the OCI spec says.
    #[error("{what} is not valid: {source}")]
    Json {
        /// Which document.
        what: String,
        /// Parser error.
        source: serde_json::Error,
    },
    /// A blob is not what its descriptor says (digest or size).
    #[error("{what}: content does not match its descriptor: {reason}")]
    Mismatch {
        /// Which blob.
        what: String,
        /// Expected against found.
        reason: String,
    },
    /// The layout's structure is not usable (no such tag, ambiguous, bad
    /// media type, a blob that is not a regular file).
    #[error("{what}: {reason}")]
    Layout {
        /// What was looked at.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A bound of [`Limits`] was reached: the image is refused rather than
    /// read further.
    #[error("{what}: over the limit of {limit} ({hint})")]
    Limit {
        /// What grew too large.
        what: String,
        /// The bound, as text with its unit.
        limit: String,
        /// Which [`Limits`] field or option raises it.
        hint: &'static str,
    },
    /// A layer could not be decompressed or is not a tar stream.
    #[error("layer {layer}: {reason}")]
    Layer {
        /// Digest of the layer.
        layer: String,
        /// Decoder or tar error.
        reason: String,
    },
    /// A registry could not be read.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// A YAML document (collection, NFD spec) is not valid.
    #[error(transparent)]
    Yaml(#[from] hpcc_common::yaml::YamlError),
}

impl ImageError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> ImageError {
        ImageError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn layout(what: impl Into<String>, reason: impl Into<String>) -> ImageError {
        ImageError::Layout {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Bounds on reading one image. The defaults fit real HPC images (tens of
/// GiB unpacked, a few hundred thousand files) with room to spare, and stop
/// a crafted one long before it hurts the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest index, manifest or image config JSON.
    pub max_json_bytes: u64,
    /// Most layers read.
    pub max_layers: usize,
    /// Most tar entries over all layers.
    pub max_entries: u64,
    /// Most uncompressed bytes over all layers.
    pub max_total_bytes: u64,
    /// Largest ratio of uncompressed to compressed bytes of a layer (past its
    /// first [`Limits::ratio_grace_bytes`]).
    pub max_ratio: u64,
    /// Uncompressed bytes of a layer before the ratio applies (tiny layers
    /// compress well legitimately).
    pub ratio_grace_bytes: u64,
    /// Largest file read into memory (ELF objects, scripts, dpkg status).
    pub max_file_bytes: u64,
    /// Wall-clock time for reading all layers.
    pub max_time: Duration,
    /// Most ELF objects whose `.text` is sampled.
    pub max_sampled: usize,
    /// How much of one `.text` is decoded.
    pub sample_bytes: usize,
    /// How many of the largest sampled objects decide the CPU level.
    pub hot_objects: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_json_bytes: 4 << 20,
            max_layers: 256,
            max_entries: 1_000_000,
            max_total_bytes: 64 << 30,
            max_ratio: 200,
            ratio_grace_bytes: 64 << 20,
            max_file_bytes: 96 << 20,
            max_time: Duration::from_secs(300),
            max_sampled: 48,
            sample_bytes: 256 << 10,
            hot_objects: 8,
        }
    }
}
