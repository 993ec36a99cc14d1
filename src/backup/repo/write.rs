//! A backup into the repository: the database cut at its page size, the uploads cut per
//! file (1 MiB pieces), each piece named, and only pieces not stored yet compressed,
//! encrypted and written. Uploads whose size, mtime, ctime and inode match the files
//! cache reuse their blobs unread, so an unchanged daily backup reads no upload.
//!
//! Order: the packs are made durable, then the snapshot is written (atomically), then the
//! cache. A run killed before its snapshot leaves packs that no snapshot names (prune
//! sweeps them) or files in `tmp/` (the next run or prune removes them).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::crypto::{self, RunKey};
use super::pack::{self, Kind};
use super::{BlobId, Content, DatabasePart, PackInfo, Repo, Sealed, UploadsPart};
use crate::backup::stack_files::{StackFile, StackFilesPart};
use crate::backup::{archive, fault, manifest, postgres, snapshot as db_snapshot, Check};
use crate::db::pg::PgUrl;

/// Uploads are cut into pieces of this size.
pub const FILE_PIECE: usize = 1 << 20;
/// Pieces are named and compressed in batches of about this many bytes, on all cores.
const BATCH_BYTES: usize = 8 << 20;
/// Blob names per list blob (32 KiB).
const LIST_IDS: usize = 1024;
/// Uploads tree entries per tree blob.
const TREE_NODES: usize = 1000;

/// One entry of the uploads tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Below `uploads/`; empty for the folder itself.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Dir,
    File,
    Symlink,
}

/// The files cache: for each upload (by path, or by its keyed hash in an encrypted
/// repository), what it was when last read and the blobs it became.
#[derive(Debug, Clone, Default)]
pub struct FilesCache(HashMap<String, Cached>);

impl FilesCache {
    fn read(root: &Path) -> FilesCache {
        FilesCache(
            fs::read(root.join(super::CACHE_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
        )
    }

    /// Replaces the cache file; a cache that cannot be written only costs a re-read.
    pub fn write(&self, root: &Path) {
        let bytes = serde_json::to_vec(&self.0).expect("cache serialises");
        if let Err(e) = manifest::write_atomic(&root.join(super::CACHE_FILE), &bytes) {
            tracing::warn!("{e:#}");
        }
    }
}

/// What the cache remembers of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cached {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    blobs: Vec<String>,
}

/// What a run did, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunStats {
    pub database_bytes: u64,
    pub upload_files: u64,
    pub upload_bytes: u64,
    /// Uploads reused from the cache, unread.
    pub cached_files: u64,
    pub new_blobs: u64,
    pub added_bytes: u64,
    /// The consistent copy of the database, checked (as an archive backup takes it).
    pub database_snapshot_ms: u64,
    /// Cutting, naming and storing that copy.
    pub database_store_ms: u64,
    pub uploads_ms: u64,
}

/// The writing side of a run: its key, the pack being filled, and the packs committed.
pub struct Session<'a> {
    pub repo: &'a mut Repo,
    key: Option<RunKey>,
    writer: Option<pack::Writer>,
    committer: Option<pack::Committer>,
    /// Blobs added this run, not yet in a committed pack's index entry.
    pending: HashSet<BlobId>,
    finished: Vec<pack::Finished>,
    pub stats: RunStats,
}

impl<'a> Session<'a> {
    /// Starts a run; an encrypted repository gets a fresh run key, wrapped to the
    /// recipients and stored before any blob uses it.
    pub fn start(repo: &'a mut Repo) -> Result<Session<'a>> {
        let key = match &repo.config.encryption {
            None => None,
            Some(enc) => {
                let (key, wrapped) = RunKey::generate(&enc.recipients)?;
                let path = repo
                    .root
                    .join(super::KEYS_DIR)
                    .join(format!("{}.age", hex::encode(key.id)));
                manifest::write_atomic(&path, &wrapped)?;
                Some(key)
            }
        };
        let committer = pack::Committer::start(&repo.root);
        Ok(Session {
            repo,
            key,
            writer: None,
            committer: Some(committer),
            pending: HashSet::new(),
            finished: Vec::new(),
            stats: RunStats::default(),
        })
    }

    fn known(&self, id: &BlobId) -> bool {
        self.repo.index.contains_key(id) || self.pending.contains(id)
    }

    /// Names each piece and stores those not stored yet; returns the names in order.
    /// `compress[i]` says whether piece i is worth compressing.
    pub fn store(
        &mut self,
        pieces: &[&[u8]],
        kind: Kind,
        compress: &[bool],
    ) -> Result<Vec<BlobId>> {
        let naming = &self.repo.naming;
        let ids = par_map(pieces, |p| naming.id(p));
        let mut fresh: Vec<usize> = Vec::new();
        let mut seen = HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            if !self.known(id) && seen.insert(*id) {
                fresh.push(i);
            }
        }
        let key = self.key.as_ref();
        let stored = par_map(&fresh, |&i| {
            crypto::encode_parts(&ids[i], pieces[i], compress[i], key)
        });
        for (&i, encoded) in fresh.iter().zip(stored) {
            self.add(ids[i], kind, &encoded.parts(pieces[i]), pieces[i].len())?;
        }
        Ok(ids)
    }

    fn add(&mut self, id: BlobId, kind: Kind, stored: &[&[u8]], raw_len: usize) -> Result<()> {
        if self.writer.is_none() {
            self.writer = Some(pack::Writer::create(&self.repo.root.join(super::TMP_DIR))?);
        }
        let writer = self.writer.as_mut().expect("just made");
        writer.add(id, kind, stored, raw_len)?;
        self.pending.insert(id);
        self.stats.new_blobs += 1;
        self.stats.added_bytes += stored.iter().map(|p| p.len() as u64).sum::<u64>();
        if writer.size() >= pack::TARGET_SIZE {
            self.close_pack()?;
        }
        Ok(())
    }

    fn close_pack(&mut self) -> Result<()> {
        if let Some(writer) = self.writer.take() {
            if writer.is_empty() {
                return Ok(());
            }
            let finished = writer.finish()?;
            // The committer fsyncs and moves it; the index learns of it at the end.
            let record = pack::Finished {
                temp: finished.temp.clone(),
                name: finished.name.clone(),
                size: finished.size,
                entries: finished.entries.clone(),
            };
            self.committer
                .as_ref()
                .context("the run's packs are already finished")?
                .send(finished)?;
            self.finished.push(record);
            fault::point("backup:pack-written");
        }
        Ok(())
    }

    /// Stores `ids` as list blobs; returns their names.
    pub fn store_lists(&mut self, ids: &[BlobId]) -> Result<Vec<String>> {
        let raw: Vec<Vec<u8>> = ids.chunks(LIST_IDS).map(|c| c.concat()).collect();
        let pieces: Vec<&[u8]> = raw.iter().map(Vec::as_slice).collect();
        // Names are random-looking: never worth compressing, never encrypted.
        let naming = &self.repo.naming;
        let names = par_map(&pieces, |p| naming.id(p));
        for (name, piece) in names.iter().zip(&pieces) {
            if !self.known(name) {
                self.add(*name, Kind::List, &[&crypto::RAW, piece], piece.len())?;
            }
        }
        Ok(names.iter().map(hex::encode).collect())
    }

    /// Makes every pack of the run durable and adds them to the index.
    pub fn finish_packs(&mut self) -> Result<()> {
        self.close_pack()?;
        if let Some(committer) = self.committer.take() {
            committer.finish()?;
        }
        for f in self.finished.drain(..) {
            self.repo.add_pack(PackInfo {
                name: f.name,
                size: f.size,
                entries: f.entries,
            });
        }
        self.pending.clear();
        Ok(())
    }

    /// Seals the content with the run key (encrypted repository).
    pub fn seal(&self, id: &str, content: &Content) -> Option<Sealed> {
        self.key.as_ref().map(|key| Sealed {
            key: hex::encode(key.id),
            data: hex::encode(key.seal(
                id.as_bytes(),
                &serde_json::to_vec(content).expect("content serialises"),
            )),
        })
    }
}

/// `f` over `items`, on two threads when there is enough work.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    if items.len() < 2 || threads < 2 {
        return items.iter().map(&f).collect();
    }
    let per = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|chunk| s.spawn(|| chunk.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a worker panicked"))
            .collect()
    })
}

/// The database part: a consistent copy (as for an archive backup), cut at its page size.
pub fn database(
    session: &mut Session<'_>,
    source: &Path,
    check: Check,
    deadline: Instant,
) -> Result<(DatabasePart, Option<i64>)> {
    let temp = session
        .repo
        .root
        .join(super::TMP_DIR)
        .join(format!("database-{}.db", std::process::id()));
    let started = Instant::now();
    let snap = db_snapshot::take(source, &temp, check, deadline);
    session.stats.database_snapshot_ms = started.elapsed().as_millis() as u64;
    let result = snap.and_then(|snap| {
        fault::point("backup:database-copied");
        let started = Instant::now();
        let part = cut_database(session, &temp, &snap.sha256, deadline)?;
        session.stats.database_store_ms = started.elapsed().as_millis() as u64;
        Ok((part, snap.schema_version))
    });
    let _ = fs::remove_file(&temp);
    result
}

fn cut_database(
    session: &mut Session<'_>,
    copy: &Path,
    sha256: &str,
    deadline: Instant,
) -> Result<DatabasePart> {
    let mut file =
        File::open(copy).with_context(|| format!("failed to open {}", copy.display()))?;
    let size = file.metadata()?.len();
    let mut header = [0u8; 18];
    let page = if file.read_exact(&mut header).is_ok() && &header[..16] == b"SQLite format 3\0" {
        match u16::from_be_bytes([header[16], header[17]]) {
            1 => 65536,
            n if n >= 512 && n.is_power_of_two() => usize::from(n),
            _ => 4096,
        }
    } else {
        4096
    };
    let mut file =
        File::open(copy).with_context(|| format!("failed to open {}", copy.display()))?;
    let mut ids = Vec::with_capacity((size / page as u64) as usize + 1);
    let mut buf = vec![0u8; BATCH_BYTES.max(page)];
    loop {
        if Instant::now() > deadline {
            bail!("backup timed out while storing the database\nraise the limit with --timeout");
        }
        let n = read_full(&mut file, &mut buf)
            .with_context(|| format!("failed to read {}", copy.display()))?;
        if n == 0 {
            break;
        }
        let pieces: Vec<&[u8]> = buf[..n].chunks(page).collect();
        let compress = vec![true; pieces.len()];
        ids.extend(session.store(&pieces, Kind::Data, &compress)?);
    }
    session.stats.database_bytes = size;
    Ok(DatabasePart {
        size,
        sha256: sha256.to_string(),
        chunk_size: page as u32,
        kind: None,
        lists: session.store_lists(&ids)?,
    })
}

/// Content-defined chunk sizes of a dump (restic's are 512 KiB to 8 MiB for whole
/// files; a database dump changes in small places, so smaller chunks deduplicate more).
const DUMP_CHUNK_MIN: u32 = 16 << 10;
const DUMP_CHUNK_AVG: u32 = 64 << 10;
const DUMP_CHUNK_MAX: u32 = 256 << 10;

/// The database part of a PostgreSQL stack: `pg_dump -Fc` (uncompressed, see
/// [`postgres::dump_uncompressed`]) into `tmp/`, then cut at content-defined boundaries
/// (FastCDC) so that a changed row costs the chunks around it, not the rest of the dump.
pub fn postgres_dump(
    session: &mut Session<'_>,
    url: &PgUrl,
    deadline: Instant,
) -> Result<DatabasePart> {
    let temp = session
        .repo
        .root
        .join(super::TMP_DIR)
        .join(format!("dump-{}.pgdump", std::process::id()));
    let started = Instant::now();
    let dumped = postgres::dump_uncompressed(url, &temp, deadline);
    session.stats.database_snapshot_ms = started.elapsed().as_millis() as u64;
    let result = dumped.and_then(|dump| {
        fault::point("backup:database-copied");
        postgres::check_dump(&temp)?;
        let started = Instant::now();
        let part = cut_dump(session, &temp, &dump, deadline)?;
        session.stats.database_store_ms = started.elapsed().as_millis() as u64;
        Ok(part)
    });
    let _ = fs::remove_file(&temp);
    result
}

fn cut_dump(
    session: &mut Session<'_>,
    path: &Path,
    dump: &postgres::Dump,
    deadline: Instant,
) -> Result<DatabasePart> {
    let file = File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut ids = Vec::new();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut batch_bytes = 0;
    let mut size = 0u64;
    let mut flush = |batch: &mut Vec<Vec<u8>>, session: &mut Session<'_>| -> Result<()> {
        let pieces: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        ids.extend(session.store(&pieces, Kind::Data, &vec![true; pieces.len()])?);
        batch.clear();
        Ok(())
    };
    for chunk in
        fastcdc::v2020::StreamCDC::new(file, DUMP_CHUNK_MIN, DUMP_CHUNK_AVG, DUMP_CHUNK_MAX)
    {
        let chunk = chunk.map_err(|e| anyhow!("failed to read {}: {e}", path.display()))?;
        if Instant::now() > deadline {
            bail!(
                "backup timed out while storing the database dump\nraise the limit with --timeout"
            );
        }
        size += chunk.length as u64;
        batch_bytes += chunk.length;
        batch.push(chunk.data);
        if batch_bytes >= BATCH_BYTES {
            flush(&mut batch, session)?;
            batch_bytes = 0;
        }
    }
    flush(&mut batch, session)?;
    if size != dump.size {
        bail!(
            "{} changed while it was stored ({size} bytes read, {} dumped); run the backup again",
            path.display(),
            dump.size
        );
    }
    session.stats.database_bytes = size;
    Ok(DatabasePart {
        size,
        sha256: dump.sha256.clone(),
        chunk_size: 0,
        kind: Some(postgres::KIND.to_string()),
        lists: session.store_lists(&ids)?,
    })
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The stack files part: the env file (its secrets withheld unless the repository is
/// encrypted), the certificate, its key and the ACME account, each one blob (encrypted in
/// an encrypted repository). `None` when the stack has none of them.
pub fn stack_files(session: &mut Session<'_>, stack_dir: &Path) -> Result<Option<StackFilesPart>> {
    let encrypted = session.repo.config.encryption.is_some();
    let files = crate::backup::stack_files::read(stack_dir, encrypted)?;
    if files.is_empty() {
        return Ok(None);
    }
    let pieces: Vec<&[u8]> = files.iter().map(|(_, bytes)| bytes.as_slice()).collect();
    let ids = session.store(&pieces, Kind::Data, &vec![true; pieces.len()])?;
    let lists = session.store_lists(&ids)?;
    Ok(Some(StackFilesPart {
        files: files
            .iter()
            .zip(&ids)
            .map(|((path, bytes), id)| StackFile {
                path: path.to_string(),
                size: bytes.len() as u64,
                blob: hex::encode(id),
            })
            .collect(),
        lists,
    }))
}

/// Pieces read from uploads, waiting to be stored: (node, piece).
struct Batch {
    pieces: Vec<(usize, Vec<u8>, bool)>,
    bytes: usize,
}

/// The uploads part: the tree walked in name order (symlinks stored, never followed).
pub fn uploads(
    session: &mut Session<'_>,
    root: &Path,
    deadline: Instant,
) -> Result<(UploadsPart, FilesCache)> {
    let started = Instant::now();
    let root = fs::canonicalize(root)
        .with_context(|| format!("failed to resolve uploads folder {}", root.display()))?;
    let cache = FilesCache::read(&session.repo.root).0;
    let mut walk = Walk {
        root: &root,
        deadline,
        cache: &cache,
        next_cache: HashMap::new(),
        read_files: Vec::new(),
        nodes: Vec::new(),
        batch: Batch {
            pieces: Vec::new(),
            bytes: 0,
        },
        session,
    };
    walk.entry(&root, "")?;
    walk.flush()?;
    let Walk {
        session,
        mut next_cache,
        read_files,
        nodes,
        ..
    } = walk;
    for (index, key, mut stamp) in read_files {
        stamp.blobs = nodes[index].blobs.clone();
        next_cache.insert(key, stamp);
    }

    let mut data: BTreeSet<BlobId> = BTreeSet::new();
    let (mut files, mut bytes) = (0, 0);
    for node in &nodes {
        if node.kind == NodeKind::File {
            files += 1;
            bytes += node.size;
            data.extend(node.blobs.iter().filter_map(|b| super::parse_id(b)));
        }
    }
    session.stats.upload_files = files;
    session.stats.upload_bytes = bytes;
    let tree_raw: Vec<Vec<u8>> = nodes
        .chunks(TREE_NODES)
        .map(|c| serde_json::to_vec(c).expect("nodes serialise"))
        .collect();
    let pieces: Vec<&[u8]> = tree_raw.iter().map(Vec::as_slice).collect();
    let compress = vec![true; pieces.len()];
    let trees = session.store(&pieces, Kind::Tree, &compress)?;
    let data: Vec<BlobId> = data.into_iter().collect();
    let lists = session.store_lists(&data)?;
    session.stats.uploads_ms = started.elapsed().as_millis() as u64;
    let part = UploadsPart {
        files,
        bytes,
        trees: trees.iter().map(hex::encode).collect(),
        lists,
    };
    // The cache is written once the snapshot is.
    Ok((part, FilesCache(next_cache)))
}

struct Walk<'w, 's> {
    root: &'w Path,
    deadline: Instant,
    cache: &'w HashMap<String, Cached>,
    next_cache: HashMap<String, Cached>,
    /// Files read this run: (node, cache key, what they were), cached once stored.
    read_files: Vec<(usize, String, Cached)>,
    nodes: Vec<Node>,
    batch: Batch,
    session: &'w mut Session<'s>,
}

impl Walk<'_, '_> {
    fn entry(&mut self, path: &Path, rel: &str) -> Result<()> {
        if Instant::now() > self.deadline {
            bail!(
                "backup timed out while storing {}\nraise the limit with --timeout",
                self.root.display()
            );
        }
        let meta = match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other.with_context(|| format!("failed to read {}", path.display()))?,
        };
        let mut node = Node {
            path: rel.to_string(),
            kind: NodeKind::Dir,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            size: 0,
            blobs: Vec::new(),
            target: None,
        };
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            let target = match fs::read_link(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                other => {
                    other.with_context(|| format!("failed to read symlink {}", path.display()))?
                }
            };
            node.kind = NodeKind::Symlink;
            node.target = Some(utf8(&target)?.to_string());
            self.nodes.push(node);
        } else if file_type.is_dir() {
            self.nodes.push(node);
            let listed = fs::read_dir(path)
                .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect());
            let mut children: Vec<std::ffi::OsString> = match listed {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                other => other.with_context(|| format!("failed to list {}", path.display()))?,
            };
            children.sort();
            for child in children {
                let name = utf8(Path::new(&child))?;
                let child_rel = if rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel}/{name}")
                };
                self.entry(&path.join(&child), &child_rel)?;
            }
        } else if file_type.is_file() {
            node.kind = NodeKind::File;
            self.file(path, node, &meta)?;
        } else {
            tracing::warn!(path = %path.display(), "skipping a special file (socket, fifo or device) in uploads");
        }
        Ok(())
    }

    fn file(&mut self, path: &Path, mut node: Node, meta: &fs::Metadata) -> Result<()> {
        let key = match &self.session.repo.naming {
            crypto::Naming::Plain => node.path.clone(),
            naming => hex::encode(naming.id(format!("path\0{}", node.path).as_bytes())),
        };
        let stamp = Cached {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
            blobs: Vec::new(),
        };
        if let Some(hit) = self.cache.get(&key) {
            let same = Cached {
                blobs: Vec::new(),
                ..hit.clone()
            } == stamp;
            let present = hit.blobs.iter().all(|b| {
                super::parse_id(b).is_some_and(|id| self.session.repo.index.contains_key(&id))
            });
            if same && present {
                node.size = hit.size;
                node.blobs = hit.blobs.clone();
                self.session.stats.cached_files += 1;
                self.next_cache.insert(key, hit.clone());
                self.nodes.push(node);
                return Ok(());
            }
        }
        let mut file = match File::open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other.with_context(|| format!("failed to open {}", path.display()))?,
        };
        let index = self.nodes.len();
        let mut first = true;
        let mut compress = true;
        let mut size = 0u64;
        let expected = meta.len();
        loop {
            // Sized to what is left (no 1 MiB zeroed buffer for a 300 KiB photo); a file
            // that grew meanwhile is read on in whole pieces.
            let want = expected.saturating_sub(size).clamp(1, FILE_PIECE as u64);
            let mut piece = Vec::with_capacity(want as usize);
            (&mut file)
                .take(FILE_PIECE as u64)
                .read_to_end(&mut piece)
                .with_context(|| format!("failed to read {}", path.display()))?;
            let n = piece.len();
            if n == 0 && !first {
                break;
            }
            if first {
                compress = !archive::is_precompressed(path, &piece[..n.min(16)]);
                first = false;
            }
            size += n as u64;
            if n > 0 {
                self.batch.bytes += n;
                self.batch.pieces.push((index, piece, compress));
            }
            if n < FILE_PIECE {
                break;
            }
            if self.batch.bytes >= BATCH_BYTES {
                self.nodes.push(node.clone());
                self.flush()?;
                node = self.nodes.pop().expect("just pushed");
            }
        }
        node.size = size;
        // Only what was read, consistently, is cached: a file that changed while being
        // read is read again next time.
        let after = fs::symlink_metadata(path).ok();
        let unchanged = after.is_some_and(|m| {
            m.len() == stamp.size && m.mtime() * 1_000_000_000 + m.mtime_nsec() == stamp.mtime_ns
        });
        self.nodes.push(node);
        if self.batch.bytes >= BATCH_BYTES {
            self.flush()?;
        }
        if unchanged {
            self.read_files.push((index, key, stamp));
        }
        Ok(())
    }

    /// Stores the batched pieces and hands each file its blob names.
    fn flush(&mut self) -> Result<()> {
        if self.batch.pieces.is_empty() {
            return Ok(());
        }
        let pieces = std::mem::take(&mut self.batch.pieces);
        self.batch.bytes = 0;
        let slices: Vec<&[u8]> = pieces.iter().map(|(_, p, _)| p.as_slice()).collect();
        let compress: Vec<bool> = pieces.iter().map(|(_, _, c)| *c).collect();
        let ids = self.session.store(&slices, Kind::Data, &compress)?;
        for ((node, _, _), id) in pieces.iter().zip(ids) {
            self.nodes
                .get_mut(*node)
                .ok_or_else(|| anyhow!("internal error: no node {node}"))?
                .blobs
                .push(hex::encode(id));
        }
        Ok(())
    }
}

fn utf8(path: &Path) -> Result<&str> {
    path.to_str().with_context(|| {
        format!(
            "upload name {path:?} is not UTF-8, which the repository format cannot store\nrename it, or use BACKUP_FORMAT=archive"
        )
    })
}
