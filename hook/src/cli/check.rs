//! `hpcc check`: conformance of an image's annotations alone (0
//! conformant, 1 not conformant, 2 invalid annotations, 3 bad input).

use super::source::SourceArgs;
use super::{CliError, Global, Output};
use hpcc_common::annotations::ImageSpec;

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
}

/// Runs the command.
pub fn run(args: &Args, _g: &Global, out: &Output) -> Result<i32, CliError> {
    let ctx = args.source.context()?;
    let spec = ImageSpec::from_annotations(
        ctx.annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let (code, problems, warnings) = match &spec {
        Err(e) => (2, vec![e.to_string()], vec![]),
        Ok(s) => {
            // Both spellings of the CPU target fold into `cpu_target`.
            let missing: Vec<String> = MANDATORY
                .iter()
                .filter(|_| s.cpu_target.is_none())
                .map(|k| format!("mandatory annotation {k} is missing"))
                .collect();
            (
                if missing.is_empty() { 0 } else { 1 },
                missing,
                s.warnings.clone(),
            )
        }
    };
    if out.json {
        out.json(&serde_json::json!({
            "conformant": code == 0,
            "problems": problems,
            "warnings": warnings,
            "image": spec.as_ref().ok(),
        }))?;
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
