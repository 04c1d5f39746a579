//! Image side end to end: `hpcc check`, `hpcc annotate` and `hpcc match` on
//! OCI layouts built by `tests/setup/build-image-fixtures.sh` with umoci from
//! real Debian packages (MPICH, Open MPI, a plain image, an AVX-512 binary
//! built with -march=x86-64-v4), in gzip, zstd and plain tar layers and as
//! an OCI archive. Nothing is started: the layers are only read.

use hpcc_cli::image_cmd::{self, MatchOptions};
use hpcc_image::annotate::Format;
use hpcc_image::layout::ImageRef;
use std::path::PathBuf;
use std::process::Command;

fn fixtures() -> PathBuf {
    hpcc_e2e::image_fixtures()
}

fn tag(t: &str) -> ImageRef {
    ImageRef::parse(&format!("{}:{t}", fixtures().join("oci").display())).unwrap()
}

fn annotate(t: &str) -> String {
    let (code, out) = image_cmd::annotate(&tag(t), Format::Text).unwrap();
    assert_eq!(code, 0);
    out
}

fn has(out: &str, line: &str) -> bool {
    out.lines().any(|l| l == line)
}

#[test]
fn annotate_mpich_image() {
    let out = annotate("mpich");
    for l in [
        "org.supercontainers.mpi.implementation=mpich",
        "org.supercontainers.mpi.version=4.0.2",
        "org.supercontainers.mpi.abi.version=12",
        "org.supercontainers.libc.implementation=glibc",
        "org.supercontainers.glibc.version=2.36",
        "org.supercontainers.communication.framework=ucx",
    ] {
        assert!(has(&out, l), "missing {l}:\n{out}");
    }
    assert!(out.contains("soname libmpich.so.12"), "{out}");
    // Debian builds for the baseline; Open MPI's atomics need CMPXCHG16B (v2).
    assert!(
        has(
            &out,
            "org.supercontainers.hardware.cpu.optimized.version=x86_64"
        ) || has(
            &out,
            "org.supercontainers.hardware.cpu.optimized.version=x86_64_v2"
        ),
        "{out}"
    );
}

#[test]
fn annotate_openmpi_image_gzip_and_zstd() {
    let out = annotate("openmpi");
    for l in [
        "org.supercontainers.mpi.implementation=openmpi",
        "org.supercontainers.mpi.version=4.1.4",
        "org.supercontainers.libfabric.abi.version=1.5",
        "org.supercontainers.communication.framework=libfabric,ucx",
        "org.supercontainers.python.version=3.11",
    ] {
        assert!(has(&out, l), "missing {l}:\n{out}");
    }
    assert!(
        out.contains("org.supercontainers.shell.implementation=bash,sh"),
        "{out}"
    );
    assert!(
        out.contains("FABRIC_1.5 is the highest") && out.contains("ofi"),
        "{out}"
    );
    let plain = |t| image_cmd::annotate(&tag(t), Format::Plain).unwrap().1;
    assert_eq!(
        plain("openmpi"),
        plain("openmpi-zstd"),
        "zstd layers read the same"
    );
}

#[test]
fn annotate_avx512_by_sampling_and_by_note() {
    let out = annotate("avx512");
    assert!(
        has(
            &out,
            "org.supercontainers.hardware.cpu.optimized.version=x86_64_v4"
        ),
        "{out}"
    );
    assert!(
        has(
            &out,
            "org.supercontainers.hardware.cpu.optimized.mode=genericMicro"
        ),
        "{out}"
    );
    assert!(
        out.contains("usr/local/bin/saxpy") && out.contains("AVX512"),
        "{out}"
    );
    let out = annotate("avx512-noted");
    assert!(
        has(
            &out,
            "org.supercontainers.hardware.cpu.optimized.version=x86_64_v4"
        ),
        "{out}"
    );
    assert!(out.contains("GNU_PROPERTY_X86_ISA_1_NEEDED"), "{out}");
    let (_, nfd) = image_cmd::annotate(&tag("avx512"), Format::Nfd).unwrap();
    assert!(
        nfd.contains("version: v1alpha1") && nfd.contains("AVX512F: {op: Exists}"),
        "{nfd}"
    );
}

#[test]
fn plain_tar_layers_and_oci_archive() {
    let a = image_cmd::annotate(&tag("plain-tar"), Format::Plain)
        .unwrap()
        .1;
    assert!(has(&a, "org.supercontainers.glibc.version=2.36"), "{a}");
    let archive = ImageRef::parse(fixtures().join("plain.tar").to_str().unwrap()).unwrap();
    let b = image_cmd::annotate(&archive, Format::Plain).unwrap().1;
    assert_eq!(a, b);
}

#[test]
fn check_plain_mpich_openmpi() {
    let (code, out) = image_cmd::check(&tag("plain"), false).unwrap();
    assert_eq!(code, 1, "no mandatory annotation:\n{out}");
    assert!(out.contains("FAIL  mandatory"), "{out}");
    assert!(out.contains("PASS  behaviour   shell"), "{out}");

    let (code, out) = image_cmd::check(&tag("openmpi"), true).unwrap();
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ep = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["item"] == "entrypoint")
        .unwrap();
    assert_eq!(ep["status"], "fail", "{ep}");
    assert!(ep["message"].as_str().unwrap().contains("aliased"), "{ep}");

    // Label the MPICH image with what annotate proposes: it becomes conformant.
    let dir = hpcc_e2e::scratch("image-side-check");
    let layout = dir.join("oci");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(fixtures().join("oci"))
        .arg(&layout)
        .status()
        .unwrap()
        .success());
    let plain = image_cmd::annotate(&tag("mpich"), Format::Plain).unwrap().1;
    let mut cmd = Command::new("umoci");
    cmd.args(["config", "--image", &format!("{}:mpich", layout.display())]);
    for l in plain.lines() {
        cmd.args(["--config.label", l]);
    }
    let st = cmd.output().unwrap();
    assert!(st.status.success(), "{st:?}");
    let labelled = ImageRef::parse(&format!("{}:mpich", layout.display())).unwrap();
    let (code, out) = image_cmd::check(&labelled, false).unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PASS  behaviour   entrypoint"), "{out}");
}

fn node_has(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == flag))
}

#[test]
fn match_reads_the_attached_nfd_spec_and_collections() {
    let dir = hpcc_e2e::scratch("image-side-match");
    let policy = dir.join("hook.toml");
    std::fs::write(&policy, "").unwrap();
    let opts = MatchOptions {
        json: true,
        policy: Some(policy.clone()),
        ..MatchOptions::default()
    };
    let (code, out) = image_cmd::match_image(&tag("avx512"), &opts).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["nfd_specs"].as_array().unwrap().len(), 1, "{out}");
    let avx = node_has("avx512f") && node_has("avx512vl");
    let nfd = v["verdict"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["reason"].as_str().unwrap().contains("compatibility set"))
        .unwrap()
        .clone();
    assert_eq!(nfd["level"], if avx { "ok" } else { "fatal" }, "{out}");
    if !avx {
        assert_eq!(code, 2);
    }

    // A collection names the plain image (hpcc.image.name) and annotates it.
    let coll = dir.join("collections.d");
    std::fs::create_dir_all(&coll).unwrap();
    std::fs::write(
        coll.join("site.yaml"),
        "manifests:\n- name: hpc/plain\n  tag: \"1\"\n  manifests:\n  - image: example.org/hpc/plain:1\n    platform: {os: linux, arch: amd64}\n    annotations:\n      org.supercontainers.hardware.cpu.optimized.version: x86_64\n      org.supercontainers.glibc.version: 2.36\n",
    )
    .unwrap();
    std::fs::write(
        &policy,
        format!("[collections]\ndir = \"{}\"\n", coll.display()),
    )
    .unwrap();
    let layout = dir.join("oci");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(fixtures().join("oci"))
        .arg(&layout)
        .status()
        .unwrap()
        .success());
    let st = Command::new("umoci")
        .args([
            "config",
            "--image",
            &format!("{}:plain", layout.display()),
            "--config.label",
            "hpcc.image.name=example.org/hpc/plain:1",
        ])
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let img = ImageRef::parse(&format!("{}:plain", layout.display())).unwrap();
    let (code, out) = image_cmd::match_image(
        &img,
        &MatchOptions {
            json: false,
            ..opts
        },
    )
    .unwrap();
    assert!(
        out.contains("collection: ") && out.contains("site.yaml"),
        "{out}"
    );
    assert!(!out.contains("carries no org.supercontainers"), "{out}");
    assert_eq!(
        code,
        hpcc_e2e::node_cpu::family_build_exit(),
        "a generic x86_64 build is orange on any newer CPU:\n{out}"
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    assert!(ImageRef::parse("/nonexistent/layout:tag").is_err());
    let e = image_cmd::check(&tag("no-such-tag"), false).unwrap_err();
    assert!(e.to_string().contains("tags:"), "{e}");
}
