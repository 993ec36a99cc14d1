//! Log output: human-readable for people, JSON lines for production, always on stderr so
//! stdout stays for results a script can read.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub enum Format {
    Human,
    Json,
}

/// Installs the global subscriber. `RUST_LOG`, when set to a valid filter, beats
/// `default_filter`.
///
/// A registry with the filter and one output layer, not the `fmt()` builder: the builder
/// has a level filter of its own (INFO unless raised), and raising it to let `filter`
/// decide also raised the global level hint to TRACE, so code asking "is debug on?" (the
/// request layer, before making a log span) heard yes at every level.
pub fn init(default_filter: &str, format: Format) {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref(), default_filter);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        Format::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        Format::Human => registry
            .with(
                fmt::layer()
                    .with_ansi(use_color())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// The filter from `RUST_LOG` (`warn`, `elior=debug,info`: a default level and levels per
/// target, the syntax every filter elior documents uses), else from `default_filter`.
/// An unparsable `RUST_LOG` counts as unset, as it did with `EnvFilter`; so does an empty
/// one. `Targets` rather than `EnvFilter`: the latter's span-field and regex directives
/// pull in the regex engine, about 0.3 MB of the API image (issue 4), for syntax nobody
/// here uses.
fn filter(rust_log: Option<&str>, default_filter: &str) -> Targets {
    rust_log
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse().ok())
        .or_else(|| default_filter.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
}

/// Colour only on a terminal, and never when `NO_COLOR` is set (no-color.org).
pub fn use_color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;
    use tracing::Level;

    #[test]
    fn rust_log_beats_the_default_and_keeps_per_target_levels() {
        let f = filter(Some("elior=debug,hyper=off,warn"), "info");
        assert!(f.would_enable("elior::server", &Level::DEBUG));
        assert!(!f.would_enable("elior::server", &Level::TRACE));
        assert!(!f.would_enable("hyper::proto", &Level::ERROR));
        assert!(f.would_enable("tokio", &Level::WARN));
        assert!(!f.would_enable("tokio", &Level::INFO));
    }

    #[test]
    fn unset_empty_or_invalid_rust_log_falls_back_to_the_default() {
        for rust_log in [None, Some(""), Some("  "), Some("elior=loud")] {
            let f = filter(rust_log, "warn");
            assert_eq!(f.default_level(), Some(LevelFilter::WARN), "{rust_log:?}");
        }
    }
}
