//! One launch decision, shared by the OCI hook, the SPANK plugin and the CLI:
//! launch context + fingerprint + policy + user request -> [`Plan`].

use crate::annotations::ImageSpec;
use crate::fingerprint::NodeFingerprint;
use crate::matcher::{self, Check, Finding, Level, Selection, Verdict};
use crate::oci::LaunchContext;
use crate::plan::{self, Plan, Tweaks, UserRequest};
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

/// Decides one launch. The tweaks are planned only for a start.
pub fn plan(
    ctx: &LaunchContext,
    node: &NodeFingerprint,
    policy: &Policy,
    request: &UserRequest,
) -> Result<Plan, LaunchError> {
    let verdict = match image_spec(ctx) {
        Ok(spec) => matcher::evaluate(&spec, node, policy),
        Err(v) => v,
    };
    let (verdict, decision) = plan::decide(&verdict, policy, request);
    let tweaks = Tweaks::default();
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
}
