//! The launch path stays offline: the hook, the runtime and the SPANK
//! plugin (which slurmstepd loads) must not link the registry client or
//! anything that opens network connections for it. Only `hpcc` (this
//! crate, through hpcc-image) does. Checked on the resolved dependency
//! graph (`cargo tree -e normal`), so a new path through any crate fails
//! here, not in a review.

use std::process::Command;

/// Crates that only a registry client brings in.
const NETWORK: &[&str] = &[
    "oci-client",
    "reqwest",
    "tokio",
    "hyper",
    "native-tls",
    "rustls",
];

fn tree(package: &str) -> String {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn crates(tree: &str) -> Vec<&str> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

#[test]
fn hook_runtime_and_spank_link_no_network_client() {
    for package in ["hpcc-hook", "hpcc-runtime", "hpcc-spank"] {
        let t = tree(package);
        let bad: Vec<&str> = crates(&t)
            .into_iter()
            .filter(|c| NETWORK.contains(c))
            .collect();
        assert!(bad.is_empty(), "{package} depends on {bad:?}:\n{t}");
    }
}

#[test]
fn the_check_sees_the_client_where_it_is() {
    // hpcc itself links the registry client: the check above can fail.
    let t = tree("hpcc-cli");
    let c = crates(&t);
    assert!(c.contains(&"oci-client") && c.contains(&"tokio"), "{t}");
}
