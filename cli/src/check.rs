//! `hpcc check`: conformance of an image's annotations alone (0
//! conformant, 1 not conformant, 2 invalid annotations, 3 bad input).

use super::source::SourceArgs;
use super::{CliError, Global, Output};
use hpcc_common::annotations::ImageSpec;
use hpcc_common::schema::Kind;

/// Annotations that the proposal makes mandatory for a conformant image.
pub const MANDATORY: &[&str] = &["org.supercontainers.hardware.cpu.optimized.version"];

/// `hpcc check (--bundle DIR | --annotations FILE.json)`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    long_about = "Conformance of an image's org.supercontainers.* annotations alone, without \
looking at this node: every value valid, and the mandatory CPU target present \
(hardware.cpu.optimized.version, or its alias ...cpu.optimized.architecture).",
    after_help = "Exit status: 0 conformant, 1 not conformant, 2 invalid annotations, 3 bad input."
)]
pub struct Args {
    /// The image.
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub registry: super::source::RegistryArgs,
}

/// Runs the command.
pub fn run(args: &Args, _g: &Global, out: &Output) -> Result<i32, CliError> {
    if let Some(image) = args.source.image_ref(&args.registry)? {
        // An image: the image-side check (mandatory and optional
        // annotations, where they come from, the expected HPC behaviour).
        let (code, text) = crate::image_cmd::check(&image, out.json)?;
        out.text(&text)?;
        return Ok(code);
    }
    let ctx = args.source.context()?;
    let s = ImageSpec::read(
        ctx.annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        std::iter::empty(),
    );
    let (code, problems) = problems(&s);
    let warnings = s.warnings.clone();
    let spec: Result<&ImageSpec, ()> = Ok(&s);
    if out.json {
        out.json(
            Kind::Conformance,
            &serde_json::json!({
                "conformant": code == 0,
                "problems": problems,
                "warnings": warnings,
                "image": spec.as_ref().ok(),
            }),
        )?;
    } else {
        let mut text = String::from(if code == 0 {
            "conformant\n"
        } else {
            "not conformant\n"
        });
        for p in &problems {
            text.push_str(&format!("  problem: {p}\n"));
        }
        for w in &warnings {
            text.push_str(&format!("  warning: {w}\n"));
        }
        out.text(&text)?;
    }
    Ok(code)
}

/// The exit code and the problems of `hpcc check` for annotations read as
/// `s`: 2 with a value hpcc cannot read, 1 with a mandatory key missing or
/// nothing hpcc can check, else 0.
pub fn problems(s: &ImageSpec) -> (i32, Vec<String>) {
    // Every value hpcc cannot read is invalid for an image builder (an
    // enforcing node may refuse it); a missing mandatory key is "not
    // conformant".
    let invalid: Vec<String> = s
        .problems
        .iter()
        .filter(|p| {
            matches!(
                p.problem,
                hpcc_common::annotations::ProblemKind::Unreadable { .. }
            )
        })
        .map(|p| hpcc_common::text::escape(&format!("{}={:?}: {}", p.key, p.value, p.problem)))
        .collect();
    // Both spellings of the CPU target fold into `cpu_target`.
    let missing: Vec<String> = MANDATORY
        .iter()
        .filter(|_| s.cpu_target.is_none())
        .map(|k| format!("mandatory annotation {k} is missing"))
        .collect();
    // The one definition the launch uses for `unannotated = "refuse"`: an
    // image whose annotations give nothing to check is refused there.
    let missing: Vec<String> = if s.has_checkable_requirement() {
        missing
    } else {
        let keys = s.uncheckable_keys();
        let seen = if keys.is_empty() {
            "no key in hpcc's namespaces".to_owned()
        } else {
            format!("keys seen: {}", keys.join("; "))
        };
        missing
            .into_iter()
            .chain(std::iter::once(format!(
                "nothing hpcc can check ({seen}; none could be checked): a node with unannotated = \"refuse\" refuses it"
            )))
            .collect()
    };
    let code = if !invalid.is_empty() {
        2
    } else if !missing.is_empty() {
        1
    } else {
        0
    };
    (code, invalid.into_iter().chain(missing).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pairs: &[(&str, &str)]) -> ImageSpec {
        ImageSpec::read(pairs.iter().copied(), std::iter::empty())
    }

    #[test]
    fn nothing_checkable_is_said_as_the_launch_says_it() {
        let (code, p) = spec_problems(&[("org.supercontainers.zzz", "x86_64")]);
        assert_eq!(code, 1);
        assert!(
            p.iter()
                .any(|l| l.contains("nothing hpcc can check") && l.contains("zzz")),
            "{p:?}"
        );
        let (code, p) = spec_problems(&[(
            "org.supercontainers.hardware.cpu.optimized.version",
            "x86_64_v3",
        )]);
        assert_eq!((code, p.len()), (0, 0), "{p:?}");
    }

    fn spec_problems(pairs: &[(&str, &str)]) -> (i32, Vec<String>) {
        problems(&spec(pairs))
    }
}
