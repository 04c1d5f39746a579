use super::*;
use crate::launch::decide_with;
use crate::plan::UserRequest;
use crate::testutil::{node, policy_mpich, with_mpich, TempDir};
use crate::tweaks::host::RealHost;
use std::os::unix::fs::MetadataExt;

const HOST_MPICH: &str = "/usr/lib/x86_64-linux-gnu/libmpich.so.12";
const HOST_FABRIC: &str = "/usr/lib/x86_64-linux-gnu/libfabric.so.1";
const HOST_UCX: &str = "/usr/lib/x86_64-linux-gnu/ucx";

fn host() -> RealHost {
    RealHost::uncached(Path::new("/etc/ld.so.cache"))
}

fn site_policy() -> Policy {
    let mut p = policy_mpich(&[HOST_MPICH]);
    p.libfabric = Some(hpcc_config::Libfabric {
        library: HOST_FABRIC.into(),
        providers: None,
        dependencies: vec![],
        nccl_plugin: None,
        nccl_net: None,
    });
    p.ucx = Some(hpcc_config::Ucx {
        libraries: ["libucp.so.0", "libuct.so.0", "libucs.so.0", "libucm.so.0"]
            .iter()
            .map(|l| PathBuf::from("/usr/lib/x86_64-linux-gnu").join(l))
            .collect(),
        modules: Some(HOST_UCX.into()),
    });
    p
}

/// The plan hpcc makes for an image annotated for `mode` (and MPICH), no
/// rootfs inspected: what `hpcc match --plan --annotations` prints.
fn annotated_plan(policy: &Policy, mode: &str) -> Tweaks {
    let ann: BTreeMap<String, String> = [
        (
            "org.supercontainers.hardware.cpu.optimized.version",
            "icelake",
        ),
        ("org.supercontainers.mpi.implementation", "mpich"),
        ("org.supercontainers.mpi.portability.mode", mode),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let ctx = LaunchContext::from_annotations("c", ann);
    let p = decide_with(
        &ctx,
        &with_mpich(node("icelake")),
        policy,
        &UserRequest::default(),
        &host(),
    )
    .unwrap();
    assert!(p.decision.allows_start(), "{:#?}", p.verdict);
    p.tweaks
}

fn offer<'a>(o: &'a Offers, q: &str) -> &'a Offer {
    o.offers
        .iter()
        .find(|x| x.qualified() == q)
        .unwrap_or_else(|| panic!("{q} not offered: {o:#?}"))
}

#[test]
fn the_mpi_device_carries_the_plans_mounts_env_and_cache_entries() {
    let policy = policy_mpich(&[HOST_MPICH]);
    let o = offers(&with_mpich(node("icelake")), &policy, &host()).unwrap();
    assert!(o.withheld.is_empty(), "{:#?}", o.withheld);
    let mpich = offer(&o, "hpcc.io/mpi=mpich");
    // The same planner, the same node, the same policy: the same tweaks
    // as the plan of an image annotated for mpi_replace.
    let plan = annotated_plan(&policy, "mpi_replace");
    assert_eq!(mpich.tweaks, plan);
    assert!(!plan.ld_cache.is_empty() && !plan.mounts.is_empty());
    assert!(plan
        .mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev/hpcc/lib/mpich/libmpich.so.12")));

    let specs = specs(&o.offers, &HookRef::default());
    assert_eq!(specs.len(), 1);
    let s = &specs[0];
    assert_eq!(
        (s.kind.as_str(), s.cdi_version.as_str()),
        ("hpcc.io/mpi", "0.3.0")
    );
    let e = &s.devices[0].container_edits;
    assert_eq!(s.devices[0].name, "mpich");
    let spec_mounts: Vec<(String, String)> = e
        .mounts
        .iter()
        .map(|m| (m.host_path.clone(), m.container_path.clone()))
        .collect();
    let plan_mounts: Vec<(String, String)> = plan
        .mounts
        .iter()
        .map(|m| {
            (
                m.source.display().to_string(),
                m.destination.display().to_string(),
            )
        })
        .collect();
    assert_eq!(spec_mounts, plan_mounts);
    assert!(e
        .mounts
        .iter()
        .all(|m| m.options == ["ro", "nosuid", "nodev", "bind"]));
    assert_eq!(e.env, ["MPICH_TEST=1"]);
    // The linker cache: one hook, this very device named in its argv.
    assert_eq!(e.hooks.len(), 1);
    let h = &e.hooks[0];
    assert_eq!(h.hook_name, "createRuntime");
    assert_eq!(h.path, DEFAULT_HOOK);
    assert_eq!(cdi_request(&h.args), ["hpcc.io/mpi=mpich"]);
    assert!(h.args.contains(&"--config=/etc/hpcc/hook.toml".to_string()));
    assert!(h.env.iter().all(|v| v.starts_with("PATH=")));
}

#[test]
fn fabric_and_ucx_devices_are_their_plans_too() {
    let policy = site_policy();
    let o = offers(&with_mpich(node("icelake")), &policy, &host()).unwrap();
    let fabric = offer(&o, "hpcc.io/fabric=libfabric");
    let ucx = offer(&o, "hpcc.io/ucx=host");
    let lf = crate::tweaks::plan(
        &LaunchContext::from_annotations("c", BTreeMap::new()),
        &with_mpich(node("icelake")),
        &policy,
        &Selection {
            libfabric: true,
            ..Default::default()
        },
        &host(),
        None,
    )
    .unwrap();
    assert_eq!(fabric.tweaks, lf.tweaks);
    assert!(fabric
        .tweaks
        .mounts
        .iter()
        .any(|m| m.destination == Path::new("/dev/hpcc/lib/libfabric/libfabric.so.1")));
    // UCX: its modules directory at the host's path, UCX_MODULE_DIR set.
    assert!(ucx
        .tweaks
        .mounts
        .iter()
        .any(|m| m.destination == Path::new(HOST_UCX)));
    assert!(ucx
        .tweaks
        .env
        .iter()
        .any(|e| e.name == "UCX_MODULE_DIR" && e.value == HOST_UCX));
    let specs = specs(&o.offers, &HookRef::default());
    let kinds: Vec<&str> = specs.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["hpcc.io/fabric", "hpcc.io/mpi", "hpcc.io/ucx"]);
    let ucx_spec = &specs[2].devices[0].container_edits;
    assert!(ucx_spec.env.contains(&format!("UCX_MODULE_DIR={HOST_UCX}")));
}

#[test]
fn what_the_policy_disables_or_cannot_plan_is_withheld() {
    let mut policy = site_policy();
    policy.tweaks.ucx_replace = false;
    policy.libfabric = Some(hpcc_config::Libfabric {
        // Not a libfabric: the planner refuses it (hpcc's error).
        library: HOST_MPICH.into(),
        providers: None,
        dependencies: vec![],
        nccl_plugin: None,
        nccl_net: None,
    });
    let o = offers(&with_mpich(node("icelake")), &policy, &host()).unwrap();
    // MPICH is still offered; libfabric is withheld with the planner's
    // reason, UCX by the policy.
    let offered: Vec<String> = o.offers.iter().map(Offer::qualified).collect();
    assert_eq!(offered, ["hpcc.io/mpi=mpich"]);
    assert_eq!(o.withheld[0].device, "hpcc.io/fabric=libfabric");
    assert!(
        o.withheld[0].reason.starts_with("cannot be planned:")
            && o.withheld[0].reason.contains("libfabric.library"),
        "{:?}",
        o.withheld
    );
    assert_eq!(o.withheld[1].device, "hpcc.io/ucx=host");
    assert_eq!(o.withheld[1].reason, "policy tweaks.ucx_replace = false");
    let mut bad = policy_mpich(&[HOST_MPICH]);
    let m = bad.mpi.remove("mpich").unwrap();
    bad.mpi.insert("-x".into(), m);
    assert!(matches!(
        offers(&node("icelake"), &bad, &host()),
        Err(CdiOfferError::DeviceName(n)) if n == "-x"
    ));
}

#[test]
fn version_is_the_lowest_the_fields_need() {
    let policy = policy_mpich(&[HOST_MPICH]);
    let o = offers(&with_mpich(node("icelake")), &policy, &host()).unwrap();
    let mut offers = o.offers.clone();
    assert_eq!(specs(&offers, &HookRef::default())[0].cdi_version, "0.3.0");
    // A device name starting with a digit needs 0.5.0.
    offers[0].device = "4x".into();
    assert_eq!(specs(&offers, &HookRef::default())[0].cdi_version, "0.5.0");
    // So does a device node whose host path differs.
    offers[0].device = "mpich".into();
    offers[0].tweaks.devices.push(crate::plan::Device {
        path: "/dev/cxi0".into(),
        host_path: "/dev/cxi1".into(),
        kind: 'c',
        major: 240,
        minor: 1,
        access: "rwm".into(),
        cgroup_rule: true,
        reason: "test".into(),
    });
    assert_eq!(specs(&offers, &HookRef::default())[0].cdi_version, "0.5.0");
    offers[0].tweaks.devices[0].host_path = "/dev/cxi0".into();
    assert_eq!(specs(&offers, &HookRef::default())[0].cdi_version, "0.3.0");
}

/// The CDI project's schema, vendored from its repository.
fn cdi_validator() -> jsonschema::Validator {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("schema/schema.json")).unwrap();
    let defs: serde_json::Value = serde_json::from_str(include_str!("schema/defs.json")).unwrap();
    // schema.json names defs.json relatively; both get one base.
    let mut schema = schema;
    schema["$id"] = serde_json::Value::String("https://cdi.invalid/schema.json".into());
    let registry = jsonschema::Registry::new()
        .add("https://cdi.invalid/defs.json", defs)
        .unwrap()
        .prepare()
        .unwrap();
    jsonschema::options()
        .with_registry(&registry)
        .build(&schema)
        .unwrap()
}

#[test]
fn generated_specs_are_valid_by_the_cdi_schema() {
    let v = cdi_validator();
    let o = offers(&with_mpich(node("icelake")), &site_policy(), &host()).unwrap();
    let specs = specs(&o.offers, &HookRef::default());
    assert_eq!(specs.len(), 3);
    for s in &specs {
        let json = serde_json::to_value(s).unwrap();
        let errors: Vec<String> = v.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", s.kind);
    }
    // The validator is not a formality: a mount without its host path and
    // a hook without its path are refused.
    let mut bad = serde_json::to_value(&specs[1]).unwrap();
    bad["devices"][0]["containerEdits"]["mounts"][0]
        .as_object_mut()
        .unwrap()
        .remove("hostPath");
    assert!(!v.is_valid(&bad));
    let mut bad = serde_json::to_value(&specs[1]).unwrap();
    bad["devices"][0]["containerEdits"]["hooks"][0]
        .as_object_mut()
        .unwrap()
        .remove("path");
    assert!(!v.is_valid(&bad));
    // And the reader hpcc has for CDI specs takes them back.
    for s in &specs {
        let text = serde_json::to_string(s).unwrap();
        let back: crate::tweaks::cdi::CdiSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back.kind, s.kind);
    }
}

#[test]
fn specs_are_written_atomically_and_stale_kinds_removed() {
    let t = TempDir::new("cdi-write");
    let dir = t.0.join("cdi");
    let o = offers(&with_mpich(node("icelake")), &site_policy(), &host()).unwrap();
    let all = specs(&o.offers, &HookRef::default());
    let files = write_specs(&dir, &all).unwrap();
    assert_eq!(files.len(), 3);
    for f in &files {
        let md = std::fs::metadata(f).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o644, "{}", f.display());
        if unsafe_euid_is_root() {
            assert_eq!((md.uid(), md.gid()), (0, 0));
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "hpcc.io-fabric.json",
            "hpcc.io-mpi.json",
            "hpcc.io-ucx.json"
        ]
    );
    // Another vendor's spec is left alone; hpcc's UCX spec goes when UCX
    // is no longer offered.
    std::fs::write(dir.join("vendor.com-gpu.json"), "{}").unwrap();
    write_specs(&dir, &all[..2]).unwrap();
    assert!(!dir.join("hpcc.io-ucx.json").exists());
    assert!(dir.join("vendor.com-gpu.json").exists());
    let back: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("hpcc.io-mpi.json")).unwrap()).unwrap();
    assert_eq!(back["kind"], "hpcc.io/mpi");
}

fn unsafe_euid_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn the_hook_adds_only_entries_whose_mount_the_engine_made() {
    let policy = policy_mpich(&[HOST_MPICH]);
    let o = offers(&with_mpich(node("icelake")), &policy, &host()).unwrap();
    let mpich = offer(&o, "hpcc.io/mpi=mpich");
    let mounts: Vec<(PathBuf, PathBuf)> = mpich
        .tweaks
        .mounts
        .iter()
        .map(|m| (m.source.clone(), m.destination.clone()))
        .collect();
    let req = ["hpcc.io/mpi=mpich".to_string()];
    let (e, notes) = cache_entries_for(&o, &req, &mounts);
    assert_eq!(e, mpich.tweaks.ld_cache);
    assert!(notes.is_empty(), "{notes:?}");
    // One mount missing (a stale spec): its entry is left out, with a line.
    let (e, notes) = cache_entries_for(&o, &req, &mounts[1..]);
    assert_eq!(e.len() + 1, mpich.tweaks.ld_cache.len(), "{notes:?}");
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains("regenerate"), "{notes:?}");
    // A device the node does not offer adds nothing.
    let (e, notes) = cache_entries_for(&o, &["hpcc.io/ucx=host".to_string()], &mounts);
    assert!(e.is_empty());
    assert!(notes[0].contains("not offered"), "{notes:?}");
}
