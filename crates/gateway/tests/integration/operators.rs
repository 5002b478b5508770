//! `/admin/operators`: console operators are created with a hashed password that no answer or
//! audit event ever shows, and bad names, roles and passwords are refused before anything is
//! stored.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::common::TestGateway;

#[tokio::test]
async fn operators_are_created_listed_and_deleted_without_their_password_ever_shown() {
    let gw = TestGateway::new().await;
    let secret = "correct horse battery";
    let created = gw
        .admin(
            Method::POST,
            "/admin/operators",
            Some(json!({"name": "alice", "role": "approver", "password": secret})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["name"], "alice");
    assert_eq!(created.body["role"], "approver");
    assert!(
        created.body.get("passwordHash").is_none(),
        "{}",
        created.text
    );
    assert!(!created.text.contains(secret) && !created.text.contains("argon2"));

    for (body, status, text) in [
        (
            json!({"name": "bob", "role": "boss", "password": secret}),
            StatusCode::BAD_REQUEST,
            "not a role",
        ),
        (
            json!({"name": "Bob", "role": "viewer", "password": secret}),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            json!({"name": "bob", "role": "viewer", "password": "short"}),
            StatusCode::BAD_REQUEST,
            "at least 12 characters",
        ),
        (
            json!({"name": "alice", "role": "viewer", "password": secret}),
            StatusCode::CONFLICT,
            "taken",
        ),
    ] {
        let refused = gw.admin(Method::POST, "/admin/operators", Some(body)).await;
        assert_eq!(refused.status, status, "{}", refused.text);
        assert!(refused.text.contains(text), "{}", refused.text);
    }

    let listed = gw.admin(Method::GET, "/admin/operators", None).await;
    assert_eq!(listed.body["operators"].as_array().unwrap().len(), 1);
    assert!(!listed.text.contains("argon2"));

    let deleted = gw
        .admin(Method::DELETE, "/admin/operators/alice", None)
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text);
    let gone = gw
        .admin(Method::DELETE, "/admin/operators/alice", None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    // Both changes are audited, naming the operator, never holding the password or its hash.
    let events = gw.events().await;
    let actions: Vec<&str> = events.iter().map(|e| e.event.action.as_str()).collect();
    assert!(actions.contains(&"operator.create") && actions.contains(&"operator.delete"));
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(secret) && !text.contains("$argon2"));
}
