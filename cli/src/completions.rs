//! `hpcc completions SHELL`: the completion script, generated from the
//! same clap command as `--help`.

use super::{CliError, Global, Output};
use clap_complete::Shell;
use hpcc_common::schema::Kind;

/// `hpcc completions SHELL`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "The packages install them already: bash \
/usr/share/bash-completion/completions/hpcc, zsh _hpcc, fish hpcc.fish.")]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The script for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut cmd = super::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "hpcc", &mut buf);
    buf
}

/// Runs the command.
pub fn run(args: &Args, _g: &Global, out: &Output) -> Result<i32, CliError> {
    let text = String::from_utf8_lossy(&script(args.shell)).into_owned();
    if out.json {
        out.json(
            Kind::Completions,
            &serde_json::json!({ "shell": args.shell.to_string(), "script": text }),
        )?;
    } else {
        out.text(&text)?;
    }
    Ok(0)
}
