//! Reading what `/metrics` exposes: the Prometheus text format checked line by line, and
//! each sample's value.

/// A scrape as [`check_exposition`] read it.
pub struct Scrape {
    /// Each family's name and type, in the order written.
    pub types: Vec<(String, String)>,
    /// Each sample's value by its name and labels as written (`name{a="1",b="2"}`).
    pub samples: std::collections::BTreeMap<String, f64>,
}

impl Scrape {
    pub fn value(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }
}

/// One histogram series as [`check_exposition`] reads it.
#[derive(Default)]
struct HistogramSeries {
    /// Upper bounds and cumulative counts, in the order written.
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: bool,
}

/// Reads a Prometheus text exposition (format 0.0.4) and panics on a line that breaks its
/// rules: every family has `# HELP`, then `# TYPE`, then its samples, together; names and
/// label names are well formed; no series twice; a counter's name ends in `_total`; each
/// histogram series has increasing `le` buckets whose counts grow, ending in `+Inf`
/// equal to its `_count`, and a `_sum`.
pub fn check_exposition(text: &str) -> Scrape {
    let name_ok = |name: &str, colon: bool| {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    };
    let mut scrape = Scrape {
        types: Vec::new(),
        samples: Default::default(),
    };
    // Histogram series: labels without `le` -> (bounds and counts, _count, _sum seen).
    let mut histograms: std::collections::BTreeMap<String, HistogramSeries> = Default::default();
    let mut lines = text.lines().peekable();
    assert!(text.ends_with('\n'), "the text ends with a newline");
    let mut family: Option<(String, String)> = None;
    while let Some(line) = lines.next() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, doc) = help
                .split_once(' ')
                .unwrap_or_else(|| panic!("no help text: {line}"));
            assert!(name_ok(name, true) && !doc.trim().is_empty(), "{line}");
            assert!(
                scrape.types.iter().all(|(seen, _)| seen != name),
                "family {name} written twice"
            );
            let type_line = lines.next().unwrap_or_default();
            let kind = type_line
                .strip_prefix(&format!("# TYPE {name} "))
                .unwrap_or_else(|| panic!("HELP of {name} not followed by its TYPE: {type_line}"));
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{type_line}"
            );
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} does not end in _total"
                );
            }
            scrape.types.push((name.into(), kind.into()));
            family = Some((name.into(), kind.into()));
            continue;
        }
        assert!(!line.starts_with('#'), "a comment that is no HELP: {line}");
        let (name, kind) = family
            .as_ref()
            .unwrap_or_else(|| panic!("sample before a TYPE: {line}"));
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("not a number: {line}")),
        };
        let (sample, labels) = match series.split_once('{') {
            Some((sample, rest)) => (
                sample,
                rest.strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}")),
            ),
            None => (series, ""),
        };
        // Labels: name="value" pairs, values with \\, \" and \n escaped.
        let mut pairs = Vec::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (label, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
            assert!(name_ok(label, false), "label name {label:?}: {line}");
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        other => panic!("bad escape {other:?}: {line}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value: {line}"),
                }
            };
            assert!(
                pairs.iter().all(|(l, _)| l != &label),
                "label {label} twice: {line}"
            );
            pairs.push((label, value));
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
        assert!(
            scrape.samples.insert(series.to_string(), value).is_none(),
            "series written twice: {series}"
        );
        if kind != "histogram" {
            assert_eq!(sample, name, "sample outside its family: {line}");
            continue;
        }
        let without_le: Vec<String> = pairs
            .iter()
            .filter(|(l, _)| *l != "le")
            .map(|(l, v)| format!("{l}={v:?}"))
            .collect();
        let entry = histograms
            .entry(format!("{name}{{{}}}", without_le.join(",")))
            .or_default();
        match sample.strip_prefix(name.as_str()) {
            Some("_bucket") => {
                let le = pairs
                    .iter()
                    .find(|(l, _)| *l == "le")
                    .unwrap_or_else(|| panic!("a bucket without le: {line}"));
                let bound = if le.1 == "+Inf" {
                    f64::INFINITY
                } else {
                    le.1.parse().unwrap()
                };
                if let Some(&(last_bound, last_count)) = entry.buckets.last() {
                    assert!(
                        bound > last_bound && value >= last_count,
                        "buckets out of order: {line}"
                    );
                }
                entry.buckets.push((bound, value));
            }
            Some("_count") => entry.count = Some(value),
            Some("_sum") => entry.sum = true,
            _ => panic!("sample outside histogram {name}: {line}"),
        }
    }
    for (
        labels,
        HistogramSeries {
            buckets,
            count,
            sum,
        },
    ) in histograms
    {
        let last = buckets
            .last()
            .unwrap_or_else(|| panic!("{labels}: no buckets"));
        assert_eq!(last.0, f64::INFINITY, "{labels}: no +Inf bucket");
        assert_eq!(
            Some(last.1),
            count,
            "{labels}: +Inf bucket and _count differ"
        );
        assert!(sum, "{labels}: no _sum");
    }
    scrape
}
