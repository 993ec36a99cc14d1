//! Carries out a step's actions, in order, and keeps what each one changed: when an action
//! fails, the ones before it in the same step are undone in reverse, so a failure part-way
//! leaves the step's part of the host as it was (issue 18). Packages are the exception:
//! apt-get install is dpkg's own transaction, and a package it installed stays.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::{firewall, user, Action, StepPlan, Target};
use crate::fsutil::write_atomic;

/// What to do to take one applied action back.
enum Undo {
    /// Put a file's bytes and mode back, or remove it when there was none.
    File(PathBuf, Option<(Vec<u8>, u32)>),
    Owner(PathBuf, u32, u32, u32),
    RemoveDir(PathBuf),
    MakeDir(PathBuf),
    DeleteUser(String),
    Disable(String),
    Enable(String),
    Nft(Option<String>),
}

/// Held while a provision changes the host: a second `elior provision` on the same root
/// waits for nothing and stops, rather than interleaving its apt, unit and nft changes.
/// The lock is `flock` on the root directory itself, so it leaves no file behind.
pub struct RootLock(#[allow(dead_code)] std::fs::File);

pub fn lock(target: &Target) -> Result<RootLock> {
    let dir = std::fs::File::open(&target.root)
        .with_context(|| format!("failed to open {}", target.root.display()))?;
    match rustix::fs::flock(&dir, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(RootLock(dir)),
        Err(rustix::io::Errno::WOULDBLOCK) => bail!(
            "another elior provision is changing {} right now\nwait for it to finish, then run elior provision again",
            target.root.display()
        ),
        Err(e) => Err(e).with_context(|| format!("failed to lock {}", target.root.display())),
    }
}

/// Applies `plan`'s actions; on a failure, undoes the ones already applied.
pub fn step(plan: &StepPlan, target: &Target) -> Result<()> {
    let mut done: Vec<Undo> = Vec::new();
    for action in &plan.actions {
        eprintln!("  {}", action.describe());
        if let Err(err) = one(action, target, &mut done) {
            let mut left = Vec::new();
            while let Some(undo) = done.pop() {
                if let Err(e) = take_back(undo, target) {
                    left.push(format!("{e:#}"));
                }
            }
            let step = plan.step.name();
            if left.is_empty() {
                return Err(err.context(format!(
                    "the {step} step failed; its earlier changes were put back"
                )));
            }
            return Err(err.context(format!(
                "the {step} step failed, and putting its earlier changes back failed too: {}",
                left.join("; ")
            )));
        }
    }
    Ok(())
}

fn status(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}").replace('"', "");
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {shown}"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn systemctl(target: &Target, args: &[&str]) -> Result<()> {
    let mut command = Command::new("systemctl");
    command.arg("--quiet");
    if !(target.live() && target.systemd) {
        command.arg(format!("--root={}", target.root.display()));
    }
    status(command.args(args))
}

/// Users and groups under the root: `--prefix` makes shadow's tools edit ROOT/etc.
fn shadow_tool(tool: &str, target: &Target) -> Command {
    let mut command = Command::new(tool);
    if !target.live() {
        command.arg("--prefix").arg(&target.root);
    }
    command
}

/// Loads an `nft -f` script from stdin: one transaction, all or nothing.
pub fn nft_load(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("failed to run nft (apt-get install nftables)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .context("failed to send the rules to nft")?;
    let out = child.wait_with_output().context("failed to run nft")?;
    if !out.status.success() {
        bail!(
            "nft refused the rules: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates the missing parents of `path`, each recorded so a rollback removes it again.
fn make_parents(path: &Path, done: &mut Vec<Undo>) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = path.parent();
    while let Some(dir) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(dir.to_path_buf());
        at = dir.parent();
    }
    for dir in missing.into_iter().rev() {
        std::fs::create_dir(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
        done.push(Undo::RemoveDir(dir));
    }
    Ok(())
}

/// The directories that only hold elior's files: emptied by `--undo`, they go too.
const OWN_DIRS: [&str; 2] = ["/etc/elior", "/var/lib/elior"];

fn snapshot(path: &Path) -> Option<(Vec<u8>, u32)> {
    let bytes = std::fs::read(path).ok()?;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    Some((bytes, mode))
}

/// The uid and gid of `name` in the root's /etc/passwd.
fn ids(target: &Target, name: &str) -> Result<(u32, u32)> {
    let passwd = target.at(Path::new("/etc/passwd"));
    let text = std::fs::read_to_string(&passwd)
        .with_context(|| format!("failed to read {}", passwd.display()))?;
    let account = user::parse_passwd(&text, name)
        .with_context(|| format!("user {name} is not in {}", passwd.display()))?;
    Ok((account.uid, account.gid))
}

fn one(action: &Action, target: &Target, done: &mut Vec<Undo>) -> Result<()> {
    match action {
        Action::AptInstall { packages } => status(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(packages),
        ),
        Action::Systemctl { args } => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            status(Command::new("systemctl").args(&args))
        }
        Action::WriteFile {
            path,
            mode,
            content,
        } => {
            let real = target.at(path);
            let before = snapshot(&real);
            make_parents(&real, done)?;
            write_atomic(&real, content.as_bytes(), *mode)?;
            done.push(Undo::File(real, before));
            Ok(())
        }
        Action::RemoveFile { path } => {
            let real = target.at(path);
            let before = snapshot(&real);
            match std::fs::remove_file(&real) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("failed to remove {}", real.display()))
                }
            }
            done.push(Undo::File(real.clone(), before));
            let parent = real.parent().unwrap_or(Path::new("/"));
            if OWN_DIRS.iter().any(|d| target.at(Path::new(d)) == parent) {
                // Only when empty; remove_dir refuses otherwise, which is what we want.
                if std::fs::remove_dir(parent).is_ok() {
                    done.push(Undo::MakeDir(parent.to_path_buf()));
                }
            }
            Ok(())
        }
        Action::CreateUser { name, id } => {
            let mut useradd = shadow_tool("useradd", target);
            useradd
                .args(["--system", "--no-create-home"])
                .args(["--home-dir", "/nonexistent", "--shell", user::NOLOGIN])
                .args(["--comment", "elior stack"]);
            match id {
                Some(id) => {
                    // The group first, so its gid can match the uid (the container's
                    // files are id:id); userdel takes an only group away with the user.
                    let group = target.at(Path::new("/etc/group"));
                    let groups = std::fs::read_to_string(&group).unwrap_or_default();
                    let gid_free = !groups
                        .lines()
                        .any(|l| l.split(':').nth(2) == Some(id.to_string().as_str()));
                    let mut groupadd = shadow_tool("groupadd", target);
                    groupadd.arg("--system");
                    if gid_free {
                        groupadd.args(["--gid", &id.to_string()]);
                    }
                    status(groupadd.arg(name))?;
                    useradd.args(["--uid", &id.to_string(), "--gid", name]);
                }
                None => {
                    useradd.arg("--user-group");
                }
            }
            if let Err(err) = status(useradd.arg(name)) {
                if id.is_some() {
                    let _ = status(shadow_tool("groupdel", target).arg(name));
                }
                return Err(err);
            }
            done.push(Undo::DeleteUser(name.clone()));
            Ok(())
        }
        Action::AddToGroup { user, group } => status(
            shadow_tool("usermod", target)
                .args(["--append", "--groups", group])
                .arg(user),
        ),
        Action::Own {
            path,
            user,
            mode,
            create_dir,
        } => {
            let (uid, gid) = ids(target, user)?;
            let real = target.at(path);
            if *create_dir {
                make_parents(&real, done)?;
                std::fs::create_dir(&real)
                    .with_context(|| format!("failed to create {}", real.display()))?;
                done.push(Undo::RemoveDir(real.clone()));
            } else {
                let m = std::fs::symlink_metadata(&real)
                    .with_context(|| format!("failed to read {}", real.display()))?;
                if m.file_type().is_symlink() {
                    bail!(
                        "{} is a symbolic link; elior sets owners only on real files\nreplace the link with the directory or file it points to",
                        real.display()
                    );
                }
                done.push(Undo::Owner(
                    real.clone(),
                    m.uid(),
                    m.gid(),
                    m.mode() & 0o7777,
                ));
            }
            std::os::unix::fs::lchown(&real, Some(uid), Some(gid))
                .with_context(|| format!("failed to set the owner of {}", real.display()))?;
            std::fs::set_permissions(&real, std::fs::Permissions::from_mode(*mode))
                .with_context(|| format!("failed to set the mode of {}", real.display()))
        }
        Action::EnableUnit { name, start, .. } => {
            let mut args = vec!["enable"];
            if *start && target.live() && target.systemd {
                args.push("--now");
            }
            args.push(name);
            systemctl(target, &args)?;
            done.push(Undo::Disable(name.clone()));
            Ok(())
        }
        Action::DisableUnit { name, .. } => {
            let mut args = vec!["disable"];
            if target.live() && target.systemd {
                args.push("--now");
            }
            args.push(name);
            systemctl(target, &args)?;
            done.push(Undo::Enable(name.clone()));
            Ok(())
        }
        Action::InstallBinary { from, to } => {
            let real = target.at(to);
            let bytes = std::fs::read(from)
                .with_context(|| format!("failed to read {}", from.display()))?;
            let before = snapshot(&real);
            make_parents(&real, done)?;
            write_atomic(&real, &bytes, 0o755)?;
            done.push(Undo::File(real, before));
            Ok(())
        }
        Action::NftApply { table, previous } => {
            // The table from before elior's first apply, kept once, for `--undo`.
            let before = target.at(Path::new(firewall::BEFORE_FILE));
            if !before.exists() {
                let saved = serde_json::json!({ "table": previous });
                write_atomic(&before, format!("{saved:#}\n").as_bytes(), 0o600)?;
                done.push(Undo::File(before, None));
            }
            nft_load(&firewall::script(Some(table)))?;
            done.push(Undo::Nft(previous.clone()));
            Ok(())
        }
        Action::NftRestore { previous, current } => {
            nft_load(&firewall::script(previous.as_deref()))?;
            done.push(Undo::Nft(current.clone()));
            Ok(())
        }
    }
}

fn take_back(undo: Undo, target: &Target) -> Result<()> {
    match undo {
        Undo::File(path, Some((bytes, mode))) => write_atomic(&path, &bytes, mode),
        Undo::File(path, None) => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("failed to remove {}", path.display()))
            }
            _ => Ok(()),
        },
        Undo::Owner(path, uid, gid, mode) => {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                .with_context(|| format!("failed to set the owner of {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("failed to set the mode of {}", path.display()))
        }
        Undo::RemoveDir(path) => std::fs::remove_dir(&path)
            .with_context(|| format!("failed to remove {}", path.display())),
        Undo::MakeDir(path) => std::fs::create_dir(&path)
            .with_context(|| format!("failed to create {}", path.display())),
        Undo::DeleteUser(name) => status(shadow_tool("userdel", target).arg(name)),
        Undo::Disable(name) => systemctl(target, &["disable", &name]),
        Undo::Enable(name) => systemctl(target, &["enable", &name]),
        Undo::Nft(table) => nft_load(&firewall::script(table.as_deref())),
    }
}

/// After the engine step: the Engine answers with an API elior speaks.
pub fn check_engine() -> Result<String> {
    let version = super::observe::api_version()?;
    match super::engine::parse_api(&version) {
        Some(api) if api >= super::engine::MIN_API => Ok(version),
        _ => bail!(
            "the Docker Engine speaks API {version}, older than the {}.{} elior needs\nupgrade the engine: apt-get install --only-upgrade {}",
            super::engine::MIN_API.0,
            super::engine::MIN_API.1,
            super::engine::ENGINE_PACKAGE
        ),
    }
}
