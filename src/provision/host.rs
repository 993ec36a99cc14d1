//! The preconditions every step checks before it changes anything (issue 18): running as
//! root, on Debian or Ubuntu (from os-release), and, for steps that install packages, no
//! other apt or dpkg holding the lock. Pure: parsers and the judgement; `observe` reads.

use serde::Serialize;

/// The host facts the preconditions need.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub euid: u32,
    /// None when os-release could not be read.
    pub os: Option<OsRelease>,
    /// The pid holding dpkg's frontend lock, if one does.
    pub apt_locked_by: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OsRelease {
    pub id: String,
    pub id_like: Vec<String>,
    pub version_id: String,
    pub pretty_name: String,
}

impl OsRelease {
    pub fn supported(&self) -> bool {
        ["debian", "ubuntu"]
            .iter()
            .any(|d| self.id == *d || self.id_like.iter().any(|l| l == d))
    }
}

/// Parses os-release(5): `KEY=value` lines, values optionally quoted.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value
            .trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .to_string();
        match key.trim() {
            "ID" => os.id = value,
            "ID_LIKE" => os.id_like = value.split_whitespace().map(String::from).collect(),
            "VERSION_ID" => os.version_id = value,
            "PRETTY_NAME" => os.pretty_name = value,
            _ => {}
        }
    }
    os
}

/// The pid of a lock in `/proc/locks` on the file with `inode` on device `major:minor`.
/// Lines look like `1: POSIX  ADVISORY  WRITE 1234 fd:01:393220 0 EOF` (device in hex).
pub fn lock_holder(proc_locks: &str, major: u64, minor: u64, inode: u64) -> Option<u32> {
    proc_locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Blocked waiters are listed with a `->` field; they hold nothing.
        if fields.get(1) == Some(&"->") {
            return None;
        }
        let at = fields.iter().position(|f| f.matches(':').count() == 2)?;
        let device = fields[at];
        let (dev, ino) = device.rsplit_once(':')?;
        let (maj, min) = dev.split_once(':')?;
        let same = u64::from_str_radix(maj, 16).ok()? == major
            && u64::from_str_radix(min, 16).ok()? == minor
            && ino.parse::<u64>().ok()? == inode;
        same.then(|| fields[at - 1].parse().ok()).flatten()
    })
}

/// Why a step may not run, or None when it may.
pub fn check(facts: &Facts, needs_apt: bool) -> Option<String> {
    if facts.euid != 0 {
        return Some(format!(
            "not running as root (uid {})\nrun it with sudo: sudo elior provision",
            facts.euid
        ));
    }
    match &facts.os {
        None => {
            return Some(
                "cannot read /etc/os-release, so this is not a known Debian or Ubuntu\nelior provision supports Debian and Ubuntu only".into(),
            )
        }
        Some(os) if !os.supported() => {
            return Some(format!(
                "{} ({}) is neither Debian nor Ubuntu\nelior provision supports Debian and Ubuntu only; set the host up by hand",
                if os.pretty_name.is_empty() { &os.id } else { &os.pretty_name },
                os.id
            ))
        }
        Some(_) => {}
    }
    if needs_apt {
        if let Some(pid) = facts.apt_locked_by {
            return Some(format!(
                "apt is locked by process {pid} (/var/lib/dpkg/lock-frontend)\nwait for it to finish (an unattended upgrade, say) and run elior provision again"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_os_release() {
        let os = parse_os_release(
            "PRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nID=ubuntu\nID_LIKE=debian\n",
        );
        assert_eq!(
            os,
            OsRelease {
                id: "ubuntu".into(),
                id_like: vec!["debian".into()],
                version_id: "24.04".into(),
                pretty_name: "Ubuntu 24.04.1 LTS".into(),
            }
        );
        assert!(os.supported());
        let mint = parse_os_release("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n");
        assert!(mint.supported());
        assert!(!parse_os_release("ID=fedora\nPRETTY_NAME=\"Fedora Linux 40\"\n").supported());
    }

    #[test]
    fn finds_the_apt_lock_holder() {
        let locks = "1: POSIX  ADVISORY  WRITE 4242 fe:01:393220 0 EOF\n\
                     1: -> POSIX  ADVISORY  WRITE 4343 fe:01:393220 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 77 00:19:1234 0 EOF\n";
        assert_eq!(lock_holder(locks, 0xfe, 1, 393220), Some(4242));
        assert_eq!(lock_holder(locks, 0xfe, 1, 393221), None);
        assert_eq!(lock_holder(locks, 0, 0x19, 1234), Some(77));
        assert_eq!(lock_holder("", 0, 0, 1), None);
    }

    #[test]
    fn preconditions_name_the_fix() {
        let debian = Some(parse_os_release(
            "ID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12\"\n",
        ));
        let ok = Facts {
            euid: 0,
            os: debian.clone(),
            apt_locked_by: None,
        };
        assert_eq!(check(&ok, true), None);
        let user = Facts {
            euid: 1000,
            ..ok.clone()
        };
        assert!(check(&user, false)
            .unwrap()
            .starts_with("not running as root (uid 1000)\nrun it with sudo"));
        let fedora = Facts {
            os: Some(parse_os_release(
                "ID=fedora\nPRETTY_NAME=\"Fedora Linux 40\"\n",
            )),
            ..ok.clone()
        };
        assert_eq!(
            check(&fedora, false).unwrap(),
            "Fedora Linux 40 (fedora) is neither Debian nor Ubuntu\nelior provision supports Debian and Ubuntu only; set the host up by hand"
        );
        let locked = Facts {
            apt_locked_by: Some(99),
            ..ok
        };
        assert_eq!(check(&locked, false), None, "the lock matters only to apt");
        assert!(check(&locked, true)
            .unwrap()
            .starts_with("apt is locked by process 99"));
    }
}
