//! Canonical forms: no spelling of an action or resource walks around a deny, through
//! `POST /proxy/governance/check`, and every refusal is in the audit trail as received.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::{AUTOGPT, AUTOGPT_PRODUCTION, TestGateway};

const CANONICAL: &str = r#"
name: canonical
version: "1"
appliesTo: {tags: [target]}
rules:
  - {name: no-secrets, effect: deny, actions: ["write:workspace/secret/*"]}
  - {name: no-etc, effect: deny, actions: ["write:/etc/*"]}
  - {name: no-shell, effect: deny, actions: ["execute:shell"]}
  - {name: no-delete, effect: deny, actions: ["delete:*"]}
  - name: text-only
    effect: deny
    actions: ["read:docs"]
    conditions: {resourcePattern: "*.sh"}
defaultEffect: allow
"#;

/// Sends one check and returns the reply with the audit event it wrote.
async fn check_and_event(
    gw: &TestGateway,
    token: &str,
    action: &str,
    resource: &str,
) -> (crate::common::Reply, meshguard_store::AuditEvent) {
    let before = gw.events().await.len();
    let reply = gw
        .check(token, json!({"action": action, "resource": resource}))
        .await;
    let events = gw.events().await;
    assert_eq!(events.len(), before + 1, "one event for {action:?}");
    let event = events.last().cloned().unwrap();
    (reply, event)
}

#[tokio::test]
async fn no_spelling_walks_around_a_deny() {
    let gw = TestGateway::new().await;
    gw.policy(CANONICAL).await;
    let (_, token) = gw.agent("target", "verified", &["target"]).await;

    // The canonical forms the denies were written for, then every other spelling of them.
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        (
            "write:workspace/secret/key",
            "*",
            "denied_by_rule",
            Some("no-secrets"),
        ),
        (
            "write:workspace//secret/key",
            "*",
            "denied_by_rule",
            Some("no-secrets"),
        ),
        ("write://etc/passwd", "*", "denied_by_rule", Some("no-etc")),
        (
            "write:workspace/x/%2e%2e/secret/key",
            "*",
            "denied_by_rule",
            Some("no-secrets"),
        ),
        (
            "write:workspace/%2e%2e/%2e%2e/etc/passwd",
            "*",
            "invalid_resource",
            None,
        ),
        (
            "write:workspace/%73ecret/key",
            "*",
            "denied_by_rule",
            Some("no-secrets"),
        ),
        (
            "write:workspace%2Fsecret%2Fkey",
            "*",
            "invalid_action",
            None,
        ),
        (
            "write:workspace/%2573ecret/key",
            "*",
            "invalid_action",
            None,
        ),
        ("write:workspace/secret\\key", "*", "invalid_action", None),
        (
            "write:workspace/Secret/",
            "*",
            "denied_by_rule",
            Some("no-secrets"),
        ),
        (
            "write:workspace/secret./key",
            "*",
            "denied_by_rule",
            Some("no-secrets"),
        ),
        ("write:workspace/.../key", "*", "invalid_action", None),
        (
            "write:workspace/x/\u{ff0e}\u{ff0e}/secret/key",
            "*",
            "denied_by_rule",
            Some("no-secrets"),
        ),
        (
            "write:workspace/x/\u{2025}/secret/key",
            "*",
            "denied_by_rule",
            Some("no-secrets"),
        ),
        (
            "write:workspace",
            "secret//key",
            "denied_by_rule",
            Some("no-secrets"),
        ),
        (
            "write:workspace",
            "%73ecret/key",
            "denied_by_rule",
            Some("no-secrets"),
        ),
        (
            "write:workspace",
            "Secret/",
            "denied_by_rule",
            Some("no-secrets"),
        ),
        ("write:workspace", "secret\\key", "invalid_resource", None),
        (
            "write:workspace",
            "secret./key",
            "denied_by_rule",
            Some("no-secrets"),
        ),
        (
            "write:workspace",
            "x/\u{ff0e}\u{ff0e}/secret/key",
            "denied_by_rule",
            Some("no-secrets"),
        ),
        ("Execute:shell", "*", "denied_by_rule", Some("no-shell")),
        ("execute:shell ", "*", "invalid_action", None),
        ("execute:shell\n", "*", "invalid_action", None),
        ("execute:shell\r\n", "*", "invalid_action", None),
        ("execute:shell\u{0}", "*", "invalid_action", None),
        ("execute:shell\u{1b}[2K", "*", "invalid_action", None),
        ("execute:shell/", "*", "denied_by_rule", Some("no-shell")),
        ("delete", "*", "invalid_action", None),
        ("DELETE:x", "*", "denied_by_rule", Some("no-delete")),
        ("read:docs", "run.sh", "denied_by_rule", Some("text-only")),
        ("read:docs", "run.SH", "denied_by_rule", Some("text-only")),
        ("read:docs", "run.sh\u{0}.txt", "invalid_resource", None),
    ];
    for &(action, resource, code, rule) in cases {
        let (reply, event) = check_and_event(&gw, &token, action, resource).await;
        let what = format!("{action:?} on {resource:?}: {}", reply.text);
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}");
        assert_eq!(reply.body["decision"], "deny", "{what}");
        assert_eq!(reply.body["code"], code, "{what}");
        assert_eq!(
            reply.body["rule"],
            rule.map_or(Value::Null, Value::from),
            "{what}"
        );
        // The trail records the refusal with the strings as received.
        assert_eq!(event.event.action, action, "{what}");
        assert_eq!(
            event.event.decision.map(meshguard_policy::Effect::as_str),
            Some("deny"),
            "{what}"
        );
        assert_eq!(
            event.event.code.map(meshguard_store::EventCode::as_str),
            Some(code),
            "{what}"
        );
    }

    // Canonical text that no deny names is still allowed: the rules are not simply broader.
    for (action, resource) in [
        ("write:workspace/notes.txt", "*"),
        ("write:workspace/secretive", "*"),
        ("read:docs", "notes.txt"),
    ] {
        let reply = gw
            .check(&token, json!({"action": action, "resource": resource}))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{action}: {}", reply.text);
    }
}

#[tokio::test]
async fn a_resource_outside_the_object_does_not_pass_a_slash_star_allow() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    let (_, token) = gw.agent("dev", "verified", &["autogpt"]).await;
    for resource in ["/etc/passwd", "https://example.com/x", "//etc/passwd"] {
        let (reply, event) = check_and_event(&gw, &token, "write:workspace", resource).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{resource}: {}",
            reply.text
        );
        assert_eq!(reply.body["code"], "default_deny", "{resource}");
        assert_eq!(event.event.resource.as_deref(), Some(resource));
        assert_eq!(
            event.event.code.map(meshguard_store::EventCode::as_str),
            Some("default_deny")
        );
    }
    // A relative resource lies under the object and is allowed, as before.
    let reply = gw
        .check(
            &token,
            json!({"action": "write:workspace", "resource": "notes.txt"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    // With `resourcePattern`: a doubled slash in the action cannot root its object outside the
    // workspace. The object collapses, so it is decided as the path it names inside the
    // workspace, and a rooted object is not under `write:workspace/*` at all.
    gw.policy(AUTOGPT_PRODUCTION).await;
    let (_, prod) = gw.agent("prod", "trusted", &["production"]).await;
    let collapsed = gw
        .check(
            &prod,
            json!({"action": "write:workspace//etc/cron.d/x", "resource": "workspace/a"}),
        )
        .await;
    let canonical = gw
        .check(
            &prod,
            json!({"action": "write:workspace/etc/cron.d/x", "resource": "workspace/a"}),
        )
        .await;
    assert_eq!(collapsed.status, canonical.status);
    assert_eq!(collapsed.body["rule"], canonical.body["rule"]);
    let rooted = gw
        .check(
            &prod,
            json!({"action": "write://etc/cron.d/x", "resource": "workspace/a"}),
        )
        .await;
    assert_eq!(rooted.status, StatusCode::FORBIDDEN, "{}", rooted.text);
    assert_eq!(rooted.body["code"], "denied_by_rule");
}

#[tokio::test]
async fn the_shipped_examples_together_do_not_allow_python_without_a_sandbox() {
    let gw = TestGateway::new().await;
    gw.policy(AUTOGPT).await;
    gw.policy(AUTOGPT_PRODUCTION).await;
    let (_, both) = gw
        .agent("prod", "trusted", &["autogpt", "production"])
        .await;

    let (reply, event) = check_and_event(&gw, &both, "execute:python", "print(1)").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    assert_eq!(reply.body["code"], "denied_by_rule");
    assert_eq!(reply.body["policy"], "autogpt-production");
    assert_eq!(
        event.event.code.map(meshguard_store::EventCode::as_str),
        Some("denied_by_rule")
    );
    // `sandbox: false` is no better; the agent's claim of a sandbox still decides (it is a claim:
    // docs/threat-model.md), as the production policy says.
    let reply = gw
        .check(
            &both,
            json!({"action": "execute:python", "context": {"sandbox": false}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = gw
        .check(
            &both,
            json!({"action": "execute:python", "context": {"sandbox": true}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    // Reads the production policy does not allow are not allowed by the general one either.
    let reply = gw
        .check(
            &both,
            json!({"action": "read:secrets", "resource": "notes.txt"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);

    // An AutoGPT agent that is not a production agent keeps what the walkthrough shows.
    let (_, dev) = gw
        .agent("dev", "verified", &["autogpt", "autonomous"])
        .await;
    for (action, resource) in [
        ("execute:python", "print('Hello')"),
        ("write:workspace", "workspace/notes.txt"),
        ("browse:web", "https://python.org"),
        ("search:web", "Python tutorials"),
    ] {
        let reply = gw
            .check(&dev, json!({"action": action, "resource": resource}))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{action}: {}", reply.text);
    }
    let reply = gw
        .check(
            &dev,
            json!({"action": "execute:shell", "resource": "ls -la"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_rule_rate_limit_is_charged_whatever_the_spelling() {
    let gw = TestGateway::new().await;
    gw.policy(
        r#"
name: crawler
version: "1"
appliesTo: {tags: [crawler]}
rules:
  - name: web
    effect: allow
    actions: ["browse:web"]
    conditions: {rateLimit: {requestsPerMinute: 2}}
  - {name: rest, effect: allow, actions: ["browse:*"]}
"#,
    )
    .await;
    let (_, token) = gw.agent("crawler", "verified", &["crawler"]).await;
    // Two spellings use up the limit of two; every further spelling is refused by the same rule.
    for action in ["browse:web", "browse:Web"] {
        let reply = gw.check(&token, json!({"action": action})).await;
        assert_eq!(reply.status, StatusCode::OK, "{action}: {}", reply.text);
    }
    for action in [
        "browse:web",
        "browse:web/",
        "browse:Web",
        "BROWSE:web",
        "browse:%77eb",
        "browse:web//",
    ] {
        let (reply, event) = check_and_event(&gw, &token, action, "*").await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{action}: {}",
            reply.text
        );
        assert_eq!(reply.body["code"], "rate_limited", "{action}");
        assert_eq!(reply.body["rule"], "web", "{action}");
        assert_eq!(
            event.event.code.map(meshguard_store::EventCode::as_str),
            Some("rate_limited")
        );
    }
    // Another object is another rule's business.
    let reply = gw.check(&token, json!({"action": "browse:docs"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}
