//! The plan as edits of `config.json`, for `hpcc-runtime`: the runtime
//! itself then makes every mount, creates every device and sets the
//! environment, exactly as it does for the rest of the config. Nothing is
//! entered, mounted or written by hpcc but the edited config (and the
//! linker cache file of [`super::ldcache_file`]).
//!
//! This works where a hook cannot: for a normal user with rootless runc
//! (Slurm requires it for non-root jobs), under cgroup v2 (the device
//! rules go to `linux.resources.devices`, which the runtime compiles into
//! its eBPF filter), and for the environment (`process.env`).
//!
//! The edit works on the JSON value, so fields of newer runtime specs pass
//! through untouched, and it is idempotent: an entry hpcc adds replaces
//! any entry of the same destination, path or name, so editing twice gives
//! the same config.

use crate::plan::{Device, EnvVar, Mount, SlurmWiring, Tweaks};
use serde_json::{json, Map, Value};
use std::path::Path;

/// Options of every bind mount hpcc adds: never writable unless the plan
/// says so, never setuid or device nodes, never propagated back to the
/// host (NVIDIA container toolkit PR #980: mounts propagated back).
fn bind_options(readonly: bool) -> Vec<&'static str> {
    let mut o = vec!["rbind"];
    if readonly {
        o.push("ro");
    }
    o.extend(["nosuid", "nodev", "rprivate"]);
    o
}

/// A `config.json` that cannot take the edits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A field hpcc must extend has another type.
    #[error("config.json: {field} is not {expected}")]
    Shape {
        /// The field (`mounts`, `process.env`, ...).
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

/// What an edit did, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edited {
    /// Mounts added.
    pub mounts: usize,
    /// Devices added.
    pub devices: usize,
    /// Environment variables set.
    pub env: usize,
}

fn object<'a>(
    v: &'a mut Value,
    field: &'static str,
) -> Result<&'a mut Map<String, Value>, SpecError> {
    if v.is_null() {
        *v = json!({});
    }
    v.as_object_mut().ok_or(SpecError::Shape {
        field,
        expected: "an object",
    })
}

fn array<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<&'a mut Vec<Value>, SpecError> {
    let v = parent.entry(key).or_insert_with(|| json!([]));
    if v.is_null() {
        *v = json!([]);
    }
    v.as_array_mut().ok_or(SpecError::Shape {
        field,
        expected: "an array",
    })
}

/// Adds the plan to a config: its mounts (and the container's linker
/// cache, `ld_cache`, bound over `/etc/ld.so.cache`), its devices with
/// their device cgroup rules, and its environment.
pub fn edit(
    config: &mut Value,
    tweaks: &Tweaks,
    ld_cache: Option<&Path>,
) -> Result<Edited, SpecError> {
    let mut out = Edited::default();
    let root = object(config, "the document")?;
    {
        let mounts = array(root, "mounts", "mounts")?;
        for m in &tweaks.mounts {
            add_mount(mounts, m);
            out.mounts += 1;
        }
        if let Some(f) = ld_cache {
            add_mount(
                mounts,
                &Mount {
                    source: f.to_owned(),
                    destination: super::LD_CACHE.into(),
                    readonly: true,
                    reason: "the container's linker cache, written by hpcc".into(),
                },
            );
            out.mounts += 1;
        }
    }
    if !tweaks.devices.is_empty() {
        let linux = object(root.entry("linux").or_insert_with(|| json!({})), "linux")?;
        {
            let devices = array(linux, "devices", "linux.devices")?;
            for d in &tweaks.devices {
                add_device(devices, d);
                out.devices += 1;
            }
        }
    }
    // A device under a runtime without root has no rule: the runtime binds
    // its node, and the cgroup the container runs in confines it.
    if tweaks.devices.iter().any(|d| d.cgroup_rule) {
        let linux = object(root.entry("linux").or_insert_with(|| json!({})), "linux")?;
        let resources = object(
            linux.entry("resources").or_insert_with(|| json!({})),
            "linux.resources",
        )?;
        let rules = array(resources, "devices", "linux.resources.devices")?;
        for d in tweaks.devices.iter().filter(|d| d.cgroup_rule) {
            // Allow rules are evaluated in order, the last match wins: an
            // allow appended after the default deny-all grants it.
            let rule = json!({
                "allow": true,
                "type": d.kind.to_string(),
                "major": d.major,
                "minor": d.minor,
                "access": d.access,
            });
            rules.retain(|x| *x != rule);
            rules.push(rule);
        }
    }
    if !tweaks.env.is_empty() {
        let process = object(
            root.entry("process").or_insert_with(|| json!({})),
            "process",
        )?;
        let env = array(process, "env", "process.env")?;
        for e in &tweaks.env {
            set_env(env, e);
            out.env += 1;
        }
    }
    Ok(out)
}

/// Adds a Slurm step's wiring to a config: the node's namespaces first
/// (with the mounts that change with them, [`super::namespaces::apply`]),
/// then its mounts and variables as any plan's. Returns the namespace
/// edits made, for the log.
pub fn edit_slurm(
    config: &mut Value,
    wiring: &SlurmWiring,
) -> Result<Vec<super::namespaces::NsEdit>, SpecError> {
    let ns = super::namespaces::apply(config, &wiring.namespaces);
    let tweaks = Tweaks {
        mounts: wiring.mounts.clone(),
        env: wiring.env.clone(),
        ..Tweaks::default()
    };
    edit(config, &tweaks, None)?;
    Ok(ns)
}

fn add_mount(mounts: &mut Vec<Value>, m: &Mount) {
    let dest = m.destination.to_string_lossy();
    mounts.retain(|x| x.get("destination").and_then(Value::as_str) != Some(dest.as_ref()));
    mounts.push(json!({
        "destination": dest,
        "type": "bind",
        "source": m.source,
        "options": bind_options(m.readonly),
    }));
}

fn add_device(devices: &mut Vec<Value>, d: &Device) {
    let path = d.path.to_string_lossy();
    devices.retain(|x| x.get("path").and_then(Value::as_str) != Some(path.as_ref()));
    devices.push(json!({
        "path": path,
        "type": d.kind.to_string(),
        "major": d.major,
        "minor": d.minor,
        "fileMode": 0o666,
        "uid": 0,
        "gid": 0,
    }));
}

/// Sets `NAME=value` in an OCI environment list, replacing any earlier
/// value of that name.
pub fn set_env(env: &mut Vec<Value>, e: &EnvVar) {
    let prefix = format!("{}=", e.name);
    env.retain(|x| !x.as_str().is_some_and(|s| s.starts_with(&prefix)));
    env.push(json!(format!("{}={}", e.name, e.value)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Device;

    fn tweaks() -> Tweaks {
        Tweaks {
            mounts: vec![Mount {
                source: "/usr/lib/x86_64-linux-gnu/libmpich.so.12".into(),
                destination: "/usr/lib/x86_64-linux-gnu/libmpich.so.12".into(),
                readonly: true,
                reason: "t".into(),
            }],
            devices: vec![Device {
                path: "/dev/nvidia0".into(),
                host_path: "/dev/nvidia0".into(),
                kind: 'c',
                major: 195,
                minor: 0,
                access: "rwm".into(),
                cgroup_rule: true,
                reason: "t".into(),
            }],
            env: vec![EnvVar {
                name: "FI_PROVIDER_PATH".into(),
                value: "/usr/lib/x86_64-linux-gnu/libfabric".into(),
                reason: "t".into(),
            }],
            ld_cache: vec![],
        }
    }

    #[test]
    fn mounts_devices_rules_env_and_cache_are_added() {
        let mut c = json!({
            "ociVersion": "1.0.2",
            "process": {"env": ["PATH=/bin", "FI_PROVIDER_PATH=/old"]},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}},
            "x-newer-field": {"kept": true}
        });
        let e = edit(
            &mut c,
            &tweaks(),
            Some(Path::new("/run/hpcc/ldcache/ab.cache")),
        )
        .unwrap();
        assert_eq!(
            e,
            Edited {
                mounts: 2,
                devices: 1,
                env: 1
            }
        );
        let mounts = c["mounts"].as_array().unwrap();
        assert_eq!(mounts[0]["type"], "proc");
        assert_eq!(
            mounts[1]["options"],
            json!(["rbind", "ro", "nosuid", "nodev", "rprivate"])
        );
        assert_eq!(mounts[2]["destination"], "/etc/ld.so.cache");
        assert_eq!(mounts[2]["source"], "/run/hpcc/ldcache/ab.cache");
        assert_eq!(c["linux"]["devices"][0]["major"], 195);
        let rules = c["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules[0]["allow"], false);
        assert_eq!(
            rules[1],
            json!({"allow": true, "type": "c", "major": 195, "minor": 0, "access": "rwm"})
        );
        assert_eq!(
            c["process"]["env"],
            json!([
                "PATH=/bin",
                "FI_PROVIDER_PATH=/usr/lib/x86_64-linux-gnu/libfabric"
            ])
        );
        assert_eq!(c["x-newer-field"]["kept"], true);
    }

    #[test]
    fn a_device_without_a_cgroup_rule_is_listed_and_given_no_rule() {
        let mut t = tweaks();
        t.devices[0].cgroup_rule = false;
        let mut c = json!({"linux": {"namespaces": [{"type": "user"}]}});
        edit(&mut c, &t, None).unwrap();
        assert_eq!(c["linux"]["devices"][0]["path"], "/dev/nvidia0");
        assert!(c["linux"].get("resources").is_none(), "{c}");
    }

    #[test]
    fn editing_twice_gives_the_same_config() {
        let mut c = json!({"ociVersion": "1.0.2"});
        let f = Path::new("/run/hpcc/ldcache/ab.cache");
        edit(&mut c, &tweaks(), Some(f)).unwrap();
        let once = c.clone();
        edit(&mut c, &tweaks(), Some(f)).unwrap();
        assert_eq!(c, once);
    }

    #[test]
    fn a_config_of_the_wrong_shape_is_an_error_naming_the_field() {
        let mut c = json!({"mounts": "nope"});
        let e = edit(&mut c, &tweaks(), None).unwrap_err();
        assert_eq!(e.to_string(), "config.json: mounts is not an array");
        let mut c = json!(["not", "an", "object"]);
        assert!(edit(&mut c, &tweaks(), None).is_err());
    }
}
