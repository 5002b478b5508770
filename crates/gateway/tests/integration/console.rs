//! The console's switch and its edges, without a browser (tests/console/ drives it in one): off
//! means not served at all; on, every page needs a session and carries the security headers.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use meshguard_gateway::GatewayOptions;

use crate::common::TestGateway;

#[tokio::test]
async fn the_console_is_served_only_when_enabled_and_only_to_a_session() {
    let on = TestGateway::new().await;
    let reply = on
        .send(Request::get("/console").body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.headers["location"], "/console/login");
    assert_eq!(reply.headers["x-frame-options"], "DENY");
    let csp = reply.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    // A forged session cookie is no session.
    let forged = on
        .send(
            Request::get("/console/agents")
                .header("cookie", "mg_console=0123456789abcdef")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(forged.status, StatusCode::SEE_OTHER);
    // A sign-in without the form's CSRF cookie changes nothing.
    let login = on
        .send(
            Request::post("/console/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={}&csrf=x", on.admin)))
                .unwrap(),
        )
        .await;
    assert_eq!(login.status, StatusCode::FORBIDDEN);
    assert!(
        login
            .headers
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("mg_console="))
    );

    let off = TestGateway::with_options(GatewayOptions {
        console: false,
        ..GatewayOptions::default()
    })
    .await;
    let reply = off
        .send(Request::get("/console/login").body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}
