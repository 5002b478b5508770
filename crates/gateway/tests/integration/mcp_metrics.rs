//! `/metrics` counts the checks of MCP calls (marked by `context.server` and `context.tool`, as
//! MeshGuard's MCP proxies send them) by server, tool and decision.

use crate::common::{AUTOGPT_PRODUCTION, TestGateway};
use axum::body::Body;
use axum::http::Request;
use serde_json::json;

#[tokio::test]
async fn mcp_calls_are_counted_by_server_tool_and_decision() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT_PRODUCTION).await;
    let (_, token) = gw
        .agent("prod", "trusted", &["autogpt", "production"])
        .await;
    let mcp = |action: &str, tool: &str| {
        json!({"action": action, "resource": "twitter",
               "context": {"server": "social", "tool": tool, "arguments": {"text": "hi"}}})
    };
    gw.check(&token, mcp("post:social", "post")).await;
    gw.check(&token, mcp("mcp:social/delete", "delete")).await;
    gw.check(&token, mcp("mcp:social/delete", "delete")).await;
    // Not an MCP call: no server and tool in the context.
    gw.check(
        &token,
        json!({"action": "post:social", "resource": "twitter"}),
    )
    .await;

    let metrics = gw
        .send(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let expected = [
        r#"meshguard_mcp_calls_total{decision="require_approval",server="social",tool="post"} 1"#,
        r#"meshguard_mcp_calls_total{decision="deny",server="social",tool="delete"} 2"#,
    ];
    for line in expected {
        assert!(metrics.text.contains(line), "{line} in\n{}", metrics.text);
    }
    let series = metrics
        .text
        .lines()
        .filter(|l| l.starts_with("meshguard_mcp_calls_total{"))
        .count();
    assert_eq!(series, 2, "{}", metrics.text);
}
