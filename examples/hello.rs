//! A bare axum hello-world: the ceiling `elior serve`'s `/health` is compared against in
//! `examples/load_bench.sh`. Run: `cargo run --release --example hello -- 127.0.0.1:8099`
use axum::{routing::get, Router};

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8099".into());
    let app = Router::new().route("/health", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
