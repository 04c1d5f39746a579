//! The fingerprint cache is writable by root and by nobody else; journald
//! is reachable when the policy logs there (crun shows no hook's stderr:
//! without journald a refusal's reason reaches no admin).

use super::{is_root, not_root_only, Finding, Layout};
use hpcc_config::Policy;
use std::path::Path;

/// Records the findings.
pub fn check(layout: &Layout, policy: &Policy, out: &mut Vec<Finding>) {
    out.push(cache(&policy.cache.dir, policy.cache.enabled));
    out.push(journald(&layout.journal_socket, policy.log.journald));
}

fn cache(dir: &Path, enabled: bool) -> Finding {
    const CHECK: &str = "fingerprint-cache";
    if !enabled {
        return Finding::ok(
            CHECK,
            "disabled by the policy ([cache] enabled = false): every start fingerprints the node",
        );
    }
    if !dir.exists() {
        // Created at the first start; its parent must let root do that.
        let parent = dir.parent().unwrap_or(Path::new("/"));
        return if parent.is_dir() {
            Finding::ok(
                CHECK,
                format!(
                    "{} will be created at the first container start",
                    dir.display()
                ),
            )
        } else {
            Finding::fail(
                CHECK,
                format!(
                    "{} cannot be created: {} is not a directory",
                    dir.display(),
                    parent.display()
                ),
                "set [cache] dir to a directory on a root-owned tmpfs (default /run/hpcc)",
            )
        };
    }
    if !dir.is_dir() {
        return Finding::fail(
            CHECK,
            format!("{} is not a directory", dir.display()),
            format!(
                "remove it (it is recreated), or set [cache] dir elsewhere: rm {}",
                dir.display()
            ),
        );
    }
    if let Some(why) = not_root_only(dir) {
        return Finding::fail(
            CHECK,
            format!(
                "{}: {why}: someone else could plant a fingerprint",
                dir.display()
            ),
            format!("chown root:root {d} && chmod 0755 {d}", d = dir.display()),
        );
    }
    if !is_root() {
        return Finding::warn(
            CHECK,
            format!(
                "{} is root's; not checked for writing (run hpcc doctor as root)",
                dir.display()
            ),
            "sudo hpcc doctor",
        );
    }
    let probe = dir.join(format!(".hpcc-doctor-{}", std::process::id()));
    let res = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe);
    let _ = std::fs::remove_file(&probe);
    match res {
        Ok(_) => Finding::ok(CHECK, format!("{} is writable by root only", dir.display())),
        Err(e) => Finding::fail(
            CHECK,
            format!(
                "{} is not writable: {e}: every start fingerprints the node again",
                dir.display()
            ),
            "make it a writable directory on a tmpfs (a read-only /run?), or set [cache] dir",
        ),
    }
}

fn journald(socket: &Path, enabled: bool) -> Finding {
    const CHECK: &str = "journald";
    if !enabled {
        return Finding::ok(
            CHECK,
            "disabled by the policy ([log] journald = false): messages go to the runtime's stderr",
        );
    }
    match std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.connect(socket)) {
        Ok(()) => Finding::ok(CHECK, format!("{} accepts messages (journalctl -t hpcc-hook)", socket.display())),
        Err(e) => Finding::warn(
            CHECK,
            format!(
                "journald is not reachable ({}: {e}): hpcc logs to the runtime's stderr only, and crun \
                 shows users no hook's stderr",
                socket.display()
            ),
            "run systemd-journald, or set [log] journald = false and keep the hook's stderr \
             (crun: annotation run.oci.hooks.stderr=FILE)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn a_missing_socket_is_a_warning_not_a_problem() {
        let f = journald(Path::new("/nonexistent/journal/socket"), true);
        assert_eq!(f.status, Status::Warn);
        assert_eq!(
            journald(Path::new("/nonexistent"), false).status,
            Status::Ok
        );
    }

    #[test]
    fn cache_states() {
        assert_eq!(cache(Path::new("/x"), false).status, Status::Ok);
        assert_eq!(
            cache(Path::new("/nonexistent-parent/hpcc"), true).status,
            Status::Fail
        );
        let tmp = std::env::temp_dir().join(format!("hpcc-doctor-cache-{}", std::process::id()));
        std::fs::write(&tmp, "x").unwrap();
        assert_eq!(cache(&tmp, true).status, Status::Fail);
        let _ = std::fs::remove_file(&tmp);
    }
}
