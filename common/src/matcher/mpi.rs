//! MPI rules. `mpi.portability.mode` lists what the image *allows*: the
//! matcher honours every allowed mode that the node and the policy can
//! honour (`mpi_replace` with the host MPI of the image's ABI family,
//! `libfabric_inject` with a host libfabric that defines the `FABRIC_1.x`
//! the image needs, `ucx_replace` with a usable host UCX) and reports the
//! others as not chosen.
//!
//! A mode that cannot be honoured never costs more than not allowing it:
//! the image then runs with its own MPI stack, exactly as if it had not
//! allowed the mode. So allowing more never makes a verdict worse (tested
//! over every subset of modes, node and policy in this module's tests).

use super::{Check, Finding, Level, Verdict};
use crate::annotations::{Field, ImageSpec, MpiImplementation, NoHostLibraries, PortabilityMode};
use crate::fingerprint::NodeFingerprint;
use hpcc_config::{MpiAbi, Policy};

/// Why a mode the image allows is not chosen on this node. Not an error:
/// the image then runs with its own stack, and the reason goes into a
/// finding.
#[derive(Debug, thiserror::Error)]
enum NotChosen {
    #[error("the site does not allow it ([tweaks] {0} = false)")]
    SiteForbids(&'static str),
    #[error(transparent)]
    Libc(#[from] NoHostLibraries),
    #[error("the image declares MPI implementations of two ABI families")]
    TwoMpiFamilies,
    #[error("the image's MPI implementation could not be read")]
    MpiUnreadable,
    #[error(
        "the image does not say which MPI it carries (org.supercontainers.mpi.implementation)"
    )]
    MpiUnnamed,
    #[error("{0} links no MPI library: nothing to replace")]
    NoMpiLibrary(MpiImplementation),
    #[error("this node offers no host MPI ([mpi.NAME] in the policy)")]
    NoHostMpi,
    #[error("the image carries {imp} ({abi} ABI) and this node offers only {offered}")]
    OtherFamily {
        imp: MpiImplementation,
        abi: MpiAbi,
        offered: String,
    },
    #[error("the host MPI for the {abi} ABI is declared but not usable on this node: {libs}")]
    HostMpiUnusable { abi: MpiAbi, libs: String },
    #[error("the libfabric ABI the image needs could not be read")]
    LibfabricAbiUnreadable,
    #[error("this node offers no usable host libfabric ([libfabric] in the policy): {0}")]
    NoLibfabric(String),
    #[error("the image's MPI needs libfabric ABI {wanted}, which the host libfabric does not define ({node})")]
    LibfabricAbiMissing { wanted: String, node: String },
    #[error("this node offers no usable host UCX ([ucx] in the policy): {0}")]
    NoUcx(String),
}

pub(super) fn check(image: &ImageSpec, node: &NodeFingerprint, policy: &Policy, out: &mut Verdict) {
    let allows = |m| image.portability_modes.contains(&m);
    // MPI first: whether it is replaced decides how much the others matter.
    let mpi = if allows(PortabilityMode::MpiReplace) {
        Some(mpi_replace(image, node, policy))
    } else {
        None
    };
    let mut notes = Vec::new();
    match (mpi, image.mpi_implementation.filter(|m| m.abi().is_some())) {
        (Some(Ok((name, finding))), _) => {
            out.selection.mpi = Some(name);
            out.push(finding);
        }
        (Some(Err(why)), Some(imp)) => out.push(
            Finding::new(
                Check::Mpi,
                Level::Degraded,
                format!("the image's own {imp} is used: mpi_replace is allowed but not chosen, {why}"),
            )
            .evidence(format!("{imp}, mpi_replace"), host_mpis(node)),
        ),
        (Some(Err(why)), None) => notes.push(format!("mpi_replace not chosen: {why}")),
        (None, Some(imp)) => out.push(
            Finding::new(
                Check::Mpi,
                Level::Degraded,
                format!("the image's own {imp} is used (it does not allow mpi_replace): inter-node performance depends on how it was built"),
            )
            .evidence(imp.to_string(), host_mpis(node)),
        ),
        (None, None) => {}
    }
    if allows(PortabilityMode::LibfabricInject) {
        match libfabric_inject(image, node, policy) {
            Ok(f) => {
                out.selection.libfabric = true;
                out.push(f);
            }
            Err(why) => notes.push(format!("libfabric_inject not chosen: {why}")),
        }
    }
    if allows(PortabilityMode::UcxReplace) {
        match ucx_replace(image, node, policy) {
            Ok(f) => {
                out.selection.ucx = true;
                out.push(f);
            }
            Err(why) => notes.push(format!("ucx_replace not chosen: {why}")),
        }
    }
    for n in notes {
        // Not chosen costs nothing beyond the image's own stack, which the
        // MPI finding above already scores.
        out.push(Finding::new(Check::Mpi, Level::Ok, n));
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

/// The host MPI that replaces the image's and its finding, or why none can.
fn mpi_replace(
    image: &ImageSpec,
    node: &NodeFingerprint,
    policy: &Policy,
) -> Result<(String, Finding), NotChosen> {
    if !policy.tweaks.mpi_replace {
        return Err(NotChosen::SiteForbids("mpi_replace"));
    }
    image.takes_host_libraries()?;
    if image.mpi_families().len() > 1 {
        return Err(NotChosen::TwoMpiFamilies);
    }
    let Some(imp) = image.mpi_implementation else {
        return Err(if image.value_lost(Field::MpiImplementation) {
            NotChosen::MpiUnreadable
        } else {
            NotChosen::MpiUnnamed
        });
    };
    let Some(abi) = imp.abi() else {
        return Err(NotChosen::NoMpiLibrary(imp));
    };
    if node.mpi.is_empty() {
        return Err(NotChosen::NoHostMpi);
    }
    let same_family: Vec<_> = node.mpi.iter().filter(|m| m.abi == abi).collect();
    if same_family.is_empty() {
        return Err(NotChosen::OtherFamily {
            imp,
            abi,
            offered: node
                .mpi
                .iter()
                .map(|m| format!("{} ({} ABI)", m.name, m.abi))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let Some(m) = same_family.iter().find(|m| m.usable()) else {
        return Err(NotChosen::HostMpiUnusable {
            abi,
            libs: same_family
                .iter()
                .map(|m| describe_libs(&m.libraries))
                .collect::<Vec<_>>()
                .join("; "),
        });
    };
    let image_desc = format!(
        "{imp}{} ({abi} ABI), mpi_replace",
        image
            .mpi_version
            .as_ref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default()
    );
    let finding = Finding::new(
        Check::Mpi,
        Level::Ok,
        format!(
            "the host MPI `{}` ({} ABI) will replace the image's {imp}",
            m.name, m.abi
        ),
    )
    .evidence(image_desc, host_mpis(node));
    Ok((m.name.clone(), finding))
}

fn libfabric_inject(
    image: &ImageSpec,
    node: &NodeFingerprint,
    policy: &Policy,
) -> Result<Finding, NotChosen> {
    if !policy.tweaks.libfabric_inject {
        return Err(NotChosen::SiteForbids("libfabric_inject"));
    }
    image.takes_host_libraries()?;
    if image.value_lost(Field::LibfabricAbi) && image.libfabric_abi.is_none() {
        return Err(NotChosen::LibfabricAbiUnreadable);
    }
    let Some(lib) = node.libfabric.as_ref().filter(|l| l.usable()) else {
        return Err(NotChosen::NoLibfabric(describe_libs(
            node.libfabric.as_slice(),
        )));
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
    let need = image
        .libfabric_abi
        .as_ref()
        .map_or("libfabric_inject".into(), |v| format!("libfabric ABI {v}"));
    if let Some(abi) = &image.libfabric_abi {
        let wanted = format!("FABRIC_{}.{}", abi.major(), abi.minor());
        if !lib.version_defs.contains(&wanted) {
            return Err(NotChosen::LibfabricAbiMissing {
                wanted,
                node: node_desc,
            });
        }
    }
    Ok(Finding::new(
        Check::Mpi,
        Level::Ok,
        "the host's libfabric will be injected",
    )
    .evidence(need, node_desc))
}

fn ucx_replace(
    image: &ImageSpec,
    node: &NodeFingerprint,
    policy: &Policy,
) -> Result<Finding, NotChosen> {
    if !policy.tweaks.ucx_replace {
        return Err(NotChosen::SiteForbids("ucx_replace"));
    }
    image.takes_host_libraries()?;
    if node.ucx.is_empty() || !node.ucx.iter().all(|l| l.usable()) {
        return Err(NotChosen::NoUcx(describe_libs(&node.ucx)));
    }
    Ok(Finding::new(
        Check::Mpi,
        Level::Ok,
        "the host's UCX will replace the image's",
    )
    .evidence("ucx_replace", describe_libs(&node.ucx)))
}

#[cfg(test)]
mod tests {
    use super::super::tests::lib;
    use super::super::tests::{image, node, verdict, with_mpich};
    use super::super::{evaluate, Check, Level, Score};
    use crate::annotations::{ImageSpec, PortabilityMode};
    use crate::fingerprint::{HostMpiFingerprint, NodeFingerprint};
    use hpcc_config::{MpiAbi, Policy};

    fn mpi_image(imp: &str, modes: &str) -> ImageSpec {
        image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            ("org.supercontainers.mpi.implementation", imp),
            ("org.supercontainers.mpi.portability.mode", modes),
        ])
    }

    fn with_libfabric(mut n: NodeFingerprint, defs: &[&str]) -> NodeFingerprint {
        let mut l = lib("/usr/lib/x86_64-linux-gnu/libfabric.so.1");
        l.version_defs = defs.iter().map(|s| s.to_string()).collect();
        n.libfabric = Some(l);
        n
    }

    fn with_ucx(mut n: NodeFingerprint) -> NodeFingerprint {
        n.ucx = vec![lib("/usr/lib/libucp.so.0")];
        n
    }

    #[test]
    fn openmpi_image_on_mpich_node_runs_its_own_mpi() {
        let img = mpi_image("openmpi", "mpi_replace");
        let v = verdict(&img, &with_mpich(node("icelake")));
        assert_eq!(v.score(), Score::Orange, "{v:#?}");
        let f = v.with_level(Level::Degraded).next().unwrap();
        assert_eq!(f.check, Check::Mpi);
        assert!(
            f.reason.contains("Open MPI")
                && f.reason.contains("mpich")
                && f.reason.contains("not chosen"),
            "{f:?}"
        );
        assert!(v.selection.mpi.is_none());
    }

    #[test]
    fn allowing_more_picks_what_the_node_honours() {
        // The case: an Open MPI image on an MPICH node with a host
        // libfabric and UCX.
        let n = with_ucx(with_libfabric(with_mpich(node("icelake")), &["FABRIC_1.6"]));
        let all = verdict(
            &mpi_image("openmpi", "mpi_replace,libfabric_inject,ucx_replace"),
            &n,
        );
        let one = verdict(&mpi_image("openmpi", "libfabric_inject"), &n);
        assert_eq!(all.score(), Score::Orange, "{all:#?}");
        assert_eq!(one.score(), Score::Orange, "{one:#?}");
        assert!(all.selection.libfabric && all.selection.ucx && all.selection.mpi.is_none());
    }

    #[test]
    fn mpich_family_image_selects_host_mpich() {
        for imp in ["mpich", "intelmpi", "cray-mpich", "mvapich", "Intel MPI"] {
            let v = verdict(
                &mpi_image(imp, "mpich_replace"),
                &with_mpich(node("icelake")),
            );
            assert_eq!(v.score(), Score::Green, "{imp}: {v:#?}");
            assert_eq!(v.selection.mpi.as_deref(), Some("mpich"));
        }
    }

    #[test]
    fn mpi_replace_forbidden_by_site_is_orange() {
        let mut p = Policy::default();
        p.tweaks.mpi_replace = false;
        let v = evaluate(
            &mpi_image("mpich", "mpi_replace"),
            &with_mpich(node("icelake")),
            &p,
        );
        assert_eq!(v.score(), Score::Orange);
        assert!(v.selection.mpi.is_none());
    }

    #[test]
    fn missing_host_mpi_library_is_not_chosen() {
        let mut n = with_mpich(node("icelake"));
        n.mpi[0].libraries[0].error = Some("No such file".into());
        let v = verdict(&mpi_image("mpich", "mpi_replace"), &n);
        assert_eq!(v.score(), Score::Orange);
        assert!(v.findings().iter().any(|f| f.reason.contains("not usable")));
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
        let n = with_libfabric(node("icelake"), &["FABRIC_1.0", "FABRIC_1.6"]);
        let v = verdict(&img, &n);
        assert!(!v.selection.libfabric);
        assert!(
            v.findings().iter().any(|f| f.reason.contains("FABRIC_1.7")),
            "{v:#?}"
        );
        let n = with_libfabric(node("icelake"), &["FABRIC_1.6", "FABRIC_1.7"]);
        let v = verdict(&img, &n);
        assert_eq!(v.score(), Score::Green, "{v:#?}");
        assert!(v.selection.libfabric);
    }

    #[test]
    fn two_mpi_families_are_not_replaced() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            ("org.supercontainers.mpi.implementation", "mpich"),
            ("org.supercontainers.mpi.provider", "openmpi"),
            ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
        ]);
        let v = verdict(&img, &with_mpich(node("icelake")));
        assert!(v.selection.mpi.is_none());
        assert_eq!(v.score(), Score::Orange, "{v:#?}");
    }

    /// Every subset of modes x images x nodes x policies: allowing one more
    /// mode never makes the score worse.
    #[test]
    fn allowing_a_mode_never_makes_a_verdict_worse() {
        let imps = [
            None,
            Some("openmpi"),
            Some("mpich"),
            Some("threadmpi"),
            Some("foo"),
        ];
        let libcs = [None, Some("glibc"), Some("musl"), Some("uclibc")];
        let abis = [None, Some("1.6"), Some("1.7"), Some("x")];
        let mut openmpi_host = node("icelake");
        openmpi_host.mpi.push(HostMpiFingerprint {
            name: "ompi".into(),
            abi: MpiAbi::Openmpi,
            libraries: vec![lib("/usr/lib/libmpi.so.40")],
        });
        let mut broken = with_mpich(node("icelake"));
        broken.mpi[0].libraries[0].error = Some("gone".into());
        let nodes = [
            node("icelake"),
            with_mpich(node("icelake")),
            openmpi_host.clone(),
            broken,
            with_libfabric(with_mpich(node("icelake")), &["FABRIC_1.6"]),
            with_ucx(openmpi_host),
            with_ucx(with_libfabric(
                with_mpich(node("icelake")),
                &["FABRIC_1.6", "FABRIC_1.7"],
            )),
        ];
        let mut policies = vec![Policy::default()];
        for i in 0..3 {
            let mut p = Policy::default();
            match i {
                0 => p.tweaks.mpi_replace = false,
                1 => p.tweaks.libfabric_inject = false,
                _ => p.tweaks.ucx_replace = false,
            }
            policies.push(p);
        }
        let mut checked = 0;
        for imp in imps {
            for libc in libcs {
                for abi in abis {
                    let score_with = |mask: usize, n: &NodeFingerprint, p: &Policy| {
                        let modes: Vec<&str> = PortabilityMode::ALL
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| mask & (1 << i) != 0)
                            .map(|(_, m)| m.as_str())
                            .collect();
                        let joined = modes.join(",");
                        let mut pairs = vec![(
                            "org.supercontainers.hardware.cpu.optimized.version",
                            "icelake",
                        )];
                        if let Some(i) = imp {
                            pairs.push(("org.supercontainers.mpi.implementation", i));
                        }
                        if let Some(l) = libc {
                            pairs.push(("org.supercontainers.libc.implementation", l));
                        }
                        if let Some(a) = abi {
                            pairs.push(("org.supercontainers.libfabric.abi.version", a));
                        }
                        if !modes.is_empty() {
                            pairs.push(("org.supercontainers.mpi.portability.mode", &joined));
                        }
                        evaluate(&image(&pairs), n, p)
                    };
                    for n in &nodes {
                        for p in &policies {
                            let scores: Vec<_> = (0..8usize).map(|m| score_with(m, n, p)).collect();
                            for mask in 0..8usize {
                                for bit in 0..3 {
                                    if mask & (1 << bit) != 0 {
                                        continue;
                                    }
                                    let (base, more) = (&scores[mask], &scores[mask | (1 << bit)]);
                                    assert!(
                                        more.score() <= base.score(),
                                        "allowing {} made it worse: {imp:?} {libc:?} {abi:?} mask {mask}\n{base:#?}\n{more:#?}",
                                        PortabilityMode::ALL[bit]
                                    );
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 5_000, "{checked}");
    }
}
