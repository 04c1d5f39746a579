//! CDI: spec files (JSON, admin-installed, still parsed defensively) and
//! the `cdi.k8s.io/*` device requests an image's annotations carry.
//!
//! Input: a first line of annotation text (the requests, `\x01` for a
//! newline inside a value), then the spec bytes. Properties: never a
//! panic; a parsed name prints as it parsed.

#![no_main]

use hpcc_common::fuzz_probe::{parse_spec, requests, QualifiedName};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let (first, spec) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let value = String::from_utf8_lossy(first).replace('\u{1}', "\n");
    if let Ok(q) = QualifiedName::parse(&value) {
        assert_eq!(QualifiedName::parse(&q.to_string()), Ok(q));
    }
    let annotations: BTreeMap<String, String> = [("cdi.k8s.io/fuzz".to_string(), value)].into();
    let _ = requests(&annotations);
    if let Ok(s) = parse_spec(spec) {
        let _ = s.devices.len();
    }
});
