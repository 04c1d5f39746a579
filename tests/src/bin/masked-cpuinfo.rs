//! `masked-cpuinfo TARGET`: prints this machine's `/proc/cpuinfo` with
//! every CPU's `flags` line replaced by what a CPU of archspec's `TARGET`
//! (`x86_64_v2`, `sapphirerapids`, ...) reports: the host's flags that no
//! archspec target of the family lists (system facts such as `fpu`, `lm`,
//! `hypervisor`), plus every feature of TARGET. The vendor becomes
//! TARGET's (unless it is generic) and the model says it is masked.
//!
//! `tests/setup/masked-cpu.sh` binds the result over `/proc/cpuinfo` in a
//! private mount namespace, so hpcc's fingerprint (and archspec's host
//! detection) see that CPU: the suite can then be run as if on another
//! machine (issue 17).

use std::collections::BTreeSet;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(target) = std::env::args().nth(1) else {
        eprintln!("usage: masked-cpuinfo TARGET");
        return ExitCode::from(2);
    };
    let known = archspec::cpu::Microarchitecture::known_targets();
    let Some(t) = known.get(&target) else {
        eprintln!("masked-cpuinfo: archspec knows no target {target:?}");
        return ExitCode::from(2);
    };
    let family = t.family().name().to_owned();
    if family != std::env::consts::ARCH {
        eprintln!(
            "masked-cpuinfo: {target} is {family}, this machine is {}",
            std::env::consts::ARCH
        );
        return ExitCode::from(2);
    }
    // Every ISA feature archspec knows for this family: what the mask may
    // take away or add.
    let isa: BTreeSet<String> = known
        .values()
        .filter(|m| m.family().name() == family)
        .flat_map(|m| m.all_features())
        .collect();
    let wanted: BTreeSet<String> = t.all_features().into_iter().collect();
    let text = match std::fs::read_to_string("/proc/cpuinfo") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("masked-cpuinfo: /proc/cpuinfo: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = String::new();
    let vendor = (t.vendor() != "generic").then(|| t.vendor().to_owned());
    for line in text.lines() {
        let key = line.split(':').next().unwrap_or("").trim();
        match key {
            "flags" | "Features" => {
                let (k, v) = line.split_once(':').unwrap_or((line, ""));
                let mut flags: BTreeSet<String> = v
                    .split_whitespace()
                    .filter(|f| !isa.contains(*f))
                    .map(str::to_owned)
                    .collect();
                flags.extend(wanted.iter().cloned());
                // Linux spells SSE3 `pni`.
                if flags.remove("sse3") {
                    flags.insert("pni".into());
                }
                let joined: Vec<&str> = flags.iter().map(String::as_str).collect();
                out += &format!("{k}: {}\n", joined.join(" "));
            }
            "vendor_id" if vendor.is_some() => {
                out += &format!("vendor_id\t: {}\n", vendor.as_deref().unwrap_or_default())
            }
            "model name" => out += &format!("model name\t: hpcc masked CPU ({target})\n"),
            _ => {
                out += line;
                out.push('\n');
            }
        }
    }
    // A closed pipe (`| head`) is the reader's choice, not an error here.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    ExitCode::SUCCESS
}
