//! The CLI's conventions: clap parsing, `--json` on errors, exit codes.

use super::*;

fn run(args: &[&str]) -> i32 {
    let argv: Vec<OsString> = std::iter::once("hpcc")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect();
    main(argv)
}

#[test]
fn clap_definition_is_consistent() {
    command().debug_assert();
}

#[test]
fn bad_input_is_exit_3_with_and_without_json() {
    assert_eq!(run(&["match"]), EXIT_INPUT);
    assert_eq!(run(&["match", "--json"]), EXIT_INPUT);
    assert_eq!(run(&["--json", "frobnicate"]), EXIT_INPUT);
    assert_eq!(
        run(&["check", "--annotations", "/nonexistent/x.json", "--json"]),
        EXIT_INPUT
    );
    assert_eq!(
        run(&["match", "--bundle", "/a", "--annotations", "/b"]),
        EXIT_INPUT
    );
    assert_eq!(run(&[]), EXIT_INPUT);
}

#[test]
fn version_is_exit_0() {
    assert_eq!(run(&["--version"]), 0);
    assert_eq!(run(&["version", "--json"]), 0);
}

#[test]
fn json_flag_is_seen_before_parsing() {
    let v = |a: &[&str]| wants_json(&a.iter().map(OsString::from).collect::<Vec<_>>());
    assert!(v(&["hpcc", "match", "--json"]));
    assert!(!v(&["hpcc", "match", "--", "--json"]));
    assert!(!v(&["hpcc", "match"]));
}

#[test]
fn every_subcommand_takes_json_and_help() {
    let cmd = command();
    for sub in cmd.get_subcommands() {
        let name = sub.get_name();
        if name == "help" {
            continue;
        }
        let m = command().try_get_matches_from(["hpcc", name, "--help"]);
        assert_eq!(
            m.unwrap_err().kind(),
            clap::error::ErrorKind::DisplayHelp,
            "{name}"
        );
    }
}

#[test]
fn clap_errors_keep_their_message_for_json() {
    let e = command()
        .try_get_matches_from(["hpcc", "match", "--mpi", "sometimes", "--bundle", "x"])
        .unwrap_err();
    let msg = CliError::from(e).to_string();
    assert!(msg.contains("sometimes"), "{msg}");
    assert!(!msg.starts_with("error:"), "{msg}");
}

#[test]
fn version_names_the_slurm_release_or_its_absence() {
    let v = version::SHORT;
    assert!(v.starts_with(env!("CARGO_PKG_VERSION")), "{v}");
    assert!(
        v.contains("built for Slurm ") || v.contains("no Slurm plugin built"),
        "{v}"
    );
    let j = version::json();
    assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn annotations_file_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("hpcc-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("a.json");
    std::fs::write(&f, r#"{"k": 1}"#).unwrap();
    let e = source::read_annotations_file(&f).unwrap_err().to_string();
    assert!(
        e.contains("a.json") && e.contains("must be a string"),
        "{e}"
    );
    std::fs::write(&f, "[").unwrap();
    let e = source::read_annotations_file(&f).unwrap_err().to_string();
    assert!(e.contains("not valid JSON"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
