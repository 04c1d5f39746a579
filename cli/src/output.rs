//! Where a command's answer goes: text or one JSON document on stdout,
//! errors as `{"error": "..."}` on stdout under `--json` and as a line on
//! stderr otherwise.

use super::CliError;
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

    /// Prints `value` as the JSON document of this run.
    pub fn json(&self, value: &impl Serialize) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value)?;
        self.text(&format!("{text}\n"))
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
                &serde_json::json!({ "error": e.to_string() }),
            )
        } else {
            eprint!("{}", e.text());
            e.exit_code()
        }
    }

    /// Prints `value` (a JSON document) and returns `code`.
    pub fn fail_code(&self, code: i32, value: &serde_json::Value) -> i32 {
        match serde_json::to_string_pretty(value) {
            Ok(t) => println!("{t}"),
            Err(_) => println!("{{\"error\": \"cannot serialize the error\"}}"),
        }
        code
    }
}
