//! Image requirements x node fingerprint x policy -> a [`Verdict`]: one
//! [`Finding`] per requirement and a green/orange/red [`Score`].
//!
//! The matcher is pure: no I/O, so every rule is unit-tested against
//! fingerprints written by hand.

use crate::annotations::{CpuTarget, ImageSpec, LibcImplementation, PortabilityMode, SmArch};
use crate::fingerprint::NodeFingerprint;
use hpcc_config::Policy;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The area a finding belongs to; each maps to one `[checks]` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// The image's annotations themselves.
    Annotations,
    /// Platform and microarchitecture.
    Cpu,
    /// NVIDIA driver/CUDA/GPU architecture.
    Gpu,
    /// MPI, libfabric, UCX.
    Mpi,
    /// libc.
    Libc,
    /// Host kernel.
    Kernel,
}

impl Check {
    /// The `[checks]` key.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Annotations => "annotations",
            Check::Cpu => "cpu",
            Check::Gpu => "gpu",
            Check::Mpi => "mpi",
            Check::Libc => "libc",
            Check::Kernel => "kernel",
        }
    }

    /// The configured enforcement for this check (`annotations` has none of
    /// its own: its only decision is `unannotated`).
    pub fn enforcement(self, policy: &Policy) -> hpcc_config::Enforcement {
        let c = &policy.checks;
        match self {
            Check::Annotations => hpcc_config::Enforcement::Enforce,
            Check::Cpu => c.cpu,
            Check::Gpu => c.gpu,
            Check::Mpi => c.mpi,
            Check::Libc => c.libc,
            Check::Kernel => c.kernel,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad one finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fits.
    Ok,
    /// Runs, but not at its best.
    Degraded,
    /// Will not run here.
    Fatal,
}

/// The overall score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Score {
    /// Runs near bare metal.
    Green,
    /// Runs, not at its best.
    Orange,
    /// Will not run.
    Red,
}

impl Score {
    /// `green`, `orange` or `red`.
    pub fn as_str(self) -> &'static str {
        match self {
            Score::Green => "green",
            Score::Orange => "orange",
            Score::Red => "red",
        }
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One requirement checked against the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Area.
    pub check: Check,
    /// Outcome.
    pub level: Level,
    /// One sentence a person understands.
    pub reason: String,
    /// What the image needs (evidence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// What the node has (evidence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Finding {
    fn new(check: Check, level: Level, reason: impl Into<String>) -> Finding {
        Finding {
            check,
            level,
            reason: reason.into(),
            image: None,
            node: None,
        }
    }

    fn evidence(mut self, image: impl Into<String>, node: impl Into<String>) -> Finding {
        self.image = Some(image.into());
        self.node = Some(node.into());
        self
    }
}

/// Which host component a requested tweak will use; the plan builds on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Name of the `[mpi.NAME]` table chosen for `mpi_replace`.
    pub mpi: Option<String>,
    /// `libfabric_inject` will happen.
    pub libfabric: bool,
    /// `ucx_replace` will happen.
    pub ucx: bool,
    /// NVIDIA GPUs will be exposed.
    pub nvidia_gpus: bool,
}

/// The matcher's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Overall score: red if any finding is fatal, orange if any is
    /// degraded, else green.
    pub score: Score,
    /// Every finding, in check order.
    pub findings: Vec<Finding>,
    /// Tweaks that can be honoured.
    pub selection: Selection,
}

impl Verdict {
    fn from_findings(mut findings: Vec<Finding>, selection: Selection) -> Verdict {
        findings.sort_by_key(|f| f.check);
        let score = match findings.iter().map(|f| f.level).max() {
            Some(Level::Fatal) => Score::Red,
            Some(Level::Degraded) => Score::Orange,
            _ => Score::Green,
        };
        Verdict {
            score,
            findings,
            selection,
        }
    }

    /// Findings of one level.
    pub fn with_level(&self, level: Level) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.level == level)
    }
}

/// Matches an image against a node under a policy.
pub fn evaluate(image: &ImageSpec, node: &NodeFingerprint, policy: &Policy) -> Verdict {
    let mut findings = Vec::new();
    let mut selection = Selection::default();
    if !image.is_annotated() {
        findings.push(Finding::new(
            Check::Annotations,
            Level::Degraded,
            "the image carries no org.supercontainers.* annotations: nothing could be checked",
        ));
        return Verdict::from_findings(findings, selection);
    }
    for w in &image.warnings {
        findings.push(Finding::new(Check::Annotations, Level::Ok, w.clone()));
    }
    cpu(image, node, &mut findings);
    gpu(image, node, policy, &mut findings, &mut selection);
    mpi(image, node, policy, &mut findings, &mut selection);
    libc(image, node, &selection, &mut findings);
    kernel(image, node, &mut findings);
    Verdict::from_findings(findings, selection)
}

fn cpu(image: &ImageSpec, node: &NodeFingerprint, out: &mut Vec<Finding>) {
    let Some(target) = &image.cpu_target else {
        out.push(Finding::new(
            Check::Cpu,
            Level::Degraded,
            "the image does not declare its CPU target (org.supercontainers.hardware.cpu.optimized.version): it may still fail with SIGILL",
        ).evidence("unknown", node.cpu.microarchitecture.clone()));
        return;
    };
    out.push(cpu_target(target, node));
}

fn cpu_target(target: &CpuTarget, node: &NodeFingerprint) -> Finding {
    let want = target.microarchitecture();
    let family = target.family();
    let node_desc = format!(
        "{} ({}, {})",
        node.cpu.microarchitecture, node.cpu.vendor, node.cpu.platform
    );
    let node_platform = match node.cpu.platform.as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        p => p,
    };
    if family != node_platform {
        return Finding::new(
            Check::Cpu,
            Level::Fatal,
            format!("the image is built for {family} ({target}), the node is {node_platform}: its binaries cannot execute here"),
        )
        .evidence(target.to_string(), node_desc);
    }
    let known = archspec::cpu::Microarchitecture::known_targets();
    let host = known.get(&node.cpu.microarchitecture).cloned();
    let is_self_or_descendant = host
        .as_ref()
        .is_some_and(|h| h.name() == want.name() || h.decendent_of(&want));
    let mut missing: Vec<String> = want
        .all_features()
        .into_iter()
        .filter(|f| !node_has_feature(node, f))
        .collect();
    missing.sort();
    if !is_self_or_descendant {
        let why = if want.vendor() != "generic"
            && host.as_ref().is_some_and(|h| h.vendor() != want.vendor())
        {
            format!(
                "the image is optimised for {target} ({}), the node's CPU is {} ({})",
                want.vendor(),
                node.cpu.vendor,
                node.cpu.microarchitecture
            )
        } else {
            format!(
                "the image is optimised for {target}, the node is {} which is not {target} or a descendant of it",
                node.cpu.microarchitecture
            )
        };
        let lacks = if missing.is_empty() {
            String::new()
        } else {
            format!("; the node lacks {}", missing.join(", "))
        };
        return Finding::new(
            Check::Cpu,
            Level::Fatal,
            format!("{why}{lacks}: it would die with SIGILL"),
        )
        .evidence(target.to_string(), node_desc);
    }
    if !missing.is_empty() {
        // archspec says compatible but the flags disagree (a hypervisor
        // masking a feature): trust the flags, they are what executes.
        return Finding::new(
            Check::Cpu,
            Level::Fatal,
            format!(
                "the node is detected as {} but its CPU does not report {} which {target} requires: it would die with SIGILL",
                node.cpu.microarchitecture,
                missing.join(", ")
            ),
        )
        .evidence(target.to_string(), node_desc);
    }
    let exact = host.as_ref().is_some_and(|h| h.name() == want.name());
    if exact || want.vendor() != "generic" {
        Finding::new(
            Check::Cpu,
            Level::Ok,
            if exact {
                format!("the image is optimised for this node's microarchitecture ({target})")
            } else {
                format!(
                    "the image is optimised for {target}; the node ({}) is a compatible descendant",
                    node.cpu.microarchitecture
                )
            },
        )
        .evidence(target.to_string(), node_desc)
    } else {
        Finding::new(
            Check::Cpu,
            Level::Degraded,
            format!(
                "the image is a generic {target} build: it runs on {}, but without that CPU's newer instructions",
                node.cpu.microarchitecture
            ),
        )
        .evidence(target.to_string(), node_desc)
    }
}

/// Whether the node has an archspec feature, honouring archspec's feature
/// aliases (`sse3` is implied by `ssse3`, `neon` by the aarch64 family) and
/// Linux's own spelling of SSE3 (`pni`).
fn node_has_feature(node: &NodeFingerprint, feature: &str) -> bool {
    if node.cpu.flags.contains(feature) || (feature == "sse3" && node.cpu.flags.contains("pni")) {
        return true;
    }
    let aliases = &archspec::schema::MicroarchitecturesSchema::schema().feature_aliases;
    aliases.get(feature).is_some_and(|a| {
        a.any_of
            .as_ref()
            .is_some_and(|any| any.iter().any(|f| node.cpu.flags.contains(f)))
            || a.families
                .as_ref()
                .is_some_and(|fams| fams.contains(&node.cpu.platform))
    })
}

fn gpu(
    image: &ImageSpec,
    node: &NodeFingerprint,
    policy: &Policy,
    out: &mut Vec<Finding>,
    sel: &mut Selection,
) {
    let wants_gpu = image.cuda.is_some()
        || !image.gpu_architectures.is_empty()
        || image.nvidia_driver.is_some();
    if !wants_gpu {
        return;
    }
    let need = describe_gpu_need(image);
    let Some(nv) = &node.gpu.nvidia else {
        out.push(
            Finding::new(
                Check::Gpu,
                Level::Fatal,
                format!("the image needs an NVIDIA GPU ({need}), the node has none"),
            )
            .evidence(
                need,
                node.gpu
                    .nvml_note
                    .clone()
                    .unwrap_or_else(|| "no NVIDIA GPU".into()),
            ),
        );
        return;
    };
    let node_desc = format!(
        "driver {}, CUDA {}, {} GPU(s): {}",
        nv.driver_version,
        nv.cuda_driver_version
            .as_ref()
            .map_or("unknown".into(), |v| v.to_string()),
        nv.devices.len(),
        nv.devices
            .iter()
            .map(|d| format!(
                "{} sm_{}{}",
                d.name, d.compute_capability.0, d.compute_capability.1
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut fatal = Vec::new();
    if let Some(cuda) = &image.cuda {
        match &nv.cuda_driver_version {
            Some(have) if have < cuda => fatal.push(format!(
                "CUDA {cuda} is newer than the driver supports (CUDA {have})"
            )),
            None => fatal.push(format!(
                "CUDA {cuda} is needed and the driver's CUDA version is unknown"
            )),
            _ => {}
        }
    }
    if let Some(min) = &image.nvidia_driver {
        match crate::version::Version::parse_prefix(&nv.driver_version) {
            Some(have) if &have < min => fatal.push(format!(
                "driver {min} is needed, the node has {}",
                nv.driver_version
            )),
            _ => {}
        }
    }
    let mut degraded = Vec::new();
    if !image.gpu_architectures.is_empty() {
        let fits = |cc: (u32, u32)| {
            image
                .gpu_architectures
                .iter()
                .any(|a: &SmArch| a.major == cc.0 && a.minor <= cc.1)
        };
        let usable = nv
            .devices
            .iter()
            .filter(|d| fits(d.compute_capability))
            .count();
        if usable == 0 {
            fatal.push(format!(
                "no GPU of this node has one of the architectures the image is built for ({})",
                join(&image.gpu_architectures)
            ));
        } else if usable < nv.devices.len() {
            degraded.push(format!(
                "only {usable} of {} GPUs match the image's architectures ({})",
                nv.devices.len(),
                join(&image.gpu_architectures)
            ));
        }
    }
    if !fatal.is_empty() {
        out.push(
            Finding::new(Check::Gpu, Level::Fatal, fatal.join("; ")).evidence(need, node_desc),
        );
        return;
    }
    sel.nvidia_gpus = policy.tweaks.gpu;
    if !policy.tweaks.gpu {
        degraded.push("the site does not allow GPU exposure ([tweaks] gpu = false)".into());
    }
    let (level, reason) = if degraded.is_empty() {
        (Level::Ok, "the node's NVIDIA GPUs fit the image".to_owned())
    } else {
        (Level::Degraded, degraded.join("; "))
    };
    out.push(Finding::new(Check::Gpu, level, reason).evidence(need, node_desc));
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_gpu_need(image: &ImageSpec) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &image.cuda {
        parts.push(format!("CUDA {c}"));
    }
    if let Some(d) = &image.nvidia_driver {
        parts.push(format!("driver >= {d}"));
    }
    if !image.gpu_architectures.is_empty() {
        parts.push(join(&image.gpu_architectures));
    }
    parts.join(", ")
}

fn mpi(
    image: &ImageSpec,
    node: &NodeFingerprint,
    policy: &Policy,
    out: &mut Vec<Finding>,
    sel: &mut Selection,
) {
    let modes = &image.portability_modes;
    let implementation = image.mpi_implementation;
    if modes.contains(&PortabilityMode::MpiReplace) {
        mpi_replace(image, node, policy, out, sel);
    } else if let Some(imp) = implementation {
        if imp.abi().is_some() {
            out.push(
                Finding::new(
                    Check::Mpi,
                    Level::Degraded,
                    format!("the image's own {imp} is used (it does not allow mpi_replace): inter-node performance depends on how it was built"),
                )
                .evidence(imp.to_string(), host_mpis(node)),
            );
        }
    }
    if modes.contains(&PortabilityMode::LibfabricInject) {
        libfabric_inject(image, node, policy, out, sel);
    }
    if modes.contains(&PortabilityMode::UcxReplace) {
        let usable = !node.ucx.is_empty() && node.ucx.iter().all(|l| l.usable());
        if !policy.tweaks.ucx_replace {
            out.push(Finding::new(
                Check::Mpi,
                Level::Degraded,
                "the image allows ucx_replace, the site does not ([tweaks] ucx_replace = false): the image's UCX is used",
            ));
        } else if !usable {
            out.push(Finding::new(
                Check::Mpi,
                Level::Degraded,
                "the image allows ucx_replace, but this node offers no usable host UCX ([ucx] in the policy): the image's UCX is used",
            ).evidence("ucx_replace", describe_libs(&node.ucx)));
        } else {
            sel.ucx = true;
            out.push(
                Finding::new(
                    Check::Mpi,
                    Level::Ok,
                    "the host's UCX will replace the image's",
                )
                .evidence("ucx_replace", describe_libs(&node.ucx)),
            );
        }
    }
}

fn host_mpis(node: &NodeFingerprint) -> String {
    if node.mpi.is_empty() {
        return "no host MPI offered by the policy".into();
    }
    node.mpi
        .iter()
        .map(|m| {
            format!(
                "{} ({} ABI{})",
                m.name,
                m.abi,
                if m.usable() { "" } else { ", missing" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_libs(libs: &[crate::fingerprint::HostLibrary]) -> String {
    if libs.is_empty() {
        return "none".into();
    }
    libs.iter()
        .map(|l| match &l.error {
            None => l.path.display().to_string(),
            Some(e) => format!("{} ({e})", l.path.display()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn mpi_replace(
    image: &ImageSpec,
    node: &NodeFingerprint,
    policy: &Policy,
    out: &mut Vec<Finding>,
    sel: &mut Selection,
) {
    let evidence_node = host_mpis(node);
    if !policy.tweaks.mpi_replace {
        out.push(Finding::new(
            Check::Mpi,
            Level::Degraded,
            "the image allows mpi_replace, the site does not ([tweaks] mpi_replace = false): the image's own MPI is used",
        ).evidence("mpi_replace", evidence_node));
        return;
    }
    let Some(imp) = image.mpi_implementation else {
        out.push(Finding::new(
            Check::Mpi,
            Level::Degraded,
            "the image allows mpi_replace but does not say which MPI it carries (org.supercontainers.mpi.implementation): its own MPI is used",
        ).evidence("mpi_replace, implementation unknown", evidence_node));
        return;
    };
    let Some(abi) = imp.abi() else {
        out.push(Finding::new(
            Check::Mpi,
            Level::Ok,
            format!("the image uses {imp}, which links no MPI library: nothing to replace"),
        ));
        return;
    };
    let image_desc = format!(
        "{imp}{} ({abi} ABI), mpi_replace",
        image
            .mpi_version
            .as_ref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default()
    );
    if node.mpi.is_empty() {
        out.push(Finding::new(
            Check::Mpi,
            Level::Degraded,
            "the image allows mpi_replace, but this node offers no host MPI ([mpi.NAME] in the policy): the image's own MPI is used",
        ).evidence(image_desc, evidence_node));
        return;
    }
    let same_family: Vec<_> = node.mpi.iter().filter(|m| m.abi == abi).collect();
    if same_family.is_empty() {
        out.push(
            Finding::new(
                Check::Mpi,
                Level::Fatal,
                format!(
                    "the image carries {imp} ({abi} ABI) and asks for mpi_replace, but this node offers only {}: the libraries are not interchangeable",
                    node.mpi.iter().map(|m| format!("{} ({} ABI)", m.name, m.abi)).collect::<Vec<_>>().join(", ")
                ),
            )
            .evidence(image_desc, evidence_node),
        );
        return;
    }
    match same_family.iter().find(|m| m.usable()) {
        Some(m) => {
            sel.mpi = Some(m.name.clone());
            out.push(
                Finding::new(
                    Check::Mpi,
                    Level::Ok,
                    format!(
                        "the host MPI `{}` ({} ABI) will replace the image's {imp}",
                        m.name, m.abi
                    ),
                )
                .evidence(image_desc, evidence_node),
            );
        }
        None => out.push(
            Finding::new(
                Check::Mpi,
                Level::Fatal,
                format!(
                    "the host MPI for the {abi} ABI is declared but not usable on this node: {}",
                    same_family
                        .iter()
                        .map(|m| describe_libs(&m.libraries))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )
            .evidence(image_desc, evidence_node),
        ),
    }
}

fn libfabric_inject(
    image: &ImageSpec,
    node: &NodeFingerprint,
    policy: &Policy,
    out: &mut Vec<Finding>,
    sel: &mut Selection,
) {
    let need = image
        .libfabric_abi
        .as_ref()
        .map_or("libfabric_inject".into(), |v| format!("libfabric ABI {v}"));
    if !policy.tweaks.libfabric_inject {
        out.push(Finding::new(
            Check::Mpi,
            Level::Degraded,
            "the image allows libfabric_inject, the site does not ([tweaks] libfabric_inject = false): the image's libfabric is used",
        ));
        return;
    }
    let Some(lib) = node.libfabric.as_ref().filter(|l| l.usable()) else {
        out.push(
            Finding::new(
                Check::Mpi,
                Level::Degraded,
                "the image allows libfabric_inject, but this node offers no usable host libfabric ([libfabric] in the policy): the image's libfabric is used",
            )
            .evidence(need, describe_libs(node.libfabric.as_slice())),
        );
        return;
    };
    let fabric_versions: Vec<&String> = lib
        .version_defs
        .iter()
        .filter(|v| v.starts_with("FABRIC_"))
        .collect();
    let node_desc = format!(
        "{} (defines {})",
        lib.path.display(),
        if fabric_versions.is_empty() {
            "no FABRIC_* versions".into()
        } else {
            fabric_versions
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
    if let Some(abi) = &image.libfabric_abi {
        let wanted = format!("FABRIC_{}.{}", abi.major(), abi.minor());
        if !lib.version_defs.contains(&wanted) {
            out.push(
                Finding::new(
                    Check::Mpi,
                    Level::Fatal,
                    format!("the image's MPI needs libfabric ABI {wanted}, which the host libfabric does not define"),
                )
                .evidence(need, node_desc),
            );
            return;
        }
    }
    sel.libfabric = true;
    out.push(
        Finding::new(
            Check::Mpi,
            Level::Ok,
            "the host's libfabric will be injected",
        )
        .evidence(need, node_desc),
    );
}

fn libc(image: &ImageSpec, node: &NodeFingerprint, sel: &Selection, out: &mut Vec<Finding>) {
    let injects = sel.mpi.is_some() || sel.libfabric || sel.ucx || sel.nvidia_gpus;
    if image.libc == Some(LibcImplementation::Musl) && injects {
        out.push(
            Finding::new(
                Check::Libc,
                Level::Fatal,
                "the image uses musl, and the host libraries it asks for are built against glibc: they cannot load",
            )
            .evidence("musl", format!("{} {}", node.libc.implementation, node.libc.version.as_ref().map_or(String::new(), |v| v.to_string()))),
        );
        return;
    }
    if let (Some(img), Some(host), true) = (&image.glibc, &node.libc.version, injects) {
        if host > img {
            out.push(
                Finding::new(
                    Check::Libc,
                    Level::Degraded,
                    format!("the image's glibc {img} is older than the host's {host}: injected host libraries are checked symbol by symbol at launch"),
                )
                .evidence(format!("glibc {img}"), format!("glibc {host}")),
            );
            return;
        }
    }
    if image.libc.is_some() || image.glibc.is_some() {
        out.push(Finding::new(
            Check::Libc,
            Level::Ok,
            "the image's libc is compatible with what hpcc injects",
        ));
    }
}

fn kernel(image: &ImageSpec, node: &NodeFingerprint, out: &mut Vec<Finding>) {
    let have = node.kernel.release.clone();
    if let Some(min) = &image.host_kernel_min {
        match &node.kernel.version {
            Some(v) if v < min => out.push(
                Finding::new(
                    Check::Kernel,
                    Level::Fatal,
                    format!("the image needs a host kernel >= {min}, the node runs {have}"),
                )
                .evidence(format!("kernel >= {min}"), have.clone()),
            ),
            Some(_) => out.push(
                Finding::new(
                    Check::Kernel,
                    Level::Ok,
                    format!("host kernel {have} is at least {min}"),
                )
                .evidence(format!("kernel >= {min}"), have.clone()),
            ),
            None => out.push(
                Finding::new(
                    Check::Kernel,
                    Level::Degraded,
                    format!("the host kernel release {have:?} could not be compared with {min}"),
                )
                .evidence(format!("kernel >= {min}"), have.clone()),
            ),
        }
    }
    for exp in &image.kernel_expectations {
        let normalized = exp.replace('_', "-");
        let (present, what) = match normalized.as_str() {
            "user-namespaces" | "userns" => (node.kernel.user_namespaces, "user namespaces"),
            _ => (
                node.kernel.modules.contains(exp)
                    || node.kernel.modules.contains(&exp.replace('-', "_")),
                "kernel module",
            ),
        };
        if present {
            out.push(Finding::new(
                Check::Kernel,
                Level::Ok,
                format!("{what} `{exp}` available"),
            ));
        } else {
            out.push(
                Finding::new(
                    Check::Kernel,
                    Level::Fatal,
                    format!("the image expects {what} `{exp}`, which the node does not provide"),
                )
                .evidence(exp.clone(), have.clone()),
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fingerprint::*;
    use crate::version::Version;
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    fn flags_of(name: &str) -> BTreeSet<String> {
        archspec::cpu::Microarchitecture::known_targets()[name]
            .all_features()
            .into_iter()
            .collect()
    }

    /// A node as archspec would describe `micro`, with exactly its features.
    pub(crate) fn node(micro: &str) -> NodeFingerprint {
        let m = &archspec::cpu::Microarchitecture::known_targets()[micro];
        NodeFingerprint {
            schema: SCHEMA,
            hostname: "node001".into(),
            cpu: CpuFingerprint {
                platform: m.family().name().into(),
                microarchitecture: micro.into(),
                vendor: match m.vendor() {
                    "GenuineIntel" | "AuthenticAMD" => m.vendor().into(),
                    v => v.into(),
                },
                model: "test CPU".into(),
                flags: flags_of(micro),
            },
            kernel: KernelFingerprint {
                release: "6.1.0-18-amd64".into(),
                version: Version::parse_prefix("6.1.0"),
                user_namespaces: true,
                modules: ["overlay".to_string()].into(),
            },
            libc: LibcFingerprint {
                implementation: "glibc".into(),
                version: Version::parse_prefix("2.36"),
            },
            gpu: GpuFingerprint {
                nvidia: None,
                nvml_note: Some("no NVIDIA GPU: NVML unavailable".into()),
            },
            mpi: vec![],
            libfabric: None,
            ucx: vec![],
        }
    }

    pub(crate) fn lib(path: &str) -> HostLibrary {
        HostLibrary {
            path: PathBuf::from(path),
            real_path: None,
            soname: Some(path.rsplit('/').next().unwrap().into()),
            version_defs: BTreeSet::new(),
            error: None,
        }
    }

    pub(crate) fn with_mpich(mut n: NodeFingerprint) -> NodeFingerprint {
        n.mpi.push(HostMpiFingerprint {
            name: "mpich".into(),
            abi: hpcc_config::MpiAbi::Mpich,
            libraries: vec![lib("/usr/lib/x86_64-linux-gnu/libmpich.so.12")],
        });
        n
    }

    fn image(pairs: &[(&str, &str)]) -> ImageSpec {
        ImageSpec::from_annotations(pairs.iter().copied()).unwrap()
    }

    fn cpu_image(target: &str) -> ImageSpec {
        image(&[("org.supercontainers.hardware.cpu.optimized.version", target)])
    }

    fn verdict(img: &ImageSpec, n: &NodeFingerprint) -> Verdict {
        evaluate(img, n, &Policy::default())
    }

    fn cpu_finding(v: &Verdict) -> &Finding {
        v.findings.iter().find(|f| f.check == Check::Cpu).unwrap()
    }

    #[test]
    fn same_microarchitecture_is_green() {
        let v = verdict(&cpu_image("icelake"), &node("icelake"));
        assert_eq!(v.score, Score::Green, "{v:#?}");
    }

    #[test]
    fn older_microarchitecture_on_descendant_is_green() {
        let v = verdict(&cpu_image("skylake_avx512"), &node("icelake"));
        assert_eq!(v.score, Score::Green, "{v:#?}");
        assert!(cpu_finding(&v).reason.contains("descendant"));
    }

    #[test]
    fn generic_build_on_newer_cpu_is_orange() {
        for t in ["x86_64", "x86_64_v3"] {
            let v = verdict(&cpu_image(t), &node("icelake"));
            assert_eq!(v.score, Score::Orange, "{t}: {v:#?}");
        }
    }

    #[test]
    fn newer_target_is_red_and_names_missing_features() {
        let v = verdict(&cpu_image("sapphirerapids"), &node("icelake"));
        assert_eq!(v.score, Score::Red);
        let f = cpu_finding(&v);
        assert_eq!(f.level, Level::Fatal);
        assert!(f.reason.contains("amx_tile"), "{}", f.reason);
        assert!(f.reason.contains("SIGILL"));
        assert_eq!(f.image.as_deref(), Some("sapphirerapids"));
    }

    #[test]
    fn x86_64_v4_on_a_node_without_avx512_is_red() {
        let v = verdict(&cpu_image("x86_64_v4"), &node("haswell"));
        assert_eq!(v.score, Score::Red);
        assert!(cpu_finding(&v).reason.contains("avx512f"), "{v:#?}");
    }

    #[test]
    fn other_vendor_is_red() {
        let v = verdict(&cpu_image("zen4"), &node("icelake"));
        assert_eq!(v.score, Score::Red);
        assert!(cpu_finding(&v).reason.contains("AuthenticAMD"), "{v:#?}");
    }

    #[test]
    fn other_platform_is_red() {
        let v = verdict(&cpu_image("neoverse_v2"), &node("icelake"));
        assert_eq!(v.score, Score::Red);
        assert!(cpu_finding(&v).reason.contains("aarch64"), "{v:#?}");
        let v = verdict(&cpu_image("x86_64"), &node("neoverse_v2"));
        assert_eq!(v.score, Score::Red);
    }

    #[test]
    fn masked_flag_beats_archspec_name() {
        // archspec says icelake, but the hypervisor hid avx512f.
        let mut n = node("icelake");
        n.cpu.flags.remove("avx512f");
        let v = verdict(&cpu_image("skylake_avx512"), &n);
        assert_eq!(v.score, Score::Red);
        assert!(cpu_finding(&v).reason.contains("avx512f"));
    }

    #[test]
    fn unannotated_is_orange_with_one_finding() {
        let v = verdict(&ImageSpec::default(), &node("icelake"));
        assert_eq!(v.score, Score::Orange);
        assert_eq!(v.findings.len(), 1);
        assert_eq!(v.findings[0].check, Check::Annotations);
    }

    #[test]
    fn cuda_on_cpu_node_is_red() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "x86_64",
            ),
            (
                "org.supercontainers.hardware.gpu.nvidia.cuda.version",
                "12.1",
            ),
        ]);
        let v = verdict(&img, &node("icelake"));
        assert_eq!(v.score, Score::Red);
        assert!(v
            .with_level(Level::Fatal)
            .any(|f| f.check == Check::Gpu && f.reason.contains("none")));
    }

    fn gpu_node(cuda: &str, cc: (u32, u32)) -> NodeFingerprint {
        let mut n = node("icelake");
        n.gpu.nvidia = Some(NvidiaFingerprint {
            driver_version: "535.104.05".into(),
            cuda_driver_version: Version::parse_prefix(cuda),
            devices: vec![NvidiaDevice {
                index: 0,
                name: "NVIDIA A100".into(),
                uuid: "GPU-0".into(),
                compute_capability: cc,
                minor_number: Some(0),
            }],
        });
        n
    }

    #[test]
    fn cuda_newer_than_driver_is_red() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            (
                "org.supercontainers.hardware.gpu.nvidia.cuda.version",
                "12.4",
            ),
        ]);
        let v = verdict(&img, &gpu_node("12.2", (8, 0)));
        assert_eq!(v.score, Score::Red);
        let f = v.with_level(Level::Fatal).next().unwrap();
        assert!(
            f.reason.contains("12.4") && f.reason.contains("12.2"),
            "{f:?}"
        );
        let v = verdict(&img, &gpu_node("12.4", (8, 0)));
        assert_eq!(v.score, Score::Green, "{v:#?}");
        assert!(v.selection.nvidia_gpus);
    }

    #[test]
    fn gpu_architecture_absent_is_red() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            (
                "org.supercontainers.hardware.gpu.nvidia.architecture",
                "sm_90",
            ),
        ]);
        assert_eq!(verdict(&img, &gpu_node("12.2", (8, 0))).score, Score::Red);
        assert_eq!(verdict(&img, &gpu_node("12.2", (9, 0))).score, Score::Green);
        let img86 = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            (
                "org.supercontainers.hardware.gpu.nvidia.architecture",
                "sm_80",
            ),
        ]);
        // sm_80 code runs on an sm_86 device (same major, newer minor).
        assert_eq!(
            verdict(&img86, &gpu_node("12.2", (8, 6))).score,
            Score::Green
        );
    }

    #[test]
    fn openmpi_image_on_mpich_node_is_red() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "x86_64_v3",
            ),
            ("org.supercontainers.mpi.implementation", "openmpi"),
            ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
        ]);
        let v = verdict(&img, &with_mpich(node("icelake")));
        assert_eq!(v.score, Score::Red);
        let f = v.with_level(Level::Fatal).next().unwrap();
        assert_eq!(f.check, Check::Mpi);
        assert!(
            f.reason.contains("openmpi") && f.reason.contains("mpich"),
            "{f:?}"
        );
        assert!(v.selection.mpi.is_none());
    }

    #[test]
    fn mpich_family_image_selects_host_mpich() {
        for imp in ["mpich", "intelmpi", "cray-mpich", "mvapich"] {
            let img = image(&[
                (
                    "org.supercontainers.hardware.cpu.optimized.version",
                    "icelake",
                ),
                ("org.supercontainers.mpi.implementation", imp),
                ("org.supercontainers.mpi.portability.mode", "mpich_replace"),
            ]);
            let v = verdict(&img, &with_mpich(node("icelake")));
            assert_eq!(v.score, Score::Green, "{imp}: {v:#?}");
            assert_eq!(v.selection.mpi.as_deref(), Some("mpich"));
        }
    }

    #[test]
    fn mpi_replace_forbidden_by_site_is_orange() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            ("org.supercontainers.mpi.implementation", "mpich"),
            ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
        ]);
        let mut p = Policy::default();
        p.tweaks.mpi_replace = false;
        let v = evaluate(&img, &with_mpich(node("icelake")), &p);
        assert_eq!(v.score, Score::Orange);
        assert!(v.selection.mpi.is_none());
    }

    #[test]
    fn missing_host_mpi_library_is_red() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            ("org.supercontainers.mpi.implementation", "mpich"),
            ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
        ]);
        let mut n = with_mpich(node("icelake"));
        n.mpi[0].libraries[0].error = Some("No such file".into());
        assert_eq!(verdict(&img, &n).score, Score::Red);
    }

    #[test]
    fn libfabric_abi_must_be_defined_by_host() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            (
                "org.supercontainers.mpi.portability.mode",
                "libfabric_inject",
            ),
            ("org.supercontainers.libfabric.abi.version", "1.7"),
        ]);
        let mut n = node("icelake");
        let mut l = lib("/usr/lib/x86_64-linux-gnu/libfabric.so.1");
        l.version_defs = ["FABRIC_1.0", "FABRIC_1.6"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        n.libfabric = Some(l.clone());
        assert_eq!(verdict(&img, &n).score, Score::Red);
        l.version_defs.insert("FABRIC_1.7".into());
        n.libfabric = Some(l);
        let v = verdict(&img, &n);
        assert_eq!(v.score, Score::Green, "{v:#?}");
        assert!(v.selection.libfabric);
    }

    #[test]
    fn musl_image_cannot_take_host_libraries() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            ("org.supercontainers.libc.implementation", "musl"),
            ("org.supercontainers.mpi.implementation", "mpich"),
            ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
        ]);
        let v = verdict(&img, &with_mpich(node("icelake")));
        assert!(v.with_level(Level::Fatal).any(|f| f.check == Check::Libc));
    }

    #[test]
    fn host_kernel_minimum_and_expectations() {
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            ("org.supercontainers.host.kernel.version.min", "6.5"),
        ]);
        let v = verdict(&img, &node("icelake"));
        assert_eq!(v.score, Score::Red);
        assert!(v
            .findings
            .iter()
            .any(|f| f.reason.contains("6.1.0-18-amd64")));
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            ("org.supercontainers.host.kernel.version.min", "5.1"),
            (
                "org.supercontainers.host.kernel.modules.expectation",
                "user-namespaces,overlay",
            ),
        ]);
        assert_eq!(verdict(&img, &node("icelake")).score, Score::Green);
        let mut n = node("icelake");
        n.kernel.user_namespaces = false;
        assert_eq!(verdict(&img, &n).score, Score::Red);
    }

    #[test]
    fn verdict_is_plain_data() {
        let v = verdict(&cpu_image("sapphirerapids"), &node("icelake"));
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["score"], "red");
        assert_eq!(json["findings"][0]["check"], "cpu");
        assert_eq!(json["findings"][0]["level"], "fatal");
    }
}
