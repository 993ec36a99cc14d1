//! Request metrics in the Prometheus text format (0.0.4), written by prometheus-client
//! (issue 20): counts by route and status, a latency histogram by route, the database
//! pool's gauges, uptime and build info. Routes are the matched templates
//! (`/api/users/{id}`), never raw paths, so the label set stays bounded whatever clients
//! request.
//!
//! The names, labels, help texts and buckets are those dashboards were built on before the
//! crate wrote them; `tests/it/serve.rs` scrapes a running server to keep them so.
//!
//! [`Metrics::record`] runs on every request, `/health` probes included, so it never looks
//! a series up in a family (a lock and a hash of the labels): each route keeps, per method,
//! handles to its own series, made on first use. Recording is then a few atomic loads, one
//! atomic increment and the histogram's own lock.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::connection::ConnectionCounts;
use crate::db::PoolStats;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in seconds (`+Inf` is implied).
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

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

/// How many statuses of one route and method have a cached counter; a route answering
/// more (rare: each status is a distinct outcome) counts the rest through the family.
const STATUS_SLOTS: usize = 8;

/// The labels of a latency histogram, in the order they are written.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: Arc<str>,
}

/// The labels of a request counter, in the order they are written.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    method: &'static str,
    route: Arc<str>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    revision: &'static str,
}

/// One route and method's series, made on its first request: a series nobody called is
/// not listed.
#[derive(Default)]
struct Series {
    duration: OnceLock<Histogram>,
    /// The counters of the statuses answered so far, in the order first seen.
    by_status: [OnceLock<(u16, Counter)>; STATUS_SLOTS],
}

/// One route's label and its series, one per method.
struct Route {
    label: Arc<str>,
    by_method: [Series; METHOD_SLOTS],
}

impl Route {
    fn new(label: &str) -> Route {
        Route {
            label: label.into(),
            by_method: Default::default(),
        }
    }
}

/// A route as [`Metrics::route`] found it: an index, so recording a request neither hashes
/// nor compares its label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteId(usize);

type DurationFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Stats by route template. Every route is known from the start (the router's own
/// templates, plus `unmatched`), so the set of labels is fixed whatever clients request.
pub struct Metrics {
    templates: matchit::Router<RouteId>,
    routes: Vec<Route>,
    registry: Registry,
    requests: Family<StatusLabels, Counter>,
    durations: DurationFamily,
    uptime: Gauge<f64, AtomicU64>,
    pool_connections: Family<PoolLabels, Gauge>,
    pool_max: Gauge,
    queued_writes: Gauge,
    waiting_requests: Gauge,
    max_concurrent_requests: Gauge,
    /// Kept by the accept loop ([`super::connection`]), read at each scrape.
    pub connections: Arc<ConnectionCounts>,
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
                .insert(template.as_str(), RouteId(routes.len()))
                .is_ok()
            {
                routes.push(Route::new(&template));
            }
        }
        routes.push(Route::new(UNMATCHED));

        // Registered in the order they are written. The crate ends each help text with a
        // period, and a counter's name with `_total`.
        let mut registry = Registry::default();
        registry.register(
            "elior_build",
            "Version and git revision of this elior",
            Info::new(BuildLabels {
                version: crate::VERSION,
                revision: crate::GIT_REVISION,
            }),
        );
        let uptime = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "elior_uptime_seconds",
            "Seconds since the server started",
            uptime.clone(),
        );
        let pool_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "elior_db_pool_connections",
            "Database pool connections by state",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "elior_db_pool_max_connections",
            "Database pool capacity",
            pool_max.clone(),
        );
        let queued_writes = Gauge::default();
        registry.register(
            "elior_db_queued_writes",
            "Writes waiting for the SQLite writer",
            queued_writes.clone(),
        );
        let waiting_requests = Gauge::default();
        registry.register(
            "elior_http_waiting_requests",
            "Requests waiting for a place to be handled (MAX_CONCURRENT_REQUESTS)",
            waiting_requests.clone(),
        );
        let max_concurrent_requests = Gauge::default();
        registry.register(
            "elior_http_max_concurrent_requests",
            "Requests handled at once (MAX_CONCURRENT_REQUESTS; 0: no limit)",
            max_concurrent_requests.clone(),
        );
        let requests = Family::<StatusLabels, Counter>::default();
        registry.register(
            "elior_http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let durations: DurationFamily = Family::new_with_constructor(|| Histogram::new(BUCKETS));
        registry.register(
            "elior_http_request_duration_seconds",
            "Time to produce the response headers",
            durations.clone(),
        );
        let connections = Arc::new(ConnectionCounts::default());
        registry.register_collector(Box::new(ConnectionsCollector(connections.clone())));
        // process_* (memory, CPU, descriptors), read at each scrape.
        registry.register_collector(Box::new(super::process::ProcessCollector));

        Metrics {
            templates: table,
            routes,
            registry,
            requests,
            durations,
            uptime,
            pool_connections,
            pool_max,
            queued_writes,
            waiting_requests,
            max_concurrent_requests,
            connections,
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
        let route = &self.routes[route.0];
        let slot = method_slot(method);
        let series = &route.by_method[slot];
        let labels = || RouteLabels {
            method: method_label(slot),
            route: route.label.clone(),
        };
        series
            .duration
            .get_or_init(|| self.durations.get_or_create_owned(&labels()))
            .observe(elapsed.as_secs_f64());

        let status_labels = || {
            let RouteLabels { method, route } = labels();
            StatusLabels {
                method,
                route,
                status,
            }
        };
        for cached in &series.by_status {
            // An empty slot is taken for this status, unless another request's status
            // took it first: then the search goes on.
            let (seen, counter) = cached
                .get_or_init(|| (status, self.requests.get_or_create_owned(&status_labels())));
            if *seen == status {
                counter.inc();
                return;
            }
        }
        self.requests.get_or_create(&status_labels()).inc();
    }

    /// The exposition: the request series, and the pool and uptime as they are now.
    pub fn render(
        &self,
        pool: PoolStats,
        admission: &super::admission::Admission,
        uptime: Duration,
    ) -> String {
        self.uptime.set(uptime.as_secs_f64());
        for (state, n) in [("idle", pool.idle), ("in_use", pool.in_use)] {
            self.pool_connections
                .get_or_create(&PoolLabels { state })
                .set(n.into());
        }
        self.pool_max.set(pool.max_size.into());
        self.queued_writes
            .set(i64::try_from(pool.queued_writes).unwrap_or(i64::MAX));
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.waiting_requests.set(gauge(admission.waiting()));
        self.max_concurrent_requests.set(gauge(admission.limit()));
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

/// The connection series, read from the accept loop's counts at each scrape.
#[derive(Debug)]
struct ConnectionsCollector(Arc<ConnectionCounts>);

impl Collector for ConnectionsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let counts = &self.0;
        for (name, help, value) in [
            (
                "elior_http_connections",
                "Connections open now, HTTP and WebSocket",
                counts.open.load(Relaxed),
            ),
            (
                "elior_http_max_connections",
                "Connections allowed open at once (MAX_CONNECTIONS within the open-file limit)",
                counts.max.load(Relaxed),
            ),
        ] {
            encode_const(&mut encoder, name, help, ConstGauge::new(value as i64))?;
        }
        encode_const(
            &mut encoder,
            "elior_http_refused_connections",
            "Connections answered 503 at the connection limit",
            ConstCounter::new(counts.refused.load(Relaxed)),
        )
    }
}

/// Writes one series of a [`Collector`]'s scrape, its value as it is now: a
/// [`ConstGauge`], or a [`ConstCounter`] (`name` without `_total`, which the encoder adds).
pub fn encode_const(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::super::admission::Admission;
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
        let text = m.render(pool(), &Admission::new(Some(8)), Duration::from_secs(5));
        assert!(text.contains(
            "elior_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "elior_http_requests_total{method=\"GET\",route=\"/health\",status=\"503\"} 1"
        ));
        assert!(text.contains("route=\"/health\",le=\"0.001\"} 1\n"));
        assert!(text.contains("route=\"/health\",le=\"0.05\"} 2\n"));
        assert!(text.contains("route=\"/health\",le=\"10\"} 2\n"));
        assert!(text.contains("route=\"/health\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("elior_db_pool_connections{state=\"in_use\"} 1"));
        assert!(text.contains("elior_db_queued_writes 3\n"));
        assert!(text.contains("elior_http_waiting_requests 0\n"), "{text}");
        assert!(
            text.contains("elior_http_max_concurrent_requests 8\n"),
            "{text}"
        );
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
        let text = m.render(pool(), &Admission::new(Some(8)), Duration::from_secs(1));
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
        let text = m.render(pool(), &Admission::new(Some(8)), Duration::from_secs(1));
        assert!(text.contains(
            "elior_http_requests_total{method=\"OTHER\",route=\"unmatched\",status=\"405\"} 2"
        ));
        assert!(text.contains(
            "elior_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"405\"} 1"
        ));
        assert!(!text.contains("BREW"));
    }

    #[test]
    fn statuses_past_the_cached_slots_are_still_counted() {
        let m = Metrics::new(["/health"]);
        let health = m.route("/health");
        let statuses: Vec<u16> = (200..200 + STATUS_SLOTS as u16 + 3).collect();
        for _ in 0..2 {
            for &status in &statuses {
                m.record(&Method::GET, health, status, Duration::ZERO);
            }
        }
        let text = m.render(pool(), &Admission::new(Some(8)), Duration::from_secs(1));
        for status in statuses {
            let line = format!(
                "elior_http_requests_total{{method=\"GET\",route=\"/health\",status=\"{status}\"}} 2\n"
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains("route=\"/health\",le=\"+Inf\"} 22\n"));
    }
}
