//! The plugin's arguments in `plugstack.conf`
//! (`required .../hpcc_spank.so config=/etc/hpcc/hook.toml default_mpi=auto`)
//! and the user's option values (`--hpcc`, `--hpcc-mpi`).

use hpcc_common::plan::{MpiChoice, UnknownMpiChoice, UserRequest};
use hpcc_config::Enforcement;
use std::path::PathBuf;

/// Why a plugstack.conf argument or an option value is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// An argument that is not `key=value` or has an unknown key.
    #[error("unknown plugstack.conf argument {0:?} for hpcc_spank.so (expected config=PATH, default_hpcc=enforce|warn|off, default_mpi=auto|replace|none)")]
    Unknown(String),
    /// A known key with a bad value.
    #[error("plugstack.conf argument {key}={value:?}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A bad option value given by the user.
    #[error("--{option}={value:?}: {reason}")]
    Option {
        /// `hpcc` or `hpcc-mpi`.
        option: &'static str,
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// What the admin wrote in `plugstack.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginArgs {
    /// The policy file (`config=`), default `/etc/hpcc/hook.toml`.
    pub config: PathBuf,
    /// Enforcement asked for when the user gives no `--hpcc` (bounded by
    /// the policy like a user's wish).
    pub default_hpcc: Option<Enforcement>,
    /// MPI choice when the user gives no `--hpcc-mpi`.
    pub default_mpi: MpiChoice,
}

impl Default for PluginArgs {
    fn default() -> Self {
        PluginArgs {
            config: PathBuf::from(hpcc_config::DEFAULT_PATH),
            default_hpcc: None,
            default_mpi: MpiChoice::Auto,
        }
    }
}

/// Longest argument accepted (a path).
const MAX_ARG: usize = 4096;

impl PluginArgs {
    /// Parses the arguments after the plugin path. The environment is not
    /// consulted (`HPCC_CONFIG` of a job must not choose the policy).
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<PluginArgs, ArgError> {
        let mut out = PluginArgs::default();
        for a in args {
            if a.len() > MAX_ARG {
                return Err(ArgError::Unknown(format!("{}...", &a[..64])));
            }
            let Some((k, v)) = a.split_once('=') else {
                return Err(ArgError::Unknown(a.to_owned()));
            };
            match k {
                "config" => {
                    let p = PathBuf::from(v);
                    if !p.is_absolute() {
                        return Err(ArgError::Invalid {
                            key: "config",
                            value: v.into(),
                            reason: "must be an absolute path".into(),
                        });
                    }
                    out.config = p;
                }
                "default_hpcc" => {
                    out.default_hpcc = Some(v.parse().map_err(|reason| ArgError::Invalid {
                        key: "default_hpcc",
                        value: v.into(),
                        reason,
                    })?)
                }
                "default_mpi" => {
                    out.default_mpi =
                        v.parse().map_err(|e: UnknownMpiChoice| ArgError::Invalid {
                            key: "default_mpi",
                            value: v.into(),
                            reason: e.to_string(),
                        })?
                }
                _ => return Err(ArgError::Unknown(a.to_owned())),
            }
        }
        Ok(out)
    }
}

/// The user's option values as given (validated when given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserOptions {
    /// `--hpcc=`.
    pub hpcc: Option<Enforcement>,
    /// `--hpcc-mpi=`.
    pub mpi: Option<MpiChoice>,
}

impl UserOptions {
    /// Records `--hpcc=VALUE`.
    pub fn set_hpcc(&mut self, value: &str) -> Result<(), ArgError> {
        self.hpcc = Some(value.parse().map_err(|reason| ArgError::Option {
            option: "hpcc",
            value: value.chars().take(64).collect(),
            reason,
        })?);
        Ok(())
    }

    /// Records `--hpcc-mpi=VALUE`.
    pub fn set_mpi(&mut self, value: &str) -> Result<(), ArgError> {
        self.mpi = Some(
            value
                .parse()
                .map_err(|e: UnknownMpiChoice| ArgError::Option {
                    option: "hpcc-mpi",
                    value: value.chars().take(64).collect(),
                    reason: e.to_string(),
                })?,
        );
        Ok(())
    }

    /// The request for the core: the user's values, else the admin's
    /// defaults. How far it may relax is decided by the policy
    /// (`users.may_relax_to`), not here.
    pub fn request(&self, args: &PluginArgs) -> UserRequest {
        UserRequest {
            enforcement: self.hpcc.or(args.default_hpcc),
            mpi: self.mpi.unwrap_or(args.default_mpi),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_arguments() {
        let a = PluginArgs::parse([
            "config=/etc/x.toml",
            "default_mpi=none",
            "default_hpcc=warn",
        ])
        .unwrap();
        assert_eq!(a.config, PathBuf::from("/etc/x.toml"));
        assert_eq!(a.default_mpi, MpiChoice::None);
        assert_eq!(a.default_hpcc, Some(Enforcement::Warn));
        assert_eq!(PluginArgs::parse([]).unwrap(), PluginArgs::default());
    }

    #[test]
    fn rejects_bad_arguments_naming_them() {
        let e = PluginArgs::parse(["conf=/x"]).unwrap_err().to_string();
        assert!(e.contains("conf=/x"), "{e}");
        let e = PluginArgs::parse(["config=relative.toml"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("config") && e.contains("absolute"), "{e}");
        let e = PluginArgs::parse(["default_mpi=always"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("default_mpi") && e.contains("always"), "{e}");
        assert!(PluginArgs::parse(["verbose"]).is_err());
    }

    #[test]
    fn user_values_override_defaults() {
        let args = PluginArgs::parse(["default_mpi=none", "default_hpcc=warn"]).unwrap();
        let mut o = UserOptions::default();
        assert_eq!(
            o.request(&args),
            UserRequest {
                enforcement: Some(Enforcement::Warn),
                mpi: MpiChoice::None
            }
        );
        o.set_hpcc("off").unwrap();
        o.set_mpi("replace").unwrap();
        assert_eq!(
            o.request(&args),
            UserRequest {
                enforcement: Some(Enforcement::Off),
                mpi: MpiChoice::Replace
            }
        );
        let e = o.set_hpcc("never").unwrap_err().to_string();
        assert!(e.contains("--hpcc") && e.contains("never"), "{e}");
        assert!(o.set_mpi("sometimes").is_err());
    }
}
