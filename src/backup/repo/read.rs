//! Reading snapshots back: checking them (verify, retention), rebuilding the database
//! file, and the uploads as a tar stream that restore unpacks with the archive's own
//! hostile-entry checks, and that export writes out.
//!
//! Every blob read is checked against its name (and, encrypted, its AEAD tag), so a
//! changed or forged chunk is refused with its name and its pack.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::crypto::Keyring;
use super::pack::Kind;
use super::write::{Node, NodeKind};
use super::{parse_id, BlobId, Content, DatabasePart, Repo, Snapshot, StackFilesPart, UploadsPart};
use crate::backup::archive::ROOT_NAME;
use crate::backup::{manifest, postgres, snapshot as db_snapshot, stack_files, Check};

fn ids(names: &[String], snapshot: &str) -> Result<Vec<BlobId>> {
    names
        .iter()
        .map(|n| {
            parse_id(n).with_context(|| format!("snapshot {snapshot} names a bad chunk {n:?}"))
        })
        .collect()
}

/// The page blobs of the database, in order.
pub fn database_blobs(repo: &Repo, db: &DatabasePart, snapshot: &str) -> Result<Vec<BlobId>> {
    let mut out = Vec::new();
    for list in ids(&db.lists, snapshot)? {
        out.extend(repo.load_list(&list)?);
    }
    Ok(out)
}

/// The entries of the uploads tree.
pub fn tree(
    repo: &Repo,
    up: &UploadsPart,
    snapshot: &str,
    mut keyring: Option<&mut Keyring>,
) -> Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for id in ids(&up.trees, snapshot)? {
        let raw = repo.load(&id, keyring.as_deref_mut())?;
        let part: Vec<Node> = serde_json::from_slice(&raw).with_context(|| {
            format!(
                "tree chunk {} of snapshot {snapshot} is damaged",
                hex::encode(id)
            )
        })?;
        nodes.extend(part);
    }
    Ok(nodes)
}

/// Writes the database of a snapshot to `out` (a new file), checking its size and
/// sha256.
pub fn write_database(
    repo: &Repo,
    db: &DatabasePart,
    snapshot: &str,
    mut keyring: Option<&mut Keyring>,
    out: File,
) -> Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    for id in database_blobs(repo, db, snapshot)? {
        let page = repo.load(&id, keyring.as_deref_mut())?;
        hasher.update(&page);
        size += page.len() as u64;
        out.write_all(&page)
            .context("failed to write the database")?;
    }
    // Not fsynced here: a restore fsyncs the staged copy itself; a check discards it.
    out.into_inner()
        .map_err(|e| e.into_error())
        .context("failed to write the database")?;
    if size != db.size || hex::encode(hasher.finalize()) != db.sha256 {
        bail!(
            "the database of snapshot {snapshot} does not rebuild to the file that was backed up (size or sha256 differs)"
        );
    }
    Ok(())
}

/// The stack files of a snapshot: (path, bytes), each checked against its recorded size,
/// its path one elior backs up, and its blob one the snapshot's lists name (what prune
/// keeps).
pub fn stack_files(
    repo: &Repo,
    part: &StackFilesPart,
    snapshot: &str,
    mut keyring: Option<&mut Keyring>,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut listed = HashSet::new();
    for list in ids(&part.lists, snapshot)? {
        listed.extend(repo.load_list(&list)?);
    }
    let mut files = Vec::new();
    for file in &part.files {
        if stack_files::known(&file.path).is_none() {
            bail!(
                "snapshot {snapshot} names a stack file {:?} that elior never backs up: it was tampered with",
                file.path
            );
        }
        let id = parse_id(&file.blob)
            .filter(|id| listed.contains(id))
            .with_context(|| {
                format!(
                    "snapshot {snapshot}: stack file {} uses chunk {}, which its chunk lists do not name",
                    file.path, file.blob
                )
            })?;
        let bytes = repo.load(&id, keyring.as_deref_mut())?;
        if bytes.len() as u64 != file.size {
            bail!(
                "snapshot {snapshot}: stack file {} is {} bytes, but its chunk holds {}",
                file.path,
                file.size,
                bytes.len()
            );
        }
        files.push((file.path.clone(), bytes));
    }
    Ok(files)
}

/// Reads a file's blobs in order.
struct FileReader<'a, 'k> {
    repo: &'a Repo,
    keyring: Option<&'a mut Keyring>,
    blobs: std::vec::IntoIter<BlobId>,
    current: io::Cursor<Vec<u8>>,
    _k: std::marker::PhantomData<&'k ()>,
}

impl Read for FileReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let Some(id) = self.blobs.next() else {
                return Ok(0);
            };
            let data = self
                .repo
                .load(&id, self.keyring.as_deref_mut())
                .map_err(|e| io::Error::other(format!("{e:#}")))?;
            self.current = io::Cursor::new(data);
        }
    }
}

/// Writes the uploads of a snapshot as tar entries under `prefix` (`uploads/...`), as
/// the uploads archive holds them. Returns (files, bytes).
pub fn write_uploads_tar<W: Write>(
    repo: &Repo,
    up: &UploadsPart,
    snapshot: &str,
    mut keyring: Option<&mut Keyring>,
    prefix: &Path,
    out: &mut tar::Builder<W>,
) -> Result<(u64, u64)> {
    let nodes = tree(repo, up, snapshot, keyring.as_deref_mut())?;
    let (mut files, mut bytes) = (0, 0);
    for node in nodes {
        let name = if node.path.is_empty() {
            prefix.join(ROOT_NAME)
        } else {
            prefix.join(ROOT_NAME).join(&node.path)
        };
        let mut header = tar::Header::new_gnu();
        header.set_mode(node.mode);
        header.set_uid(u64::from(node.uid));
        header.set_gid(u64::from(node.gid));
        header.set_mtime(node.mtime.max(0) as u64);
        let added = match node.kind {
            NodeKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                out.append_data(&mut header, &name, io::empty())
            }
            NodeKind::Symlink => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                let target = node.target.as_deref().unwrap_or_default();
                out.append_link(&mut header, &name, target)
            }
            NodeKind::File => {
                let blobs = ids(&node.blobs, snapshot)?;
                let stored: u64 = blobs
                    .iter()
                    .map(|b| {
                        repo.index
                            .get(b)
                            .map_or(0, |l| u64::from(repo.entry(*l).raw_len))
                    })
                    .sum();
                if stored != node.size {
                    bail!(
                        "snapshot {snapshot}: upload {:?} is {} bytes, but its chunks hold {stored} (a chunk is missing or damaged)",
                        node.path,
                        node.size
                    );
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(node.size);
                files += 1;
                bytes += node.size;
                let reader = FileReader {
                    repo,
                    keyring: keyring.as_deref_mut(),
                    blobs: blobs.into_iter(),
                    current: io::Cursor::new(Vec::new()),
                    _k: std::marker::PhantomData,
                };
                out.append_data(&mut header, &name, reader)
            }
        };
        added.with_context(|| {
            format!("snapshot {snapshot}: failed to read upload {:?}", node.path)
        })?;
    }
    Ok((files, bytes))
}

/// Checks snapshots, sharing the work between them: each pack is hashed once and each
/// blob decoded once per checker.
pub struct Checker<'a> {
    pub repo: &'a Repo,
    pub keyring: Option<Keyring>,
    packs: HashMap<u32, Option<String>>,
    blobs: HashMap<BlobId, Option<String>>,
}

/// What checking one snapshot found.
#[derive(Debug, Default)]
pub struct Found {
    pub problems: Vec<String>,
    /// Said even when all is well (what could not be checked without a key).
    pub notes: Vec<String>,
    pub content: Option<Content>,
}

impl<'a> Checker<'a> {
    pub fn new(repo: &'a Repo, keyring: Option<Keyring>) -> Checker<'a> {
        Checker {
            repo,
            keyring,
            packs: HashMap::new(),
            blobs: HashMap::new(),
        }
    }

    /// Whether the pack of blob `id` is intact (once per pack): [`super::pack::check`].
    fn pack_problem(&mut self, id: &BlobId) -> Option<String> {
        let loc = *self.repo.index.get(id)?;
        let repo = self.repo;
        self.packs
            .entry(loc.pack)
            .or_insert_with(|| {
                let name = &repo.packs[loc.pack as usize].name;
                super::pack::check(&repo.root, name)
            })
            .clone()
    }

    /// Checks one blob: present, its pack intact, and (when it can be read) its content.
    fn blob(&mut self, id: &BlobId, deep: bool) -> Option<String> {
        if let Some(done) = self.blobs.get(id) {
            return done.clone();
        }
        let problem = if !self.repo.index.contains_key(id) {
            Some(format!(
                "chunk {} is missing from the repository",
                hex::encode(id)
            ))
        } else if !deep {
            None
        } else if let Some(p) = self.pack_problem(id) {
            Some(p)
        } else {
            let (stored, _, _) = match self.repo.read_stored(id) {
                Ok(s) => s,
                Err(e) => return Some(format!("{e:#}")),
            };
            let readable = !super::crypto::is_encrypted(&stored) || self.keyring.is_some();
            if readable {
                self.repo
                    .load(id, self.keyring.as_mut())
                    .err()
                    .map(|e| format!("{e:#}"))
            } else {
                None
            }
        };
        self.blobs.insert(*id, problem.clone());
        problem
    }

    /// Checks a snapshot. `deep`: every blob it uses is read and checked (and its pack
    /// hashed), the database rebuilt and put through `check`, and the uploads tree read.
    pub fn check(&mut self, snapshot: &Snapshot, deep: bool, check: Option<Check>) -> Found {
        let mut found = Found {
            problems: snapshot.problems(),
            ..Found::default()
        };
        if !found.problems.is_empty() {
            return found;
        }
        let Ok(roots) = ids(&snapshot.roots, &snapshot.id) else {
            found
                .problems
                .push(format!("snapshot {} names a bad chunk", snapshot.id));
            return found;
        };
        // What the snapshot uses, from its roots alone (no key needed).
        let mut used: Vec<BlobId> = Vec::new();
        for root in &roots {
            if let Some(p) = self.blob(root, deep) {
                found.problems.push(p);
                continue;
            }
            let loc = self.repo.index[root];
            if self.repo.entry(loc).kind == Kind::List {
                match self.repo.load_list(root) {
                    Ok(list) => used.extend(list),
                    Err(e) => found.problems.push(format!("{e:#}")),
                }
            }
        }
        let mut seen = HashSet::new();
        for id in used {
            if seen.insert(id) {
                if let Some(p) = self.blob(&id, deep) {
                    found.problems.push(p);
                    if found.problems.len() >= 20 {
                        found.problems.push("(more problems not shown)".into());
                        return found;
                    }
                }
            }
        }
        if !found.problems.is_empty() {
            return found;
        }
        if snapshot.sealed.is_some() && self.keyring.is_none() {
            found.notes.push(
                "encrypted: chunks present and packs intact; contents not decrypted (pass --identity FILE to check them)"
                    .into(),
            );
            return found;
        }
        let content = match snapshot.open(self.repo, self.keyring.as_mut()) {
            Ok(c) => c,
            Err(e) => {
                found.problems.push(format!("{e:#}"));
                return found;
            }
        };
        if content.database.is_none() && content.uploads.is_none() {
            found.problems.push(format!(
                "snapshot {} holds neither database nor uploads",
                snapshot.id
            ));
        }
        if let (Some(check), Some(db), true) = (check, &content.database, deep) {
            if let Err(e) = self.check_database(snapshot, db, check) {
                found.problems.push(format!("{e:#}"));
            }
        }
        if let (Some(up), true) = (&content.uploads, deep) {
            match tree(self.repo, up, &snapshot.id, self.keyring.as_mut()) {
                Err(e) => found.problems.push(format!("{e:#}")),
                Ok(nodes) => {
                    let files: Vec<&Node> =
                        nodes.iter().filter(|n| n.kind == NodeKind::File).collect();
                    let bytes: u64 = files.iter().map(|n| n.size).sum();
                    if files.len() as u64 != up.files || bytes != up.bytes {
                        found.problems.push(format!(
                            "snapshot {}: the uploads tree holds {} files of {bytes} bytes; the snapshot says {} of {}",
                            snapshot.id,
                            files.len(),
                            up.files,
                            up.bytes
                        ));
                    }
                    // Prune keeps what the lists name: a file chunk missing from them
                    // would be swept while the tree still needs it.
                    let unlisted = files
                        .iter()
                        .flat_map(|n| n.blobs.iter())
                        .find(|b| parse_id(b).is_none_or(|id| !seen.contains(&id)));
                    if let Some(blob) = unlisted {
                        found.problems.push(format!(
                            "snapshot {}: the uploads use chunk {blob}, which its chunk lists do not name",
                            snapshot.id
                        ));
                    }
                    for node in files {
                        let size: u64 = node
                            .blobs
                            .iter()
                            .filter_map(|b| parse_id(b))
                            .map(|b| {
                                self.repo
                                    .index
                                    .get(&b)
                                    .map_or(0, |l| u64::from(self.repo.entry(*l).raw_len))
                            })
                            .sum();
                        if size != node.size {
                            found.problems.push(format!(
                                "snapshot {}: upload {:?} is {} bytes, but its chunks hold {size}",
                                snapshot.id, node.path, node.size
                            ));
                            break;
                        }
                    }
                }
            }
        }
        if let (Some(part), true) = (&content.stack_files, deep) {
            if let Err(e) = stack_files(self.repo, part, &snapshot.id, self.keyring.as_mut()) {
                found.problems.push(format!("{e:#}"));
            }
        }
        found.content = Some(content);
        found
    }

    /// Rebuilds the database into `tmp/` and runs the SQLite check on it.
    fn check_database(
        &mut self,
        snapshot: &Snapshot,
        db: &DatabasePart,
        check: Check,
    ) -> Result<()> {
        let temp = self.repo.root.join(super::TMP_DIR).join(format!(
            "verify-{}-{}.db",
            snapshot.id,
            std::process::id()
        ));
        let result = (|| {
            let out = manifest::create_private(&temp)?;
            write_database(self.repo, db, &snapshot.id, self.keyring.as_mut(), out)?;
            match db.kind.as_deref() {
                None => db_snapshot::check_copy(&temp, check).map(|_| ()),
                Some(postgres::KIND) => postgres::check_dump(&temp),
                Some(other) => bail!(
                    "snapshot {} holds a database of kind {other:?}, which this elior cannot read\nuse a newer elior",
                    snapshot.id
                ),
            }
        })();
        let _ = std::fs::remove_file(&temp);
        result
    }
}
