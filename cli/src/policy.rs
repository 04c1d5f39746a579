//! `hpcc policy [check|show|example]` (0 ok, 3 error).

use super::{CliError, Global, Output};
use hpcc_common::schema::Kind;
use hpcc_config::Policy;

/// `hpcc policy [ACTION]`.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(
    long_about = "The policy file (/etc/hpcc/hook.toml, or --config / $HPCC_CONFIG): `check` \
validates it (the default), `show` prints it with every default filled in, `example` prints \
the commented reference file shipped with hpcc (hook.toml(5))."
)]
pub struct Args {
    /// What to do with the policy [default: check].
    #[command(subcommand)]
    pub action: Option<Action>,
}

/// `hpcc policy` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Action {
    /// Validate the policy file (a missing file means the defaults).
    Check,
    /// Print the policy with every default filled in.
    Show,
    /// Print the commented reference policy (as /etc/hpcc/hook.toml ships).
    Example,
}

/// Runs the command.
pub fn run(args: &Args, g: &Global, out: &Output) -> Result<i32, CliError> {
    let path = &g.config;
    match args.action.unwrap_or(Action::Check) {
        Action::Example => {
            if out.json {
                out.json(
                    Kind::PolicyExample,
                    &serde_json::json!({
                        "path": hpcc_config::DEFAULT_PATH,
                        "text": hpcc_config::EXAMPLE,
                    }),
                )?;
            } else {
                out.text(hpcc_config::EXAMPLE)?;
            }
        }
        Action::Show => {
            let p = Policy::load(path)?;
            if out.json {
                out.json(Kind::Policy, &p)?;
            } else {
                out.text(&toml::to_string_pretty(&p)?)?;
            }
        }
        Action::Check => {
            Policy::load(path)?;
            let exists = path.exists();
            if out.json {
                out.json(
                    Kind::PolicyCheck,
                    &serde_json::json!({
                        "path": path,
                        "valid": true,
                        "exists": exists,
                    }),
                )?;
            } else {
                out.text(&format!(
                    "{}: valid{}\n",
                    path.display(),
                    if exists {
                        ""
                    } else {
                        " (absent: defaults apply)"
                    }
                ))?;
            }
        }
    }
    Ok(0)
}
