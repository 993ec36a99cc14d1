//! The uploads archive: a tar.gz of `uploads/`, streamed, and its safe extraction.
//!
//! Writing: the tree is walked in name order and cut into batches of about 1 MiB. Each
//! batch becomes its own gzip member (RFC 1952 allows a concatenation of members, and GNU
//! gzip/tar read it as one stream). Batches of files that are already compressed (JPEG,
//! PNG, WebP, video, zip...) are *stored* (deflate level 0), since deflating them again
//! costs almost all of `tar czf`'s time and gains nothing; the rest are deflated on all
//! cores. Batches are written in order through a bounded window, so memory stays at a few
//! MiB whatever the tree's size. Entries keep their relative path (under `uploads/`),
//! mode, owner and mtime; symlinks are stored as links and never followed.
//!
//! Extracting: every entry must lie under `uploads/` with no absolute or `..` path, be a
//! file, directory or symlink (no hard links, devices or fifos), and never be written
//! through a symlink; a symlink must resolve inside the tree, link by link, chains and
//! dangling targets included. Anything else refuses the whole archive, naming the entry.
//! Setuid/setgid bits are stripped with a warning, and the decompressed size and ratio
//! are bounded ([`Limits`]). Extraction goes into a folder the caller gives (beside the
//! target), and nothing outside it is written; swapping it into place is the caller's
//! job.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;
use tar::{EntryType, Header, HeaderMode};

use super::manifest::HashingWriter;

/// The top folder of every entry in the archive, as `tar -C DIR -czf ... uploads` makes.
pub const ROOT_NAME: &str = "uploads";
/// Target size of one gzip member.
const BATCH_BYTES: usize = 1 << 20;
/// Batches in flight between the reader, the compressors and the writer.
const IN_FLIGHT: usize = 8;
const READ_CHUNK: usize = 256 << 10;

/// Extensions of formats that are compressed already; deflating them again is wasted work.
const COMPRESSED_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "gif", "webp", "heic", "heif", "avif", "jxl", "mp4", "m4v", "mov",
    "webm", "mkv", "mp3", "m4a", "aac", "ogg", "opus", "zip", "gz", "tgz", "bz2", "xz", "zst",
    "7z", "rar", "pdf", "docx", "xlsx", "pptx",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Sockets, fifos and devices found in the tree and left out.
    pub skipped: u64,
    /// Bytes of file content read.
    pub content_bytes: u64,
    /// Size and sha256 of the archive written.
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Store,
    Deflate,
}

struct Batch {
    seq: u64,
    kind: Kind,
    data: Vec<u8>,
}

/// Whether a file's bytes are already compressed, from its name or its first bytes.
pub(crate) fn is_precompressed(path: &Path, head: &[u8]) -> bool {
    let by_name = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| COMPRESSED_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
    let by_magic = head.starts_with(&[0xFF, 0xD8, 0xFF]) // JPEG
        || head.starts_with(b"\x89PNG")
        || head.starts_with(b"GIF8")
        || (head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WEBP"))
        || head.starts_with(b"PK\x03\x04")
        || head.starts_with(&[0x1F, 0x8B])
        || head.starts_with(b"\xFD7zXZ")
        || head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]); // zstd
    by_name || by_magic
}

/// Appends `data` to `out` as one gzip member of stored (uncompressed) deflate blocks.
fn stored_member(data: &[u8], out: &mut Vec<u8>) {
    const MAX_BLOCK: usize = 65_535;
    out.reserve(data.len() + data.len() / MAX_BLOCK * 5 + 32);
    // Header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
    out.extend_from_slice(&[0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF]);
    let mut blocks = data.chunks(MAX_BLOCK).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    while let Some(block) = blocks.next() {
        let last = blocks.peek().is_none();
        let len = block.len() as u16;
        out.push(u8::from(last)); // BFINAL, BTYPE=00 (stored)
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
}

fn deflated_member(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 2), Compression::default());
    encoder
        .write_all(data)
        .and_then(|_| encoder.finish())
        .expect("compressing into memory cannot fail")
}

/// Cuts the tar stream into batches and hands them to the compressors.
struct Batcher<'a> {
    current: Vec<u8>,
    kind: Kind,
    seq: u64,
    work: &'a SyncSender<Batch>,
    tokens: &'a Receiver<()>,
}

impl Batcher<'_> {
    /// Appends bytes of the given kind (None: metadata that fits any batch).
    fn push(&mut self, kind: Option<Kind>, bytes: &[u8]) -> Result<()> {
        if let Some(kind) = kind {
            if kind != self.kind {
                self.flush()?;
                self.kind = kind;
            }
        }
        self.current.extend_from_slice(bytes);
        if self.current.len() >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        // A token is a free slot in the window; none comes back once the writer stops.
        self.tokens
            .recv()
            .map_err(|_| anyhow!("the archive writer stopped"))?;
        let data = std::mem::replace(&mut self.current, Vec::with_capacity(BATCH_BYTES + 1024));
        self.work
            .send(Batch {
                seq: self.seq,
                kind: self.kind,
                data,
            })
            .map_err(|_| anyhow!("the archive compressors stopped"))?;
        self.seq += 1;
        Ok(())
    }
}

/// Progress of an archive being written, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub files: u64,
    pub bytes: u64,
}

/// Writes a tar.gz of the tree at `root` to `out` (a new file), before `deadline`.
pub fn create(
    root: &Path,
    out: File,
    deadline: Instant,
    progress: &mut dyn FnMut(Progress),
) -> Result<ArchiveStats> {
    // The uploads folder itself may be a symlink (to a bigger disk): follow that one link,
    // and no other.
    let root = &fs::canonicalize(root)
        .with_context(|| format!("failed to resolve uploads folder {}", root.display()))?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (work_tx, work_rx) = mpsc::sync_channel::<Batch>(IN_FLIGHT);
    let work_rx = Mutex::new(work_rx);
    std::thread::scope(|s| {
        let (done_tx, done_rx) = mpsc::channel::<(u64, Vec<u8>)>();
        let (token_tx, token_rx) = mpsc::sync_channel::<()>(IN_FLIGHT);
        for _ in 0..IN_FLIGHT {
            token_tx.send(()).expect("the window has room");
        }
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let work_rx = &work_rx;
            s.spawn(move || loop {
                let next = work_rx.lock().expect("queue lock").recv();
                let Ok(batch) = next else { break };
                let bytes = match batch.kind {
                    Kind::Store => {
                        let mut out = Vec::new();
                        stored_member(&batch.data, &mut out);
                        out
                    }
                    Kind::Deflate => deflated_member(&batch.data),
                };
                if done_tx.send((batch.seq, bytes)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        let writer = s.spawn(move || -> io::Result<(u64, String)> {
            let mut sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, out));
            let mut pending = BTreeMap::new();
            let mut next = 0u64;
            for (seq, bytes) in done_rx {
                pending.insert(seq, bytes);
                while let Some(bytes) = pending.remove(&next) {
                    sink.write_all(&bytes)?;
                    next += 1;
                    let _ = token_tx.send(());
                }
            }
            let (buffered, size, sha256) = sink.finish();
            buffered.into_inner().map_err(|e| e.into_error())?;
            Ok((size, sha256))
        });

        let mut batcher = Batcher {
            current: Vec::with_capacity(BATCH_BYTES + 1024),
            kind: Kind::Deflate,
            seq: 0,
            work: &work_tx,
            tokens: &token_rx,
        };
        let mut stats = ArchiveStats::default();
        let produced = (|| {
            let mut walker = Walker {
                root,
                headers: tar::Builder::new(Vec::new()),
                buf: vec![0u8; READ_CHUNK],
                stats: &mut stats,
                deadline,
                progress,
            };
            walker.entry(&mut batcher, Path::new(ROOT_NAME), root)?;
            // End of archive: two zero blocks.
            batcher.push(None, &[0u8; 1024])?;
            batcher.flush()
        })();
        drop(batcher);
        drop(work_tx);
        drop(token_rx);
        let written = writer
            .join()
            .map_err(|_| anyhow!("the archive writer panicked"))?;
        // A writer error (disk full...) explains a producer error, so report it first.
        let (size, sha256) = written.context("failed to write the uploads archive")?;
        produced?;
        stats.size = size;
        stats.sha256 = sha256;
        Ok(stats)
    })
}

struct Walker<'a> {
    root: &'a Path,
    headers: tar::Builder<Vec<u8>>,
    buf: Vec<u8>,
    stats: &'a mut ArchiveStats,
    deadline: Instant,
    progress: &'a mut dyn FnMut(Progress),
}

impl Walker<'_> {
    /// Tar header bytes for `path` (with a GNU long-name entry first when needed).
    fn header(&mut self, header: &mut Header, name: &Path, link: Option<&Path>) -> Result<Vec<u8>> {
        match link {
            Some(target) => self.headers.append_link(header, name, target),
            None => self.headers.append_data(header, name, io::empty()),
        }
        .with_context(|| format!("cannot store {} in a tar archive", name.display()))?;
        Ok(std::mem::take(self.headers.get_mut()))
    }

    fn entry(&mut self, batcher: &mut Batcher<'_>, name: &Path, path: &Path) -> Result<()> {
        if Instant::now() > self.deadline {
            bail!(
                "backup timed out while archiving {}\nraise the limit with --timeout",
                self.root.display()
            );
        }
        let meta = match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return vanished(path),
            other => other.with_context(|| format!("failed to read {}", path.display()))?,
        };
        let mut header = Header::new_gnu();
        header.set_metadata_in_mode(&meta, HeaderMode::Complete);
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            let target = match fs::read_link(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return vanished(path),
                other => {
                    other.with_context(|| format!("failed to read symlink {}", path.display()))?
                }
            };
            header.set_size(0);
            let bytes = self.header(&mut header, name, Some(&target))?;
            batcher.push(None, &bytes)?;
            self.stats.symlinks += 1;
        } else if file_type.is_dir() {
            let bytes = self.header(&mut header, name, None)?;
            batcher.push(None, &bytes)?;
            self.stats.dirs += 1;
            let listed = fs::read_dir(path)
                .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect());
            let mut children: Vec<_> = match listed {
                // Deleted after its header was written: it stays in the archive, empty.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                other => other.with_context(|| format!("failed to list {}", path.display()))?,
            };
            children.sort();
            for child in children {
                self.entry(batcher, &name.join(&child), &path.join(&child))?;
            }
        } else if file_type.is_file() {
            self.file(batcher, &mut header, name, path, meta.len())?;
        } else {
            tracing::warn!(path = %path.display(), "skipping a special file (socket, fifo or device) in uploads");
            self.stats.skipped += 1;
        }
        Ok(())
    }

    fn file(
        &mut self,
        batcher: &mut Batcher<'_>,
        header: &mut Header,
        name: &Path,
        path: &Path,
        size: u64,
    ) -> Result<()> {
        let mut file = match File::open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return vanished(path),
            other => other.with_context(|| format!("failed to open {}", path.display()))?,
        };
        let first = read_up_to(&mut file, &mut self.buf, size, path)?;
        let kind = if is_precompressed(path, &self.buf[..first]) {
            Kind::Store
        } else {
            Kind::Deflate
        };
        let header_bytes = self.header(header, name, None)?;
        batcher.push(Some(kind), &header_bytes)?;
        let mut remaining = size;
        let mut n = first;
        loop {
            if n == 0 && remaining > 0 {
                // The file shrank while we read it: pad to the size in its header, as GNU
                // tar does, so the archive stays readable.
                tracing::warn!(path = %path.display(), "file shrank while archiving; padded with zeros");
                let pad = vec![0u8; remaining.min(READ_CHUNK as u64) as usize];
                batcher.push(Some(kind), &pad)?;
                remaining -= pad.len() as u64;
                continue;
            }
            batcher.push(Some(kind), &self.buf[..n])?;
            remaining -= n as u64;
            self.stats.content_bytes += n as u64;
            if remaining == 0 {
                break;
            }
            if Instant::now() > self.deadline {
                bail!(
                    "backup timed out while archiving {}\nraise the limit with --timeout",
                    path.display()
                );
            }
            n = read_up_to(&mut file, &mut self.buf, remaining, path)?;
        }
        let padding = (512 - size % 512) % 512;
        batcher.push(Some(kind), &[0u8; 512][..padding as usize])?;
        self.stats.files += 1;
        (self.progress)(Progress {
            files: self.stats.files,
            bytes: self.stats.content_bytes,
        });
        Ok(())
    }
}

/// Notes an entry deleted (by the running API) between listing and reading it: the
/// archive simply goes without it, as it would had the backup started a moment later.
fn vanished(path: &Path) -> Result<()> {
    tracing::info!(path = %path.display(), "left out of the archive: deleted while archiving");
    Ok(())
}

/// Reads at most `limit` bytes (and at most the buffer) into `buf`; 0 at end of file.
fn read_up_to(file: &mut File, buf: &mut [u8], limit: u64, path: &Path) -> Result<usize> {
    let want = buf.len().min(limit.try_into().unwrap_or(usize::MAX));
    let mut filled = 0;
    while filled < want {
        match file.read(&mut buf[filled..want]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
        }
    }
    Ok(filled)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExtractStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Entries whose setuid/setgid bits were stripped.
    pub stripped: Vec<String>,
}

/// Bounds on what an extraction may unpack (issue 17: a gzip bomb was accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes the decompressed tar stream may hold, and what that figure is.
    pub max_bytes: u64,
    pub max_bytes_source: String,
    /// Most decompressed bytes per compressed byte, once past [`RATIO_GRACE`].
    pub max_ratio: u64,
}

/// The decompression ratio above which an archive is taken for a bomb. Text compresses
/// about 3-10x and photos not at all; only runs of one byte come near 1000x.
pub const MAX_RATIO: u64 = 200;
/// Output below which the ratio is not judged (a small file of zeros is no bomb).
pub const RATIO_GRACE: u64 = 64 << 20;

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// The decompressed stream, cut off (with the reason kept) once it passes a limit.
struct Bounded<R> {
    inner: R,
    compressed: std::rc::Rc<std::cell::Cell<u64>>,
    out: u64,
    limits: Limits,
    tripped: std::rc::Rc<std::cell::RefCell<Option<String>>>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        let compressed = self.compressed.get().max(1);
        let why = if self.out > self.limits.max_bytes {
            Some(format!(
                "it expands past {} ({}), the limit on what a restore unpacks",
                super::human_bytes(self.limits.max_bytes),
                self.limits.max_bytes_source
            ))
        } else if self.out > RATIO_GRACE && self.out / compressed > self.limits.max_ratio {
            Some(format!(
                "it expands {}x ({} from {}), past the limit of {}x on the decompression ratio; it looks like a decompression bomb",
                self.out / compressed,
                super::human_bytes(self.out),
                super::human_bytes(compressed),
                self.limits.max_ratio
            ))
        } else {
            None
        };
        if let Some(why) = why {
            *self.tripped.borrow_mut() = Some(why.clone());
            return Err(io::Error::other(why));
        }
        Ok(n)
    }
}

/// Extracts `archive` into the existing empty folder `dest`, which becomes the uploads
/// root. Refuses (with an error naming the entry) anything that could write outside
/// `dest` or create a device: absolute paths, `..`, hard links, devices and fifos, a path
/// through a symlink, and symlinks that resolve outside the tree (chains included, even
/// dangling ones). Setuid and setgid bits are stripped, with a warning. The decompressed
/// size and ratio are bounded by `limits`. On error `dest` may hold a partial tree for the
/// caller to remove; nothing outside it is ever written.
pub fn extract(archive: &Path, dest: &Path, limits: &Limits) -> Result<ExtractStats> {
    let file = File::open(archive)
        .with_context(|| format!("failed to open archive {}", archive.display()))?;
    let compressed = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let decoder = flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(
        1 << 20,
        Counted {
            inner: file,
            count: compressed.clone(),
        },
    ));
    let source = format!("archive {}", archive.display());
    extract_stream(decoder, &source, compressed, dest, limits)
}

/// [`extract`] of a tar stream (a repository snapshot's uploads, issue 17) with the same
/// checks; `source` names it in messages (`archive PATH`, `snapshot ID`), and
/// `compressed` counts the bytes it came from, for the ratio bound.
pub fn extract_stream<R: Read>(
    stream: R,
    source: &str,
    compressed: std::rc::Rc<std::cell::Cell<u64>>,
    dest: &Path,
    limits: &Limits,
) -> Result<ExtractStats> {
    let tripped = std::rc::Rc::new(std::cell::RefCell::new(None::<String>));
    let mut tar = tar::Archive::new(Bounded {
        inner: stream,
        compressed,
        out: 0,
        limits: limits.clone(),
        tripped: tripped.clone(),
    });
    tar.set_preserve_permissions(true);
    tar.set_preserve_mtime(true);
    tar.set_preserve_ownerships(running_as_root());
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(true);

    let refuse = |name: &Path, why: &str| {
        anyhow!(
            "{source} holds {:?}, {why}; refusing to restore it\nnothing was written outside the temporary folder",
            name
        )
    };
    // A read error is the bound's when it tripped: say which limit, and where.
    let failed = |name: Option<&Path>, e: &dyn std::fmt::Display| match &*tripped.borrow() {
        Some(why) => anyhow!(
            "{source} is refused{}: {why}\nnothing was written outside the temporary folder",
            name.map(|n| format!(" at {n:?}")).unwrap_or_default()
        ),
        None => anyhow!(
            "{source} is damaged or not a tar.gz{}: {e}",
            name.map(|n| format!(" (at {n:?})")).unwrap_or_default()
        ),
    };
    let mut stats = ExtractStats::default();
    let mut links = Vec::new();
    let mut dir_mtimes = Vec::new();
    let mut last_name: Option<PathBuf> = None;
    for entry in tar.entries().map_err(|e| failed(None, &e))? {
        let mut entry = entry.map_err(|e| failed(last_name.as_deref(), &e))?;
        let name = entry
            .path()
            .map_err(|e| failed(last_name.as_deref(), &e))?
            .into_owned();
        last_name = Some(name.clone());
        let rel = relative_in_root(&name).ok_or_else(|| {
            refuse(
                &name,
                "a path that is absolute, uses '..', or lies outside uploads/",
            )
        })?;
        let target = dest.join(&rel);
        // Never write through a symlink an earlier entry created.
        let mut ancestor = dest.to_path_buf();
        for component in rel.parent().into_iter().flat_map(|p| p.components()) {
            ancestor.push(component);
            if fs::symlink_metadata(&ancestor).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(refuse(&name, "a path through a symlink"));
            }
        }
        let entry_type = entry.header().entry_type();
        match entry_type {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| failed(Some(&name), &e))?
                    .ok_or_else(|| refuse(&name, "a symlink with no target"))?
                    .into_owned();
                if !link_stays_inside(&rel, &link) {
                    return Err(refuse(&name, "a symlink that points outside uploads/"));
                }
                links.push((name.clone(), rel.clone()));
            }
            EntryType::Link => return Err(refuse(&name, "a hard link")),
            _ => return Err(refuse(&name, "a device, fifo or other special file")),
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("failed to create {}", parent.display()))?;
        }
        if entry_type != EntryType::Directory {
            if let Ok(existing) = fs::symlink_metadata(&target) {
                if existing.is_dir() {
                    return Err(refuse(&name, "a file where the archive has a folder"));
                }
                fs::remove_file(&target)
                    .with_context(|| format!("failed to replace {}", target.display()))?;
            }
        }
        let mode = entry.header().mode().unwrap_or(0o644);
        entry.unpack(&target).map_err(|e| {
            if tripped.borrow().is_some() {
                failed(Some(&name), &e)
            } else {
                anyhow!("failed to extract {} from {source}: {e}", name.display())
            }
        })?;
        if mode & 0o6000 != 0 && entry_type != EntryType::Symlink {
            // Restored files must not hand out privileges (issue 17): setuid-root files
            // came back setuid root.
            fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o1777)).with_context(
                || format!("failed to clear the setuid bit of {}", target.display()),
            )?;
            tracing::warn!(
                entry = %name.display(),
                "stripped the setuid/setgid bits (mode {:o}) of a restored upload",
                mode & 0o7777
            );
            stats.stripped.push(name.display().to_string());
        }
        match entry_type {
            EntryType::Directory => {
                stats.dirs += 1;
                let mtime = entry.header().mtime().unwrap_or(0);
                dir_mtimes.push((
                    target.clone(),
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime),
                ));
            }
            EntryType::Symlink => stats.symlinks += 1,
            _ => {
                stats.files += 1;
                stats.bytes += entry.size();
            }
        }
    }
    // Creating a folder's entries changed its mtime; put the archived ones back.
    for (dir, mtime) in dir_mtimes.into_iter().rev() {
        let set =
            File::open(&dir).and_then(|f| f.set_times(fs::FileTimes::new().set_modified(mtime)));
        if let Err(e) = set {
            tracing::warn!(dir = %dir.display(), "failed to restore the folder's mtime: {e}");
        }
    }
    // A chain of links can escape where each alone looks inside (`a/b -> ..`, then
    // `a/c -> b/../x`), dangling or not: resolve each for real, within the tree.
    for (name, rel) in links {
        if !resolves_inside(dest, &rel) {
            return Err(refuse(
                &name,
                "a symlink that resolves outside uploads/ through other links",
            ));
        }
    }
    Ok(stats)
}

/// Whether the symlink at `rel` under `root` resolves, link by link, to a path inside
/// `root` (existing or not). `..` above the root, an absolute target or more than 40
/// links (a loop) count as outside.
fn resolves_inside(root: &Path, rel: &Path) -> bool {
    let mut at: Vec<std::ffi::OsString> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_owned()),
            _ => None,
        })
        .collect();
    let mut pending: std::collections::VecDeque<std::ffi::OsString> =
        std::collections::VecDeque::new();
    let mut hops = 0;
    // Start as if walking to the link itself, so it is expanded like any other.
    if let Some(last) = at.pop() {
        pending.push_back(last);
    }
    while let Some(part) = pending.pop_front() {
        let component = Path::new(&part).components().next();
        match component {
            None | Some(Component::CurDir) => continue,
            Some(Component::ParentDir) => {
                if at.pop().is_none() {
                    return false;
                }
            }
            Some(Component::RootDir) | Some(Component::Prefix(_)) => return false,
            Some(Component::Normal(p)) => {
                at.push(p.to_owned());
                let here: PathBuf = at.iter().fold(root.to_path_buf(), |p, c| p.join(c));
                if fs::symlink_metadata(&here).is_ok_and(|m| m.file_type().is_symlink()) {
                    hops += 1;
                    let Ok(target) = fs::read_link(&here) else {
                        return false;
                    };
                    if hops > 40 || target.is_absolute() {
                        return false;
                    }
                    at.pop();
                    let parts: Vec<std::ffi::OsString> = target
                        .components()
                        .map(|c| c.as_os_str().to_owned())
                        .collect();
                    for part in parts.into_iter().rev() {
                        pending.push_front(part);
                    }
                }
            }
        }
    }
    true
}

/// What reading an archive back found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadBack {
    pub files: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

/// Reads every entry of the archive, content included, without writing anything: the
/// deep check of a backup (a damaged member, a truncated tail or an entry outside
/// `uploads/` fails it).
pub fn read_back(archive: &Path) -> Result<ReadBack> {
    let file = File::open(archive)
        .with_context(|| format!("failed to open archive {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(
        io::BufReader::with_capacity(1 << 20, file),
    ));
    let damaged = || format!("archive {} is damaged or not a tar.gz", archive.display());
    let mut found = ReadBack::default();
    for entry in tar.entries().with_context(damaged)? {
        let mut entry = entry.with_context(damaged)?;
        let name = entry.path().with_context(damaged)?.into_owned();
        if relative_in_root(&name).is_none() {
            bail!(
                "archive {} holds {:?}, outside uploads/",
                archive.display(),
                name
            );
        }
        let is_file = matches!(
            entry.header().entry_type(),
            EntryType::Regular | EntryType::Continuous
        );
        let read = io::copy(&mut entry, &mut io::sink())
            .with_context(|| format!("{}: failed to read {}", damaged(), name.display()))?;
        if is_file {
            found.files += 1;
            found.bytes += read;
        }
    }
    Ok(found)
}

/// Fsyncs every file and folder under `root` (symlinks are not followed), folders after
/// their entries, so a restored tree survives a power cut once it is swapped in.
pub fn sync_tree(root: &Path) -> Result<()> {
    let meta =
        fs::symlink_metadata(root).with_context(|| format!("failed to read {}", root.display()))?;
    if meta.is_dir() {
        for entry in
            fs::read_dir(root).with_context(|| format!("failed to list {}", root.display()))?
        {
            let entry = entry.with_context(|| format!("failed to list {}", root.display()))?;
            sync_tree(&entry.path())?;
        }
    } else if !meta.is_file() {
        return Ok(());
    }
    File::open(root)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("failed to flush {}", root.display()))
}

/// The entry's path below `uploads/`, or None when it is absolute, uses `..`, or is not
/// under `uploads/`. `uploads` itself maps to the empty path.
pub(crate) fn relative_in_root(name: &Path) -> Option<PathBuf> {
    let mut components = name.components().filter(|c| *c != Component::CurDir);
    match components.next()? {
        Component::Normal(first) if first == ROOT_NAME => {}
        _ => return None,
    }
    let mut rel = PathBuf::new();
    for component in components {
        match component {
            Component::Normal(part) => rel.push(part),
            _ => return None,
        }
    }
    Some(rel)
}

/// Whether a symlink at `rel` (below the root) pointing at `target` stays in the tree,
/// judged on the names alone.
fn link_stays_inside(rel: &Path, target: &Path) -> bool {
    let mut depth: Vec<&std::ffi::OsStr> = rel
        .parent()
        .into_iter()
        .flat_map(|p| p.components())
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    for component in target.components() {
        match component {
            Component::Normal(part) => depth.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_member_is_valid_gzip() {
        for len in [0usize, 1, 65_535, 65_536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut member = Vec::new();
            stored_member(&data, &mut member);
            stored_member(b"tail", &mut member);
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&member[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back.len(), len + 4);
            assert_eq!(&back[..len], &data[..]);
        }
    }

    #[test]
    fn entry_paths_must_stay_under_uploads() {
        assert_eq!(
            relative_in_root(Path::new("uploads/a/b.jpg")),
            Some(PathBuf::from("a/b.jpg"))
        );
        assert_eq!(
            relative_in_root(Path::new("./uploads/")),
            Some(PathBuf::new())
        );
        for bad in [
            "/etc/passwd",
            "uploads/../evil",
            "../evil",
            "other/x",
            "uploads/a/../../x",
        ] {
            assert_eq!(relative_in_root(Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn symlink_targets_are_judged_from_their_folder() {
        let inside = |rel: &str, target: &str| link_stays_inside(Path::new(rel), Path::new(target));
        assert!(inside("a/link", "../b/photo.jpg"));
        assert!(inside("link", "a/./b"));
        assert!(!inside("link", "../x"));
        assert!(!inside("a/link", "../../x"));
        assert!(!inside("a/link", "/etc/passwd"));
    }

    #[test]
    fn extraction_stops_at_the_size_limit_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = Header::new_gnu();
        header.set_size(10_000);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "uploads/big.txt", &vec![b'x'; 10_000][..])
            .unwrap();
        let archive = tmp.path().join("a.tar.gz");
        fs::write(&archive, deflated_member(&builder.into_inner().unwrap())).unwrap();
        fs::create_dir(tmp.path().join("dest")).unwrap();
        let limits = Limits {
            max_bytes: 4096,
            max_bytes_source: "what the manifest records".into(),
            max_ratio: MAX_RATIO,
        };
        let err = format!(
            "{:#}",
            extract(&archive, &tmp.path().join("dest"), &limits).unwrap_err()
        );
        assert!(
            err.contains("it expands past 4.0 KiB (what the manifest records)"),
            "{err}"
        );
        assert!(err.contains("\"uploads/big.txt\""), "{err}");
    }

    #[test]
    fn link_chains_are_resolved_within_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("uploads");
        fs::create_dir_all(root.join("a")).unwrap();
        std::os::unix::fs::symlink("..", root.join("a/b")).unwrap();
        std::os::unix::fs::symlink("b/../x", root.join("a/c")).unwrap();
        std::os::unix::fs::symlink("b/x", root.join("a/d")).unwrap();
        std::os::unix::fs::symlink("e", root.join("e")).unwrap();
        std::os::unix::fs::symlink("../missing/file", root.join("a/f")).unwrap();
        assert!(resolves_inside(&root, Path::new("a/b")));
        assert!(
            !resolves_inside(&root, Path::new("a/c")),
            "b is the root; b/.. is above it"
        );
        assert!(resolves_inside(&root, Path::new("a/d")));
        assert!(!resolves_inside(&root, Path::new("e")), "a loop");
        assert!(
            resolves_inside(&root, Path::new("a/f")),
            "dangling, but inside"
        );
    }

    #[test]
    fn precompressed_by_name_or_magic() {
        assert!(is_precompressed(Path::new("a/IMG_1.JPG"), b"anything"));
        assert!(is_precompressed(
            Path::new("a/blob"),
            &[0xFF, 0xD8, 0xFF, 0xE0]
        ));
        assert!(is_precompressed(Path::new("a/x"), b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(!is_precompressed(Path::new("notes.txt"), b"hello"));
    }
}
