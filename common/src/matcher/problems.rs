//! Keys that did not give hpcc what they say, as findings. One finding per
//! problem, all of them listed; the level says what the problem costs:
//!
//! - fatal (where the check is enforced, degraded elsewhere) only when the
//!   check that key feeds cannot be decided safely without the value: an
//!   unreadable CPU target, two platforms, a GPU requirement that cannot be
//!   compared with the node's GPU, an unreadable host kernel requirement;
//! - degraded when hpcc falls back to the safe choice and the image may run
//!   below its best (no MPI replacement for an unreadable MPI, no host
//!   libraries for an unreadable libc), and for look-alike keys;
//! - ok (a warning) for what only informs: unreadable advisory values, old
//!   spellings, allowances hpcc does not know, the CPU mode.

use super::{undecided, Check, Finding, Level, Verdict};
use crate::annotations::{CpuTarget, Field, ImageSpec, KeyProblem, ProblemKind};
use crate::fingerprint::NodeFingerprint;
use hpcc_config::Policy;

pub(super) fn check(image: &ImageSpec, node: &NodeFingerprint, policy: &Policy, out: &mut Verdict) {
    for p in &image.problems {
        let (level, consequence) = cost(p, image, node, policy);
        out.push(
            Finding::new(p.check(), level, format!("{p}{consequence}")).image_evidence(p.shown()),
        );
    }
}

fn cost(
    p: &KeyProblem,
    image: &ImageSpec,
    node: &NodeFingerprint,
    policy: &Policy,
) -> (Level, &'static str) {
    let lost = p.loses_value();
    let conflict = matches!(p.problem, ProblemKind::Conflict { .. });
    match (&p.problem, p.field) {
        (ProblemKind::TooManyKeys { .. }, _) => (
            Level::Fatal,
            ": keys hpcc did not read may hold requirements",
        ),
        (ProblemKind::LookAlike { .. }, _) => (Level::Degraded, ""),
        (ProblemKind::UnknownKey { .. }, Some(_)) => (
            Level::Degraded,
            ": if it was meant as that key, its requirement is not checked",
        ),
        (_, Some(Field::CpuTarget)) if conflict => {
            let other_platform = CpuTarget::parse(&p.value).is_ok_and(|t| {
                image
                    .cpu_target
                    .as_ref()
                    .is_some_and(|c| c.family() != t.family())
            });
            if other_platform {
                (
                    undecided(Check::Cpu, policy),
                    ": the image declares two platforms and cannot be built for both",
                )
            } else {
                (Level::Ok, ": both targets are checked")
            }
        }
        (_, Some(Field::CpuTarget)) if lost => {
            if image.cpu_targets.is_empty() {
                (
                    undecided(Check::Cpu, policy),
                    ": the CPU cannot be checked and the image may die with SIGILL",
                )
            } else {
                (
                    Level::Degraded,
                    ": the CPU check uses the target of the other key",
                )
            }
        }
        (
            _,
            Some(
                Field::Cuda | Field::NvidiaDriver | Field::GpuArchitectures | Field::NvidiaRequire,
            ),
        ) if lost && !conflict => {
            if node.gpu.nvidia.is_some() {
                (
                    undecided(Check::Gpu, policy),
                    ": the GPU requirement cannot be compared with this node's GPUs",
                )
            } else {
                (Level::Degraded, "")
            }
        }
        (_, Some(Field::GpuNeed)) if lost => (Level::Degraded, ""),
        (_, Some(Field::MpiImplementation)) if lost => (
            Level::Degraded,
            ": the host MPI does not replace the image's",
        ),
        (_, Some(Field::LibfabricAbi)) if lost && !conflict => {
            (Level::Degraded, ": the host libfabric is not injected")
        }
        (_, Some(Field::Libc)) if lost => {
            (Level::Degraded, ": no host library is put into the image")
        }
        (_, Some(Field::HostKernelMin | Field::KernelExpectations)) if lost && !conflict => (
            undecided(Check::Kernel, policy),
            ": the host kernel requirement cannot be checked",
        ),
        (
            _,
            Some(Field::Cuda | Field::NvidiaDriver | Field::HostKernelMin | Field::LibfabricAbi),
        ) if conflict => (Level::Ok, ": the higher one is checked"),
        _ => (Level::Ok, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{image, node, verdict};
    use super::super::{evaluate, Check, Level, Score};
    use hpcc_config::{Enforcement, Policy};

    #[test]
    fn every_problem_is_a_finding_and_only_undecidable_ones_are_fatal() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            (
                "org.supercontainers.hardware.cpu.optimized.mode",
                "Microarch1tecture",
            ),
            ("org.supercontainers.python.version", "three"),
            (
                "org.supercontainers.mpi.portability.mode",
                "mpi_system,magic",
            ),
            ("org.supercontainers.host.kernel.version.min", "five"),
        ]);
        let v = verdict(&img, &node("icelake"));
        assert_eq!(img.problems.len(), 5, "{:#?}", img.problems);
        let fatal: Vec<_> = v.with_level(Level::Fatal).collect();
        assert_eq!(fatal.len(), 1, "{v:#?}");
        assert_eq!(fatal[0].check, Check::Kernel);
        assert!(fatal[0].reason.contains("five"));
        let mut p = Policy::default();
        p.checks.kernel = Enforcement::Warn;
        let v = evaluate(&img, &node("icelake"), &p);
        assert_eq!(v.score(), Score::Orange, "{v:#?}");
    }

    #[test]
    fn gpu_values_matter_where_there_is_a_gpu() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            (
                "org.supercontainers.hardware.gpu.nvidia.cuda.version",
                "twelve",
            ),
        ]);
        // No GPU: the GPU need alone refuses; the unreadable value is noted.
        let v = verdict(&img, &node("icelake"));
        assert!(v
            .with_level(Level::Fatal)
            .any(|f| f.check == Check::Gpu && f.reason.contains("no NVIDIA GPU")));
        assert!(v
            .with_level(Level::Degraded)
            .any(|f| f.reason.contains("twelve")));
    }

    #[test]
    fn two_platforms_refuse_where_cpu_is_enforced() {
        let img = image(&[
            ("org.supercontainers.hardware.cpu.optimized.version", "zen3"),
            ("io.archspec.cpu.target", "arm64"),
        ]);
        let v = verdict(&img, &node("zen3"));
        let f = v.with_level(Level::Fatal).next().expect("fatal");
        assert!(f.reason.contains("two platforms"), "{}", f.reason);
    }
}
