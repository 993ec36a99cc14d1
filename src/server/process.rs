//! The process's own figures in `/metrics`, under the names every Prometheus client
//! library exports them (`process_*`), so the usual dashboards and alerts work unchanged:
//! resident and virtual memory, CPU seconds, open and allowed file descriptors (each
//! connection holds one, see `MAX_CONNECTIONS`), and the start time. Read from `/proc`
//! at each scrape; where it cannot be read (not Linux), the series are left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::metrics::encode_const;

/// Encodes the `process_*` series at each scrape.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(now) = Figures::read() else {
            return Ok(());
        };
        encode_const(
            &mut encoder,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            ConstCounter::new(now.stat.cpu_seconds),
        )?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                now.stat.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                now.stat.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                now.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                now.max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                now.stat.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            encode_const(&mut encoder, name, help, ConstGauge::new(value))?;
        }
        Ok(())
    }
}

/// One reading of the process's figures.
#[derive(Debug)]
struct Figures {
    stat: Stat,
    open_fds: f64,
    max_fds: f64,
}

impl Figures {
    fn read() -> Option<Figures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let stat = from_stat(
            &stat,
            rustix::param::clock_ticks_per_second() as f64,
            rustix::param::page_size() as f64,
            boot_time()?,
        )?;
        // read_dir's own descriptor is open while it counts.
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()?
            .count()
            .saturating_sub(1);
        let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map_or(f64::INFINITY, |n| n as f64);
        Some(Figures {
            stat,
            open_fds: open_fds as f64,
            max_fds,
        })
    }
}

/// What `/proc/self/stat` says of the process.
#[derive(Debug, PartialEq)]
struct Stat {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time_seconds: f64,
}

/// The figures in `/proc/self/stat` (proc(5)). The command name, in parentheses, may
/// itself hold spaces and parentheses: the fields are counted from the last `)`.
fn from_stat(stat: &str, ticks_per_second: f64, page_size: f64, boot_time: f64) -> Option<Stat> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name; proc(5) numbers fields from 1.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime) = (field(14)?, field(15)?);
    Some(Stat {
        cpu_seconds: (utime + stime) / ticks_per_second,
        resident_bytes: field(24)? * page_size,
        virtual_bytes: field(23)?,
        start_time_seconds: boot_time + field(22)? / ticks_per_second,
    })
}

/// Resident memory that is not file-backed: the heap, stacks and other anonymous
/// mappings, in bytes (`/proc/self/statm`: resident pages less shared ones).
pub fn anonymous_resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut pages = statm.split_whitespace().skip(1).map(str::parse::<usize>);
    let (resident, shared) = (pages.next()?.ok()?, pages.next()?.ok()?);
    Some(resident.saturating_sub(shared) * rustix::param::page_size())
}

/// The boot time, in seconds since the epoch, read once: it does not change.
fn boot_time() -> Option<f64> {
    static BOOT_TIME: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *BOOT_TIME.get_or_init(|| btime(&std::fs::read_to_string("/proc/stat").ok()?))
}

/// `btime` in `/proc/stat`: the boot time, in seconds since the epoch.
fn btime(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis, as a process may name itself.
        let stat = "4242 (eli) or (x) S 1 4242 4242 0 -1 4194560 2290 0 0 0 \
                    150 50 0 0 20 0 14 0 3000 123456789 5120 18446744073709551615";
        let figures = from_stat(stat, 100.0, 4096.0, 1_700_000_000.0).unwrap();
        assert_eq!(
            figures,
            Stat {
                cpu_seconds: 2.0,
                resident_bytes: 5120.0 * 4096.0,
                virtual_bytes: 123_456_789.0,
                start_time_seconds: 1_700_000_030.0,
            }
        );
    }

    #[test]
    fn a_truncated_stat_reads_as_nothing() {
        assert_eq!(from_stat("4242 (elior) S 1 2 3", 100.0, 4096.0, 0.0), None);
        assert_eq!(from_stat("no name at all", 100.0, 4096.0, 0.0), None);
    }

    #[test]
    fn boot_time_comes_from_btime() {
        let proc_stat = "cpu  1 2 3 4\nintr 5\nbtime 1765000000\nprocesses 7\n";
        assert_eq!(btime(proc_stat), Some(1_765_000_000.0));
        assert_eq!(btime("cpu 1 2 3\n"), None);
    }

    /// This test process: its own figures are all there and plausible.
    #[test]
    fn this_process_reads_plausibly() {
        let figures = Figures::read().unwrap();
        let stat = &figures.stat;
        assert!(stat.resident_bytes > 1e6, "{figures:?}");
        assert!(stat.virtual_bytes >= stat.resident_bytes, "{figures:?}");
        assert!(
            figures.open_fds >= 3.0 && figures.open_fds <= figures.max_fds,
            "{figures:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            stat.start_time_seconds <= now + 1.0 && stat.start_time_seconds > now - 3600.0,
            "{figures:?}, now {now}"
        );
    }
}
