//! `hpcc`: the same core by hand, for admins and users.
//!
//! Exit codes (documented in docs/cli.md):
//! - `hpcc match`: 0 green, 1 orange, 2 red, 3 bad input;
//! - `hpcc check`: 0 conformant, 1 valid but not conformant, 2 invalid annotations, 3 bad input;
//! - `hpcc fingerprint`, `hpcc policy`: 0 ok, 3 error.

use hpcc_common::annotations::ImageSpec;
use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::launch;
use hpcc_common::matcher::Score;
use hpcc_common::oci::{self, LaunchContext};
use hpcc_common::plan::{MpiChoice, UserRequest};
use hpcc_common::report;
use hpcc_config::Policy;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bad input (unreadable file, invalid JSON, unknown flag).
pub const EXIT_INPUT: i32 = 3;

/// Usage text.
pub const USAGE: &str = "\
hpcc — HPC container conformance: fingerprint this node, score an image against it

usage:
  hpcc fingerprint [--json] [--no-cache] | --gpus
  hpcc match (--bundle DIR | --annotations FILE.json) [--fingerprint FILE.json]
             [--plan] [--json] [--enforcement enforce|warn|off] [--mpi auto|replace|none]
  hpcc check (--bundle DIR | --annotations FILE.json) [--json]
  hpcc policy [check|show|example]

FILE.json is a JSON object of annotation keys to values, as in config.json's
\"annotations\". The policy is read from $HPCC_CONFIG or /etc/hpcc/hook.toml.

exit status: match 0 green, 1 orange, 2 red; check 0 conformant, 1 not conformant,
2 invalid annotations; 3 bad input for every command.
";

/// Annotations that the proposal makes mandatory for a conformant image.
pub const MANDATORY: &[&str] = &["org.supercontainers.hardware.cpu.optimized.version"];

struct Args {
    rest: Vec<String>,
}

impl Args {
    fn flag(&mut self, name: &str) -> bool {
        let before = self.rest.len();
        self.rest.retain(|a| a != name);
        before != self.rest.len()
    }

    fn value(&mut self, name: &str) -> Result<Option<String>, String> {
        let prefix = format!("{name}=");
        if let Some(i) = self.rest.iter().position(|a| a.starts_with(&prefix)) {
            let v = self.rest.remove(i)[prefix.len()..].to_owned();
            return Ok(Some(v));
        }
        match self.rest.iter().position(|a| a == name) {
            None => Ok(None),
            Some(i) if i + 1 < self.rest.len() => {
                self.rest.remove(i);
                Ok(Some(self.rest.remove(i)))
            }
            Some(_) => Err(format!("{name} needs a value")),
        }
    }

    fn done(self) -> Result<(), String> {
        match self.rest.first() {
            None => Ok(()),
            Some(a) => Err(format!("unexpected argument {a:?}")),
        }
    }
}

fn color_stdout() -> bool {
    // SAFETY: isatty on a constant fd has no preconditions.
    std::env::var_os("NO_COLOR").is_none() && unsafe { libc::isatty(1) } == 1
}

fn load_policy() -> Result<(Policy, PathBuf), String> {
    let path = hpcc_config::policy_path_from_env();
    Policy::load(&path)
        .map(|p| (p, path))
        .map_err(|e| e.to_string())
}

/// Where an image's annotations come from.
enum Source {
    Bundle(PathBuf),
    File(PathBuf),
}

fn source(args: &mut Args) -> Result<Source, String> {
    match (args.value("--bundle")?, args.value("--annotations")?) {
        (Some(b), None) => Ok(Source::Bundle(b.into())),
        (None, Some(f)) => Ok(Source::File(f.into())),
        _ => Err("give exactly one of --bundle DIR or --annotations FILE.json".into()),
    }
}

/// Reads a JSON object of annotation strings (bounded like config.json).
pub fn read_annotations_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(oci::MAX_CONFIG_BYTES + 1).read_to_end(&mut buf))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if buf.len() as u64 > oci::MAX_CONFIG_BYTES {
        return Err(format!(
            "{} is larger than {} bytes",
            path.display(),
            oci::MAX_CONFIG_BYTES
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(&buf)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let obj = value.as_object().ok_or_else(|| {
        format!(
            "{}: expected a JSON object of annotation keys to values",
            path.display()
        )
    })?;
    obj.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(format!(
                "{}: annotation {k} must be a string, found {other}",
                path.display()
            )),
        })
        .collect()
}

fn context(src: &Source) -> Result<LaunchContext, String> {
    match src {
        Source::Bundle(dir) => {
            let spec = oci::load_bundle_config(dir).map_err(|e| e.to_string())?;
            Ok(LaunchContext::from_bundle(dir, &spec))
        }
        Source::File(f) => Ok(LaunchContext::from_annotations(
            &f.file_stem()
                .map_or("image".into(), |s| s.to_string_lossy().into_owned()),
            read_annotations_file(f)?,
        )),
    }
}

fn cmd_fingerprint(mut args: Args) -> Result<i32, String> {
    let json = args.flag("--json");
    let no_cache = args.flag("--no-cache");
    let gpus_only = args.flag("--gpus");
    args.done()?;
    if gpus_only {
        // The GPU helper of hpcc-hook (which never loads NVML itself): the
        // GPU facts alone, as JSON, no policy read.
        let g = hpcc_common::fingerprint::gpus();
        println!("{}", serde_json::to_string(&g).map_err(|e| e.to_string())?);
        return Ok(0);
    }
    let (policy, _) = load_policy()?;
    let fp = if no_cache {
        NodeFingerprint::take(&policy)
    } else {
        NodeFingerprint::cached(&policy)
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&fp).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report::fingerprint(&fp));
    }
    Ok(0)
}

fn cmd_match(mut args: Args) -> Result<i32, String> {
    let json = args.flag("--json");
    let show_plan = args.flag("--plan");
    let fp_file = args.value("--fingerprint")?;
    let enforcement = args
        .value("--enforcement")?
        .map(|v| v.parse::<hpcc_config::Enforcement>())
        .transpose()?;
    let mpi = args
        .value("--mpi")?
        .map(|v| v.parse::<MpiChoice>())
        .transpose()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let src = source(&mut args)?;
    args.done()?;
    let (policy, _) = load_policy()?;
    let node = match fp_file {
        Some(f) => {
            let text = std::fs::read_to_string(&f).map_err(|e| format!("cannot read {f}: {e}"))?;
            serde_json::from_str::<NodeFingerprint>(&text)
                .map_err(|e| format!("{f} is not a fingerprint (hpcc fingerprint --json): {e}"))?
        }
        None => NodeFingerprint::cached(&policy),
    };
    let ctx = context(&src)?;
    let plan = launch::decide(&ctx, &node, &policy, &UserRequest { enforcement, mpi })
        .map_err(|e| e.to_string())?;
    let color = color_stdout();
    match (json, show_plan) {
        (true, true) => println!(
            "{}",
            serde_json::to_string_pretty(&plan).map_err(|e| e.to_string())?
        ),
        (true, false) => println!(
            "{}",
            serde_json::to_string_pretty(&plan.verdict).map_err(|e| e.to_string())?
        ),
        (false, true) => print!("{}", report::plan(&plan, color)),
        (false, false) => print!("{}", report::verdict(&plan.verdict, color)),
    }
    Ok(match plan.verdict.score() {
        Score::Green => 0,
        Score::Orange => 1,
        Score::Red => 2,
    })
}

fn cmd_check(mut args: Args) -> Result<i32, String> {
    let json = args.flag("--json");
    let src = source(&mut args)?;
    args.done()?;
    let ctx = context(&src)?;
    let spec = ImageSpec::from_annotations(
        ctx.annotations
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let (code, problems, warnings) = match &spec {
        Err(e) => (2, vec![e.to_string()], vec![]),
        Ok(s) => {
            // Both spellings of the CPU target fold into `cpu_target`.
            let missing: Vec<String> = MANDATORY
                .iter()
                .filter(|_| s.cpu_target.is_none())
                .map(|k| format!("mandatory annotation {k} is missing"))
                .collect();
            (
                if missing.is_empty() { 0 } else { 1 },
                missing,
                s.warnings.clone(),
            )
        }
    };
    if json {
        let out = serde_json::json!({
            "conformant": code == 0,
            "problems": problems,
            "warnings": warnings,
            "image": spec.as_ref().ok(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "{}",
            if code == 0 {
                "conformant"
            } else {
                "not conformant"
            }
        );
        for p in &problems {
            println!("  problem: {p}");
        }
        for w in &warnings {
            println!("  warning: {w}");
        }
    }
    Ok(code)
}

fn cmd_policy(mut args: Args) -> Result<i32, String> {
    let what = if args.rest.is_empty() {
        "check".to_owned()
    } else {
        args.rest.remove(0)
    };
    args.done()?;
    match what.as_str() {
        "example" => {
            print!("{}", hpcc_config::EXAMPLE);
            Ok(0)
        }
        "check" | "show" => {
            let (p, path) = load_policy()?;
            if what == "show" {
                print!("{}", toml::to_string_pretty(&p).map_err(|e| e.to_string())?);
            } else {
                println!(
                    "{}: valid{}",
                    path.display(),
                    if path.exists() {
                        ""
                    } else {
                        " (absent: defaults apply)"
                    }
                );
            }
            Ok(0)
        }
        o => Err(format!(
            "unknown policy action {o:?} (expected check, show or example)"
        )),
    }
}

/// Runs the CLI with `argv` (without the program name); returns the exit code.
pub fn main(argv: Vec<String>) -> i32 {
    let mut it = argv.into_iter();
    let cmd = it.next();
    let args = Args { rest: it.collect() };
    let res = match cmd.as_deref() {
        Some("fingerprint") => cmd_fingerprint(args),
        Some("match") => cmd_match(args),
        Some("check") => cmd_check(args),
        Some("policy") => cmd_policy(args),
        Some("--version" | "version") => {
            println!("hpcc {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(0)
        }
        Some(o) => Err(format!("unknown command {o:?}\n\n{USAGE}")),
        None => Err(USAGE.to_owned()),
    };
    match res {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hpcc: {e}");
            EXIT_INPUT
        }
    }
}
