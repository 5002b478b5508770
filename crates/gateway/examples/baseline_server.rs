//! The floor that `scripts/bench-load.sh` measures the gateway against: a bare axum server on the
//! same HTTP stack that parses the JSON body of `POST /proxy/governance/check` and answers 200
//! with a fixed decision of the gateway's shape — no authentication, no policy decision, no rate
//! limit, no audit.
//!
//! `cargo run --release -p meshguard-gateway --example baseline_server -- 127.0.0.1:3199`

use axum::routing::post;
use axum::{Json, Router};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3199".to_owned());
    let app = Router::new().route("/proxy/governance/check", post(check));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("baseline listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}

/// Reads the request as the gateway does (JSON) and answers a body of the same size class.
async fn check(Json(request): Json<serde_json::Value>) -> Json<serde_json::Value> {
    let action = request.get("action").cloned().unwrap_or_default();
    let resource = request
        .get("resource")
        .cloned()
        .unwrap_or_else(|| "*".into());
    Json(serde_json::json!({
        "allowed": true, "decision": "allow", "code": "allowed",
        "reason": "baseline: every action is allowed", "message": "baseline: every action is allowed",
        "action": action, "resource": resource, "policy": null, "rule": null,
        "requires_approval": false, "approval_id": null, "retry_after_seconds": null,
        "enforced": true, "trace_id": "baseline", "audit_id": null
    }))
}
