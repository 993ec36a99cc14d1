//! Processes, from /proc: their command lines, and who listens on a TCP port the way
//! `netstat -tlnp` finds out (the listening sockets of /proc/net/tcp and tcp6 give an
//! inode, and the process holding that inode is the one whose /proc/PID/fd has a
//! `socket:[INODE]` link). Only reads /proc; needs root to see other users' processes.

use std::collections::BTreeSet;
use std::fs;

use super::facts::Listener;

/// TCP state 0A is LISTEN (include/net/tcp_states.h).
const LISTEN: &str = "0A";

/// The socket inodes listening on `port` in a /proc/net/tcp(6) table.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?.parse::<u64>().ok()?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (*state == LISTEN && local_port == port && inode != 0).then_some(inode)
        })
        .collect()
}

/// The processes listening on `port` on this host's network namespace.
pub fn listeners(port: u16) -> std::io::Result<Vec<Listener>> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for pid in pids()? {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|target| {
                target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse::<u64>().ok())
                    .is_some_and(|inode| inodes.contains(&inode))
            })
        });
        if holds {
            found.push(describe(pid));
        }
    }
    Ok(found)
}

/// The PIDs in /proc.
pub fn pids() -> std::io::Result<Vec<u32>> {
    Ok(fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect())
}

/// The arguments a process was started with (empty when it is gone or unreadable).
pub fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// PID, `comm` name and command line of a process.
pub fn describe(pid: u32) -> Listener {
    let base = format!("/proc/{pid}");
    let name = fs::read_to_string(format!("{base}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let command = cmdline(pid).join(" ");
    Listener {
        pid,
        command: if command.is_empty() {
            name.clone()
        } else {
            command
        },
        name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listeners_by_port_in_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:0050 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 20 4 30 10 -1\n\
   2: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31338 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 80), vec![31337]);
        assert_eq!(listening_inodes(table, 443), vec![31338]);
        assert!(listening_inodes(table, 8080).is_empty());
        let v6 = "header\n   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0 100 0 0 10 0\n";
        assert_eq!(listening_inodes(v6, 80), vec![999]);
    }

    #[test]
    fn finds_this_test_as_the_holder_of_its_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let found = listeners(port).unwrap();
        assert!(
            found.iter().any(|l| l.pid == std::process::id()),
            "{found:?}"
        );
    }
}
