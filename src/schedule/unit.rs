//! The systemd service that keeps `elior schedule` running for a stack.
//!
//! Pure: renders the unit text; installing it is the CLI's job.

use std::path::Path;

pub const UNIT_NAME: &str = "elior-schedule.service";

/// Quotes a path for an `ExecStart=` line when it needs it.
fn quote(path: &Path) -> String {
    let text = path.display().to_string();
    if text
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        text
    }
}

/// The unit for the stack in `stack_dir`, running `exe`.
pub fn render(exe: &Path, stack_dir: &Path) -> String {
    format!(
        "# Written by `elior schedule install`; runs backups and certificate renewal on their schedules.
[Unit]
Description=elior scheduled jobs (backups, certificate renewal) for {dir}
After=docker.service network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={exe} schedule --dir {dir_arg}
Restart=on-failure
RestartSec=30
# SIGTERM goes to the scheduler alone: it lets a running backup finish, then exits.
KillMode=mixed
TimeoutStopSec=35min

[Install]
WantedBy=multi-user.target
",
        dir = stack_dir.display(),
        exe = quote(exe),
        dir_arg = quote(stack_dir),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_unit() {
        let unit = render(
            Path::new("/usr/local/bin/elior"),
            Path::new("/srv/elior fitness"),
        );
        assert_eq!(
            unit,
            "# Written by `elior schedule install`; runs backups and certificate renewal on their schedules.
[Unit]
Description=elior scheduled jobs (backups, certificate renewal) for /srv/elior fitness
After=docker.service network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=/usr/local/bin/elior schedule --dir \"/srv/elior fitness\"
Restart=on-failure
RestartSec=30
# SIGTERM goes to the scheduler alone: it lets a running backup finish, then exits.
KillMode=mixed
TimeoutStopSec=35min

[Install]
WantedBy=multi-user.target
"
        );
    }
}
