//! chorus's logs in test output, on request: `RUST_LOG=chorus=debug cargo test ...`
//! shows what the in-process chorus did (captured per test like other output).

/// Install a tracing subscriber once per test binary if `RUST_LOG` is set.
pub fn init_logging_from_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}
