//! `GET /openapi.json`: served without credentials, and the same document as the copy committed
//! in `docs/openapi.json`, so the published description never drifts from the handlers.

use axum::body::Body;
use axum::http::{Request, StatusCode};

use crate::common::TestGateway;

/// How a developer brings the committed copy up to date.
const REGENERATE: &str = "cargo run -p meshguard -- openapi > docs/openapi.json";

fn committed() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; create it with `{REGENERATE}`",
            path.display()
        )
    })
}

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let gw = TestGateway::new().await;
    let request = Request::get("/openapi.json").body(Body::empty()).unwrap();
    let served = gw.send(request).await;
    assert_eq!(served.status, StatusCode::OK, "{}", served.text);
    assert_eq!(served.headers["content-type"], "application/json");
    assert_eq!(served.body["openapi"], "3.1.0");
    assert_eq!(served.body["info"]["version"], env!("CARGO_PKG_VERSION"));
    let committed = committed();
    if served.text != committed {
        let line = served
            .text
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "the end".to_owned(), |i| format!("line {}", i + 1));
        panic!(
            "docs/openapi.json differs from the document the gateway serves (first at {line}): \
             the API changed; regenerate it with `{REGENERATE}` and commit it"
        );
    }
}

#[tokio::test]
async fn the_document_is_served_without_credentials_and_names_both_tokens() {
    let gw = TestGateway::new().await;
    let served = gw
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    let schemes = &served.body["components"]["securitySchemes"];
    assert_eq!(schemes["agentToken"]["scheme"], "bearer");
    assert_eq!(schemes["adminToken"]["name"], "X-Admin-Token");
    let check = &served.body["paths"]["/proxy/governance/check"]["post"];
    assert_eq!(check["security"][0]["agentToken"], serde_json::json!([]));
    assert_eq!(
        check["responses"]["403"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CheckAnswer"
    );
    // Operation ids are unique, as OpenAPI requires (code generators name functions after them).
    let mut ids: Vec<&str> = served.body["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|operation| operation["operationId"].as_str().unwrap())
        .collect();
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all, "operation ids repeat: {ids:?}");
    // The console's pages and the MCP endpoints are not part of the JSON API it describes.
    let paths = served.body["paths"].as_object().unwrap();
    assert!(
        paths
            .keys()
            .all(|p| !p.starts_with("/console") && !p.starts_with("/mcp"))
    );
}
