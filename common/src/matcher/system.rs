//! System rules: the image's libc against what hpcc injects, and the host
//! kernel (minimum release, modules, user namespaces).

use super::{Check, Finding, Level, Verdict};
use crate::annotations::{ImageSpec, LibcImplementation};
use crate::fingerprint::NodeFingerprint;

pub(super) fn libc(image: &ImageSpec, node: &NodeFingerprint, out: &mut Verdict) {
    let host = format!(
        "{} {}",
        node.libc.implementation,
        node.libc
            .version
            .as_ref()
            .map_or(String::new(), |v| v.to_string())
    );
    if image.libc == Some(LibcImplementation::Musl) && out.selection.nvidia_gpus {
        out.push(
            Finding::new(
                Check::Libc,
                Level::Fatal,
                "the image uses musl, and the NVIDIA driver libraries put into it for its GPUs are built against glibc: they cannot load",
            )
            .evidence("musl", host),
        );
        return;
    }
    if let (Some(img), Some(have), true) =
        (&image.glibc, &node.libc.version, out.selection.injects())
    {
        if have > img {
            // Informational: the tweak planner checks every injected
            // library's GLIBC_x.y needs against the image's glibc and
            // reports what does not fit; an older glibc alone costs nothing.
            out.push(
                Finding::new(
                    Check::Libc,
                    Level::Ok,
                    format!("the image's glibc {img} is older than the host's {have}: injected host libraries are checked symbol by symbol at launch"),
                )
                .evidence(format!("glibc {img}"), format!("glibc {have}")),
            );
            return;
        }
    }
    if let Some(l) = image.libc {
        let reason = if l == LibcImplementation::Musl {
            "the image uses musl: no host library is put into it".to_owned()
        } else {
            "the image's libc is compatible with what hpcc injects".to_owned()
        };
        out.push(Finding::new(Check::Libc, Level::Ok, reason).evidence(l.to_string(), host));
    } else if image.glibc.is_some() {
        out.push(Finding::new(
            Check::Libc,
            Level::Ok,
            "the image's libc is compatible with what hpcc injects",
        ));
    }
}

pub(super) fn kernel(image: &ImageSpec, node: &NodeFingerprint, out: &mut Verdict) {
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
                    format!(
                        "the host kernel release {:?} could not be compared with {min}",
                        crate::text::escape(&have)
                    ),
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
mod tests {
    use super::super::tests::{image, node, verdict, with_mpich};
    use super::super::{Check, Level, Score};
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
        // The host MPI is not chosen for a musl image: its own MPI runs.
        assert!(v.selection.mpi.is_none());
        assert_eq!(v.score(), Score::Orange, "{v:#?}");
        assert!(v
            .findings()
            .iter()
            .any(|f| f.check == Check::Mpi && f.reason.contains("musl")));
        // The 2022 draft's key says the same.
        let img = image(&[
            (
                "org.supercontainers.hardware.cpu.optimized.version",
                "icelake",
            ),
            ("org.supercontainers.libc.provider", "musl"),
            ("org.supercontainers.mpi.provider", "mpich"),
            ("org.supercontainers.mpi.portability.mode", "mpi_replace"),
        ]);
        let v = verdict(&img, &with_mpich(node("icelake")));
        assert!(v.selection.mpi.is_none(), "{v:#?}");
        assert!(!v.with_level(Level::Fatal).any(|f| f.check == Check::Libc));
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
        assert_eq!(v.score(), Score::Red);
        assert!(v
            .findings()
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
        assert_eq!(verdict(&img, &node("icelake")).score(), Score::Green);
        let mut n = node("icelake");
        n.kernel.user_namespaces = false;
        assert_eq!(verdict(&img, &n).score(), Score::Red);
    }
}
