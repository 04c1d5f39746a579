//! The launch decision, whole, for every entry point (`hpcc-hook`,
//! `hpcc-runtime`, the SPANK plugin, `hpcc match`): launch context + node
//! fingerprint + policy + user request -> an [`Outcome`], with the
//! `on_error` half and the exit codes. Entry points keep only their own
//! I/O (the OCI state on stdin, the job user's read of the bundle, the
//! spooled config) and call:
//!
//! 1. [`load_policy`]: an unreadable or invalid policy fails closed (the
//!    policy itself would say what `on_error` is);
//! 2. [`decide`]: the verdict, the policy and the user's request give a
//!    [`Plan`] (start with its tweaks, or refuse with reasons);
//! 3. [`outcome`]: the plan, or hpcc's own failure, becomes what to do,
//!    with the one line a person reads when the start is refused.
//!
//! Image text reaches those lines (annotation values, CDI names, paths):
//! every line is passed through [`crate::text::escape`], so an image cannot
//! print lines that look like hpcc's.

use crate::annotations::ImageSpec;
use crate::apply::ApplyError;
use crate::fingerprint::NodeFingerprint;
use crate::matcher::{self, Check, Finding, Level, Verdict};
use crate::oci::{LaunchContext, OciError};
use crate::plan::{Decision, MpiChoice, Plan, Refusal, Tweaks, UserRequest};
use crate::rootfs::{Rootfs, RootfsError};
use crate::tweaks::{self, host::Host, host::RealHost, TweakError};
use hpcc_config::{ConfigError, Enforcement, OnError, Policy, UnannotatedAction};
use std::path::{Path, PathBuf};

/// Exit codes shared by `hpcc-hook` and `hpcc-runtime` (docs/hook.md).
pub mod exit {
    /// The container may start.
    pub const START: i32 = 0;
    /// Bad command line.
    pub const USAGE: i32 = 2;
    /// Refused by policy; the reason is the one line on stderr.
    pub const REFUSED: i32 = 3;
    /// hpcc itself failed and `on_error = "refuse"` (fail closed).
    pub const ERROR: i32 = 4;
}

/// hpcc's own failure to decide or to apply a launch (not the image's
/// fault): `on_error` decides what happens.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The OCI state or the bundle's config.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// The image's rootfs cannot be opened.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// Planning a tweak failed in a way that is not the image's fault.
    #[error("planning the launch tweaks failed: {0}")]
    Tweaks(#[from] TweakError),
    /// Applying the tweaks failed (everything done was undone).
    #[error("applying the launch tweaks failed: {0}")]
    Apply(#[from] ApplyError),
    /// The site's curated collections cannot be read.
    #[error(transparent)]
    Collections(#[from] crate::collections::CollectionError),
    /// The entry point's own input (the job user's bundle read, the
    /// spooled config of Slurm).
    #[error(transparent)]
    Input(Box<dyn std::error::Error + Send + Sync>),
}

impl LaunchError {
    /// Wraps an entry point's own input error.
    pub fn input(e: impl std::error::Error + Send + Sync + 'static) -> LaunchError {
        LaunchError::Input(Box::new(e))
    }
}

/// Why a start is refused: the policy (exit [`exit::REFUSED`]) or hpcc's
/// own failure under `on_error = "refuse"` (exit [`exit::ERROR`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedBy {
    /// A policy rule refused what the image needs.
    Policy,
    /// hpcc failed and fails closed.
    Failure,
}

/// What an entry point does with one launch.
#[derive(Debug)]
pub enum Outcome {
    /// Start the container with this plan (its tweaks, its warnings).
    Start(Box<Plan>),
    /// hpcc failed and `on_error = "allow"`: start without checks or tweaks.
    StartUnchecked(LaunchError),
    /// Do not start it.
    Refuse {
        /// `hpcc: refused to start container ...`: the one line for the
        /// user, escaped.
        line: String,
        /// Policy or failure.
        by: RefusedBy,
    },
}

impl Outcome {
    /// The exit code of a hook or runtime that stops here (or goes on).
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Start(_) | Outcome::StartUnchecked(_) => exit::START,
            Outcome::Refuse {
                by: RefusedBy::Policy,
                ..
            } => exit::REFUSED,
            Outcome::Refuse {
                by: RefusedBy::Failure,
                ..
            } => exit::ERROR,
        }
    }

    /// The refusal line, when refused.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            Outcome::Refuse { line, .. } => Some(line),
            _ => None,
        }
    }
}

/// How a refused launch names the container in its line.
fn who(container: Option<&str>, node: Option<&str>) -> String {
    match (container, node) {
        (Some(c), Some(n)) => format!("container {c} on {n}"),
        (Some(c), None) => format!("container {c}"),
        (None, Some(n)) => format!("the container on {n}"),
        (None, None) => "the container".into(),
    }
}

/// Loads the policy. Without a valid policy `on_error` is unknown, so the
/// start is refused (fail closed): the admin must fix the file.
pub fn load_policy(path: &Path, container: Option<&str>) -> Result<Policy, Outcome> {
    Policy::load(path).map_err(|e: ConfigError| {
        tracing::error!(error = %e, "policy invalid, refusing start");
        Outcome::Refuse {
            line: crate::text::escape(&format!(
                "hpcc: refused to start {}: {e}",
                who(container, None)
            )),
            by: RefusedBy::Failure,
        }
    })
}

/// The launch's outcome: a plan that starts or refuses, or hpcc's own
/// failure mapped through `on_error`.
pub fn outcome(
    policy: &Policy,
    policy_path: &Path,
    container: Option<&str>,
    node: Option<&str>,
    planned: Result<Plan, LaunchError>,
) -> Outcome {
    match planned {
        Ok(plan) => match refusal_line(&plan, policy_path) {
            Some(line) => Outcome::Refuse {
                line,
                by: RefusedBy::Policy,
            },
            None => Outcome::Start(Box::new(plan)),
        },
        Err(e) => failed(policy, policy_path, container, node, e),
    }
}

/// hpcc's own failure under the policy's `on_error`.
pub fn failed(
    policy: &Policy,
    policy_path: &Path,
    container: Option<&str>,
    node: Option<&str>,
    e: LaunchError,
) -> Outcome {
    match policy.on_error {
        OnError::Refuse => {
            tracing::error!(error = %e, "hpcc failed, refusing start (on_error = \"refuse\")");
            Outcome::Refuse {
                line: crate::text::escape(&format!(
                    "hpcc: refused to start {}: {e} (policy on_error = \"refuse\" in {})",
                    who(container, node),
                    policy_path.display()
                )),
                by: RefusedBy::Failure,
            }
        }
        OnError::Allow => {
            tracing::warn!(error = %e, "hpcc failed, starting unchecked (on_error = \"allow\")");
            Outcome::StartUnchecked(e)
        }
    }
}

/// Logs one decision: each finding at info, warnings at warn, the
/// outcome at info (the refusal line itself is printed by the entry
/// point, so it is not logged at warn or error, where stderr would show it
/// twice).
pub fn log(outcome: &Outcome, container: &str) {
    match outcome {
        Outcome::Start(plan) => {
            for f in plan.verdict.findings() {
                tracing::info!(
                    container,
                    check = f.check.as_str(),
                    level = f.level.as_str(),
                    image = f.image.as_deref().unwrap_or(""),
                    node = f.node.as_deref().unwrap_or(""),
                    "{}",
                    crate::text::escape(&f.reason)
                );
            }
            if plan.verdict.unannotated {
                tracing::info!(container, "image carries no annotation hpcc can check: started unchecked (policy unannotated = \"allow\")");
            }
            if let Decision::Start { warnings } = &plan.decision {
                for w in warnings {
                    tracing::warn!(container, "{}", crate::text::escape(w));
                }
            }
            if let Some(w) = &plan.slurm {
                log_slurm(w, container);
            }
            tracing::info!(
                container,
                score = plan.verdict.score().as_str(),
                mounts = plan.tweaks.mounts.len(),
                devices = plan.tweaks.devices.len(),
                decision = "start",
                "container may start"
            );
        }
        Outcome::StartUnchecked(e) => {
            tracing::info!(container, error = %e, decision = "start-unchecked", "container starts unchecked");
        }
        Outcome::Refuse { line, .. } => {
            tracing::info!(container, decision = "refuse", "{line}");
        }
    }
}

/// A Slurm step's wiring in the plan's log: each mount with its reason,
/// then the variables' names and the namespaces shared.
fn log_slurm(w: &crate::plan::SlurmWiring, container: &str) {
    for m in &w.mounts {
        tracing::info!(
            container,
            source = %m.source.display(),
            destination = %m.destination.display(),
            readonly = m.readonly,
            "Slurm step mount: {}",
            m.reason
        );
    }
    let names: Vec<&str> = w.env.iter().map(|e| e.name.as_str()).collect();
    let shared: Vec<&str> = w
        .namespaces
        .iter()
        .filter_map(|e| match e {
            crate::plan::NamespaceEdit::Share { namespace, .. } => Some(namespace.as_str()),
            _ => None,
        })
        .collect();
    tracing::info!(
        container,
        env = %names.join(","),
        node_namespaces = %shared.join(","),
        namespace_edits = w.namespaces.len(),
        "Slurm step wired"
    );
}

/// What the image says about itself: its annotations, and the environment
/// its process gets (NVIDIA images carry `NVIDIA_REQUIRE_CUDA` there).
/// Never fails: a value hpcc cannot read is a problem on its key, and the
/// matcher decides what it costs.
pub fn image_spec(ctx: &LaunchContext) -> ImageSpec {
    ImageSpec::read(
        ctx.annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        ctx.process_env.iter().map(String::as_str),
    )
}

/// The host linker cache the tweak planner resolves host libraries with.
pub const HOST_LD_CACHE: &str = "/etc/ld.so.cache";

/// Decides one launch. The tweaks are planned only for a start. Host
/// library facts come from the per-boot cache of the policy's
/// `[cache] dir` while the files are unchanged, and what this launch had
/// to read is added to it (root only): see [`crate::tweaks::hostcache`].
pub fn decide(
    ctx: &LaunchContext,
    node: &NodeFingerprint,
    policy: &Policy,
    request: &UserRequest,
) -> Result<Plan, LaunchError> {
    decide_in(ctx, node, policy, request, &LaunchImage::new(&ctx.rootfs))
}

/// [`decide`], reading the image through `image`, which the caller may
/// hand on to the linker cache builder
/// ([`crate::apply::ldcache_file::prepare_in`]).
pub fn decide_in(
    ctx: &LaunchContext,
    node: &NodeFingerprint,
    policy: &Policy,
    request: &UserRequest,
    image: &LaunchImage,
) -> Result<Plan, LaunchError> {
    let host = RealHost::for_policy(Path::new(HOST_LD_CACHE), policy);
    let plan = decide_image(ctx, node, policy, request, &host, image);
    host.save();
    plan
}

/// The image's rootfs for one launch: opened as a snapshot
/// ([`Rootfs::open_snapshot`]) the first time something reads it, and
/// shared by the planner and the linker cache builder, so that each image
/// file is asked of the shared file system once per launch (the image's
/// `/etc/ld.so.cache` is read by both).
#[derive(Debug)]
pub struct LaunchImage {
    path: PathBuf,
    root: std::cell::OnceCell<Rootfs>,
}

impl LaunchImage {
    /// The image at `rootfs` (host path), not opened yet.
    pub fn new(rootfs: &Path) -> LaunchImage {
        LaunchImage {
            path: rootfs.to_owned(),
            root: std::cell::OnceCell::new(),
        }
    }

    /// The rootfs, opened on first use.
    pub fn root(&self) -> Result<&Rootfs, RootfsError> {
        if let Some(r) = self.root.get() {
            return Ok(r);
        }
        let r = Rootfs::open_snapshot(&self.path)?;
        Ok(self.root.get_or_init(|| r))
    }

    /// The container's linker cache for a plan's `entries`: the image's
    /// own cache (read through this snapshot) with them in front, in the
    /// policy's store (`cache_dir`); `None` when the plan adds no entry.
    /// The one place every entry point prepares it (the hook binds it over
    /// `/etc/ld.so.cache`, the runtime mounts it by the config).
    pub fn linker_cache(
        &self,
        entries: &[crate::plan::CacheEntry],
        cache_dir: &Path,
    ) -> Result<Option<PathBuf>, ApplyError> {
        if entries.is_empty() {
            return Ok(None);
        }
        let store = crate::apply::ldcache_file::store_dir(cache_dir);
        let root = self
            .root()
            .map_err(crate::apply::ldcache_file::LdCacheFileError::from)?;
        Ok(Some(crate::apply::ldcache_file::prepare_in(
            root, entries, &store,
        )?))
    }
}

/// [`decide`] against a given host (tests use a fake one). An empty
/// `ctx.rootfs` means there is no image to inspect (`hpcc match
/// --annotations`): the image side of the tweaks is then not checked.
///
/// Tweak problems that are the image's fault come back as findings: they
/// are added to the verdict and the policy is applied again, so the
/// policy's enforcement applies to them like to any other finding and the
/// refusal line explains them.
pub fn decide_with(
    ctx: &LaunchContext,
    node: &NodeFingerprint,
    policy: &Policy,
    request: &UserRequest,
    host: &dyn Host,
) -> Result<Plan, LaunchError> {
    decide_image(
        ctx,
        node,
        policy,
        request,
        host,
        &LaunchImage::new(&ctx.rootfs),
    )
}

/// [`decide_with`] through a shared [`LaunchImage`].
fn decide_image(
    ctx: &LaunchContext,
    node: &NodeFingerprint,
    policy: &Policy,
    request: &UserRequest,
    host: &dyn Host,
    image: &LaunchImage,
) -> Result<Plan, LaunchError> {
    // The site's curated annotations for this image (policy
    // `[collections]`), merged before anything reads the annotations.
    let mut merged;
    let ctx = if policy.collections.dir.is_some() {
        merged = ctx.clone();
        crate::collections::apply(&mut merged, policy)?;
        &merged
    } else {
        ctx
    };
    let verdict = matcher::evaluate(&image_spec(ctx), node, policy);
    let (mut verdict, mut decision) = apply_policy(verdict, policy, request);
    let mut tweaks = Tweaks::default();
    let mut notes = Vec::new();
    if decision.allows_start() {
        let rootfs = if verdict.selection.needs_image() && !ctx.rootfs.as_os_str().is_empty() {
            Some(image.root()?)
        } else {
            None
        };
        let planned = tweaks::plan(ctx, node, policy, &verdict.selection, host, rootfs)?;
        if !planned.findings.is_empty() || planned.selection != verdict.selection {
            verdict.extend(planned.findings);
            verdict.selection = planned.selection;
            (verdict, decision) = apply_policy(verdict, policy, request);
        }
        if decision.allows_start() {
            tweaks = planned.tweaks;
        }
        notes = planned.notes;
    }
    Ok(Plan {
        container: ctx.id.clone(),
        node: node.hostname.clone(),
        verdict,
        decision,
        tweaks,
        notes,
        slurm: None,
    })
}

/// The user's MPI choice as findings: `none` drops the replacement,
/// `replace` makes its absence fatal.
fn apply_mpi_choice(verdict: &mut Verdict, choice: MpiChoice) {
    match choice {
        MpiChoice::Auto => {}
        MpiChoice::None => {
            if verdict.selection.mpi.take().is_some() {
                verdict.push(Finding::new(
                    Check::Mpi,
                    Level::Degraded,
                    "MPI replacement declined by the user (--hpcc-mpi=none): the image's own MPI is used",
                ));
            }
        }
        MpiChoice::Replace => {
            if verdict.selection.mpi.is_none() {
                let why = verdict
                    .findings()
                    .iter()
                    .filter(|f| f.check == Check::Mpi && f.level != Level::Ok)
                    .map(|f| f.reason.as_str())
                    .next()
                    .unwrap_or("the image does not allow mpi_replace")
                    .to_owned();
                verdict.push(Finding::new(
                    Check::Mpi,
                    Level::Fatal,
                    format!("MPI replacement was required (--hpcc-mpi=replace) and is not possible: {why}"),
                ));
            }
        }
    }
}

/// Applies policy and user request to a verdict. Pure.
fn apply_policy(
    mut verdict: Verdict,
    policy: &Policy,
    request: &UserRequest,
) -> (Verdict, Decision) {
    apply_mpi_choice(&mut verdict, request.mpi);
    let mut warnings = Vec::new();
    let mut reasons = Vec::new();
    // The matcher says so; counting findings would let a look-alike key's
    // finding turn an unannotated image into an annotated one.
    if verdict.unannotated {
        match policy.unannotated {
            // What the site chose: logged at info by `log`, not a warning
            // on every start of every unannotated image.
            UnannotatedAction::Allow => {}
            UnannotatedAction::Refuse => reasons.push(Refusal {
                check: Check::Annotations,
                reason: if verdict.uncheckable_keys.is_empty() {
                    "the image carries no annotation hpcc can check and this site runs only images that declare what they need".into()
                } else {
                    format!(
                        "the image carries no annotation hpcc can check (keys seen: {}; none could be checked) and this site runs only images that declare what they need",
                        verdict.uncheckable_keys.join("; ")
                    )
                },
                image: Some(if verdict.uncheckable_keys.is_empty() {
                    "no annotations".into()
                } else {
                    "no requirement hpcc can check".into()
                }),
                node: None,
                policy: "unannotated = \"refuse\"".into(),
            }),
        }
    }
    for f in verdict.with_level(Level::Fatal) {
        let configured = f.check.enforcement(policy);
        let effective = policy.effective(configured, request.enforcement);
        let rule = if effective == configured {
            format!("checks.{} = \"{}\"", f.check, configured)
        } else {
            format!(
                "checks.{} = \"{}\", user asked \"{}\"",
                f.check,
                configured,
                request.enforcement.map_or("", |e| e.as_str())
            )
        };
        match effective {
            Enforcement::Enforce => reasons.push(Refusal {
                check: f.check,
                reason: f.reason.clone(),
                image: f.image.clone(),
                node: f.node.clone(),
                policy: rule,
            }),
            Enforcement::Warn => warnings.push(format!("{} (started anyway: {rule})", f.reason)),
            Enforcement::Off => {}
        }
    }
    let decision = if reasons.is_empty() {
        Decision::Start { warnings }
    } else {
        Decision::Refuse { reasons }
    };
    (verdict, decision)
}

/// The one line a user sees when the start is refused: container, what
/// the image needs, what the node has, which policy refused. Escaped:
/// image text cannot break it into several lines.
pub fn refusal_line(plan: &Plan, policy_path: &Path) -> Option<String> {
    let Decision::Refuse { reasons } = &plan.decision else {
        return None;
    };
    let parts: Vec<String> = reasons
        .iter()
        .map(|r| {
            let mut s = r.reason.clone();
            match (&r.image, &r.node) {
                (Some(i), Some(n)) => s.push_str(&format!(" [image: {i}; node: {n}]")),
                (Some(i), None) => s.push_str(&format!(" [image: {i}]")),
                _ => {}
            }
            s.push_str(&format!(
                " (policy {} in {})",
                r.policy,
                policy_path.display()
            ));
            s
        })
        .collect();
    Some(crate::text::escape(&format!(
        "hpcc: refused to start container {} on {}: {}",
        plan.container,
        plan.node,
        parts.join("; ")
    )))
}

pub mod coldfill;
mod driver;
pub use driver::{run, Effect, RunInput};

#[cfg(test)]
mod tests;
