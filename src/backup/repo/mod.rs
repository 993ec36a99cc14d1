//! The deduplicated backup repository (issue 17, items 4 and 5): `BACKUP_DIR/repository`,
//! chosen with `BACKUP_FORMAT=repository`.
//!
//! ```text
//! repository/config.json        format, id, and (encrypted) recipients and naming key
//! repository/packs/XX/NAME      blobs, zstd-compressed (and encrypted); NAME = sha256 of its header
//! repository/snapshots/ID.json  one per backup: a full, self-checksummed description
//! repository/keys/KEYID.age     each run's data key, wrapped to BACKUP_RECIPIENTS
//! repository/files-cache.json   size, mtime, ctime and inode of each upload, and its blobs
//! repository/tmp/               packs being written; what a killed run left is removed
//! repository/.elior/deploy.lock the repository lock (backup, prune, restore staging)
//! ```
//!
//! A blob is a database page (pages of the SQLite page size, so a changed row costs one
//! page; a PostgreSQL stack's `pg_dump -Fc` is cut at content-defined boundaries with
//! FastCDC instead, so a changed row costs the chunks around it), a piece of an upload (files cut at 1 MiB), a list of blob names, or a piece of
//! the uploads tree. Blobs are named by their content ([`crypto::Naming`]), so a page or a
//! photo that did not change is stored once, however many snapshots use it. Every
//! snapshot still names every blob it needs: each restores on its own.
//!
//! What a snapshot uses is reachable without a key: its `roots` name list blobs, which
//! hold only blob names and are never encrypted. So prune (mark and sweep) and the host's
//! verify work on an encrypted repository that the host cannot read.
//!
//! This module owns the repository's files. Which snapshots to keep is decided by
//! [`crate::plan::retention`] through [`super::prune`].

pub mod crypto;
pub mod pack;
pub mod prune;
pub mod read;
pub mod write;

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest;
pub use super::stack_files::StackFilesPart;
use crypto::{Keyring, Naming};
use pack::{Entry, Kind};

/// The repository's folder under BACKUP_DIR.
pub const DIR_NAME: &str = "repository";
pub const CONFIG_FILE: &str = "config.json";
pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const TMP_DIR: &str = "tmp";
pub const KEYS_DIR: &str = "keys";
pub const CACHE_FILE: &str = "files-cache.json";
const FORMAT: u32 = 1;

/// A blob's name: sha256 (or HMAC-SHA256) of its plaintext.
pub type BlobId = [u8; 32];

pub fn parse_id(text: &str) -> Option<BlobId> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(text, &mut id).ok()?;
    Some(id)
}

/// Where the repository of backup folder `backup_dir` lives.
pub fn root(backup_dir: &Path) -> PathBuf {
    backup_dir.join(DIR_NAME)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub format: u32,
    pub id: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// The age recipients new runs wrap their key to.
    pub recipients: Vec<String>,
    /// HMAC key for blob names (hex): lets the host find what it already stored; it
    /// decrypts nothing.
    pub naming_key: String,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryption")
            .field("recipients", &self.recipients)
            .field("naming_key", &"<redacted>")
            .finish()
    }
}

/// Where a blob is: a pack (index into [`Repo::packs`]) and its entry there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub pack: u32,
    pub entry: u32,
}

#[derive(Debug, Clone)]
pub struct PackInfo {
    pub name: String,
    pub size: u64,
    pub entries: Vec<Entry>,
}

/// An opened repository: its config and the index of every blob in its packs.
pub struct Repo {
    pub root: PathBuf,
    pub config: Config,
    pub naming: Naming,
    pub packs: Vec<PackInfo>,
    pub index: HashMap<BlobId, Loc>,
    /// Packs whose header could not be read: (name, why). Their blobs are missing.
    pub damaged: Vec<(String, String)>,
    open_files: Mutex<HashMap<u32, File>>,
}

impl Repo {
    pub fn exists(root: &Path) -> bool {
        root.join(CONFIG_FILE).is_file()
    }

    /// Creates the repository's folders and config if there is none yet. With
    /// `recipients`, a new repository is encrypted; an existing one must match.
    pub fn init(root: &Path, recipients: &[String]) -> Result<Config> {
        if Self::exists(root) {
            let mut config = read_config(root)?;
            match (&mut config.encryption, recipients.is_empty()) {
                (None, true) => {}
                (Some(enc), false) => {
                    if enc.recipients != recipients {
                        enc.recipients = recipients.to_vec();
                        write_config(root, &config)?;
                    }
                }
                (None, false) => bail!(
                    "BACKUP_RECIPIENTS is set, but the repository {} is not encrypted\nmove it aside (its snapshots stay restorable from there) to start an encrypted one, or unset BACKUP_RECIPIENTS",
                    root.display()
                ),
                (Some(_), true) => bail!(
                    "the repository {} is encrypted, but BACKUP_RECIPIENTS is not set\nset BACKUP_RECIPIENTS to the age recipients new backups are for",
                    root.display()
                ),
            }
            return Ok(config);
        }
        crypto::parse_recipients(recipients)?;
        for dir in [SNAPSHOTS_DIR, TMP_DIR, KEYS_DIR, "packs"] {
            fs::create_dir_all(root.join(dir))
                .with_context(|| format!("failed to create {}", root.join(dir).display()))?;
        }
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        let encryption = (!recipients.is_empty()).then(|| {
            let mut key = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
            Encryption {
                recipients: recipients.to_vec(),
                naming_key: hex::encode(key),
            }
        });
        let config = Config {
            format: FORMAT,
            id: hex::encode(id),
            created_at: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            encryption,
        };
        write_config(root, &config)?;
        Ok(config)
    }

    /// Opens the repository and reads the header of every pack.
    pub fn open(root: &Path) -> Result<Repo> {
        let config = read_config(root)?;
        let naming = match &config.encryption {
            None => Naming::Plain,
            Some(enc) => Naming::keyed(
                &hex::decode(&enc.naming_key)
                    .with_context(|| format!("{} has a bad naming key", root.display()))?,
            ),
        };
        let mut repo = Repo {
            root: root.to_path_buf(),
            config,
            naming,
            packs: Vec::new(),
            index: HashMap::new(),
            damaged: Vec::new(),
            open_files: Mutex::new(HashMap::new()),
        };
        let mut names = Vec::new();
        let packs_dir = root.join("packs");
        if packs_dir.is_dir() {
            for sub in fs::read_dir(&packs_dir)
                .with_context(|| format!("failed to list {}", packs_dir.display()))?
            {
                let sub = sub?.path();
                if !sub.is_dir() {
                    continue;
                }
                for entry in fs::read_dir(&sub)
                    .with_context(|| format!("failed to list {}", sub.display()))?
                {
                    let name = entry?.file_name().to_string_lossy().into_owned();
                    if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                        names.push(name);
                    }
                }
            }
        }
        names.sort();
        for name in names {
            match pack::read_header(&pack::path(root, &name)) {
                Ok((size, entries)) => repo.add_pack(PackInfo {
                    name,
                    size,
                    entries,
                }),
                Err(e) => repo.damaged.push((name, format!("{e:#}"))),
            }
        }
        Ok(repo)
    }

    /// Adds a pack to the index; a blob already indexed keeps its first place.
    pub fn add_pack(&mut self, info: PackInfo) {
        let pack = self.packs.len() as u32;
        for (i, entry) in info.entries.iter().enumerate() {
            self.index.entry(entry.id).or_insert(Loc {
                pack,
                entry: i as u32,
            });
        }
        self.packs.push(info);
    }

    pub fn is_encrypted(&self) -> bool {
        self.config.encryption.is_some()
    }

    pub fn entry(&self, loc: Loc) -> &Entry {
        &self.packs[loc.pack as usize].entries[loc.entry as usize]
    }

    /// The stored bytes of blob `id`, and its index entry.
    pub fn read_stored(&self, id: &BlobId) -> Result<(Vec<u8>, &Entry, &str)> {
        let loc = *self
            .index
            .get(id)
            .with_context(|| format!("chunk {} is missing from the repository", hex::encode(id)))?;
        let pack = &self.packs[loc.pack as usize];
        let entry = &pack.entries[loc.entry as usize];
        let mut buf = vec![0u8; entry.stored_len as usize];
        let mut files = self.open_files.lock().unwrap_or_else(|p| p.into_inner());
        if !files.contains_key(&loc.pack) {
            if files.len() > 64 {
                files.clear();
            }
            let path = pack::path(&self.root, &pack.name);
            let file = File::open(&path)
                .with_context(|| format!("failed to open pack {}", path.display()))?;
            files.insert(loc.pack, file);
        }
        files[&loc.pack]
            .read_exact_at(&mut buf, entry.offset)
            .with_context(|| {
                format!(
                    "failed to read chunk {} from pack {}",
                    hex::encode(id),
                    pack.name
                )
            })?;
        Ok((buf, entry, &pack.name))
    }

    /// The plaintext of blob `id`, checked against its name; an encrypted blob needs the
    /// keyring. Errors name the chunk and its pack.
    pub fn load(&self, id: &BlobId, keyring: Option<&mut Keyring>) -> Result<Vec<u8>> {
        let (stored, entry, pack) = self.read_stored(id)?;
        let key = match (crypto::key_of(&stored), keyring) {
            (Some(key_id), Some(ring)) => Some(ring.key(&key_id, || self.read_key(&key_id))?),
            (Some(_), None) => bail!(
                "chunk {} is encrypted; pass --identity FILE with an age identity of the BACKUP_RECIPIENTS",
                hex::encode(id)
            ),
            (None, _) => None,
        };
        crypto::decode(&self.naming, id, &stored, entry.raw_len as usize, key).with_context(|| {
            format!(
                "chunk {} (in pack {}) is damaged or was tampered with",
                hex::encode(id),
                pack
            )
        })
    }

    pub fn read_key(&self, id: &crypto::KeyId) -> Result<Vec<u8>> {
        let path = self
            .root
            .join(KEYS_DIR)
            .join(format!("{}.age", hex::encode(id)));
        fs::read(&path).with_context(|| format!("failed to read backup key {}", path.display()))
    }

    /// The blob names a list blob holds.
    pub fn load_list(&self, id: &BlobId) -> Result<Vec<BlobId>> {
        let loc = self.index.get(id).copied();
        if let Some(loc) = loc {
            if self.entry(loc).kind != Kind::List {
                bail!("chunk {} is not a list", hex::encode(id));
            }
        }
        let raw = self.load(id, None)?;
        if raw.len() % 32 != 0 {
            bail!("list chunk {} has a bad length", hex::encode(id));
        }
        Ok(raw
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect())
    }

    pub fn snapshot_path(&self, id: &str) -> PathBuf {
        snapshot_path(&self.root, id)
    }

    /// Removes what killed runs left in `tmp/` (call with the repository lock held, when
    /// no run can own them). Returns the count and bytes removed.
    pub fn clear_tmp(root: &Path) -> Result<(usize, u64)> {
        let tmp = root.join(TMP_DIR);
        let mut removed = (0, 0);
        let Ok(entries) = fs::read_dir(&tmp) else {
            return Ok(removed);
        };
        for entry in entries.flatten() {
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let path = entry.path();
            let gone = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            gone.with_context(|| format!("failed to remove {}", path.display()))?;
            removed.0 += 1;
            removed.1 += size;
        }
        Ok(removed)
    }
}

pub fn snapshot_path(root: &Path, id: &str) -> PathBuf {
    root.join(SNAPSHOTS_DIR).join(format!("{id}.json"))
}

fn read_config(root: &Path) -> Result<Config> {
    let path = root.join(CONFIG_FILE);
    let text = fs::read_to_string(&path)
        .with_context(|| format!("failed to read repository config {}", path.display()))?;
    let config: Config = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an elior repository config", path.display()))?;
    if config.format != FORMAT {
        bail!(
            "repository {} has format {}; this elior reads format {FORMAT}\nuse the elior version that wrote it",
            root.display(),
            config.format
        );
    }
    Ok(config)
}

fn write_config(root: &Path, config: &Config) -> Result<()> {
    let mut text = serde_json::to_string_pretty(config).expect("config serialises");
    text.push('\n');
    manifest::write_atomic(&root.join(CONFIG_FILE), text.as_bytes())
}

/// Takes the repository lock (the deploy lock's mechanism, on the repository folder): one
/// backup, prune or restore staging at a time, so prune never sweeps a blob that a
/// running backup has just decided to reuse.
pub fn lock(root: &Path, command: &str) -> Result<crate::lock::DeployLock> {
    crate::lock::DeployLock::acquire(root, command)
        .with_context(|| format!("the backup repository {} is in use", root.display()))
}

/// [`lock`] for a backup: while a check, a prune, an export or a restore's staging holds
/// the repository, waits for it (until `deadline`, calling `waiting` with the holder about
/// every 200 ms) instead of failing; another backup holding it is refused at once, since
/// a second backup of the same data at the same moment adds nothing (issue 17).
pub fn lock_waiting(
    root: &Path,
    command: &str,
    deadline: std::time::Instant,
    waiting: &mut dyn FnMut(&crate::lock::Holder),
) -> Result<crate::lock::DeployLock> {
    let mut retried_without_holder = false;
    loop {
        let error = match lock(root, command) {
            Ok(held) => return Ok(held),
            Err(e) => e,
        };
        let Some(holder) = crate::lock::current_holder(root) else {
            // Released (or stale) in between: try again at once, but only once. A lock that
            // fails with no holder to name (an unreadable lock file, a directory we may not
            // write) will not free itself: spinning on it until the deadline burnt a core.
            if retried_without_holder || std::time::Instant::now() >= deadline {
                return Err(error);
            }
            retried_without_holder = true;
            continue;
        };
        retried_without_holder = false;
        let another_backup =
            holder.command == "elior backup" || holder.command.starts_with("elior backup (");
        if another_backup || std::time::Instant::now() >= deadline {
            return Err(error);
        }
        waiting(&holder);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A snapshot: one backup in the repository (`snapshots/ID.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: u32,
    pub id: String,
    pub created_at: String,
    pub elior_version: String,
    /// `manual`, `scheduled` or `pre-restore`.
    pub reason: String,
    pub duration_ms: u64,
    /// Bytes this run added to the repository's packs.
    pub added_bytes: u64,
    /// The list and tree blobs this snapshot names: prune and verify reach every blob it
    /// uses from here, with no key.
    pub roots: Vec<String>,
    /// What was backed up (plain repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// The same, encrypted with the run key (encrypted repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Sealed>,
    /// sha256 of this snapshot's JSON without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The run key (`keys/KEY.age`).
    pub key: String,
    /// hex of nonce, ciphertext and tag.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    pub schema_version: Option<i64>,
    pub database_check: Option<String>,
    pub database: Option<DatabasePart>,
    pub uploads: Option<UploadsPart>,
    /// The certificate, its key and the ACME account ([`super::stack_files`]); absent
    /// from snapshots of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_files: Option<StackFilesPart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabasePart {
    pub size: u64,
    pub sha256: String,
    /// The page size the database was cut at; 0 for a dump cut at content-defined
    /// boundaries.
    pub chunk_size: u32,
    /// What the bytes are: `None` for a SQLite database, or
    /// [`crate::backup::postgres::KIND`] for a `pg_dump -Fc` of a PostgreSQL one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// List blobs naming its pages in order.
    pub lists: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadsPart {
    pub files: u64,
    pub bytes: u64,
    /// Tree blobs, in order: the entries under `uploads/`.
    pub trees: Vec<String>,
    /// List blobs naming, sorted, every data blob the files use.
    pub lists: Vec<String>,
}

impl Content {
    /// Every blob the content names directly.
    pub fn roots(&self) -> Vec<String> {
        let mut roots = Vec::new();
        if let Some(db) = &self.database {
            roots.extend(db.lists.iter().cloned());
        }
        if let Some(up) = &self.uploads {
            roots.extend(up.trees.iter().cloned());
            roots.extend(up.lists.iter().cloned());
        }
        if let Some(files) = &self.stack_files {
            roots.extend(files.lists.iter().cloned());
        }
        roots
    }
}

impl Snapshot {
    fn compute_checksum(&self) -> String {
        let body = Snapshot {
            checksum: None,
            ..self.clone()
        };
        hex::encode(Sha256::digest(
            serde_json::to_vec(&body).expect("snapshot serialises"),
        ))
    }

    pub fn seal_checksum(&mut self) {
        self.checksum = Some(self.compute_checksum());
    }

    pub fn read(path: &Path) -> Result<Snapshot> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("failed to read snapshot {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "snapshot {} is damaged: not an elior snapshot",
                path.display()
            )
        })
    }

    /// What is wrong with the snapshot file itself: its checksum, and roots that name
    /// something.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.checksum.as_deref() != Some(self.compute_checksum().as_str()) {
            problems.push(format!(
                "snapshot {} does not match its own checksum: it was changed or damaged",
                self.id
            ));
        }
        if self.roots.is_empty() {
            problems.push(format!(
                "snapshot {} names no data, so it restores nothing",
                self.id
            ));
        }
        if self.roots.iter().any(|r| parse_id(r).is_none()) {
            problems.push(format!(
                "snapshot {} names a chunk with a bad name",
                self.id
            ));
        }
        problems
    }

    /// The content, decrypted with the keyring when the snapshot is encrypted; checked
    /// against the roots.
    pub fn open(&self, repo: &Repo, keyring: Option<&mut Keyring>) -> Result<Content> {
        let content = match (&self.content, &self.sealed) {
            (Some(c), None) => c.clone(),
            (None, Some(sealed)) => {
                let Some(ring) = keyring else {
                    bail!(
                        "backup {} is encrypted to age recipients; the host cannot read it\npass --identity FILE with the age identity of one of its recipients",
                        self.id
                    );
                };
                let mut key_id = [0u8; 16];
                hex::decode_to_slice(&sealed.key, &mut key_id)
                    .with_context(|| format!("snapshot {} names a bad key", self.id))?;
                let key = ring.key(&key_id, || repo.read_key(&key_id))?;
                let data = hex::decode(&sealed.data)
                    .with_context(|| format!("snapshot {} is damaged", self.id))?;
                let plain = key.open(self.id.as_bytes(), &data).with_context(|| {
                    format!("snapshot {} is damaged or was tampered with", self.id)
                })?;
                serde_json::from_slice(&plain)
                    .with_context(|| format!("snapshot {} is damaged", self.id))?
            }
            _ => bail!(
                "snapshot {} is damaged: it must hold its content once",
                self.id
            ),
        };
        if content.roots() != self.roots {
            bail!(
                "snapshot {} is damaged or was tampered with: its roots do not match its content",
                self.id
            );
        }
        Ok(content)
    }
}

/// The ids of the snapshots in the repository (file names `ID.json`), with each file's
/// size.
pub fn snapshot_files(root: &Path) -> Result<Vec<(String, u64)>> {
    let dir = root.join(SNAPSHOTS_DIR);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list {}", dir.display()))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if super::names::parse_id(id).is_none() {
            continue;
        }
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        found.push((id.to_string(), size));
    }
    found.sort();
    Ok(found)
}

/// Size and count of the repository's packs, for `backup list`.
pub fn disk_usage(root: &Path) -> (u64, usize) {
    let mut total = (0, 0);
    let Ok(subs) = fs::read_dir(root.join("packs")) else {
        return total;
    };
    for sub in subs.flatten() {
        for pack in fs::read_dir(sub.path()).into_iter().flatten().flatten() {
            total.0 += pack.metadata().map(|m| m.len()).unwrap_or(0);
            total.1 += 1;
        }
    }
    total
}
