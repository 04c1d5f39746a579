//! CPU rules: platform, then the instruction-set extensions the image's
//! target makes the compiler emit that the node lacks, then how well the
//! build fits the node.
//!
//! What refuses a start is a missing extension a compiler emits for the
//! target: archspec's features of the target minus [`NOT_EMITTED`], the
//! features no compiler emits on its own (random numbers, protection keys,
//! cache and state management, speculation controls). Hypervisors hide
//! those often (a KVM guest without `rdseed` or `pku`), and code built for
//! the target runs without them. archspec's name for the node is only used
//! to say how well the build fits: a node detected as a generic level
//! because its hypervisor hides one such feature still runs the image.

use super::{Check, Finding, Level, Verdict};
use crate::annotations::{CpuTarget, Field, ImageSpec};
use crate::fingerprint::NodeFingerprint;

/// archspec features that no compiler emits for a `-march`/`-mcpu` on its
/// own, so their absence does not refuse a start. Everything else archspec
/// lists for a target is taken as emitted: vector extensions (SSE..AVX-512,
/// AMX, NEON/ASIMD, SVE), FMA, bit manipulation, atomics, and the crypto
/// extensions that code selects at compile time through `__AES__`-style
/// macros.
pub const NOT_EMITTED: &[&str] = &[
    // x86: random numbers, protection keys, speculation, state and cache
    // management, user-mode waits, serialisation, segment bases, TSC.
    "rdrand",
    "rdseed",
    "pku",
    "ospke",
    "flush_l1d",
    "xsave",
    "xsavec",
    "xsaveopt",
    "xsaves",
    "clflushopt",
    "clwb",
    "clzero",
    "cldemote",
    "movdiri",
    "movdir64b",
    "waitpkg",
    "serialize",
    "fsgsbase",
    "rdpid",
    "tsc_adjust",
    "sse4a",
    // aarch64: facts about the system rather than instructions (event
    // stream, ID register emulation), cache maintenance, random numbers,
    // hints and PSTATE bits compilers only use when asked.
    "evtstrm",
    "cpuid",
    "dcpop",
    "dcpodp",
    "rng",
    "dgh",
    "ssbs",
    "sb",
    "bti",
    "paca",
    "pacg",
    "dit",
    "ecv",
];

/// Whether a compiler emits `feature` for a target that has it.
pub fn emitted(feature: &str) -> bool {
    !NOT_EMITTED.contains(&feature)
}

pub(super) fn check(image: &ImageSpec, node: &NodeFingerprint, out: &mut Verdict) {
    if image.cpu_targets.is_empty() {
        if image.value_lost(Field::CpuTarget) {
            // The key's own finding says the CPU cannot be checked.
            return;
        }
        out.push(Finding::new(
            Check::Cpu,
            Level::Degraded,
            "the image does not declare its CPU target (org.supercontainers.hardware.cpu.optimized.version): it may still fail with SIGILL",
        ).evidence("unknown", node.cpu.microarchitecture.clone()));
        return;
    }
    for target in &image.cpu_targets {
        out.push(cpu_target(target, node));
    }
}

/// The node's vendor as archspec names it (aarch64 nodes report the
/// implementer code, `0x41`).
fn node_vendor(node: &NodeFingerprint) -> String {
    let v = node.cpu.vendor.trim();
    crate::annotations::cpu_table::arm_vendor(v).map_or_else(|| v.to_owned(), str::to_owned)
}

fn cpu_target(target: &CpuTarget, node: &NodeFingerprint) -> Finding {
    let family = target.family();
    let vendor = node_vendor(node);
    let micro = &node.cpu.microarchitecture;
    let node_desc = format!("{micro} ({vendor}, {})", node.cpu.platform);
    let node_platform = match node.cpu.platform.as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        p => p,
    };
    let finding = |level, reason: String| {
        Finding::new(Check::Cpu, level, reason).evidence(target.to_string(), node_desc.clone())
    };
    if family != node_platform {
        let what = if target.is_platform() {
            family.clone()
        } else {
            format!("{family} ({target})")
        };
        return finding(
            Level::Fatal,
            format!("the image is built for {what}, the node is {node_platform}: its binaries cannot execute here"),
        );
    }
    let (missing, hidden): (Vec<String>, Vec<String>) = target
        .features()
        .into_iter()
        .filter(|f| !node_has_feature(node, f))
        .partition(|f| emitted(f));
    if !missing.is_empty() {
        return finding(
            Level::Fatal,
            format!(
                "the image is built for {target}, whose code uses {}, which this node's CPU ({micro}) does not have: it would die with SIGILL",
                missing.join(", ")
            ),
        );
    }
    let note = if hidden.is_empty() {
        String::new()
    } else {
        format!(
            "; the node does not report {} (a hypervisor may hide them), which no compiler emits on its own",
            hidden.join(", ")
        )
    };
    let exact = micro == target.name();
    if exact {
        return finding(
            Level::Ok,
            format!("the image is optimised for this node's microarchitecture ({target}){note}"),
        );
    }
    if target.is_generic() {
        return finding(
            Level::Degraded,
            format!("the image is a generic {target} build: it runs on {micro}, but without that CPU's newer instructions{note}"),
        );
    }
    if target.is_ancestor_of(micro) {
        return finding(
            Level::Ok,
            format!("the image is optimised for {target}; the node ({micro}) is a compatible descendant{note}"),
        );
    }
    if target.vendor() != vendor {
        return finding(
            Level::Degraded,
            format!(
                "the image is optimised for {target} ({}), the node's CPU is {vendor} ({micro}): it has every instruction-set extension the build uses, but the code is tuned for another CPU{note}",
                target.vendor()
            ),
        );
    }
    finding(
        Level::Ok,
        format!("the node ({micro} as detected) has every instruction-set extension {target} code uses{note}"),
    )
}

/// Whether the node has an archspec feature, honouring archspec's feature
/// aliases (`sse3` is implied by `ssse3`, `neon` by the aarch64 family) and
/// Linux's own spelling of SSE3 (`pni`).
fn node_has_feature(node: &NodeFingerprint, feature: &str) -> bool {
    if node.cpu.flags.contains(feature) || (feature == "sse3" && node.cpu.flags.contains("pni")) {
        return true;
    }
    crate::annotations::cpu_table::feature_alias(feature).is_some_and(|a| {
        a.any_of.iter().any(|f| node.cpu.flags.contains(*f))
            || a.families.contains(&node.cpu.platform.as_str())
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
    fn other_vendor_without_the_instructions_is_red() {
        let v = verdict(&cpu_image("zen4"), &node("icelake"));
        assert_eq!(v.score(), Score::Red);
        assert!(cpu_finding(&v).reason.contains("avx512_bf16"), "{v:#?}");
    }
    #[test]
    fn other_vendor_with_the_instructions_is_orange() {
        // An AVX-512 AMD EPYC guest that hides rdseed (archspec then only
        // sees a generic level): a skylake_avx512 build runs there.
        let mut n = node("zen4");
        n.cpu.flags.remove("rdseed");
        n.cpu.flags.insert("adx".into());
        n.cpu.microarchitecture = "x86_64_v4".into();
        let v = verdict(&cpu_image("skylake_avx512"), &n);
        assert_eq!(v.score(), Score::Orange, "{v:#?}");
        let f = cpu_finding(&v);
        assert!(f.reason.contains("tuned for another CPU"), "{}", f.reason);
        assert!(!f.reason.contains("SIGILL"), "{}", f.reason);
    }
    #[test]
    fn hypervisor_hidden_features_do_not_refuse() {
        // A zen3 KVM guest hiding rdseed and pku: archspec detects only
        // x86_64_v3, and a zen3 build runs.
        let mut n = node("zen3");
        n.cpu.flags.remove("rdseed");
        n.cpu.flags.remove("pku");
        n.cpu.microarchitecture = "x86_64_v3".into();
        let v = verdict(&cpu_image("zen3"), &n);
        assert_eq!(v.score(), Score::Green, "{v:#?}");
        let f = cpu_finding(&v);
        assert!(
            f.reason.contains("pku, rdseed") && f.reason.contains("hypervisor"),
            "{}",
            f.reason
        );
        // A real zen2 lacks vaes/vpclmulqdq, which the compiler emits.
        let v = verdict(&cpu_image("zen3"), &node("zen2"));
        assert_eq!(v.score(), Score::Red);
        assert!(cpu_finding(&v).reason.contains("vaes"), "{v:#?}");
    }
    #[test]
    fn march_names_are_checked_like_archspec_names() {
        let v = verdict(&cpu_image("znver3"), &node("zen3"));
        assert_eq!(v.score(), Score::Green, "{v:#?}");
        assert!(cpu_finding(&v).image.as_deref().unwrap().contains("znver3"));
        // btver2 (Jaguar): AVX without AVX2; runs on a haswell, tuned for AMD.
        let v = verdict(&cpu_image("btver2"), &node("haswell"));
        assert_eq!(v.score(), Score::Orange, "{v:#?}");
        let mut n = node("x86_64_v2");
        n.cpu.vendor = "AuthenticAMD".into();
        let v = verdict(&cpu_image("btver2"), &n);
        assert_eq!(v.score(), Score::Red, "{v:#?}");
    }
    #[test]
    fn messages_use_display_forms() {
        let v = verdict(&cpu_image("x86_64_v4"), &node("haswell"));
        let f = cpu_finding(&v);
        assert!(
            !f.reason.contains("CpuTarget(") && !f.reason.contains('"'),
            "{}",
            f.reason
        );
        assert!(f.reason.contains("avx512bw"), "{}", f.reason);
    }
    #[test]
    fn aarch64_vendor_code_is_read() {
        let mut n = node("neoverse_v1");
        n.cpu.vendor = "0x41".into();
        let v = verdict(&cpu_image("neoverse_n1"), &n);
        assert_eq!(v.score(), Score::Green, "{v:#?}");
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
