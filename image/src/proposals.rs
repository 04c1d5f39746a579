//! What `hpcc annotate` found, as data: the proposals with their evidence
//! and the CPU and kernel needs. Below both its producer ([`super::annotate`])
//! and the NFD spec written from it ([`super::nfd`]), so those two do not
//! need each other.

use super::layers;
use hpcc_common::annotations::PREFIX;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One proposed annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Full key (`org.supercontainers....`).
    pub key: String,
    /// Proposed value.
    pub value: String,
    /// What it rests on, one fact per entry.
    pub evidence: Vec<String>,
}

/// CPU needs found, for the NFD spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuNeeds {
    /// Platform (`x86_64`, `aarch64`).
    pub platform: String,
    /// x86-64 level (1..=4) when known.
    pub level: Option<u8>,
    /// Features beyond the level used by the objects that decided it
    /// (iced-x86 names).
    pub extra_features: BTreeSet<String>,
}

/// Everything `hpcc annotate` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Proposals {
    /// The image.
    pub image: String,
    /// The proposals, in key order.
    pub proposals: Vec<Proposal>,
    /// Things worth knowing that are not annotations.
    pub notes: Vec<String>,
    /// CPU needs.
    pub cpu: CpuNeeds,
    /// Minimum kernel from the ABI tags.
    pub kernel_min: Option<String>,
    /// Counts of the layer walk.
    pub stats: layers::ScanStats,
}

impl Proposals {
    pub(super) fn add(&mut self, short: &str, value: impl Into<String>, evidence: Vec<String>) {
        self.proposals.push(Proposal {
            key: format!("{PREFIX}{short}"),
            value: value.into(),
            evidence,
        });
    }

    /// The value proposed for `short` (without the prefix).
    pub fn get(&self, short: &str) -> Option<&str> {
        self.proposals
            .iter()
            .find(|p| p.key.strip_prefix(PREFIX) == Some(short))
            .map(|p| p.value.as_str())
    }
}
