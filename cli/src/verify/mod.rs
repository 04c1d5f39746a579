//! `hpcc verify IMAGE|--bundle DIR`: measured, not only predicted. Starts
//! the image with the plan hpcc would apply, through `hpcc-runtime` and the
//! real runtime (runc or crun), runs a short functional check chosen by
//! what the plan injects, and compares it with the prediction:
//!
//! - a host MPI (`mpi_replace`): MPI_Init, the library version and a
//!   2-rank ping-pong (8 B latency, 1 MiB bandwidth) in the container,
//!   against the same program on bare metal with the host MPI ([`mpi`]);
//! - the host libfabric (`libfabric_inject`): `fi_info -l`'s providers in
//!   the container against outside ([`functional`]);
//! - a GPU image: the device is visible and the driver answers
//!   (`nvidia-smi -L`), or "not applicable" on a node without a GPU.
//!
//! Every run is bounded (`--timeout`), its containers are deleted and its
//! private bundle removed on every path (Ctrl-C included: [`container`]),
//! and the exit code is 0 (as predicted), 1 (worse than predicted) or 2
//! (did not run); 3 is bad input, as for every command.
//!
//! The command line ([`Args`], [`run`]) only gathers the [`Request`];
//! [`verify`] does the work and returns a [`report::Report`].

pub mod container;
pub mod functional;
pub mod mpi;
pub mod record;
pub mod report;

use super::{CliError, Global, Output};
use container::{Runtime, WorkDir};
use hpcc_common::annotations::{GpuNeed, ImageSpec};
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::launch;
use hpcc_common::oci::{self, LaunchContext};
use hpcc_common::plan::{Plan, UserRequest};
use hpcc_common::schema::Kind;
use hpcc_common::verdict::Score;
use hpcc_config::Policy;
use report::{CheckKind, Outcome, Report};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The annotation by which an image names its own check program: a JSON
/// array (`["/usr/bin/pingpong","0.5"]`) or words separated by spaces. For
/// an MPI image it is started as 2 ranks; printing hpcc's ping-pong lines
/// (`pingpong bytes=8 ... lat_us=...`) gives a ratio, otherwise only
/// whether it ran.
pub const VERIFY_COMMAND: &str = "org.supercontainers.hpcc.verify.command";

/// Where packages install hpcc's own check programs.
pub const DEFAULT_PROGRAMS: &str = "/usr/libexec/hpcc/verify";

/// `hpcc verify (IMAGE | --bundle DIR) [--timeout S] [--runs N] [--record]`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Starts the image on this node with the plan hpcc would apply (through \
hpcc-runtime and runc or crun) and runs a short check chosen by what the plan injects: \
for a host MPI, MPI_Init, the library version and a 2-rank ping-pong in the container against \
the same program on bare metal; for libfabric, fi_info's providers inside against outside; \
for a GPU image, the device and the driver. Prints the measured fraction of bare metal beside \
the predicted level and flags a contradiction. Run as root (an admin or a health check).",
    after_help = "Exit status: 0 as predicted, 1 worse than predicted, 2 did not run, 3 bad input."
)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["image", "bundle"])))]
pub struct Args {
    /// An OCI image layout (`DIR`, `DIR:tag`, `oci:DIR:tag`), unpacked
    /// with umoci into a private bundle for the check.
    #[arg(value_name = "IMAGE")]
    pub image: Option<String>,
    /// An OCI bundle (its config.json is copied, never written).
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Bound on the whole check, in seconds (every run is killed and
    /// cleaned up at this point).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
    /// Runs per side (the best run of each side is compared).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub runs: u32,
    /// Write the result into the per-boot cache, for `hpcc match`.
    #[arg(long)]
    pub record: bool,
    /// hpcc-runtime [default: next to hpcc, /usr/libexec/hpcc/hpcc-runtime, $PATH].
    #[arg(long, value_name = "PATH")]
    pub hpcc_runtime: Option<PathBuf>,
    /// Where hpcc's own check programs are (pingpong-mpich, pingpong-openmpi).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PROGRAMS)]
    pub programs: PathBuf,
}

/// What `hpcc verify` could not even try (exit 3). A check that runs and
/// fails is a [`Report`], not an error.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The policy.
    #[error(transparent)]
    Config(#[from] hpcc_config::ConfigError),
    /// The bundle's config.json.
    #[error(transparent)]
    Oci(#[from] oci::OciError),
    /// The launch decision.
    #[error(transparent)]
    Launch(#[from] launch::LaunchError),
    /// The image.
    #[error(transparent)]
    Image(#[from] hpcc_image::ImageError),
    /// A bundle hpcc verify cannot use.
    #[error("bundle {}: {reason}", bundle.display())]
    Bundle {
        /// The bundle.
        bundle: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A kind of IMAGE hpcc verify does not unpack.
    #[error("hpcc verify unpacks OCI layouts only (DIR[:tag]); {0} is not one: pull it first (skopeo copy docker://... oci:DIR:tag)")]
    NotLayout(String),
    /// Something the check needs is not on this node (the report says it;
    /// this is the reason).
    #[error("missing {what}")]
    Missing {
        /// What.
        what: String,
    },
    /// File or process I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// JSON.
    #[error("cannot serialize JSON: {0}")]
    Json(serde_json::Error),
}

/// Everything [`verify`] needs.
#[derive(Debug, Clone)]
pub struct Request {
    /// IMAGE (an OCI layout).
    pub image: Option<String>,
    /// `--bundle`.
    pub bundle: Option<PathBuf>,
    /// The policy file.
    pub policy: PathBuf,
    /// hpcc-runtime.
    pub shim: Option<PathBuf>,
    /// hpcc's own programs.
    pub programs: PathBuf,
    /// Bound on the whole check.
    pub timeout: Duration,
    /// Runs per side.
    pub runs: u32,
    /// `--record`.
    pub record: bool,
}

/// Runs the command.
pub fn run(args: &Args, g: &Global, out: &Output) -> Result<i32, CliError> {
    container::catch_signals();
    let req = Request {
        image: args.image.clone(),
        bundle: args.bundle.clone(),
        policy: g.config.clone(),
        shim: args.hpcc_runtime.clone(),
        programs: args.programs.clone(),
        timeout: Duration::from_secs(args.timeout.max(1)),
        runs: args.runs,
        record: args.record,
    };
    let report = verify(&req)?;
    if out.json {
        out.json(Kind::Verify, &report)?;
    } else {
        out.text(&report::text(&report))?;
    }
    Ok(report.exit_code)
}

/// What the check starts from: the bundle (the user's, or the one umoci
/// unpacked) and the image's name and digest.
struct Subject {
    bundle: PathBuf,
    name: String,
    digest: Option<String>,
}

/// Unpacks IMAGE (an OCI layout) with umoci into `work`.
fn unpack(image: &str, work: &Path, deadline: Instant) -> Result<Subject, VerifyError> {
    use hpcc_image::layout::{Image, ImageRef};
    use hpcc_image::Limits;
    let r = ImageRef::parse(image)?;
    let ImageRef::Layout { dir, tag } = &r else {
        return Err(VerifyError::NotLayout(hpcc_common::text::escape(image)));
    };
    let opened = Image::open(&r, &Limits::default())?;
    let tag = tag.clone().or(opened.ref_name.clone()).ok_or_else(|| {
        VerifyError::NotLayout(format!(
            "{} (no tag to unpack)",
            hpcc_common::text::escape(image)
        ))
    })?;
    let umoci = container::which("umoci").ok_or_else(|| VerifyError::Missing {
        what: "umoci (to unpack IMAGE; or give --bundle DIR)".into(),
    })?;
    let bundle = work.join("unpacked");
    let mut cmd = std::process::Command::new(umoci);
    cmd.arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", dir.display()))
        .arg(&bundle);
    let r = container::run_bounded(cmd, work, "umoci", deadline)?;
    if !r.ok() {
        return Err(VerifyError::Io {
            what: format!("umoci unpack {}", hpcc_common::text::escape(image)),
            source: std::io::Error::other(r.failure()),
        });
    }
    Ok(Subject {
        bundle,
        name: image.to_owned(),
        digest: opened.manifest_digest.map(|d| d.to_string()),
    })
}

/// The host MPI the plan injects: the policy entry one of whose libraries
/// the plan mounts.
fn injected_mpi(plan: &Plan, policy: &Policy) -> Option<(String, hpcc_config::MpiAbi)> {
    let same = |a: &Path, b: &Path| {
        a == b
            || std::fs::canonicalize(a)
                .ok()
                .zip(std::fs::canonicalize(b).ok())
                .is_some_and(|(x, y)| x == y)
    };
    policy.mpi.iter().find_map(|(name, m)| {
        plan.tweaks
            .mounts
            .iter()
            .any(|mount| m.libraries.iter().any(|l| same(&mount.source, l)))
            .then(|| (name.clone(), m.abi))
    })
}

/// Whether the plan injects the policy's libfabric.
fn injects_libfabric(plan: &Plan, policy: &Policy) -> bool {
    policy.libfabric.as_ref().is_some_and(|lf| {
        let real = std::fs::canonicalize(&lf.library).ok();
        plan.tweaks
            .mounts
            .iter()
            .any(|m| m.source == lf.library || real.as_ref().is_some_and(|r| *r == m.source))
    })
}

/// Whether the image asks for a GPU.
fn wants_gpu(ctx: &LaunchContext) -> bool {
    let spec = ImageSpec::from_annotations(
        ctx.annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .ok();
    spec.is_some_and(|s| {
        matches!(s.gpu, Some(GpuNeed::Any | GpuNeed::Nvidia))
            || s.cuda.is_some()
            || s.nvidia_require.is_some()
    })
}

/// The image's own check command ([`VERIFY_COMMAND`]), if it declares one.
pub fn image_command(ctx: &LaunchContext) -> Option<Vec<String>> {
    let v = ctx.annotations.get(VERIFY_COMMAND)?.trim();
    let words: Vec<String> = if v.starts_with('[') {
        serde_json::from_str(v).ok()?
    } else {
        v.split_whitespace().map(str::to_owned).collect()
    };
    (!words.is_empty() && words[0].starts_with('/') && words.len() <= 64).then_some(words)
}

/// A `--bundle` is started as it is, by root: its `config.json` chooses
/// mounts, namespaces and capabilities. So only a bundle that this user
/// (root, for a health check) owns and nobody else can change is
/// started: a bundle handed over by someone else is refused, as a root
/// shell would not run their script. Its hooks are dropped in any case
/// ([`container::private_bundle`]).
fn trusted_bundle(bundle: &Path) -> Result<(), VerifyError> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    let me = unsafe { libc::geteuid() };
    for p in [bundle.to_owned(), bundle.join("config.json")] {
        let m = std::fs::symlink_metadata(&p).map_err(|e| VerifyError::Bundle {
            bundle: bundle.to_owned(),
            reason: format!("{}: {e}", p.display()),
        })?;
        if m.file_type().is_symlink() || m.uid() != me || m.mode() & 0o022 != 0 {
            return Err(VerifyError::Bundle {
                bundle: bundle.to_owned(),
                reason: format!(
                    "{} is not this user's (uid {me}) or others can write it: hpcc verify starts only a bundle its caller owns (its config.json decides mounts and capabilities)",
                    hpcc_common::text::escape(&p.display().to_string())
                ),
            });
        }
    }
    Ok(())
}

/// Does the whole check.
pub fn verify(req: &Request) -> Result<Report, VerifyError> {
    let t0 = Instant::now();
    let deadline = t0 + req.timeout;
    let policy = Policy::load(&req.policy)?;
    let work = WorkDir::new()?;
    let subject = match (&req.image, &req.bundle) {
        (_, Some(b)) => Subject {
            bundle: std::path::absolute(b).map_err(|source| VerifyError::Io {
                what: format!("cannot resolve {}", b.display()),
                source,
            })?,
            name: b.display().to_string(),
            digest: None,
        },
        (Some(i), None) => unpack(i, &work.path, deadline)?,
        (None, None) => {
            return Err(VerifyError::Missing {
                what: "IMAGE or --bundle DIR".into(),
            })
        }
    };
    if req.bundle.is_some() {
        trusted_bundle(&subject.bundle)?;
    }
    let spec = oci::load_bundle_config(&subject.bundle)?;
    let config: serde_json::Value = {
        let bytes = hpcc_common::io::read_file_bounded(
            &subject.bundle.join("config.json"),
            oci::MAX_CONFIG_BYTES,
        )
        .map_err(|e| VerifyError::Bundle {
            bundle: subject.bundle.clone(),
            reason: e.to_string(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| VerifyError::Bundle {
            bundle: subject.bundle.clone(),
            reason: format!("config.json: {e}"),
        })?
    };
    let mut ctx = LaunchContext::from_bundle(&subject.bundle, &spec);
    ctx.id = format!("hpcc-verify-{}", std::process::id());
    let node = NodeFingerprint::cached(&policy);
    let plan = launch::decide(&ctx, &node, &policy, &UserRequest::default())?;
    let predicted = if plan.decision.allows_start() {
        plan.verdict.score()
    } else {
        Score::Red
    };
    let mut report = Report {
        image: subject.name.clone(),
        image_digest: subject
            .digest
            .clone()
            .unwrap_or_else(|| record::bundle_digest(&ctx)),
        plan_digest: record::plan_digest(&plan),
        node: plan.node.clone(),
        at: hpcc_common::date::rfc3339(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        ),
        check: CheckKind::None,
        predicted,
        measured: None,
        program: None,
        outcome: Outcome::DidNotRun,
        exit_code: 2,
        reason: String::new(),
        contradiction: None,
        seconds: 0.0,
        recorded: None,
    };
    let check = Check {
        plan: &plan,
        policy: &policy,
        ctx: &ctx,
        node: &node,
        config: &config,
        bundle: &subject.bundle,
        work: &work.path,
        runtime: Runtime {
            shim: container::find_shim(req.shim.as_deref())
                .unwrap_or_else(|| "hpcc-runtime".into()),
            policy: req.policy.clone(),
        },
        programs: &req.programs,
        runs: req.runs,
        deadline,
    };
    if !plan.decision.allows_start() {
        report.reason = format!(
            "the policy refuses to start it on this node: {}",
            launch::refusal_line(&plan, &req.policy).unwrap_or_else(|| "refused".into())
        );
    } else if let Some((name, abi)) = injected_mpi(&plan, &policy) {
        report.check = CheckKind::Mpi;
        check.mpi(&name, abi, &mut report);
    } else if injects_libfabric(&plan, &policy) {
        report.check = CheckKind::Libfabric;
        check.libfabric(&mut report);
    } else if wants_gpu(&ctx) {
        report.check = CheckKind::Gpu;
        check.gpu(&mut report);
    } else {
        report.reason = "nothing to check: the plan injects no host MPI or libfabric, and the image asks for no GPU".into();
    }
    if container::interrupted() {
        report.outcome = Outcome::DidNotRun;
        if !report.reason.starts_with("interrupted") {
            report.reason = format!("interrupted ({})", report.reason);
        }
    }
    report.exit_code = report.outcome.exit_code();
    report.seconds = (t0.elapsed().as_secs_f64() * 100.0).round() / 100.0;
    if req.record {
        // The record names itself: what `hpcc match --json` shows is what
        // this run printed.
        let path = record::path(&policy, &report.image_digest, &report.plan_digest);
        report.recorded = Some(path.display().to_string());
        record::write(&policy, &report)?;
    }
    Ok(report)
}

/// The facts one check works from.
pub struct Check<'a> {
    plan: &'a Plan,
    policy: &'a Policy,
    ctx: &'a LaunchContext,
    node: &'a NodeFingerprint,
    config: &'a serde_json::Value,
    bundle: &'a Path,
    work: &'a Path,
    runtime: Runtime,
    programs: &'a Path,
    runs: u32,
    deadline: Instant,
}

impl Check<'_> {
    /// The sonames the plan already puts in the container.
    fn provided(&self) -> Vec<String> {
        self.plan
            .tweaks
            .ld_cache
            .iter()
            .map(|e| e.soname.clone())
            .chain(self.plan.tweaks.mounts.iter().filter_map(|m| {
                m.destination
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            }))
            .collect()
    }

    /// The image's `PATH`, for the check's own `PATH` to extend.
    fn image_path(&self) -> Option<String> {
        self.config
            .pointer("/process/env")?
            .as_array()?
            .iter()
            .filter_map(|e| e.as_str()?.strip_prefix("PATH="))
            .next()
            .map(str::to_owned)
    }

    /// A container id of this check.
    fn id(&self, n: u32) -> String {
        format!("hpcc-verify-{}-{n}", std::process::id())
    }
}
