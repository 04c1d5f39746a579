//! NVIDIA GPU exposure: the control and UVM device nodes, the node files of
//! the visible GPUs only, and the driver's user-space libraries found
//! through the host linker cache.
//!
//! Which GPUs are visible follows NVIDIA's container toolkit:
//! `NVIDIA_VISIBLE_DEVICES` of the container (`all`, `none` = driver but no
//! GPU, `void` or empty = nothing at all, or a list of indexes and `GPU-`
//! UUIDs); when it is unset, `CUDA_VISIBLE_DEVICES` (what Slurm sets for a
//! GPU allocation; `NoDevFiles` means none, and as in CUDA the list stops at
//! the first entry that names no GPU); when both are unset, every GPU (the
//! image declared CUDA, which is the request). The job's device cgroup is
//! enforced by the runtime and Slurm, not widened here: hpcc only adds
//! cgroup rules for the devices it exposes.
//!
//! Those variables are a request, not an allocation: podman copies an
//! image's `ENV` into `process.env` (NVIDIA's own images set
//! `NVIDIA_VISIBLE_DEVICES=all`). A requested GPU is exposed only when it
//! was allocated — its `/dev/nvidiaN` is already in `config.json`'s
//! `linux.devices`, or, in a Slurm step whose environment slurmstepd wrote,
//! the step's list names it — or when the policy allows it without
//! allocation (`[gpu] allowed = ["nvidia.com/gpu=*"]` on nodes given whole
//! to one job). The others are left out with a finding.

use super::{device, Inputs, Part};
use crate::fingerprint::NvidiaDevice;
use crate::matcher::{Check, Level};
use std::path::{Path, PathBuf};

/// The driver's libraries a CUDA program may load (compute only: no
/// graphics, no video). Absent ones are skipped.
pub const DRIVER_LIBRARIES: &[&str] = &[
    "libcuda.so.1",
    "libcudadebugger.so.1",
    "libnvidia-ml.so.1",
    "libnvidia-ptxjitcompiler.so.1",
    "libnvidia-nvvm.so.4",
    "libnvidia-opencl.so.1",
    "libnvidia-cfg.so.1",
    "libnvidia-allocator.so.1",
];

/// Driver binaries mounted at the same path when present.
pub const DRIVER_BINARIES: &[&str] = &["/usr/bin/nvidia-smi", "/usr/bin/nvidia-debugdump"];

/// Longest visible-devices list accepted.
const MAX_VISIBLE: usize = 64;

/// Which GPUs the container asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    /// Every GPU of the node.
    All,
    /// The driver (control devices, libraries) but no GPU.
    NoGpus,
    /// Nothing: no device, no library.
    Void,
    /// These indexes or UUIDs.
    List {
        /// Entries as written.
        entries: Vec<String>,
        /// From `CUDA_VISIBLE_DEVICES` (CUDA's rules: stop at the first
        /// unknown entry) rather than `NVIDIA_VISIBLE_DEVICES` (unknown
        /// entries are an error).
        cuda: bool,
    },
}

/// Reads the two variables (values of the container's environment).
pub fn parse_visible(nvidia: Option<&str>, cuda: Option<&str>) -> Visible {
    let list = |v: &str, cuda: bool| Visible::List {
        entries: v
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .take(MAX_VISIBLE)
            .collect(),
        cuda,
    };
    match (nvidia.map(str::trim), cuda.map(str::trim)) {
        (Some("" | "void"), _) => Visible::Void,
        (Some("none"), _) => Visible::NoGpus,
        (Some("all"), _) => Visible::All,
        (Some(v), _) => list(v, false),
        (None, Some("" | "NoDevFiles" | "none")) => Visible::NoGpus,
        (None, Some("all")) => Visible::All,
        (None, Some(v)) => list(v, true),
        (None, None) => Visible::All,
    }
}

fn matches(entry: &str, d: &NvidiaDevice) -> bool {
    if entry.starts_with("GPU-") {
        d.uuid == entry
    } else {
        entry.parse::<u32>().is_ok_and(|i| i == d.index)
    }
}

/// The devices a [`Visible`] selects, in the order asked; an error names
/// the entry that selects nothing.
pub fn select<'a>(
    v: &Visible,
    devices: &'a [NvidiaDevice],
) -> Result<Vec<&'a NvidiaDevice>, String> {
    match v {
        Visible::All => Ok(devices.iter().collect()),
        Visible::NoGpus | Visible::Void => Ok(vec![]),
        Visible::List { entries, cuda } => {
            let mut out: Vec<&NvidiaDevice> = Vec::new();
            for e in entries {
                match devices.iter().find(|d| matches(e, d)) {
                    Some(d) if !out.iter().any(|o| o.index == d.index) => out.push(d),
                    Some(_) => {}
                    None if *cuda => break,
                    None => {
                        return Err(format!(
                            "NVIDIA_VISIBLE_DEVICES names {e:?}, which is none of this node's GPUs ({})",
                            devices
                                .iter()
                                .map(|d| format!("{} {}", d.index, d.uuid))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    }
                }
            }
            Ok(out)
        }
    }
}

/// Whether a GPU the container asks for may be exposed: the policy allows
/// it, the engine allocated its node, or the scheduler's own environment
/// named it.
fn granted(input: &Inputs<'_>, vis: &Visible, d: &NvidiaDevice) -> bool {
    const KIND: &str = "nvidia.com/gpu";
    let minor = u64::from(d.minor_number.unwrap_or(d.index));
    input.policy.gpu.allows(KIND, &d.index.to_string())
        || input.policy.gpu.allows(KIND, &d.uuid)
        || input
            .ctx
            .allocated_devices
            .iter()
            .any(|a| a.is('c', NVIDIA_MAJOR, minor))
        || (input.ctx.env_from_scheduler && matches!(vis, Visible::List { .. }))
}

/// The major number of `/dev/nvidiaN`.
pub const NVIDIA_MAJOR: u64 = 195;

/// Plans NVIDIA exposure. A node without an NVIDIA driver plans nothing
/// and is no error (the matcher already said the image cannot have a GPU).
pub(crate) fn plan(input: &Inputs<'_>) -> Part {
    let mut part = Part::default();
    let Some(nv) = &input.node.gpu.nvidia else {
        return part;
    };
    let vis = parse_visible(
        input.ctx.env("NVIDIA_VISIBLE_DEVICES"),
        input.ctx.env("CUDA_VISIBLE_DEVICES"),
    );
    if vis == Visible::Void {
        part.finding(
            Check::Gpu,
            Level::Ok,
            "NVIDIA_VISIBLE_DEVICES is void or empty: no GPU and no driver library exposed".into(),
        );
        return part;
    }
    let asked = match select(&vis, &nv.devices) {
        Ok(s) => s,
        Err(e) => {
            part.finding(Check::Gpu, Level::Fatal, e);
            return part;
        }
    };
    let (selected, refused): (Vec<&NvidiaDevice>, Vec<&NvidiaDevice>) =
        asked.iter().copied().partition(|d| granted(input, &vis, d));
    if !refused.is_empty() {
        part.finding(
            Check::Gpu,
            Level::Degraded,
            format!(
                "GPU(s) {} asked for but not allocated to this container (config.json linux.devices{}) and not allowed by the policy ([gpu] allowed = [\"nvidia.com/gpu=...\"]): not exposed",
                refused
                    .iter()
                    .map(|d| format!("{} {}", d.index, d.uuid))
                    .collect::<Vec<_>>()
                    .join(", "),
                if input.ctx.env_from_scheduler {
                    ", the step's CUDA_VISIBLE_DEVICES"
                } else {
                    ""
                }
            ),
        );
        if selected.is_empty() {
            // Nothing left to use the driver with: no control device, no
            // library either.
            return part;
        }
    }
    let host = input.host;
    let mut missing = Vec::new();
    for ctl in ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"] {
        let p = Path::new(ctl);
        match device(host, p, p, "rwm", "NVIDIA driver control device".into()) {
            Some(d) => part.tweaks.devices.push(d),
            // UVM tools is optional; the others are loaded on demand by
            // nvidia-modprobe, which hpcc does not run.
            None if ctl != "/dev/nvidia-uvm-tools" => missing.push(ctl.to_owned()),
            None => {}
        }
    }
    for d in &selected {
        let minor = d.minor_number.unwrap_or(d.index);
        let p = PathBuf::from(format!("/dev/nvidia{minor}"));
        match device(
            host,
            &p,
            &p,
            "rwm",
            format!("GPU {} {} ({})", d.index, d.uuid, d.name),
        ) {
            Some(dev) => part.tweaks.devices.push(dev),
            None => missing.push(p.display().to_string()),
        }
    }
    if !missing.is_empty() {
        part.finding(
            Check::Gpu,
            Level::Degraded,
            format!(
                "NVIDIA device nodes missing on the host: {}; the container may not reach its GPUs",
                missing.join(", ")
            ),
        );
    }
    let dir = input.ctx.lib_root().join("nvidia");
    let versioned = [
        format!("libnvidia-gpucomp.so.{}", nv.driver_version),
        format!("libnvidia-pkcs11-openssl3.so.{}", nv.driver_version),
    ];
    let mut found_cuda = false;
    for soname in DRIVER_LIBRARIES
        .iter()
        .copied()
        .chain(versioned.iter().map(String::as_str))
    {
        if let Some(p) = host.find_library(soname) {
            found_cuda |= soname == "libcuda.so.1";
            part.mount(
                &p,
                dir.join(soname),
                format!("NVIDIA driver {} library", nv.driver_version),
            );
            part.ld_path(dir.clone());
        }
    }
    if !found_cuda {
        part.finding(
            Check::Gpu,
            Level::Degraded,
            "libcuda.so.1 is not in the host linker cache: CUDA programs in the container will not find the driver".into(),
        );
    }
    for b in DRIVER_BINARIES {
        let p = Path::new(b);
        if host.exists(p) {
            part.mount(p, p.to_owned(), "NVIDIA driver tool".into());
        }
    }
    part
}

#[cfg(test)]
mod tests {
    use super::super::host::fake::{lib, FakeHost};
    use super::super::host::DeviceId;
    use super::*;
    use crate::fingerprint::NvidiaFingerprint;
    use crate::matcher::Selection;
    use crate::testutil::ctx;
    use crate::testutil::node;
    use crate::version::Version;
    use hpcc_config::Policy;
    use std::path::PathBuf;

    fn gpus(n: u32) -> Vec<NvidiaDevice> {
        (0..n)
            .map(|i| NvidiaDevice {
                index: i,
                name: "NVIDIA A100".into(),
                uuid: format!("GPU-{i}aaa"),
                compute_capability: (8, 0),
                minor_number: Some(i),
            })
            .collect()
    }

    #[test]
    fn visible_devices_parsing() {
        assert_eq!(parse_visible(None, None), Visible::All);
        assert_eq!(parse_visible(Some("all"), Some("1")), Visible::All);
        assert_eq!(parse_visible(Some("none"), None), Visible::NoGpus);
        assert_eq!(parse_visible(Some("void"), None), Visible::Void);
        assert_eq!(parse_visible(Some(""), None), Visible::Void);
        assert_eq!(parse_visible(None, Some("NoDevFiles")), Visible::NoGpus);
        assert_eq!(
            parse_visible(Some("0, GPU-1aaa"), None),
            Visible::List {
                entries: vec!["0".into(), "GPU-1aaa".into()],
                cuda: false
            }
        );
        let g = gpus(4);
        let idx = |v: &Visible| -> Result<Vec<u32>, String> {
            select(v, &g).map(|s| s.iter().map(|d| d.index).collect())
        };
        assert_eq!(
            idx(&parse_visible(Some("2,GPU-0aaa,2"), None)).unwrap(),
            [2, 0]
        );
        assert!(idx(&parse_visible(Some("7"), None))
            .unwrap_err()
            .contains("\"7\""));
        // CUDA's rule: the list stops at the first entry that is no GPU.
        assert_eq!(idx(&parse_visible(None, Some("1,-1,2"))).unwrap(), [1]);
        assert_eq!(idx(&parse_visible(None, None)).unwrap(), [0, 1, 2, 3]);
        assert!(idx(&parse_visible(Some("none"), None)).unwrap().is_empty());
    }

    fn nv_host() -> FakeHost {
        let mut h = FakeHost::default();
        let dev = |minor| DeviceId {
            kind: 'c',
            major: 195,
            minor,
        };
        h.devices.insert("/dev/nvidiactl".into(), dev(255));
        h.devices.insert(
            "/dev/nvidia-uvm".into(),
            DeviceId {
                kind: 'c',
                major: 508,
                minor: 0,
            },
        );
        for i in 0..4 {
            h.devices.insert(format!("/dev/nvidia{i}").into(), dev(i));
        }
        h.add("/usr/lib/x86_64-linux-gnu", lib("libcuda.so.1", &[], &[]));
        h.add(
            "/usr/lib/x86_64-linux-gnu",
            lib("libnvidia-ml.so.1", &[], &[]),
        );
        h.add(
            "/usr/lib/x86_64-linux-gnu",
            lib("libnvidia-gpucomp.so.535.104.05", &[], &[]),
        );
        h.elves
            .insert("/usr/bin/nvidia-smi".into(), lib("x", &[], &[]));
        h
    }

    fn run(env: &[&str], nvidia: bool, h: &FakeHost) -> Part {
        let mut p = Policy::default();
        p.gpu.allowed = vec!["nvidia.com/gpu=*".into()];
        run_with(ctx(env, &[]), nvidia, h, &p)
    }

    fn run_with(c: crate::oci::LaunchContext, nvidia: bool, h: &FakeHost, p: &Policy) -> Part {
        let mut n = node("icelake");
        if nvidia {
            n.gpu.nvidia = Some(NvidiaFingerprint {
                driver_version: "535.104.05".into(),
                cuda_driver_version: Version::parse_prefix("12.2"),
                devices: gpus(4),
            });
        }
        let sel = Selection {
            nvidia_gpus: true,
            ..Default::default()
        };
        let input = Inputs {
            ctx: &c,
            node: &n,
            policy: p,
            selection: &sel,
            host: h,
            image: None,
        };
        plan(&input)
    }

    #[test]
    fn visible_gpus_only_with_host_numbers_and_driver_libs() {
        let h = nv_host();
        let part = run(&["NVIDIA_VISIBLE_DEVICES=1,3"], true, &h);
        assert!(!part.fatal());
        let devs: Vec<(String, u64, u64)> = part
            .tweaks
            .devices
            .iter()
            .map(|d| (d.path.display().to_string(), d.major, d.minor))
            .collect();
        assert_eq!(
            devs,
            [
                ("/dev/nvidiactl".into(), 195, 255),
                ("/dev/nvidia-uvm".into(), 508, 0),
                ("/dev/nvidia1".into(), 195, 1),
                ("/dev/nvidia3".into(), 195, 3),
            ]
        );
        assert!(part
            .tweaks
            .devices
            .iter()
            .all(|d| d.kind == 'c' && d.access == "rwm"));
        let dests = part.mount_destinations();
        assert_eq!(
            dests,
            [
                "/dev/hpcc/lib/nvidia/libcuda.so.1",
                "/dev/hpcc/lib/nvidia/libnvidia-ml.so.1",
                "/dev/hpcc/lib/nvidia/libnvidia-gpucomp.so.535.104.05",
                "/usr/bin/nvidia-smi",
            ]
        );
        assert_eq!(part.lib_dirs, [PathBuf::from("/dev/hpcc/lib/nvidia")]);
    }

    #[test]
    fn none_void_unknown_and_absent_driver() {
        let h = nv_host();
        let part = run(&["NVIDIA_VISIBLE_DEVICES=none"], true, &h);
        assert_eq!(part.tweaks.devices.len(), 2);
        assert!(!part.tweaks.mounts.is_empty());
        let part = run(&["NVIDIA_VISIBLE_DEVICES=void"], true, &h);
        assert!(part.tweaks.is_empty());
        let part = run(&["NVIDIA_VISIBLE_DEVICES=GPU-nope"], true, &h);
        assert!(part.fatal());
        assert!(part.tweaks.is_empty());
        // No driver on the node (this machine): nothing, and no error.
        let part = run(&[], false, &h);
        assert!(part.tweaks.is_empty() && part.findings.is_empty());
        // Driver fingerprinted but libraries and nodes gone: degraded, said.
        let part = run(&[], true, &FakeHost::default());
        assert!(part.tweaks.devices.is_empty());
        assert!(part
            .findings
            .iter()
            .any(|f| f.reason.contains("libcuda.so.1")));
        assert!(part
            .findings
            .iter()
            .any(|f| f.reason.contains("/dev/nvidiactl")));
    }

    #[test]
    fn the_image_asks_for_gpus_the_allocation_grants_them() {
        let h = nv_host();
        let none = Policy::default();
        let gpus_of = |part: &Part| -> Vec<String> {
            part.tweaks
                .devices
                .iter()
                .map(|d| d.path.display().to_string())
                .filter(|p| p.starts_with("/dev/nvidia") && p[11..].parse::<u32>().is_ok())
                .collect()
        };
        // The image's ENV says all, nothing allocated, nothing allowed:
        // nothing at all, and a finding naming the GPUs left out.
        let part = run_with(ctx(&["NVIDIA_VISIBLE_DEVICES=all"], &[]), true, &h, &none);
        assert!(part.tweaks.is_empty(), "{:#?}", part.tweaks);
        assert!(part.findings[0].reason.contains("GPU-3aaa"));
        assert!(part.findings[0].reason.contains("not exposed"));
        // The engine allocated /dev/nvidia2: that one only.
        let mut c = ctx(&["NVIDIA_VISIBLE_DEVICES=all"], &[]);
        c.allocated_devices = vec![crate::oci::AllocatedDevice {
            path: "/dev/nvidia2".into(),
            kind: 'c',
            major: 195,
            minor: 2,
        }];
        let part = run_with(c, true, &h, &none);
        assert_eq!(gpus_of(&part), ["/dev/nvidia2"]);
        // A Slurm step's own list is the allocation; the default "all" is not.
        let mut c = ctx(&["CUDA_VISIBLE_DEVICES=1"], &[]);
        c.env_from_scheduler = true;
        assert_eq!(gpus_of(&run_with(c, true, &h, &none)), ["/dev/nvidia1"]);
        let mut c = ctx(&[], &[]);
        c.env_from_scheduler = true;
        assert!(gpus_of(&run_with(c, true, &h, &none)).is_empty());
        // The policy allows one by index, another by UUID.
        let mut p = Policy::default();
        p.gpu.allowed = vec!["nvidia.com/gpu=0".into(), "nvidia.com/gpu=GPU-3aaa".into()];
        let part = run_with(ctx(&[], &[]), true, &h, &p);
        assert_eq!(gpus_of(&part), ["/dev/nvidia0", "/dev/nvidia3"]);
    }
}
