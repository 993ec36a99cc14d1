//! The systemd service that keeps `elior schedule` running for one stack directory: its
//! name and its text. The one generator behind both `elior schedule install` and
//! `elior provision` (issue 18), so the two never write different units for one stack.
//!
//! Pure: renders names and text; writing, enabling and restarting is the caller's job.

use std::path::{Path, PathBuf};

/// Where `elior provision` installs the binary, so units never point into a build tree.
pub const BINARY: &str = "/usr/local/bin/elior";
/// The system user the scheduler runs as.
pub const USER: &str = "elior";
/// The first line of every unit elior writes: `elior provision --undo` removes only files
/// that carry it.
pub const MARKER: &str =
    "# Written by elior (`elior provision`, `elior schedule install`); `elior provision --undo` removes it.";
/// Every scheduler unit's name starts with this.
pub const PREFIX: &str = "elior-schedule-";

/// The unit's name for a stack: `elior-schedule-<systemd-escape --path DIR>.service`, e.g.
/// `elior-schedule-srv-elior.service` for /srv/elior. One name per directory, so two
/// stacks on one host get two services.
/// A relative directory (doctor's default `.`) is taken from the working directory first.
pub fn name(stack_dir: &Path) -> String {
    let absolute = std::path::absolute(stack_dir).unwrap_or_else(|_| stack_dir.to_path_buf());
    format!("{PREFIX}{}.service", escape_path(&absolute))
}

/// `systemd-escape --path`: slashes trimmed and turned into `-`, every byte outside
/// `[A-Za-z0-9:_.]` (and a leading `.`) written as `\xNN`; `/` alone is `-`.
pub fn escape_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    let parts: Vec<&str> = text.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return "-".into();
    }
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, byte) in part.bytes().enumerate() {
            let plain =
                byte.is_ascii_alphanumeric() || byte == b':' || byte == b'_' || byte == b'.';
            if plain && !(i == 0 && j == 0 && byte == b'.') {
                out.push(byte as char);
            } else {
                out.push_str(&format!("\\x{byte:02x}"));
            }
        }
    }
    out
}

/// Refuses a stack directory a unit cannot name safely: relative, or with a control
/// character (a newline in a path would start a new directive in the unit).
pub fn check_dir(dir: &Path) -> anyhow::Result<()> {
    let text = dir.to_string_lossy();
    if !dir.is_absolute() {
        anyhow::bail!(
            "{}: a stack directory for a unit must be an absolute path\nexample: /srv/elior",
            dir.display()
        );
    }
    if text.chars().any(char::is_control) {
        anyhow::bail!(
            "{text:?}: a stack directory with a control character cannot go into a systemd unit\nrename the directory"
        );
    }
    Ok(())
}

/// What the unit runs, as whom, and what it may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The elior binary in `ExecStart=`: [`BINARY`] for provisioned hosts.
    pub exe: PathBuf,
    pub stack_dir: PathBuf,
    /// `User=`; None runs as root (a host that was never provisioned).
    pub user: Option<String>,
    /// More writable paths than the stack directory, e.g. a BACKUP_DIR outside it.
    pub extra_writable: Vec<PathBuf>,
}

/// Quotes a path for a unit file when it needs it, and doubles `%` (a specifier there).
fn quote(path: &Path) -> String {
    let text = path.display().to_string().replace('%', "%%");
    if text
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '\'')
    {
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        text
    }
}

/// The unit text. Hardened (issue 18): the filesystem is read-only except the stack (and
/// its backups), no privilege gain through setuid, a private /tmp.
pub fn render(spec: &Spec) -> String {
    let mut writable = vec![quote(&spec.stack_dir)];
    for path in &spec.extra_writable {
        if !path.starts_with(&spec.stack_dir) {
            writable.push(quote(path));
        }
    }
    let user = match &spec.user {
        Some(user) => format!("User={user}\nGroup={user}\n"),
        None => String::new(),
    };
    format!(
        "{MARKER}
[Unit]
Description=elior scheduled jobs (backups, certificate renewal) for {dir}
After=docker.service network-online.target
Wants=network-online.target

[Service]
Type=simple
{user}ExecStart={exe} schedule --dir {dir_arg}
Restart=on-failure
RestartSec=30
# SIGTERM goes to the scheduler alone: it lets a running backup finish, then exits.
KillMode=mixed
TimeoutStopSec=35min
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ReadWritePaths={writable}

[Install]
WantedBy=multi-user.target
",
        dir = spec.stack_dir.display().to_string().replace('%', "%%"),
        exe = quote(&spec.exe),
        dir_arg = quote(&spec.stack_dir),
        writable = writable.join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_hardened_unit() {
        let unit = render(&Spec {
            exe: BINARY.into(),
            stack_dir: "/srv/elior fitness".into(),
            user: Some(USER.into()),
            extra_writable: vec![
                "/srv/elior fitness/backups".into(),
                "/var/backups/elior".into(),
            ],
        });
        assert_eq!(
            unit,
            "# Written by elior (`elior provision`, `elior schedule install`); `elior provision --undo` removes it.
[Unit]
Description=elior scheduled jobs (backups, certificate renewal) for /srv/elior fitness
After=docker.service network-online.target
Wants=network-online.target

[Service]
Type=simple
User=elior
Group=elior
ExecStart=/usr/local/bin/elior schedule --dir \"/srv/elior fitness\"
Restart=on-failure
RestartSec=30
# SIGTERM goes to the scheduler alone: it lets a running backup finish, then exits.
KillMode=mixed
TimeoutStopSec=35min
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ReadWritePaths=\"/srv/elior fitness\" /var/backups/elior

[Install]
WantedBy=multi-user.target
"
        );
    }

    #[test]
    fn a_percent_sign_is_not_a_specifier() {
        let unit = render(&Spec {
            exe: BINARY.into(),
            stack_dir: "/srv/100%".into(),
            user: None,
            extra_writable: vec![],
        });
        assert!(unit.contains("ExecStart=/usr/local/bin/elior schedule --dir /srv/100%%\n"));
        assert!(unit.contains("ReadWritePaths=/srv/100%%\n"));
        assert!(!unit.contains("User="));
    }

    #[test]
    fn a_path_that_could_inject_a_directive_is_refused() {
        assert!(check_dir(Path::new("/srv/elior fitness")).is_ok());
        let err = check_dir(Path::new("/srv/x\nExecStartPre=/bin/sh")).unwrap_err();
        assert!(format!("{err}").contains("control character"), "{err}");
        assert!(check_dir(Path::new("srv")).is_err());
    }

    #[test]
    fn names_follow_systemd_escape_path() {
        // Expected values are `systemd-escape --path` output (systemd 252).
        assert_eq!(
            name(Path::new("/srv/elior")),
            "elior-schedule-srv-elior.service"
        );
        assert_eq!(
            escape_path(Path::new("/srv/elior-fit/a b/.x/ü")),
            "srv-elior\\x2dfit-a\\x20b-.x-\\xc3\\xbc"
        );
        assert_eq!(escape_path(Path::new("//srv//x/")), "srv-x");
        assert_eq!(escape_path(Path::new("/")), "-");
        assert_eq!(escape_path(Path::new("/.hidden")), "\\x2ehidden");
        assert_ne!(name(Path::new("/srv/a-b")), name(Path::new("/srv/a/b")));
        // Doctor passes `.`: the name is the working directory's, as install wrote it.
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(name(Path::new(".")), name(&cwd));
    }
}
