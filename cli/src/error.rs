//! Why an `hpcc` command could not do its job. Every variant is exit code
//! [`super::EXIT_INPUT`] (3): the command's own "answers" (red, not
//! conformant, problems found) are exit codes, not errors.

use hpcc_common::launch::LaunchError;
use hpcc_common::oci::OciError;
use hpcc_config::ConfigError;
use std::path::PathBuf;

/// An `hpcc` failure: bad command line, bad input, or an error of the core.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line, as clap found it wrong.
    #[error("{}", clap_message(.0))]
    Clap(#[from] clap::Error),
    /// The command line, as a command found it wrong.
    #[error("{0}")]
    Usage(String),
    /// The policy file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The launch decision.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// A bundle's `config.json`.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// An image-side command (`IMAGE` arguments).
    #[error(transparent)]
    Image(#[from] crate::image_cmd::ImageCmdError),
    /// `hpcc verify` could not try.
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
    /// A file given on the command line could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file given on the command line has the wrong content.
    #[error("{}: {reason}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `--fingerprint FILE` is not what `hpcc fingerprint --json` writes.
    #[error("{} is not a fingerprint (hpcc fingerprint --json): {source}", path.display())]
    Fingerprint {
        /// The file.
        path: PathBuf,
        /// Parser message.
        source: serde_json::Error,
    },
    /// `--slurm-step FILE` is not a Slurm step's facts.
    #[error("{} is not a Slurm step's facts (hpcc match --help): {source}", path.display())]
    SlurmStep {
        /// The file.
        path: PathBuf,
        /// Parser message.
        source: serde_json::Error,
    },
    /// Writing the output or generated files.
    #[error("{what}: {source}")]
    Write {
        /// What was being written.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// `hpcc cdi generate`.
    #[error(transparent)]
    Cdi(hpcc_common::cdi_offer::CdiOfferError),
    /// Other I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Serializing JSON output.
    #[error("cannot serialize the output as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Serializing the policy as TOML.
    #[error("cannot serialize the policy as TOML: {0}")]
    Toml(#[from] toml::ser::Error),
}

impl CliError {
    /// The exit code: 3 for every error.
    pub fn exit_code(&self) -> i32 {
        super::EXIT_INPUT
    }

    /// The text printed on stderr without `--json`: clap's own rendering
    /// (with usage and hints) for command-line errors.
    pub fn text(&self) -> String {
        match self {
            CliError::Clap(e) => e.render().to_string(),
            other => format!("hpcc: {other}\n"),
        }
    }
}

/// clap's message without its `error: ` prefix, usage and hints: the first
/// line.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}
