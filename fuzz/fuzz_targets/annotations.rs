//! Annotations and the container environment, as an image writes them,
//! through the whole decision: `ImageSpec::read`, the matcher, the policy,
//! and the one line a refused user reads.
//!
//! Input: lines `key=value` (annotations) until a line `--env--`, then
//! `NAME=value` lines (the process environment). A value may hold any
//! byte but a newline; the annotation keys and values themselves may not
//! hold one in this encoding, so `\n` inside them is written `\x01` and
//! turned back into a newline here (what a JSON string in config.json can
//! carry).
//!
//! Properties: never a panic; every warning and the refusal line are one
//! line with no control character (an image cannot forge hpcc's lines).

#![no_main]

use hpcc_common::annotations::ImageSpec;
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::launch;
use hpcc_common::oci::LaunchContext;
use hpcc_common::plan::UserRequest;
use hpcc_config::Policy;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

fn node() -> &'static NodeFingerprint {
    static NODE: OnceLock<NodeFingerprint> = OnceLock::new();
    NODE.get_or_init(|| NodeFingerprint::take(&Policy::default()))
}

fn one_clean_line(s: &str) {
    assert!(
        !s.chars().any(|c| c.is_control()),
        "control character in a line hpcc prints: {s:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).replace('\u{1}', "\n");
    let (ann_text, env_text) = match text.split_once("--env--\n") {
        Some((a, e)) => (a.to_owned(), e.to_owned()),
        None => (text.to_string(), String::new()),
    };
    let mut annotations = BTreeMap::new();
    for line in ann_text.split('\n').filter(|l| !l.is_empty()).take(256) {
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        annotations.insert(k.to_owned(), v.to_owned());
    }
    let env: Vec<&str> = env_text
        .split('\n')
        .filter(|l| !l.is_empty())
        .take(64)
        .collect();
    let spec = ImageSpec::read(
        annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        env.iter().copied(),
    );
    for w in &spec.warnings {
        one_clean_line(w);
    }
    for p in &spec.problems {
        let _ = p.to_string();
    }
    let mut ctx = LaunchContext::from_annotations("fuzz", annotations);
    ctx.process_env = env.iter().map(|s| s.to_string()).collect();
    let policy = Policy {
        unannotated: hpcc_config::UnannotatedAction::Refuse,
        ..Policy::default()
    };
    let planned = launch::decide(&ctx, node(), &policy, &UserRequest::default());
    let outcome = launch::outcome(
        &policy,
        Path::new("/etc/hpcc/hook.toml"),
        Some("fuzz"),
        Some("node"),
        planned,
    );
    if let Some(line) = outcome.refusal() {
        one_clean_line(line);
    }
});
