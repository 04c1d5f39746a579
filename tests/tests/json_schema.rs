//! Every `--json` document of `hpcc` against its JSON Schema
//! (docs/schema/<kind>.schema.json, 2020-12), on real inputs: this node's
//! fingerprint, a saved one read back, the OCI fixtures of
//! `tests/setup/build-fixtures.sh` and `build-image-fixtures.sh`, a bundle,
//! an annotations file. Nothing is started; nothing needs root.
//!
//! The schemas are strict where the shape is hpcc's (`required`,
//! `additionalProperties: false`), so a renamed or dropped field fails
//! here, and so do the Python bindings' tests (python/tests), which
//! validate the same documents against the same files.

use hpcc_common::schema::{Kind, SCHEMA};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn schema_dir() -> PathBuf {
    hpcc_e2e::repo_root().join("docs/schema")
}

fn schema(kind: &str) -> Value {
    let path = schema_dir().join(format!("{kind}.schema.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (no schema for kind {kind:?})", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The schema's errors for `doc` (empty: valid).
fn errors(kind: &str, doc: &Value) -> Vec<String> {
    let v = jsonschema::draft202012::new(&schema(kind))
        .unwrap_or_else(|e| panic!("{kind}.schema.json does not compile: {e}"));
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Asserts `doc` is a valid document of `kind`.
fn assert_valid(kind: &str, doc: &Value, what: &str) {
    assert_eq!(doc["schema"], SCHEMA, "{what}: {doc}");
    assert_eq!(doc["kind"], kind, "{what}: {doc}");
    let e = errors(kind, doc);
    assert!(e.is_empty(), "{what} ({kind}): {e:#?}\n{doc:#}");
}

fn image_fixtures() -> PathBuf {
    hpcc_e2e::image_fixtures().join("oci")
}

/// A scratch directory with a policy of defaults, a saved fingerprint of
/// this node (a fleet of one class) and an annotations file.
fn scratch() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = hpcc_e2e::scratch("json-schema");
        std::fs::write(dir.join("hook.toml"), "").unwrap();
        std::fs::write(
            dir.join("ann.json"),
            r#"{"org.supercontainers.hardware.cpu.optimized.version": "x86_64",
                "org.supercontainers.mpi.implementation": "mpich",
                "org.supercontainers.hardware.gpu.nvidia.cuda.version": "12.0"}"#,
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("fleet")).unwrap();
        let (code, fp) = hpcc_in(&dir, &["fingerprint", "--no-cache"]);
        assert_eq!(code, 0, "{fp}");
        std::fs::write(dir.join("fleet/node.json"), fp.to_string()).unwrap();
        dir
    })
    .clone()
}

/// `hpcc --json --config DIR/hook.toml ARGS` (bounded): exit code and the
/// one document on stdout.
fn hpcc_in(dir: &Path, args: &[&str]) -> (i32, Value) {
    let out = Command::new("timeout")
        .arg("120")
        .arg(hpcc_e2e::bin("hpcc"))
        .arg("--json")
        .arg("--config")
        .arg(dir.join("hook.toml"))
        .args(args)
        .env_remove("HPCC_CONFIG")
        .output()
        .expect("hpcc runs");
    let code = out.status.code().expect("hpcc exited");
    assert_ne!(code, 124, "hpcc {args:?} timed out");
    let text = String::from_utf8(out.stdout).expect("UTF-8 JSON");
    let doc: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("hpcc {args:?}: not one JSON document ({e}):\n{text}"));
    (code, doc)
}

fn hpcc(args: &[&str]) -> (i32, Value) {
    hpcc_in(&scratch(), args)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn every_kind_has_a_schema_that_is_itself_valid_2020_12() {
    let mut files: Vec<String> = std::fs::read_dir(schema_dir())
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_suffix(".schema.json").map(str::to_owned)
        })
        .collect();
    files.sort();
    for k in Kind::ALL {
        assert!(files.iter().any(|f| f == k.as_str()), "no schema for {k}");
    }
    for f in &files {
        let s = schema(f);
        if let Err(e) = jsonschema::draft202012::meta::validate(&s) {
            panic!("{f}.schema.json is not a 2020-12 schema: {e}");
        }
        assert_eq!(
            s["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{f}"
        );
        assert_eq!(s["properties"]["kind"]["const"], f.as_str(), "{f}");
        assert_eq!(s["properties"]["schema"]["const"], SCHEMA, "{f}");
        assert_eq!(
            s["additionalProperties"], false,
            "{f}: top level not closed"
        );
    }
}

#[test]
fn fingerprint_documents() {
    let (code, fp) = hpcc(&["fingerprint", "--no-cache"]);
    assert_eq!(code, 0);
    assert_valid("fingerprint", &fp, "fingerprint");
    // Read back: the saved document is what --fingerprint FILE takes (the
    // two convention keys are ignored by the reader).
    let saved: hpcc_common::fingerprint::NodeFingerprint =
        serde_json::from_value(fp.clone()).expect("a saved fingerprint reads back");
    assert_eq!(saved.hostname, fp["hostname"]);
    let (_, cached) = hpcc(&["fingerprint"]);
    assert_valid("fingerprint", &cached, "fingerprint (cache)");
    let (code, g) = hpcc(&["fingerprint", "--gpus"]);
    assert_eq!(code, 0);
    assert_valid("gpus", &g, "fingerprint --gpus");
    for f in ["slurm-features", "nfd-features"] {
        let (code, d) = hpcc(&["fingerprint", "--format", f]);
        assert_eq!(code, 0);
        assert_valid("node-features", &d, f);
    }
}

#[test]
fn verdict_and_plan_documents() {
    let dir = scratch();
    let ann = s(&dir.join("ann.json"));
    let saved = s(&dir.join("fleet/node.json"));
    let (_, v) = hpcc(&["match", "--annotations", &ann]);
    assert_valid("verdict", &v, "match --annotations");
    // The GPU annotation on a node without one: a finding with evidence.
    assert!(v["findings"].as_array().unwrap().len() >= 2, "{v:#}");
    let (_, v2) = hpcc(&["match", "--annotations", &ann, "--fingerprint", &saved]);
    assert_valid("verdict", &v2, "match --fingerprint saved");
    assert_eq!(v["findings"], v2["findings"]);
    let (_, p) = hpcc(&["match", "--annotations", &ann, "--plan"]);
    assert_valid("plan", &p, "match --plan");
    assert_eq!(p["verdict"]["findings"], v["findings"]);

    let work = hpcc_e2e::ensure_fixtures();
    let bundle = s(&work.join("bundles/busybox"));
    let (_, p) = hpcc(&["match", "--bundle", &bundle, "--plan"]);
    assert_valid("plan", &p, "match --bundle --plan");
    // A Slurm step's wiring: the optional `slurm` member.
    let step = dir.join("step.json");
    std::fs::write(
        &step,
        r#"{"node": "n1", "mpi": {"type": "pmi2", "rank": 0, "size": "2", "jobid": "7"},
            "node_namespaces": false, "userns": false, "node_has_mqueue": true}"#,
    )
    .unwrap();
    let (code, p) = hpcc(&[
        "match",
        "--bundle",
        &bundle,
        "--plan",
        "--slurm-step",
        &s(&step),
    ]);
    assert_ne!(code, 3, "{p:#}");
    assert!(p["slurm"].is_object(), "{p:#}");
    assert_valid("plan", &p, "match --plan --slurm-step");
    let impossible = s(&work.join("bundles/oci-busybox-impossible"));
    let (code, p) = hpcc(&["match", "--bundle", &impossible, "--plan"]);
    assert_eq!(code, 2, "{p:#}");
    assert_valid("plan", &p, "match --plan (red)");

    let (_, f) = hpcc(&[
        "match",
        "--annotations",
        &ann,
        "--fleet",
        &s(&dir.join("fleet")),
    ]);
    assert_valid("fleet", &f, "match --fleet");
    let (_, pl) = hpcc(&[
        "match",
        "--annotations",
        &ann,
        "--fleet",
        &s(&dir.join("fleet")),
        "--slurm-constraint",
    ]);
    assert_valid("placement", &pl, "match --slurm-constraint");
}

#[test]
fn image_documents() {
    let oci = image_fixtures();
    let layout = s(&oci);
    let (code, c) = hpcc(&["check", &format!("{layout}:openmpi")]);
    assert_eq!(code, 1, "{c:#}");
    assert_valid("check", &c, "check IMAGE");
    let (_, m) = hpcc(&["match", &format!("{layout}:mpich")]);
    assert_valid("image-verdict", &m, "match IMAGE");
    let (_, a) = hpcc(&["annotate", &format!("{layout}:plain")]);
    assert_valid("annotate", &a, "annotate IMAGE");

    // select on an index of several variants (the fixture layout's).
    let (code, sel) = hpcc(&["select", &layout]);
    assert!(code <= 2, "{sel:#}");
    assert_valid("select", &sel, "select");
    assert!(sel["variants"].as_array().unwrap().len() >= 2, "{sel:#}");
    let fleet = s(&scratch().join("fleet"));
    let (_, sf) = hpcc(&["select", &layout, "--fleet", &fleet]);
    assert_valid("select-fleet", &sf, "select --fleet");
    assert_eq!(sf["classes"][0]["pull"], sel["pull"], "{sf:#}");

    let ann = s(&scratch().join("ann.json"));
    let (code, c) = hpcc(&["check", "--annotations", &ann]);
    assert_eq!(code, 0, "{c:#}");
    assert_valid("conformance", &c, "check --annotations");
}

#[test]
fn the_other_documents() {
    for (args, kind) in [
        (&["policy"][..], "policy-check"),
        (&["policy", "show"], "policy"),
        (&["policy", "example"], "policy-example"),
        (&["version"], "version"),
        (&["completions", "bash"], "completions"),
        (&["doctor", "--no-dry-run"], "doctor"),
        (&["match", "--help"], "help"),
        (&["frobnicate"], "error"),
        (&["match", "--annotations", "/nonexistent/a.json"], "error"),
    ] {
        let (_, d) = hpcc(args);
        assert_valid(kind, &d, &args.join(" "));
    }
    let out = hpcc_e2e::scratch("json-schema-docs");
    let (code, d) = hpcc(&["generate-docs", "--out", &s(&out)]);
    assert_eq!(code, 0, "{d}");
    assert_valid("generated-docs", &d, "generate-docs");
}

/// The schemas are strict enough to be worth having: a renamed, a
/// dropped or a retyped field of a real document is caught.
#[test]
fn a_renamed_field_is_caught() {
    let (_, fp) = hpcc(&["fingerprint"]);
    let mut renamed = fp.clone();
    let cpu = renamed["cpu"].as_object_mut().unwrap();
    let arch = cpu.remove("microarchitecture").unwrap();
    cpu.insert("microarch".into(), arch);
    assert!(!errors("fingerprint", &renamed).is_empty());
    let mut dropped = fp.clone();
    dropped.as_object_mut().unwrap().remove("hostname");
    assert!(!errors("fingerprint", &dropped).is_empty());
    let mut bumped = fp.clone();
    bumped["schema"] = "hpcc/v2".into();
    assert!(!errors("fingerprint", &bumped).is_empty());

    let ann = s(&scratch().join("ann.json"));
    let (_, v) = hpcc(&["match", "--annotations", &ann]);
    let mut retyped = v.clone();
    retyped["findings"][0]["level"] = "bad".into();
    assert!(!errors("verdict", &retyped).is_empty());
    let mut extra = v.clone();
    extra["findings"][0]["reasons"] = "x".into();
    assert!(!errors("verdict", &extra).is_empty());
    // A verdict is not a plan.
    assert!(!errors("plan", &v).is_empty());
}

/// A plan with tweaks (the host's Debian MPICH and libfabric over the
/// fixture's MPICH application: mounts, environment, linker cache) and a
/// fingerprint with host libraries: the parts of the documents a node
/// without a declared MPI leaves empty.
#[test]
fn documents_with_host_libraries_and_tweaks() {
    const POLICY: &str = hpcc_e2e::MPICH_FABRIC_POLICY;
    hpcc_e2e::ensure_fixtures();
    let mut b = hpcc_e2e::Bundle::new("json-schema-mpich", &hpcc_e2e::fixture_rootfs("mpich-app"));
    b.annotate(
        "org.supercontainers.hardware.cpu.optimized.version",
        "x86_64",
    )
    .annotate("org.supercontainers.mpi.implementation", "mpich")
    .annotate(
        "org.supercontainers.mpi.portability.mode",
        "mpi_replace,libfabric_inject",
    )
    .with_hook(POLICY)
    .write();
    let (code, fp) = hpcc_in(&b.dir, &["fingerprint", "--no-cache"]);
    assert_eq!(code, 0, "{fp:#}");
    assert_valid("fingerprint", &fp, "fingerprint with host MPI");
    assert!(fp["mpi"][0]["libraries"][0]["soname"].is_string(), "{fp:#}");
    assert!(fp["libfabric"].is_object(), "{fp:#}");
    let (code, p) = hpcc_in(&b.dir, &["match", "--plan", "--bundle", &s(&b.dir)]);
    assert_ne!(code, 3, "{p:#}");
    assert_valid("plan", &p, "plan with tweaks");
    for part in ["mounts", "env", "ld_cache"] {
        assert!(
            !p["tweaks"][part].as_array().unwrap().is_empty(),
            "no {part}: {p:#}"
        );
    }
}
