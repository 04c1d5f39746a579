//! `hpcc generate-docs --out DIR` (hidden): the man pages and completion
//! scripts the packages ship, generated from the same clap commands as
//! `--help` (`packaging/build-release.sh` runs it):
//!
//! - `man1/hpcc.1` and `man1/hpcc-COMMAND.1` from [`super::command`];
//! - `man8/hpcc-hook.8` from [`hpcc_hook::hook::command`];
//! - `man8/hpcc-runtime.8` from [`runtime_command`];
//! - `man5/hook.toml.5` from the reference policy (`config/hook.toml`, what
//!   `hpcc policy example` prints);
//! - `completions/hpcc.bash`, `completions/_hpcc`, `completions/hpcc.fish`.

use super::{CliError, Global, Output};
use hpcc_common::schema::Kind;

use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;
use std::path::{Path, PathBuf};

/// `hpcc generate-docs --out DIR`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The directory to write man/ and completions/ into (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Runs the command: writes every file, lists them.
pub fn run(args: &Args, _g: &Global, out: &Output) -> Result<i32, CliError> {
    let files = generate(&args.out)?;
    if out.json {
        out.json(
            Kind::GeneratedDocs,
            &serde_json::json!({ "written": files }),
        )?;
    } else {
        let mut text = String::new();
        for f in &files {
            text.push_str(&format!("{}\n", f.display()));
        }
        out.text(&text)?;
    }
    Ok(0)
}

/// Writes every page and script under `dir`; returns their paths.
pub fn generate(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let mut written = Vec::new();
    let mut write = |rel: String, bytes: Vec<u8>| -> Result<(), CliError> {
        let path = dir.join(&rel);
        let what = || format!("cannot write {}", path.display());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| CliError::Write {
                what: what(),
                source,
            })?;
        }
        std::fs::write(&path, bytes).map_err(|source| CliError::Write {
            what: what(),
            source,
        })?;
        written.push(path);
        Ok(())
    };
    let mut hpcc = super::command().disable_help_subcommand(true);
    hpcc.build();
    for sub in hpcc.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub
            .get_display_name()
            .unwrap_or_else(|| sub.get_name())
            .to_owned();
        write(
            format!("man/man1/{name}.1"),
            page(sub.clone(), "1", &[("SEE ALSO", "hpcc(1)".into())])?,
        )?;
    }
    write(
        "man/man1/hpcc.1".into(),
        page(
            hpcc.clone(),
            "1",
            &[("FILES", FILES.into()), ("SEE ALSO", see_also(&hpcc))],
        )?,
    )?;
    write(
        "man/man8/hpcc-hook.8".into(),
        page(
            hpcc_hook::hook::command(),
            "8",
            &[
                ("FILES", FILES.into()),
                ("SEE ALSO", "hpcc(1), hook.toml(5), hpcc-runtime(8)".into()),
            ],
        )?,
    )?;
    write(
        "man/man8/hpcc-runtime.8".into(),
        page(
            runtime_command(),
            "8",
            &[
                ("FILES", FILES.into()),
                ("SEE ALSO", "hpcc(1), hpcc-hook(8), hook.toml(5)".into()),
            ],
        )?,
    )?;
    write("man/man5/hook.toml.5".into(), policy_page())?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, "hpcc.bash"),
        (clap_complete::Shell::Zsh, "_hpcc"),
        (clap_complete::Shell::Fish, "hpcc.fish"),
    ] {
        write(
            format!("completions/{file}"),
            super::completions::script(shell),
        )?;
    }
    Ok(written)
}

const FILES: &str = "\
/etc/hpcc/hook.toml                          the policy (hook.toml(5))
/usr/libexec/hpcc/hpcc-hook                  the OCI hook
/usr/libexec/hpcc/hpcc-runtime               the OCI runtime shim for Slurm's oci.conf
/usr/share/containers/oci/hooks.d/hpcc.json  the hook for podman and CRI-O
/run/hpcc/                                   per-boot fingerprint cache, Slurm step policies
/usr/share/doc/hpcc-slurm/examples/          plugstack.conf and oci.conf snippets";

fn see_also(hpcc: &clap::Command) -> String {
    let mut v: Vec<String> = hpcc
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| format!("{}(1)", s.get_display_name().unwrap_or(s.get_name())))
        .collect();
    v.extend(["hpcc-hook(8)", "hpcc-runtime(8)", "hook.toml(5)"].map(String::from));
    v.join(", ")
}

/// A date for the pages: `SOURCE_DATE_EPOCH` (reproducible builds), else none.
fn date() -> String {
    let Some(secs) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
    else {
        return String::new();
    };
    hpcc_common::date::ymd(secs)
}

fn source() -> String {
    format!("hpcc {}", env!("CARGO_PKG_VERSION"))
}

/// One man page: clap_mangen's sections, the command's after-help text as
/// sections of their own ("Exit status:" becomes EXIT STATUS), then
/// `extra`.
fn page(cmd: clap::Command, section: &str, extra: &[(&str, String)]) -> Result<Vec<u8>, CliError> {
    let mut cmd = cmd;
    cmd.build();
    let after = cmd
        .get_after_long_help()
        .or(cmd.get_after_help())
        .map(|s| s.to_string());
    let has_args = cmd
        .get_arguments()
        .any(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help"));
    let has_subs = cmd.get_subcommands().any(|s| !s.is_hide_set());
    let has_version = cmd.get_version().is_some();
    let man = Man::new(cmd)
        .section(section)
        .date(date())
        .source(source())
        .manual("hpcc manual");
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if has_args {
        man.render_options_section(&mut buf)?;
    }
    if has_subs {
        man.render_subcommands_section(&mut buf)?;
    }
    let mut roff = Roff::default();
    if let Some(text) = after {
        for (heading, body) in after_help_sections(&text) {
            preformatted(&mut roff, &heading, &body);
        }
    }
    for (heading, body) in extra {
        preformatted(&mut roff, heading, body);
    }
    roff.to_writer(&mut buf)?;
    if has_version {
        man.render_version_section(&mut buf)?;
    }
    Ok(buf)
}

/// Blocks of an after-help text: a block whose first line is `Heading:`
/// becomes section HEADING, others NOTES.
fn after_help_sections(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (first, rest) = block.split_once('\n').unwrap_or((block, ""));
        match first.trim().strip_suffix(':') {
            Some(h) if !h.contains(' ') || h.split(' ').count() <= 2 => {
                out.push((h.to_uppercase(), rest.to_owned()))
            }
            _ => match first.split_once(": ") {
                // "Exit status: 0 green, ..." on one line.
                Some((h, body)) if h.split(' ').count() <= 2 => {
                    let mut b = body.to_owned();
                    if !rest.is_empty() {
                        b.push('\n');
                        b.push_str(rest);
                    }
                    out.push((h.to_uppercase(), b))
                }
                _ => out.push(("NOTES".into(), block.to_owned())),
            },
        }
    }
    out
}

fn preformatted(roff: &mut Roff, heading: &str, body: &str) {
    roff.control("SH", [heading]);
    roff.control("nf", []);
    for line in body.lines() {
        roff.text([roman(line.trim_start_matches("  "))]);
    }
    roff.control("fi", []);
}

/// `hpcc-runtime`'s command line, for its man page: the runtime's own
/// description of its options.
pub fn runtime_command() -> clap::Command {
    hpcc_runtime::args::command()
}

/// hook.toml(5), from the commented reference file.
fn policy_page() -> Vec<u8> {
    let mut roff = Roff::default();
    roff.control("TH", ["HOOK.TOML", "5", &date(), &source(), "hpcc manual"]);
    roff.control("SH", ["NAME"]);
    roff.text([roman("hook.toml - hpcc policy file")]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([bold(hpcc_config::DEFAULT_PATH)]);
    let mut lines = hpcc_config::EXAMPLE.lines().peekable();
    roff.control("SH", ["DESCRIPTION"]);
    let mut intro = Vec::new();
    while let Some(l) = lines.next_if(|l| l.starts_with('#')) {
        intro.push(uncomment(l));
    }
    roff.text([roman(intro.join(" "))]);
    roff.control("PP", []);
    roff.text([roman(
        "hpcc-hook(8) reads it from its --config argument (never from the environment), \
hpcc_spank.so from its config= argument in plugstack.conf, hpcc(1) from --config or \
$HPCC_CONFIG. It must be owned by root and writable only by root. `hpcc policy check` \
validates it, `hpcc policy show` prints it with every default filled in, \
`hpcc policy example` prints this reference, and `hpcc doctor` checks it with the rest \
of the installation.",
    )]);
    roff.control("SH", ["KEYS"]);
    let mut pending: Vec<String> = Vec::new();
    let mut in_table = false;
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t.is_empty() {
            if !pending.is_empty() {
                if !in_table {
                    roff.control("SS", ["Top level"]);
                    in_table = true;
                }
                roff.control("PP", []);
                roff.text([roman(pending.join(" "))]);
                pending.clear();
            }
        } else if t.starts_with('#') {
            pending.push(uncomment(t));
        } else if t.starts_with('[') {
            roff.control("SS", [t]);
            in_table = true;
            if !pending.is_empty() {
                roff.text([roman(pending.join(" "))]);
                pending.clear();
            }
        } else {
            if !in_table {
                roff.control("SS", ["Top level"]);
                in_table = true;
            }
            // key = value [# comment], a value may span lines until ] closes.
            let (code, comment) = split_comment(t);
            let mut value = code.to_owned();
            let mut depth = brackets(code);
            while depth > 0 {
                let Some(next) = lines.next() else { break };
                let (c, _) = split_comment(next.trim());
                value.push(' ');
                value.push_str(c);
                depth += brackets(c);
            }
            roff.control("TP", []);
            roff.text([bold(value)]);
            let mut body = std::mem::take(&mut pending);
            if let Some(c) = comment {
                body.push(c.to_owned());
            }
            roff.text([roman(body.join(" "))]);
        }
    }
    roff.control("SH", ["FILES"]);
    roff.control("nf", []);
    for l in FILES.lines() {
        roff.text([roman(l)]);
    }
    roff.control("fi", []);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "hpcc(1), hpcc-doctor(1), hpcc-hook(8), hpcc-runtime(8)",
    )]);
    roff.render().into_bytes()
}

fn uncomment(l: &str) -> String {
    // ASCII only: groff without preconv (or a man page viewer) shows mojibake.
    l.trim()
        .trim_start_matches('#')
        .trim_start_matches(' ')
        .replace('\u{2014}', "-")
}

fn split_comment(s: &str) -> (&str, Option<&str>) {
    // Values of the reference file hold no '#'.
    match s.split_once('#') {
        Some((code, c)) => (code.trim_end(), Some(c.trim())),
        None => (s, None),
    }
}

fn brackets(s: &str) -> i32 {
    s.matches('[').count() as i32 - s.matches(']').count() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_help_becomes_sections() {
        let s = after_help_sections("Exit status:\n  0 ok\n\nEnvironment:\n  X  y");
        assert_eq!(s[0].0, "EXIT STATUS");
        assert_eq!(s[1].0, "ENVIRONMENT");
        let s = after_help_sections("Exit status: 0 green, 1 orange.");
        assert_eq!(s, vec![("EXIT STATUS".into(), "0 green, 1 orange.".into())]);
    }

    #[test]
    fn policy_page_lists_every_table_of_the_reference_file() {
        let page = String::from_utf8(policy_page()).unwrap();
        for t in ["[checks]", "[users]", "[tweaks]", "[cache]", "[log]"] {
            assert!(page.contains(&format!(".SS {t}")), "{t} missing:\n{page}");
        }
        assert!(page.contains("may_relax_to"), "{page}");
        assert!(page.contains("\n.TH HOOK.TOML 5"), "{page}");
    }

    #[test]
    fn every_page_and_script_is_written() {
        let dir = std::env::temp_dir().join(format!("hpcc-docs-test-{}", std::process::id()));
        let files = generate(&dir).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
            .collect();
        for want in [
            "man/man1/hpcc.1",
            "man/man1/hpcc-doctor.1",
            "man/man1/hpcc-match.1",
            "man/man8/hpcc-hook.8",
            "man/man8/hpcc-runtime.8",
            "man/man5/hook.toml.5",
            "completions/hpcc.bash",
            "completions/_hpcc",
            "completions/hpcc.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.contains("generate-docs")),
            "{names:?}"
        );
        let hook = std::fs::read_to_string(dir.join("man/man8/hpcc-hook.8")).unwrap();
        assert!(hook.contains("config"), "{hook}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
