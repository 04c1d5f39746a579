//! Logging for every entry point: journald when its socket exists (crun does
//! not show a hook's stderr, so the admin's log must have the reason), and
//! stderr when it does not. Refusal lines for users are printed by the entry
//! points themselves, not through this.

use std::path::Path;
use tracing_subscriber::prelude::*;

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Where records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// journald.
    Journald,
    /// stderr.
    Stderr,
}

/// Installs the global subscriber once; `identifier` is the syslog
/// identifier (`hpcc-hook`, `hpcc-spank`). Returns where records go. A second
/// call is a no-op (the SPANK plugin is entered many times per process).
///
/// On stderr only warnings and errors are written unless `HPCC_LOG` says
/// otherwise: runc shows a failing hook's whole stderr to the user, and the
/// refusal must stay the line that stands out.
pub fn init(identifier: &str, level: &str, journald: bool) -> Sink {
    let env = || tracing_subscriber::filter::EnvFilter::try_from_env("HPCC_LOG");
    if journald && Path::new(JOURNAL_SOCKET).exists() {
        let filter = env().unwrap_or_else(|_| tracing_subscriber::filter::EnvFilter::new(level));
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer.with_syslog_identifier(identifier.to_owned());
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init();
            return Sink::Journald;
        }
    }
    let filter = env().unwrap_or_else(|_| tracing_subscriber::filter::EnvFilter::new("warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_level(true)
        .without_time();
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
    Sink::Stderr
}
