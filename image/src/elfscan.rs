//! What one ELF object from a layer says, read from its bytes in memory:
//! linkage (soname, `DT_NEEDED`, symbol versions), the x86-64 ISA level
//! notes (`.note.gnu.property`), the minimum kernel of its ABI tag, version
//! strings of MPI/fabric libraries, and, when asked, the CPU features its
//! instructions use, from a bounded sample of `.text` decoded with
//! `iced-x86`. Nothing is loaded or executed.

use hpcc_common::elf::{ElfInfo, ObjectParts};
use hpcc_common::version::Version;
use iced_x86::{CpuidFeature, Decoder, DecoderOptions, Instruction};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
/// `e_machine` of i386.
pub const EM_386: u16 = 3;

/// `GNU_PROPERTY_X86_ISA_1_NEEDED` (binutils >= 2.36).
const ISA_1_NEEDED: u32 = 0xc000_8002;
/// `GNU_PROPERTY_X86_ISA_1_USED` (binutils >= 2.36).
const ISA_1_USED: u32 = 0xc001_0002;
/// `NT_GNU_PROPERTY_TYPE_0`.
const NT_GNU_PROPERTY_TYPE_0: u32 = 5;
/// `NT_GNU_ABI_TAG`.
const NT_GNU_ABI_TAG: u32 = 1;

/// What kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ElfKind {
    /// A program (`ET_EXEC`, or `ET_DYN` with an interpreter: PIE).
    Executable,
    /// A shared library.
    SharedObject,
    /// Relocatable objects, core files.
    Other,
}

/// The x86-64 micro-architecture levels (psABI), as a number 1..=4.
pub fn level_name(level: u8) -> &'static str {
    match level {
        4 => "x86_64_v4",
        3 => "x86_64_v3",
        2 => "x86_64_v2",
        _ => "x86_64",
    }
}

/// The highest level set in an `ISA_1_*` bit mask (bit 0 baseline, bit 1
/// v2, bit 2 v3, bit 3 v4).
pub fn level_of_bits(bits: u32) -> u8 {
    (0..4u8)
        .rev()
        .find(|i| bits & (1 << i) != 0)
        .map_or(1, |i| i + 1)
}

/// Instructions seen in a sample of `.text`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsaSample {
    /// Bytes of `.text` decoded.
    pub bytes: usize,
    /// Instructions decoded.
    pub instructions: u64,
    /// The highest x86-64 level an instruction needs (1..=4).
    pub level: u8,
    /// One instruction of that level: `address mnemonic (feature)`.
    pub witness: Option<String>,
    /// The object executes CPUID: it picks code paths at run time, so its
    /// newer instructions need not run on every CPU.
    pub dispatches: bool,
    /// CPUID features beyond the x86-64 baseline, with how many instructions
    /// used each (iced-x86 names: `AVX512F`, `AVX2`, `SSE4_2`, `AES`...).
    pub features: BTreeMap<String, u64>,
}

/// The facts of one ELF object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElfFacts {
    /// `e_machine`.
    pub machine: u16,
    /// 64-bit.
    pub is_64: bool,
    /// Program, library or other.
    pub kind: ElfKind,
    /// `PT_INTERP`.
    pub interp: Option<String>,
    /// `DT_SONAME`.
    pub soname: Option<String>,
    /// `DT_NEEDED`.
    pub needed: Vec<String>,
    /// Symbol versions needed, per library (`libfabric.so.1`, `FABRIC_1.3`).
    pub version_needs: Vec<(String, String)>,
    /// Symbol versions defined.
    pub version_defs: BTreeSet<String>,
    /// `GNU_PROPERTY_X86_ISA_1_NEEDED` bits.
    pub isa_needed: Option<u32>,
    /// `GNU_PROPERTY_X86_ISA_1_USED` bits.
    pub isa_used: Option<u32>,
    /// Minimum kernel from `.note.ABI-tag`.
    pub abi_kernel: Option<Version>,
    /// Defines `STT_GNU_IFUNC` symbols (run-time dispatch).
    pub ifunc: bool,
    /// Size of `.text`.
    pub text_size: u64,
    /// Sampled instructions, when sampled.
    pub sample: Option<IsaSample>,
    /// Standalone version-like strings (`4.0.2`, `v4.1.4`), for the
    /// libraries whose versions hpcc reads.
    pub version_strings: Vec<String>,
    /// Product markers found in the bytes (`MPICH Version`, `Open MPI`...).
    pub markers: Vec<String>,
}

/// What else to extract while parsing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOptions {
    /// Decode this many bytes of `.text` (x86 only).
    pub sample_bytes: Option<usize>,
    /// Collect version strings and product markers.
    pub strings: bool,
}

/// Product markers looked for in MPI libraries.
pub const MARKERS: &[&str] = &[
    "MPICH Version",
    "Open MPI",
    "Intel(R) MPI Library",
    "MVAPICH",
    "Cray MPICH",
];

/// Whether `bytes` start like an ELF file.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// Parses an ELF object; `None` when it is not one the bounded parser of
/// [`hpcc_common::elf`] reads (goblin's `Elf::parse` is not used: it indexes
/// every string table and follows version chains without a budget, and
/// image files are hostile).
pub fn scan(bytes: &[u8], opts: ScanOptions) -> Option<ElfFacts> {
    let info = ElfInfo::parse(bytes, "image object").ok()?;
    let parts = ObjectParts::parse(bytes, "image object").ok()?;
    let kind = match parts.e_type {
        goblin::elf::header::ET_EXEC => ElfKind::Executable,
        // A PIE program has an interpreter and no soname; libc.so.6 has
        // both (it runs, printing its version) and is a library.
        goblin::elf::header::ET_DYN if parts.interp.is_some() && info.soname.is_none() => {
            ElfKind::Executable
        }
        goblin::elf::header::ET_DYN => ElfKind::SharedObject,
        _ => ElfKind::Other,
    };
    let mut isa_needed = None;
    let mut isa_used = None;
    let mut abi_kernel = None;
    for note in &parts.notes {
        if note.name != "GNU" {
            continue;
        }
        match note.n_type {
            NT_GNU_PROPERTY_TYPE_0 => {
                for (ty, data) in properties(note.desc, info.is_64) {
                    let bits = data
                        .get(..4)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    match ty {
                        ISA_1_NEEDED => isa_needed = bits.or(isa_needed),
                        ISA_1_USED => isa_used = bits.or(isa_used),
                        _ => {}
                    }
                }
            }
            NT_GNU_ABI_TAG if note.desc.len() >= 16 => {
                let w = |i: usize| {
                    u32::from_le_bytes([
                        note.desc[i],
                        note.desc[i + 1],
                        note.desc[i + 2],
                        note.desc[i + 3],
                    ]) as u64
                };
                // OS 0 is Linux.
                if w(0) == 0 {
                    abi_kernel = Some(Version::from_parts(&[w(4), w(8), w(12)]));
                }
            }
            _ => {}
        }
    }
    let ifunc = parts.ifunc;
    let text = parts.text;
    let text_size = text.map_or(0, |(_, t)| t.len() as u64);
    let machine = info.machine;
    let sample = match (opts.sample_bytes, text) {
        (Some(n), Some((addr, t))) if machine == EM_X86_64 || machine == EM_386 => {
            let bitness = if machine == EM_X86_64 { 64 } else { 32 };
            Some(sample_x86(&t[..t.len().min(n)], addr, bitness))
        }
        _ => None,
    };
    let (version_strings, markers) = if opts.strings {
        (version_strings(bytes), find_markers(bytes))
    } else {
        (vec![], vec![])
    };
    Some(ElfFacts {
        machine,
        is_64: info.is_64,
        kind,
        interp: parts.interp,
        soname: info.soname,
        needed: info.needed,
        version_needs: info.version_needs,
        version_defs: info.version_defs,
        isa_needed,
        isa_used,
        abi_kernel,
        ifunc,
        text_size,
        sample,
        version_strings,
        markers,
    })
}

/// The `(pr_type, data)` entries of a GNU property note.
fn properties(desc: &[u8], is_64: bool) -> Vec<(u32, &[u8])> {
    let align = if is_64 { 8 } else { 4 };
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + 8 <= desc.len() && out.len() < 64 {
        let ty = u32::from_le_bytes([desc[off], desc[off + 1], desc[off + 2], desc[off + 3]]);
        let size = u32::from_le_bytes([desc[off + 4], desc[off + 5], desc[off + 6], desc[off + 7]])
            as usize;
        let start = off + 8;
        let Some(end) = start.checked_add(size).filter(|e| *e <= desc.len()) else {
            break;
        };
        out.push((ty, &desc[start..end]));
        off = end.div_ceil(align) * align;
    }
    out
}

/// The x86-64 level a CPUID feature belongs to: `Some(1)` for baseline
/// features, `Some(2..=4)` for the levels, `None` for features outside the
/// levels (AES, SHA, RDRAND...).
pub fn feature_level(f: CpuidFeature) -> Option<u8> {
    use CpuidFeature as F;
    Some(match f {
        F::AVX512F | F::AVX512BW | F::AVX512CD | F::AVX512DQ | F::AVX512VL => 4,
        F::AVX
        | F::AVX2
        | F::BMI1
        | F::BMI2
        | F::F16C
        | F::FMA
        | F::LZCNT
        | F::MOVBE
        | F::XSAVE => 3,
        F::CMPXCHG16B | F::POPCNT | F::SSE3 | F::SSSE3 | F::SSE4_1 | F::SSE4_2 => 2,
        F::INTEL8086
        | F::INTEL8086_ONLY
        | F::INTEL186
        | F::INTEL286
        | F::INTEL286_ONLY
        | F::INTEL386
        | F::INTEL386_ONLY
        | F::INTEL386_A0_ONLY
        | F::INTEL486
        | F::INTEL486_A_ONLY
        | F::X64
        | F::CMOV
        | F::CX8
        | F::FPU
        | F::FPU287
        | F::FPU387
        | F::FXSR
        | F::MMX
        | F::SSE
        | F::SSE2
        | F::SYSCALL
        | F::TSC
        | F::MULTIBYTENOP
        | F::PAUSE
        | F::CLFSH
        | F::CPUID
        | F::SEP
        | F::MSR
        | F::RDPMC => 1,
        other => {
            let n = format!("{other:?}");
            // The other AVX-512 extensions need AVX512F; the VEX-encoded
            // AVX extensions need AVX2-class hardware.
            if n.starts_with("AVX512") {
                4
            } else if n.starts_with("AVX_") {
                3
            } else {
                return None;
            }
        }
    })
}

/// Decodes `text` (at virtual address `addr`) and records the features its
/// instructions need.
pub fn sample_x86(text: &[u8], addr: u64, bitness: u32) -> IsaSample {
    let mut s = IsaSample {
        bytes: text.len(),
        level: 1,
        ..IsaSample::default()
    };
    let mut decoder = Decoder::with_ip(bitness, text, addr, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        if instr.is_invalid() {
            continue;
        }
        s.instructions += 1;
        // TZCNT is encoded as REP BSF, which older CPUs execute as BSF:
        // compilers emit it for baseline targets, so it proves nothing.
        if instr.mnemonic() == iced_x86::Mnemonic::Tzcnt {
            continue;
        }
        for f in instr.cpuid_features() {
            if *f == CpuidFeature::CPUID {
                s.dispatches = true;
            }
            let lvl = feature_level(*f);
            if lvl != Some(1) {
                *s.features.entry(format!("{f:?}")).or_default() += 1;
            }
            if let Some(l) = lvl {
                if l > s.level {
                    s.level = l;
                    s.witness = Some(format!("{:#x} {:?} ({f:?})", instr.ip(), instr.mnemonic()));
                }
            }
        }
    }
    s
}

/// Standalone strings that look like versions (`4.0.2`, `v4.1.4`, `1.17.0`):
/// NUL-delimited printable runs, at most 64 distinct.
pub fn version_strings(bytes: &[u8]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for run in bytes.split(|b| *b == 0) {
        if run.len() < 3 || run.len() > 24 {
            continue;
        }
        let s = match std::str::from_utf8(run) {
            Ok(s) => s,
            Err(_) => continue,
        };
        let core = s.strip_prefix('v').unwrap_or(s);
        let parts: Vec<&str> = core.split('.').collect();
        if (2..=4).contains(&parts.len())
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()))
        {
            out.insert(s.to_owned());
            if out.len() >= 64 {
                break;
            }
        }
    }
    out.into_iter().collect()
}

fn find_markers(bytes: &[u8]) -> Vec<String> {
    MARKERS
        .iter()
        .filter(|m| memchr::memmem::find(bytes, m.as_bytes()).is_some())
        .map(|m| (*m).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_of_instructions() {
        // vaddps zmm0, zmm1, zmm2 (EVEX): AVX512F.
        let s = sample_x86(&[0x62, 0xf1, 0x74, 0x48, 0x58, 0xc2], 0x1000, 64);
        assert_eq!(s.level, 4, "{s:?}");
        assert!(s.features.contains_key("AVX512F"));
        assert!(s.witness.unwrap().contains("0x1000"));
        // vaddps ymm0, ymm1, ymm2 (VEX): AVX.
        let s = sample_x86(&[0xc5, 0xf4, 0x58, 0xc2], 0, 64);
        assert_eq!(s.level, 3);
        // tzcnt eax, ebx (rep bsf): baseline.
        assert_eq!(sample_x86(&[0xf3, 0x0f, 0xbc, 0xc3], 0, 64).level, 1);
        // popcnt rax, rbx: v2.
        let s = sample_x86(&[0xf3, 0x48, 0x0f, 0xb8, 0xc3], 0, 64);
        assert_eq!(s.level, 2);
        // addps xmm0, xmm1; cpuid: baseline, dispatching.
        let s = sample_x86(&[0x0f, 0x58, 0xc1, 0x0f, 0xa2], 0, 64);
        assert_eq!(s.level, 1);
        assert!(s.dispatches);
        // aesenc: outside the levels, reported.
        let s = sample_x86(&[0x66, 0x0f, 0x38, 0xdc, 0xc1], 0, 64);
        assert_eq!(s.level, 1);
        assert!(s.features.contains_key("AES"), "{s:?}");
    }

    #[test]
    fn isa_bits() {
        assert_eq!(level_of_bits(0b1111), 4);
        assert_eq!(level_of_bits(0b0011), 2);
        assert_eq!(level_of_bits(0), 1);
        assert_eq!(level_name(3), "x86_64_v3");
    }

    #[test]
    fn property_note_walk() {
        // One ISA_1_NEEDED property with v4|baseline, padded to 8.
        let mut d = Vec::new();
        d.extend(ISA_1_NEEDED.to_le_bytes());
        d.extend(4u32.to_le_bytes());
        d.extend(9u32.to_le_bytes());
        d.extend([0u8; 4]);
        d.extend(ISA_1_USED.to_le_bytes());
        d.extend(4u32.to_le_bytes());
        d.extend(1u32.to_le_bytes());
        let p = properties(&d, true);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, ISA_1_NEEDED);
        assert_eq!(
            level_of_bits(u32::from_le_bytes(p[0].1.try_into().unwrap())),
            4
        );
        // Truncated: no panic, nothing read past the end.
        assert!(properties(&d[..10], true).is_empty());
    }

    #[test]
    fn host_libc_facts() {
        let libc = std::path::Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if !cfg!(target_arch = "x86_64") || !libc.exists() {
            return;
        }
        let bytes = std::fs::read(libc).unwrap();
        let f = scan(
            &bytes,
            ScanOptions {
                sample_bytes: Some(64 << 10),
                strings: false,
            },
        )
        .unwrap();
        assert_eq!(f.kind, ElfKind::SharedObject);
        assert!(f.ifunc, "glibc dispatches memcpy & co through IFUNCs");
        assert!(f.version_defs.iter().any(|v| v.starts_with("GLIBC_2.")));
        assert!(f.sample.unwrap().instructions > 1000);
    }

    #[test]
    fn version_like_strings() {
        let v = version_strings(b"\0MPICH Version:\t%s\x004.0.2\0v4.1.4\0 1.2 \0a.b\x001.17.0\0");
        assert_eq!(v, ["1.17.0", "4.0.2", "v4.1.4"]);
    }

    #[test]
    fn garbage_is_not_elf() {
        assert!(scan(b"\x7fELF garbage", ScanOptions::default()).is_none());
        assert!(!is_elf(b"#!/bin/sh"));
    }

    #[test]
    fn hostile_version_chains_are_bounded() {
        use hpcc_common::elf::crafted::verneed_bomb;
        // An honest small one reads as before.
        let f = scan(&verneed_bomb(2, 3), ScanOptions::default()).unwrap();
        assert_eq!(f.kind, ElfKind::SharedObject);
        assert_eq!(f.soname.as_deref(), Some("libbomb.so.1"));
        assert_eq!(f.needed, ["libc.so.6"]);
        assert_eq!(
            f.version_needs,
            [("libc.so.6".to_string(), "GLIBC_2.2.5".to_string())]
        );
        // 4096 records sharing one chain of 65,535: 268 million version
        // needs through goblin's `Elf::parse`, which this scan used; the
        // bounded parser refuses the object at its budget, at once.
        let t = std::time::Instant::now();
        assert!(scan(&verneed_bomb(4096, 65_535), ScanOptions::default()).is_none());
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }
}
