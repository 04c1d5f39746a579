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

#[test]
fn slurm_constraint_and_affinity_exit_as_the_best_class_and_submit_off_does_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let d = std::env::temp_dir().join(format!("hpcc-cli-constraint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("fleet")).unwrap();
    let node = hpcc_common::fingerprint::NodeFingerprint::take(&hpcc_config::Policy::default());
    std::fs::write(
        d.join("fleet/n1.json"),
        serde_json::to_string(&node).unwrap(),
    )
    .unwrap();
    let key = "org.supercontainers.hardware.cpu.optimized.version";
    // The node's own target runs; another architecture's never does.
    let foreign = if std::env::consts::ARCH == "x86_64" {
        "a64fx"
    } else {
        "x86_64_v4"
    };
    for (name, target) in [
        ("own", node.cpu.microarchitecture.as_str()),
        ("foreign", foreign),
    ] {
        std::fs::write(
            d.join(format!("{name}.json")),
            format!("{{\"{key}\": \"{target}\"}}"),
        )
        .unwrap();
    }
    let policy = d.join("hook.toml");
    std::fs::write(
        &policy,
        format!(
            "[scheduling]\nsubmit = \"off\"\nfleet = \"{}\"\n",
            d.join("fleet").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = policy.to_str().unwrap();
    let own = d.join("own.json");
    let bad = d.join("foreign.json");
    let (own, bad) = (own.to_str().unwrap(), bad.to_str().unwrap());
    for mode in ["--slurm-constraint", "--k8s-affinity"] {
        assert_eq!(
            run(&["--config", p, "match", "--annotations", own, mode]),
            0,
            "{mode}"
        );
        assert_eq!(
            run(&["--config", p, "match", "--annotations", bad, mode]),
            2,
            "{mode}"
        );
    }
    // A user constraint no class meets is refused; a bad one is bad input.
    let user = ["--user-constraint", "site.none"];
    let args = [
        "--config",
        p,
        "match",
        "--annotations",
        own,
        "--slurm-constraint",
    ];
    assert_eq!(run(&[&args[..], &user[..]].concat()), 2);
    let user = ["--user-constraint", "a,b"];
    assert_eq!(run(&[&args[..], &user[..]].concat()), EXIT_INPUT);
    assert_eq!(
        run(&[
            "--config",
            p,
            "match",
            "--annotations",
            own,
            "--partition",
            "x"
        ]),
        EXIT_INPUT
    );
    // off: no sinfo, no fleet read, nothing to refuse.
    assert_eq!(
        run(&["--config", p, "match", "--annotations", bad, "--submit"]),
        0
    );
    std::fs::remove_dir_all(&d).unwrap();
}
