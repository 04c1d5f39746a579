//! MPI rules: `mpi_replace` (the host MPI of the image's ABI family),
//! `libfabric_inject` (the `FABRIC_1.x` the image needs) and `ucx_replace`.

use super::{Check, Finding, Level, Verdict};
use crate::annotations::{ImageSpec, PortabilityMode};
use crate::fingerprint::NodeFingerprint;
use hpcc_config::Policy;

pub(super) fn check(image: &ImageSpec, node: &NodeFingerprint, policy: &Policy, out: &mut Verdict) {
    let modes = &image.portability_modes;
    let implementation = image.mpi_implementation;
    if modes.contains(&PortabilityMode::MpiReplace) {
        mpi_replace(image, node, policy, out);
    } else if let Some(imp) = implementation {
        if imp.abi().is_some() {
            out.push(
                Finding::new(
                    Check::Mpi,
                    Level::Degraded,
                    format!("the image's own {imp} is used (it does not allow mpi_replace): inter-node performance depends on how it was built"),
                )
                .evidence(imp.to_string(), host_mpis(node)),
            );
        }
    }
    if modes.contains(&PortabilityMode::LibfabricInject) {
        libfabric_inject(image, node, policy, out);
    }
    if modes.contains(&PortabilityMode::UcxReplace) {
        let usable = !node.ucx.is_empty() && node.ucx.iter().all(|l| l.usable());
        if !policy.tweaks.ucx_replace {
            out.push(Finding::new(
                Check::Mpi,
                Level::Degraded,
                "the image allows ucx_replace, the site does not ([tweaks] ucx_replace = false): the image's UCX is used",
            ));
        } else if !usable {
            out.push(Finding::new(
                Check::Mpi,
                Level::Degraded,
                "the image allows ucx_replace, but this node offers no usable host UCX ([ucx] in the policy): the image's UCX is used",
            ).evidence("ucx_replace", describe_libs(&node.ucx)));
        } else {
            out.selection.ucx = true;
            out.push(
                Finding::new(
                    Check::Mpi,
                    Level::Ok,
                    "the host's UCX will replace the image's",
                )
                .evidence("ucx_replace", describe_libs(&node.ucx)),
            );
        }
    }
}

fn host_mpis(node: &NodeFingerprint) -> String {
    if node.mpi.is_empty() {
        return "no host MPI offered by the policy".into();
    }
    node.mpi
        .iter()
        .map(|m| {
            format!(
                "{} ({} ABI{})",
                m.name,
                m.abi,
                if m.usable() { "" } else { ", missing" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_libs(libs: &[crate::fingerprint::HostLibrary]) -> String {
    if libs.is_empty() {
        return "none".into();
    }
    libs.iter()
        .map(|l| match &l.error {
            None => l.path.display().to_string(),
            Some(e) => format!("{} ({e})", l.path.display()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn mpi_replace(image: &ImageSpec, node: &NodeFingerprint, policy: &Policy, out: &mut Verdict) {
    let evidence_node = host_mpis(node);
    if !policy.tweaks.mpi_replace {
        out.push(Finding::new(
            Check::Mpi,
            Level::Degraded,
            "the image allows mpi_replace, the site does not ([tweaks] mpi_replace = false): the image's own MPI is used",
        ).evidence("mpi_replace", evidence_node));
        return;
    }
    let Some(imp) = image.mpi_implementation else {
        out.push(Finding::new(
            Check::Mpi,
            Level::Degraded,
            "the image allows mpi_replace but does not say which MPI it carries (org.supercontainers.mpi.implementation): its own MPI is used",
        ).evidence("mpi_replace, implementation unknown", evidence_node));
        return;
    };
    let Some(abi) = imp.abi() else {
        out.push(Finding::new(
            Check::Mpi,
            Level::Ok,
            format!("the image uses {imp}, which links no MPI library: nothing to replace"),
        ));
        return;
    };
    let image_desc = format!(
        "{imp}{} ({abi} ABI), mpi_replace",
        image
            .mpi_version
            .as_ref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default()
    );
    if node.mpi.is_empty() {
        out.push(Finding::new(
            Check::Mpi,
            Level::Degraded,
            "the image allows mpi_replace, but this node offers no host MPI ([mpi.NAME] in the policy): the image's own MPI is used",
        ).evidence(image_desc, evidence_node));
        return;
    }
    let same_family: Vec<_> = node.mpi.iter().filter(|m| m.abi == abi).collect();
    if same_family.is_empty() {
        out.push(
            Finding::new(
                Check::Mpi,
                Level::Fatal,
                format!(
                    "the image carries {imp} ({abi} ABI) and asks for mpi_replace, but this node offers only {}: the libraries are not interchangeable",
                    node.mpi.iter().map(|m| format!("{} ({} ABI)", m.name, m.abi)).collect::<Vec<_>>().join(", ")
                ),
            )
            .evidence(image_desc, evidence_node),
        );
        return;
    }
    match same_family.iter().find(|m| m.usable()) {
        Some(m) => {
            out.selection.mpi = Some(m.name.clone());
            out.push(
                Finding::new(
                    Check::Mpi,
                    Level::Ok,
                    format!(
                        "the host MPI `{}` ({} ABI) will replace the image's {imp}",
                        m.name, m.abi
                    ),
                )
                .evidence(image_desc, evidence_node),
            );
        }
        None => out.push(
            Finding::new(
                Check::Mpi,
                Level::Fatal,
                format!(
                    "the host MPI for the {abi} ABI is declared but not usable on this node: {}",
                    same_family
                        .iter()
                        .map(|m| describe_libs(&m.libraries))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )
            .evidence(image_desc, evidence_node),
        ),
    }
}

fn libfabric_inject(image: &ImageSpec, node: &NodeFingerprint, policy: &Policy, out: &mut Verdict) {
    let need = image
        .libfabric_abi
        .as_ref()
        .map_or("libfabric_inject".into(), |v| format!("libfabric ABI {v}"));
    if !policy.tweaks.libfabric_inject {
        out.push(Finding::new(
            Check::Mpi,
            Level::Degraded,
            "the image allows libfabric_inject, the site does not ([tweaks] libfabric_inject = false): the image's libfabric is used",
        ));
        return;
    }
    let Some(lib) = node.libfabric.as_ref().filter(|l| l.usable()) else {
        out.push(
            Finding::new(
                Check::Mpi,
                Level::Degraded,
                "the image allows libfabric_inject, but this node offers no usable host libfabric ([libfabric] in the policy): the image's libfabric is used",
            )
            .evidence(need, describe_libs(node.libfabric.as_slice())),
        );
        return;
    };
    let fabric_versions: Vec<&String> = lib
        .version_defs
        .iter()
        .filter(|v| v.starts_with("FABRIC_"))
        .collect();
    let node_desc = format!(
        "{} (defines {})",
        lib.path.display(),
        if fabric_versions.is_empty() {
            "no FABRIC_* versions".into()
        } else {
            fabric_versions
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
    if let Some(abi) = &image.libfabric_abi {
        let wanted = format!("FABRIC_{}.{}", abi.major(), abi.minor());
        if !lib.version_defs.contains(&wanted) {
            out.push(
                Finding::new(
                    Check::Mpi,
                    Level::Fatal,
                    format!("the image's MPI needs libfabric ABI {wanted}, which the host libfabric does not define"),
                )
                .evidence(need, node_desc),
            );
            return;
        }
    }
    out.selection.libfabric = true;
    out.push(
        Finding::new(
            Check::Mpi,
            Level::Ok,
            "the host's libfabric will be injected",
        )
        .evidence(need, node_desc),
    );
}

#[cfg(test)]
mod tests {
    use super::super::tests::lib;
    use super::super::tests::{image, node, verdict, with_mpich};
    use super::super::{evaluate, Check, Level, Score};
    use hpcc_config::Policy;

    #[test]
    fn openmpi_image_on_mpich_node_is_red() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "x86_64_v3",
            ),
            ("org.supercontainers.mpi.implementation", "openmpi"),
            ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
        ]);
        let v = verdict(&img, &with_mpich(node("icelake")));
        assert_eq!(v.score(), Score::Red);
        let f = v.with_level(Level::Fatal).next().unwrap();
        assert_eq!(f.check, Check::Mpi);
        assert!(
            f.reason.contains("openmpi") && f.reason.contains("mpich"),
            "{f:?}"
        );
        assert!(v.selection.mpi.is_none());
    }
    #[test]
    fn mpich_family_image_selects_host_mpich() {
        for imp in ["mpich", "intelmpi", "cray-mpich", "mvapich"] {
            let img = image(&[
                (
                    "org.supercontainers.hardware.cpu.optimized.version",
                    "icelake",
                ),
                ("org.supercontainers.mpi.implementation", imp),
                ("org.supercontainers.mpi.portability.mode", "mpich_replace"),
            ]);
            let v = verdict(&img, &with_mpich(node("icelake")));
            assert_eq!(v.score(), Score::Green, "{imp}: {v:#?}");
            assert_eq!(v.selection.mpi.as_deref(), Some("mpich"));
        }
    }
    #[test]
    fn mpi_replace_forbidden_by_site_is_orange() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            ("org.supercontainers.mpi.implementation", "mpich"),
            ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
        ]);
        let mut p = Policy::default();
        p.tweaks.mpi_replace = false;
        let v = evaluate(&img, &with_mpich(node("icelake")), &p);
        assert_eq!(v.score(), Score::Orange);
        assert!(v.selection.mpi.is_none());
    }
    #[test]
    fn missing_host_mpi_library_is_red() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            ("org.supercontainers.mpi.implementation", "mpich"),
            ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
        ]);
        let mut n = with_mpich(node("icelake"));
        n.mpi[0].libraries[0].error = Some("No such file".into());
        assert_eq!(verdict(&img, &n).score(), Score::Red);
    }
    #[test]
    fn libfabric_abi_must_be_defined_by_host() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            (
                "org.supercontainers.mpi.portability.mode",
                "libfabric_inject",
            ),
            ("org.supercontainers.libfabric.abi.version", "1.7"),
        ]);
        let mut n = node("icelake");
        let mut l = lib("/usr/lib/x86_64-linux-gnu/libfabric.so.1");
        l.version_defs = ["FABRIC_1.0", "FABRIC_1.6"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        n.libfabric = Some(l.clone());
        assert_eq!(verdict(&img, &n).score(), Score::Red);
        l.version_defs.insert("FABRIC_1.7".into());
        n.libfabric = Some(l);
        let v = verdict(&img, &n);
        assert_eq!(v.score(), Score::Green, "{v:#?}");
        assert!(v.selection.libfabric);
    }
}
