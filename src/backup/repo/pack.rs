//! Pack files: many blobs in one file, so a 1 GiB database in 4 KiB pages is not a
//! quarter of a million files (restic's packs, borg's segments).
//!
//! A pack is `blob blob ... header header_len magic`: the header lists each blob's name,
//! kind, stored length and plaintext length, in file order (offsets follow). It is written
//! under `tmp/`, then fsynced and renamed to `packs/XX/NAME`, where NAME is the sha256 of
//! the whole file: any changed byte is found by hashing the pack, without a key. Packs
//! are immutable; prune writes new ones and deletes old ones, never edits one.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::BlobId;
use crate::backup::manifest;

pub const MAGIC: &[u8; 8] = b"ELIORPK1";
const ENTRY_LEN: usize = 32 + 1 + 4 + 4;
/// A pack is closed once it holds this much.
pub const TARGET_SIZE: u64 = 16 << 20;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// File content or a database page.
    Data = 0,
    /// A list of blob names (plaintext even in an encrypted repository: names only).
    List = 1,
    /// A piece of the uploads tree (paths and metadata; encrypted when the repo is).
    Tree = 2,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Data),
            1 => Some(Kind::List),
            2 => Some(Kind::Tree),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: BlobId,
    pub kind: Kind,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
}

/// Reads the header of the pack at `path`.
pub fn read_header(path: &Path) -> Result<(u64, Vec<Entry>)> {
    let file =
        File::open(path).with_context(|| format!("failed to open pack {}", path.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("failed to read pack {}", path.display()))?
        .len();
    let damaged = |why: &str| anyhow::anyhow!("pack {} is damaged: {why}", path.display());
    if size < 12 {
        return Err(damaged("too short"));
    }
    let mut tail = [0u8; 12];
    file.read_exact_at(&mut tail, size - 12)
        .with_context(|| format!("failed to read pack {}", path.display()))?;
    if &tail[4..] != MAGIC {
        return Err(damaged("no pack trailer"));
    }
    let header_len = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
    if header_len % ENTRY_LEN as u64 != 0 || header_len + 12 > size {
        return Err(damaged("bad header length"));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, size - 12 - header_len)
        .with_context(|| format!("failed to read pack {}", path.display()))?;
    let mut entries = Vec::with_capacity(header.len() / ENTRY_LEN);
    let mut offset = 0u64;
    for raw in header.chunks_exact(ENTRY_LEN) {
        let kind = Kind::from_byte(raw[32]).ok_or_else(|| damaged("unknown blob kind"))?;
        let stored_len = u32::from_le_bytes(raw[33..37].try_into().expect("4 bytes"));
        let raw_len = u32::from_le_bytes(raw[37..41].try_into().expect("4 bytes"));
        entries.push(Entry {
            id: raw[..32].try_into().expect("32 bytes"),
            kind,
            offset,
            stored_len,
            raw_len,
        });
        offset += u64::from(stored_len);
    }
    if offset != size - 12 - header_len {
        return Err(damaged("the header does not add up to the file"));
    }
    Ok((size, entries))
}

/// The path of pack `name` under the repository root.
pub fn path(root: &Path, name: &str) -> PathBuf {
    root.join("packs").join(&name[..2]).join(name)
}

/// A pack being written under `tmp/`.
pub struct Writer {
    file: BufWriter<File>,
    temp: PathBuf,
    hasher: Sha256,
    entries: Vec<Entry>,
    size: u64,
}

impl Writer {
    pub fn create(tmp_dir: &Path) -> Result<Writer> {
        let mut name = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut name);
        let temp = tmp_dir.join(format!("pack-{}", hex::encode(name)));
        let file = manifest::create_private(&temp)?;
        Ok(Writer {
            file: BufWriter::with_capacity(1 << 20, file),
            temp,
            hasher: Sha256::new(),
            entries: Vec::new(),
            size: 0,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a stored blob; returns its offset.
    pub fn add(&mut self, id: BlobId, kind: Kind, stored: &[u8], raw_len: usize) -> Result<u64> {
        let offset = self.size;
        self.write(stored)?;
        self.entries.push(Entry {
            id,
            kind,
            offset,
            stored_len: u32::try_from(stored.len()).context("blob too large")?,
            raw_len: u32::try_from(raw_len).context("blob too large")?,
        });
        Ok(offset)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .with_context(|| format!("failed to write {}", self.temp.display()))?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Writes the header; returns the finished (not yet fsynced) pack.
    pub fn finish(mut self) -> Result<Finished> {
        let mut header = Vec::with_capacity(self.entries.len() * ENTRY_LEN + 12);
        for e in &self.entries {
            header.extend_from_slice(&e.id);
            header.push(e.kind as u8);
            header.extend_from_slice(&e.stored_len.to_le_bytes());
            header.extend_from_slice(&e.raw_len.to_le_bytes());
        }
        let len = header.len() as u32;
        header.extend_from_slice(&len.to_le_bytes());
        header.extend_from_slice(MAGIC);
        self.write(&header)?;
        self.file
            .flush()
            .with_context(|| format!("failed to write {}", self.temp.display()))?;
        let name = hex::encode(self.hasher.finalize());
        Ok(Finished {
            temp: self.temp,
            name,
            size: self.size,
            entries: self.entries,
        })
    }
}

/// A pack written in full under `tmp/`, waiting to be fsynced and moved into place.
#[derive(Debug)]
pub struct Finished {
    pub temp: PathBuf,
    pub name: String,
    pub size: u64,
    pub entries: Vec<Entry>,
}

/// Fsyncs finished packs and renames them into place on a thread of its own, so the disk
/// writes back while the next packs are filled (a pack is durable before it is visible).
pub struct Committer {
    tx: Option<mpsc::Sender<Finished>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Committer {
    pub fn start(root: &Path) -> Committer {
        let (tx, rx) = mpsc::channel::<Finished>();
        let root = root.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("backup: packs".into())
            .spawn(move || -> Result<()> {
                let mut dirs = std::collections::BTreeSet::new();
                for pack in rx {
                    commit(&root, &pack)?;
                    dirs.insert(path(&root, &pack.name).parent().map(Path::to_path_buf));
                }
                for dir in dirs.into_iter().flatten() {
                    manifest::sync_dir(&dir)?;
                }
                Ok(())
            })
            .expect("a thread starts");
        Committer {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn send(&self, pack: Finished) -> Result<()> {
        if let Some(tx) = &self.tx {
            if tx.send(pack).is_ok() {
                return Ok(());
            }
        }
        bail!("the pack writer stopped")
    }

    /// Waits until every pack sent is durable in place.
    pub fn finish(mut self) -> Result<()> {
        drop(self.tx.take());
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => bail!("the pack writer panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Fsyncs a finished pack and renames it to `packs/XX/NAME` (the folder is fsynced by the
/// caller once for all packs).
pub fn commit(root: &Path, pack: &Finished) -> Result<()> {
    let final_path = path(root, &pack.name);
    let dir = final_path.parent().expect("packs/XX");
    if !dir.is_dir() {
        fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        manifest::sync_dir(dir.parent().expect("packs"))?;
    }
    File::open(&pack.temp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("failed to flush {}", pack.temp.display()))?;
    fs::rename(&pack.temp, &final_path).with_context(|| {
        format!(
            "failed to move {} to {}",
            pack.temp.display(),
            final_path.display()
        )
    })
}
