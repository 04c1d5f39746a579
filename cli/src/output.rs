//! Where a command's answer goes: text or one JSON document on stdout,
//! errors as `{"error": "..."}` on stdout under `--json` and as a line on
//! stderr otherwise.

use super::CliError;
use hpcc_common::schema::{self, Kind};
use serde::Serialize;
use std::io::Write;

/// The output mode of one `hpcc` run.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--json`.
    pub json: bool,
    /// Colour on stdout: a terminal and no `NO_COLOR` (never with `--json`).
    pub color: bool,
}

impl Output {
    /// The mode for this process.
    pub fn new(json: bool) -> Output {
        // SAFETY: isatty on a constant fd has no preconditions.
        let tty = unsafe { libc::isatty(1) } == 1;
        Output {
            json,
            color: !json && tty && !super::no_color(),
        }
    }

    /// Prints `value` as the JSON document of this run, of `kind`
    /// (`"schema"` and `"kind"` first: [`hpcc_common::schema`]).
    pub fn json(&self, kind: Kind, value: &impl Serialize) -> Result<(), CliError> {
        self.text(&schema::to_string_pretty(kind, value)?)
    }

    /// Prints text on stdout as is. (`print!`: the binary dies quietly on
    /// a closed pipe, SIGPIPE being restored, and tests capture it.)
    pub fn text(&self, text: &str) -> Result<(), CliError> {
        print!("{text}");
        std::io::stdout().flush().map_err(|source| CliError::Write {
            what: "cannot write to stdout".into(),
            source,
        })
    }

    /// Reports an error in the mode of this run; returns its exit code.
    pub fn fail(&self, e: &CliError) -> i32 {
        if self.json {
            self.fail_code(
                e.exit_code(),
                Kind::Error,
                &serde_json::json!({ "error": e.to_string() }),
            )
        } else {
            eprint!("{}", e.text());
            e.exit_code()
        }
    }

    /// Prints `value` as the document of `kind` and returns `code`.
    pub fn fail_code(&self, code: i32, kind: Kind, value: &serde_json::Value) -> i32 {
        match schema::to_string_pretty(kind, value) {
            Ok(t) => print!("{t}"),
            Err(_) => println!(
                "{{\"schema\": \"{}\", \"kind\": \"error\", \"error\": \"cannot serialize the error\"}}",
                schema::SCHEMA
            ),
        }
        code
    }
}
