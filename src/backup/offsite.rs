//! Offsite copies of backups (issue 17, item 6) and disaster recovery (item 7): the
//! backup folder mirrored into an S3-compatible bucket named by `BACKUP_OFFSITE`, through
//! the one S3 client of [`crate::files::store`].
//!
//! Push: after a backup is verified here, what the bucket lacks is uploaded, data first
//! and the snapshot (or manifest) last ([`crate::plan::offsite`]), each upload checked
//! against the MD5 the store reports (or its size, for a multipart upload). A run killed
//! part-way is resumed by the next one: what is there with the right size is skipped, and
//! a snapshot is never there before its data. A few packs already offsite are read back
//! and compared on every run; `verify --offsite` reads everything.
//!
//! Fetch: the inverse, into a backup folder (a fresh stack's, for `restore --from`; a
//! staging folder for `verify --offsite`), through atomic writes; only keys elior writes
//! ever become local paths. What was fetched is then checked and restored by the same
//! code as a local backup, so a tampered object is refused by name.
//!
//! `PREFIX/stack.json` names the stack whose backups the prefix holds: a second stack
//! pointed at the same prefix is refused, never mixed in.
//!
//! This module never decides what to delete: remote retention follows the local prune's
//! decisions ([`prune`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use md5::{Digest as _, Md5};
use object_store::aws::AmazonS3;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::Serialize;
use sha2::Sha256;

use super::names::Part;
use super::owner::StackRecord;
use super::{fault, manifest, repo, BackupSettings, Reporter};
use crate::config::identity::{self, StackId};
use crate::files::settings::S3Settings;
use crate::files::store;
use crate::plan::offsite::{self as plan, Class, Local, Remote, STACK_OBJECT};

/// Retries of each request (all of them idempotent: PUTs of fixed content, GETs).
const RETRIES: usize = 3;
/// Objects in flight at once.
const PARALLEL: usize = 4;
/// Files above this go up in parts (archives of big upload folders).
const MULTIPART_ABOVE: u64 = 64 << 20;
const PART_SIZE: usize = 16 << 20;
/// Packs already offsite read back and compared on every push.
const SAMPLE: usize = 3;
/// How long a push waits for a check or prune that holds the repository.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// The setting named in messages.
const KEY: &str = "BACKUP_OFFSITE";

/// The bucket and prefix of BACKUP_OFFSITE (or `restore --from`).
pub struct Bucket {
    client: AmazonS3,
    settings: S3Settings,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    pub fn new(settings: &S3Settings) -> Result<Bucket> {
        let client = store::client(settings, KEY, RETRIES).map_err(|e| anyhow!("{e}"))?;
        Ok(Bucket {
            client,
            settings: settings.clone(),
            runtime: crate::docker::runtime()?,
        })
    }

    pub fn url(&self) -> String {
        self.settings.url()
    }

    /// `s3://bucket/prefix/relative`, for messages.
    pub fn url_of(&self, relative: &str) -> String {
        format!("{}/{relative}", self.url())
    }

    fn key(&self, relative: &str) -> Key {
        if self.settings.prefix.is_empty() {
            Key::from(relative)
        } else {
            Key::from(format!("{}/{relative}", self.settings.prefix))
        }
    }

    /// One line naming the bucket, what failed and the setting that fixes it.
    fn fail(&self, what: &str, e: &object_store::Error) -> anyhow::Error {
        anyhow!("{}", store::explain(&self.settings, KEY, what, e))
    }

    /// Every object under the prefix, by key relative to it.
    pub fn list(&self) -> Result<BTreeMap<String, Remote>> {
        let prefix =
            (!self.settings.prefix.is_empty()).then(|| Key::from(self.settings.prefix.as_str()));
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.client.list(prefix.as_ref()).try_collect())
            .map_err(|e| self.fail("listing", &e))?;
        let strip = if self.settings.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.settings.prefix)
        };
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let relative = m.location.as_ref().strip_prefix(&strip)?.to_string();
                Some((
                    relative,
                    Remote {
                        size: m.size,
                        etag: m.e_tag.map(|t| unquote(&t)),
                    },
                ))
            })
            .collect())
    }

    fn get_bytes(&self, relative: &str) -> Result<Vec<u8>> {
        self.runtime.block_on(async {
            let got = self
                .client
                .get(&self.key(relative))
                .await
                .map_err(|e| self.fail(&format!("reading {relative}"), &e))?;
            let bytes = got
                .bytes()
                .await
                .map_err(|e| self.fail(&format!("reading {relative}"), &e))?;
            Ok(bytes.to_vec())
        })
    }

    fn delete(&self, relative: &str) -> Result<()> {
        match self
            .runtime
            .block_on(self.client.delete(&self.key(relative)))
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail(&format!("deleting {relative}"), &e)),
        }
    }

    /// Uploads `path` as `relative` and checks what the store says it stored.
    async fn put_file(&self, relative: &str, path: PathBuf, size: u64) -> Result<()> {
        let path = path.as_path();
        let key = self.key(relative);
        let what = format!("uploading {relative}");
        if size <= multipart_above() {
            let bytes = tokio::fs::read(path)
                .await
                .with_context(|| format!("failed to read {}", path.display()))?;
            if bytes.len() as u64 != size {
                bail!(
                    "{} changed while it was uploaded; run the backup again",
                    path.display()
                );
            }
            let md5 = hex::encode(Md5::digest(&bytes));
            let put = self
                .client
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(|e| self.fail(&what, &e))?;
            match put.e_tag.map(|t| unquote(&t)) {
                Some(etag) if plan::etag_is_md5(&etag) => {
                    if etag != md5 {
                        bail!(
                            "{}: the store stored bytes with MD5 {etag}, but {} has MD5 {md5}; the upload was damaged on the way, run it again",
                            self.url_of(relative),
                            path.display()
                        );
                    }
                    return Ok(());
                }
                _ => {}
            }
        } else {
            let upload = self
                .client
                .put_multipart(&key)
                .await
                .map_err(|e| self.fail(&what, &e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut file = fs::File::open(path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            let mut buf = vec![0u8; PART_SIZE];
            loop {
                let n = file
                    .read(&mut buf)
                    .with_context(|| format!("failed to read {}", path.display()))?;
                if n == 0 {
                    break;
                }
                writer
                    .wait_for_capacity(2)
                    .await
                    .map_err(|e| self.fail(&what, &e))?;
                writer.write(&buf[..n]);
            }
            writer.finish().await.map_err(|e| self.fail(&what, &e))?;
        }
        // No MD5 to compare (a multipart upload, or a store that encrypts with KMS): the
        // size at least.
        let head = self
            .client
            .head(&key)
            .await
            .map_err(|e| self.fail(&what, &e))?;
        if head.size != size {
            bail!(
                "{}: the store holds {} bytes after the upload of {} ({size} bytes); run it again",
                self.url_of(relative),
                head.size,
                path.display()
            );
        }
        Ok(())
    }

    /// Downloads `relative` to `dest` (atomically, mode 0600), checking its size against
    /// the listing and its MD5 against the ETag when that is one.
    async fn download(&self, relative: &str, remote: &Remote, dest: PathBuf) -> Result<()> {
        let dest = dest.as_path();
        if let Some(parent) = dest.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("failed to create {}", parent.display()))?;
        }
        let temp = manifest::temp_path(dest);
        let result = async {
            let mut file = manifest::create_private(&temp)?;
            let got = self
                .client
                .get(&self.key(relative))
                .await
                .map_err(|e| self.fail(&format!("downloading {relative}"), &e))?;
            let mut body = got.into_stream();
            let mut md5 = Md5::new();
            let mut count = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| self.fail(&format!("downloading {relative}"), &e))?;
                md5.update(&chunk);
                count += chunk.len() as u64;
                file.write_all(&chunk)
                    .with_context(|| format!("failed to write {}", temp.display()))?;
            }
            drop(file);
            if count != remote.size {
                bail!(
                    "{}: read {count} bytes, but the bucket lists {}; it changed while it was read, or the store is damaged",
                    self.url_of(relative),
                    remote.size
                );
            }
            if let Some(etag) = remote.etag.as_deref().filter(|t| plan::etag_is_md5(t)) {
                let md5 = hex::encode(md5.finalize());
                if md5 != etag {
                    bail!(
                        "{}: the bytes read have MD5 {md5}, but the store's ETag is {etag}; the object is damaged or was changed",
                        self.url_of(relative)
                    );
                }
            }
            manifest::commit(&temp, dest)
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Runs `transfer` on every item, PARALLEL at a time, with a live progress line and
    /// `after_each` after each success (a fault point). When one fails, the others in
    /// flight still end, then the first error is returned. Returns the count and bytes.
    fn transfer_all<'a, T, Fut>(
        &self,
        items: &'a [T],
        size: impl Fn(&T) -> u64,
        transfer: impl Fn(&'a T) -> Fut,
        after_each: &dyn Fn(),
        reporter: &mut Reporter,
    ) -> Result<(usize, u64)>
    where
        Fut: std::future::Future<Output = Result<()>> + 'a,
    {
        let total = items.len();
        let total_bytes: u64 = items.iter().map(&size).sum();
        let (mut done, mut bytes, mut first_error) = (0usize, 0u64, None);
        self.runtime.block_on(async {
            let mut results = stream::iter(items.iter().map(|item| {
                let transferred = transfer(item);
                async move { (item, transferred.await) }
            }))
            .buffer_unordered(PARALLEL);
            while let Some((item, result)) = results.next().await {
                match result {
                    Ok(()) => {
                        done += 1;
                        bytes += size(item);
                        after_each();
                        reporter.live(&format!(
                            "  offsite: {done}/{total} objects, {} of {}",
                            super::human_bytes(bytes),
                            super::human_bytes(total_bytes)
                        ));
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        });
        match first_error {
            Some(e) => Err(e),
            None => Ok((done, bytes)),
        }
    }

    /// The stack `PREFIX/stack.json` names, or an error when the prefix holds objects
    /// that are no elior stack's backups. `None`: the prefix is empty.
    fn stack_of(&self, listing: &BTreeMap<String, Remote>) -> Result<Option<StackId>> {
        if !listing.contains_key(STACK_OBJECT) {
            if listing.is_empty() {
                return Ok(None);
            }
            bail!(
                "{KEY}: {} already holds {} objects, and no {STACK_OBJECT}: they are not an elior stack's backups\nuse a prefix of its own for this stack's backups, such as s3://{}/elior-backups",
                self.url(),
                listing.len(),
                self.settings.bucket
            );
        }
        let bytes = self.get_bytes(STACK_OBJECT)?;
        serde_json::from_slice::<StackRecord>(&bytes)
            .ok()
            .and_then(|r| r.id())
            .map(Some)
            .with_context(|| {
                format!(
                    "{KEY}: {} is not an elior stack record; the prefix holds something else, use another one",
                    self.url_of(STACK_OBJECT)
                )
            })
    }

    /// Refuses a prefix that holds another stack's backups; claims an empty one.
    fn claim(&self, listing: &BTreeMap<String, Remote>, mine: &StackId) -> Result<()> {
        match self.stack_of(listing)? {
            Some(theirs) if &theirs == mine => Ok(()),
            Some(theirs) => bail!(
                "{KEY}: {} holds the backups of another stack ({theirs}), not of this one ({mine}, in .elior/stack.json)\ngive each stack a prefix of its own, such as s3://{}/{}",
                self.url(),
                self.settings.bucket,
                mine.short()
            ),
            None => {
                let record = StackRecord {
                    stack_id: mine.to_string(),
                    elior_version: crate::VERSION.to_string(),
                    stack_dir: None,
                };
                let body = serde_json::to_vec_pretty(&record).expect("record serialises");
                self.runtime
                    .block_on(self.client.put(&self.key(STACK_OBJECT), PutPayload::from(body)))
                    .map_err(|e| self.fail("writing stack.json", &e))?;
                Ok(())
            }
        }
    }
}

/// [`MULTIPART_ABOVE`]; debug builds read `ELIOR_OFFSITE_MULTIPART_ABOVE` (bytes) so a
/// test can send a small file in parts. Release builds ignore it.
fn multipart_above() -> u64 {
    if cfg!(debug_assertions) {
        if let Some(bytes) = std::env::var("ELIOR_OFFSITE_MULTIPART_ABOVE")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            return bytes;
        }
    }
    MULTIPART_ABOVE
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_ascii_lowercase()
}

/// The seal (snapshot or manifest) of backup `id`, relative to the backup folder.
fn seal_of(set: &super::BackupSet) -> String {
    if set.is_repository() {
        format!("{}/{}/{}.json", repo::DIR_NAME, repo::SNAPSHOTS_DIR, set.id)
    } else {
        Part::Manifest.file_name(&set.id)
    }
}

/// What a push did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushReport {
    pub url: String,
    /// Backups whose snapshot or manifest went up in this run.
    pub sent: Vec<String>,
    /// Backups not sent because they failed verification here, with why.
    pub refused: Vec<(String, Vec<String>)>,
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    /// Objects already offsite, skipped.
    pub present: usize,
    /// Packs already offsite read back and found equal to the local ones.
    pub sampled: usize,
    /// Complete backups offsite after this run.
    pub offsite_backups: usize,
}

/// Sends to the bucket what it lacks of the backup folder's verified backups. The caller
/// holds no repository lock; this takes it (so a prune never removes a pack mid-upload).
pub fn push(settings: &BackupSettings, reporter: &mut Reporter) -> Result<PushReport> {
    let offsite = settings.offsite.as_ref().context(
        "BACKUP_OFFSITE is not set\nset it to s3://BUCKET/PREFIX in the stack's .env.production",
    )?;
    let dir = &settings.backup_dir;
    let bucket = Bucket::new(offsite)?;
    reporter.phase(&format!("offsite: listing {}", bucket.url()));
    let listing = bucket.list()?;
    let (mine, _) = identity::ensure(&settings.stack_dir)?;
    bucket.claim(&listing, &mine)?;
    // A check or prune running now is waited for (a while): the copy reads packs.
    let root = repo::root(dir);
    let _lock = if repo::Repo::exists(&root) {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let mut told = false;
        Some(repo::lock_waiting(
            &root,
            "elior backup (offsite copy)",
            deadline,
            &mut |holder| {
                if !told {
                    told = true;
                    reporter.phase(&format!(
                        "offsite: waiting for `{}` (pid {}) to release the backup repository",
                        holder.command, holder.pid
                    ));
                }
            },
        )?)
    } else {
        None
    };

    let sets = super::scan(dir)?;
    let complete: Vec<&super::BackupSet> = sets.iter().filter(|s| s.has_manifest()).collect();
    // Only backups the bucket lacks are verified (again) here: the others were before
    // they went up.
    let missing: Vec<&super::BackupSet> = complete
        .iter()
        .copied()
        .filter(|s| {
            let seal = seal_of(s);
            let local = fs::metadata(dir.join(&seal)).map(|m| m.len()).ok();
            listing.get(&seal).map(|r| r.size) != local
        })
        .collect();
    let mut report = PushReport {
        url: bucket.url(),
        ..PushReport::default()
    };
    let mut send = Vec::new();
    if !missing.is_empty() {
        reporter.phase(&format!(
            "offsite: verifying {} backups before they leave this host",
            missing.len()
        ));
        for (set, (v, _)) in missing.iter().zip(super::verify_sets(
            dir,
            &missing,
            Some(super::Check::Quick),
            true,
            None,
        )) {
            if v.ok {
                send.push(*set);
            } else {
                report.refused.push((set.id.clone(), v.problems));
            }
        }
    }

    let mut local = Vec::new();
    if repo::Repo::exists(&root) {
        local.extend(repository_files(dir)?);
    }
    for set in &send {
        if set.is_repository() {
            local.push(file_of(dir, &seal_of(set), Class::Seal)?);
        } else {
            for part in Part::DATA {
                let name = part.file_name(&set.id);
                if dir.join(&name).is_file() {
                    local.push(file_of(dir, &name, Class::Data)?);
                }
            }
            local.push(file_of(dir, &seal_of(set), Class::Seal)?);
        }
    }
    let steps = plan::uploads(&local, &listing);
    report.present = local.len() - steps.len();
    let total = steps.len();
    let total_bytes: u64 = steps.iter().map(|(l, _)| l.size).sum();
    if total > 0 {
        reporter.phase(&format!(
            "offsite: uploading {total} objects ({}) to {}; {} already there",
            super::human_bytes(total_bytes),
            bucket.url(),
            report.present
        ));
    }
    let (before_seals, seals): (Vec<_>, Vec<_>) =
        steps.into_iter().partition(|(l, _)| l.class != Class::Seal);
    let (mut done, mut done_bytes) = bucket.transfer_all(
        &before_seals,
        |(l, _)| l.size,
        |(l, _)| bucket.put_file(&l.path, dir.join(&l.path), l.size),
        &|| fault::point("offsite:object-uploaded"),
        reporter,
    )?;
    fault::point("offsite:data-uploaded");
    // Seals one by one, after all the data: the bucket never lists a backup it cannot
    // restore.
    for (l, _) in &seals {
        bucket
            .runtime
            .block_on(bucket.put_file(&l.path, dir.join(&l.path), l.size))?;
        done += 1;
        done_bytes += l.size;
        fault::point("offsite:seal-uploaded");
    }
    report.uploaded = done;
    report.uploaded_bytes = done_bytes;
    report.sent = send.iter().map(|s| s.id.clone()).collect();
    report.sent.sort();

    // Read back a few packs that were already there: bit rot or tampering offsite shows
    // up on an ordinary run, not only on the day of the restore.
    let uploaded: BTreeSet<&str> = before_seals.iter().map(|(l, _)| l.path.as_str()).collect();
    let mut already: Vec<&Local> = local
        .iter()
        .filter(|l| {
            // Packs only (about 16 MiB each): an archive's parts may be gigabytes.
            l.path.starts_with("repository/packs/") && !uploaded.contains(l.path.as_str())
        })
        .collect();
    use rand::seq::SliceRandom;
    already.shuffle(&mut rand::thread_rng());
    for l in already.into_iter().take(SAMPLE) {
        let remote = bucket.get_bytes(&l.path)?;
        let (_, local_sha) = manifest::sha256_file(&dir.join(&l.path))?;
        if hex::encode(<Sha256 as sha2::Digest>::digest(&remote)) != local_sha {
            bail!(
                "{}: the offsite copy differs from {} (read back on this run); the bucket's copy is damaged or was changed\nrun `elior backup verify --offsite` to check every object",
                bucket.url_of(&l.path),
                dir.join(&l.path).display()
            );
        }
        report.sampled += 1;
    }
    let after = bucket.list()?;
    report.offsite_backups = seals_in(&after).len();
    if !report.refused.is_empty() {
        let ids: Vec<&str> = report.refused.iter().map(|(id, _)| id.as_str()).collect();
        bail!(
            "backups {} failed verification here, so they were not copied offsite: {}\nrun `elior backup verify --all` to see why",
            ids.join(", "),
            report
                .refused
                .iter()
                .map(|(id, p)| format!("{id}: {}", p.join("; ")))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    Ok(report)
}

/// A local file of the backup folder, as the planner sees it.
fn file_of(dir: &Path, relative: &str, class: Class) -> Result<Local> {
    let path = dir.join(relative);
    let size = fs::metadata(&path)
        .with_context(|| format!("failed to read {}", path.display()))?
        .len();
    let md5 = if class == Class::Mutable {
        let bytes =
            fs::read(&path).with_context(|| format!("failed to read {}", path.display()))?;
        Some(hex::encode(Md5::digest(&bytes)))
    } else {
        None
    };
    Ok(Local {
        path: relative.to_string(),
        size,
        class,
        md5,
    })
}

/// The repository's config, wrapped keys and packs (its snapshots go by backup).
fn repository_files(dir: &Path) -> Result<Vec<Local>> {
    let root = repo::root(dir);
    let mut found = vec![file_of(
        dir,
        &format!("{}/{}", repo::DIR_NAME, repo::CONFIG_FILE),
        Class::Mutable,
    )?];
    let mut walk = vec![root.join(repo::KEYS_DIR), root.join("packs")];
    while let Some(folder) = walk.pop() {
        let entries = match fs::read_dir(&folder) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("failed to list {}", folder.display()))
            }
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("failed to list {}", folder.display()))?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk.push(path);
                continue;
            }
            let Some(relative) = path
                .strip_prefix(dir)
                .ok()
                .and_then(|p| p.to_str())
                .map(String::from)
            else {
                continue;
            };
            if kind.is_file() && plan::classify(&relative).map(|(c, _)| c) == Some(Class::Data) {
                found.push(file_of(dir, &relative, Class::Data)?);
            }
        }
    }
    Ok(found)
}

/// The complete backups in a listing: id -> (seal key, repository?).
fn seals_in(listing: &BTreeMap<String, Remote>) -> BTreeMap<String, (String, bool)> {
    listing
        .keys()
        .filter_map(|k| match plan::classify(k) {
            Some((Class::Seal, Some(id))) => Some((id, (k.clone(), k.starts_with("repository/")))),
            _ => None,
        })
        .collect()
}

/// One backup as the bucket holds it, for `backup list --offsite`.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteBackup {
    pub id: String,
    pub format: &'static str,
    /// The bytes of its own objects (a snapshot file; an archive's parts and manifest).
    pub size: u64,
    pub complete: bool,
}

/// What the bucket holds: its backups, oldest first, and the bytes of all objects.
pub fn list(offsite: &S3Settings) -> Result<(Vec<RemoteBackup>, u64, Option<StackId>)> {
    let bucket = Bucket::new(offsite)?;
    let listing = bucket.list()?;
    let stack = bucket.stack_of(&listing)?;
    let mut backups: BTreeMap<String, RemoteBackup> = BTreeMap::new();
    for (key, remote) in &listing {
        let Some((class, Some(id))) = plan::classify(key) else {
            continue;
        };
        let entry = backups.entry(id.clone()).or_insert_with(|| RemoteBackup {
            id,
            format: if key.starts_with("repository/") {
                "repository"
            } else {
                "archive"
            },
            size: 0,
            complete: false,
        });
        entry.size += remote.size;
        entry.complete |= class == Class::Seal;
    }
    let total = listing.values().map(|r| r.size).sum();
    Ok((backups.into_values().collect(), total, stack))
}

/// Downloads what `only` (a backup id, or every backup) needs into the backup folder
/// `into`: the repository's config, keys and packs, then the snapshot or the archive's
/// parts, then its manifest; files already there with the same size are kept.
fn fetch(
    bucket: &Bucket,
    listing: &BTreeMap<String, Remote>,
    into: &Path,
    only: Option<&str>,
    reporter: &mut Reporter,
) -> Result<usize> {
    let mut wanted: Vec<(Class, &String, &Remote)> = listing
        .iter()
        .filter_map(|(key, remote)| {
            let (class, id) = plan::classify(key)?;
            match (only, id) {
                (Some(only), Some(id)) if id != only => None,
                _ => Some((class, key, remote)),
            }
        })
        .filter(|(_, key, remote)| {
            fs::metadata(into.join(key)).map(|m| m.len()).ok() != Some(remote.size)
        })
        .collect();
    wanted.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let total = wanted.len();
    let total_bytes: u64 = wanted.iter().map(|(_, _, r)| r.size).sum();
    reporter.phase(&format!(
        "offsite: downloading {total} objects ({}) from {}",
        super::human_bytes(total_bytes),
        bucket.url()
    ));
    let (data, seals): (Vec<_>, Vec<_>) =
        wanted.into_iter().partition(|(c, _, _)| *c != Class::Seal);
    let (mut done, _) = bucket.transfer_all(
        &data,
        |(_, _, remote)| remote.size,
        |(_, key, remote)| bucket.download(key, remote, into.join(key)),
        &|| {},
        reporter,
    )?;
    // The repository's folders that are never offsite (a fresh host has none yet).
    let root = repo::root(into);
    if repo::Repo::exists(&root) {
        for folder in [repo::SNAPSHOTS_DIR, repo::TMP_DIR, repo::KEYS_DIR, "packs"] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root.join(folder))
                .with_context(|| format!("failed to create {}", root.join(folder).display()))?;
        }
    }
    for (_, key, remote) in seals {
        bucket
            .runtime
            .block_on(bucket.download(key, remote, into.join(key)))?;
        done += 1;
    }
    Ok(done)
}

/// Disaster recovery, first half: downloads backup `id` (or `latest`) from `offsite` into
/// the stack's backup folder, so the ordinary restore verifies and restores it. A stack
/// directory without an identity takes the one the bucket names (it is that stack, on a
/// new host); one with another identity is refused. Returns the backup id.
pub fn fetch_for_restore(
    settings: &BackupSettings,
    offsite: &S3Settings,
    id: &str,
    reporter: &mut Reporter,
) -> Result<String> {
    let bucket = Bucket::new(offsite)?;
    reporter.phase(&format!("offsite: listing {}", bucket.url()));
    let listing = bucket.list()?;
    let Some(theirs) = bucket.stack_of(&listing)? else {
        bail!(
            "{} holds no elior backups\ncheck the bucket and prefix (`elior backup list --offsite` on the old host shows them), and S3_ENDPOINT",
            bucket.url()
        );
    };
    match identity::read(&settings.stack_dir)? {
        Some(mine) if mine != theirs => bail!(
            "{} holds the backups of stack {theirs}, but {} is stack {mine}\nrestore into a new directory (only its .env.production), or remove its .elior/stack.json if it is meant to become that stack",
            bucket.url(),
            settings.stack_dir.display()
        ),
        Some(_) => {}
        None => identity::write(&settings.stack_dir, &theirs)?,
    }
    let seals = seals_in(&listing);
    let chosen = if id == "latest" {
        seals
            .keys()
            .next_back()
            .cloned()
            .with_context(|| format!("{} holds no complete backup", bucket.url()))?
    } else {
        let id = id
            .strip_prefix("backup_")
            .unwrap_or(id)
            .trim_end_matches(".json");
        if !seals.contains_key(id) {
            bail!(
                "{} holds no complete backup {id:?}\n`elior backup list --offsite` shows the ones it holds",
                bucket.url()
            );
        }
        id.to_string()
    };
    super::ensure_backup_dir(&settings.backup_dir)?;
    fetch(
        &bucket,
        &listing,
        &settings.backup_dir,
        Some(&chosen),
        reporter,
    )?;
    Ok(chosen)
}

/// `verify --offsite`: every backup in the bucket downloaded into a staging folder beside
/// the backups (`BACKUP_DIR/.offsite-verify`, removed afterwards) and checked deeply as a
/// local one; problems name the remote objects.
pub fn verify(
    settings: &BackupSettings,
    identity: Option<&Path>,
    reporter: &mut Reporter,
) -> Result<Vec<super::Verification>> {
    let offsite = settings
        .offsite
        .as_ref()
        .context("BACKUP_OFFSITE is not set\nset it to s3://BUCKET/PREFIX in the stack's .env.production, or use --from")?;
    let bucket = Bucket::new(offsite)?;
    let listing = bucket.list()?;
    bucket.stack_of(&listing)?;
    super::ensure_backup_dir(&settings.backup_dir)?;
    let staging = settings.backup_dir.join(".offsite-verify");
    let _ = fs::remove_dir_all(&staging);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .with_context(|| format!("failed to create {}", staging.display()))?;
    let _cleanup = RemoveDir(staging.clone());
    fetch(&bucket, &listing, &staging, None, reporter)?;
    let sets = super::scan(&staging)?;
    let chosen: Vec<&super::BackupSet> = sets.iter().rev().collect();
    if !chosen.iter().any(|s| s.has_manifest()) {
        bail!(
            "{} holds no complete backup to verify\n`elior backup push` copies this host's backups there",
            bucket.url()
        );
    }
    reporter.phase(&format!("offsite: checking {} backups", chosen.len()));
    let staged = format!("{}/", staging.display());
    let remote_prefix = format!("{}/", bucket.url());
    Ok(
        super::verify_sets(&staging, &chosen, Some(super::Check::Quick), true, identity)
            .into_iter()
            .map(|(mut v, _)| {
                for p in v.problems.iter_mut().chain(v.notes.iter_mut()) {
                    *p = p.replace(&staged, &remote_prefix);
                }
                v
            })
            .collect(),
    )
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What remote retention did (or would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RemotePrune {
    pub url: String,
    pub deleted: Vec<String>,
    pub packs_deleted: usize,
    pub bytes_freed: u64,
    /// Why nothing (or not everything) was deleted.
    pub notes: Vec<String>,
}

/// Remote retention, after the local prune: the backups that prune deleted here (each
/// verified and redundant) are deleted offsite too, and then the packs and keys no
/// backup offsite uses. Only when the newest backup that prune verified and kept is
/// offsite, so the bucket never loses its last good copy; and packs only when every
/// backup left offsite is also here, so what they use is known.
pub fn prune(
    settings: &BackupSettings,
    local: &super::PruneReport,
    dry_run: bool,
) -> Result<RemotePrune> {
    let offsite = settings
        .offsite
        .as_ref()
        .context("BACKUP_OFFSITE is not set")?;
    let bucket = Bucket::new(offsite)?;
    let listing = bucket.list()?;
    let mut report = RemotePrune {
        url: bucket.url(),
        ..RemotePrune::default()
    };
    let Some(theirs) = bucket.stack_of(&listing)? else {
        report.notes.push("the bucket holds no backups yet".into());
        return Ok(report);
    };
    if let Some(mine) = identity::read(&settings.stack_dir)? {
        if mine != theirs {
            bail!(
                "{KEY}: {} holds the backups of another stack ({theirs}); nothing there is pruned from this one ({mine})",
                bucket.url()
            );
        }
    }
    let seals = seals_in(&listing);
    let newest_kept = local
        .decisions
        .iter()
        .find(|d| !d.deletes() && d.problem.is_none())
        .map(|d| d.id.clone());
    let Some(newest_kept) = newest_kept else {
        report
            .notes
            .push("no verified backup here; nothing offsite is pruned".into());
        return Ok(report);
    };
    if !seals.contains_key(&newest_kept) {
        report.notes.push(format!(
            "the newest verified backup {newest_kept} is not offsite yet, so nothing there is pruned; `elior backup push` sends it"
        ));
        return Ok(report);
    }
    for id in &local.deleted {
        let Some((seal, is_repo)) = seals.get(id) else {
            continue;
        };
        if !dry_run {
            // The seal first: killed after it, what is left is data no backup names.
            bucket.delete(seal)?;
            if !is_repo {
                for part in Part::DATA {
                    bucket.delete(&part.file_name(id))?;
                }
            }
        }
        report.deleted.push(id.clone());
    }
    let here: BTreeSet<String> = super::scan(&settings.backup_dir)?
        .into_iter()
        .filter(|s| s.has_manifest())
        .map(|s| s.id)
        .collect();
    let only_offsite: Vec<&String> = seals
        .keys()
        .filter(|id| !report.deleted.contains(id) && !here.contains(*id))
        .collect();
    if !only_offsite.is_empty() {
        report.notes.push(format!(
            "{} backups are offsite but not here ({}); they are kept, and so is every pack, since what they use cannot be known from here",
            only_offsite.len(),
            only_offsite.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
        return Ok(report);
    }
    // A pack repacked here must be offsite before the old one goes: every local pack
    // and key has to be there first.
    if repo::Repo::exists(&repo::root(&settings.backup_dir)) {
        let lacking = repository_files(&settings.backup_dir)?
            .into_iter()
            .filter(|l| l.class == Class::Data)
            .filter(|l| listing.get(&l.path).map(|r| r.size) != Some(l.size))
            .count();
        if lacking > 0 {
            report.notes.push(format!(
                "{lacking} packs or keys of this repository are not offsite yet, so no pack there is deleted; `elior backup push` sends them"
            ));
            return Ok(report);
        }
    }
    // Every backup left offsite is here, verified by the local prune, and every pack it
    // uses here is offsite: the packs and keys that are not here are unused.
    for (key, remote) in &listing {
        if !(key.starts_with("repository/packs/") || key.starts_with("repository/keys/")) {
            continue;
        }
        if plan::classify(key).is_none() || settings.backup_dir.join(key).is_file() {
            continue;
        }
        if !dry_run {
            bucket.delete(key)?;
        }
        report.packs_deleted += 1;
        report.bytes_freed += remote.size;
    }
    Ok(report)
}
