//! NVIDIA GPU rules: whether a GPU is needed, the driver's CUDA version,
//! the driver minimum, the GPU architectures the image is built for, and
//! `NVIDIA_REQUIRE_CUDA`.
//!
//! CUDA versions are compared at the precision a driver reports them
//! (`major.minor`): an image built with CUDA 12.1.105 runs on a driver that
//! supports CUDA 12.1. NVIDIA's own image metadata (`com.nvidia.cuda.version`,
//! `NVIDIA_REQUIRE_CUDA`) says what a GPU run needs, not that the image
//! needs a GPU: on a node without one it is only noted.

use super::{join, Check, Finding, Level, Verdict};
use crate::annotations::gpu::{Constraint, RequireKey};
use crate::annotations::{Field, GpuNeed, ImageSpec, NvidiaRequire, SmArch};
use crate::fingerprint::{NodeFingerprint, NvidiaFingerprint};
use crate::version::Version;
use hpcc_config::Policy;

/// Whether a fact was given by NVIDIA's image metadata rather than by an
/// annotation that states a need.
fn from_nvidia(image: &ImageSpec, field: Field) -> bool {
    image
        .sources
        .get(&field)
        .is_some_and(|k| k.starts_with("com.nvidia.") || k.starts_with("env "))
}

pub(super) fn check(image: &ImageSpec, node: &NodeFingerprint, policy: &Policy, out: &mut Verdict) {
    let stated = |f: Field| image.sources.contains_key(&f) && !from_nvidia(image, f);
    let declared_need = image.gpu.as_ref().filter(|n| n.needs_gpu());
    let hard_need = declared_need.is_some()
        || stated(Field::Cuda)
        || stated(Field::NvidiaDriver)
        || !image.gpu_architectures.is_empty()
        || [
            Field::Cuda,
            Field::NvidiaDriver,
            Field::GpuArchitectures,
            Field::GpuNeed,
        ]
        .iter()
        .any(|f| {
            image.value_lost(*f)
                && image
                    .sources
                    .get(f)
                    .is_none_or(|k| !k.starts_with("com.nvidia."))
        });
    let soft_need = image.cuda.is_some() || image.nvidia_require.is_some();
    if !hard_need && !soft_need {
        return;
    }
    let need = describe_gpu_need(image);
    let Some(nv) = &node.gpu.nvidia else {
        let node_says = node
            .gpu
            .nvml_note
            .clone()
            .unwrap_or_else(|| "no NVIDIA GPU".into());
        if let Some(GpuNeed::Other(api)) = declared_need {
            out.push(
                Finding::new(
                    Check::Gpu,
                    Level::Degraded,
                    format!("the image needs a {} GPU, which hpcc cannot see (it fingerprints NVIDIA GPUs only)", crate::text::escape(api)),
                )
                .evidence(need, node_says),
            );
        } else if hard_need {
            out.push(
                Finding::new(
                    Check::Gpu,
                    Level::Fatal,
                    if need == "a GPU" {
                        "the image needs a GPU, the node has no NVIDIA GPU".to_owned()
                    } else {
                        format!("the image needs a GPU ({need}), the node has no NVIDIA GPU")
                    },
                )
                .evidence(need, node_says),
            );
        } else {
            out.push(
                Finding::new(
                    Check::Gpu,
                    Level::Degraded,
                    format!("the image is a CUDA image ({need}) and the node has no NVIDIA GPU: it runs only if its application has a CPU path"),
                )
                .evidence(need, node_says),
            );
        }
        return;
    };
    let node_desc = format!(
        "driver {}, CUDA {}, {} GPU(s): {}",
        crate::text::escape(&nv.driver_version),
        nv.cuda_driver_version
            .as_ref()
            .map_or("unknown".into(), |v| v.to_string()),
        nv.devices.len(),
        nv.devices
            .iter()
            .map(|d| format!(
                "{} sm_{}{}",
                crate::text::escape(&d.name),
                d.compute_capability.0,
                d.compute_capability.1
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut fatal = Vec::new();
    if let Some(GpuNeed::Other(api)) = declared_need {
        fatal.push(format!(
            "the image is built for {} GPUs, the node's are NVIDIA",
            crate::text::escape(api)
        ));
    }
    // NVIDIA_REQUIRE_CUDA knows forward compatibility (older datacenter
    // drivers with cuda-compat); the toolkit version label does not.
    let cuda = image
        .cuda
        .as_ref()
        .filter(|_| !(from_nvidia(image, Field::Cuda) && image.nvidia_require.is_some()));
    if let Some(cuda) = cuda {
        let want = cuda.major_minor();
        match &nv.cuda_driver_version {
            Some(have) if have.major_minor() < want => fatal.push(format!(
                "CUDA {cuda} is newer than the driver supports (CUDA {have})"
            )),
            None => fatal.push(format!(
                "CUDA {cuda} is needed and the driver's CUDA version is unknown"
            )),
            _ => {}
        }
    }
    if let Some(min) = &image.nvidia_driver {
        match Version::parse(&nv.driver_version) {
            Ok(have) if &have < min => fatal.push(format!(
                "driver {min} is needed, the node has {}",
                crate::text::escape(&nv.driver_version)
            )),
            Err(_) => fatal.push(format!(
                "driver {min} is needed and the node's driver version {:?} cannot be compared",
                crate::text::escape(&nv.driver_version)
            )),
            _ => {}
        }
    }
    if let Some(req) = &image.nvidia_require {
        if !require_holds(req, nv) {
            fatal.push(format!("NVIDIA_REQUIRE_CUDA is not met ({req})"));
        }
    }
    let mut degraded = Vec::new();
    if !image.gpu_architectures.is_empty() {
        let fits = |cc: (u32, u32)| {
            image
                .gpu_architectures
                .iter()
                .any(|a: &SmArch| a.major == cc.0 && a.minor <= cc.1)
        };
        let usable = nv
            .devices
            .iter()
            .filter(|d| fits(d.compute_capability))
            .count();
        if usable == 0 {
            fatal.push(format!(
                "no GPU of this node has one of the architectures the image is built for ({})",
                join(&image.gpu_architectures)
            ));
        } else if usable < nv.devices.len() {
            degraded.push(format!(
                "only {usable} of {} GPUs match the image's architectures ({})",
                nv.devices.len(),
                join(&image.gpu_architectures)
            ));
        }
    }
    if !fatal.is_empty() {
        out.push(
            Finding::new(Check::Gpu, Level::Fatal, fatal.join("; ")).evidence(need, node_desc),
        );
        return;
    }
    out.selection.nvidia_gpus = policy.tweaks.gpu;
    if !policy.tweaks.gpu {
        degraded.push("the site does not allow GPU exposure ([tweaks] gpu = false)".into());
    }
    let (level, reason) = if degraded.is_empty() {
        (Level::Ok, "the node's NVIDIA GPUs fit the image".to_owned())
    } else {
        (Level::Degraded, degraded.join("; "))
    };
    out.push(Finding::new(Check::Gpu, level, reason).evidence(need, node_desc));
}

/// Whether one alternative of `NVIDIA_REQUIRE_CUDA` holds on this node.
/// Brands are not fingerprinted: a brand constraint is taken as met, the
/// NVIDIA container toolkit checks it again when it starts the container.
fn require_holds(req: &NvidiaRequire, nv: &NvidiaFingerprint) -> bool {
    let driver = Version::parse(&nv.driver_version).ok();
    let holds = |c: &Constraint| {
        let Some(want) = &c.version else {
            return true;
        };
        match c.key {
            RequireKey::Cuda => nv
                .cuda_driver_version
                .as_ref()
                .is_some_and(|have| c.op.holds(&have.major_minor(), &want.major_minor())),
            RequireKey::Driver => driver.as_ref().is_some_and(|have| {
                // `driver<471` with a 470.x driver: compare at the
                // precision the constraint is written with.
                let have = Version::from_parts(
                    &have.parts()[..want.parts().len().min(have.parts().len())],
                );
                c.op.holds(&have, want)
            }),
            RequireKey::Arch => nv.devices.iter().any(|d| {
                let cc = Version::from_parts(&[
                    u64::from(d.compute_capability.0),
                    u64::from(d.compute_capability.1),
                ]);
                c.op.holds(&cc, want)
            }),
            RequireKey::Brand => true,
        }
    };
    req.alternatives.iter().any(|alt| alt.iter().all(holds))
}

fn describe_gpu_need(image: &ImageSpec) -> String {
    let mut parts = Vec::new();
    if let Some(n) = image.gpu.as_ref().filter(|n| n.needs_gpu()) {
        parts.push(n.to_string());
    }
    if let Some(c) = &image.cuda {
        parts.push(format!("CUDA {c}"));
    }
    if let Some(d) = &image.nvidia_driver {
        parts.push(format!("driver >= {d}"));
    }
    if !image.gpu_architectures.is_empty() {
        parts.push(join(&image.gpu_architectures));
    }
    if let Some(r) = &image.nvidia_require {
        parts.push(format!("NVIDIA_REQUIRE_CUDA {r}"));
    }
    if parts.is_empty() {
        parts.push("a GPU".into());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::tests::{image, node, verdict};
    use super::super::{Check, Level, Score};
    use crate::fingerprint::{NodeFingerprint, NvidiaDevice, NvidiaFingerprint};
    use crate::version::Version;

    #[test]
    fn cuda_on_cpu_node_is_red() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "x86_64",
            ),
            (
                "org.supercontainers.hardware.gpu.nvidia.cuda.version",
                "12.1",
            ),
        ]);
        let v = verdict(&img, &node("icelake"));
        assert_eq!(v.score(), Score::Red);
        assert!(v
            .with_level(Level::Fatal)
            .any(|f| f.check == Check::Gpu && f.reason.contains("no NVIDIA GPU")));
    }
    fn gpu_node(cuda: &str, cc: (u32, u32)) -> NodeFingerprint {
        let mut n = node("icelake");
        n.gpu.nvidia = Some(NvidiaFingerprint {
            driver_version: "535.104.05".into(),
            cuda_driver_version: Version::parse_prefix(cuda),
            devices: vec![NvidiaDevice {
                index: 0,
                name: "NVIDIA A100".into(),
                uuid: "GPU-0".into(),
                compute_capability: cc,
                minor_number: Some(0),
            }],
        });
        n
    }
    #[test]
    fn cuda_newer_than_driver_is_red() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            (
                "org.supercontainers.hardware.gpu.nvidia.cuda.version",
                "12.4",
            ),
        ]);
        let v = verdict(&img, &gpu_node("12.2", (8, 0)));
        assert_eq!(v.score(), Score::Red);
        let f = v.with_level(Level::Fatal).next().unwrap();
        assert!(
            f.reason.contains("12.4") && f.reason.contains("12.2"),
            "{f:?}"
        );
        let v = verdict(&img, &gpu_node("12.4", (8, 0)));
        assert_eq!(v.score(), Score::Green, "{v:#?}");
        assert!(v.selection.nvidia_gpus);
    }
    #[test]
    fn gpu_architecture_absent_is_red() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            (
                "org.supercontainers.hardware.gpu.nvidia.architecture",
                "sm_90",
            ),
        ]);
        assert_eq!(verdict(&img, &gpu_node("12.2", (8, 0))).score(), Score::Red);
        assert_eq!(
            verdict(&img, &gpu_node("12.2", (9, 0))).score(),
            Score::Green
        );
        let img86 = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            (
                "org.supercontainers.hardware.gpu.nvidia.architecture",
                "sm_80",
            ),
        ]);
        // sm_80 code runs on an sm_86 device (same major, newer minor).
        assert_eq!(
            verdict(&img86, &gpu_node("12.2", (8, 6))).score(),
            Score::Green
        );
    }
    #[test]
    fn gpu_available_is_a_need() {
        let img = image(&[
            ("io.archspec.cpu.target", "amd64"),
            ("org.supercontainers.hardware.gpu.available", "yes"),
        ]);
        assert_eq!(verdict(&img, &node("icelake")).score(), Score::Red);
        assert_eq!(
            verdict(&img, &gpu_node("12.2", (8, 0))).score(),
            Score::Orange,
            "generic x86_64 build, GPU fine"
        );
        let no = image(&[
            ("io.archspec.cpu.target", "icelake"),
            ("org.supercontainers.hardware.gpu.available", "no"),
        ]);
        assert_eq!(verdict(&no, &node("icelake")).score(), Score::Green);
    }
    #[test]
    fn nvidia_metadata_is_conditional_and_compared_at_driver_precision() {
        let cuda_env = |label: &str, env: &str| {
            crate::annotations::ImageSpec::read(
                [
                    (
                        "org.supercontainers.hardware.cpu.optimized.version",
                        "icelake",
                    ),
                    ("com.nvidia.cuda.version", label),
                ],
                [env],
            )
        };
        let img = cuda_env(
            "12.0.107",
            "NVIDIA_REQUIRE_CUDA=cuda>=12.0 brand=tesla,driver>=470,driver<471",
        );
        // No GPU: noted, not refused.
        let v = verdict(&img, &node("icelake"));
        assert_eq!(v.score(), Score::Orange, "{v:#?}");
        // A 12.0 driver runs a 12.0.107 toolkit.
        assert_eq!(
            verdict(&img, &gpu_node("12.0", (8, 0))).score(),
            Score::Green
        );
        // A 470 driver (CUDA 11.4) is allowed by forward compatibility:
        // the requirement decides, not the toolkit label.
        let mut n = gpu_node("11.4", (8, 0));
        n.gpu.nvidia.as_mut().unwrap().driver_version = "470.82.01".into();
        assert_eq!(
            verdict(&img, &n).score(),
            Score::Green,
            "{:#?}",
            verdict(&img, &n)
        );
        // The label alone is the toolkit's version, compared as major.minor.
        let label_only = crate::annotations::ImageSpec::read(
            [
                (
                    "org.supercontainers.hardware.cpu.optimized.version",
                    "icelake",
                ),
                ("com.nvidia.cuda.version", "12.0.107"),
            ],
            std::iter::empty(),
        );
        assert_eq!(verdict(&label_only, &n).score(), Score::Red);
        let env_only = crate::annotations::ImageSpec::read(
            [(
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            )],
            ["NVIDIA_REQUIRE_CUDA=cuda>=12.0 brand=tesla,driver>=470,driver<471"],
        );
        assert_eq!(
            verdict(&env_only, &n).score(),
            Score::Green,
            "{:#?}",
            verdict(&env_only, &n)
        );
        n.gpu.nvidia.as_mut().unwrap().driver_version = "460.32.03".into();
        let v = verdict(&env_only, &n);
        assert_eq!(v.score(), Score::Red);
        assert!(v
            .findings()
            .iter()
            .any(|f| f.reason.contains("NVIDIA_REQUIRE_CUDA")));
    }
    #[test]
    fn driver_is_shown_as_given() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            (
                "org.supercontainers.hardware.gpu.nvidia.driver.version",
                "550.54.15",
            ),
        ]);
        let v = verdict(&img, &gpu_node("12.2", (8, 0)));
        let f = v.with_level(Level::Fatal).next().unwrap();
        assert!(
            f.reason.contains("550.54.15") && f.reason.contains("535.104.05"),
            "{}",
            f.reason
        );
    }
}
