//! The node fingerprint: what this node offers an image (CPU, kernel, libc,
//! GPUs, host MPI/libfabric/UCX declared by the policy).
//!
//! Taking it reads `/proc`, `uname`, CPUID, NVML and a few ELF headers. It
//! is cached per boot in `/run/hpcc/`, since a step launch must not pay for
//! NVML every time.
//!
//! NVML is a shared library loaded with `dlopen`. `hpcc-hook` never loads
//! it ([`GpuProbe::Helper`]): the hook is statically linked so that no
//! dynamic loader runs in it (runc gives a `createContainer` hook the
//! image's `process.env`, `LD_PRELOAD` included, and the rootfs as cwd), and
//! a static binary must not `dlopen` (it would load a second libc). On a
//! cache miss the hook runs the dynamic `hpcc fingerprint --gpus` next to
//! it, with an empty environment, `/` as cwd and a deadline. A statically
//! linked build has no NVML code at all ([`gpus`] says so).

use crate::elf::ElfInfo;
use crate::version::Version;
use hpcc_config::Policy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bumped when the fingerprint's shape changes, so an old cache is ignored
/// (2: the key became `fingerprint_version`).
pub const SCHEMA: u32 = 2;

/// CPU facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuFingerprint {
    /// Platform (`uname -m`): `x86_64`, `aarch64`, `ppc64le`.
    pub platform: String,
    /// archspec's name for this CPU (`icelake`, `zen3`, `neoverse_v2`).
    pub microarchitecture: String,
    /// Vendor (`GenuineIntel`, `AuthenticAMD`, ...).
    pub vendor: String,
    /// Model name as the CPU reports it.
    pub model: String,
    /// Feature flags as Linux names them (`/proc/cpuinfo`), the names
    /// archspec's features use.
    pub flags: BTreeSet<String>,
}

/// One NVIDIA GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvidiaDevice {
    /// NVML index.
    pub index: u32,
    /// Product name.
    pub name: String,
    /// `GPU-...` UUID.
    pub uuid: String,
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
    /// The N of `/dev/nvidiaN`.
    pub minor_number: Option<u32>,
}

/// NVIDIA driver and devices, when NVML answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvidiaFingerprint {
    /// Driver version (`535.104.05`).
    pub driver_version: String,
    /// Highest CUDA version the driver supports (`12.2`).
    pub cuda_driver_version: Option<Version>,
    /// Devices.
    pub devices: Vec<NvidiaDevice>,
}

/// GPU facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuFingerprint {
    /// NVIDIA, when a driver is present.
    pub nvidia: Option<NvidiaFingerprint>,
    /// Why NVML gave nothing (no driver is the normal case on CPU nodes).
    pub nvml_note: Option<String>,
}

/// A host library the policy declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLibrary {
    /// Path as the policy names it.
    pub path: PathBuf,
    /// The file it resolves to on the host.
    pub real_path: Option<PathBuf>,
    /// Its `DT_SONAME`.
    pub soname: Option<String>,
    /// Symbol versions it defines (`FABRIC_1.6`, `MPI_4.0`), glibc's own
    /// excluded.
    #[serde(default)]
    pub version_defs: BTreeSet<String>,
    /// Why it could not be inspected.
    pub error: Option<String>,
}

impl HostLibrary {
    fn inspect(path: &Path) -> HostLibrary {
        let real_path = std::fs::canonicalize(path).ok();
        match ElfInfo::read(path) {
            Ok(info) => HostLibrary {
                path: path.to_owned(),
                real_path,
                soname: info.soname,
                version_defs: info
                    .version_defs
                    .into_iter()
                    .filter(|v| !v.starts_with("GLIBC_"))
                    .collect(),
                error: None,
            },
            Err(e) => HostLibrary {
                path: path.to_owned(),
                real_path,
                soname: None,
                version_defs: BTreeSet::new(),
                error: Some(e.to_string()),
            },
        }
    }

    /// The library exists and is a readable ELF object.
    pub fn usable(&self) -> bool {
        self.error.is_none()
    }
}

/// A host MPI offered by the policy, as found on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMpiFingerprint {
    /// The policy table's name (`[mpi.NAME]`).
    pub name: String,
    /// Its ABI family.
    pub abi: hpcc_config::MpiAbi,
    /// Its libraries.
    pub libraries: Vec<HostLibrary>,
}

impl HostMpiFingerprint {
    /// All its libraries are present and readable.
    pub fn usable(&self) -> bool {
        !self.libraries.is_empty() && self.libraries.iter().all(HostLibrary::usable)
    }
}

/// libc facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibcFingerprint {
    /// `glibc` or `musl`.
    pub implementation: String,
    /// glibc version.
    pub version: Option<Version>,
}

/// Kernel facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelFingerprint {
    /// `uname -r`.
    pub release: String,
    /// Its numeric part.
    pub version: Option<Version>,
    /// Whether unprivileged user namespaces can be created
    /// (`user-namespaces` expectation).
    pub user_namespaces: bool,
    /// Loaded and built-in kernel modules (`/sys/module`).
    #[serde(default)]
    pub modules: BTreeSet<String>,
}

/// Everything the matcher needs to know about the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFingerprint {
    /// [`SCHEMA`] at the time it was taken: the per-boot cache's own
    /// version. Written as `fingerprint_version`, because the document's
    /// top-level `"schema"` is the JSON convention's `"hpcc/v1"`
    /// ([`crate::schema`]); a file without it (saved before) reads as 0,
    /// which only makes the cache take the fingerprint again.
    #[serde(rename = "fingerprint_version", default)]
    pub schema: u32,
    /// Host name.
    pub hostname: String,
    /// CPU.
    pub cpu: CpuFingerprint,
    /// Kernel.
    pub kernel: KernelFingerprint,
    /// libc.
    pub libc: LibcFingerprint,
    /// GPUs.
    pub gpu: GpuFingerprint,
    /// Host MPIs the policy offers.
    pub mpi: Vec<HostMpiFingerprint>,
    /// Host libfabric, when the policy declares one.
    pub libfabric: Option<HostLibrary>,
    /// Host UCX libraries, when the policy declares them.
    pub ucx: Vec<HostLibrary>,
}

/// Reads `/proc/cpuinfo`-style text: flags and model of the first CPU.
fn parse_cpuinfo(text: &str) -> (BTreeSet<String>, Option<String>, Option<String>) {
    let mut flags = BTreeSet::new();
    let mut model = None;
    let mut vendor = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            if line.trim().is_empty() && !flags.is_empty() {
                break;
            }
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "flags" | "Features" if flags.is_empty() => {
                flags = v.split_whitespace().map(str::to_owned).collect();
            }
            "model name" | "cpu" if model.is_none() => model = Some(v.to_owned()),
            "vendor_id" | "CPU implementer" if vendor.is_none() => vendor = Some(v.to_owned()),
            _ => {}
        }
    }
    (flags, model, vendor)
}

fn read_bounded(path: &str, limit: u64) -> Option<String> {
    crate::io::read_text_bounded(Path::new(path), limit).ok()
}

fn cpu() -> CpuFingerprint {
    let platform = nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_else(|_| std::env::consts::ARCH.to_owned());
    let (flags, mut model, mut vendor) =
        parse_cpuinfo(&read_bounded("/proc/cpuinfo", 4 << 20).unwrap_or_default());
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID is what the CPU itself says; /proc/cpuinfo can be masked by a
        // container's view of /proc. Prefer it for identity.
        let id = raw_cpuid::CpuId::new();
        if let Some(v) = id.get_vendor_info() {
            vendor = Some(v.as_str().to_owned());
        }
        if let Some(b) = id.get_processor_brand_string() {
            model = Some(b.as_str().trim().to_owned());
        }
    }
    let microarchitecture = archspec::cpu::host()
        .map(|m| m.name().to_owned())
        .unwrap_or_else(|_| platform.clone());
    CpuFingerprint {
        platform,
        microarchitecture,
        vendor: vendor.unwrap_or_else(|| "unknown".into()),
        model: model.unwrap_or_else(|| "unknown".into()),
        flags,
    }
}

fn kernel() -> KernelFingerprint {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let userns_max = read_bounded("/proc/sys/user/max_user_namespaces", 64)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    // Debian's knob; absent on kernels that always allow it.
    let debian_knob = read_bounded("/proc/sys/kernel/unprivileged_userns_clone", 64)
        .map(|s| s.trim() != "0")
        .unwrap_or(true);
    KernelFingerprint {
        version: Version::parse_prefix(&release),
        release,
        user_namespaces: userns_max > 0 && debian_knob,
        modules: std::fs::read_dir("/sys/module")
            .map(|d| {
                d.filter_map(Result::ok)
                    .take(4096)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn libc_info() -> LibcFingerprint {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: returns a pointer to a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
        LibcFingerprint {
            implementation: "glibc".into(),
            version: Version::parse_prefix(&v.to_string_lossy()),
        }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        LibcFingerprint {
            implementation: "musl".into(),
            version: None,
        }
    }
}

/// How the GPU facts are taken when the cache has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuProbe {
    /// NVML loaded into this process ([`gpus`]): `hpcc`, the SPANK plugin,
    /// `hpcc-runtime`, whose environment the image does not write.
    InProcess,
    /// A trusted host program that prints [`GpuFingerprint`] as JSON
    /// (`hpcc fingerprint --gpus`), run by [`gpus_from_helper`]: what
    /// `hpcc-hook` does.
    Helper {
        /// The program (root-owned, not writable by others).
        exe: PathBuf,
        /// Its deadline (policy `limits.probe_timeout_ms`).
        timeout: std::time::Duration,
    },
    /// [`GpuProbe::Helper`] with the `hpcc` beside this program, else
    /// [`GPU_HELPER`], looked up when the facts are taken.
    HelperBeside {
        /// Its deadline (policy `limits.probe_timeout_ms`).
        timeout: std::time::Duration,
    },
}

/// The GPU helper of an installed static binary that has no `hpcc` beside
/// it (packages install the hook and the runtime in `/usr/libexec/hpcc/`).
pub const GPU_HELPER: &str = "/usr/bin/hpcc";

impl GpuProbe {
    /// How this build takes the GPU facts on a cache miss: NVML in this
    /// process when the build is dynamic, the helper ([`GpuProbe::helper`])
    /// when it is statically linked (the hook always; `hpcc-runtime` as
    /// packaged), since a static binary must not `dlopen`.
    pub fn for_this_build(timeout: std::time::Duration) -> GpuProbe {
        if cfg!(target_feature = "crt-static") {
            GpuProbe::helper(timeout)
        } else {
            GpuProbe::InProcess
        }
    }

    /// The dynamic `hpcc`, run with an empty environment, `/` as cwd and
    /// `timeout` ([`GpuProbe::HelperBeside`]): found only when the facts
    /// are taken, so a start from the warm cache does not look for it.
    pub fn helper(timeout: std::time::Duration) -> GpuProbe {
        GpuProbe::HelperBeside { timeout }
    }

    /// The `hpcc` beside this program when there is one (a build tree, a
    /// package that installs both in one directory), else [`GPU_HELPER`].
    /// The directory is this program's own, as the kernel names it:
    /// nothing an image or the environment controls. The helper must be
    /// root's and not writable by others ([`gpus_from_helper`]).
    fn helper_beside_this_program() -> PathBuf {
        std::fs::read_link("/proc/self/exe")
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("hpcc")))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(GPU_HELPER))
    }

    /// The GPU facts, and whether they may be cached for the boot: a helper
    /// that failed or timed out says nothing about the node, so the next
    /// launch asks again.
    fn take(&self) -> (GpuFingerprint, bool) {
        match self {
            GpuProbe::InProcess => (gpus(), true),
            GpuProbe::HelperBeside { timeout } => GpuProbe::Helper {
                exe: Self::helper_beside_this_program(),
                timeout: *timeout,
            }
            .take(),
            GpuProbe::Helper { exe, timeout } => match gpus_from_helper(exe, *timeout) {
                Ok(g) => (g, true),
                Err(why) => (
                    GpuFingerprint {
                        nvidia: None,
                        nvml_note: Some(why),
                    },
                    false,
                ),
            },
        }
    }
}

/// Largest answer read from the GPU helper.
const MAX_HELPER_REPLY: usize = 1 << 20;

/// Why a GPU helper cannot be trusted.
fn untrusted_helper(exe: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let check = |p: &Path, want_file: bool| -> Option<String> {
        let m = match std::fs::metadata(p) {
            Ok(m) => m,
            Err(e) => return Some(format!("{}: {e}", p.display())),
        };
        if want_file && !m.is_file() {
            return Some(format!("{} is not a regular file", p.display()));
        }
        if m.uid() != 0 || m.mode() & 0o022 != 0 {
            return Some(format!(
                "{} is not owned by root or is writable by others (uid {}, mode {:o})",
                p.display(),
                m.uid(),
                m.mode() & 0o7777
            ));
        }
        None
    };
    check(exe, true).or_else(|| check(exe.parent().unwrap_or(Path::new("/")), false))
}

/// Runs the GPU helper `exe fingerprint --gpus` bounded (see
/// [`crate::process::run_bounded`]: empty environment, `/` as cwd,
/// death with the caller, `timeout`) and reads its JSON. A failure is the
/// sentence for `nvml_note` ("no NVIDIA GPU seen: ..."): the launch goes on
/// as on a node without NVIDIA GPU.
pub fn gpus_from_helper(
    exe: &Path,
    timeout: std::time::Duration,
) -> Result<GpuFingerprint, String> {
    use crate::process::{run_bounded, ChildLimits};
    let none = |why: String| {
        Err(format!(
            "no NVIDIA GPU seen: this statically linked build does not load NVML itself and its GPU helper {} {why}",
            exe.display()
        ))
    };
    if let Some(why) = untrusted_helper(exe) {
        return none(format!("is not used ({why})"));
    }
    let limits = ChildLimits {
        cpu_secs: timeout.as_secs() + 1,
        address_space: None,
    };
    let (out, err, status) =
        match run_bounded(exe, &["fingerprint", "--gpus"], &[], timeout, limits) {
            Ok(r) => r,
            Err(crate::process::HelperError::Timeout { ms }) => {
                return none(format!(
                    "did not answer within {ms} ms (policy limits.probe_timeout_ms): it was killed"
                ))
            }
            Err(e) => return none(format!("failed: {e}")),
        };
    if !status.success() || out.len() > MAX_HELPER_REPLY {
        return none(format!(
            "failed ({status}): {}",
            crate::text::escape(String::from_utf8_lossy(&err).trim())
        ));
    }
    match serde_json::from_slice::<GpuFingerprint>(&out) {
        Ok(g) => Ok(g),
        Err(e) => none(format!(
            "answered something that is not a GPU fingerprint: {e}"
        )),
    }
}

/// Asks NVML; an absent library or driver means "no NVIDIA GPU", never an
/// error. NVML starts threads: callers that later `setns` must do so in a
/// child process. A statically linked build (`hpcc-hook`) has no NVML: a
/// static binary must not `dlopen`.
#[cfg(target_feature = "crt-static")]
pub fn gpus() -> GpuFingerprint {
    GpuFingerprint {
        nvidia: None,
        nvml_note: Some(
            "no NVIDIA GPU seen: this statically linked build does not load NVML".into(),
        ),
    }
}

/// Asks NVML; an absent library or driver means "no NVIDIA GPU", never an
/// error. NVML starts threads: callers that later `setns` must do so in a
/// child process.
#[cfg(not(target_feature = "crt-static"))]
pub fn gpus() -> GpuFingerprint {
    use nvml_wrapper::Nvml;
    let nvml = match Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            return GpuFingerprint {
                nvidia: None,
                nvml_note: Some(format!("no NVIDIA GPU: NVML unavailable ({e})")),
            }
        }
    };
    let driver_version = nvml.sys_driver_version().unwrap_or_default();
    let cuda_driver_version = nvml.sys_cuda_driver_version().ok().map(|v| {
        Version::from_parts(&[
            nvml_wrapper::cuda_driver_version_major(v) as u64,
            nvml_wrapper::cuda_driver_version_minor(v) as u64,
        ])
    });
    let mut devices = Vec::new();
    let count = nvml.device_count().unwrap_or(0);
    for index in 0..count.min(64) {
        let Ok(d) = nvml.device_by_index(index) else {
            continue;
        };
        let cc = d.cuda_compute_capability().ok();
        devices.push(NvidiaDevice {
            index,
            name: d.name().unwrap_or_default(),
            uuid: d.uuid().unwrap_or_default(),
            compute_capability: cc
                .map(|c| (c.major as u32, c.minor as u32))
                .unwrap_or((0, 0)),
            minor_number: d.minor_number().ok(),
        });
    }
    GpuFingerprint {
        nvidia: Some(NvidiaFingerprint {
            driver_version,
            cuda_driver_version,
            devices,
        }),
        nvml_note: None,
    }
}

impl NodeFingerprint {
    /// Takes the fingerprint of this node now (no cache), NVML in this
    /// process.
    pub fn take(policy: &Policy) -> NodeFingerprint {
        Self::take_with(policy, &GpuProbe::InProcess)
    }

    /// Takes the fingerprint of this node now (no cache), the GPU facts
    /// from `probe`.
    pub fn take_with(policy: &Policy, probe: &GpuProbe) -> NodeFingerprint {
        Self::take_cacheable(policy, probe).0
    }

    /// The fingerprint, and whether it may be cached (see [`GpuProbe`]).
    fn take_cacheable(policy: &Policy, probe: &GpuProbe) -> (NodeFingerprint, bool) {
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (gpu, cacheable) = probe.take();
        let fp = NodeFingerprint {
            schema: SCHEMA,
            hostname,
            cpu: cpu(),
            kernel: kernel(),
            libc: libc_info(),
            gpu,
            mpi: policy
                .mpi
                .iter()
                .map(|(name, m)| HostMpiFingerprint {
                    name: name.clone(),
                    abi: m.abi,
                    libraries: m
                        .libraries
                        .iter()
                        .map(|p| HostLibrary::inspect(p))
                        .collect(),
                })
                .collect(),
            libfabric: policy
                .libfabric
                .as_ref()
                .map(|l| HostLibrary::inspect(&l.library)),
            ucx: policy
                .ucx
                .iter()
                .flat_map(|u| u.libraries.iter().map(|p| HostLibrary::inspect(p)))
                .collect(),
        };
        (fp, cacheable)
    }

    /// The fingerprint from the per-boot cache when it is valid for this
    /// boot, this hpcc and this policy; otherwise taken now and cached.
    /// Cache problems are logged and never fatal.
    pub fn cached(policy: &Policy) -> NodeFingerprint {
        Self::cached_with(policy, &GpuProbe::InProcess)
    }

    /// The fingerprint from the per-boot cache, only when it is there and
    /// valid for this boot, this hpcc and this policy.
    pub fn from_cache(policy: &Policy) -> Option<NodeFingerprint> {
        if !policy.cache.enabled {
            return None;
        }
        let key = cache_key(policy)?;
        read_cache(&policy.cache.dir.join("fingerprint.json"), &key)
    }

    /// [`NodeFingerprint::cached`], the GPU facts of a cache miss from
    /// `probe`.
    pub fn cached_with(policy: &Policy, probe: &GpuProbe) -> NodeFingerprint {
        if !policy.cache.enabled {
            return Self::take_with(policy, probe);
        }
        let key = cache_key(policy);
        let path = policy.cache.dir.join("fingerprint.json");
        if let Some(fp) = key.as_deref().and_then(|k| read_cache(&path, k)) {
            tracing::debug!(cache = %path.display(), "fingerprint from cache");
            return fp;
        }
        let (fp, cacheable) = Self::take_cacheable(policy, probe);
        if let (Some(k), true) = (key, cacheable) {
            if let Err(e) = write_cache(&policy.cache.dir, &path, &k, &fp) {
                tracing::debug!(cache = %path.display(), error = %e, "fingerprint not cached");
            }
        }
        fp
    }
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    key: String,
    fingerprint: NodeFingerprint,
}

/// boot id + hpcc version + schema + the policy's host declarations: any
/// change gives a new key, and the old file is simply not used.
fn cache_key(policy: &Policy) -> Option<String> {
    let boot = read_bounded("/proc/sys/kernel/random/boot_id", 128)?;
    let decl = serde_json::to_string(&(&policy.mpi, &policy.libfabric, &policy.ucx)).ok()?;
    // FNV-1a: a change detector, not a security boundary (the cache is
    // root-owned and only root writes it).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in decl.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    Some(format!(
        "{}/{}/{}/{h:016x}",
        boot.trim(),
        env!("CARGO_PKG_VERSION"),
        SCHEMA
    ))
}

fn read_cache(path: &Path, key: &str) -> Option<NodeFingerprint> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    // Only a regular file that root owns and nobody else can write counts;
    // anything else could have been planted.
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o022 != 0 || meta.len() > 1 << 20 {
        return None;
    }
    let text = read_bounded(path.to_str()?, 1 << 20)?;
    let file: CacheFile = serde_json::from_str(&text).ok()?;
    (file.key == key && file.fingerprint.schema == SCHEMA).then_some(file.fingerprint)
}

fn write_cache(dir: &Path, path: &Path, key: &str, fp: &NodeFingerprint) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !nix::unistd::geteuid().is_root() {
        return Err(std::io::Error::other("only root writes the cache"));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let body = serde_json::to_vec(&CacheFile {
        key: key.to_owned(),
        fingerprint: fp.clone(),
    })
    .map_err(std::io::Error::other)?;
    crate::io::write_atomic_unsynced(
        path,
        &body,
        crate::io::FileMode {
            mode: 0o644,
            owner: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_first_cpu_only() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\nflags\t\t: fpu sse avx2\n\nprocessor\t: 1\nflags\t\t: fpu\n";
        let (flags, model, vendor) = parse_cpuinfo(text);
        assert!(flags.contains("avx2"));
        assert_eq!(model.as_deref(), Some("Xeon"));
        assert_eq!(vendor.as_deref(), Some("GenuineIntel"));
    }

    #[test]
    fn takes_this_node() {
        let fp = NodeFingerprint::take(&Policy::default());
        assert!(!fp.cpu.platform.is_empty());
        assert!(
            archspec::cpu::Microarchitecture::known_targets()
                .contains_key(&fp.cpu.microarchitecture),
            "{}",
            fp.cpu.microarchitecture
        );
        assert!(fp.kernel.version.is_some());
        if cfg!(target_env = "gnu") {
            assert!(fp.libc.version.is_some());
        }
        // Round-trips through JSON, as the cache and the CLI need.
        let json = serde_json::to_string(&fp).unwrap();
        assert_eq!(serde_json::from_str::<NodeFingerprint>(&json).unwrap(), fp);
    }

    #[test]
    fn missing_host_library_is_reported_not_fatal() {
        let lib = HostLibrary::inspect(Path::new("/nonexistent/libmpi.so.12"));
        assert!(!lib.usable());
        assert!(lib.error.unwrap().contains("/nonexistent/libmpi.so.12"));
    }

    /// Root only (write_cache refuses anyone else by design); the
    /// workspace tests run as root in CI (tests/run.sh), so this asserts
    /// root instead of passing without having run.
    #[test]
    fn gpu_helper_gets_nothing_of_ours_and_a_deadline() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::geteuid().is_root() {
            // The helper must be root-owned: covered by the e2e suite.
            return;
        }
        let t = crate::testutil::TempDir::new("gpu-helper");
        std::fs::set_permissions(&t.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        let seen = t.0.join("seen");
        let script = |name: &str, body: &str, mode: u32| {
            let p = t.0.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let ok = script(
            "ok",
            &format!(
                "{{ env; pwd; }} > {}\nprintf '{{\"nvidia\":null,\"nvml_note\":\"fake\"}}'",
                seen.display()
            ),
            0o755,
        );
        let g = gpus_from_helper(&ok, std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(g.nvml_note.as_deref(), Some("fake"));
        let seen = std::fs::read_to_string(&seen).unwrap();
        // An empty environment (the shell adds only PWD) and / as cwd.
        let lines: Vec<&str> = seen.lines().collect();
        assert!(
            lines[..lines.len() - 1]
                .iter()
                .all(|l| l.starts_with("PWD=")),
            "{seen}"
        );
        assert_eq!(lines.last(), Some(&"/"), "{seen}");
        // Past the deadline: killed, an error, quickly.
        let slow = script("slow", "exec sleep 30", 0o755);
        let t0 = std::time::Instant::now();
        let e = gpus_from_helper(&slow, std::time::Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("did not answer within 300 ms"), "{e}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        // Writable by others: never run.
        let open = script("open", "echo {}", 0o777);
        let e = gpus_from_helper(&open, std::time::Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("writable by others"), "{e}");
        // Garbage: an error, not a panic; a failure is never cached.
        let junk = script("junk", "echo '{\"nvidia\": 5}'", 0o755);
        assert!(gpus_from_helper(&junk, std::time::Duration::from_secs(5)).is_err());
        let probe = GpuProbe::Helper {
            exe: junk,
            timeout: std::time::Duration::from_secs(5),
        };
        assert!(!probe.take().1);
    }

    #[test]
    fn cache_round_trip_and_key_change() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (only root writes the fingerprint cache): run the workspace tests as root, as tests/run.sh and CI do"
        );
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hpcc-cache-test-{}", std::process::id()));
        let mut policy = Policy::default();
        policy.cache.dir = dir.clone();
        let first = NodeFingerprint::cached(&policy);
        let path = dir.join("fingerprint.json");
        assert!(path.exists());
        let key = cache_key(&policy).unwrap();
        assert_eq!(read_cache(&path, &key).unwrap(), first);
        assert!(read_cache(&path, "another-boot").is_none());
        // A cache file someone else could have written is not trusted.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(
            read_cache(&path, &key).is_none(),
            "world-writable cache read"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        assert!(read_cache(&path, &key).is_none(), "non-root cache read");
        std::os::unix::fs::chown(&path, Some(0), None).unwrap();
        assert_eq!(read_cache(&path, &key).unwrap(), first);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
