//! The OCI hook protocol: state on stdin, `<bundle>/config.json`, exit code
//! and one line on stderr.
//!
//! Exit codes (documented in docs/hook.md):
//! - 0: the container may start (green, orange, or red let through by `warn`/`off`);
//! - 3: refused by policy; the reason is the single stderr line;
//! - 4: hpcc itself failed and `on_error = "refuse"` (fail closed);
//! - 2: usage error (unknown stage argument).
//!
//! After a start decision the plan's tweaks are applied inside the
//! container (`hpcc_common::apply`) by a helper: this same binary re-run
//! with a hidden first argument, so that the namespace work happens in a
//! fresh single-threaded process. A failed apply is rolled back and is an
//! hpcc failure: `on_error` decides (refuse = exit 4).

use hpcc_common::apply::{self, child, Target};
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
    /// Hidden: the apply helper (see `hpcc_common::apply::child`).
    ApplyHelper,
}

impl Stage {
    /// Parses the hook's first argument (default `prestart`).
    pub fn parse(arg: Option<&str>) -> Result<Stage, String> {
        match arg {
            None | Some("prestart") => Ok(Stage::Prestart),
            Some("createRuntime") => Ok(Stage::CreateRuntime),
            Some(child::CHILD_ARG) => Ok(Stage::ApplyHelper),
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
    if stage == Stage::ApplyHelper {
        // Speaks JSON on stdin/stdout with the hook that started it; the
        // hook logs the outcome.
        return child::child_main(stdin, std::io::stdout().lock());
    }
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
    apply_tweaks(&ctx, &plan.tweaks)?;
    tracing::info!(container = %ctx.id, bundle = %ctx.bundle.display(), score, decision = "start", "container may start");
    Ok(None)
}

/// Applies the plan's tweaks through the helper and logs each effect.
fn apply_tweaks(ctx: &LaunchContext, tweaks: &hpcc_common::plan::Tweaks) -> Result<(), String> {
    if tweaks.is_empty() {
        return Ok(());
    }
    let target = Target {
        rootfs: ctx.rootfs.clone(),
        pid: match ctx.pid {
            Some(pid) => pid,
            None if !apply::touches_container(tweaks) => 0,
            None => return Err(apply::ApplyError::NoPid.to_string()),
        },
    };
    let applied = child::apply_in_child(std::path::Path::new("/proc/self/exe"), tweaks, &target)
        .map_err(|e| {
            tracing::error!(container = %ctx.id, error = %e, "applying the launch tweaks failed (rolled back)");
            format!("applying the launch tweaks failed: {e}")
        })?;
    for m in &applied.mounts {
        tracing::info!(container = %ctx.id, source = %m.source.display(), destination = %m.destination.display(), readonly = m.readonly, "mounted: {}", m.reason);
    }
    for d in &applied.devices {
        tracing::info!(container = %ctx.id, device = %d.path.display(), host = %d.host_path.display(), grant = ?d.grant, "device exposed: {}", d.reason);
    }
    if !applied.ld_cache.is_empty() {
        tracing::info!(container = %ctx.id, dirs = ?applied.ld_cache, "container linker cache rebuilt with the host ldconfig");
    }
    for n in &applied.env_not_applied {
        tracing::info!(container = %ctx.id, "{n}");
    }
    for n in &applied.notes {
        tracing::warn!(container = %ctx.id, "{n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_helper_argument_is_its_own_stage() {
        assert_eq!(
            Stage::parse(Some(child::CHILD_ARG)).unwrap(),
            Stage::ApplyHelper
        );
        assert_eq!(Stage::parse(None).unwrap(), Stage::Prestart);
        assert!(Stage::parse(Some("--hpcc-apply")).is_err());
    }

    #[test]
    fn helper_stage_answers_without_a_policy() {
        // A broken request is a clean failure (exit 1), and the policy file
        // is not even read: the helper only speaks to its parent.
        let mut lines = Vec::new();
        let code = run(
            Stage::ApplyHelper,
            &b"not json"[..],
            Path::new("/nonexistent/hook.toml"),
            &mut |l| lines.push(l.to_owned()),
        );
        assert_eq!(code, 1);
        assert!(lines.is_empty());
    }
}
