//! Request metrics in Prometheus text format: counts by route and status, and a latency
//! histogram by route. Routes are the matched templates (`/api/users/{id}`), never raw
//! paths, so the label set stays bounded whatever clients request.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::Method;

use crate::db::PoolStats;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default, Clone)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

/// The methods counted under their own name; any other (an extension method a client
/// made up) is counted as `OTHER`, so clients cannot grow the label set.
const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];
const METHOD_SLOTS: usize = METHODS.len() + 1;

fn method_slot(method: &Method) -> usize {
    METHODS
        .iter()
        .position(|m| m == method)
        .unwrap_or(METHODS.len())
}

fn method_label(slot: usize) -> &'static str {
    METHODS.get(slot).map_or("OTHER", Method::as_str)
}

/// The label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// One route's label and its stats, one slot per method.
struct Route {
    label: Box<str>,
    stats: Mutex<[RouteStats; METHOD_SLOTS]>,
}

impl Route {
    fn new(label: Box<str>) -> Route {
        Route {
            label,
            stats: Mutex::default(),
        }
    }
}

/// A route as [`Metrics::route`] found it: an index, so recording a request neither hashes
/// nor compares its label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteId(usize);

/// Stats by route template. Every route is known from the start (the router's own
/// templates, plus `unmatched`), so the set of labels is fixed whatever clients request,
/// and each route has its own lock: `/health` probes never wait on the API's traffic.
pub struct Metrics {
    templates: matchit::Router<RouteId>,
    routes: Vec<Route>,
}

impl Metrics {
    /// `templates` are the router's paths (`/api/users/{id}`), in matchit's syntax, which
    /// is axum's.
    pub fn new<T: Into<String>>(templates: impl IntoIterator<Item = T>) -> Metrics {
        let mut table = matchit::Router::new();
        let mut routes = Vec::new();
        for template in templates {
            let template = template.into();
            // The router accepted these same paths; a duplicate keeps its first id.
            if table
                .insert(template.clone(), RouteId(routes.len()))
                .is_ok()
            {
                routes.push(Route::new(template.into()));
            }
        }
        routes.push(Route::new(UNMATCHED.into()));
        Metrics {
            templates: table,
            routes,
        }
    }

    /// The route `path` is counted under: its template, or `unmatched`.
    pub fn route(&self, path: &str) -> RouteId {
        self.templates
            .at(path)
            .map_or(RouteId(self.routes.len() - 1), |m| *m.value)
    }

    /// The label `route` is counted under.
    pub fn label(&self, route: RouteId) -> &str {
        &self.routes[route.0].label
    }

    pub fn record(&self, method: &Method, route: RouteId, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut by_method = self.routes[route.0]
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner());
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
        let _ = writeln!(
            out,
            "# HELP elior_db_queued_writes Writes waiting for the SQLite writer."
        );
        let _ = writeln!(out, "# TYPE elior_db_queued_writes gauge");
        let _ = writeln!(out, "elior_db_queued_writes {}", pool.queued_writes);

        // A copy of each route's stats, sorted, so the exposition is stable from one scrape
        // to the next.
        let mut routes: BTreeMap<(&str, &str), RouteStats> = BTreeMap::new();
        for route in &self.routes {
            let by_method = route
                .stats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for (slot, stats) in by_method.into_iter().enumerate() {
                if stats.count > 0 {
                    routes.insert((method_label(slot), &route.label), stats);
                }
            }
        }
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
            queued_writes: 3,
        }
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::new(["/health"]);
        let health = m.route("/health");
        m.record(&Method::GET, health, 200, Duration::from_micros(500));
        m.record(&Method::GET, health, 200, Duration::from_millis(30));
        m.record(&Method::GET, health, 503, Duration::from_secs(20));
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
    fn paths_are_counted_under_their_template_or_unmatched() {
        let m = Metrics::new(["/api/users/{id}", "/health"]);
        assert_eq!(m.label(m.route("/api/users/7")), "/api/users/{id}");
        assert_eq!(m.label(m.route("/health")), "/health");
        for path in ["/api/users/7/x", "/wp-admin", "/"] {
            assert_eq!(m.label(m.route(path)), "unmatched", "{path}");
        }
        m.record(&Method::GET, m.route("/api/users/1"), 200, Duration::ZERO);
        m.record(&Method::GET, m.route("/api/users/2"), 200, Duration::ZERO);
        let text = m.render(pool(), Duration::from_secs(1), "1.0", "abc");
        assert!(text.contains(
            "elior_http_requests_total{method=\"GET\",route=\"/api/users/{id}\",status=\"200\"} 2"
        ));
        // Routes nobody called are not listed.
        assert!(!text.contains("route=\"/health\""));
    }

    #[test]
    fn made_up_methods_share_one_label() {
        let m = Metrics::new(["/health"]);
        let unmatched = m.route("/nowhere");
        for method in ["BREW", "WHEN", "GET"] {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            m.record(&method, unmatched, 405, Duration::from_millis(1));
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
