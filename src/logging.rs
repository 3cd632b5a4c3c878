//! `tracing` setup: `RUST_LOG` filters (default `info`), logs go to stderr. A log line that
//! cannot be written (stderr is a pipe nobody reads any more) is dropped: reporting that on the
//! same broken stderr would panic, and a job must not fail because its audience left.

/// Install the global subscriber once; later calls are no-ops.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .try_init();
}
