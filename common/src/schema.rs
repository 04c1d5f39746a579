//! The one JSON convention of every document hpcc prints or returns
//! (`hpcc ... --json`, the Python bindings): a top-level `"schema":
//! "hpcc/v1"` and a `"kind"` naming the document, whose JSON Schema
//! (2020-12) is `docs/schema/<kind>.schema.json`.
//!
//! Versioning (docs/schema/README.md): a new field keeps `hpcc/v1`; a
//! renamed, removed or retyped field, or a new meaning for an old one,
//! bumps it to `hpcc/v2`.
//!
//! The document is the serialisation of the type as it was, with the two
//! keys first ([`Tagged`] flattens the body), so one function,
//! [`to_string_pretty`], builds the text both the CLI and the bindings use,
//! and the saved documents read back into the same types (serde ignores
//! the two extra keys).

use serde::Serialize;

/// The schema version every document carries.
pub const SCHEMA: &str = "hpcc/v1";

/// What a document is; its schema is `docs/schema/<as_str()>.schema.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `hpcc fingerprint`: the node fingerprint.
    Fingerprint,
    /// `hpcc fingerprint --gpus`: the GPU facts (hpcc-hook's GPU helper).
    Gpus,
    /// `hpcc fingerprint --format ...`: the node's scheduler features.
    NodeFeatures,
    /// `hpcc match --bundle|--annotations`: the verdict.
    Verdict,
    /// `hpcc match --plan`: the launch plan (the verdict inside).
    Plan,
    /// `hpcc match IMAGE`: the verdict of an image, with the collections
    /// and NFD specs applied.
    ImageVerdict,
    /// `hpcc match --fleet DIR`: one row per node class.
    Fleet,
    /// `hpcc match --slurm-constraint|--k8s-affinity|--submit`.
    Placement,
    /// `hpcc select IMAGE`: the variant to pull and every variant's score.
    Select,
    /// `hpcc select IMAGE --fleet DIR`: the variant for each node class.
    SelectFleet,
    /// `hpcc check IMAGE`: the image-side conformance report.
    Check,
    /// `hpcc check --bundle|--annotations`: conformance of annotations.
    Conformance,
    /// `hpcc annotate IMAGE --format json`: the proposed annotations.
    Annotate,
    /// `hpcc policy check`.
    PolicyCheck,
    /// `hpcc policy show`: the policy with defaults filled in.
    Policy,
    /// `hpcc policy example`.
    PolicyExample,
    /// `hpcc doctor`.
    Doctor,
    /// `hpcc version`.
    Version,
    /// `hpcc completions`.
    Completions,
    /// `hpcc generate-docs`.
    GeneratedDocs,
    /// `--help` under `--json`.
    Help,
    /// Any command that failed under `--json`.
    Error,
    /// `hpcc verify`: what ran on this node, measured against bare metal.
    Verify,
    /// `hpcc cdi generate`: the CDI specs offered, withheld and written.
    Cdi,
}

impl Kind {
    /// Every kind (for the tests that check each has its schema file).
    pub const ALL: &'static [Kind] = &[
        Kind::Fingerprint,
        Kind::Gpus,
        Kind::NodeFeatures,
        Kind::Verdict,
        Kind::Plan,
        Kind::ImageVerdict,
        Kind::Fleet,
        Kind::Placement,
        Kind::Select,
        Kind::SelectFleet,
        Kind::Check,
        Kind::Conformance,
        Kind::Annotate,
        Kind::PolicyCheck,
        Kind::Policy,
        Kind::PolicyExample,
        Kind::Doctor,
        Kind::Version,
        Kind::Completions,
        Kind::GeneratedDocs,
        Kind::Help,
        Kind::Error,
        Kind::Verify,
        Kind::Cdi,
    ];

    /// The `"kind"` value, and the schema file's stem.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fingerprint => "fingerprint",
            Kind::Gpus => "gpus",
            Kind::NodeFeatures => "node-features",
            Kind::Verdict => "verdict",
            Kind::Plan => "plan",
            Kind::ImageVerdict => "image-verdict",
            Kind::Fleet => "fleet",
            Kind::Placement => "placement",
            Kind::Select => "select",
            Kind::SelectFleet => "select-fleet",
            Kind::Check => "check",
            Kind::Conformance => "conformance",
            Kind::Annotate => "annotate",
            Kind::PolicyCheck => "policy-check",
            Kind::Policy => "policy",
            Kind::PolicyExample => "policy-example",
            Kind::Doctor => "doctor",
            Kind::Version => "version",
            Kind::Completions => "completions",
            Kind::GeneratedDocs => "generated-docs",
            Kind::Help => "help",
            Kind::Error => "error",
            Kind::Verify => "verify",
            Kind::Cdi => "cdi",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A document: `schema` and `kind` first, then the body's own fields.
/// The body must serialise as a JSON object (a struct or a map).
#[derive(Debug, Serialize)]
pub struct Tagged<'a, T: Serialize + ?Sized> {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// What the document is.
    pub kind: &'static str,
    /// The fields.
    #[serde(flatten)]
    pub body: &'a T,
}

/// `body` as the document of `kind`.
pub fn tagged<T: Serialize + ?Sized>(kind: Kind, body: &T) -> Tagged<'_, T> {
    Tagged {
        schema: SCHEMA,
        kind: kind.as_str(),
        body,
    }
}

/// The document's text, pretty-printed with a final newline: what
/// `hpcc ... --json` prints.
pub fn to_string_pretty<T: Serialize + ?Sized>(
    kind: Kind,
    body: &T,
) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(&tagged(kind, body))?;
    s.push('\n');
    Ok(s)
}

/// The document as a JSON value.
pub fn to_value<T: Serialize + ?Sized>(
    kind: Kind,
    body: &T,
) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::to_value(tagged(kind, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_keys_come_first_and_the_body_is_flat() {
        #[derive(Serialize)]
        struct B {
            a: u32,
            b: Option<&'static str>,
        }
        let s = to_string_pretty(Kind::Verdict, &B { a: 1, b: None }).unwrap();
        assert!(
            s.starts_with("{\n  \"schema\": \"hpcc/v1\",\n  \"kind\": \"verdict\",\n  \"a\": 1"),
            "{s}"
        );
        let v = to_value(Kind::Error, &serde_json::json!({"error": "x"})).unwrap();
        assert_eq!(v["error"], "x");
        assert_eq!(v["kind"], "error");
    }

    #[test]
    fn a_body_that_is_not_an_object_is_an_error_not_a_panic() {
        assert!(to_string_pretty(Kind::Verdict, &vec![1, 2]).is_err());
    }

    #[test]
    fn a_document_reads_back_into_its_type() {
        // hpcc-hook reads `hpcc fingerprint --gpus --json` this way.
        let g = crate::fingerprint::GpuFingerprint {
            nvidia: None,
            nvml_note: Some("no GPU".into()),
        };
        let text = to_string_pretty(Kind::Gpus, &g).unwrap();
        let back: crate::fingerprint::GpuFingerprint = serde_json::from_str(&text).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn kinds_are_distinct() {
        let mut seen: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), Kind::ALL.len());
    }
}
