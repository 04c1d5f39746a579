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
//!
//! In a Slurm step ([`slurm_gpus`]), the step's own variables decide, and
//! which of them names the node's devices matters. `SLURM_STEP_GPUS` (and
//! `SLURM_JOB_GPUS` for the batch step) hold gres.conf's device numbers:
//! the `N` of `/dev/nvidiaN`, its minor number. `CUDA_VISIBLE_DEVICES` and
//! `GPU_DEVICE_ORDINAL` hold the same numbers without `ConstrainDevices`,
//! but under `ConstrainDevices=yes` Slurm renumbers them from 0 within the
//! step (its cgroup hides the others, so CUDA counts from 0): there they
//! are positions in the step's list, never device numbers. The container
//! gets the step's device nodes only, so CUDA in it counts from 0 too:
//! its `CUDA_VISIBLE_DEVICES` is rewritten to those positions.

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
/// it, or the engine allocated its node. (A Slurm step's own GPU variables
/// are its allocation, read by [`slurm_gpus`]; in a step that has none of
/// them, a `NVIDIA_VISIBLE_DEVICES` in its environment is the user's, and
/// grants nothing.)
fn granted(input: &Inputs<'_>, d: &NvidiaDevice) -> bool {
    const KIND: &str = "nvidia.com/gpu";
    let minor = u64::from(d.minor_number.unwrap_or(d.index));
    input.policy.gpu.allows(KIND, &d.index.to_string())
        || input.policy.gpu.allows(KIND, &d.uuid)
        || input
            .ctx
            .allocated_devices
            .iter()
            .any(|a| a.is('c', NVIDIA_MAJOR, minor))
}

/// The major number of `/dev/nvidiaN`.
pub const NVIDIA_MAJOR: u64 = 195;

/// The variables of a Slurm step that name the node's GPUs by device
/// number, in the order they are trusted.
pub const SLURM_GLOBAL: &[&str] = &["SLURM_STEP_GPUS", "SLURM_JOB_GPUS"];
/// Slurm's step ids from here up are its special steps (batch
/// 0xfffffffe, extern, interactive, pending); below, a numbered `srun`
/// step.
const SLURM_SPECIAL_STEPS: u32 = 0xffff_fff0;
/// The variables that name the task's GPUs as CUDA counts them.
pub const SLURM_LOCAL: &[&str] = &["CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL"];

/// A Slurm step's GPUs, as its environment gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmGpus<'a> {
    /// The step's GPUs on this node, in Slurm's order: their device nodes
    /// and cgroup rules go to the container.
    pub exposed: Vec<&'a NvidiaDevice>,
    /// The task's own GPUs among them (`CUDA_VISIBLE_DEVICES`), all of
    /// them when the task has no narrower list.
    pub task: Vec<&'a NvidiaDevice>,
    /// What named them, as `NAME=value` (for findings).
    pub source: String,
    /// What could not be mapped, one sentence each.
    pub problems: Vec<String>,
}

/// The device number Slurm gives a GPU: its minor number (gres.conf's
/// `File=/dev/nvidiaN`), NVML's index when the fingerprint has none.
fn dev_num(d: &NvidiaDevice) -> u32 {
    d.minor_number.unwrap_or(d.index)
}

fn entries(v: &str) -> Vec<&str> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .take(MAX_VISIBLE)
        .collect()
}

fn no_devices(v: &str) -> bool {
    matches!(v.trim(), "" | "NoDevFiles" | "none")
}

fn minors(devices: &[NvidiaDevice]) -> String {
    devices
        .iter()
        .map(|d| format!("/dev/nvidia{}", dev_num(d)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Slurm step's GPUs from its environment (`None` when it names none
/// of the variables: not a GPU step). `constrained` is Slurm's
/// `ConstrainDevices=yes` with a cgroup task plugin: `CUDA_VISIBLE_DEVICES`
/// then counts from 0 within the step.
pub fn slurm_gpus<'a>(
    env: impl Fn(&str) -> Option<&'a str>,
    constrained: bool,
    devices: &'a [NvidiaDevice],
) -> Option<SlurmGpus<'a>> {
    // SLURM_STEP_GPUS is the step's allocation whenever it is there, an
    // empty one included (a step given no GPU). SLURM_JOB_GPUS is the
    // batch (or interactive) step's: srun copies it into every step of
    // the job, so a numbered step without a GPU would inherit the batch
    // node's GPUs through it.
    let regular_step = env("SLURM_STEP_ID")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .is_some_and(|id| id < SLURM_SPECIAL_STEPS);
    let global = match env(SLURM_GLOBAL[0]) {
        Some(v) => Some((SLURM_GLOBAL[0], v)),
        None if regular_step => None,
        None => env(SLURM_GLOBAL[1])
            .filter(|v| !v.trim().is_empty())
            .map(|v| (SLURM_GLOBAL[1], v)),
    };
    let local = SLURM_LOCAL
        .iter()
        .find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)));
    let mut out = SlurmGpus {
        exposed: vec![],
        task: vec![],
        source: String::new(),
        problems: vec![],
    };
    let by_num = |e: &str| -> Option<&'a NvidiaDevice> {
        let n = e.parse::<u32>().ok()?;
        devices.iter().find(|d| dev_num(d) == n)
    };
    match (global, local) {
        (Some((g, gv)), _) if !no_devices(gv) => {
            out.source = format!("{g}={gv}");
            for e in entries(gv) {
                match by_num(e) {
                    Some(d) if !out.exposed.iter().any(|x| x.index == d.index) => {
                        out.exposed.push(d)
                    }
                    Some(_) => {}
                    None => out.problems.push(format!(
                        "{g}={gv} names {e:?}, which is no device of this node ({}): gres.conf and the driver disagree",
                        minors(devices)
                    )),
                }
            }
            out.task = match local {
                None => out.exposed.clone(),
                Some((_, lv)) if no_devices(lv) => vec![],
                Some((l, lv)) => {
                    let mut task: Vec<&NvidiaDevice> = Vec::new();
                    for e in entries(lv) {
                        let d = if e.starts_with("GPU-") {
                            out.exposed.iter().copied().find(|d| d.uuid == e)
                        } else if constrained {
                            e.parse::<usize>()
                                .ok()
                                .and_then(|i| out.exposed.get(i).copied())
                        } else {
                            by_num(e).filter(|d| out.exposed.iter().any(|x| x.index == d.index))
                        };
                        match d {
                            Some(d) if !task.iter().any(|x| x.index == d.index) => task.push(d),
                            Some(_) => {}
                            None => {
                                // CUDA's rule: the list stops at the first
                                // entry that names no visible GPU.
                                out.problems.push(format!(
                                    "{l}={lv}: {e:?} is none of the step's GPUs ({}{}); the task's list stops there, as CUDA's does",
                                    out.source,
                                    if constrained { ", counted from 0 under ConstrainDevices=yes" } else { "" }
                                ));
                                break;
                            }
                        }
                    }
                    task
                }
            };
        }
        (Some((g, gv)), _) => out.source = format!("{g}={gv}"),
        (None, Some((l, lv))) => {
            out.source = format!("{l}={lv}");
            if no_devices(lv) {
                return Some(out);
            }
            if constrained {
                out.problems.push(format!(
                    "{l}={lv} is counted from 0 within the step (ConstrainDevices=yes), and neither SLURM_STEP_GPUS nor SLURM_JOB_GPUS says which of the node's GPUs ({}) it names: no GPU exposed",
                    minors(devices)
                ));
                return Some(out);
            }
            for e in entries(lv) {
                match by_num(e) {
                    Some(d) if !out.exposed.iter().any(|x| x.index == d.index) => {
                        out.exposed.push(d)
                    }
                    Some(_) => {}
                    None => {
                        out.problems.push(format!(
                            "{l}={lv} names {e:?}, which is no device of this node ({}); the list stops there, as CUDA's does",
                            minors(devices)
                        ));
                        break;
                    }
                }
            }
            out.task = out.exposed.clone();
        }
        (None, None) => return None,
    }
    Some(out)
}

/// The task's GPUs as CUDA numbers them in the container, which sees the
/// exposed ones only: positions in device-number order (the PCI order in
/// which the driver numbers them, as Slurm's own renumbering assumes).
pub fn container_numbers(s: &SlurmGpus<'_>) -> String {
    let mut nums: Vec<u32> = s.exposed.iter().map(|d| dev_num(d)).collect();
    nums.sort_unstable();
    s.task
        .iter()
        .filter_map(|t| nums.iter().position(|n| *n == dev_num(t)))
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Plans NVIDIA exposure. A node without an NVIDIA driver plans nothing
/// and is no error (the matcher already said the image cannot have a GPU).
pub(crate) fn plan(input: &Inputs<'_>) -> Part {
    let mut part = Part::default();
    let Some(nv) = &input.node.gpu.nvidia else {
        return part;
    };
    let slurm = if input.ctx.env_from_scheduler {
        slurm_gpus(
            |n| input.ctx.env(n),
            input.ctx.slurm_constrain_devices,
            &nv.devices,
        )
    } else {
        None
    };
    if let Some(s) = slurm {
        for p in &s.problems {
            part.finding(Check::Gpu, Level::Degraded, p.clone());
        }
        if s.exposed.is_empty() {
            return part;
        }
        expose(input, nv, &s.exposed, &mut part);
        let numbers = container_numbers(&s);
        let seen: Vec<String> = s
            .exposed
            .iter()
            .map(|d| format!("/dev/nvidia{}", dev_num(d)))
            .collect();
        part.finding(
            Check::Gpu,
            Level::Ok,
            format!(
                "Slurm step GPUs from {}{}: the container gets {} only and counts them from 0; CUDA_VISIBLE_DEVICES={numbers} in it",
                s.source,
                if input.ctx.slurm_constrain_devices {
                    " (ConstrainDevices=yes: CUDA_VISIBLE_DEVICES counted within the step)"
                } else {
                    ""
                },
                seen.join(", ")
            ),
        );
        let why = format!(
            "the step's GPUs as the container numbers them (it sees {} only)",
            seen.join(", ")
        );
        part.env("CUDA_VISIBLE_DEVICES", &numbers, why.clone());
        if input.ctx.env("GPU_DEVICE_ORDINAL").is_some() {
            part.env("GPU_DEVICE_ORDINAL", &numbers, why);
        }
        return part;
    }
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
        asked.iter().copied().partition(|d| granted(input, d));
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
                    ", the step's SLURM_STEP_GPUS or CUDA_VISIBLE_DEVICES"
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
    expose(input, nv, &selected, &mut part);
    part
}

/// The control devices, the selected GPUs' nodes, the driver's libraries
/// and tools.
fn expose(
    input: &Inputs<'_>,
    nv: &crate::fingerprint::NvidiaFingerprint,
    selected: &[&NvidiaDevice],
    part: &mut Part,
) {
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
    for d in selected {
        let minor = dev_num(d);
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
        // In a step without Slurm's GPU variables, the user's exported
        // NVIDIA_VISIBLE_DEVICES grants nothing.
        let mut c = ctx(&["NVIDIA_VISIBLE_DEVICES=0,1"], &[]);
        c.env_from_scheduler = true;
        assert!(gpus_of(&run_with(c, true, &h, &none)).is_empty());
        // The policy allows one by index, another by UUID.
        let mut p = Policy::default();
        p.gpu.allowed = vec!["nvidia.com/gpu=0".into(), "nvidia.com/gpu=GPU-3aaa".into()];
        let part = run_with(ctx(&[], &[]), true, &h, &p);
        assert_eq!(gpus_of(&part), ["/dev/nvidia0", "/dev/nvidia3"]);
    }

    /// A GPU fingerprint from `testdata/` (the GPU helper's JSON).
    fn recorded(json: &str) -> crate::fingerprint::GpuFingerprint {
        serde_json::from_str(json).expect("a GPU fingerprint")
    }

    const TWO: &str = include_str!("testdata/nvml-2gpu.json");
    const SWAPPED: &str = include_str!("testdata/nvml-2gpu-swapped-minors.json");

    /// The whole plan of a Slurm step's container on a recorded node.
    fn step(gpus: &str, env: &[&str], constrained: bool, rootless: bool) -> super::super::Planned {
        let mut c = ctx(env, &[]);
        c.env_from_scheduler = true;
        c.slurm_constrain_devices = constrained;
        c.rootless = rootless;
        let mut n = node("icelake");
        n.gpu = recorded(gpus);
        let sel = Selection {
            nvidia_gpus: true,
            ..Default::default()
        };
        super::super::plan(&c, &n, &Policy::default(), &sel, &nv_host(), None).unwrap()
    }

    /// The GPU nodes of a plan, as (path, minor, cgroup rule).
    fn gpu_nodes(p: &super::super::Planned) -> Vec<(String, u64, bool)> {
        p.tweaks
            .devices
            .iter()
            .filter(|d| d.major == NVIDIA_MAJOR && d.minor < 255)
            .map(|d| (d.path.display().to_string(), d.minor, d.cgroup_rule))
            .collect()
    }

    fn env_of<'a>(p: &'a super::super::Planned, name: &str) -> Option<&'a str> {
        p.tweaks
            .env
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.as_str())
    }

    #[test]
    fn a_constrained_step_given_the_second_gpu_gets_it_only_root_and_rootless() {
        // Slurm under ConstrainDevices=yes: the step has GPU 1 of the node,
        // CUDA_VISIBLE_DEVICES counts from 0 within the step.
        let env = [
            "SLURM_STEP_GPUS=1",
            "SLURM_JOB_GPUS=1",
            "CUDA_VISIBLE_DEVICES=0",
            "GPU_DEVICE_ORDINAL=0",
        ];
        let root = step(TWO, &env, true, false);
        assert!(
            root.findings.iter().all(|f| f.level == Level::Ok),
            "{:#?}",
            root.findings
        );
        assert_eq!(gpu_nodes(&root), [("/dev/nvidia1".into(), 1, true)]);
        assert_eq!(env_of(&root, "CUDA_VISIBLE_DEVICES"), Some("0"));
        assert_eq!(env_of(&root, "GPU_DEVICE_ORDINAL"), Some("0"));
        // The config the runtime gets: the node and its cgroup rule, for
        // minor 1 only (nvidiactl is 195:255).
        let mut c = serde_json::json!({"linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]}}});
        crate::apply::spec::edit(&mut c, &root.tweaks, None).unwrap();
        let gpu_rules: Vec<u64> = c["linux"]["resources"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["allow"] == true && r["major"] == 195 && r["minor"].as_u64() < Some(255))
            .map(|r| r["minor"].as_u64().unwrap())
            .collect();
        assert_eq!(gpu_rules, [1]);
        assert!(c["linux"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["path"] != "/dev/nvidia0"));
        // Rootless (the job user's runc, with a user namespace): the same
        // node, bound by the runtime, with no rule, and a finding says so.
        let rootless = step(TWO, &env, true, true);
        assert_eq!(gpu_nodes(&rootless), [("/dev/nvidia1".into(), 1, false)]);
        assert!(rootless.tweaks.devices.iter().all(|d| !d.cgroup_rule));
        assert_eq!(env_of(&rootless, "CUDA_VISIBLE_DEVICES"), Some("0"));
        assert!(rootless
            .findings
            .iter()
            .any(|f| f.reason.contains("rootless") && f.reason.contains("/dev/nvidia1")));
        let mut c = serde_json::json!({"linux": {"namespaces": [{"type": "user"}]}});
        crate::apply::spec::edit(&mut c, &rootless.tweaks, None).unwrap();
        assert!(c["linux"].get("resources").is_none(), "{c}");
        assert!(c["linux"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["path"] == "/dev/nvidia1"));
    }

    #[test]
    fn the_step_list_names_device_numbers_and_cuda_numbers_follow_constrain_devices() {
        // Without ConstrainDevices, Slurm's CUDA_VISIBLE_DEVICES holds the
        // device number; the container still counts from 0.
        let p = step(
            TWO,
            &["SLURM_STEP_GPUS=1", "CUDA_VISIBLE_DEVICES=1"],
            false,
            false,
        );
        assert_eq!(gpu_nodes(&p), [("/dev/nvidia1".into(), 1, true)]);
        assert_eq!(env_of(&p, "CUDA_VISIBLE_DEVICES"), Some("0"));
        assert_eq!(env_of(&p, "GPU_DEVICE_ORDINAL"), None);
        // The same without SLURM_STEP_GPUS: the number is the device's.
        let p = step(TWO, &["CUDA_VISIBLE_DEVICES=1"], false, false);
        assert_eq!(gpu_nodes(&p), [("/dev/nvidia1".into(), 1, true)]);
        // Under ConstrainDevices, "0" alone says nothing of which GPU:
        // none exposed (what hpcc did before, /dev/nvidia0, was the wrong
        // GPU), and a finding says why.
        let p = step(TWO, &["CUDA_VISIBLE_DEVICES=0"], true, false);
        assert!(gpu_nodes(&p).is_empty());
        assert!(p.findings.iter().any(|f| f.level == Level::Degraded
            && f.reason.contains("ConstrainDevices=yes")
            && f.reason.contains("SLURM_STEP_GPUS")));
        // The batch step has SLURM_JOB_GPUS only.
        let p = step(
            TWO,
            &["SLURM_JOB_GPUS=0,1", "CUDA_VISIBLE_DEVICES=0,1"],
            true,
            false,
        );
        assert_eq!(
            gpu_nodes(&p),
            [
                ("/dev/nvidia0".into(), 0, true),
                ("/dev/nvidia1".into(), 1, true)
            ]
        );
        assert_eq!(env_of(&p, "CUDA_VISIBLE_DEVICES"), Some("0,1"));
        // A task bound to the step's second GPU (--gpu-bind): the step's
        // GPUs are exposed as Slurm's cgroup allows them, the task's list
        // names its own.
        let p = step(
            TWO,
            &["SLURM_STEP_GPUS=0,1", "CUDA_VISIBLE_DEVICES=1"],
            true,
            false,
        );
        assert_eq!(gpu_nodes(&p).len(), 2);
        assert_eq!(env_of(&p, "CUDA_VISIBLE_DEVICES"), Some("1"));
        // A step without GPUs.
        let p = step(
            TWO,
            &[
                "SLURM_STEP_GPUS=NoDevFiles",
                "CUDA_VISIBLE_DEVICES=NoDevFiles",
            ],
            true,
            false,
        );
        assert!(p.tweaks.devices.is_empty() && p.tweaks.env.is_empty());
        // A number the node does not have: said, nothing exposed for it.
        let p = step(
            TWO,
            &["SLURM_STEP_GPUS=7", "CUDA_VISIBLE_DEVICES=0"],
            true,
            false,
        );
        assert!(gpu_nodes(&p).is_empty());
        assert!(p.findings.iter().any(|f| f.reason.contains("\"7\"")));
    }

    #[test]
    fn slurm_numbers_are_minor_numbers_not_nvml_indexes() {
        // NVML's index 0 is /dev/nvidia1 on this node: SLURM_STEP_GPUS=1
        // (gres.conf File=/dev/nvidia1) is NVML's GPU 0.
        let p = step(
            SWAPPED,
            &["SLURM_STEP_GPUS=1", "CUDA_VISIBLE_DEVICES=0"],
            true,
            false,
        );
        assert_eq!(gpu_nodes(&p), [("/dev/nvidia1".into(), 1, true)]);
        let gpu = p
            .tweaks
            .devices
            .iter()
            .find(|d| d.path == Path::new("/dev/nvidia1"))
            .unwrap();
        assert!(gpu.reason.contains("GPU 0 GPU-0c2e6a14"), "{}", gpu.reason);
        assert_eq!(env_of(&p, "CUDA_VISIBLE_DEVICES"), Some("0"));
    }

    #[test]
    fn a_numbered_step_never_inherits_the_batch_steps_gpus() {
        // srun copies SLURM_JOB_GPUS into every step; a step given no GPU
        // has no SLURM_STEP_GPUS (or an empty one) and gets none.
        let p = step(
            SWAPPED,
            &["SLURM_STEP_ID=3", "SLURM_JOB_GPUS=0,1"],
            true,
            false,
        );
        assert!(gpu_nodes(&p).is_empty(), "{:?}", gpu_nodes(&p));
        let p = step(
            SWAPPED,
            &["SLURM_STEP_ID=3", "SLURM_STEP_GPUS=", "SLURM_JOB_GPUS=0,1"],
            true,
            false,
        );
        assert!(gpu_nodes(&p).is_empty(), "{:?}", gpu_nodes(&p));
        // The batch step (no step id, or Slurm's batch id) is given the
        // job's.
        let p = step(
            SWAPPED,
            &["SLURM_STEP_ID=4294967294", "SLURM_JOB_GPUS=1"],
            true,
            false,
        );
        assert_eq!(gpu_nodes(&p), [("/dev/nvidia1".into(), 1, true)]);
    }
}
