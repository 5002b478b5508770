//! An OTLP/HTTP collector that accepts every trace export and keeps nothing, for
//! `scripts/bench-load.sh` to measure the gateway with traces on: the cost measured is the
//! gateway's (building, batching, encoding and sending spans), not a tracing backend's.
//! Prints how many exports and bytes it took when it stops (SIGTERM or Ctrl-C).
//!
//! `cargo run --release -p meshguard-gateway --example otlp_sink -- 127.0.0.1:4318`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;

/// Exports and bytes received.
#[derive(Default)]
struct Received {
    exports: AtomicU64,
    bytes: AtomicU64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4318".to_owned());
    let received = Arc::new(Received::default());
    let app = Router::new()
        .route("/v1/traces", post(export))
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("OTLP sink listening on http://{}", listener.local_addr()?);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    println!(
        "received {} exports, {} bytes",
        received.exports.load(Ordering::Relaxed),
        received.bytes.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Takes one export; an empty body is an empty `ExportTraceServiceResponse`: all accepted.
async fn export(State(received): State<Arc<Received>>, body: Bytes) -> &'static [u8] {
    received.exports.fetch_add(1, Ordering::Relaxed);
    received.bytes.fetch_add(
        u64::try_from(body.len()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    &[]
}
