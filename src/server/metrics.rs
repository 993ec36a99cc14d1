//! Request metrics in Prometheus text format: counts by route and status, and a latency
//! histogram by route. Routes are the matched templates (`/api/users/{id}`), never raw
//! paths, so the label set stays bounded whatever clients request.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use crate::db::PoolStats;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

/// The methods counted under their own name; any other (an extension method a client
/// made up) is counted as `OTHER`, so clients cannot grow the label set.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
];

fn method_slot(method: &str) -> usize {
    METHODS[..METHODS.len() - 1]
        .iter()
        .position(|m| *m == method)
        .unwrap_or(METHODS.len() - 1)
}

/// Stats by route template, one slot per method. The hot path looks up with a borrowed
/// `&str` and allocates nothing once a route has been seen.
#[derive(Default)]
pub struct Metrics {
    routes: Mutex<HashMap<String, [RouteStats; METHODS.len()], BuildHasherDefault<Fnv1a>>>,
}

/// FNV-1a. The keys are the router's own route templates (or `unmatched`), never client
/// text, so SipHash's defence against chosen keys buys nothing here, and hashing the key
/// twice a request with it was a visible part of `/health`'s cost.
#[derive(Default)]
struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

impl Metrics {
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if !routes.contains_key(route) {
            routes.insert(route.to_string(), Default::default());
        }
        let by_method = routes.get_mut(route).expect("inserted above");
        let stats = &mut by_method[method_slot(method)];
        *stats.by_status.entry(status).or_default() += 1;
        if let Some(i) = BUCKETS.iter().position(|&le| seconds <= le) {
            stats.buckets[i] += 1;
        }
        stats.count += 1;
        stats.sum_seconds += seconds;
    }

    pub fn render(
        &self,
        pool: PoolStats,
        uptime: Duration,
        version: &str,
        revision: &str,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP elior_build_info Version and git revision of this elior."
        );
        let _ = writeln!(out, "# TYPE elior_build_info gauge");
        let _ = writeln!(
            out,
            "elior_build_info{{version=\"{version}\",revision=\"{revision}\"}} 1"
        );
        let _ = writeln!(
            out,
            "# HELP elior_uptime_seconds Seconds since the server started."
        );
        let _ = writeln!(out, "# TYPE elior_uptime_seconds gauge");
        let _ = writeln!(out, "elior_uptime_seconds {:.3}", uptime.as_secs_f64());
        let _ = writeln!(
            out,
            "# HELP elior_db_pool_connections Database pool connections by state."
        );
        let _ = writeln!(out, "# TYPE elior_db_pool_connections gauge");
        let _ = writeln!(
            out,
            "elior_db_pool_connections{{state=\"idle\"}} {}",
            pool.idle
        );
        let _ = writeln!(
            out,
            "elior_db_pool_connections{{state=\"in_use\"}} {}",
            pool.in_use
        );
        let _ = writeln!(
            out,
            "# HELP elior_db_pool_max_connections Database pool capacity."
        );
        let _ = writeln!(out, "# TYPE elior_db_pool_max_connections gauge");
        let _ = writeln!(out, "elior_db_pool_max_connections {}", pool.max_size);

        let guard = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        // Sorted, so the exposition is stable from one scrape to the next.
        let routes: BTreeMap<(&str, &str), &RouteStats> = guard
            .iter()
            .flat_map(|(route, by_method)| {
                METHODS
                    .iter()
                    .zip(by_method)
                    .filter(|(_, stats)| stats.count > 0)
                    .map(move |(method, stats)| ((*method, route.as_str()), stats))
            })
            .collect();
        let _ = writeln!(
            out,
            "# HELP elior_http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE elior_http_requests_total counter");
        for ((method, route), stats) in routes.iter() {
            for (status, n) in &stats.by_status {
                let _ = writeln!(
                    out,
                    "elior_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP elior_http_request_duration_seconds Time to produce the response headers."
        );
        let _ = writeln!(out, "# TYPE elior_http_request_duration_seconds histogram");
        for ((method, route), stats) in routes.iter() {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(stats.buckets) {
                cumulative += n;
                let _ = writeln!(out, "elior_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(
                out,
                "elior_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                stats.count
            );
            let _ = writeln!(
                out,
                "elior_http_request_duration_seconds_sum{{{labels}}} {:.6}",
                stats.sum_seconds
            );
            let _ = writeln!(
                out,
                "elior_http_request_duration_seconds_count{{{labels}}} {}",
                stats.count
            );
        }
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> PoolStats {
        PoolStats {
            size: 2,
            max_size: 20,
            idle: 1,
            in_use: 1,
        }
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.record("GET", "/health", 200, Duration::from_micros(500));
        m.record("GET", "/health", 200, Duration::from_millis(30));
        m.record("GET", "/health", 503, Duration::from_secs(20));
        let text = m.render(pool(), Duration::from_secs(5), "1.0", "abc");
        assert!(text.contains(
            "elior_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "elior_http_requests_total{method=\"GET\",route=\"/health\",status=\"503\"} 1"
        ));
        assert!(text.contains("route=\"/health\",le=\"0.001\"} 1\n"));
        assert!(text.contains("route=\"/health\",le=\"0.05\"} 2\n"));
        assert!(text.contains("route=\"/health\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("elior_db_pool_connections{state=\"in_use\"} 1"));
    }

    #[test]
    fn made_up_methods_share_one_label() {
        let m = Metrics::default();
        for method in ["BREW", "WHEN", "GET"] {
            m.record(method, "unmatched", 405, Duration::from_millis(1));
        }
        let text = m.render(pool(), Duration::from_secs(1), "1.0", "abc");
        assert!(text.contains(
            "elior_http_requests_total{method=\"OTHER\",route=\"unmatched\",status=\"405\"} 2"
        ));
        assert!(text.contains(
            "elior_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"405\"} 1"
        ));
        assert!(!text.contains("BREW"));
    }
}
