//! Logging for every entry point: journald when its socket exists (crun does
//! not show a hook's stderr, so the admin's log must have the reason), and
//! stderr always (warnings and errors). Refusal lines for users are printed by the entry
//! points themselves, not through this.
//!
//! Two rules keep the image out of the log's control:
//! - the level comes from the policy only, never from the environment: runc
//!   gives a `createContainer` hook the container's own `process.env`, and a
//!   filter string from the image (`HPCC_LOG`) would choose what hpcc
//!   prints, or feed a regular expression of its choosing to the filter;
//! - on stderr every record is one line: control characters in it (a
//!   newline in an annotation value that reached an error message, an
//!   escape sequence in an image path) are written as escapes, so an image
//!   cannot print lines that look like hpcc's, even into a file it named
//!   with crun's `run.oci.hooks.stderr` annotation. journald keeps each
//!   record one entry whatever it contains (its fields are length-prefixed).

use std::io::Write;
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
/// identifier (`hpcc-hook`, `hpcc-spank`). Returns where the policy's level
/// goes. A second call is a no-op (the SPANK plugin is entered many times
/// per process).
///
/// stderr always gets records from `[log] stderr` up (default warnings and
/// errors; the refusal line itself is printed by the entry point): runc
/// shows a failing hook's whole stderr to the user, and the refusal must
/// stay the line that stands out. journald, when its socket exists and
/// `[log] journald` is on, gets every record from `[log] level` up.
pub fn init(identifier: &str, log: &hpcc_config::Log) -> Sink {
    let (level, journald) = (log.level.as_str(), log.journald);
    if journald && Path::new(JOURNAL_SOCKET).exists() {
        let filter = tracing_subscriber::filter::EnvFilter::try_new(level)
            .unwrap_or_else(|_| tracing_subscriber::filter::EnvFilter::new("info"));
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_syslog_identifier(identifier.to_owned())
                .with_filter(filter);
            let _ = tracing_subscriber::registry()
                .with(layer)
                .with(stderr_layer(&log.stderr))
                .try_init();
            return Sink::Journald;
        }
    }
    let _ = tracing_subscriber::registry()
        .with(stderr_layer(&log.stderr))
        .try_init();
    Sink::Stderr
}

/// journald only, at `level` (the SPANK plugin: slurmstepd's stderr
/// reaches the srun user, who must see one line, and slurmd's log has the
/// rest). False when journald is absent.
pub fn init_journald_only(identifier: &str, level: &str) -> bool {
    if !Path::new(JOURNAL_SOCKET).exists() {
        return false;
    }
    let filter = tracing_subscriber::filter::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::filter::EnvFilter::new("info"));
    match tracing_journald::layer() {
        Ok(layer) => {
            let layer = layer
                .with_syslog_identifier(identifier.to_owned())
                .with_filter(filter);
            let _ = tracing_subscriber::registry().with(layer).try_init();
            true
        }
        Err(_) => false,
    }
}

/// Records from `level` up on stderr (policy `[log] stderr`, default
/// `warn`), one line each.
fn stderr_layer<S>(level: &str) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(|| OneLine(std::io::stderr()))
        .with_ansi(false)
        .with_target(false)
        .with_level(true)
        .without_time()
        .with_filter(
            level
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .unwrap_or(tracing_subscriber::filter::LevelFilter::WARN),
        )
}

/// A writer that makes each record one line: the formatter hands it one
/// whole record per `write` (a fresh writer per event, one `write_all` of
/// the formatted buffer), and every control character in it but the final
/// newline is written escaped ([`crate::text::escape`]).
pub struct OneLine<W: Write>(pub W);

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(one_line(buf).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `buf` as text with every control character escaped, and exactly one
/// newline at the end.
pub fn one_line(buf: &[u8]) -> String {
    let text = String::from_utf8_lossy(buf);
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let mut out = crate::text::escape(body);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_line_whatever_it_carries() {
        let rec = b"WARN error=cannot open /etc/x\nhpcc: container may start\x1b[2K in the image\n";
        let mut out = Vec::new();
        OneLine(&mut out).write_all(rec).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.matches('\n').count(), 1, "{s}");
        assert!(s.ends_with('\n'));
        assert!(s.contains("\\nhpcc: container may start\\u{1b}[2K"), "{s}");
        // Not valid UTF-8: replaced, still one line.
        assert_eq!(one_line(b"a\xff\nb").matches('\n').count(), 1);
        assert_eq!(one_line(b"plain\n"), "plain\n");
    }
}
