//! The OCI hook protocol: state on stdin, `<bundle>/config.json`, exit code
//! and one line on stderr. The decision is `hpcc_common::launch`'s; this
//! file only reads the hook's input and applies a start's tweaks.
//!
//! Exit codes are `launch::exit` (documented in docs/hook.md): 0 start,
//! 3 refused by policy, 4 hpcc failed and `on_error = "refuse"`, 2 usage.
//!
//! After a start decision the plan's tweaks are applied inside the
//! container (`hpcc_common::apply`) by a helper: this same binary re-run
//! with a hidden first argument, so that the namespace work happens in a
//! fresh single-threaded process. A failed apply is rolled back and is an
//! hpcc failure: `on_error` decides.

use hpcc_common::apply::{self, child, Target};
use hpcc_common::fingerprint::{GpuProbe, NodeFingerprint};
use hpcc_common::launch::{self, LaunchError, Outcome};
use hpcc_common::oci::{self, LaunchContext};
use hpcc_common::plan::{Tweaks, UserRequest};
use hpcc_config::Policy;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The OCI hook stages hpcc acts in. `prestart` (runc, crun, podman) and
/// `createRuntime` run in the runtime's namespaces before pivot_root: the
/// launch is decided and its tweaks applied by entering the container's
/// mount namespace. `createContainer` runs inside the container's
/// namespaces: the launch is decided (a refusal still stops it), but no
/// mount is made there (the apply layer cannot tell that namespace from
/// the host's, and refuses). The argument only names the stage the admin
/// meant: the apply layer checks the namespaces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `prestart` (deprecated by the spec, what runtimes still run).
    Prestart,
    /// `createRuntime`.
    CreateRuntime,
    /// `createContainer`.
    CreateContainer,
    /// `startContainer`, `poststart`, `poststop`: the container is already
    /// set up or gone: nothing to decide.
    Other,
    /// Hidden: the apply helper (see `hpcc_common::apply::child`).
    ApplyHelper,
}

/// A first argument that names no stage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hook stage {0:?} (expected prestart, createRuntime, createContainer, startContainer, poststart or poststop)")]
pub struct UnknownStage(pub String);

impl Stage {
    /// Parses the hook's first argument (default `prestart`).
    pub fn parse(arg: Option<&str>) -> Result<Stage, UnknownStage> {
        match arg {
            None | Some("prestart") => Ok(Stage::Prestart),
            Some("createRuntime") => Ok(Stage::CreateRuntime),
            Some("createContainer") => Ok(Stage::CreateContainer),
            Some(child::CHILD_ARG) => Ok(Stage::ApplyHelper),
            Some("startContainer" | "poststart" | "poststop") => Ok(Stage::Other),
            Some(o) => Err(UnknownStage(o.to_owned())),
        }
    }
}

/// The hook's command line: `hpcc-hook [STAGE] [--config PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookArgs {
    /// The stage (first positional argument, default `prestart`).
    pub stage: Stage,
    /// The policy (default `/etc/hpcc/hook.toml`).
    pub config: PathBuf,
    /// The CDI devices of hpcc's spec entry that runs this hook
    /// (`--cdi=hpcc.io/mpi=mpich`, repeatable): see [`crate::cdi`].
    pub cdi: Vec<String>,
}

/// A command line the hook does not understand (or `--help`/`--version`,
/// which clap reports the same way).
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// Unknown stage.
    #[error(transparent)]
    Stage(#[from] UnknownStage),
    /// Anything else, as clap words it.
    #[error("{}", first_line(.0))]
    Clap(#[from] clap::Error),
}

fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// `hpcc-hook`'s clap command: its `--help` and its man page, hpcc-hook(8).
pub fn command() -> clap::Command {
    use clap::{Arg, ArgAction};
    clap::Command::new("hpcc-hook")
        .version(env!("CARGO_PKG_VERSION"))
        .about("hpcc OCI hook: refuse images this node cannot run, apply the tweaks they allow")
        .long_about(
            "The OCI hook of hpcc, run by runc, crun, podman and CRI-O (hooks.d) and by \
hpcc-runtime for Slurm. It reads the OCI state on stdin and <bundle>/config.json, fingerprints \
the node (cached per boot), matches the image's org.supercontainers.* annotations against it \
under the policy, and either lets the start go on (after applying the plan's tweaks inside \
the container) or stops it with one line on stderr. prestart and createRuntime decide and \
apply; the other stages only exit 0. The policy comes from --config and never from the \
environment: a runtime may give a hook the image's own environment.",
        )
        .arg(
            // Checked by Stage::parse, whose message docs/hook.md documents.
            Arg::new("stage").value_name("STAGE").help(
                "The OCI hook stage this entry runs at: prestart (default), createRuntime, \
                 createContainer, startContainer, poststart or poststop",
            ),
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("PATH")
                .action(ArgAction::Set)
                .default_value(hpcc_config::DEFAULT_PATH)
                .value_parser(clap::value_parser!(PathBuf))
                .help("The policy file (hook.toml(5))"),
        )
        .arg(
            Arg::new("cdi")
                .long("cdi")
                .value_name("KIND=NAME")
                .action(ArgAction::Append)
                .help(
                    "Set by the CDI specs of `hpcc cdi generate` (hook entry at createRuntime): \
                     the hpcc CDI device this entry was made for; the hook then also adds that \
                     device's libraries to the container's linker cache",
                ),
        )
        .after_help(
            "Exit status: 0 start; 2 bad command line; 3 refused by policy (the reason is the \
one line on stderr); 4 hpcc failed and on_error = \"refuse\" (also: invalid policy).\n\n\
Example (/usr/share/containers/oci/hooks.d/hpcc.json):\n  \
{\"version\": \"1.0.0\", \"hook\": {\"path\": \"/usr/libexec/hpcc/hpcc-hook\",\n    \
\"args\": [\"hpcc-hook\", \"prestart\", \"--config=/etc/hpcc/hook.toml\"], \"timeout\": 10},\n  \
\"when\": {\"always\": true}, \"stages\": [\"prestart\"]}",
        )
}

impl HookArgs {
    /// Parses `argv[1..]`. The policy path comes from here and never from
    /// the environment: runc gives a `createContainer` hook the container's
    /// own `process.env`, which the image writes.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<HookArgs, UsageError> {
        let args: Vec<String> = args.into_iter().collect();
        // The hidden helper stage looks like an option to clap.
        if args.first().map(String::as_str) == Some(child::CHILD_ARG) {
            return Ok(HookArgs {
                stage: Stage::ApplyHelper,
                config: PathBuf::from(hpcc_config::DEFAULT_PATH),
                cdi: vec![],
            });
        }
        let m =
            command().try_get_matches_from(std::iter::once("hpcc-hook".to_owned()).chain(args))?;
        Ok(HookArgs {
            stage: Stage::parse(m.get_one::<String>("stage").map(String::as_str))?,
            config: m
                .get_one::<PathBuf>("config")
                .cloned()
                .unwrap_or_else(|| PathBuf::from(hpcc_config::DEFAULT_PATH)),
            cdi: m
                .get_many::<String>("cdi")
                .map(|v| v.cloned().collect())
                .unwrap_or_default(),
        })
    }
}

/// `hpcc-hook`'s whole life: arguments in, exit code out.
pub fn main(args: impl IntoIterator<Item = String>) -> i32 {
    match HookArgs::parse(args) {
        Ok(a) => run_cdi(
            a.stage,
            std::io::stdin().lock(),
            &a.config,
            &a.cdi,
            &mut |l| eprintln!("{l}"),
        ),
        Err(UsageError::Clap(e))
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            launch::exit::START
        }
        Err(e) => {
            eprintln!("hpcc-hook: {e}");
            launch::exit::USAGE
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
    run_cdi(stage, stdin, policy_path, &[], stderr_line)
}

/// [`run`] for a hook entry made for hpcc's CDI devices `cdi` (empty: the
/// hooks.d entry).
pub fn run_cdi(
    stage: Stage,
    stdin: impl Read,
    policy_path: &Path,
    cdi: &[String],
    stderr_line: &mut dyn FnMut(&str),
) -> i32 {
    if stage == Stage::ApplyHelper {
        // Speaks JSON on stdin/stdout with the hook that started it; the
        // hook logs the outcome.
        return child::child_main(stdin, std::io::stdout().lock());
    }
    let policy = match launch::load_policy(policy_path, None) {
        Ok(p) => p,
        Err(refused) => {
            hpcc_common::logging::init("hpcc-hook", &hpcc_config::Log::default());
            if let Some(line) = refused.refusal() {
                stderr_line(line);
            }
            return refused.exit_code();
        }
    };
    hpcc_common::logging::init("hpcc-hook", &policy.log);
    if stage == Stage::Other {
        return launch::exit::START;
    }
    let (ctx, spec) = match read_input(stdin) {
        Ok(c) => c,
        Err(e) => {
            let input = launch::RunInput {
                policy: &policy,
                policy_path,
                id: None,
                node: None,
                planned: Err(e),
            };
            // Nothing to apply: on_error allows at most an unchecked start.
            let (outcome, _) = launch::run(input, &mut |_: &mut Outcome| Ok(()));
            return finish(outcome, stderr_line);
        }
    };
    // One decision per container (crate::cdi): the hooks.d entry stands
    // aside for hpcc's CDI entry, and of several CDI entries the first acts.
    let cdi_entries = crate::cdi::self_exe()
        .map(|exe| crate::cdi::entries(&spec, &exe, policy_path))
        .unwrap_or_default();
    let cdi_devices = if cdi.is_empty() {
        if let Some(first) = cdi_entries.first() {
            tracing::info!(container = %ctx.id, cdi = %first.join(","), "the launch is decided by hpcc's CDI hook entry (createRuntime)");
            return launch::exit::START;
        }
        vec![]
    } else {
        match crate::cdi::acting(cdi, &cdi_entries) {
            Some(all) => all,
            None => {
                tracing::debug!(container = %ctx.id, "an earlier hpcc CDI hook entry acts for this container");
                return launch::exit::START;
            }
        }
    };
    // On a cold cache one launch of a burst fills it (the GPU helper
    // included) while the others wait: held until the mounts are made.
    let (node, _fill) = launch::coldfill::fingerprint(&policy, &gpu_probe(&policy));
    // One snapshot of the image for the planner and the cache builder.
    let image = launch::LaunchImage::new(&ctx.rootfs);
    let input = launch::RunInput {
        policy: &policy,
        policy_path,
        id: Some(&ctx.id),
        node: Some(&node.hostname),
        planned: launch::decide_in(&ctx, &node, &policy, &UserRequest::default(), &image),
    };
    // A start unchecked gets nothing: its plan is unknown.
    let (outcome, _) = launch::run(input, &mut |o: &mut Outcome| match o {
        Outcome::Start(plan) if cdi_devices.is_empty() => {
            apply_tweaks(&ctx, &image, &plan.tweaks, &policy, true)
        }
        Outcome::Start(plan) => {
            let tweaks = with_cdi(
                &ctx,
                &spec,
                &image,
                &node,
                &policy,
                &plan.tweaks,
                &cdi_devices,
            );
            // No stack: the engine's CDI mounts are in hpcc's directories,
            // and one bind over them would hide them.
            apply_tweaks(&ctx, &image, &tweaks, &policy, false)
        }
        _ => Ok(()),
    });
    finish(outcome, stderr_line)
}

/// The plan's tweaks for a container that asked for hpcc's CDI devices
/// `devices`: without the mounts the engine already made from the specs,
/// and with the devices' linker-cache entries (those whose mount the
/// engine made, [`cdi_offer::cache_entries_for`]) after the plan's. A musl
/// image (annotated, or with musl's loader) gets no entry: the engine
/// mounted the glibc libraries the specs name, and nothing will load them.
fn with_cdi(
    ctx: &LaunchContext,
    spec: &oci_spec::runtime::Spec,
    image: &launch::LaunchImage,
    node: &NodeFingerprint,
    policy: &Policy,
    planned: &Tweaks,
    devices: &[String],
) -> Tweaks {
    let id = ctx.id.as_str();
    let mounts = crate::cdi::spec_mounts(spec);
    let mut tweaks = planned.clone();
    tweaks.mounts.retain(|m| {
        !mounts
            .iter()
            .any(|(s, d)| s == &m.source && d == &m.destination)
    });
    let musl_annotated =
        launch::image_spec(ctx).libc == Some(hpcc_common::annotations::LibcImplementation::Musl);
    let loader = image
        .root()
        .ok()
        .and_then(hpcc_common::cdi_offer::musl_loader);
    if musl_annotated || loader.is_some() {
        let why = loader.map_or_else(
            || "its annotation org.supercontainers.libc".to_owned(),
            |l| format!("its loader {}", l.display()),
        );
        tracing::warn!(container = id, cdi = %devices.join(","), "the image uses musl ({why}): the CDI devices' libraries are glibc builds; they are not added to its linker cache");
        return tweaks;
    }
    let offers = match hpcc_common::cdi_offer::offers_here(node, policy) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(
                container = id,
                "the CDI devices' linker cache entries cannot be planned: {e}"
            );
            return tweaks;
        }
    };
    let (entries, notes) = hpcc_common::cdi_offer::cache_entries_for(&offers, devices, &mounts);
    for n in notes {
        tracing::warn!(container = id, "{n}");
    }
    for e in entries {
        if !tweaks
            .ld_cache
            .iter()
            .any(|x| x.soname == e.soname && x.flags == e.flags)
        {
            tweaks.ld_cache.push(e);
        }
    }
    tweaks
}

/// Where the hook gets GPU facts on a fingerprint cache miss: never from
/// NVML in its own process (a static binary must not `dlopen`, and the
/// hook's environment may be the image's), but from the dynamic `hpcc`
/// ([`GpuProbe::helper`]) with the policy's deadline.
pub fn gpu_probe(policy: &Policy) -> GpuProbe {
    GpuProbe::helper(std::time::Duration::from_millis(
        policy.limits.probe_timeout_ms,
    ))
}

/// Prints the outcome's line (it was logged by [`launch::run`]), gives its
/// exit code.
fn finish(outcome: Outcome, stderr_line: &mut dyn FnMut(&str)) -> i32 {
    if let Some(line) = outcome.refusal() {
        stderr_line(line);
    }
    outcome.exit_code()
}

/// The OCI state on stdin and the bundle's config it names.
fn read_input(stdin: impl Read) -> Result<(LaunchContext, oci_spec::runtime::Spec), LaunchError> {
    let state = oci::read_state(stdin)?;
    let spec = oci::load_bundle_config(state.bundle())?;
    Ok((LaunchContext::new(&state, &spec), spec))
}

/// Applies the plan's tweaks through the helper and logs each effect. The
/// container's linker cache is written here, on the host side (hpcc's own
/// store, never the image), and bound by the helper.
fn apply_tweaks(
    ctx: &LaunchContext,
    image: &launch::LaunchImage,
    tweaks: &Tweaks,
    policy: &Policy,
    stack: bool,
) -> Result<(), LaunchError> {
    if tweaks.is_empty() {
        return Ok(());
    }
    let pid = match ctx.pid {
        Some(pid) => pid,
        None if !apply::touches_container(tweaks) => 0,
        None => return Err(apply::ApplyError::NoPid.into()),
    };
    let ld_cache = image.linker_cache(&tweaks.ld_cache, &policy.cache.dir)?;
    let target = Target {
        rootfs: ctx.rootfs.clone(),
        pid,
        ld_cache,
    };
    // The host library stack is filled here, in the host's namespace and
    // before the helper enters the container's: the helper then binds
    // one directory where the plan had one file each.
    let tweaks = if stack {
        apply::stack::realize(tweaks, &apply::stack::store_dir(&policy.cache.dir))
            .map_err(apply::ApplyError::from)?
    } else {
        std::borrow::Cow::Borrowed(tweaks)
    };
    let timeout = std::time::Duration::from_millis(policy.limits.apply_timeout_ms);
    let applied = child::apply_in_child(Path::new("/proc/self/exe"), &tweaks, &target, timeout)?;
    let id = ctx.id.as_str();
    for m in &applied.mounts {
        tracing::info!(container = id, source = %m.source.display(), destination = %m.destination.display(), readonly = m.readonly, "mounted: {}", m.reason);
    }
    for d in &applied.devices {
        tracing::info!(container = id, device = %d.path.display(), host = %d.host_path.display(), grant = ?d.grant, "device exposed: {}", d.reason);
    }
    if let Some(f) = &applied.ld_cache {
        tracing::info!(container = id, file = %f.display(), entries = tweaks.ld_cache.len(), "container linker cache installed");
    }
    for n in &applied.env_not_applied {
        tracing::info!(container = id, "{n}");
    }
    for n in &applied.notes {
        tracing::warn!(container = id, "{n}");
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
    fn command_line_as_hooks_d_writes_it() {
        let a = HookArgs::parse(["prestart", "--config=/etc/hpcc/hook.toml"].map(String::from))
            .unwrap();
        assert_eq!(a.stage, Stage::Prestart);
        assert_eq!(a.config, PathBuf::from("/etc/hpcc/hook.toml"));
        let a =
            HookArgs::parse(["--config", "/x.toml", "createRuntime"].map(String::from)).unwrap();
        assert_eq!(a.stage, Stage::CreateRuntime);
        assert_eq!(a.config, PathBuf::from("/x.toml"));
        let a = HookArgs::parse(Vec::<String>::new()).unwrap();
        assert_eq!(a.stage, Stage::Prestart);
        assert_eq!(a.config, PathBuf::from(hpcc_config::DEFAULT_PATH));
        let a = HookArgs::parse([child::CHILD_ARG].map(String::from)).unwrap();
        assert_eq!(a.stage, Stage::ApplyHelper);
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        let e = HookArgs::parse(["nostage".to_owned()]).unwrap_err();
        assert!(e.to_string().starts_with("unknown hook stage"), "{e}");
        for bad in [
            vec!["poststart", "prestart"],
            vec!["nostage"],
            vec!["--config"],
            vec!["--policy=/x"],
        ] {
            let e = HookArgs::parse(bad.iter().map(|s| s.to_string())).unwrap_err();
            assert!(!e.to_string().is_empty(), "{bad:?}");
        }
        let e = HookArgs::parse(["--help".to_owned()]).unwrap_err();
        assert!(
            matches!(&e, UsageError::Clap(c) if c.kind() == clap::error::ErrorKind::DisplayHelp),
            "{e:?}"
        );
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
