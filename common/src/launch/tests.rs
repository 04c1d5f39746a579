//! The launch decision end to end (annotations, fingerprint, policy,
//! user request, tweak planning) on hand-written nodes and real rootfs
//! copies.

use super::*;
use crate::matcher::{evaluate, Score};
use crate::testutil::{node, policy_mpich, rootfs_with, with_mpich, TempDir};

fn ctx(pairs: &[(&str, &str)]) -> LaunchContext {
    crate::testutil::ctx(&[], pairs)
}

fn spec(pairs: &[(&str, &str)]) -> ImageSpec {
    ImageSpec::read(pairs.iter().copied(), std::iter::empty())
}

fn line(p: &Plan) -> String {
    refusal_line(p, Path::new("/etc/hpcc/hook.toml")).unwrap()
}

#[test]
fn invalid_annotation_refuses_naming_key_and_value() {
    let c = ctx(&[(
        "org.supercontainers.hardware.cpu.optimized.version",
        "pentium9000",
    )]);
    let p = decide(
        &c,
        &node("icelake"),
        &Policy::default(),
        &UserRequest::default(),
    )
    .unwrap();
    assert!(!p.decision.allows_start());
    let line = line(&p);
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
    let p = decide(
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
fn image(mpi: bool) -> TempDir {
    let libc = (
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/x86_64-linux-gnu/libc.so.6",
    );
    let mpich = (HOST_MPICH, "/usr/lib/x86_64-linux-gnu/libmpich.so.12");
    let files: Vec<(&str, &str)> = if mpi { vec![libc, mpich] } else { vec![libc] };
    rootfs_with(&files, &[])
}

fn mpich_ctx(rootfs: &std::path::Path) -> LaunchContext {
    let mut c = ctx(MPICH_IMAGE);
    c.rootfs = rootfs.to_owned();
    c
}

#[test]
fn mpi_replace_plans_host_mpich_over_the_image_library() {
    let t = image(true);
    let policy = policy_mpich(&[HOST_MPICH]);
    let n = with_mpich(node("icelake"));
    let p = decide(&mpich_ctx(&t.0), &n, &policy, &UserRequest::default()).unwrap();
    assert!(p.decision.allows_start(), "{:#?}", p.verdict);
    let m = &p.tweaks.mounts[0];
    assert_eq!(m.source, std::path::PathBuf::from(HOST_MPICH));
    assert_eq!(
        m.destination,
        std::path::PathBuf::from("/usr/lib/x86_64-linux-gnu/libmpich.so.12")
    );
    assert!(!p.tweaks.ld_cache.is_empty());
    let text = crate::report::plan(&p, false);
    assert!(
        text.contains("tweaks:") && text.contains("libhwloc.so.15"),
        "{text}"
    );
}

#[test]
fn image_without_mpi_library_is_refused_through_the_policy() {
    let t = image(false);
    let policy = policy_mpich(&[HOST_MPICH]);
    let n = with_mpich(node("icelake"));
    let p = decide(&mpich_ctx(&t.0), &n, &policy, &UserRequest::default()).unwrap();
    assert!(!p.decision.allows_start());
    assert!(p.tweaks.is_empty());
    assert!(p.verdict.selection.mpi.is_none());
    let line = line(&p);
    assert!(
        line.contains("libmpich.so.12") && line.contains("checks.mpi = \"enforce\""),
        "{line}"
    );
    // checks.mpi = warn: starts, without the replacement.
    let mut policy = policy;
    policy.checks.mpi = hpcc_config::Enforcement::Warn;
    let p = decide(&mpich_ctx(&t.0), &n, &policy, &UserRequest::default()).unwrap();
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
    let mut policy = policy_mpich(&[host_mpi.to_str().unwrap()]);
    let n = with_mpich(node("icelake"));
    // Default checks.libc = warn: starts with the image's own MPI, and
    // the warning names both versions.
    let p = decide_with(&mpich_ctx(&t.0), &n, &policy, &UserRequest::default(), &h).unwrap();
    let Decision::Start { warnings } = &p.decision else {
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
    let p = decide_with(&mpich_ctx(&t.0), &n, &policy, &UserRequest::default(), &h).unwrap();
    let line = line(&p);
    assert!(
        line.contains("GLIBC_2.99") && line.contains("2.36") && line.contains("checks.libc"),
        "{line}"
    );
    // --hpcc-mpi=replace makes the dropped replacement fatal under mpi.
    policy.checks.libc = hpcc_config::Enforcement::Warn;
    let req = UserRequest {
        mpi: MpiChoice::Replace,
        ..Default::default()
    };
    let p = decide_with(&mpich_ctx(&t.0), &n, &policy, &req, &h).unwrap();
    assert!(!p.decision.allows_start());
}

#[test]
fn without_rootfs_the_host_side_is_planned_and_the_gap_said() {
    let policy = policy_mpich(&[HOST_MPICH]);
    let n = with_mpich(node("icelake"));
    let p = decide(
        &mpich_ctx(std::path::Path::new("")),
        &n,
        &policy,
        &UserRequest::default(),
    )
    .unwrap();
    assert!(p.decision.allows_start());
    assert_eq!(p.verdict.score(), Score::Green, "{:#?}", p.verdict);
    assert!(p
        .verdict
        .findings()
        .iter()
        .all(|f| !f.reason.contains("not inspected")));
    assert!(
        p.notes.iter().any(|n| n.contains("not inspected")),
        "{:?}",
        p.notes
    );
    assert!(p
        .tweaks
        .mounts
        .iter()
        .any(|m| m.destination == std::path::Path::new("/dev/hpcc/lib/mpich/libmpich.so.12")));
}

#[test]
fn missing_rootfs_is_hpccs_error() {
    let policy = policy_mpich(&[HOST_MPICH]);
    let n = with_mpich(node("icelake"));
    let e = decide(
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
    let t = TempDir::new("launch-cdi");
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
    // Asked for by an annotation, neither allocated nor allowed: the
    // container starts without it, and the plan says why.
    let p = decide(&c, &node("icelake"), &policy, &UserRequest::default()).unwrap();
    assert!(p.decision.allows_start());
    assert!(p.tweaks.devices.is_empty());
    assert!(p
        .verdict
        .findings()
        .iter()
        .any(|f| f.reason.contains("not exposed")));
    policy.gpu.allowed = vec!["hpcc.test/dev=test0".into()];
    let p = decide(&c, &node("icelake"), &policy, &UserRequest::default()).unwrap();
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
    let p = decide(&c, &node("icelake"), &policy, &UserRequest::default()).unwrap();
    let line = line(&p);
    assert!(
        line.contains("hpcc.test/dev=nope") && line.contains("checks.gpu"),
        "{line}"
    );
}

const AVX512: &[(&str, &str)] = &[(
    "org.supercontainers.hardware.cpu.optimized.version",
    "x86_64_v4",
)];

#[test]
fn red_under_enforce_refuses_with_policy_named() {
    let p = Policy::default();
    let v = evaluate(&spec(AVX512), &node("haswell"), &p);
    let (v, d) = apply_policy(v.clone(), &p, &UserRequest::default());
    assert_eq!(v.score(), Score::Red);
    let Decision::Refuse { reasons } = &d else {
        panic!("{d:?}")
    };
    assert_eq!(reasons[0].policy, "checks.cpu = \"enforce\"");
    let plan = Plan {
        container: "c1".into(),
        node: "node001".into(),
        verdict: v,
        decision: d,
        tweaks: Tweaks::default(),
        notes: vec![],
        slurm: None,
    };
    let line = line(&plan);
    assert!(
        line.starts_with("hpcc: refused to start container c1 on node001:"),
        "{line}"
    );
    assert!(
        line.contains("x86_64_v4") && line.contains("haswell") && line.contains("avx512f"),
        "{line}"
    );
    assert!(
        line.contains("checks.cpu = \"enforce\" in /etc/hpcc/hook.toml"),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

#[test]
fn warn_starts_and_keeps_the_reason() {
    let mut p = Policy::default();
    p.checks.cpu = Enforcement::Warn;
    let v = evaluate(&spec(AVX512), &node("haswell"), &p);
    let (_, d) = apply_policy(v.clone(), &p, &UserRequest::default());
    let Decision::Start { warnings } = d else {
        panic!()
    };
    assert!(warnings[0].contains("avx512f"));
    assert!(warnings[0].contains("warn"));
}

#[test]
fn off_starts_silently() {
    let mut p = Policy::default();
    p.checks.cpu = Enforcement::Off;
    let v = evaluate(&spec(AVX512), &node("haswell"), &p);
    assert_eq!(
        apply_policy(v.clone(), &p, &UserRequest::default()).1,
        Decision::Start { warnings: vec![] }
    );
}

#[test]
fn user_relaxation_is_bounded_by_admin() {
    let mut p = Policy::default();
    let v = evaluate(&spec(AVX512), &node("haswell"), &p);
    let req = UserRequest {
        enforcement: Some(Enforcement::Off),
        ..Default::default()
    };
    // may_relax_to = warn: off becomes warn, the start goes on with a warning.
    let (_, d) = apply_policy(v.clone(), &p, &req);
    assert!(matches!(&d, Decision::Start { warnings } if warnings.len() == 1));
    p.users.may_relax_to = Enforcement::Enforce;
    assert!(!apply_policy(v.clone(), &p, &req).1.allows_start());
}

#[test]
fn unannotated_follows_policy() {
    let mut p = Policy::default();
    let v = evaluate(&ImageSpec::default(), &node("icelake"), &p);
    assert!(apply_policy(v.clone(), &p, &UserRequest::default())
        .1
        .allows_start());
    p.unannotated = UnannotatedAction::Refuse;
    let (_, d) = apply_policy(v.clone(), &p, &UserRequest::default());
    let Decision::Refuse { reasons } = d else {
        panic!()
    };
    assert_eq!(reasons[0].policy, "unannotated = \"refuse\"");
}

#[test]
fn user_mpi_choices() {
    let p = Policy::default();
    let img = spec(&[
        (
            "org.supercontainers.hardware.cpu.optimized.version",
            "icelake",
        ),
        ("org.supercontainers.mpi.implementation", "mpich"),
        ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
    ]);
    let v = evaluate(&img, &with_mpich(node("icelake")), &p);
    let none = UserRequest {
        mpi: MpiChoice::None,
        ..Default::default()
    };
    let (v2, d) = apply_policy(v.clone(), &p, &none);
    assert!(d.allows_start());
    assert!(v2.selection.mpi.is_none());
    assert_eq!(v2.score(), Score::Orange);
    // Replace required on a node without host MPI: refused.
    let v = evaluate(&img, &node("icelake"), &p);
    let req = UserRequest {
        mpi: MpiChoice::Replace,
        ..Default::default()
    };
    let (v3, d) = apply_policy(v.clone(), &p, &req);
    assert_eq!(v3.score(), Score::Red);
    assert!(!d.allows_start());
}

fn refuse_unannotated() -> Policy {
    Policy {
        unannotated: UnannotatedAction::Refuse,
        ..Policy::default()
    }
}

#[test]
fn unknown_or_look_alike_keys_do_not_pass_unannotated_refuse() {
    let cyr = "\u{43e}rg.supercontainers.hardware.cpu.optimized.version";
    for pairs in [
        vec![("org.supercontainers.future.thing", "1")],
        vec![(cyr, "zen3")],
        vec![("org.supercontainers.python.version", "3.11")],
        vec![
            (cyr, "zen3"),
            ("org.supercontainers.docs.x.link", "https://x.org"),
        ],
    ] {
        let p = decide(
            &ctx(&pairs),
            &node("icelake"),
            &refuse_unannotated(),
            &UserRequest::default(),
        )
        .unwrap();
        assert!(!p.decision.allows_start(), "{pairs:?}: {:#?}", p.verdict);
        assert!(p.verdict.unannotated);
        let l = line(&p);
        assert!(
            l.contains("unannotated = \\\"refuse\\\"") || l.contains("unannotated"),
            "{l}"
        );
    }
    // The look-alike is named, escaped, among the findings.
    let p = decide(
        &ctx(&[(cyr, "zen3\nhpcc: ok")]),
        &node("icelake"),
        &refuse_unannotated(),
        &UserRequest::default(),
    )
    .unwrap();
    let text = crate::report::verdict(&p.verdict, false);
    assert!(
        text.contains("looks like org.supercontainers.hardware.cpu.optimized.version"),
        "{text}"
    );
    assert!(!text.contains("zen3\nhpcc"), "{text}");
}

/// Every image about which nothing could be checked is refused under
/// `unannotated = "refuse"`, whatever keys it carries, and the line names
/// the keys seen (escaped) and says none could be checked.
#[test]
fn unannotated_refuse_holds_for_every_image_with_nothing_checkable() {
    const CPU: &str = "org.supercontainers.hardware.cpu.optimized.version";
    let trailing = format!("{CPU} ");
    let upper = CPU.replace("org.", "ORG.");
    let singular = CPU.replace("supercontainers", "supercontainer");
    let cyr = CPU.replacen('o', "\u{43e}", 1);
    // (what, annotations, text the refusal line must show)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        ("no key", vec![], &[]),
        (
            "unknown key with a suggestion",
            vec![("org.supercontainers.zzz", "x86_64")],
            &["org.supercontainers.zzz", "did you mean"],
        ),
        (
            "look-alike",
            vec![(&cyr, "x86_64")],
            &["\\u{43e}rg.supercontainers"],
        ),
        (
            "wrong case",
            vec![(&upper, "x86_64")],
            &["ORG.supercontainers"],
        ),
        (
            "trailing space",
            vec![(&trailing, "x86_64")],
            &["version =\"x86_64"],
        ),
        (
            "singular prefix",
            vec![(&singular, "x86_64")],
            &[
                "org.supercontainer.hardware",
                "did you mean org.supercontainers.hardware.cpu.optimized.version",
            ],
        ),
        (
            "documentation only",
            vec![("org.supercontainers.docs.quickstart.link", "https://x.org")],
            &["documentation"],
        ),
        (
            "informational only",
            vec![("org.supercontainers.python.version", "3.11")],
            &["python.version"],
        ),
        (
            "unreadable MPI",
            vec![("org.supercontainers.mpi.implementation", "zzz")],
            &["mpi.implementation=\"zzz\"", "not an MPI implementation"],
        ),
        (
            "unreadable libc",
            vec![("org.supercontainers.libc.implementation", "zzz")],
            &["libc.implementation"],
        ),
        (
            "only unknown portability modes",
            vec![("org.supercontainers.mpi.portability.mode", "zzz")],
            &["portability.mode"],
        ),
        (
            "unreadable CPU target",
            vec![(CPU, "pentium9000")],
            &["pentium9000"],
        ),
        (
            "a value that says nothing",
            vec![("org.supercontainers.mpi.implementation", "none")],
            &["mpi.implementation"],
        ),
        (
            "CPU mode only",
            vec![("org.supercontainers.hardware.cpu.optimized.mode", "generic")],
            &["cpu.optimized.mode"],
        ),
    ];
    // Every check at warn: an unreadable value must not be what refuses,
    // only the `unannotated` rule.
    let mut policy = refuse_unannotated();
    policy.checks.cpu = Enforcement::Warn;
    policy.checks.gpu = Enforcement::Warn;
    policy.checks.mpi = Enforcement::Warn;
    policy.checks.kernel = Enforcement::Warn;
    for (what, pairs, shown) in cases {
        let p = decide(
            &ctx(&pairs),
            &node("icelake"),
            &policy,
            &UserRequest::default(),
        )
        .unwrap();
        assert!(p.verdict.unannotated, "{what}: {:#?}", p.verdict);
        let Decision::Refuse { reasons } = &p.decision else {
            panic!("{what}: started: {:#?}", p.verdict);
        };
        assert!(
            reasons
                .iter()
                .any(|r| r.policy == "unannotated = \"refuse\""),
            "{what}: {reasons:?}"
        );
        let l = line(&p);
        assert!(l.contains("no annotation hpcc can check"), "{what}: {l}");
        if !pairs.is_empty() {
            assert!(l.contains("none could be checked"), "{what}: {l}");
        }
        for s in shown {
            assert!(l.contains(s), "{what}: {s:?} not in {l}");
        }
        assert!(
            !l.contains('\u{43e}'),
            "{what}: a non-ASCII key letter unescaped: {l}"
        );
        // The same image under the default `allow` starts (or is refused
        // by a check), and the verdict says nothing could be checked.
        let text = crate::report::verdict(&p.verdict, false);
        assert!(
            text.contains("no annotation hpcc can check"),
            "{what}: {text}"
        );
    }
}

/// The `unannotated` rule is the admin's: a user's `--hpcc=off`, even
/// where `may_relax_to = "off"`, relaxes checks but not this rule.
#[test]
fn a_users_relaxation_does_not_relax_unannotated_refuse() {
    let mut policy = refuse_unannotated();
    policy.users.may_relax_to = Enforcement::Off;
    let req = UserRequest {
        enforcement: Some(Enforcement::Off),
        ..Default::default()
    };
    let p = decide(
        &ctx(&[("org.supercontainers.zzz", "1")]),
        &node("icelake"),
        &policy,
        &req,
    )
    .unwrap();
    assert!(!p.decision.allows_start(), "{:#?}", p.decision);
}

/// Two CPU keys that disagree: judged by each target, never by the one the
/// author prefers. Another platform next to the node's refuses; two
/// targets of the node's platform are both checked (the most demanding
/// decides), whichever key carries which.
#[test]
fn conflicting_cpu_keys_are_judged_by_every_target() {
    const V: &str = "org.supercontainers.hardware.cpu.optimized.version";
    for (a, b) in [
        (V, "io.archspec.cpu.target"),
        ("io.archspec.cpu.target", V),
        (V, "org.supercontainers.hardware.cpu.optimized.architecture"),
    ] {
        for (x, y) in [
            ("x86_64", "a64fx"),
            ("a64fx", "x86_64"),
            ("x86_64", "sapphirerapids"),
            ("sapphirerapids", "x86_64"),
        ] {
            let p = decide(
                &ctx(&[(a, x), (b, y)]),
                &node("icelake"),
                &Policy::default(),
                &UserRequest::default(),
            )
            .unwrap();
            assert!(
                !p.decision.allows_start(),
                "{a}={x} {b}={y}: {:#?}",
                p.verdict
            );
            assert!(line(&p).contains("checks.cpu"), "{}", line(&p));
        }
    }
}

/// A look-alike of the CPU key carrying a harder target than the real key:
/// ignored (no engine reads it either), reported, and the real key decides.
#[test]
fn a_look_alike_cpu_key_is_reported_and_the_real_key_decides() {
    const V: &str = "org.supercontainers.hardware.cpu.optimized.version";
    let trailing = format!("{V} ");
    let p = decide(
        &ctx(&[(V, "x86_64"), (&trailing, "a64fx")]),
        &node("icelake"),
        &Policy::default(),
        &UserRequest::default(),
    )
    .unwrap();
    assert!(p.decision.allows_start());
    let text = crate::report::verdict(&p.verdict, false);
    assert!(text.contains("looks like"), "{text}");
}

/// A readable requirement next to junk passes the `unannotated` rule: the
/// rule is about what could be checked, not about the junk.
#[test]
fn a_readable_requirement_next_to_junk_is_annotated() {
    let p = decide(
        &ctx(&[
            ("org.supercontainers.zzz", "1"),
            ("org.supercontainers.mpi.implementation", "zzz"),
            ("org.supercontainers.libc.implementation", "glibc"),
        ]),
        &node("icelake"),
        &refuse_unannotated(),
        &UserRequest::default(),
    )
    .unwrap();
    assert!(!p.verdict.unannotated, "{:#?}", p.verdict);
    assert!(p.decision.allows_start(), "{:#?}", p.decision);
}

#[test]
fn a_known_key_passes_unannotated_refuse() {
    let p = decide(
        &ctx(&[("io.archspec.cpu.target", "amd64")]),
        &node("icelake"),
        &refuse_unannotated(),
        &UserRequest::default(),
    )
    .unwrap();
    assert!(p.decision.allows_start(), "{:#?}", p.verdict);
}

#[test]
fn unreadable_values_cost_only_where_a_check_needs_them() {
    // An unreadable advisory value: starts, green.
    let c = ctx(&[
        (
            "org.supercontainers.hardware.cpu.optimized.version",
            "icelake",
        ),
        (
            "org.supercontainers.hardware.cpu.optimized.mode",
            "generic-ish",
        ),
        ("org.supercontainers.python.version", "three"),
        ("org.supercontainers.mpi.portability.mode", "mpi_system"),
    ]);
    let p = decide(
        &c,
        &node("icelake"),
        &Policy::default(),
        &UserRequest::default(),
    )
    .unwrap();
    assert!(p.decision.allows_start());
    assert_eq!(p.verdict.score(), Score::Green, "{:#?}", p.verdict);
    assert_eq!(
        p.verdict
            .with_level(Level::Ok)
            .filter(|f| f.check == Check::Annotations
                || f.check == Check::Cpu
                || f.check == Check::Mpi)
            .count(),
        4
    );
    // An unreadable CPU target: refused under checks.cpu = "enforce",
    // started with a warning under "warn".
    let c = ctx(&[(
        "org.supercontainers.hardware.cpu.optimized.version",
        "znver9",
    )]);
    let p = decide(
        &c,
        &node("zen3"),
        &Policy::default(),
        &UserRequest::default(),
    )
    .unwrap();
    assert!(!p.decision.allows_start());
    let l = line(&p);
    assert!(l.contains("znver9") && l.contains("checks.cpu"), "{l}");
    let mut warn = Policy::default();
    warn.checks.cpu = Enforcement::Warn;
    let p = decide(&c, &node("zen3"), &warn, &UserRequest::default()).unwrap();
    assert!(p.decision.allows_start());
    assert_eq!(p.verdict.score(), Score::Orange, "{:#?}", p.verdict);
}

/// An Alpine-shaped image: musl's loader, no `libc.so.6`, and an MPICH
/// library (a glibc one copied in: only its name and place matter).
fn musl_image() -> TempDir {
    rootfs_with(
        &[
            ("/bin/true", "/lib/ld-musl-x86_64.so.1"),
            (HOST_MPICH, "/usr/lib/libmpich.so.12"),
        ],
        &[],
    )
}

#[test]
fn musl_image_never_gets_host_libraries_annotated_or_detected() {
    let t = musl_image();
    let policy = policy_mpich(&[HOST_MPICH]);
    let n = with_mpich(node("icelake"));
    // Not annotated as musl: the planner finds musl's loader, drops the
    // host MPI whole and says why. Under the default enforcement the fatal
    // finding refuses: the user asked for a replacement that cannot be.
    let p = decide(&mpich_ctx(&t.0), &n, &policy, &UserRequest::default()).unwrap();
    assert!(p.tweaks.is_empty(), "{:#?}", p.tweaks);
    let f = p
        .verdict
        .findings()
        .iter()
        .find(|f| f.reason.contains("musl"))
        .unwrap_or_else(|| panic!("{:#?}", p.verdict));
    assert!(
        f.reason.contains("/lib/ld-musl-x86_64.so.1") && f.reason.contains("built against glibc"),
        "{}",
        f.reason
    );
    assert_eq!(f.image.as_deref(), Some("musl"));
    // Annotated as musl: the host MPI is never chosen, the image's runs.
    let mut c = mpich_ctx(&t.0);
    c.annotations
        .insert("org.supercontainers.libc.provider".into(), "musl".into());
    let p = decide(&c, &n, &policy, &UserRequest::default()).unwrap();
    assert!(p.decision.allows_start(), "{:#?}", p.verdict);
    assert!(p.tweaks.is_empty(), "{:#?}", p.tweaks);
    assert!(p.verdict.selection.mpi.is_none());
    assert!(p
        .verdict
        .findings()
        .iter()
        .any(|f| f.reason.contains("musl")));
}
