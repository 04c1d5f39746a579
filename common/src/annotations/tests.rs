//! Reading annotation sets: every group of the proposal, the other
//! published spellings, per-key problems, bounds and look-alikes.

use super::*;

fn spec(pairs: &[(&str, &str)]) -> ImageSpec {
    ImageSpec::read(pairs.iter().copied(), std::iter::empty())
}

fn kinds(s: &ImageSpec) -> Vec<&ProblemKind> {
    s.problems.iter().map(|p| &p.problem).collect()
}

#[test]
fn parses_every_group() {
    let s = spec(&[
        (
            "org.supercontainers.hardware.cpu.optimized.mode",
            "microarchitecture",
        ),
        (
            "org.supercontainers.hardware.cpu.optimized.version",
            "skylake_avx512",
        ),
        (
            "org.supercontainers.hardware.gpu.nvidia.driver.version",
            "535.104.05",
        ),
        (
            "org.supercontainers.hardware.gpu.nvidia.cuda.version",
            "12.1",
        ),
        (
            "org.supercontainers.hardware.gpu.nvidia.architecture",
            "sm_80,sm_90",
        ),
        ("org.supercontainers.mpi.implementation", "mpich"),
        ("org.supercontainers.mpich.version", "4.0.2"),
        ("org.supercontainers.mpi.abi.version", "12.0"),
        ("org.supercontainers.communication.framework", "libfabrics"),
        ("org.supercontainers.libfabric.abi.version", "1.6"),
        ("org.supercontainers.mpi.portability.optimization", "stock"),
        (
            "org.supercontainers.mpi.portability.mode",
            "mpi_replace,libfabric_inject",
        ),
        ("org.supercontainers.libc.implementation", "glibc"),
        ("org.supercontainers.glibc.version", "2.35"),
        ("org.supercontainers.python.version", "3.10"),
        ("org.supercontainers.shell.implementation", "bash,sh"),
        ("org.supercontainers.tools.includes", "jq,wget,awscli"),
        ("org.supercontainers.path.extra", "/usr/local/bin"),
        ("org.supercontainers.kernel.version", "5.1"),
        ("org.supercontainers.host.kernel.version.min", "5.1"),
        (
            "org.supercontainers.host.kernel.modules.expectation",
            "user-namespaces",
        ),
        (
            "org.supercontainers.docs.quickstart.link",
            "https://example.org/gmx",
        ),
        ("org.supercontainers.docs.quickstart.base64", "IyBIZWxsbw=="),
        ("org.opencontainers.image.title", "ignored"),
    ]);
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
    assert_eq!(s.cpu_target.as_ref().unwrap().name(), "skylake_avx512");
    assert_eq!(s.cpu_target.as_ref().unwrap().family(), "x86_64");
    assert_eq!(
        s.gpu_architectures,
        vec![SmArch { major: 8, minor: 0 }, SmArch { major: 9, minor: 0 }]
    );
    assert_eq!(s.nvidia_driver.as_ref().unwrap().to_string(), "535.104.05");
    assert_eq!(s.mpi_implementation, Some(MpiImplementation::Mpich));
    assert_eq!(s.comm_frameworks, vec![CommFramework::Libfabric]);
    assert_eq!(
        s.portability_modes,
        vec![
            PortabilityMode::MpiReplace,
            PortabilityMode::LibfabricInject
        ]
    );
    assert_eq!(s.docs["quickstart.base64"].decode().unwrap(), "# Hello");
    assert_eq!(s.annotated_keys, 23);
    assert!(s.has_checkable_requirement());
}

#[test]
fn collection_and_draft_spellings() {
    // MetaHub collection in the 2023 proposal.
    let s = spec(&[
        ("org.supercontainers.mpi.provider", "mpich"),
        ("org.supercontainers.mpich.abi.version", "12.0"),
        ("org.supercontainers.mpi.portability.optimized", "stock"),
        ("org.supercontainers.mpi.portability.mode", "mpich_replace"),
        (
            "org.supercontainers.hardware.cpu.optimized.architecture",
            "x86_64",
        ),
    ]);
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
    assert_eq!(s.portability_modes, vec![PortabilityMode::MpiReplace]);
    assert_eq!(s.mpi_abi_version.unwrap().to_string(), "12.0");
    assert_eq!(s.cpu_target.unwrap().name(), "x86_64");
    // The 2022 draft.
    let s = spec(&[
        ("org.supercontainers.mpi.provider", "openmpi"),
        ("org.supercontainers.openmpi.version", "1.14.1"),
        ("org.supercontainers.libfabric.abi", "1.6"),
        ("org.supercontainers.libc.provider", "musl"),
        ("org.supercontainers.pmi.version", "2"),
    ]);
    assert_eq!(s.libc, Some(LibcImplementation::Musl));
    assert_eq!(s.libfabric_abi.unwrap().to_string(), "1.6");
    assert_eq!(s.info["org.supercontainers.pmi.version"], "2");
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
}

#[test]
fn compspec_and_working_group_keys() {
    let s = spec(&[
        ("io.archspec.cpu.target", "arm64"),
        ("org.supercontainers.hardware.gpu.available", "yes"),
        ("org.supercontainers.mpi.implementation", "OpenMPI"),
        ("org.supercontainers.mpi.version", "4.1.2"),
        ("org.supercontainers.os.vendor", "ubuntu"),
    ]);
    assert_eq!(s.cpu_target.unwrap().name(), "aarch64");
    assert_eq!(s.gpu, Some(GpuNeed::Any));
    assert_eq!(s.mpi_implementation, Some(MpiImplementation::Openmpi));
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
    let s = spec(&[
        ("org.supercontainers.mpi.variant", "openmpi"),
        ("org.supercontainers.hardware.gpu.enabled", "true"),
        ("org.supercontainers.hardware.gpu.cuda.version", "12.2"),
    ]);
    assert_eq!(s.mpi_implementation, Some(MpiImplementation::Openmpi));
    assert_eq!(s.cuda.unwrap().to_string(), "12.2");
}

#[test]
fn nvidia_label_and_environment() {
    let s = ImageSpec::read(
        [("com.nvidia.cuda.version", "10.1.243")],
        [
            "PATH=/usr/bin",
            "NVIDIA_REQUIRE_CUDA=cuda>=10.1 brand=tesla,driver>=396,driver<397",
        ],
    );
    assert_eq!(s.cuda.as_ref().unwrap().to_string(), "10.1.243");
    assert_eq!(s.nvidia_require.as_ref().unwrap().alternatives.len(), 2);
    assert!(s.has_checkable_requirement());
    let s = ImageSpec::read(
        std::iter::empty(),
        [
            "NVIDIA_REQUIRE_CUDA=cuda>=12.0",
            "NVIDIA_DISABLE_REQUIRE=true",
        ],
    );
    assert!(s.nvidia_require.is_none());
    let s = ImageSpec::read(std::iter::empty(), ["NVIDIA_REQUIRE_CUDA=cuda>=12.0"]);
    assert!(
        !s.has_checkable_requirement(),
        "the environment is not an annotation"
    );
    assert!(s.has_env_facts());
}

#[test]
fn legacy_2019_labels_say_what_they_map_to() {
    let s = spec(&[
        ("org.supercontainers.mpi", "mpich"),
        ("org.supercontainers.gpu", "cuda"),
        ("org.supercontainers.glibc", "2.28"),
    ]);
    assert_eq!(s.mpi_implementation, Some(MpiImplementation::Mpich));
    assert_eq!(s.gpu, Some(GpuNeed::Nvidia));
    assert_eq!(s.glibc.as_ref().unwrap().to_string(), "2.28");
    let hints: Vec<String> = s.problems.iter().map(ToString::to_string).collect();
    assert_eq!(hints.len(), 3, "{hints:?}");
    assert!(hints
        .iter()
        .any(|h| h.contains("org.supercontainers.mpi.implementation")));
}

#[test]
fn unreadable_values_are_per_key_and_all_listed() {
    let s = spec(&[
        (
            "org.supercontainers.hardware.cpu.optimized.version",
            "zen33",
        ),
        ("org.supercontainers.hardware.cpu.optimized.mode", "generic"),
        (
            "org.supercontainers.mpi.portability.mode",
            "mpi_system,libfabric_inject,magic",
        ),
        (
            "org.supercontainers.hardware.gpu.nvidia.cuda.version",
            "twelve",
        ),
        ("org.supercontainers.mpi.implementation", "mpitch"),
    ]);
    assert!(s.cpu_target.is_none());
    assert_eq!(s.portability_modes, vec![PortabilityMode::LibfabricInject]);
    let text: Vec<String> = s.problems.iter().map(ToString::to_string).collect();
    assert_eq!(s.problems.len(), 5, "{text:#?}");
    let cpu = s.problems_of(Field::CpuTarget).next().unwrap();
    assert!(cpu.to_string().contains("zen33") && cpu.to_string().contains("did you mean zen3?"));
    assert!(text.iter().any(|t| t.contains("mpi_system")));
    assert!(text.iter().any(|t| t.contains("\"magic\" ignored")));
    assert!(text.iter().any(|t| t.contains("twelve")));
    assert!(text.iter().any(|t| t.contains("did you mean mpich?")));
    assert!(s.value_lost(Field::CpuTarget));
    assert!(!s.value_lost(Field::CpuMode));
}

#[test]
fn spellings_people_use() {
    let s = spec(&[
        (
            "org.supercontainers.hardware.cpu.optimized.mode",
            "Microarchitecture",
        ),
        (
            "org.supercontainers.hardware.cpu.optimized.version",
            "Skylake",
        ),
        ("org.supercontainers.mpi.implementation", "Open MPI"),
        ("org.supercontainers.mpi.version", "4.1.6-1ubuntu1"),
        (
            "org.supercontainers.host.kernel.version.min",
            "5.14.0-362.el9",
        ),
        ("org.supercontainers.python.version", "3.12.0rc1"),
    ]);
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
    assert_eq!(s.mpi_version.unwrap().to_string(), "4.1.6-1ubuntu1");
    assert_eq!(s.cpu_target.unwrap().name(), "skylake");
}

#[test]
fn two_platforms_contradict() {
    let s = spec(&[
        ("org.supercontainers.hardware.cpu.optimized.version", "zen3"),
        (
            "org.supercontainers.hardware.cpu.optimized.architecture",
            "aarch64",
        ),
    ]);
    assert_eq!(s.cpu_target.as_ref().unwrap().name(), "zen3");
    let p = s.problems_of(Field::CpuTarget).next().unwrap();
    assert!(matches!(p.problem, ProblemKind::Conflict { .. }), "{p}");
    assert!(p.to_string().contains("zen3"), "{p}");
}

#[test]
fn agreeing_targets_keep_the_stricter_one() {
    let s = spec(&[
        ("io.archspec.cpu.target", "amd64"),
        (
            "org.supercontainers.hardware.cpu.optimized.version",
            "skylake_avx512",
        ),
    ]);
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
    assert_eq!(s.cpu_targets.len(), 1);
    assert_eq!(s.cpu_target.unwrap().name(), "skylake_avx512");
    // Same platform, neither covers the other: both are kept and checked.
    let s = spec(&[
        ("org.supercontainers.hardware.cpu.optimized.version", "zen3"),
        ("io.archspec.cpu.target", "icelake"),
    ]);
    assert_eq!(s.cpu_targets.len(), 2);
    assert_eq!(s.problems.len(), 1);
}

#[test]
fn two_mpi_families_contradict() {
    let s = spec(&[
        ("org.supercontainers.mpi.implementation", "openmpi"),
        ("org.supercontainers.mpi.provider", "mpich"),
    ]);
    assert_eq!(s.mpi_families().len(), 2);
    assert!(s.value_lost(Field::MpiImplementation));
    // openmpi.version implies Open MPI.
    let s = spec(&[
        ("org.supercontainers.mpi.implementation", "mpich"),
        ("org.supercontainers.openmpi.version", "4.1.5"),
    ]);
    assert_eq!(s.mpi_families().len(), 2);
    // Same family, two names: not a contradiction.
    let s = spec(&[
        ("org.supercontainers.mpi.implementation", "intel-mpi"),
        ("org.supercontainers.mpi.provider", "mpich"),
    ]);
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
}

#[test]
fn mode_target_mismatch_is_a_warning_in_display_form() {
    let s = spec(&[
        (
            "org.supercontainers.hardware.cpu.optimized.mode",
            "architecture",
        ),
        (
            "org.supercontainers.hardware.cpu.optimized.version",
            "x86_64_v4",
        ),
    ]);
    assert_eq!(s.problems.len(), 1, "{:#?}", s.problems);
    let w = &s.warnings[0];
    assert!(
        w.contains("mode architecture") && w.contains("x86_64_v4"),
        "{w}"
    );
    assert!(
        !w.contains("Architecture") && !w.contains("CpuTarget("),
        "{w}"
    );
}

#[test]
fn unknown_keys_and_look_alikes() {
    let s = spec(&[("org.supercontainers.future.thing", "1")]);
    assert!(
        !s.has_checkable_requirement(),
        "an unknown key is not an annotation hpcc knows"
    );
    assert!(matches!(
        kinds(&s)[..],
        [ProblemKind::UnknownKey { suggestion: None }]
    ));
    let s = spec(&[("org.supercontainers.hardware.cpu.optimised.version", "zen3")]);
    assert!(s.to_owned().problems[0]
        .to_string()
        .contains("did you mean"));
    assert_eq!(s.problems[0].check(), Check::Cpu);
    let cyr = "\u{43e}rg.supercontainers.hardware.cpu.optimized.version";
    let s = spec(&[(cyr, "zen3")]);
    assert!(!s.has_checkable_requirement());
    assert!(s.cpu_target.is_none());
    assert!(matches!(kinds(&s)[..], [ProblemKind::LookAlike { .. }]));
    // Documentation only does not make an image annotated either.
    let s = spec(&[("org.supercontainers.docs.quickstart.link", "https://x.org")]);
    assert!(!s.has_checkable_requirement());
    let s = spec(&[("org.supercontainers.python.version", "3.10")]);
    assert!(!s.has_checkable_requirement());
}

#[test]
fn messages_escape_image_text() {
    let s = spec(&[
        (
            "org.supercontainers.hardware.cpu.optimized.version",
            "zen3\nhpcc: ok",
        ),
        ("org.supercontainers.mpi.implementation", "mpich\u{202e}x"),
        ("org.supercontainers.future\u{1b}[2K", "1"),
    ]);
    for w in &s.warnings {
        assert!(
            !w.contains('\n') && !w.contains('\u{202e}') && !w.contains('\u{1b}'),
            "{w}"
        );
    }
    assert_eq!(s.warnings.len(), 3, "{:#?}", s.warnings);
}

#[test]
fn sizes_are_bounded() {
    let big = "x".repeat(MAX_VALUE_BYTES + 1);
    let s = spec(&[("org.supercontainers.tools.includes", &big)]);
    assert!(
        s.problems[0].value.len() < 200,
        "the problem must not echo a huge value"
    );
    let keys: Vec<String> = (0..=MAX_KEYS)
        .map(|i| format!("org.supercontainers.x{i}"))
        .collect();
    let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "1")).collect();
    let s = ImageSpec::read(pairs, std::iter::empty());
    assert!(s
        .problems
        .iter()
        .any(|p| matches!(p.problem, ProblemKind::TooManyKeys { .. })));
    assert!(s.problems.len() <= MAX_KEYS + 1);
    let long_key = format!("org.supercontainers.{}", "é".repeat(5000));
    let s = spec(&[(&long_key, "1")]);
    assert_eq!(s.problems.len(), 1);
    assert!(s.problems[0].key.len() < 200);
    let many = "a,".repeat(MAX_LIST + 5);
    let s = spec(&[("org.supercontainers.tools.includes", &many)]);
    assert!(s.tools.is_empty());
    let nul = spec(&[("org.supercontainers.mpi.implementation", "mpich\0")]);
    assert!(nul.mpi_implementation.is_none());
}

#[test]
fn unannotated_image() {
    let s = spec(&[("org.opencontainers.image.title", "busybox")]);
    assert!(!s.has_checkable_requirement());
    assert!(s.problems.is_empty());
}

#[test]
fn glibc_on_musl_is_dropped() {
    let s = spec(&[
        ("org.supercontainers.libc.implementation", "musl"),
        ("org.supercontainers.glibc.version", "2.36"),
    ]);
    assert!(s.glibc.is_none());
    assert!(s.takes_host_libraries().is_err());
    let s = spec(&[("org.supercontainers.libc.implementation", "uclibc")]);
    assert!(s.takes_host_libraries().is_err());
    let s = spec(&[("org.supercontainers.libc.implementation", "glibc")]);
    assert!(s.takes_host_libraries().is_ok());
}

#[test]
fn from_annotations_still_works() {
    let s = ImageSpec::from_annotations([(
        "org.supercontainers.hardware.cpu.optimized.version",
        "pentium9000",
    )])
    .unwrap();
    assert!(s.warnings[0].contains("pentium9000"));
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["problems"][0]["problem"]["kind"], "unreadable");
    assert_eq!(json["problems"][0]["field"], "cpu_target");
}

#[test]
fn kernel_expectations_count_only_when_an_entry_was_read() {
    // An empty value, or only entries that could not be read, give the
    // kernel check nothing: not a requirement for `unannotated`.
    for v in ["", " , ;", "@@@", "\u{202e}x"] {
        let s = spec(&[("org.supercontainers.host.kernel.modules.expectation", v)]);
        assert!(s.kernel_expectations.is_empty(), "{v:?}");
        assert!(!s.has_checkable_requirement(), "{v:?}");
        assert!(!s.problems.is_empty(), "{v:?}: reported");
    }
    let s = spec(&[(
        "org.supercontainers.host.kernel.modules.expectation",
        "@@@,nvidia_peermem",
    )]);
    assert_eq!(s.kernel_expectations, ["nvidia_peermem"]);
    assert!(s.has_checkable_requirement());
}
