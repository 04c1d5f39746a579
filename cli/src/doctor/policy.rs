//! The policy file: valid, and only root can change it.

use super::{not_root_only, Finding, Layout};
use hpcc_config::Policy;

const CHECK: &str = "policy";

/// Loads the policy and records what is wrong with it; the policy when it
/// loads (the defaults when the file is absent).
pub fn check(layout: &Layout, out: &mut Vec<Finding>) -> Option<Policy> {
    let path = &layout.policy;
    let exists = path.exists();
    let policy = match Policy::load(path) {
        Ok(p) => p,
        Err(e) => {
            out.push(Finding::fail(
                CHECK,
                e.to_string(),
                format!(
                    "edit {} (`hpcc policy example` prints the commented reference, hook.toml(5) \
                     explains every key), then run `hpcc policy check`; until then every container \
                     start is refused",
                    path.display()
                ),
            ));
            return None;
        }
    };
    if !exists {
        out.push(Finding::warn(
            CHECK,
            format!("{} does not exist: the built-in defaults apply", path.display()),
            format!(
                "`hpcc policy example > {}` installs the commented reference (or reinstall the \
                 hpcc package: `apt-get install --reinstall -o Dpkg::Options::=--force-confmiss hpcc`)",
                path.display()
            ),
        ));
        return Some(policy);
    }
    match not_root_only(path) {
        Some(why) => out.push(Finding::fail(
            CHECK,
            format!(
                "{} is valid, but not only root can change it: {why}",
                path.display()
            ),
            format!(
                "chown root:root {p} && chmod 0644 {p} (and make every directory above it \
                 root-owned and not group/world-writable)",
                p = path.display()
            ),
        )),
        None => out.push(Finding::ok(
            CHECK,
            format!("{} is valid and only root can change it", path.display()),
        )),
    }
    Some(policy)
}
