//! Removing what no snapshot uses: mark and sweep, under the repository lock.
//!
//! Mark: every blob reachable from the roots of every snapshot file present (list blobs
//! are expanded; they hold names only, so this needs no key). A snapshot or list that
//! cannot be read stops the sweep: what it uses is unknown, so nothing may go.
//!
//! Sweep: a pack with no used blob is deleted. A pack that is mostly unused (less than
//! [`REPACK_BELOW`] of its bytes used) has its used blobs copied, as stored (so an
//! encrypted repository is repacked without a key), into new packs, which are made
//! durable *before* the old pack is deleted. Killed at any point, every used blob is
//! still in some pack; the next prune finds the copies that are left and removes them.

use std::collections::HashSet;
use std::fs;

use anyhow::{Context, Result};

use super::pack::{self, Kind};
use super::{BlobId, Repo, Snapshot};
use crate::backup::{fault, manifest};

/// A pack whose used bytes are below this share of its size is repacked.
const REPACK_BELOW: f64 = 0.8;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SweepReport {
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub packs_written: usize,
    /// Bytes freed (deleted packs, less the repacked copies).
    pub bytes_freed: u64,
    /// Files of killed runs removed from `tmp/`.
    pub tmp_removed: usize,
    /// Wrapped run keys (`keys/KEY.age`) that no chunk and no snapshot uses, removed.
    pub keys_removed: usize,
    pub dry_run: bool,
}

/// Every blob the snapshots use.
pub fn mark(repo: &Repo, snapshots: &[Snapshot]) -> Result<HashSet<BlobId>> {
    let mut used = HashSet::new();
    for snap in snapshots {
        for root in &snap.roots {
            let id = super::parse_id(root)
                .with_context(|| format!("snapshot {} names a bad chunk {root:?}", snap.id))?;
            used.insert(id);
            let loc = repo.index.get(&id).with_context(|| {
                format!(
                    "snapshot {} names chunk {root}, which is missing; what it uses cannot be known, so nothing is swept",
                    snap.id
                )
            })?;
            if repo.entry(*loc).kind == Kind::List {
                used.extend(
                    repo.load_list(&id)
                        .with_context(|| format!("snapshot {}: nothing is swept", snap.id))?,
                );
            }
        }
    }
    Ok(used)
}

/// Sweeps the repository at `root`; the caller holds the repository lock.
pub fn sweep(root: &std::path::Path, dry_run: bool) -> Result<SweepReport> {
    let mut report = SweepReport {
        dry_run,
        ..SweepReport::default()
    };
    if !dry_run {
        report.tmp_removed = Repo::clear_tmp(root)?.0;
    }
    let mut repo = Repo::open(root)?;
    let mut snapshots = Vec::new();
    for (id, _) in super::snapshot_files(root)? {
        let snap = Snapshot::read(&super::snapshot_path(root, &id))
            .with_context(|| format!("snapshot {id} is unreadable, so nothing is swept"))?;
        snapshots.push(snap);
    }
    let used = mark(&repo, &snapshots)?;

    // Each used blob is kept at the place the index gives it; other copies are unused.
    let mut delete = Vec::new();
    let mut repack = Vec::new();
    for (p, info) in repo.packs.iter().enumerate() {
        let live: u64 = info
            .entries
            .iter()
            .enumerate()
            .filter(|(e, entry)| {
                used.contains(&entry.id)
                    && repo.index.get(&entry.id)
                        == Some(&super::Loc {
                            pack: p as u32,
                            entry: *e as u32,
                        })
            })
            .map(|(_, entry)| u64::from(entry.stored_len))
            .sum();
        if live == 0 {
            delete.push(p);
        } else if (live as f64) < REPACK_BELOW * info.size as f64 {
            repack.push(p);
        }
    }
    report.packs_deleted = delete.len();
    report.packs_repacked = repack.len();
    report.bytes_freed = delete.iter().map(|&p| repo.packs[p].size).sum();
    if dry_run {
        return Ok(report);
    }

    // Copy the used blobs of mostly-unused packs, and make the copies durable first.
    let mut written: Vec<pack::Finished> = Vec::new();
    let mut writer: Option<pack::Writer> = None;
    let mut copied = HashSet::new();
    for &p in &repack {
        let entries = repo.packs[p].entries.clone();
        for (e, entry) in entries.into_iter().enumerate() {
            let here = super::Loc {
                pack: p as u32,
                entry: e as u32,
            };
            if !used.contains(&entry.id)
                || repo.index.get(&entry.id) != Some(&here)
                || !copied.insert(entry.id)
            {
                continue;
            }
            let (stored, _, _) = repo.read_stored(&entry.id)?;
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(pack::Writer::create(&root.join(super::TMP_DIR))?),
            };
            w.add(entry.id, entry.kind, &[&stored], entry.raw_len as usize)?;
            if w.size() >= pack::TARGET_SIZE {
                written.push(writer.take().expect("open").finish()?);
            }
        }
        report.bytes_freed += repo.packs[p].size;
    }
    if let Some(w) = writer.take().filter(|w| !w.is_empty()) {
        written.push(w.finish()?);
    }
    let mut dirs = std::collections::BTreeSet::new();
    for finished in &written {
        pack::commit(root, finished)?;
        report.bytes_freed = report.bytes_freed.saturating_sub(finished.size);
        dirs.insert(
            pack::path(root, &finished.name)
                .parent()
                .map(|d| d.to_path_buf()),
        );
    }
    for dir in dirs.into_iter().flatten() {
        manifest::sync_dir(&dir)?;
    }
    report.packs_written = written.len();
    for finished in written {
        repo.add_pack(super::PackInfo {
            name: finished.name,
            size: finished.size,
            entries: finished.entries,
        });
    }
    fault::point("prune:repacked");

    // Only now the old packs go.
    let mut removed_dirs = std::collections::BTreeSet::new();
    for (n, &p) in delete.iter().chain(&repack).enumerate() {
        let path = pack::path(root, &repo.packs[p].name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("failed to delete {}", path.display()))
            }
            _ => {}
        }
        removed_dirs.insert(path.parent().map(|d| d.to_path_buf()));
        if n == 0 {
            fault::point("prune:deleted-one");
        }
    }
    for dir in removed_dirs.into_iter().flatten() {
        manifest::sync_dir(&dir)?;
    }
    report.keys_removed = sweep_keys(root, &snapshots)?;
    Ok(report)
}

/// Removes the wrapped run keys (`keys/KEY.age`) that no stored chunk and no snapshot
/// names: those of killed runs, and of runs whose chunks are all gone (issue 17). A key
/// is needed by every chunk its run encrypted, so each chunk's first bytes (its key id)
/// are read; a damaged pack stops this (what its chunks need is unknown). Deleting an
/// unused key is all there is to it, so a kill part-way leaves nothing to repair.
fn sweep_keys(root: &std::path::Path, snapshots: &[Snapshot]) -> Result<usize> {
    use std::os::unix::fs::FileExt;
    let keys_dir = root.join(super::KEYS_DIR);
    let Ok(entries) = fs::read_dir(&keys_dir) else {
        return Ok(0);
    };
    let repo = Repo::open(root)?;
    if !repo.damaged.is_empty() {
        return Ok(0);
    }
    let mut used: HashSet<String> = snapshots
        .iter()
        .filter_map(|s| {
            s.sealed
                .as_ref()
                .map(|sealed| sealed.key.to_ascii_lowercase())
        })
        .collect();
    let mut head = [0u8; 1 + 16];
    for info in &repo.packs {
        let path = pack::path(root, &info.name);
        let file = fs::File::open(&path)
            .with_context(|| format!("failed to open pack {}", path.display()))?;
        for entry in &info.entries {
            if (entry.stored_len as usize) < head.len() {
                continue;
            }
            file.read_exact_at(&mut head, entry.offset)
                .with_context(|| format!("failed to read pack {}", path.display()))?;
            if let Some(id) = super::crypto::key_of(&head) {
                used.insert(hex::encode(id));
            }
        }
    }
    let mut removed = 0;
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list {}", keys_dir.display()))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".age")) else {
            continue;
        };
        if used.contains(&id.to_ascii_lowercase()) {
            continue;
        }
        fs::remove_file(entry.path())
            .with_context(|| format!("failed to delete {}", entry.path().display()))?;
        removed += 1;
    }
    if removed > 0 {
        manifest::sync_dir(&keys_dir)?;
    }
    Ok(removed)
}
