//! The firewall step: one nftables table, `inet elior` (IPv4 and IPv6), replaced in one
//! `nft -f` transaction and persisted by a small oneshot unit.
//!
//! Inbound: established traffic, loopback, ICMP, DHCP replies (v4 and v6: a cloud server
//! that boots with this table must still get its address), SSH (the ports sshd really listens on),
//! TCP 80/443 and UDP 443 (HTTP/3); everything else is dropped. Docker's own tables
//! (`ip filter`, `ip nat`, owned by iptables-nft) are never touched: a packet must pass
//! every base chain on a hook, so our table adds a filter without editing theirs. Published
//! container ports are DNAT-ed before the input hook and so bypass it; the `forward` chain
//! drops DNAT-ed connections whose original port is not 80/443, which is what Docker's
//! DOCKER-USER chain is for, without writing into a table iptables owns.
//!
//! The rendered table is written exactly as `nft list table inet elior` prints it, so the
//! live table and the wanted one compare as text, and `--dry-run` shows a real diff.
//! Persisted through `elior-firewall.service` rather than /etc/nftables.conf, whose stock
//! `flush ruleset` would wipe Docker's tables on a restart of nftables.service.
//!
//! Pure: rendering, sshd configuration parsing, the plan.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Action, Step, StepPlan, Target};

pub const TABLE: &str = "inet elior";
pub const RULES_FILE: &str = "/etc/elior/firewall.nft";
pub const UNIT_NAME: &str = "elior-firewall.service";
pub const UNIT_WANTED_BY: &str = "sysinit.target";
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// The table as it was before elior's first apply, for `--undo`.
pub const BEFORE_FILE: &str = "/var/lib/elior/firewall-before.json";
/// The web ports: TCP for HTTP and HTTPS, UDP 443 for HTTP/3.
pub const WEB_TCP: [u16; 2] = [80, 443];
pub const WEB_UDP: [u16; 1] = [443];

/// The SSH ports and where they were read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshPorts {
    pub ports: Vec<u16>,
    pub source: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Have {
    /// `nft` exists on this host.
    pub nft: bool,
    /// `nft list table inet elior`, None when the table does not exist.
    pub table: Option<String>,
    pub ssh: Option<SshPorts>,
    /// The server port of the SSH session running `elior provision` (SSH_CONNECTION).
    pub session_port: Option<u16>,
    pub rules_file: Option<String>,
    pub unit: Option<String>,
    pub unit_enabled: bool,
    /// The saved table from before elior's first apply: Some(None) means "there was none".
    pub before: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Want {
    pub tcp: Vec<u16>,
    pub udp: Vec<u16>,
    pub table: String,
}

fn ports(list: &[u16]) -> String {
    if list.len() == 1 {
        list[0].to_string()
    } else {
        let items: Vec<String> = list.iter().map(u16::to_string).collect();
        format!("{{ {} }}", items.join(", "))
    }
}

/// The table, byte for byte as `nft list table inet elior` prints it (nftables 1.0).
pub fn render_table(tcp: &[u16], udp: &[u16]) -> String {
    let mut forward = String::new();
    for port in WEB_TCP {
        forward.push_str(&format!(
            "\t\tct status dnat meta l4proto tcp ct original proto-dst {port} accept\n"
        ));
    }
    for port in WEB_UDP {
        forward.push_str(&format!(
            "\t\tct status dnat meta l4proto udp ct original proto-dst {port} accept\n"
        ));
    }
    format!(
        "table inet elior {{
\tchain input {{
\t\ttype filter hook input priority filter; policy drop;
\t\tct state established,related accept
\t\tct state invalid drop
\t\tiifname \"lo\" accept
\t\tmeta l4proto {{ icmp, ipv6-icmp }} accept
\t\tudp sport 67 udp dport 68 accept
\t\tudp sport 547 udp dport 546 accept
\t\ttcp dport {tcp} accept
\t\tudp dport {udp} accept
\t}}

\tchain forward {{
\t\ttype filter hook forward priority filter - 1; policy accept;
\t\tct state established,related accept
{forward}\t\tct status dnat drop
\t}}
}}
",
        tcp = ports(tcp),
        udp = ports(udp),
    )
}

/// The `nft -f` script that replaces the table in one transaction: `table` creates it
/// when missing, so `delete` never fails, and nft applies the three or none.
pub fn script(table: Option<&str>) -> String {
    format!(
        "table {TABLE}\ndelete table {TABLE}\n{}",
        table.unwrap_or("")
    )
}

/// The persisted rules file (loaded at boot by the unit).
pub fn rules_file(table: &str) -> String {
    format!(
        "#!/usr/sbin/nft -f\n# Written by `elior provision`; `elior provision --undo` removes it.\n{}",
        script(Some(table))
    )
}

pub fn unit() -> String {
    format!(
        "{marker}
[Unit]
Description=elior firewall (nftables table {TABLE})
DefaultDependencies=no
Before=network-pre.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f {RULES_FILE}

[Install]
WantedBy={UNIT_WANTED_BY}
",
        marker = crate::schedule::unit::MARKER
    )
}

fn unit_path() -> PathBuf {
    Path::new(UNIT_DIR).join(UNIT_NAME)
}

/// The ports in `sshd -T` output (`port 22`, `listenaddress 0.0.0.0:2222`).
pub fn parse_sshd_t(text: &str) -> Vec<u16> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("port"), Some(p)) => out.extend(p.parse::<u16>().ok()),
            (Some("listenaddress"), Some(a)) => out.extend(listen_port(a)),
            _ => {}
        }
    }
    out.into_iter().collect()
}

/// The ports in LISTEN state (`0A`) of /proc/net/tcp or tcp6 whose socket inode is in
/// `inodes` (the sockets a running sshd holds).
pub fn listening_ports(proc_net_tcp: &str, inodes: &[u64]) -> Vec<u16> {
    let mut out = BTreeSet::new();
    for line in proc_net_tcp.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != "0A" {
            continue;
        }
        let Ok(inode) = f[9].parse::<u64>() else {
            continue;
        };
        if !inodes.contains(&inode) {
            continue;
        }
        if let Some(port) = f[1]
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        {
            out.insert(port);
        }
    }
    out.into_iter().collect()
}

/// The port of `host:port` or `[v6]:port`; None without one.
fn listen_port(address: &str) -> Option<u16> {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once("]:")?.1.parse().ok();
    }
    if address.matches(':').count() == 1 {
        return address.split_once(':')?.1.parse().ok();
    }
    None
}

/// One sshd_config file's `Port`, `ListenAddress` and `Include` lines, up to the first
/// `Match` (ports cannot be set inside one). Returns (ports, includes).
pub fn parse_sshd_config(text: &str) -> (Vec<u16>, Vec<String>) {
    let mut ports = Vec::new();
    let mut includes = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line
            .split(|c: char| c.is_whitespace() || c == '=')
            .filter(|w| !w.is_empty());
        let Some(key) = words.next() else { continue };
        match key.to_ascii_lowercase().as_str() {
            "match" => break,
            "port" => ports.extend(words.next().and_then(|p| p.parse::<u16>().ok())),
            "listenaddress" => ports.extend(words.next().and_then(listen_port)),
            "include" => includes.extend(words.map(String::from)),
            _ => {}
        }
    }
    (ports, includes)
}

/// The plan that brings the firewall to `want`.
pub fn plan(have: &Have, target: &Target) -> StepPlan {
    let ssh = have.ssh.clone().unwrap_or(SshPorts {
        ports: vec![22],
        source: "no sshd configuration found, so sshd's default".into(),
    });
    let tcp: Vec<u16> = ssh
        .ports
        .iter()
        .copied()
        .chain(WEB_TCP)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let udp = WEB_UDP.to_vec();
    let table = render_table(&tcp, &udp);
    let want = Want {
        tcp: tcp.clone(),
        udp,
        table: table.clone(),
    };
    let mut plan = StepPlan::new(Step::Firewall, &want, have);
    plan.notes.push(format!(
        "SSH port{} {} (from {})",
        if ssh.ports.len() == 1 { "" } else { "s" },
        ssh.ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        ssh.source
    ));
    if let Some(port) = have.session_port {
        if !tcp.contains(&port) {
            plan.blocked = Some(format!(
                "this SSH session came in on port {port}, which the firewall would close (it allows {})\nset that port in sshd's configuration (Port {port}) and run elior provision again",
                ports(&tcp)
            ));
        }
    }
    if !have.nft {
        if target.live() {
            plan.actions.push(Action::AptInstall {
                packages: vec!["nftables".into()],
            });
        } else {
            plan.blocked = Some("nft is not installed\napt-get install nftables".into());
        }
    }
    let file = rules_file(&table);
    if have.rules_file.as_deref() != Some(file.as_str()) {
        plan.actions.push(Action::WriteFile {
            path: RULES_FILE.into(),
            mode: 0o644,
            content: file,
        });
    }
    let unit = unit();
    if have.unit.as_deref() != Some(unit.as_str()) {
        plan.actions.push(Action::WriteFile {
            path: unit_path(),
            mode: 0o644,
            content: unit,
        });
    }
    if !have.unit_enabled {
        plan.actions.push(Action::EnableUnit {
            name: UNIT_NAME.into(),
            wanted_by: UNIT_WANTED_BY.into(),
            start: false,
        });
    }
    // Last: the live rules change only once everything else of the step is in place.
    if have.table.as_deref() != Some(table.as_str()) {
        plan.actions.push(Action::NftApply {
            table,
            previous: have.table.clone(),
        });
    }
    plan
}

/// `--undo`: the table from before elior, and neither rules file nor unit.
pub fn plan_undo(have: &Have) -> StepPlan {
    let previous = match &have.before {
        Some(before) => before.clone(),
        None => None,
    };
    let mut plan = StepPlan::new(
        Step::Firewall,
        serde_json::json!({ "table": previous }),
        have,
    );
    if have.before.is_none() && have.table.is_some() {
        plan.notes.push(format!(
            "no record of the table before elior ({BEFORE_FILE}); deleting table {TABLE}"
        ));
    }
    if have.table != previous {
        plan.actions.push(Action::NftRestore {
            previous: previous.clone(),
            current: have.table.clone(),
        });
    }
    if have.unit_enabled {
        plan.actions.push(Action::DisableUnit {
            name: UNIT_NAME.into(),
            wanted_by: UNIT_WANTED_BY.into(),
        });
    }
    if have.unit.is_some() {
        plan.actions.push(Action::RemoveFile { path: unit_path() });
    }
    if have.rules_file.is_some() {
        plan.actions.push(Action::RemoveFile {
            path: RULES_FILE.into(),
        });
    }
    if have.before.is_some() {
        plan.actions.push(Action::RemoveFile {
            path: BEFORE_FILE.into(),
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_table_as_nft_lists_it() {
        assert_eq!(
            render_table(&[80, 443, 2222], &[443]),
            "table inet elior {
\tchain input {
\t\ttype filter hook input priority filter; policy drop;
\t\tct state established,related accept
\t\tct state invalid drop
\t\tiifname \"lo\" accept
\t\tmeta l4proto { icmp, ipv6-icmp } accept
\t\tudp sport 67 udp dport 68 accept
\t\tudp sport 547 udp dport 546 accept
\t\ttcp dport { 80, 443, 2222 } accept
\t\tudp dport 443 accept
\t}

\tchain forward {
\t\ttype filter hook forward priority filter - 1; policy accept;
\t\tct state established,related accept
\t\tct status dnat meta l4proto tcp ct original proto-dst 80 accept
\t\tct status dnat meta l4proto tcp ct original proto-dst 443 accept
\t\tct status dnat meta l4proto udp ct original proto-dst 443 accept
\t\tct status dnat drop
\t}
}
"
        );
    }

    #[test]
    fn reads_ssh_ports_from_sshd() {
        assert_eq!(
            parse_sshd_t("port 2222\nport 22\nlistenaddress [::]:2222\nlistenaddress 0.0.0.0:2200\npermitrootlogin no\n"),
            [22, 2200, 2222]
        );
        let (ports, includes) = parse_sshd_config(
            "Include /etc/ssh/sshd_config.d/*.conf\n# Port 22\nPort 2222 # moved\nListenAddress 10.0.0.1\nListenAddress=[::1]:2233\nMatch User x\n  Port 9\n",
        );
        assert_eq!(ports, [2222, 2233]);
        assert_eq!(includes, ["/etc/ssh/sshd_config.d/*.conf"]);
    }

    #[test]
    fn reads_the_ports_a_running_sshd_listens_on() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0 100 0 0 10 0\n   2: 0100007F:08AE 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n";
        assert_eq!(listening_ports(tcp, &[4242]), [2222]);
        assert_eq!(listening_ports(tcp, &[1]), Vec::<u16>::new());
    }

    fn have_live_nothing() -> Have {
        Have {
            nft: true,
            ssh: Some(SshPorts {
                ports: vec![2222],
                source: "sshd -T".into(),
            }),
            ..Default::default()
        }
    }

    /// A host where elior's firewall allowing `ports` (and UDP 443) is in place.
    fn have_applied(ports: &[u16]) -> Have {
        let table = render_table(ports, &[443]);
        Have {
            rules_file: Some(rules_file(&table)),
            table: Some(table),
            unit: Some(unit()),
            unit_enabled: true,
            before: Some(None),
            ..have_live_nothing()
        }
    }

    #[test]
    fn a_bare_host_gets_the_file_the_unit_and_then_the_rules() {
        let plan = plan(&have_live_nothing(), &Target::this_host());
        let kinds: Vec<String> = plan.actions.iter().map(Action::describe).collect();
        assert_eq!(
            kinds,
            [
                "write /etc/elior/firewall.nft (0644)",
                "write /etc/systemd/system/elior-firewall.service (0644)",
                "enable elior-firewall.service",
                "apply nftables table inet elior (nft -f)"
            ]
        );
        assert_eq!(plan.notes, ["SSH port 2222 (from sshd -T)"]);
        assert_eq!(plan.blocked, None);
        let Action::NftApply { table, previous } = &plan.actions[3] else {
            panic!()
        };
        assert_eq!(previous, &None);
        assert!(table.contains("tcp dport { 80, 443, 2222 } accept"));
    }

    #[test]
    fn an_applied_firewall_plans_nothing() {
        let have = have_applied(&[80, 443, 2222]);
        assert_eq!(plan(&have, &Target::this_host()).actions, []);
    }

    #[test]
    fn a_session_on_a_port_sshd_does_not_list_blocks_the_step() {
        let have = Have {
            session_port: Some(2200),
            ..have_live_nothing()
        };
        let plan = plan(&have, &Target::this_host());
        assert_eq!(
            plan.blocked.unwrap(),
            "this SSH session came in on port 2200, which the firewall would close (it allows { 80, 443, 2222 })\nset that port in sshd's configuration (Port 2200) and run elior provision again"
        );
    }

    #[test]
    fn undo_puts_the_previous_table_back() {
        let have = have_applied(&[22, 80, 443]);
        let plan = plan_undo(&have);
        let kinds: Vec<String> = plan.actions.iter().map(Action::describe).collect();
        assert_eq!(
            kinds,
            [
                "delete nftables table inet elior (there was none before elior)",
                "disable elior-firewall.service",
                "remove /etc/systemd/system/elior-firewall.service",
                "remove /etc/elior/firewall.nft",
                "remove /var/lib/elior/firewall-before.json"
            ]
        );
        assert_eq!(plan_undo(&Have::default()).actions, []);
    }
}
