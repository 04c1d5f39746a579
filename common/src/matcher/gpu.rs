//! NVIDIA GPU rules: the driver's CUDA version, the driver minimum and the
//! GPU architectures the image is built for.

use super::{join, Check, Finding, Level, Verdict};
use crate::annotations::{ImageSpec, SmArch};
use crate::fingerprint::NodeFingerprint;
use hpcc_config::Policy;

pub(super) fn check(image: &ImageSpec, node: &NodeFingerprint, policy: &Policy, out: &mut Verdict) {
    let wants_gpu = image.cuda.is_some()
        || !image.gpu_architectures.is_empty()
        || image.nvidia_driver.is_some();
    if !wants_gpu {
        return;
    }
    let need = describe_gpu_need(image);
    let Some(nv) = &node.gpu.nvidia else {
        out.push(
            Finding::new(
                Check::Gpu,
                Level::Fatal,
                format!("the image needs an NVIDIA GPU ({need}), the node has none"),
            )
            .evidence(
                need,
                node.gpu
                    .nvml_note
                    .clone()
                    .unwrap_or_else(|| "no NVIDIA GPU".into()),
            ),
        );
        return;
    };
    let node_desc = format!(
        "driver {}, CUDA {}, {} GPU(s): {}",
        nv.driver_version,
        nv.cuda_driver_version
            .as_ref()
            .map_or("unknown".into(), |v| v.to_string()),
        nv.devices.len(),
        nv.devices
            .iter()
            .map(|d| format!(
                "{} sm_{}{}",
                d.name, d.compute_capability.0, d.compute_capability.1
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut fatal = Vec::new();
    if let Some(cuda) = &image.cuda {
        match &nv.cuda_driver_version {
            Some(have) if have < cuda => fatal.push(format!(
                "CUDA {cuda} is newer than the driver supports (CUDA {have})"
            )),
            None => fatal.push(format!(
                "CUDA {cuda} is needed and the driver's CUDA version is unknown"
            )),
            _ => {}
        }
    }
    if let Some(min) = &image.nvidia_driver {
        match crate::version::Version::parse_prefix(&nv.driver_version) {
            Some(have) if &have < min => fatal.push(format!(
                "driver {min} is needed, the node has {}",
                nv.driver_version
            )),
            _ => {}
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

fn describe_gpu_need(image: &ImageSpec) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &image.cuda {
        parts.push(format!("CUDA {c}"));
    }
    if let Some(d) = &image.nvidia_driver {
        parts.push(format!("driver >= {d}"));
    }
    if !image.gpu_architectures.is_empty() {
        parts.push(join(&image.gpu_architectures));
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
            .any(|f| f.check == Check::Gpu && f.reason.contains("none")));
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
}
