//! The layers of an image, walked in memory.
//!
//! Each layer blob is streamed once: its digest is checked as it is read,
//! it is decompressed (gzip, zstd including multi-frame `zstd:chunked`, or
//! plain tar, recognised by magic bytes rather than trusted media types),
//! and its tar entries build a [`Tree`] of the final filesystem, applying
//! whiteouts (`.wh.NAME`, `.wh..wh..opq`) the way overlay filesystems do.
//! Nothing is written to disk.
//!
//! Bounds ([`Limits`]): entries, uncompressed bytes, the ratio of
//! uncompressed to compressed bytes (a decompression bomb stops early),
//! wall-clock time, and the size of any file read into memory. Paths with
//! `..`, NUL bytes or absurd lengths are skipped and counted. Symlinks are
//! only ever resolved inside the [`Tree`], with `..` clamped at its root,
//! so no link can point a reader at the host.
//!
//! While streaming, ELF objects are parsed ([`super::elfscan`]) and small
//! files that were asked for are kept ([`ScanRequest::capture`]).

use super::elfscan::{self, ElfFacts, ScanOptions};
use super::layout::{Descriptor, Hasher, Image};
use super::{ImageError, Limits};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::rc::Rc;
use std::time::Instant;

/// Longest path accepted in a layer.
const MAX_PATH: usize = 4096;
/// Most symlinks followed resolving one path (as Linux).
const MAX_HOPS: usize = 40;

/// What a path is in the final filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symlink and its target, as written.
    Symlink(String),
    /// Devices, fifos.
    Other,
}

/// One path of the final filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What it is.
    pub kind: Kind,
    /// Size (regular files).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Index of the layer it comes from.
    pub layer: usize,
}

impl Entry {
    /// A regular file with an execute bit.
    pub fn is_executable_file(&self) -> bool {
        self.kind == Kind::File && self.mode & 0o111 != 0
    }
}

/// The image's final filesystem: paths (no leading `/`) to entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    nodes: BTreeMap<String, Entry>,
}

/// `a/b/../c` -> `a/c`, without a leading `/`; `None` when the path tries to
/// leave the root, has a NUL or is too long. Used on tar entry names, where
/// `..` is never legitimate.
pub fn normalize_entry(raw: &[u8]) -> Option<String> {
    if raw.len() > MAX_PATH || raw.contains(&0) {
        return None;
    }
    let s = String::from_utf8_lossy(raw);
    let mut parts: Vec<&str> = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

impl Tree {
    /// The entry at `path` (not resolving symlinks).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.nodes.get(path.trim_start_matches('/'))
    }

    /// Number of paths.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// All paths and entries.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.nodes.iter()
    }

    /// Paths strictly under `dir` (`""` for all).
    pub fn children_of<'a>(
        &'a self,
        dir: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Entry)> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
    }

    /// Removes `path`'s descendants that came from layers below `layer`.
    fn remove_below(&mut self, dir: &str, layer: usize, removed: &mut Vec<String>) {
        let doomed: Vec<String> = self
            .children_of(dir)
            .filter(|(_, e)| e.layer < layer)
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
            removed.push(k);
        }
    }

    fn insert(&mut self, path: String, e: Entry, removed: &mut Vec<String>) {
        if e.kind != Kind::Dir {
            // A non-directory over a directory of a lower layer hides it.
            self.remove_below(&path, e.layer, removed);
        }
        self.nodes.insert(path, e);
    }

    fn whiteout(&mut self, path: &str, layer: usize, removed: &mut Vec<String>) {
        if self.nodes.get(path).is_some_and(|e| e.layer < layer) {
            self.nodes.remove(path);
            removed.push(path.to_owned());
        }
        self.remove_below(path, layer, removed);
    }

    /// Resolves `path` inside the tree, following symlinks (absolute targets
    /// from the tree's root, `..` clamped at the root), at most 40 hops.
    /// Returns the final path when it names an existing entry.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(str::to_owned)
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            done.push(c);
            let here = done.join("/");
            if let Some(Entry {
                kind: Kind::Symlink(target),
                ..
            }) = self.nodes.get(&here)
            {
                hops += 1;
                if hops > MAX_HOPS {
                    return None;
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                todo.extend(
                    target
                        .split('/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(str::to_owned),
                );
            }
        }
        let p = done.join("/");
        (p.is_empty() || self.nodes.contains_key(&p)).then_some(p)
    }

    /// The entry `path` resolves to.
    pub fn lookup(&self, path: &str) -> Option<(String, &Entry)> {
        let p = self.resolve(path)?;
        let e = self.nodes.get(&p)?;
        Some((p, e))
    }
}

/// What to pick up while walking the layers.
#[derive(Debug, Clone, Default)]
pub struct ScanRequest {
    /// Paths (as in the layer, no leading `/`) whose content is kept, up to
    /// [`ScanRequest::capture_limit`] bytes each.
    pub capture: BTreeSet<String>,
    /// Largest captured file.
    pub capture_limit: u64,
    /// Parse ELF objects.
    pub elf: bool,
    /// Sample `.text` of the largest objects.
    pub sample: bool,
    /// Only these layers (by index); `None`: all.
    pub only_layers: Option<BTreeSet<usize>>,
}

/// Counts of one walk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanStats {
    /// Layers read.
    pub layers: usize,
    /// Tar entries seen.
    pub entries: u64,
    /// Compressed bytes read.
    pub compressed_bytes: u64,
    /// Uncompressed bytes read.
    pub bytes: u64,
    /// ELF objects parsed.
    pub elf_objects: u64,
    /// ELF objects whose `.text` was sampled.
    pub sampled: u64,
    /// Entries skipped for unsafe names (`..`, NUL, too long).
    pub unsafe_names: u64,
    /// Files larger than [`Limits::max_file_bytes`], not looked into.
    pub too_large: u64,
    /// Seconds spent.
    pub seconds: f64,
}

/// The result of walking an image's layers.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// The final filesystem.
    pub tree: Tree,
    /// ELF facts of final regular files, by path.
    pub elf: BTreeMap<String, ElfFacts>,
    /// Captured file contents, by path.
    pub captured: BTreeMap<String, Vec<u8>>,
    /// Counts.
    pub stats: ScanStats,
}

/// Libraries of the toolchain runtime: they dispatch on CPU features at run
/// time (IFUNCs), so their instructions say nothing about what the image
/// needs; they are not sampled.
fn is_runtime_library(name: &str) -> bool {
    [
        "libc.so",
        "libc-",
        "ld-linux",
        "ld64.so",
        "libm.so",
        "libm-",
        "libmvec",
        "libstdc++",
        "libgcc_s",
        "ld-musl",
        "libc.musl",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// Libraries whose version strings and product markers are read.
pub fn wants_strings(name: &str) -> bool {
    [
        "libmpi",
        "libmpich",
        "libfabric.so",
        "libucs.so",
        "libucp.so",
        "libopen-pal",
        "libopen-rte",
        "libmpifort",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// A reader that hashes and counts what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Option<Hasher>,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// One zstd frame read from the magic already taken plus the rest.
type Frame<R> = ruzstd::decoding::StreamingDecoder<
    std::io::Chain<std::io::Cursor<[u8; 4]>, R>,
    ruzstd::decoding::FrameDecoder,
>;

/// Zstandard frames one after another, skippable frames skipped (the
/// layout of `zstd:chunked` layers).
struct ZstdFrames<R: Read> {
    src: Option<R>,
    cur: Option<Frame<R>>,
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(d) = self.cur.as_mut() {
                let n = d.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                let Some(d) = self.cur.take() else {
                    return Ok(0);
                };
                self.src = Some(d.into_inner().into_inner().1);
            }
            let Some(mut src) = self.src.take() else {
                return Ok(0);
            };
            let mut magic = [0u8; 4];
            let mut got = 0;
            while got < 4 {
                let n = src.read(&mut magic[got..])?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            match (got, u32::from_le_bytes(magic)) {
                (0, _) => return Ok(0),
                (4, 0xFD2F_B528) => {
                    let d = ruzstd::decoding::StreamingDecoder::new(
                        std::io::Cursor::new(magic).chain(src),
                    )
                    .map_err(|e| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                    })?;
                    self.cur = Some(d);
                }
                (4, m) if m & 0xFFFF_FFF0 == 0x184D_2A50 => {
                    let mut len = [0u8; 4];
                    src.read_exact(&mut len)?;
                    let len = u32::from_le_bytes(len) as u64;
                    let skipped = std::io::copy(&mut (&mut src).take(len), &mut std::io::sink())?;
                    if skipped != len {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "truncated skippable frame",
                        ));
                    }
                    self.src = Some(src);
                }
                _ => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "data after the last zstd frame is not a zstd frame",
                    ))
                }
            }
        }
    }
}

/// Shared state of the bounds, checked on every read of decompressed data.
struct Budget {
    start: Instant,
    total_out: Cell<u64>,
}

/// Decompressed bytes, counted against [`Limits`].
struct Guard<'a, R> {
    inner: R,
    budget: &'a Budget,
    limits: &'a Limits,
    layer_out: u64,
    compressed: Rc<Cell<u64>>,
    /// Zeros still to hand out after the real end of the stream.
    padding: Option<u64>,
}

fn limit_error(what: String, limit: String, hint: &'static str) -> std::io::Error {
    std::io::Error::other(ImageError::Limit { what, limit, hint })
}

impl<R: Read> Read for Guard<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(left) = self.padding.as_mut() {
            let n = buf.len().min(*left as usize);
            buf[..n].fill(0);
            *left -= n as u64;
            return Ok(n);
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            // Some writers (umoci 0.4.7, Debian 12's) end a layer right after
            // the last file's data: no block padding, no end-of-archive
            // blocks. Zeros after the real end complete the archive; they
            // cannot stand for data that was not there.
            let pad = (512 - self.layer_out % 512) % 512 + 1024;
            self.padding = Some(pad);
            return self.read(buf);
        }
        self.layer_out += n as u64;
        let total = self.budget.total_out.get() + n as u64;
        self.budget.total_out.set(total);
        if total > self.limits.max_total_bytes {
            return Err(limit_error(
                "uncompressed layers".into(),
                format!("{} bytes", self.limits.max_total_bytes),
                "Limits::max_total_bytes",
            ));
        }
        if self.layer_out > self.limits.ratio_grace_bytes
            && self.layer_out
                > self
                    .compressed
                    .get()
                    .max(1)
                    .saturating_mul(self.limits.max_ratio)
        {
            return Err(limit_error(
                "decompression ratio".into(),
                format!("{}:1", self.limits.max_ratio),
                "Limits::max_ratio: a layer that expands this much is a decompression bomb",
            ));
        }
        if self.budget.start.elapsed() > self.limits.max_time {
            return Err(limit_error(
                "reading the layers".into(),
                format!("{} s", self.limits.max_time.as_secs()),
                "Limits::max_time",
            ));
        }
        Ok(n)
    }
}

/// Turns an I/O error from the layer stream into an [`ImageError`], keeping
/// a bound that was hit as such (tar wraps the reader's errors, so the
/// whole source chain is searched).
fn layer_error(layer: &Descriptor, e: std::io::Error) -> ImageError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> =
        e.get_ref().map(|r| r as &(dyn std::error::Error + 'static));
    while let Some(err) = cur {
        if let Some(ImageError::Limit { what, limit, hint }) = err.downcast_ref::<ImageError>() {
            return ImageError::Limit {
                what: what.clone(),
                limit: limit.clone(),
                hint,
            };
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            cur = io
                .get_ref()
                .map(|r| r as &(dyn std::error::Error + 'static));
            continue;
        }
        cur = err.source();
    }
    ImageError::Layer {
        layer: layer.digest.to_string(),
        reason: e.to_string(),
    }
}

/// The running set of sampled sizes: sample an object when it is among the
/// largest seen so far, up to [`Limits::max_sampled`] in all.
struct Sampler {
    sizes: Vec<u64>,
    count: usize,
}

/// Whether a path belongs to the application rather than to the
/// distribution: anything outside the system directories (`/usr/local`,
/// `/opt`, `/app`, a home directory...).
pub fn is_app_path(path: &str) -> bool {
    ![
        "usr/lib/",
        "usr/lib64/",
        "usr/lib32/",
        "usr/bin/",
        "usr/sbin/",
        "usr/libexec/",
        "usr/share/",
        "lib/",
        "lib64/",
        "lib32/",
        "bin/",
        "sbin/",
        "etc/",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

impl Sampler {
    fn wants(&mut self, size: u64, app: bool, limits: &Limits) -> bool {
        if self.count >= limits.max_sampled {
            return false;
        }
        // The application's own objects are what the image is for: always
        // sampled (within the cap), however small.
        if app {
            self.count += 1;
            return true;
        }
        let k = limits.hot_objects.max(1);
        if self.sizes.len() < k || self.sizes.last().is_some_and(|s| size > *s) {
            self.sizes.push(size);
            self.sizes.sort_unstable_by(|a, b| b.cmp(a));
            self.sizes.truncate(k);
            self.count += 1;
            true
        } else {
            false
        }
    }
}

/// Where ELF objects are looked for: any file with an execute bit, and
/// files under library directories or named like a shared library.
fn elf_candidate(path: &str, mode: u32) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    mode & 0o111 != 0
        || name.contains(".so")
        || path.contains("/lib/")
        || path.contains("/lib64/")
        || path.starts_with("lib")
}

/// Walks the layers of `image`.
pub fn scan(image: &Image, req: &ScanRequest, limits: &Limits) -> Result<Scan, ImageError> {
    let store = image.store.as_ref().ok_or_else(|| {
        ImageError::layout(&image.reference, "an image config alone has no layers")
    })?;
    let budget = Budget {
        start: Instant::now(),
        total_out: Cell::new(0),
    };
    let mut out = Scan::default();
    let mut sampler = Sampler {
        sizes: vec![],
        count: 0,
    };
    for (idx, layer) in image.layers.iter().enumerate() {
        if req
            .only_layers
            .as_ref()
            .is_some_and(|only| !only.contains(&idx))
        {
            continue;
        }
        out.stats.layers += 1;
        let (file, size) = store.open(&layer.digest.blob_path())?;
        if size != layer.size {
            return Err(ImageError::Mismatch {
                what: format!("layer {}", layer.digest.short()),
                reason: format!("descriptor says {} bytes, blob has {size}", layer.size),
            });
        }
        let compressed = Rc::new(Cell::new(0u64));
        let mut raw = BufReader::with_capacity(
            64 << 10,
            HashingReader {
                inner: file.take(layer.size + 1),
                hasher: Some(layer.digest.hasher()),
                count: compressed.clone(),
            },
        );
        let head = raw.fill_buf().map_err(|e| layer_error(layer, e))?;
        let decoded: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(&mut raw))
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(ZstdFrames {
                src: Some(&mut raw),
                cur: None,
            })
        } else {
            Box::new(&mut raw)
        };
        let guard = Guard {
            inner: decoded,
            budget: &budget,
            limits,
            layer_out: 0,
            compressed: compressed.clone(),
            padding: None,
        };
        walk_layer(
            tar::Archive::new(guard),
            idx,
            layer,
            req,
            limits,
            &budget,
            &mut sampler,
            &mut out,
        )?;
        // Hash the rest of the blob (tar padding, the compressor's trailer)
        // so the digest covers every byte that was trusted.
        std::io::copy(&mut raw, &mut std::io::sink()).map_err(|e| layer_error(layer, e))?;
        let HashingReader { hasher, .. } = raw.into_inner();
        let got = hasher.map(Hasher::finish_hex).unwrap_or_default();
        if compressed.get() != layer.size
            || got.is_empty()
            || !layer.digest.to_string().ends_with(&format!(":{got}"))
        {
            return Err(ImageError::Mismatch {
                what: format!("layer {}", layer.digest.short()),
                reason: format!(
                    "{} bytes hashing to {got}, descriptor says {} bytes, {}",
                    compressed.get(),
                    layer.size,
                    layer.digest
                ),
            });
        }
        out.stats.compressed_bytes += compressed.get();
    }
    out.stats.bytes = budget.total_out.get();
    out.stats.seconds = budget.start.elapsed().as_secs_f64();
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn walk_layer<R: Read>(
    mut ar: tar::Archive<R>,
    idx: usize,
    layer: &Descriptor,
    req: &ScanRequest,
    limits: &Limits,
    budget: &Budget,
    sampler: &mut Sampler,
    out: &mut Scan,
) -> Result<(), ImageError> {
    let entries = ar.entries().map_err(|e| layer_error(layer, e))?;
    let mut removed = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| layer_error(layer, e))?;
        out.stats.entries += 1;
        if out.stats.entries > limits.max_entries {
            return Err(ImageError::Limit {
                what: "tar entries".into(),
                limit: limits.max_entries.to_string(),
                hint: "Limits::max_entries",
            });
        }
        if budget.start.elapsed() > limits.max_time {
            return Err(ImageError::Limit {
                what: "reading the layers".into(),
                limit: format!("{} s", limits.max_time.as_secs()),
                hint: "Limits::max_time",
            });
        }
        let Some(path) = normalize_entry(&entry.path_bytes()) else {
            out.stats.unsafe_names += 1;
            continue;
        };
        if path.is_empty() {
            continue;
        }
        let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
        removed.clear();
        if name == ".wh..wh..opq" {
            out.tree.remove_below(parent(&path), idx, &mut removed);
        } else if let Some(hidden) = name.strip_prefix(".wh.") {
            let dir = parent(&path);
            let target = if dir.is_empty() {
                hidden.to_owned()
            } else {
                format!("{dir}/{hidden}")
            };
            out.tree.whiteout(&target, idx, &mut removed);
        } else {
            let header = entry.header();
            let mode = header.mode().unwrap_or(0) & 0o7777;
            let ty = header.entry_type();
            let size = entry.size();
            let mut e = Entry {
                kind: Kind::Other,
                size: 0,
                mode,
                layer: idx,
            };
            match ty {
                tar::EntryType::Directory => e.kind = Kind::Dir,
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    if target.len() > MAX_PATH || target.contains('\0') {
                        out.stats.unsafe_names += 1;
                        continue;
                    }
                    e.kind = Kind::Symlink(target);
                }
                tar::EntryType::Link => {
                    // A hard link copies what its target is (in this tar).
                    let target = entry.link_name_bytes().and_then(|b| normalize_entry(&b));
                    let Some(src) = target.and_then(|t| out.tree.get(&t).cloned().map(|e| (t, e)))
                    else {
                        out.stats.unsafe_names += 1;
                        continue;
                    };
                    e = Entry {
                        layer: idx,
                        ..src.1
                    };
                    if let Some(f) = out.elf.get(&src.0).cloned() {
                        out.elf.insert(path.clone(), f);
                    }
                    if let Some(c) = out.captured.get(&src.0).cloned() {
                        out.captured.insert(path.clone(), c);
                    }
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    e.kind = Kind::File;
                    e.size = size;
                    out.elf.remove(&path);
                    out.captured.remove(&path);
                    read_file(
                        &mut entry, &path, &name, size, mode, req, limits, sampler, out,
                    )
                    .map_err(|e| layer_error(layer, e))?;
                }
                _ => {}
            }
            if e.kind != Kind::File && ty != tar::EntryType::Link {
                out.elf.remove(&path);
                out.captured.remove(&path);
            }
            out.tree.insert(path, e, &mut removed);
        }
        for r in &removed {
            out.elf.remove(r);
            out.captured.remove(r);
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn read_file(
    entry: &mut impl Read,
    path: &str,
    name: &str,
    size: u64,
    mode: u32,
    req: &ScanRequest,
    limits: &Limits,
    sampler: &mut Sampler,
    out: &mut Scan,
) -> std::io::Result<()> {
    let capture = req.capture.contains(path) && size <= req.capture_limit;
    let elf = req.elf && size >= 64 && elf_candidate(path, mode);
    if !capture && !elf {
        return Ok(());
    }
    if size > limits.max_file_bytes {
        out.stats.too_large += 1;
        return Ok(());
    }
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < 4 && (got as u64) < size {
        let n = entry.read(&mut head[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    if !capture && !elfscan::is_elf(&head[..got]) {
        return Ok(());
    }
    let mut bytes = Vec::with_capacity(size as usize);
    bytes.extend_from_slice(&head[..got]);
    entry.take(size - got as u64).read_to_end(&mut bytes)?;
    if elf && elfscan::is_elf(&bytes) {
        let sample = req.sample
            && !is_runtime_library(name)
            && sampler.wants(size, is_app_path(path), limits);
        let opts = ScanOptions {
            sample_bytes: sample.then_some(limits.sample_bytes),
            strings: wants_strings(name),
        };
        if let Some(f) = elfscan::scan(&bytes, opts) {
            out.stats.elf_objects += 1;
            if f.sample.is_some() {
                out.stats.sampled += 1;
            }
            out.elf.insert(path.to_owned(), f);
        }
    }
    if capture {
        out.captured.insert(path.to_owned(), bytes);
    }
    Ok(())
}

/// Reads the content of a few files of the final filesystem (each resolved
/// through the tree first), walking only the layers they come from.
pub fn read_files(
    image: &Image,
    tree: &Tree,
    paths: &[&str],
    limit: u64,
    limits: &Limits,
) -> Result<BTreeMap<String, Vec<u8>>, ImageError> {
    let mut req = ScanRequest {
        capture_limit: limit,
        only_layers: Some(BTreeSet::new()),
        ..ScanRequest::default()
    };
    for p in paths {
        if let Some((resolved, e)) = tree.lookup(p) {
            if e.kind == Kind::File {
                req.capture.insert(resolved);
                if let Some(only) = req.only_layers.as_mut() {
                    only.insert(e.layer);
                }
            }
        }
    }
    if req.capture.is_empty() {
        return Ok(BTreeMap::new());
    }
    Ok(scan(image, &req, limits)?.captured)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(kind: Kind, layer: usize) -> Entry {
        Entry {
            kind,
            size: 1,
            mode: 0o755,
            layer,
        }
    }

    #[test]
    fn names_that_leave_the_root_are_refused() {
        assert_eq!(
            normalize_entry(b"./usr/bin/sh").as_deref(),
            Some("usr/bin/sh")
        );
        assert_eq!(
            normalize_entry(b"/etc//passwd").as_deref(),
            Some("etc/passwd")
        );
        assert!(normalize_entry(b"../../etc/shadow").is_none());
        assert!(normalize_entry(b"a/../../b").is_none());
        assert!(normalize_entry(b"a\0b").is_none());
    }

    #[test]
    fn resolve_stays_in_the_tree() {
        let mut t = Tree::default();
        let mut r = vec![];
        t.insert("usr/bin/busybox".into(), e(Kind::File, 0), &mut r);
        t.insert("bin".into(), e(Kind::Symlink("usr/bin".into()), 0), &mut r);
        t.insert(
            "usr/bin/sh".into(),
            e(Kind::Symlink("/bin/busybox".into()), 0),
            &mut r,
        );
        t.insert(
            "escape".into(),
            e(Kind::Symlink("../../../../usr/bin/busybox".into()), 0),
            &mut r,
        );
        t.insert("loop".into(), e(Kind::Symlink("loop".into()), 0), &mut r);
        assert_eq!(t.resolve("/bin/sh").as_deref(), Some("usr/bin/busybox"));
        assert_eq!(t.resolve("escape").as_deref(), Some("usr/bin/busybox"));
        assert_eq!(t.resolve("loop"), None);
        assert_eq!(t.resolve("/bin/bash"), None);
    }

    #[test]
    fn whiteouts_hide_lower_layers_only() {
        let mut t = Tree::default();
        let mut r = vec![];
        t.insert("opt/app/a".into(), e(Kind::File, 0), &mut r);
        t.insert("opt/app/b".into(), e(Kind::File, 0), &mut r);
        t.insert("opt/app/c".into(), e(Kind::File, 1), &mut r);
        t.remove_below("opt/app", 1, &mut r);
        assert!(t.get("opt/app/a").is_none() && t.get("opt/app/c").is_some());
        t.whiteout("opt/app/c", 2, &mut r);
        assert!(t.get("opt/app/c").is_none());
        // A file over a directory hides what was under it.
        t.insert("srv/x/y".into(), e(Kind::File, 0), &mut r);
        t.insert("srv/x".into(), e(Kind::File, 1), &mut r);
        assert!(t.get("srv/x/y").is_none());
    }

    #[test]
    fn sampler_keeps_the_largest() {
        let limits = Limits {
            hot_objects: 2,
            max_sampled: 3,
            ..Limits::default()
        };
        let mut s = Sampler {
            sizes: vec![],
            count: 0,
        };
        assert!(s.wants(10, false, &limits));
        assert!(s.wants(5, false, &limits));
        assert!(!s.wants(4, false, &limits));
        assert!(s.wants(20, false, &limits));
        assert!(!s.wants(30, true, &limits), "the hard cap wins");
        assert!(is_app_path("usr/local/bin/gmx") && is_app_path("opt/app/lib/libx.so"));
        assert!(!is_app_path("usr/lib/x86_64-linux-gnu/libmpich.so.12"));
    }
}
