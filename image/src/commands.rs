//! The image-side commands, `hpcc check IMAGE`, `hpcc annotate IMAGE`,
//! `hpcc match IMAGE` and `hpcc select IMAGE`, as functions of typed
//! arguments that return the exit code and the document (or text) to
//! print, so every front end (the `hpcc` command line, the Python
//! bindings) calls the same function and prints the same JSON
//! ([`hpcc_common::schema`]).
//!
//! Exit codes (docs/cli.md): `check` 0 conformant, 1 not conformant, 2
//! invalid annotations; `match` 0 green, 1 orange, 2 red; `annotate` 0;
//! every command 3 on bad input (an [`ImageCmdError`]).

use crate::annotate::{self, Format};
use crate::layout::{Image, ImageRef};
use crate::nfd::{self, NodeFeatures, Spec};
use crate::{check as conformance, ImageError, Limits};
use hpcc_common::collections::{self, Applied, CollectionError};
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::launch::{self, LaunchError};
use hpcc_common::matcher::{Score, Verdict};
use hpcc_common::oci::LaunchContext;
use hpcc_common::plan::{MpiChoice, Plan, UserRequest};
use hpcc_common::schema::{self, Kind};
use hpcc_config::{ConfigError, Policy};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Exit code for bad input, shared by every command.
pub const EXIT_INPUT: i32 = 3;

/// Why an image command could not run (exit [`EXIT_INPUT`]).
#[derive(Debug, thiserror::Error)]
pub enum ImageCmdError {
    /// The image could not be read.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The policy is invalid.
    #[error(transparent)]
    Policy(#[from] ConfigError),
    /// A collection is invalid.
    #[error(transparent)]
    Collection(#[from] CollectionError),
    /// Deciding failed.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// Output could not be serialised.
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A file given on the command line could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A `--fingerprint` file that is not a fingerprint.
    #[error("{path} is not a fingerprint (hpcc fingerprint --json): {source}")]
    Fingerprint {
        /// The file.
        path: PathBuf,
        /// Parser error.
        source: serde_json::Error,
    },
}

/// `hpcc check IMAGE [--json]`.
pub fn check(image: &ImageRef, json: bool) -> Result<(i32, String), ImageCmdError> {
    check_with(image, json, &Limits::default())
}

/// [`check`] with explicit bounds.
pub fn check_with(
    image: &ImageRef,
    json: bool,
    limits: &Limits,
) -> Result<(i32, String), ImageCmdError> {
    let img = Image::open(image, limits)?;
    let report = conformance::check(&img, limits)?;
    let out = if json {
        schema::to_string_pretty(Kind::Check, &report)?
    } else {
        report.render_text()
    };
    Ok((report.exit_code(), out))
}

/// `hpcc annotate IMAGE [--format text|plain|dockerfile|json|nfd]`.
pub fn annotate(image: &ImageRef, format: Format) -> Result<(i32, String), ImageCmdError> {
    annotate_with(image, format, &Limits::default())
}

/// [`annotate`] with explicit bounds.
pub fn annotate_with(
    image: &ImageRef,
    format: Format,
    limits: &Limits,
) -> Result<(i32, String), ImageCmdError> {
    let img = Image::open(image, limits)?;
    let proposals = annotate::propose(&img, limits)?;
    Ok((0, annotate::render(&proposals, format)?))
}

/// `hpcc annotate --pull-layers IMAGE` for an image in a registry: its
/// layers are fetched into a temporary layout (removed on return) and read
/// there as [`annotate`] reads a layout; the proposals name the registry
/// reference.
pub fn annotate_pulled(
    r: &crate::registry::RegistryRef,
    format: Format,
) -> Result<(i32, String), ImageCmdError> {
    let limits = Limits::default();
    let pulled = crate::registry::pull_layout(r, &limits)?;
    let mut img = Image::open(&pulled.image, &limits)?;
    img.reference = r.to_string();
    let proposals = annotate::propose(&img, &limits)?;
    Ok((0, annotate::render(&proposals, format)?))
}

/// Options of `hpcc match IMAGE`.
#[derive(Debug, Clone, Default)]
pub struct MatchOptions {
    /// JSON output.
    pub json: bool,
    /// An NFD compatibility spec file, scored with the attached ones.
    pub nfd_file: Option<PathBuf>,
    /// Only these NFD compatibility set tags (all when empty).
    pub tags: Vec<String>,
    /// A node fingerprint file instead of this node's.
    pub fingerprint: Option<PathBuf>,
    /// The policy file (default: `$HPCC_CONFIG` or `/etc/hpcc/hook.toml`).
    pub policy: Option<PathBuf>,
}

/// What `hpcc match IMAGE --json` prints (kind `image-verdict`).
#[derive(Debug, serde::Serialize)]
struct MatchOutput<'a> {
    image: &'a str,
    verdict: &'a Verdict,
    collections: &'a Applied,
    nfd_specs: Vec<String>,
}

fn read_text(path: &Path, limit: u64) -> Result<String, ImageCmdError> {
    hpcc_common::io::read_text_bounded(path, limit).map_err(|e| ImageCmdError::Read {
        path: path.to_owned(),
        source: match e {
            hpcc_common::io::ReadError::Io(e) => e,
            hpcc_common::io::ReadError::TooLarge { limit } => {
                std::io::Error::other(format!("larger than {limit} bytes"))
            }
        },
    })
}

/// The node scored against: `opts.fingerprint`, else this node.
pub fn load_node(opts: &MatchOptions, policy: &Policy) -> Result<NodeFingerprint, ImageCmdError> {
    match &opts.fingerprint {
        Some(f) => {
            serde_json::from_str::<NodeFingerprint>(&read_text(f, 16 << 20)?).map_err(|source| {
                ImageCmdError::Fingerprint {
                    path: f.clone(),
                    source,
                }
            })
        }
        None => Ok(NodeFingerprint::cached(policy)),
    }
}

/// Loads the policy `opts` names.
pub fn load_policy(opts: &MatchOptions) -> Result<Policy, ImageCmdError> {
    let policy_path = opts
        .policy
        .clone()
        .unwrap_or_else(hpcc_config::policy_path_from_env);
    Ok(Policy::load(&policy_path)?)
}

/// What scoring one image gave: exit code (0 green, 1 orange, 2 red or
/// refused), the verdict, the collections applied, the NFD specs read.
pub type Scored = (i32, Verdict, Applied, Vec<(String, Spec)>);

/// Scores an opened image against `node` with the core matcher: its
/// annotations over `base` (lowest precedence: what an index entry's
/// platform implies), the site's collections, and the NFD specs attached
/// to it or given. `hpcc match` and `hpcc select` both go through here.
pub fn score_image(
    img: &Image,
    base: BTreeMap<String, String>,
    node: &NodeFingerprint,
    policy: &Policy,
    opts: &MatchOptions,
    limits: &Limits,
) -> Result<Scored, ImageCmdError> {
    let mut annotations = base;
    annotations.extend(img.annotations().to_map());
    let mut ctx = LaunchContext::from_annotations(
        &img.ref_name.clone().unwrap_or_else(|| "image".into()),
        annotations,
    );
    ctx.process_env = img.config.env.clone().unwrap_or_default();
    let applied = collections::apply(&mut ctx, policy)?;
    let plan = launch::decide(
        &ctx,
        node,
        policy,
        &UserRequest {
            enforcement: None,
            mpi: MpiChoice::default(),
        },
    )?;
    let refused = !plan.decision.allows_start();
    let mut verdict = plan.verdict;
    let mut specs: Vec<(String, Spec)> = Spec::attached(img, limits)?;
    if let Some(f) = &opts.nfd_file {
        let what = f.display().to_string();
        specs.push((
            what.clone(),
            Spec::parse(&read_text(f, nfd::MAX_SPEC_BYTES)?, &what)?,
        ));
    }
    if !specs.is_empty() {
        let features = NodeFeatures::from_fingerprint(node).with_sysfs_pci();
        for (what, spec) in &specs {
            verdict.extend(nfd::score(spec, what, &features, &opts.tags));
        }
    }
    // Refused by the policy (`unannotated = "refuse"` on an image with
    // nothing checkable is only "degraded"): red, as `hpcc match` says.
    let code = if refused {
        2
    } else {
        score_code(verdict.score())
    };
    Ok((code, verdict, applied, specs))
}

/// `hpcc match IMAGE`: the image's annotations (manifest and config only,
/// no layer is read), merged with the policy's collections, and any NFD
/// compatibility spec attached to it (or given), scored against the node.
pub fn match_image(image: &ImageRef, opts: &MatchOptions) -> Result<(i32, String), ImageCmdError> {
    let policy = load_policy(opts)?;
    let img = Image::open(image, &Limits::default())?;
    let node = load_node(opts, &policy)?;
    match_opened(&img, &node, &policy, opts)
}

/// [`match_image`] on a node and a policy already loaded (the bindings
/// pass a fingerprint document; `opts.fingerprint` and `opts.policy` are
/// not read).
pub fn match_image_on(
    image: &ImageRef,
    node: &NodeFingerprint,
    policy: &Policy,
    opts: &MatchOptions,
) -> Result<(i32, String), ImageCmdError> {
    let img = Image::open(image, &Limits::default())?;
    match_opened(&img, node, policy, opts)
}

fn match_opened(
    img: &Image,
    node: &NodeFingerprint,
    policy: &Policy,
    opts: &MatchOptions,
) -> Result<(i32, String), ImageCmdError> {
    let limits = Limits::default();
    let (code, verdict, applied, specs) =
        score_image(img, BTreeMap::new(), node, policy, opts, &limits)?;
    let out = if opts.json {
        schema::to_string_pretty(
            Kind::ImageVerdict,
            &MatchOutput {
                image: &img.reference,
                verdict: &verdict,
                collections: &applied,
                nfd_specs: specs.iter().map(|(w, _)| w.clone()).collect(),
            },
        )?
    } else {
        let mut s = format!("image: {}\n", hpcc_common::text::escape(&img.reference));
        if let Some(e) = &applied.entry {
            s.push_str(&format!(
                "collection: {} (set {}, image kept {})\n",
                hpcc_common::text::escape(e),
                applied.set.len(),
                applied.kept.len()
            ));
        }
        for (w, _) in &specs {
            s.push_str(&format!("nfd spec: {}\n", hpcc_common::text::escape(w)));
        }
        s + &hpcc_common::report::verdict(&verdict, false)
    };
    Ok((code, out))
}

/// The exit code of `hpcc match` for a plan: 2 when the policy refuses the
/// start (whatever the findings' score: an image with nothing checkable is
/// only "degraded", but a script that gates on `hpcc match` must not pass
/// what `unannotated = "refuse"` or any other rule refuses), else 0 green,
/// 1 orange, 2 red.
pub fn plan_exit_code(plan: &Plan) -> i32 {
    if !plan.decision.allows_start() {
        2
    } else {
        score_code(plan.verdict.score())
    }
}

/// `hpcc match --bundle DIR | --annotations FILE`: the launch plan for
/// `ctx` on `node` under `policy`, and its exit code ([`plan_exit_code`]).
/// Its JSON is the verdict (kind `verdict`) or, with `--plan`, the plan
/// (kind `plan`).
pub fn match_context(
    ctx: &LaunchContext,
    node: &NodeFingerprint,
    policy: &Policy,
    request: &UserRequest,
) -> Result<(i32, Plan), ImageCmdError> {
    let plan = launch::decide(ctx, node, policy, request)?;
    Ok((plan_exit_code(&plan), plan))
}

fn score_code(s: Score) -> i32 {
    match s {
        Score::Green => 0,
        Score::Orange => 1,
        Score::Red => 2,
    }
}

/// One variant of an index scored on one node (kind `select`, `variants`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct VariantScore {
    /// Its manifest digest.
    pub digest: String,
    /// Platform and CPU target, e.g. `linux/amd64 x86_64_v3`.
    pub label: String,
    /// The reference to pull.
    pub pull: String,
    /// `green`, `orange` or `red` (red too when the policy refuses it).
    pub score: &'static str,
    /// The main reason: the first fatal, else degraded, else ok finding
    /// (escaped).
    pub reason: String,
}

/// What `hpcc select IMAGE --json` prints (kind `select`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Selection {
    /// The image index as given.
    pub image: String,
    /// The reference to pull: the best green variant, else the best orange
    /// one; null when every variant is red.
    pub pull: Option<String>,
    /// The chosen variant's score (`red` when none was chosen).
    pub score: &'static str,
    /// Every variant in index order.
    pub variants: Vec<VariantScore>,
}

/// One node class of `hpcc select IMAGE --fleet DIR --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassSelection {
    /// The class (its fingerprint file's name).
    pub class: String,
    /// The chosen variant's score on it (`red` when none runs).
    pub score: &'static str,
    /// The reference to pull there; null when none runs.
    pub pull: Option<String>,
    /// Every variant's score there.
    pub variants: Vec<VariantScore>,
}

/// What `hpcc select IMAGE --fleet DIR --json` prints (kind `select-fleet`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FleetSelection {
    /// The image index as given.
    pub image: String,
    /// One entry per node class.
    pub classes: Vec<ClassSelection>,
}

fn main_reason(v: &Verdict) -> String {
    use hpcc_common::matcher::Level;
    [Level::Fatal, Level::Degraded, Level::Ok]
        .into_iter()
        .find_map(|l| v.with_level(l).next())
        .map_or_else(
            || "nothing to check".to_owned(),
            |f| hpcc_common::text::escape(&f.reason),
        )
}

/// Every variant scored on `node` by `hpcc match`'s pipeline
/// ([`score_image`]), with the entry's platform as the lowest layer of
/// annotations.
pub fn score_variants(
    variants: &[crate::select::Variant],
    node: &NodeFingerprint,
    policy: &Policy,
    opts: &MatchOptions,
    limits: &Limits,
) -> Result<Vec<VariantScore>, ImageCmdError> {
    variants
        .iter()
        .map(|v| {
            let base = v
                .entry
                .platform
                .as_ref()
                .map(crate::select::platform_annotations)
                .unwrap_or_default();
            let (code, verdict, _, _) = score_image(&v.image, base, node, policy, opts, limits)?;
            let score = match code {
                0 => Score::Green,
                1 => Score::Orange,
                _ => Score::Red,
            };
            Ok(VariantScore {
                digest: v.entry.digest.to_string(),
                label: v.label(),
                pull: v.pull.clone(),
                score: score.as_str(),
                reason: main_reason(&verdict),
            })
        })
        .collect()
}

/// The variant to pull and its score: the best green one ([`crate::select::best`]),
/// else (it still runs, degraded) the best orange one; none when every
/// variant is red.
pub fn choose<'a>(
    variants: &'a [crate::select::Variant],
    scores: &[VariantScore],
) -> Option<(&'a crate::select::Variant, Score)> {
    [Score::Green, Score::Orange].into_iter().find_map(|want| {
        crate::select::best(
            variants
                .iter()
                .zip(scores)
                .filter(|(_, s)| s.score == want.as_str())
                .map(|(v, _)| v),
        )
        .map(|v| (v, want))
    })
}

/// `hpcc select IMAGE` on one node: the exit code (0 a green variant, 1
/// only an orange one, 2 none runs) and the selection.
pub fn select_image(
    image: &ImageRef,
    opts: &MatchOptions,
) -> Result<(i32, Selection), ImageCmdError> {
    let policy = load_policy(opts)?;
    let variants = crate::select::variants(image, &Limits::default())?;
    let node = load_node(opts, &policy)?;
    select_variants(image, &variants, &node, &policy, opts)
}

/// [`select_image`] on a node and a policy already loaded.
pub fn select_image_on(
    image: &ImageRef,
    node: &NodeFingerprint,
    policy: &Policy,
    opts: &MatchOptions,
) -> Result<(i32, Selection), ImageCmdError> {
    let variants = crate::select::variants(image, &Limits::default())?;
    select_variants(image, &variants, node, policy, opts)
}

fn select_variants(
    image: &ImageRef,
    variants: &[crate::select::Variant],
    node: &NodeFingerprint,
    policy: &Policy,
    opts: &MatchOptions,
) -> Result<(i32, Selection), ImageCmdError> {
    let scores = score_variants(variants, node, policy, opts, &Limits::default())?;
    Ok(selection(image.to_string(), variants, scores))
}

/// The selection document of scored variants, and its exit code.
pub fn selection(
    image: String,
    variants: &[crate::select::Variant],
    scores: Vec<VariantScore>,
) -> (i32, Selection) {
    let chosen = choose(variants, &scores);
    let score = chosen.map_or(Score::Red, |(_, s)| s);
    (
        score_code(score),
        Selection {
            image,
            pull: chosen.map(|(v, _)| v.pull.clone()),
            score: score.as_str(),
            variants: scores,
        },
    )
}
