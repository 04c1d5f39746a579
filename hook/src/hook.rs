//! The OCI hook protocol: state on stdin, `<bundle>/config.json`, exit code
//! and one line on stderr.
//!
//! Exit codes (documented in docs/hook.md):
//! - 0: the container may start (green, orange, or red let through by `warn`/`off`);
//! - 3: refused by policy; the reason is the single stderr line;
//! - 4: hpcc itself failed and `on_error = "refuse"` (fail closed);
//! - 2: usage error (unknown stage argument).

use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::launch;
use hpcc_common::oci::{self, LaunchContext};
use hpcc_common::plan::UserRequest;
use hpcc_config::{OnError, Policy};
use std::io::Read;
use std::path::Path;

/// Container may start.
pub const EXIT_START: i32 = 0;
/// Usage error.
pub const EXIT_USAGE: i32 = 2;
/// Refused by policy.
pub const EXIT_REFUSED: i32 = 3;
/// hpcc failed, fail closed.
pub const EXIT_ERROR: i32 = 4;

/// The OCI hook stages hpcc acts in. `prestart` (runc, crun, podman) and
/// `createRuntime` run in the runtime's namespaces before pivot_root; the
/// others only log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `prestart` (deprecated by the spec, what runtimes still run).
    Prestart,
    /// `createRuntime`.
    CreateRuntime,
    /// `createContainer`, `startContainer`, `poststart`, `poststop`: nothing to decide.
    Other,
}

impl Stage {
    /// Parses the hook's first argument (default `prestart`).
    pub fn parse(arg: Option<&str>) -> Result<Stage, String> {
        match arg {
            None | Some("prestart") => Ok(Stage::Prestart),
            Some("createRuntime") => Ok(Stage::CreateRuntime),
            Some("createContainer" | "startContainer" | "poststart" | "poststop") => {
                Ok(Stage::Other)
            }
            Some(o) => Err(format!(
                "unknown hook stage {o:?} (expected prestart, createRuntime, createContainer, startContainer, poststart or poststop)"
            )),
        }
    }
}

/// Runs the hook with explicit inputs; returns the exit code. `stderr_line`
/// receives the user-facing line (refusal or failure).
pub fn run(
    stage: Stage,
    stdin: impl Read,
    policy_path: &Path,
    stderr_line: &mut dyn FnMut(&str),
) -> i32 {
    let policy = match Policy::load(policy_path) {
        Ok(p) => p,
        Err(e) => {
            // Without a policy we cannot know on_error: fail closed, the
            // admin must fix the file.
            hpcc_common::logging::init("hpcc-hook", "info", true);
            tracing::error!(error = %e, "policy invalid, refusing start");
            stderr_line(&format!("hpcc: refused to start the container: {e}"));
            return EXIT_ERROR;
        }
    };
    let sink = hpcc_common::logging::init("hpcc-hook", &policy.log.level, policy.log.journald);
    if stage == Stage::Other {
        return EXIT_START;
    }
    match decide(stdin, &policy, policy_path, sink) {
        Ok(Some(line)) => {
            stderr_line(&line);
            EXIT_REFUSED
        }
        Ok(None) => EXIT_START,
        Err(e) => match policy.on_error {
            OnError::Refuse => {
                tracing::error!(error = %e, "hpcc failed, refusing start (on_error = \"refuse\")");
                stderr_line(&format!(
                    "hpcc: refused to start the container: {e} (policy on_error = \"refuse\" in {})",
                    policy_path.display()
                ));
                EXIT_ERROR
            }
            OnError::Allow => {
                tracing::warn!(error = %e, "hpcc failed, starting unchecked (on_error = \"allow\")");
                EXIT_START
            }
        },
    }
}

/// Ok(Some(line)) = refused with that line; Ok(None) = start.
fn decide(
    stdin: impl Read,
    policy: &Policy,
    policy_path: &Path,
    sink: hpcc_common::logging::Sink,
) -> Result<Option<String>, String> {
    let state = oci::read_state(stdin).map_err(|e| e.to_string())?;
    let spec = oci::load_bundle_config(state.bundle()).map_err(|e| e.to_string())?;
    let ctx = LaunchContext::new(&state, &spec);
    let node = NodeFingerprint::cached(policy);
    let plan =
        launch::plan(&ctx, &node, policy, &UserRequest::default()).map_err(|e| e.to_string())?;
    let score = plan.verdict.score.as_str();
    for f in &plan.verdict.findings {
        tracing::info!(container = %ctx.id, check = f.check.as_str(), level = ?f.level, image = f.image.as_deref().unwrap_or(""), node = f.node.as_deref().unwrap_or(""), "{}", f.reason);
    }
    if let Some(line) = plan.refusal_line(policy_path) {
        // On stderr the line itself is the record; do not print it twice.
        if sink == hpcc_common::logging::Sink::Journald {
            tracing::error!(container = %ctx.id, bundle = %ctx.bundle.display(), score, decision = "refuse", "{line}");
        }
        return Ok(Some(line));
    }
    if let hpcc_common::plan::Decision::Start { warnings } = &plan.decision {
        for w in warnings {
            tracing::warn!(container = %ctx.id, "{w}");
        }
    }
    tracing::info!(container = %ctx.id, bundle = %ctx.bundle.display(), score, decision = "start", "container may start");
    Ok(None)
}
