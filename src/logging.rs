//! Log output: human-readable for people, JSON lines for production, always on stderr so
//! stdout stays for results a script can read.

use tracing_subscriber::EnvFilter;

pub enum Format {
    Human,
    Json,
}

/// Installs the global subscriber. `RUST_LOG`, when set, beats `default_filter`.
pub fn init(default_filter: &str, format: Format) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        Format::Human => builder.with_ansi(use_color()).try_init(),
    };
}

/// Colour only on a terminal, and never when `NO_COLOR` is set (no-color.org).
pub fn use_color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}
