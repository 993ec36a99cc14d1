//! Pack files: many blobs in one file, so a 1 GiB database in 4 KiB pages is not a
//! quarter of a million files (restic's packs, borg's segments).
//!
//! A pack is `blob blob ... header header_len magic`: the header lists each blob's name,
//! kind, stored length, plaintext length and the CRC-32 of its stored bytes, in file
//! order (offsets follow). It is written under `tmp/`, then fsynced and renamed to
//! `packs/XX/NAME`, where NAME is the sha256 of the header (and trailer): a changed byte
//! anywhere is found without a key, in the header by its hash, in a blob by its CRC
//! (and a forged blob by its name, or its tag when encrypted). Hashing the header rather
//! than the whole file keeps a second sha256 pass over every byte off the backup's path.
//! Packs are immutable; prune writes new ones and deletes old ones, never edits one.

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
const ENTRY_LEN: usize = 32 + 1 + 4 + 4 + 4;
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
    /// CRC-32 of the stored bytes.
    pub crc: u32,
}

/// Reads the header of the pack at `path`: its size and entries.
pub fn read_header(path: &Path) -> Result<(u64, Vec<Entry>)> {
    read_header_hashed(path).map(|(size, entries, _)| (size, entries))
}

/// [`read_header`], and the sha256 of the header and trailer (the pack's name).
fn read_header_hashed(path: &Path) -> Result<(u64, Vec<Entry>, String)> {
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
        let crc = u32::from_le_bytes(raw[41..45].try_into().expect("4 bytes"));
        entries.push(Entry {
            id: raw[..32].try_into().expect("32 bytes"),
            kind,
            offset,
            stored_len,
            raw_len,
            crc,
        });
        offset += u64::from(stored_len);
    }
    if offset != size - 12 - header_len {
        return Err(damaged("the header does not add up to the file"));
    }
    let mut hasher = Sha256::new();
    hasher.update(&header);
    hasher.update(tail);
    Ok((size, entries, hex::encode(hasher.finalize())))
}

/// Checks pack `name` without a key: its header hashes to its name, and every blob's
/// stored bytes match their CRC. Returns one line per problem.
pub fn check(root: &Path, name: &str) -> Option<String> {
    let path = path(root, name);
    let (_, entries, hash) = match read_header_hashed(&path) {
        Ok(found) => found,
        Err(e) => return Some(format!("{e:#}")),
    };
    if hash != name {
        return Some(format!(
            "pack {name} does not match its name: it was changed or damaged"
        ));
    }
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => return Some(format!("failed to open pack {}: {e}", path.display())),
    };
    let mut buf = Vec::new();
    for entry in entries {
        buf.resize(entry.stored_len as usize, 0);
        if let Err(e) = file.read_exact_at(&mut buf, entry.offset) {
            return Some(format!("failed to read pack {}: {e}", path.display()));
        }
        if crc32fast::hash(&buf) != entry.crc {
            return Some(format!(
                "pack {name} does not match its name: chunk {} in it was changed or damaged",
                hex::encode(entry.id)
            ));
        }
    }
    None
}

/// The path of pack `name` under the repository root.
pub fn path(root: &Path, name: &str) -> PathBuf {
    root.join("packs").join(&name[..2]).join(name)
}

/// A pack being written under `tmp/`.
pub struct Writer {
    file: BufWriter<File>,
    temp: PathBuf,
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

    /// Appends a stored blob, given in parts that are written one after the other;
    /// returns its offset.
    pub fn add(&mut self, id: BlobId, kind: Kind, stored: &[&[u8]], raw_len: usize) -> Result<u64> {
        let offset = self.size;
        let mut crc = crc32fast::Hasher::new();
        for part in stored {
            self.write(part)?;
            crc.update(part);
        }
        self.entries.push(Entry {
            id,
            kind,
            offset,
            stored_len: u32::try_from(self.size - offset).context("blob too large")?,
            raw_len: u32::try_from(raw_len).context("blob too large")?,
            crc: crc.finalize(),
        });
        Ok(offset)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .with_context(|| format!("failed to write {}", self.temp.display()))?;
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
            header.extend_from_slice(&e.crc.to_le_bytes());
        }
        let len = header.len() as u32;
        header.extend_from_slice(&len.to_le_bytes());
        header.extend_from_slice(MAGIC);
        self.write(&header)?;
        self.file
            .flush()
            .with_context(|| format!("failed to write {}", self.temp.display()))?;
        let name = hex::encode(Sha256::digest(&header));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_reads_back_and_a_changed_byte_or_header_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("tmp")).unwrap();
        let mut writer = Writer::create(&root.join("tmp")).unwrap();
        writer
            .add([1; 32], Kind::Data, &[b"\0", b"hello"], 5)
            .unwrap();
        writer.add([2; 32], Kind::List, &[b"\0world"], 5).unwrap();
        let finished = writer.finish().unwrap();
        commit(root, &finished).unwrap();
        let at = path(root, &finished.name);
        let (size, entries) = read_header(&at).unwrap();
        assert_eq!(size, fs::metadata(&at).unwrap().len());
        assert_eq!(entries, finished.entries);
        assert_eq!((entries[1].offset, entries[1].stored_len), (6, 6));
        assert_eq!(check(root, &finished.name), None);

        let mut bytes = fs::read(&at).unwrap();
        bytes[3] ^= 1;
        fs::write(&at, &bytes).unwrap();
        let found = check(root, &finished.name).unwrap();
        assert!(found.contains(&hex::encode([1u8; 32])), "{found}");
        bytes[3] ^= 1;
        let crc_of_first = bytes.len() - 12 - 2 * ENTRY_LEN + 41;
        bytes[crc_of_first] ^= 1;
        fs::write(&at, &bytes).unwrap();
        let found = check(root, &finished.name).unwrap();
        assert!(found.contains("does not match its name"), "{found}");
    }
}
