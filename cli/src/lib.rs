//! `hpcc`: the same core by hand, for admins and users.
//!
//! Argument parsing is `clap`'s ([`Cli`]): one [`Command`] variant and one
//! module per subcommand, each with its own `Args` and `run`. Adding a
//! command (the image-side `check IMAGE`, `annotate IMAGE`, `match IMAGE`)
//! is a new module and a new variant; a new way to name an image is a new
//! member of [`source::SourceArgs`]'s group.
//!
//! The image side (`check IMAGE`, `match IMAGE`, `annotate IMAGE`) is
//! [`image_cmd`] on the `hpcc-image` crate: only this crate links it (tar,
//! zstd, the x86 decoder, YAML), never the hook, the runtime or the SPANK
//! plugin.
//!
//! Conventions every command keeps:
//! - `--help` on every subcommand, `--version` (and `hpcc version`);
//! - `--json` (global): stdout carries exactly one JSON document, errors
//!   included (`{"error": "..."}`), with the same exit code as without;
//!   every document has `"schema": "hpcc/v1"` and a `"kind"`
//!   ([`hpcc_common::schema`], docs/schema/);
//! - colour only on a terminal and never with `NO_COLOR`;
//! - exit codes (docs/cli.md): match 0 green / 1 orange / 2 red or refused; check 0
//!   conformant / 1 not / 2 invalid; fingerprint, policy, completions 0 ok;
//!   doctor 0 healthy / 1 problems; verify 0 as predicted / 1 worse / 2 did
//!   not run; 3 bad input or error for every command.

pub mod annotate;
pub mod cdi;
pub mod check;
pub mod completions;
pub mod constraint;
pub mod docs;
pub mod doctor;
mod error;
pub mod fingerprint;
pub mod fleet;
pub mod image_cmd;
pub mod matching;
mod output;
pub mod policy;
pub mod schedule;
pub mod select;
pub mod source;
pub mod verify;
pub mod version;

pub use error::CliError;
pub use output::Output;

use clap::{CommandFactory, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// Bad input (unreadable file, invalid JSON, unknown flag) or any other
/// error: the exit code every command shares.
pub const EXIT_INPUT: i32 = 3;

/// Annotations that the proposal makes mandatory for a conformant image.
pub const MANDATORY: &[&str] = check::MANDATORY;

const AFTER_HELP: &str = "\
Exit status:
  match        0 green, 1 orange, 2 red or refused by the policy
  check        0 conformant, 1 not conformant, 2 invalid annotations
  annotate     0
  doctor       0 healthy, 1 problems found
  verify       0 as predicted, 1 worse than predicted, 2 did not run
  cdi generate 0 written
  fingerprint, policy, version, completions: 0
  3            bad input or error, for every command

Environment:
  HPCC_CONFIG  the policy when --config is not given (default /etc/hpcc/hook.toml)
  NO_COLOR     no colour, even on a terminal

With --json, stdout is one JSON document, errors included: {\"error\": \"...\"}.
Every document has \"schema\": \"hpcc/v1\" and a \"kind\" (docs/schema/<kind>.schema.json).";

/// HPC container conformance: fingerprint this node, score images, check the installation.
#[derive(Debug, Parser)]
#[command(
    name = "hpcc",
    long_about = "HPC container conformance. Fingerprints this node, scores a container image's \
org.supercontainers.* annotations against it with the same core as the OCI hook (hpcc-hook) \
and the Slurm plugin, and checks this node's hpcc installation (hpcc doctor).",
    version = version::SHORT,
    disable_version_flag = true,
    after_long_help = AFTER_HELP,
    subcommand_required = false,
    arg_required_else_help = false
)]
pub struct Cli {
    /// Print the version and the Slurm release the SPANK plugin was built for.
    #[arg(short = 'V', long)]
    pub version: bool,
    /// Print one JSON document on stdout (errors too: {"error": "..."}).
    #[arg(long, global = true)]
    pub json: bool,
    /// The policy file [default: $HPCC_CONFIG, else /etc/hpcc/hook.toml].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands. One module each.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// What this node offers: CPU, kernel, glibc, GPUs, host MPI/libfabric/UCX.
    Fingerprint(fingerprint::Args),
    /// Score an image against this node (or a saved fingerprint).
    // Boxed: its options (placement, Slurm step) dwarf the other commands.
    Match(Box<matching::Args>),
    /// The best variant of an image index for this node (a digest to pull).
    Select(select::Args),
    /// Conformance of an image's annotations alone.
    Check(check::Args),
    /// Propose annotations for an image, from its layers, with evidence.
    Annotate(annotate::Args),
    /// Validate, show or print the reference policy file.
    Policy(policy::Args),
    /// Check this installation and say what is wrong and how to fix it.
    Doctor(doctor::Args),
    /// Run the image's check on this node: measured against predicted.
    Verify(Box<verify::Args>),
    /// CDI specs of what this node offers images (`hpcc cdi generate`).
    Cdi(cdi::Args),
    /// Print the version and the Slurm release the SPANK plugin was built for.
    Version(version::Args),
    /// Print a shell completion script.
    Completions(completions::Args),
    /// Write the man pages and completion scripts (packaging).
    #[command(hide = true)]
    GenerateDocs(docs::Args),
}

/// What every command receives besides its own arguments.
#[derive(Debug, Clone)]
pub struct Global {
    /// `--json`.
    pub json: bool,
    /// `--config`, else `$HPCC_CONFIG`, else `/etc/hpcc/hook.toml`.
    pub config: PathBuf,
}

/// The clap command of `hpcc` (for man pages and completions).
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    if no_color() {
        cmd.color(clap::ColorChoice::Never)
    } else {
        cmd
    }
}

/// `NO_COLOR` set to anything (<https://no-color.org>).
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Whether `--json` is on the command line (before `--`), for errors that
/// happen before or during parsing.
fn wants_json(argv: &[OsString]) -> bool {
    argv.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// Runs the CLI with `argv` (with the program name); returns the exit code.
pub fn main(argv: Vec<OsString>) -> i32 {
    let json = wants_json(&argv);
    let out = Output::new(json);
    let cli = match command().try_get_matches_from(&argv) {
        Ok(m) => match <Cli as clap::FromArgMatches>::from_arg_matches(&m) {
            Ok(c) => c,
            Err(e) => return out.fail(&CliError::from(e)),
        },
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    if json {
                        // Help is text; under --json it still is one JSON document.
                        out.fail_code(
                            0,
                            hpcc_common::schema::Kind::Help,
                            &serde_json::json!({ "help": e.render().to_string() }),
                        )
                    } else {
                        let _ = e.print();
                        0
                    }
                }
                _ => out.fail(&CliError::from(e)),
            };
        }
    };
    let global = Global {
        json: cli.json,
        config: cli
            .config
            .clone()
            .unwrap_or_else(hpcc_config::policy_path_from_env),
    };
    let res = match cli.command {
        _ if cli.version => version::run(&version::Args::default(), &global, &out),
        None => Err(CliError::Usage(format!(
            "no command given\n\n{}",
            command().render_usage()
        ))),
        Some(Command::Fingerprint(a)) => fingerprint::run(&a, &global, &out),
        Some(Command::Match(a)) => matching::run(&a, &global, &out),
        Some(Command::Select(a)) => select::run(&a, &global, &out),
        Some(Command::Check(a)) => check::run(&a, &global, &out),
        Some(Command::Annotate(a)) => annotate::run(&a, &global, &out),
        Some(Command::Policy(a)) => policy::run(&a, &global, &out),
        Some(Command::Doctor(a)) => doctor::run(&a, &global, &out),
        Some(Command::Verify(a)) => verify::run(&a, &global, &out),
        Some(Command::Cdi(a)) => cdi::run(&a, &global, &out),
        Some(Command::Version(a)) => version::run(&a, &global, &out),
        Some(Command::Completions(a)) => completions::run(&a, &global, &out),
        Some(Command::GenerateDocs(a)) => docs::run(&a, &global, &out),
    };
    match res {
        Ok(code) => code,
        Err(e) => out.fail(&e),
    }
}

#[cfg(test)]
mod tests;
