//! CPU rules: platform, microarchitecture, and the instruction-set
//! features the image's target needs that the node lacks.

use super::{Check, Finding, Level, Verdict};
use crate::annotations::{CpuTarget, ImageSpec};
use crate::fingerprint::NodeFingerprint;

pub(super) fn check(image: &ImageSpec, node: &NodeFingerprint, out: &mut Verdict) {
    let Some(target) = &image.cpu_target else {
        out.push(Finding::new(
            Check::Cpu,
            Level::Degraded,
            "the image does not declare its CPU target (org.supercontainers.hardware.cpu.optimized.version): it may still fail with SIGILL",
        ).evidence("unknown", node.cpu.microarchitecture.clone()));
        return;
    };
    out.push(cpu_target(target, node));
}

fn cpu_target(target: &CpuTarget, node: &NodeFingerprint) -> Finding {
    let want = target.microarchitecture();
    let family = target.family();
    let node_desc = format!(
        "{} ({}, {})",
        node.cpu.microarchitecture, node.cpu.vendor, node.cpu.platform
    );
    let node_platform = match node.cpu.platform.as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        p => p,
    };
    if family != node_platform {
        return Finding::new(
            Check::Cpu,
            Level::Fatal,
            format!("the image is built for {family} ({target}), the node is {node_platform}: its binaries cannot execute here"),
        )
        .evidence(target.to_string(), node_desc);
    }
    let known = archspec::cpu::Microarchitecture::known_targets();
    let host = known.get(&node.cpu.microarchitecture).cloned();
    let is_self_or_descendant = host
        .as_ref()
        .is_some_and(|h| h.name() == want.name() || h.decendent_of(&want));
    let mut missing: Vec<String> = want
        .all_features()
        .into_iter()
        .filter(|f| !node_has_feature(node, f))
        .collect();
    missing.sort();
    if !is_self_or_descendant {
        let why = if want.vendor() != "generic"
            && host.as_ref().is_some_and(|h| h.vendor() != want.vendor())
        {
            format!(
                "the image is optimised for {target} ({}), the node's CPU is {} ({})",
                want.vendor(),
                node.cpu.vendor,
                node.cpu.microarchitecture
            )
        } else {
            format!(
                "the image is optimised for {target}, the node is {} which is not {target} or a descendant of it",
                node.cpu.microarchitecture
            )
        };
        let lacks = if missing.is_empty() {
            String::new()
        } else {
            format!("; the node lacks {}", missing.join(", "))
        };
        return Finding::new(
            Check::Cpu,
            Level::Fatal,
            format!("{why}{lacks}: it would die with SIGILL"),
        )
        .evidence(target.to_string(), node_desc);
    }
    if !missing.is_empty() {
        // archspec says compatible but the flags disagree (a hypervisor
        // masking a feature): trust the flags, they are what executes.
        return Finding::new(
            Check::Cpu,
            Level::Fatal,
            format!(
                "the node is detected as {} but its CPU does not report {} which {target} requires: it would die with SIGILL",
                node.cpu.microarchitecture,
                missing.join(", ")
            ),
        )
        .evidence(target.to_string(), node_desc);
    }
    let exact = host.as_ref().is_some_and(|h| h.name() == want.name());
    if exact || want.vendor() != "generic" {
        Finding::new(
            Check::Cpu,
            Level::Ok,
            if exact {
                format!("the image is optimised for this node's microarchitecture ({target})")
            } else {
                format!(
                    "the image is optimised for {target}; the node ({}) is a compatible descendant",
                    node.cpu.microarchitecture
                )
            },
        )
        .evidence(target.to_string(), node_desc)
    } else {
        Finding::new(
            Check::Cpu,
            Level::Degraded,
            format!(
                "the image is a generic {target} build: it runs on {}, but without that CPU's newer instructions",
                node.cpu.microarchitecture
            ),
        )
        .evidence(target.to_string(), node_desc)
    }
}

/// Whether the node has an archspec feature, honouring archspec's feature
/// aliases (`sse3` is implied by `ssse3`, `neon` by the aarch64 family) and
/// Linux's own spelling of SSE3 (`pni`).
fn node_has_feature(node: &NodeFingerprint, feature: &str) -> bool {
    if node.cpu.flags.contains(feature) || (feature == "sse3" && node.cpu.flags.contains("pni")) {
        return true;
    }
    let aliases = &archspec::schema::MicroarchitecturesSchema::schema().feature_aliases;
    aliases.get(feature).is_some_and(|a| {
        a.any_of
            .as_ref()
            .is_some_and(|any| any.iter().any(|f| node.cpu.flags.contains(f)))
            || a.families
                .as_ref()
                .is_some_and(|fams| fams.contains(&node.cpu.platform))
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{cpu_image, node, verdict};
    use super::super::{Check, Finding, Level, Score, Verdict};
    fn cpu_finding(v: &Verdict) -> &Finding {
        v.findings().iter().find(|f| f.check == Check::Cpu).unwrap()
    }

    #[test]
    fn same_microarchitecture_is_green() {
        let v = verdict(&cpu_image("icelake"), &node("icelake"));
        assert_eq!(v.score(), Score::Green, "{v:#?}");
    }
    #[test]
    fn older_microarchitecture_on_descendant_is_green() {
        let v = verdict(&cpu_image("skylake_avx512"), &node("icelake"));
        assert_eq!(v.score(), Score::Green, "{v:#?}");
        assert!(cpu_finding(&v).reason.contains("descendant"));
    }
    #[test]
    fn generic_build_on_newer_cpu_is_orange() {
        for t in ["x86_64", "x86_64_v3"] {
            let v = verdict(&cpu_image(t), &node("icelake"));
            assert_eq!(v.score(), Score::Orange, "{t}: {v:#?}");
        }
    }
    #[test]
    fn newer_target_is_red_and_names_missing_features() {
        let v = verdict(&cpu_image("sapphirerapids"), &node("icelake"));
        assert_eq!(v.score(), Score::Red);
        let f = cpu_finding(&v);
        assert_eq!(f.level, Level::Fatal);
        assert!(f.reason.contains("amx_tile"), "{}", f.reason);
        assert!(f.reason.contains("SIGILL"));
        assert_eq!(f.image.as_deref(), Some("sapphirerapids"));
    }
    #[test]
    fn x86_64_v4_on_a_node_without_avx512_is_red() {
        let v = verdict(&cpu_image("x86_64_v4"), &node("haswell"));
        assert_eq!(v.score(), Score::Red);
        assert!(cpu_finding(&v).reason.contains("avx512f"), "{v:#?}");
    }
    #[test]
    fn other_vendor_is_red() {
        let v = verdict(&cpu_image("zen4"), &node("icelake"));
        assert_eq!(v.score(), Score::Red);
        assert!(cpu_finding(&v).reason.contains("AuthenticAMD"), "{v:#?}");
    }
    #[test]
    fn other_platform_is_red() {
        let v = verdict(&cpu_image("neoverse_v2"), &node("icelake"));
        assert_eq!(v.score(), Score::Red);
        assert!(cpu_finding(&v).reason.contains("aarch64"), "{v:#?}");
        let v = verdict(&cpu_image("x86_64"), &node("neoverse_v2"));
        assert_eq!(v.score(), Score::Red);
    }
    #[test]
    fn masked_flag_beats_archspec_name() {
        // archspec says icelake, but the hypervisor hid avx512f.
        let mut n = node("icelake");
        n.cpu.flags.remove("avx512f");
        let v = verdict(&cpu_image("skylake_avx512"), &n);
        assert_eq!(v.score(), Score::Red);
        assert!(cpu_finding(&v).reason.contains("avx512f"));
    }
}
