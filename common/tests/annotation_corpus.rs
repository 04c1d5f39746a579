//! Published annotation sets (tests/data/annotations/*.toml, each with its
//! source) scored against three hand-written nodes. Every set names the
//! score it must get on every node; a change of vocabulary or rules that
//! changes one of them must change the file too, and say why.
//!
//! `HPCC_CORPUS_PRINT=1 cargo test -p hpcc-common --test annotation_corpus
//! -- --nocapture` prints every verdict.

use hpcc_common::annotations::ImageSpec;
use hpcc_common::fingerprint::{
    CpuFingerprint, GpuFingerprint, HostLibrary, HostMpiFingerprint, KernelFingerprint,
    LibcFingerprint, NodeFingerprint, NvidiaDevice, NvidiaFingerprint, SCHEMA,
};
use hpcc_common::matcher::{evaluate, Verdict};
use hpcc_common::version::Version;
use hpcc_config::{MpiAbi, Policy};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CorpusFile {
    /// Where the sets come from (URL, or repository + path + commit).
    source: String,
    /// How the sets were taken from it.
    #[allow(dead_code)]
    note: Option<String>,
    set: Vec<Set>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Set {
    name: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// `NAME=value` of the image's environment.
    #[serde(default)]
    env: Vec<String>,
    /// Node name -> green/orange/red.
    expect: BTreeMap<String, String>,
    /// Node name -> words some finding must contain.
    #[serde(default)]
    says: BTreeMap<String, Vec<String>>,
}

fn features(micro: &str) -> BTreeSet<String> {
    archspec::cpu::Microarchitecture::known_targets()[micro]
        .all_features()
        .into_iter()
        .collect()
}

fn lib(path: &str, defs: &[&str]) -> HostLibrary {
    HostLibrary {
        path: PathBuf::from(path),
        real_path: None,
        soname: Path::new(path)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned()),
        version_defs: defs.iter().map(|s| s.to_string()).collect(),
        error: None,
    }
}

fn base(platform: &str, micro: &str, vendor: &str, flags: BTreeSet<String>) -> NodeFingerprint {
    NodeFingerprint {
        schema: SCHEMA,
        hostname: "node001".into(),
        cpu: CpuFingerprint {
            platform: platform.into(),
            microarchitecture: micro.into(),
            vendor: vendor.into(),
            model: "test CPU".into(),
            flags,
        },
        kernel: KernelFingerprint {
            release: "5.14.0-362.24.1.el9_3.x86_64".into(),
            version: Version::parse_prefix("5.14.0"),
            user_namespaces: true,
            modules: ["overlay".to_string()].into(),
        },
        libc: LibcFingerprint {
            implementation: "glibc".into(),
            version: Version::parse_prefix("2.34"),
        },
        gpu: GpuFingerprint {
            nvidia: None,
            nvml_note: Some("no NVIDIA GPU: NVML unavailable".into()),
        },
        mpi: vec![],
        libfabric: None,
        ucx: vec![],
    }
}

/// The three nodes every set is scored on.
fn nodes() -> BTreeMap<&'static str, NodeFingerprint> {
    // An Ice Lake server with Cray-style MPICH and libfabric 1.x.
    let mut icelake = base("x86_64", "icelake", "GenuineIntel", features("icelake"));
    icelake.mpi.push(HostMpiFingerprint {
        name: "mpich".into(),
        abi: MpiAbi::Mpich,
        libraries: vec![lib("/opt/cray/lib64/libmpi.so.12", &[])],
    });
    icelake.libfabric = Some(lib(
        "/opt/cray/libfabric/lib64/libfabric.so.1",
        &[
            "FABRIC_1.0",
            "FABRIC_1.1",
            "FABRIC_1.2",
            "FABRIC_1.3",
            "FABRIC_1.4",
            "FABRIC_1.5",
            "FABRIC_1.6",
            "FABRIC_1.7",
        ],
    ));
    // A zen3 KVM guest whose hypervisor hides rdseed and pku: archspec
    // sees only x86_64_v3. No host MPI.
    let mut zen3_flags = features("zen3");
    zen3_flags.remove("rdseed");
    zen3_flags.remove("pku");
    // What a real zen3 reports beyond archspec's minimum.
    for f in ["adx", "rdrand", "sha_ni", "rdpid", "xsaves", "hypervisor"] {
        zen3_flags.insert(f.into());
    }
    let zen3 = base("x86_64", "x86_64_v3", "AuthenticAMD", zen3_flags);
    // A Grace Hopper node: neoverse_v2 (ARM implementer 0x41), one H100,
    // HPC-X (Open MPI) and UCX.
    let mut gh = base("aarch64", "neoverse_v2", "0x41", features("neoverse_v2"));
    gh.gpu = GpuFingerprint {
        nvidia: Some(NvidiaFingerprint {
            driver_version: "535.104.05".into(),
            cuda_driver_version: Version::parse_prefix("12.2"),
            devices: vec![NvidiaDevice {
                index: 0,
                name: "NVIDIA GH200 480GB".into(),
                uuid: "GPU-0".into(),
                compute_capability: (9, 0),
                minor_number: Some(0),
            }],
        }),
        nvml_note: None,
    };
    gh.mpi.push(HostMpiFingerprint {
        name: "hpcx".into(),
        abi: MpiAbi::Openmpi,
        libraries: vec![lib("/opt/hpcx/ompi/lib/libmpi.so.40", &[])],
    });
    gh.ucx = vec![lib("/opt/hpcx/ucx/lib/libucp.so.0", &[])];
    [
        ("icelake-mpich", icelake),
        ("zen3-kvm", zen3),
        ("gh200-hpcx", gh),
    ]
    .into()
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/annotations")
}

fn rendered(v: &Verdict) -> String {
    v.findings()
        .iter()
        .map(|f| {
            format!(
                "{} {} {} [{}; {}]",
                f.level,
                f.check,
                f.reason,
                f.image.as_deref().unwrap_or(""),
                f.node.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn published_annotation_sets_get_their_expected_verdicts() {
    let print = std::env::var_os("HPCC_CORPUS_PRINT").is_some();
    let nodes = nodes();
    let policy = Policy::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut sets = 0;
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let corpus: CorpusFile = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            corpus.source.starts_with("https://"),
            "{name}: the source must be the URL the sets were taken from"
        );
        assert!(!corpus.set.is_empty(), "{name}: no set");
        for set in &corpus.set {
            sets += 1;
            let spec = ImageSpec::read(
                set.annotations
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
                set.env.iter().map(String::as_str),
            );
            assert_eq!(
                set.expect.keys().collect::<Vec<_>>(),
                nodes.keys().collect::<Vec<_>>(),
                "{name}: {}: expect a score on every node",
                set.name
            );
            for (node_name, node) in &nodes {
                let v = evaluate(&spec, node, &policy);
                let text = rendered(&v);
                if print {
                    println!(
                        "== {name} / {} on {node_name}: {}\n{text}\n",
                        set.name,
                        v.score()
                    );
                }
                // Messages are for people: no Debug forms, no raw control text.
                assert!(
                    !text.contains("CpuTarget(")
                        && !text.contains("Some(")
                        && !text.contains('\u{1b}'),
                    "{}: {text}",
                    set.name
                );
                let want = &set.expect[*node_name];
                if v.score().as_str() != want {
                    failures.push(format!(
                        "{name} / {} on {node_name}: expected {want}, got {}\n{text}",
                        set.name,
                        v.score()
                    ));
                }
                for word in set.says.get(*node_name).into_iter().flatten() {
                    if !text.contains(word.as_str()) {
                        failures.push(format!(
                            "{name} / {} on {node_name}: no finding says {word:?}\n{text}",
                            set.name
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(sets >= 20, "the corpus has {sets} sets; keep at least 20");
}
