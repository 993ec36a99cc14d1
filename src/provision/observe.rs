//! Gathers each step's `have` from the host: files under the target root, dpkg and apt,
//! systemctl, sshd, nft, the Docker Engine. Read-only: nothing here changes the host, which
//! is what makes `--dry-run` safe (a test compares the host before and after).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{capacity, engine, firewall, host, time, units, user, Target};
use crate::schedule::unit;

/// Runs a command; Some((success, stdout, stderr)), None when it cannot be started.
fn run(program: &str, args: &[&str]) -> Option<(bool, String, String)> {
    let out = Command::new(program).args(args).output().ok()?;
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The first `name` on PATH (plus the sbin directories a sudo PATH may lack).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    found
}

pub fn host_facts(target: &Target) -> host::Facts {
    let euid = read(Path::new("/proc/self/status"))
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|u| u.parse().ok())
        })
        .unwrap_or(u32::MAX);
    let os = read(&target.at(Path::new("/etc/os-release")))
        .or_else(|| read(&target.at(Path::new("/usr/lib/os-release"))))
        .map(|t| host::parse_os_release(&t));
    let apt_locked_by = std::fs::metadata("/var/lib/dpkg/lock-frontend")
        .ok()
        .and_then(|m| {
            let dev = m.dev();
            let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
            let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
            host::lock_holder(&read(Path::new("/proc/locks"))?, major, minor, m.ino())
        });
    host::Facts {
        euid,
        os,
        apt_locked_by,
    }
}

/// Installed versions of `packages` (dpkg).
fn installed(packages: &[&str]) -> BTreeMap<String, String> {
    let mut args = vec!["-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Version}\n"];
    args.extend(packages);
    run("dpkg-query", &args)
        .map(|(_, out, _)| engine::parse_dpkg_query(&out))
        .unwrap_or_default()
}

/// `systemctl is-enabled` and `is-active` of a unit, when systemd runs.
fn service(target: &Target, unit: &str) -> Option<engine::Service> {
    if !target.systemd {
        return None;
    }
    let state = |verb: &str| {
        run("systemctl", &[verb, unit])
            .map(|(_, out, _)| out.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into())
    };
    Some(engine::Service {
        enabled: state("is-enabled"),
        active: state("is-active"),
    })
}

/// The unit is enabled: its link in `WANTED_BY.wants/` exists under the root.
fn linked(target: &Target, wanted_by: &str, name: &str) -> bool {
    target
        .at(&Path::new(units::UNIT_DIR)
            .join(format!("{wanted_by}.wants"))
            .join(name))
        .symlink_metadata()
        .is_ok()
}

pub fn engine(target: &Target) -> engine::Have {
    let mut packages: Vec<&str> = engine::ENGINE_PACKAGES.to_vec();
    packages.extend(engine::COMPOSE_PACKAGES);
    let candidates = run(
        "apt-cache",
        &[&["policy"][..], &engine::COMPOSE_PACKAGES].concat(),
    )
    .map(|(_, out, _)| engine::parse_apt_policy(&out))
    .unwrap_or_default();
    let compose_plugin = which("docker").is_some()
        && run("docker", &["compose", "version"]).is_some_and(|(ok, _, _)| ok);
    let (api_version, api_error) = match api_version() {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    engine::Have {
        installed: installed(&packages),
        candidates,
        compose_plugin,
        dockerd: which("dockerd").map(|p| p.display().to_string()),
        service: service(target, "docker.service"),
        api_version,
        api_error,
    }
}

/// The Engine's API version, with a deadline (a hung socket must not hang provision).
pub fn api_version() -> Result<String> {
    let runtime = crate::docker::runtime()?;
    runtime.block_on(async {
        let version = tokio::time::timeout(Duration::from_secs(10), async {
            crate::docker::connect()
                .await?
                .version()
                .await
                .map_err(anyhow::Error::from)
        })
        .await
        .context("the Docker Engine did not answer within 10 s")??;
        version
            .api_version
            .context("the Docker Engine reported no API version")
    })
}

/// The ports running sshd processes listen on: their socket inodes (from /proc/PID/fd)
/// matched against the LISTEN sockets of /proc/net/tcp and tcp6. Empty without sshd.
fn sshd_listening() -> Vec<u16> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.path();
        if read(&pid.join("comm")).as_deref().map(str::trim) != Some("sshd") {
            continue;
        }
        for fd in std::fs::read_dir(pid.join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let link = link.to_string_lossy();
                if let Some(inode) = link
                    .strip_prefix("socket:[")
                    .and_then(|l| l.strip_suffix(']'))
                    .and_then(|l| l.parse().ok())
                {
                    inodes.push(inode);
                }
            }
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut ports: Vec<u16> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| read(Path::new(p)))
        .flat_map(|t| firewall::listening_ports(&t, &inodes))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// sshd's ports: on the live host, the ports a running sshd listens on plus `sshd -T`
/// (its configuration as sshd reads it), so neither a restart pending nor a listener from
/// before one locks anyone out; else the configuration files under the root. None when
/// there is no sshd at all.
pub fn ssh_ports(target: &Target) -> Option<firewall::SshPorts> {
    let configured = configured_ssh_ports(target);
    if !target.live() {
        return configured;
    }
    let listening = sshd_listening();
    if listening.is_empty() {
        return configured;
    }
    let mut ports = listening.clone();
    let mut source = format!(
        "the running sshd, listening on {}",
        listening
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(configured) = configured {
        ports.extend(configured.ports);
        ports.sort_unstable();
        ports.dedup();
        source = format!("{source}; {}", configured.source);
    }
    Some(firewall::SshPorts { ports, source })
}

fn configured_ssh_ports(target: &Target) -> Option<firewall::SshPorts> {
    if target.live() {
        if let Some(sshd) = which("sshd") {
            if let Some((true, out, _)) = run(&sshd.display().to_string(), &["-T"]) {
                let ports = firewall::parse_sshd_t(&out);
                if !ports.is_empty() {
                    return Some(firewall::SshPorts {
                        ports,
                        source: "sshd -T".into(),
                    });
                }
            }
        }
    }
    let main = Path::new("/etc/ssh/sshd_config");
    let text = read(&target.at(main))?;
    let mut ports = Vec::new();
    let mut files = vec![main.display().to_string()];
    let (found, includes) = firewall::parse_sshd_config(&text);
    ports.extend(found);
    for pattern in includes {
        let pattern = if pattern.starts_with('/') {
            pattern
        } else {
            format!("/etc/ssh/{pattern}")
        };
        for file in glob(&target.at(Path::new(&pattern))) {
            if let Some(text) = read(&file) {
                ports.extend(firewall::parse_sshd_config(&text).0);
                files.push(file.display().to_string());
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        ports.push(22);
    }
    Some(firewall::SshPorts {
        ports,
        source: files.join(", "),
    })
}

/// Expands one `*` in the last component of `pattern` (sshd's usual `*.conf`), sorted.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((prefix, suffix)) = name.split_once('*') else {
        return vec![pattern.to_path_buf()];
    };
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.starts_with(prefix)
                        && n.ends_with(suffix)
                        && n.len() >= prefix.len() + suffix.len()
                })
                .map(|n| dir.join(n))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The live `table inet elior`, or None when it does not exist.
pub fn nft_table() -> Result<Option<String>> {
    let (ok, out, err) =
        run("nft", &["list", "table", "inet", "elior"]).context("failed to run nft")?;
    if ok {
        return Ok(Some(out));
    }
    if err.contains("No such file or directory") {
        return Ok(None);
    }
    bail!("`nft list table inet elior` failed: {}", err.trim())
}

pub fn firewall(target: &Target) -> Result<firewall::Have> {
    let nft = which("nft").is_some();
    let table = if nft { nft_table()? } else { None };
    let session_port = std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|c| c.split_whitespace().nth(3).and_then(|p| p.parse().ok()));
    let before = match read(&target.at(Path::new(firewall::BEFORE_FILE))) {
        Some(text) => {
            let saved: serde_json::Value = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not valid JSON\nremove it only if you know the firewall's earlier state",
                    firewall::BEFORE_FILE
                )
            })?;
            Some(saved["table"].as_str().map(String::from))
        }
        None => None,
    };
    Ok(firewall::Have {
        nft,
        table,
        ssh: ssh_ports(target),
        session_port,
        rules_file: read(&target.at(Path::new(firewall::RULES_FILE))),
        unit: read(&target.at(&Path::new(firewall::UNIT_DIR).join(firewall::UNIT_NAME))),
        unit_enabled: linked(target, firewall::UNIT_WANTED_BY, firewall::UNIT_NAME),
        before,
    })
}

fn path_state(target: &Target, logical: &Path) -> user::PathState {
    match std::fs::symlink_metadata(target.at(logical)) {
        Ok(m) => user::PathState {
            path: logical.to_path_buf(),
            exists: true,
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode(),
        },
        Err(_) => user::PathState {
            path: logical.to_path_buf(),
            ..Default::default()
        },
    }
}

pub fn user(target: &Target, want: &user::Want) -> user::Have {
    let passwd = read(&target.at(Path::new("/etc/passwd"))).unwrap_or_default();
    let group = read(&target.at(Path::new("/etc/group"))).unwrap_or_default();
    user::Have {
        account: user::parse_passwd(&passwd, unit::USER),
        api_uid_owner: user::uid_owner(&passwd, crate::plan::render::API_UID),
        docker_members: user::parse_group(&group, "docker"),
        paths: want
            .paths
            .iter()
            .map(|p| path_state(target, &p.path))
            .collect(),
    }
}

/// The stacks' directories and backup directories (BACKUP_DIR from each env file).
pub fn stacks(target: &Target, dirs: &[PathBuf]) -> Result<Vec<units::Stack>> {
    dirs.iter()
        .map(|dir| {
            let env = target.at(&dir.join(crate::backup::settings::ENV_FILE));
            let raw = if env.exists() {
                crate::config::RawSettings::from_env_file(&env)?
            } else {
                crate::config::RawSettings::default()
            };
            let settings = crate::backup::BackupSettings::from_raw(dir, &raw)?;
            Ok(units::Stack {
                dir: dir.clone(),
                backup_dir: settings.backup_dir,
            })
        })
        .collect()
}

fn unit_state(target: &Target, name: &str) -> units::UnitState {
    units::UnitState {
        name: name.to_string(),
        text: read(&target.at(&units::unit_path(name))),
        enabled: linked(target, units::WANTED_BY, name),
        active: service(target, name).map(|s| s.active),
    }
}

/// True when `a` and `b` hold the same bytes (compared in chunks, not loaded whole).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    fn fill(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match file.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
    let (Ok(mut fa), Ok(mut fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return false;
    };
    if fa.metadata().map(|m| m.len()).ok() != fb.metadata().map(|m| m.len()).ok() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        match (fill(&mut fa, &mut ba), fill(&mut fb, &mut bb)) {
            (Ok(0), Ok(0)) => return true,
            (Ok(na), Ok(nb)) if na == nb && ba[..na] == bb[..nb] => {}
            _ => return false,
        }
    }
}

pub fn units(target: &Target, stacks: &[units::Stack]) -> Result<units::Have> {
    let current_exe = std::env::current_exe().context("failed to find the elior executable")?;
    let installed = target.at(Path::new(unit::BINARY));
    let binary = if !installed.exists() {
        units::Binary::Missing
    } else if same_file(&current_exe, &installed) {
        units::Binary::Same
    } else {
        units::Binary::Differs
    };
    let mut ours = Vec::new();
    if let Ok(entries) = std::fs::read_dir(target.at(Path::new(units::UNIT_DIR))) {
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(unit::PREFIX) && n.ends_with(".service"))
            .collect();
        names.sort();
        for name in names {
            let state = unit_state(target, &name);
            if state
                .text
                .as_deref()
                .is_some_and(|t| t.starts_with(unit::MARKER))
            {
                ours.push(state);
            }
        }
    }
    Ok(units::Have {
        binary,
        current_exe,
        units: stacks
            .iter()
            .map(|s| unit_state(target, &unit::name(&s.dir)))
            .collect(),
        ours,
    })
}

pub fn time(target: &Target) -> time::Have {
    let installed = installed(&["chrony", "systemd-timesyncd", "unattended-upgrades"]);
    let (_, unit) = time::time_unit(&installed);
    time::Have {
        time_service: if target.live() {
            service(target, unit)
        } else {
            None
        },
        installed,
        apt_conf: read(&target.at(Path::new(time::APT_CONF))),
    }
}

pub fn capacity(target: &Target, stack_dir: &Path) -> capacity::Have {
    let (memory_bytes, swap_bytes) = read(Path::new("/proc/meminfo"))
        .map(|t| capacity::parse_meminfo(&t))
        .unwrap_or_default();
    // The nearest existing ancestor: the stack directory may not exist yet.
    let mut path = target.at(stack_dir);
    while !path.exists() {
        if !path.pop() {
            break;
        }
    }
    let free_bytes = rustix::fs::statvfs(&path)
        .ok()
        .map(|s| s.f_bavail * s.f_frsize);
    capacity::Have {
        memory_bytes,
        swap_bytes,
        data_path: path.display().to_string(),
        free_bytes,
    }
}
