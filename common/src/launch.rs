//! One launch decision, shared by the OCI hook, the SPANK plugin and the CLI:
//! launch context + fingerprint + policy + user request -> [`Plan`].

use crate::annotations::ImageSpec;
use crate::fingerprint::NodeFingerprint;
use crate::matcher::{self, Check, Finding, Level, Selection, Verdict};
use crate::oci::LaunchContext;
use crate::plan::{self, Plan, Tweaks, UserRequest};
use crate::rootfs::Rootfs;
use crate::tweaks::{self, host::Host, host::RealHost};
use hpcc_config::Policy;

/// Why a plan could not be made (hpcc's own failure, handled by
/// `on_error`). Refusals are not errors: they are a [`Plan`].
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Planning a tweak failed in a way that is not the image's fault.
    #[error("planning the launch tweaks failed: {0}")]
    Tweaks(String),
}

/// Parses the image's annotations; invalid ones give a red verdict naming key
/// and value (the image is refused, not hpcc).
pub fn image_spec(ctx: &LaunchContext) -> Result<ImageSpec, Verdict> {
    ImageSpec::from_annotations(
        ctx.annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(|e| Verdict {
        score: matcher::Score::Red,
        findings: vec![Finding {
            check: Check::Annotations,
            level: Level::Fatal,
            reason: format!("the image's annotations are invalid: {e}"),
            image: Some(format!("{}={:?}", e.key, e.value)),
            node: None,
        }],
        selection: Selection::default(),
    })
}

/// The host linker cache the tweak planner resolves host libraries with.
pub const HOST_LD_CACHE: &str = "/etc/ld.so.cache";

/// Decides one launch. The tweaks are planned only for a start.
pub fn plan(
    ctx: &LaunchContext,
    node: &NodeFingerprint,
    policy: &Policy,
    request: &UserRequest,
) -> Result<Plan, LaunchError> {
    let host = RealHost::new(std::path::Path::new(HOST_LD_CACHE));
    plan_with(ctx, node, policy, request, &host)
}

/// [`plan`] against a given host (tests use a fake one). An empty
/// `ctx.rootfs` means there is no image to inspect (`hpcc match
/// --annotations`): the image side of the tweaks is then not checked.
///
/// Tweak problems that are the image's fault come back as findings: they
/// are added to the verdict and the decision is taken again, so the
/// policy's enforcement applies to them like to any other finding and
/// `refusal_line` explains them.
pub fn plan_with(
    ctx: &LaunchContext,
    node: &NodeFingerprint,
    policy: &Policy,
    request: &UserRequest,
    host: &dyn Host,
) -> Result<Plan, LaunchError> {
    let verdict = match image_spec(ctx) {
        Ok(spec) => matcher::evaluate(&spec, node, policy),
        Err(v) => v,
    };
    let (mut verdict, mut decision) = plan::decide(&verdict, policy, request);
    let mut tweaks = Tweaks::default();
    if decision.allows_start() {
        let sel = &verdict.selection;
        let needs_image = sel.mpi.is_some() || sel.libfabric || sel.ucx;
        let rootfs = if needs_image && !ctx.rootfs.as_os_str().is_empty() {
            Some(Rootfs::open(&ctx.rootfs).map_err(|e| LaunchError::Tweaks(e.to_string()))?)
        } else {
            None
        };
        let planned = tweaks::plan(ctx, node, policy, sel, host, rootfs.as_ref())
            .map_err(|e| LaunchError::Tweaks(e.to_string()))?;
        if !planned.findings.is_empty() || planned.selection != verdict.selection {
            verdict.findings.extend(planned.findings);
            verdict.findings.sort_by_key(|f| f.check);
            verdict.selection = planned.selection;
            (verdict, decision) = plan::decide(&verdict, policy, request);
        }
        if decision.allows_start() {
            tweaks = planned.tweaks;
        }
    }
    Ok(Plan {
        container: ctx.id.clone(),
        node: node.hostname.clone(),
        verdict,
        decision,
        tweaks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::tests::node;
    use std::collections::BTreeMap;

    fn ctx(pairs: &[(&str, &str)]) -> LaunchContext {
        LaunchContext {
            id: "c1".into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            pid: None,
            annotations: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            process_env: vec![],
        }
    }

    #[test]
    fn invalid_annotation_refuses_naming_key_and_value() {
        let c = ctx(&[(
            "org.supercontainers.hardware.cpu.optimized.version",
            "pentium9000",
        )]);
        let p = plan(
            &c,
            &node("icelake"),
            &Policy::default(),
            &UserRequest::default(),
        )
        .unwrap();
        assert!(!p.decision.allows_start());
        let line = p
            .refusal_line(std::path::Path::new("/etc/hpcc/hook.toml"))
            .unwrap();
        assert!(
            line.contains("pentium9000") && line.contains("cpu.optimized.version"),
            "{line}"
        );
    }

    #[test]
    fn compatible_image_starts() {
        let c = ctx(&[(
            "org.supercontainers.hardware.cpu.optimized.version",
            "x86_64",
        )]);
        let p = plan(
            &c,
            &node("icelake"),
            &Policy::default(),
            &UserRequest::default(),
        )
        .unwrap();
        assert!(p.decision.allows_start());
    }

    const MPICH_IMAGE: &[(&str, &str)] = &[
        (
            "org.supercontainers.hardware.cpu.optimized.version",
            "icelake",
        ),
        ("org.supercontainers.mpi.implementation", "mpich"),
        ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
    ];

    const HOST_MPICH: &str = "/usr/lib/x86_64-linux-gnu/libmpich.so.12";

    /// An image with a real glibc and, when `mpi`, a real libmpich.so.12.
    fn image(mpi: bool) -> crate::rootfs::tests::TempDir {
        let libc = (
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/x86_64-linux-gnu/libc.so.6",
        );
        let mpich = (HOST_MPICH, "/usr/lib/x86_64-linux-gnu/libmpich.so.12");
        let files: Vec<(&str, &str)> = if mpi { vec![libc, mpich] } else { vec![libc] };
        crate::tweaks::mpi::tests::rootfs_with(&files, &[])
    }

    fn mpich_ctx(rootfs: &std::path::Path) -> LaunchContext {
        let mut c = ctx(MPICH_IMAGE);
        c.rootfs = rootfs.to_owned();
        c
    }

    #[test]
    fn mpi_replace_plans_host_mpich_over_the_image_library() {
        let t = image(true);
        let policy = crate::tweaks::mpi::tests::policy_mpich(&[HOST_MPICH]);
        let n = crate::matcher::tests::with_mpich(node("icelake"));
        let p = plan(&mpich_ctx(&t.0), &n, &policy, &UserRequest::default()).unwrap();
        assert!(p.decision.allows_start(), "{:#?}", p.verdict);
        let m = &p.tweaks.mounts[0];
        assert_eq!(m.source, std::path::PathBuf::from(HOST_MPICH));
        assert_eq!(
            m.destination,
            std::path::PathBuf::from("/usr/lib/x86_64-linux-gnu/libmpich.so.12")
        );
        assert!(!p.tweaks.ld_paths.is_empty());
        let text = crate::report::plan(&p, false);
        assert!(
            text.contains("tweaks:") && text.contains("libhwloc.so.15"),
            "{text}"
        );
    }

    #[test]
    fn image_without_mpi_library_is_refused_through_the_policy() {
        let t = image(false);
        let policy = crate::tweaks::mpi::tests::policy_mpich(&[HOST_MPICH]);
        let n = crate::matcher::tests::with_mpich(node("icelake"));
        let p = plan(&mpich_ctx(&t.0), &n, &policy, &UserRequest::default()).unwrap();
        assert!(!p.decision.allows_start());
        assert!(p.tweaks.is_empty());
        assert!(p.verdict.selection.mpi.is_none());
        let line = p
            .refusal_line(std::path::Path::new("/etc/hpcc/hook.toml"))
            .unwrap();
        assert!(
            line.contains("libmpich.so.12") && line.contains("checks.mpi = \"enforce\""),
            "{line}"
        );
        // checks.mpi = warn: starts, without the replacement.
        let mut policy = policy;
        policy.checks.mpi = hpcc_config::Enforcement::Warn;
        let p = plan(&mpich_ctx(&t.0), &n, &policy, &UserRequest::default()).unwrap();
        assert!(p.decision.allows_start());
        assert!(p
            .tweaks
            .mounts
            .iter()
            .all(|m| m.source != std::path::Path::new(HOST_MPICH)));
    }

    #[test]
    fn glibc_too_old_follows_checks_libc() {
        use crate::tweaks::host::fake::{lib, FakeHost};
        let t = image(true);
        let mut h = FakeHost::default();
        let host_mpi = h.add(
            "/usr/lib/x86_64-linux-gnu",
            lib("libmpich.so.12", &[], &["2.99"]),
        );
        let mut policy = crate::tweaks::mpi::tests::policy_mpich(&[host_mpi.to_str().unwrap()]);
        let n = crate::matcher::tests::with_mpich(node("icelake"));
        // Default checks.libc = warn: starts with the image's own MPI, and
        // the warning names both versions.
        let p = plan_with(&mpich_ctx(&t.0), &n, &policy, &UserRequest::default(), &h).unwrap();
        let crate::plan::Decision::Start { warnings } = &p.decision else {
            panic!("{:#?}", p.decision)
        };
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("2.99") && w.contains("2.36")),
            "{warnings:?}"
        );
        assert!(p.tweaks.mounts.is_empty(), "{:#?}", p.tweaks);
        // enforce: refused, with both versions in the line.
        policy.checks.libc = hpcc_config::Enforcement::Enforce;
        let p = plan_with(&mpich_ctx(&t.0), &n, &policy, &UserRequest::default(), &h).unwrap();
        let line = p
            .refusal_line(std::path::Path::new("/etc/hpcc/hook.toml"))
            .unwrap();
        assert!(
            line.contains("GLIBC_2.99") && line.contains("2.36") && line.contains("checks.libc"),
            "{line}"
        );
        // --hpcc-mpi=replace makes the dropped replacement fatal under mpi.
        policy.checks.libc = hpcc_config::Enforcement::Warn;
        let req = UserRequest {
            mpi: crate::plan::MpiChoice::Replace,
            ..Default::default()
        };
        let p = plan_with(&mpich_ctx(&t.0), &n, &policy, &req, &h).unwrap();
        assert!(!p.decision.allows_start());
    }

    #[test]
    fn without_rootfs_the_host_side_is_planned_and_the_gap_said() {
        let policy = crate::tweaks::mpi::tests::policy_mpich(&[HOST_MPICH]);
        let n = crate::matcher::tests::with_mpich(node("icelake"));
        let p = plan(
            &mpich_ctx(std::path::Path::new("")),
            &n,
            &policy,
            &UserRequest::default(),
        )
        .unwrap();
        assert!(p.decision.allows_start());
        assert_eq!(
            p.verdict.score,
            crate::matcher::Score::Green,
            "{:#?}",
            p.verdict
        );
        assert!(p
            .verdict
            .findings
            .iter()
            .any(|f| f.reason.contains("not inspected")));
        assert!(p
            .tweaks
            .mounts
            .iter()
            .any(|m| m.destination == std::path::Path::new("/opt/hpcc/lib/mpich/libmpich.so.12")));
    }

    #[test]
    fn missing_rootfs_is_hpccs_error() {
        let policy = crate::tweaks::mpi::tests::policy_mpich(&[HOST_MPICH]);
        let n = crate::matcher::tests::with_mpich(node("icelake"));
        let e = plan(
            &mpich_ctx(std::path::Path::new("/nonexistent-rootfs")),
            &n,
            &policy,
            &UserRequest::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent-rootfs"), "{e}");
    }

    #[test]
    fn cdi_device_from_annotation() {
        let t = crate::rootfs::tests::TempDir::new("launch-cdi");
        std::fs::write(
            t.0.join("t.json"),
            r#"{"cdiVersion":"0.6.0","kind":"hpcc.test/dev","devices":[{"name":"test0","containerEdits":{"deviceNodes":[{"path":"/dev/hpcc-test0","hostPath":"/dev/null","type":"c","major":1,"minor":3}]}}]}"#,
        )
        .unwrap();
        let mut policy = Policy::default();
        policy.gpu.cdi_spec_dirs = vec![t.0.clone()];
        let c = ctx(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "x86_64",
            ),
            ("cdi.k8s.io/hpcc", "hpcc.test/dev=test0"),
        ]);
        let p = plan(&c, &node("icelake"), &policy, &UserRequest::default()).unwrap();
        assert!(p.decision.allows_start());
        assert_eq!(p.tweaks.devices.len(), 1);
        assert_eq!(
            p.tweaks.devices[0].path,
            std::path::PathBuf::from("/dev/hpcc-test0")
        );
        let c = ctx(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "x86_64",
            ),
            ("cdi.k8s.io/hpcc", "hpcc.test/dev=nope"),
        ]);
        let p = plan(&c, &node("icelake"), &policy, &UserRequest::default()).unwrap();
        let line = p
            .refusal_line(std::path::Path::new("/etc/hpcc/hook.toml"))
            .unwrap();
        assert!(
            line.contains("hpcc.test/dev=nope") && line.contains("checks.gpu"),
            "{line}"
        );
    }
}
