//! `hpcc select`: the variants of an index (a layout's or a registry's),
//! each with the annotations its index entry's `platform` implies, and the
//! rule that picks the most specific of the ones that run. Scoring itself
//! is the core matcher's (the command line runs `hpcc match`'s pipeline on
//! each variant); nothing here decides compatibility.
//!
//! The rule, among green variants: the CPU target deepest in archspec's
//! ancestry wins (`zen3` over `x86_64_v3` over `x86_64`), then the higher
//! CUDA version (a green verdict already means the driver supports it),
//! then the earlier entry of the index.

use crate::layout::{Descriptor, Image, ImageRef, Platform};
use crate::{ImageError, Limits};
use hpcc_common::annotations::CpuTarget;
use std::collections::BTreeMap;

/// The CPU target annotation a platform implies.
pub const CPU_KEY: &str = "org.supercontainers.hardware.cpu.optimized.version";

/// CUDA version keys, most specific first.
const CUDA_KEYS: [&str; 3] = [
    "org.supercontainers.hardware.gpu.nvidia.cuda.version",
    "org.supercontainers.hardware.gpu.cuda.version",
    "com.nvidia.cuda.version",
];

/// One manifest of the index.
#[derive(Debug)]
pub struct Variant {
    /// Its position in the index (ties go to the earlier).
    pub position: usize,
    /// Its index entry.
    pub entry: Descriptor,
    /// The image, opened from its manifest and config.
    pub image: Image,
    /// What to pull: `host/repo@sha256:...` or `oci:DIR@sha256:...`.
    pub pull: String,
}

impl Variant {
    /// The annotations scored: the entry's platform first (lowest), then
    /// the image's own, which win where both say something.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut out = self
            .entry
            .platform
            .as_ref()
            .map(platform_annotations)
            .unwrap_or_default();
        out.extend(self.image.annotations().to_map());
        out
    }

    /// A short name for `--why`: the CPU target or the platform.
    pub fn label(&self) -> String {
        let a = self.annotations();
        let p = self.entry.platform.clone().unwrap_or_default();
        let mut s = format!("{}/{}", p.os, p.architecture);
        if let Some(v) = &p.variant {
            s.push_str(&format!("/{v}"));
        }
        if let Some(cpu) = a.get(CPU_KEY) {
            s.push_str(&format!(" cpu={cpu}"));
        }
        if let Some(c) = CUDA_KEYS.iter().find_map(|k| a.get(*k)) {
            s.push_str(&format!(" cuda={c}"));
        }
        hpcc_common::text::escape(&s)
    }
}

/// The annotations an index entry's platform implies: a `cpu:NAME` in
/// `features` or `os.features` names the CPU target; else an amd64
/// `variant` `v2`/`v3`/`v4` is the x86-64 level of that name.
pub fn platform_annotations(p: &Platform) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let named = p
        .features
        .iter()
        .chain(&p.os_features)
        .find_map(|f| f.strip_prefix("cpu:"))
        .filter(|n| CpuTarget::parse(n).is_ok());
    let level = match (p.architecture.as_str(), p.variant.as_deref()) {
        ("amd64", Some(v @ ("v2" | "v3" | "v4"))) => Some(format!("x86_64_{v}")),
        _ => None,
    };
    if let Some(cpu) = named.map(str::to_owned).or(level) {
        out.insert(CPU_KEY.to_owned(), cpu);
    }
    out
}

/// How specific a variant is: (depth of its CPU target in archspec's
/// ancestry, its CUDA version as numbers). Absent means least specific.
pub fn specificity(annotations: &BTreeMap<String, String>) -> (usize, Vec<u64>) {
    let depth = annotations
        .get(CPU_KEY)
        .and_then(|v| CpuTarget::parse(v).ok())
        .map_or(0, |t| t.microarchitecture().ancestors().len() + 1);
    let cuda = CUDA_KEYS
        .iter()
        .find_map(|k| annotations.get(*k))
        .map(|v| {
            v.trim_start_matches('v')
                .split('.')
                .map_while(|p| p.parse::<u64>().ok())
                .collect()
        })
        .unwrap_or_default();
    (depth, cuda)
}

/// The best of the green variants (their positions in `green`): the most
/// specific, ties to the earliest.
pub fn best<'a>(green: impl IntoIterator<Item = &'a Variant>) -> Option<&'a Variant> {
    let mut best: Option<(&Variant, (usize, Vec<u64>))> = None;
    for v in green {
        let s = specificity(&v.annotations());
        let better = match &best {
            None => true,
            Some((b, bs)) => s > *bs || (s == *bs && v.position < b.position),
        };
        if better {
            best = Some((v, s));
        }
    }
    best.map(|(v, _)| v)
}

/// Every image manifest of the index `r` names (one variant for a plain
/// manifest or a config).
pub fn variants(r: &ImageRef, limits: &Limits) -> Result<Vec<Variant>, ImageError> {
    let pairs = match r {
        ImageRef::Registry(reg) => crate::registry::open_variants(reg, limits)?,
        ImageRef::Layout { .. } | ImageRef::Archive { .. } => Image::open_variants(r, limits)?,
        ImageRef::Config(_) => {
            return Err(ImageError::layout(
                r.to_string(),
                "an image config has no variants: give an index (a layout, an archive or a registry image)",
            ))
        }
    };
    let base = match r {
        ImageRef::Registry(reg) => format!(
            "{}/{}",
            reg.reference.resolve_registry(),
            reg.reference.repository()
        ),
        ImageRef::Layout { dir, .. } => format!("oci:{}", dir.display()),
        ImageRef::Archive { file, .. } => format!("oci-archive:{}", file.display()),
        ImageRef::Config(_) => String::new(),
    };
    Ok(pairs
        .into_iter()
        .enumerate()
        .map(|(position, (entry, image))| Variant {
            position,
            pull: format!("{base}@{}", entry.digest),
            entry,
            image,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plat(arch: &str, variant: Option<&str>, features: &[&str]) -> Platform {
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: variant.map(str::to_owned),
            features: features.iter().map(|s| s.to_string()).collect(),
            os_features: vec![],
        }
    }

    #[test]
    fn platforms_name_cpu_targets() {
        let a = platform_annotations(&plat("amd64", Some("v3"), &[]));
        assert_eq!(a.get(CPU_KEY).map(String::as_str), Some("x86_64_v3"));
        let a = platform_annotations(&plat("amd64", None, &["cpu:zen3"]));
        assert_eq!(a.get(CPU_KEY).map(String::as_str), Some("zen3"));
        assert!(platform_annotations(&plat("arm64", Some("v8"), &[])).is_empty());
        assert!(platform_annotations(&plat("amd64", None, &["cpu:nonsense"])).is_empty());
    }

    #[test]
    fn deeper_targets_and_newer_cuda_are_more_specific() {
        let cpu = |c: &str| BTreeMap::from([(CPU_KEY.to_owned(), c.to_owned())]);
        assert!(specificity(&cpu("zen3")) > specificity(&cpu("x86_64_v3")));
        assert!(specificity(&cpu("x86_64_v3")) > specificity(&cpu("x86_64_v2")));
        assert!(specificity(&cpu("x86_64_v2")) > specificity(&BTreeMap::new()));
        let mut c11 = cpu("x86_64_v3");
        c11.insert(CUDA_KEYS[0].into(), "11.8".into());
        let mut c12 = c11.clone();
        c12.insert(CUDA_KEYS[0].into(), "12.2".into());
        assert!(specificity(&c12) > specificity(&c11));
    }
}
