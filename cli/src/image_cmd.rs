//! The image-side commands, `hpcc check IMAGE`, `hpcc annotate IMAGE` and
//! `hpcc match IMAGE`, as functions of typed arguments that return the exit
//! code and the text to print, so any command-line front end can call them.
//!
//! Exit codes (docs/cli.md): `check` 0 conformant, 1 not conformant, 2
//! invalid annotations; `match` 0 green, 1 orange, 2 red; `annotate` 0;
//! every command 3 on bad input (an [`ImageCmdError`]).

use hpcc_common::collections::{self, Applied, CollectionError};
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::launch::{self, LaunchError};
use hpcc_common::matcher::{Score, Verdict};
use hpcc_common::oci::LaunchContext;
use hpcc_common::plan::{MpiChoice, UserRequest};
use hpcc_config::{ConfigError, Policy};
use hpcc_image::annotate::{self, Format};
use hpcc_image::layout::{Image, ImageRef};
use hpcc_image::nfd::{self, NodeFeatures, Spec};
use hpcc_image::{check as conformance, ImageError, Limits};
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
        serde_json::to_string_pretty(&report)? + "\n"
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
    r: &hpcc_image::registry::RegistryRef,
    format: Format,
) -> Result<(i32, String), ImageCmdError> {
    let limits = Limits::default();
    let pulled = hpcc_image::registry::pull_layout(r, &limits)?;
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

/// What `hpcc match IMAGE --json` prints.
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
    let code = match verdict.score() {
        _ if refused => 2,
        Score::Green => 0,
        Score::Orange => 1,
        Score::Red => 2,
    };
    Ok((code, verdict, applied, specs))
}

/// `hpcc match IMAGE`: the image's annotations (manifest and config only,
/// no layer is read), merged with the policy's collections, and any NFD
/// compatibility spec attached to it (or given), scored against the node.
pub fn match_image(image: &ImageRef, opts: &MatchOptions) -> Result<(i32, String), ImageCmdError> {
    let limits = Limits::default();
    let policy_path = opts
        .policy
        .clone()
        .unwrap_or_else(hpcc_config::policy_path_from_env);
    let policy = Policy::load(&policy_path)?;
    let img = Image::open(image, &limits)?;
    let node = load_node(opts, &policy)?;
    let (code, verdict, applied, specs) =
        score_image(&img, BTreeMap::new(), &node, &policy, opts, &limits)?;
    let out = if opts.json {
        serde_json::to_string_pretty(&MatchOutput {
            image: &img.reference,
            verdict: &verdict,
            collections: &applied,
            nfd_specs: specs.iter().map(|(w, _)| w.clone()).collect(),
        })? + "\n"
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
