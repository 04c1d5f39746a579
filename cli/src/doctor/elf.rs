//! The ELF facts the doctor needs from host files: class and machine,
//! `DT_NEEDED`, `DT_RUNPATH`/`DT_RPATH`, and the value of a `u32` symbol
//! (the SPANK plugin's `plugin_version`). Read with goblin from bytes;
//! nothing is loaded.

use std::path::Path;

/// Largest file inspected.
pub const MAX_BYTES: u64 = 256 << 20;

/// What the doctor reads from one ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfFacts {
    /// ELFCLASS64.
    pub is_64: bool,
    /// `e_machine`.
    pub machine: u16,
    /// `DT_SONAME`.
    pub soname: Option<String>,
    /// `DT_NEEDED`.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` and `DT_RPATH` entries, `$ORIGIN` not expanded.
    pub search: Vec<String>,
}

impl ElfFacts {
    /// "64-bit x86-64".
    pub fn describe(&self) -> String {
        describe(self.is_64, self.machine)
    }
}

/// "64-bit x86-64" for a class and machine.
pub fn describe(is_64: bool, machine: u16) -> String {
    let m = match machine {
        3 => "i386".to_owned(),
        21 => "PowerPC64".to_owned(),
        22 => "s390x".to_owned(),
        40 => "ARM".to_owned(),
        62 => "x86-64".to_owned(),
        183 => "AArch64".to_owned(),
        243 => "RISC-V".to_owned(),
        other => format!("machine {other}"),
    };
    format!("{}-bit {m}", if is_64 { 64 } else { 32 })
}

/// The class and machine of the binaries this node runs (those of this
/// very program).
pub fn node_class() -> (bool, u16) {
    match std::env::consts::ARCH {
        "x86_64" => (true, 62),
        "aarch64" => (true, 183),
        "powerpc64" => (true, 21),
        "s390x" => (true, 22),
        "riscv64" => (true, 243),
        "x86" => (false, 3),
        "arm" => (false, 40),
        _ => std::fs::read("/proc/self/exe")
            .ok()
            .and_then(|b| read_bytes(&b).ok())
            .map_or((cfg!(target_pointer_width = "64"), 0), |f| {
                (f.is_64, f.machine)
            }),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!(
            "{} is larger than {MAX_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Reads the facts of the file at `path`.
pub fn read(path: &Path) -> Result<ElfFacts, String> {
    let bytes = read_file(path)?;
    read_bytes(&bytes).map_err(|e| format!("{} is not an ELF object: {e}", path.display()))
}

fn read_bytes(bytes: &[u8]) -> Result<ElfFacts, goblin::error::Error> {
    let elf = goblin::elf::Elf::parse(bytes)?;
    let mut search = Vec::new();
    for s in elf.runpaths.iter().chain(elf.rpaths.iter()) {
        search.extend(s.split(':').filter(|p| !p.is_empty()).map(str::to_owned));
    }
    Ok(ElfFacts {
        is_64: elf.is_64,
        machine: elf.header.e_machine,
        soname: elf.soname.map(str::to_owned),
        needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
        search,
    })
}

/// The value of the exported `u32` symbol `name` (e.g. `plugin_version`).
pub fn u32_symbol(path: &Path, name: &str) -> Result<Option<u32>, String> {
    let bytes = read_file(path)?;
    let elf = goblin::elf::Elf::parse(&bytes)
        .map_err(|e| format!("{} is not an ELF object: {e}", path.display()))?;
    let Some(sym) = elf
        .dynsyms
        .iter()
        .find(|s| s.st_value != 0 && elf.dynstrtab.get_at(s.st_name) == Some(name))
    else {
        return Ok(None);
    };
    // The file offset of the symbol's address, through its PT_LOAD segment.
    let seg = elf.program_headers.iter().find(|ph| {
        ph.p_type == goblin::elf::program_header::PT_LOAD
            && sym.st_value >= ph.p_vaddr
            && sym.st_value + 4 <= ph.p_vaddr + ph.p_filesz
    });
    let Some(seg) = seg else {
        return Ok(None);
    };
    let off = (sym.st_value - seg.p_vaddr + seg.p_offset) as usize;
    let Some(raw) = bytes.get(off..off + 4) else {
        return Ok(None);
    };
    let raw: [u8; 4] = raw.try_into().expect("four bytes");
    Ok(Some(if elf.little_endian {
        u32::from_le_bytes(raw)
    } else {
        u32::from_be_bytes(raw)
    }))
}
