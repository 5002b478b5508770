//! The OpenAPI document against the real gateway: the `meshguard` binary is started, every
//! documented operation that can be reached from here is exercised (allowed, denied, rate
//! limited, refused, not found, invalid…), and each answer's body is validated against the
//! schema the document declares for that path, method and status. An answer whose status the
//! document does not declare fails, and so does a field the schema does not name: schemas are
//! made strict for the test (`unevaluatedProperties: false`) where the gateway's types are closed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::support::{CliRun, Gateway, http};

/// Allows reads, denies shell, rate-limits `ping:*`, and asks a human for `pay:*`.
const POLICY: &str = r#"
name: contract
version: "1"
description: exercises every kind of answer
appliesTo:
  tags: [contract]
rules:
  - name: deny-shell
    effect: deny
    actions: ["execute:shell"]
  - name: ping-limit
    effect: allow
    actions: ["ping:*"]
    conditions:
      rateLimit: {requestsPerMinute: 2}
  - name: reads
    effect: allow
    actions: ["read:*"]
  - name: pay
    effect: allow
    actions: ["pay:*"]
    budget: {field: arguments.amount, perDay: 1000}
humanInTheLoop:
  requireApproval: ["pay:*"]
  timeoutSeconds: 600
"#;

/// The document as served, made strict, and what has been validated against it.
struct Contract {
    /// `components.schemas`, each with a strict twin (`Name.strict`).
    components: Value,
    /// `paths` as served.
    paths: Value,
    /// (method, path) of every operation an answer was validated for.
    covered: Mutex<BTreeSet<(String, String)>>,
    /// How many answers were validated.
    answers: Mutex<usize>,
}

/// The strict twin of a schema name.
fn strict(name: &str) -> String {
    format!("{name}.strict")
}

/// Points every `$ref` to a component at its strict twin, except the direct items of an `allOf`
/// (a flattened part must accept its siblings' fields; the whole is strict instead).
fn tighten(value: &mut Value, in_all_of: bool) {
    match value {
        Value::Object(map) => {
            if !in_all_of
                && let Some(Value::String(target)) = map.get_mut("$ref")
                && let Some(name) = target.strip_prefix("#/components/schemas/")
            {
                *target = format!("#/components/schemas/{}", strict(name));
            }
            for (key, child) in map.iter_mut() {
                if key == "allOf"
                    && let Value::Array(items) = child
                {
                    for item in items {
                        tighten(item, true);
                    }
                } else {
                    tighten(child, false);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| tighten(item, false)),
        _ => {}
    }
}

impl Contract {
    async fn served_by(gw: &Gateway) -> Contract {
        let document: Value = http(Duration::from_secs(10))
            .get(format!("{}/openapi.json", gw.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Contract::of(&document)
    }

    fn of(document: &Value) -> Contract {
        assert_eq!(document["openapi"], "3.1.0");
        let mut schemas = document["components"]["schemas"]
            .as_object()
            .unwrap()
            .clone();
        for schema in schemas.values_mut() {
            tighten(schema, false);
        }
        let twins: Vec<(String, Value)> = schemas
            .keys()
            .map(|name| {
                let twin = json!({
                    "allOf": [{"$ref": format!("#/components/schemas/{name}")}],
                    "unevaluatedProperties": false,
                });
                (strict(name), twin)
            })
            .collect();
        schemas.extend(twins);
        Contract {
            components: json!({ "schemas": schemas }),
            paths: document["paths"].clone(),
            covered: Mutex::new(BTreeSet::new()),
            answers: Mutex::new(0),
        }
    }

    /// Validates one answer against the document: its status must be declared for the
    /// operation (or a `default`), a JSON body must match the declared schema, another body the
    /// declared media type.
    fn validate(&self, method: &Method, path: &str, status: u16, content_type: &str, body: &str) {
        let method_key = method.as_str().to_lowercase();
        let operation = &self.paths[path][&method_key];
        assert!(
            operation.is_object(),
            "`{method} {path}` is not in the document"
        );
        let responses = &operation["responses"];
        let response = match &responses[status.to_string()] {
            Value::Null => &responses["default"],
            declared => declared,
        };
        assert!(
            response.is_object(),
            "`{method} {path}` answered {status}, which the document does not declare: {body}"
        );
        let content = &response["content"];
        let media = content_type.split(';').next().unwrap_or_default().trim();
        if media == "application/json" {
            let schema = &content["application/json"]["schema"];
            assert!(
                schema.is_object(),
                "`{method} {path}` {status} answered JSON, the document declares no JSON schema: {body}"
            );
            let instance: Value = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("`{method} {path}` {status}: not JSON ({e}): {body}"));
            self.check_schema(schema, &instance, &format!("{method} {path} {status}"));
        } else {
            let declared = content
                .as_object()
                .map(|c| c.keys().cloned().collect::<Vec<_>>());
            assert!(
                content
                    .as_object()
                    .is_some_and(|c| c.keys().any(|k| k.split(';').next() == Some(media))),
                "`{method} {path}` {status} answered `{content_type}`, the document declares {declared:?}"
            );
        }
        self.covered
            .lock()
            .unwrap()
            .insert((method_key, path.to_owned()));
        *self.answers.lock().unwrap() += 1;
    }

    /// Validates `instance` against `schema`, whose references resolve into the components.
    fn check_schema(&self, schema: &Value, instance: &Value, what: &str) {
        let errors = self.errors(schema, instance, what);
        assert!(
            errors.is_empty(),
            "{what}: the answer does not match its schema:\n{}\nanswer: {instance:#}",
            errors.join("\n")
        );
    }

    /// Where `instance` departs from `schema`.
    fn errors(&self, schema: &Value, instance: &Value, what: &str) -> Vec<String> {
        let mut schema = schema.clone();
        tighten(&mut schema, false);
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.components,
            "$defs": {"answer": schema},
            "$ref": "#/$defs/answer",
        });
        let validator = jsonschema::draft202012::new(&root)
            .unwrap_or_else(|e| panic!("{what}: the schema does not compile: {e}"));
        validator
            .iter_errors(instance)
            .map(|e| format!("{} at `{}`", e, e.instance_path()))
            .collect()
    }

    /// Every operation of the document, as (method, path).
    fn operations(&self) -> BTreeSet<(String, String)> {
        self.paths
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect()
    }
}

/// One request to the gateway; its answer is validated against the document before it is
/// returned.
struct Client<'a> {
    gw: &'a Gateway,
    contract: &'a Contract,
    http: reqwest::Client,
}

/// An answer: status, headers and JSON body (`Value::Null` when not JSON).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

/// What a request carries.
enum Send<'b> {
    Nothing,
    Json(Value),
    Text(&'b str),
}

impl Client<'_> {
    /// Sends `method url` with `headers` and `send`, validates the answer as an answer of the
    /// document's operation `method path`, and returns it.
    async fn call(
        &self,
        method: Method,
        url: &str,
        path: &str,
        headers: &[(&str, &str)],
        send: Send<'_>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{url}", self.gw.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request = match send {
            Send::Nothing => request,
            Send::Json(body) => request.json(&body),
            Send::Text(text) => request
                .header("content-type", "application/yaml")
                .body(text.to_owned()),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = if content_type.starts_with("text/event-stream") {
            String::new()
        } else {
            response.text().await.unwrap()
        };
        self.contract
            .validate(&method, path, status, &content_type, &text);
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    async fn admin(&self, method: Method, url: &str, path: &str, send: Send<'_>) -> Answer {
        let token = std::fs::read_to_string(self.gw.data_dir().join("admin.token")).unwrap();
        self.call(method, url, path, &[("x-admin-token", token.trim())], send)
            .await
    }

    async fn agent(
        &self,
        token: &str,
        method: Method,
        url: &str,
        path: &str,
        send: Send<'_>,
    ) -> Answer {
        self.agent_with(token, method, url, path, &[], send).await
    }

    /// As the agent with `token`, with more headers.
    async fn agent_with(
        &self,
        token: &str,
        method: Method,
        url: &str,
        path: &str,
        headers: &[(&str, &str)],
        send: Send<'_>,
    ) -> Answer {
        let bearer = format!("Bearer {token}");
        let mut all = vec![("authorization", bearer.as_str())];
        all.extend_from_slice(headers);
        self.call(method, url, path, &all, send).await
    }

    async fn check(&self, token: &str, body: Value) -> Answer {
        self.agent(
            token,
            Method::POST,
            "/proxy/governance/check",
            "/proxy/governance/check",
            Send::Json(body),
        )
        .await
    }
}

fn assert_status(answer: &Answer, status: u16) {
    assert_eq!(answer.status, status, "{:#}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_schema_the_document_declares() {
    // Budgets small enough to reach: one refusal and three records a minute. The proxy's
    // upstream is a closed port (502), the Slack receiver too (its delivery fails, reported).
    let scratch = tempfile::tempdir().unwrap();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let config = scratch.path().join("meshguard.toml");
    std::fs::write(
        &config,
        format!(
            "[agents]\nrefusals_per_minute = 1\nrecords_per_minute = 3\n\n\
             [proxy]\ntarget = \"http://{closed}\"\n\n\
             [alerts]\nslack_webhook = \"http://{closed}/hook\"\ntimeout = \"1s\"\n"
        ),
    )
    .unwrap();
    let gw = Gateway::start_with(&["--config", config.to_str().unwrap()]).await;
    let contract = Contract::served_by(&gw).await;
    let c = Client {
        gw: &gw,
        contract: &contract,
        http: http(Duration::from_secs(30)),
    };
    use Method as M;
    use Send::{Json, Nothing, Text};

    // Public.
    assert_status(&c.call(M::GET, "/", "/", &[], Nothing).await, 200);
    assert_status(
        &c.call(M::GET, "/health", "/health", &[], Nothing).await,
        200,
    );
    assert_status(
        &c.call(M::GET, "/metrics", "/metrics", &[], Nothing).await,
        200,
    );
    let document = c
        .call(M::GET, "/openapi.json", "/openapi.json", &[], Nothing)
        .await;
    assert_status(&document, 200);

    // Agents.
    let created = c
        .admin(
            M::POST,
            "/admin/agents",
            "/admin/agents",
            Json(json!({"name": "worker", "trustTier": "trusted", "tags": ["contract"], "description": "d"})),
        )
        .await;
    assert_status(&created, 201);
    let token = created.body["token"].as_str().unwrap().to_owned();
    let other = c
        .admin(
            M::POST,
            "/admin/agents",
            "/admin/agents",
            Json(json!({"name": "other", "tags": ["contract"], "ttlSeconds": 3600})),
        )
        .await;
    assert_status(&other, 201);
    let taken = Json(json!({"name": "worker"}));
    assert_status(
        &c.admin(M::POST, "/admin/agents", "/admin/agents", taken)
            .await,
        409,
    );
    let wrong = Json(json!({"name": 5}));
    assert_status(
        &c.admin(M::POST, "/admin/agents", "/admin/agents", wrong)
            .await,
        400,
    );
    let no_token = c
        .call(M::GET, "/admin/agents", "/admin/agents", &[], Nothing)
        .await;
    assert_status(&no_token, 401);
    let page = c
        .admin(M::GET, "/admin/agents?limit=1", "/admin/agents", Nothing)
        .await;
    assert_status(&page, 200);
    assert!(page.body["nextCursor"].is_string());
    let bad_cursor = c
        .admin(
            M::GET,
            "/admin/agents?cursor=nope",
            "/admin/agents",
            Nothing,
        )
        .await;
    assert_status(&bad_cursor, 400);
    let one = "/admin/agents/{agent}";
    assert_status(
        &c.admin(M::GET, "/admin/agents/worker", one, Nothing).await,
        200,
    );
    assert_status(
        &c.admin(M::GET, "/admin/agents/ghost", one, Nothing).await,
        404,
    );
    let patch = Json(json!({"description": null, "tags": ["contract", "x"]}));
    assert_status(
        &c.admin(M::PATCH, "/admin/agents/other", one, patch).await,
        200,
    );
    let rotated = c
        .admin(
            M::POST,
            "/admin/agents/other/token?rotate=true",
            "/admin/agents/{agent}/token",
            Json(json!({"ttlSeconds": 600})),
        )
        .await;
    assert_status(&rotated, 201);
    let other_token_2 = rotated.body["token"].as_str().unwrap().to_owned();

    // Policies.
    let applied = c
        .admin(M::POST, "/admin/policies", "/admin/policies", Text(POLICY))
        .await;
    assert_status(&applied, 201);
    let named = "/admin/policies/{name}";
    let again = c
        .admin(M::PUT, "/admin/policies/contract", named, Text(POLICY))
        .await;
    assert_status(&again, 200);
    let spare =
        "name: spare\nversion: \"1\"\nrules:\n  - effect: allow\n    actions: [\"noop:x\"]\n";
    assert_status(
        &c.admin(M::PUT, "/admin/policies/spare", named, Text(spare))
            .await,
        201,
    );
    let broken = "name: broken\nversion: \"1\"\nrules:\n  - effect: alow\n    actions: [\"x:y\"]\n";
    let invalid = c
        .admin(M::POST, "/admin/policies", "/admin/policies", Text(broken))
        .await;
    assert_status(&invalid, 422);
    let elsewhere = c
        .admin(M::PUT, "/admin/policies/other-name", named, Text(spare))
        .await;
    assert_status(&elsewhere, 400);
    assert_status(
        &c.admin(M::GET, "/admin/policies", "/admin/policies", Nothing)
            .await,
        200,
    );
    assert_status(
        &c.admin(M::GET, "/admin/policies/contract", named, Nothing)
            .await,
        200,
    );
    assert_status(
        &c.admin(M::GET, "/admin/policies/ghost", named, Nothing)
            .await,
        404,
    );
    let revisions = "/admin/policies/{name}/revisions";
    assert_status(
        &c.admin(
            M::GET,
            "/admin/policies/contract/revisions",
            revisions,
            Nothing,
        )
        .await,
        200,
    );
    let validate = "/admin/policies/validate";
    let valid = c.admin(M::POST, validate, validate, Text(spare)).await;
    assert_status(&valid, 200);
    assert!(!valid.body["warnings"].as_array().unwrap().is_empty());
    let not_valid = c.admin(M::POST, validate, validate, Text(broken)).await;
    assert_eq!(not_valid.body["valid"], false);
    assert_status(
        &c.admin(M::DELETE, "/admin/policies/spare", named, Nothing)
            .await,
        200,
    );
    let permissions = "/admin/agents/{agent}/permissions";
    assert_status(
        &c.admin(
            M::GET,
            "/admin/agents/worker/permissions",
            permissions,
            Nothing,
        )
        .await,
        200,
    );

    // Checks: allow, deny, rate limit, approval, refused, malformed, too large.
    let allowed = c
        .check(&token, json!({"action": "read:notes", "resource": "a.txt"}))
        .await;
    assert_status(&allowed, 200);
    let audit_id = allowed.body["audit_id"].as_str().unwrap().to_owned();
    let trace = allowed.headers["x-trace-id"].to_str().unwrap().to_owned();
    assert_status(
        &c.check(&token, json!({"action": "execute:shell"})).await,
        403,
    );
    assert_status(&c.check(&token, json!({"action": "fly:away"})).await, 403);
    for _ in 0..2 {
        assert_status(&c.check(&token, json!({"action": "ping:a"})).await, 200);
    }
    let limited = c.check(&token, json!({"action": "ping:a"})).await;
    assert_status(&limited, 403);
    assert_eq!(limited.body["code"], "rate_limited");
    let get_check = "/proxy/check";
    for (action, status) in [("read:x", 200), ("execute:shell", 403), ("ping:a", 429)] {
        let headers = [("x-meshguard-action", action)];
        let answer = c
            .agent_with(&token, M::GET, get_check, get_check, &headers, Nothing)
            .await;
        assert_status(&answer, status);
    }
    let no_action = c
        .agent(&token, M::GET, "/proxy/check", "/proxy/check", Nothing)
        .await;
    assert_status(&no_action, 400);
    let asked = c
        .check(
            &token,
            json!({"action": "pay:invoice", "context": {"arguments": {"amount": 5}}}),
        )
        .await;
    assert_status(&asked, 403);
    assert_eq!(asked.body["decision"], "require_approval");
    let approval = asked.body["approval_id"].as_str().unwrap().to_owned();
    assert_status(
        &c.check("not-a-token", json!({"action": "read:x"})).await,
        401,
    );
    assert_status(&c.check(&token, json!({"action": 5})).await, 400);
    let huge = json!({"action": "read:x", "context": {"pad": "x".repeat(70 * 1024)}});
    assert_status(&c.check(&token, huge).await, 413);

    // Preview, record.
    let preview = "/proxy/governance/preview";
    let previewed = c
        .agent(
            &token,
            M::POST,
            preview,
            preview,
            Json(json!({"action": "pay:invoice"})),
        )
        .await;
    assert_status(&previewed, 200);
    let record = "/proxy/governance/record";
    let recorded = c
        .agent_with(
            &token,
            M::POST,
            record,
            record,
            &[("x-trace-id", &trace)],
            Json(json!({"action": "read:notes", "status": "success", "audit_id": audit_id, "duration_ms": 1.5})),
        )
        .await;
    assert_status(&recorded, 201);
    let unknown = Json(json!({"action": "read:notes", "audit_id": "nope"}));
    assert_status(
        &c.agent(&token, M::POST, record, record, unknown).await,
        404,
    );
    let not_own = Json(json!({"action": "read:notes", "audit_id": audit_id}));
    assert_status(
        &c.agent(&other_token_2, M::POST, record, record, not_own)
            .await,
        403,
    );
    let wrong = Json(json!({"action": []}));
    assert_status(&c.agent(&token, M::POST, record, record, wrong).await, 400);
    // The fourth record of the minute is past the budget of three.
    let over = Json(json!({"action": "read:notes"}));
    assert_status(&c.agent(&token, M::POST, record, record, over).await, 429);

    // Approvals: the agent polls, an operator lists and decides.
    let poll = "/proxy/governance/approvals/{id}";
    let pending = c
        .agent(
            &token,
            M::GET,
            &format!("/proxy/governance/approvals/{approval}?wait=0"),
            poll,
            Nothing,
        )
        .await;
    assert_status(&pending, 200);
    assert_eq!(pending.body["status"], "pending");
    let foreign = c
        .agent(
            &other_token_2,
            M::GET,
            &format!("/proxy/governance/approvals/{approval}"),
            poll,
            Nothing,
        )
        .await;
    assert_status(&foreign, 404);
    let list = "/admin/approvals";
    assert_status(
        &c.admin(M::GET, "/admin/approvals?status=pending", list, Nothing)
            .await,
        200,
    );
    assert_status(
        &c.admin(M::GET, "/admin/approvals?status=maybe", list, Nothing)
            .await,
        400,
    );
    let approve = "/admin/approvals/{id}/approve";
    let approved = c
        .admin(
            M::POST,
            &format!("/admin/approvals/{approval}/approve"),
            approve,
            Json(json!({"decidedBy": "ops", "reason": "fine"})),
        )
        .await;
    assert_status(&approved, 200);
    let missing = c
        .admin(
            M::POST,
            "/admin/approvals/apr_nope/approve",
            approve,
            Nothing,
        )
        .await;
    assert_status(&missing, 404);
    let with_approval = c
        .check(
            &token,
            json!({"action": "pay:invoice", "context": {"arguments": {"amount": 5}}, "approval_id": approval}),
        )
        .await;
    assert_status(&with_approval, 200);
    let asked_again = c
        .check(
            &token,
            json!({"action": "pay:rent", "context": {"arguments": {"amount": 7}}}),
        )
        .await;
    let second = asked_again.body["approval_id"].as_str().unwrap().to_owned();
    let denied = c
        .admin(
            M::POST,
            &format!("/admin/approvals/{second}/deny"),
            "/admin/approvals/{id}/deny",
            Json(json!({"reason": "no"})),
        )
        .await;
    assert_status(&denied, 200);
    let decided = c
        .agent(
            &token,
            M::GET,
            &format!("/proxy/governance/approvals/{second}?wait=1"),
            poll,
            Nothing,
        )
        .await;
    assert_eq!(decided.body["status"], "denied");

    // AuthZEN.
    let one = "/access/v1/evaluation";
    let evaluated = c
        .agent(
            &token,
            M::POST,
            one,
            one,
            Json(json!({"subject": {"type": "agent", "id": "worker"}, "action": {"name": "read:x"}, "resource": {"type": "file", "id": "a"}})),
        )
        .await;
    assert_status(&evaluated, 200);
    assert_eq!(evaluated.body["decision"], true);
    let someone_else = Json(json!({"subject": {"id": "other"}, "action": {"name": "read:x"}}));
    assert_status(&c.agent(&token, M::POST, one, one, someone_else).await, 403);
    let nameless = Json(json!({"action": {}}));
    assert_status(&c.agent(&token, M::POST, one, one, nameless).await, 400);
    let batch = "/access/v1/evaluations";
    let evaluated = c
        .agent(
            &token,
            M::POST,
            batch,
            batch,
            Json(json!({
                "resource": {"id": "*"},
                "evaluations": [{"action": {"name": "read:x"}}, {"action": {"name": "execute:shell"}}, {"action": {"name": "read:y"}}],
                "options": {"evaluations_semantic": "deny_on_first_deny"},
            })),
        )
        .await;
    assert_status(&evaluated, 200);
    assert_eq!(evaluated.body["evaluations"].as_array().unwrap().len(), 2);

    // Forward auth and the proxy.
    let forward_auth = "/auth/forward";
    for (method, uri, status) in [
        (M::GET, "/notes/today", 200),
        (M::POST, "/notes/today", 403),
        (M::GET, "/a/../b", 403),
    ] {
        let headers = [("x-forwarded-uri", uri)];
        let answer = c
            .agent_with(
                &token,
                method,
                forward_auth,
                forward_auth,
                &headers,
                Nothing,
            )
            .await;
        assert_status(&answer, status);
        let decision = if status == 200 { "allow" } else { "deny" };
        assert_eq!(answer.headers["x-meshguard-decision"], decision);
    }
    let proxy = "/proxy/{path}";
    let refused = c
        .agent(&token, M::DELETE, "/proxy/notes/today", proxy, Nothing)
        .await;
    assert_status(&refused, 403);
    let unreachable = c
        .agent(&token, M::GET, "/proxy/notes/today", proxy, Nothing)
        .await;
    assert_status(&unreachable, 502);

    // Decide, replay.
    let decide = "/admin/decide";
    let decided = c
        .admin(
            M::POST,
            decide,
            decide,
            Json(json!({"agent": "worker", "action": "pay:invoice", "context": {"arguments": {"amount": 1}}, "now": "2026-01-31T12:00:00Z"})),
        )
        .await;
    assert_status(&decided, 200);
    let ghost = Json(json!({"agent": "ghost", "action": "read:x"}));
    assert_status(&c.admin(M::POST, decide, decide, ghost).await, 404);
    let replay = "/admin/replay";
    let stricter = POLICY.replace("actions: [\"read:*\"]", "actions: [\"read:other\"]");
    let replayed = c
        .admin(
            M::POST,
            replay,
            replay,
            Json(json!({"policies": [{"origin": "candidate.yaml", "text": stricter}], "since": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_status(&replayed, 200);
    assert!(replayed.body["changed"].as_u64().unwrap() > 0);
    let unparsable = Json(
        json!({"policies": [{"origin": "b.yaml", "text": broken}], "since": "2020-01-01T00:00:00Z"}),
    );
    assert_status(&c.admin(M::POST, replay, replay, unparsable).await, 422);

    // Audit.
    let audit = "/admin/audit";
    assert_status(
        &c.admin(M::GET, "/admin/audit?limit=50", audit, Nothing)
            .await,
        200,
    );
    assert_status(
        &c.admin(M::GET, "/admin/audit?from=yesterday", audit, Nothing)
            .await,
        400,
    );
    let stats = "/admin/audit/stats";
    assert_status(
        &c.admin(
            M::GET,
            "/admin/audit/stats?period=2&breakdown=hourly",
            stats,
            Nothing,
        )
        .await,
        200,
    );
    assert_status(
        &c.admin(M::GET, "/admin/audit/stats?period=0", stats, Nothing)
            .await,
        400,
    );
    let verify = "/admin/audit/verify";
    let verified = c.admin(M::GET, verify, verify, Nothing).await;
    assert_status(&verified, 200);
    assert_eq!(verified.body["ok"], true);
    let export = "/admin/audit/export";
    let admin_token = std::fs::read_to_string(gw.data_dir().join("admin.token")).unwrap();
    let lines = c
        .http
        .get(format!("{}{export}?kind=check", gw.url))
        .header("x-admin-token", admin_token.trim())
        .send()
        .await
        .unwrap();
    let content_type = lines.headers()["content-type"].to_str().unwrap().to_owned();
    let lines = lines.text().await.unwrap();
    contract.validate(&M::GET, export, 200, &content_type, &lines);
    let event = json!({"$ref": "#/components/schemas/AuditEvent"});
    for line in lines.lines() {
        contract.check_schema(
            &event,
            &serde_json::from_str(line).unwrap(),
            "an exported event",
        );
    }
    assert_status(
        &c.admin(
            M::GET,
            "/admin/audit/stream?kind=check",
            "/admin/audit/stream",
            Nothing,
        )
        .await,
        200,
    );

    // Operators, alerts.
    let operators = "/admin/operators";
    let operator =
        Json(json!({"name": "alice", "role": "approver", "password": "a long enough password"}));
    assert_status(&c.admin(M::POST, operators, operators, operator).await, 201);
    let short = Json(json!({"name": "bob", "role": "viewer", "password": "short"}));
    assert_status(&c.admin(M::POST, operators, operators, short).await, 400);
    assert_status(&c.admin(M::GET, operators, operators, Nothing).await, 200);
    let operator = "/admin/operators/{name}";
    assert_status(
        &c.admin(M::DELETE, "/admin/operators/alice", operator, Nothing)
            .await,
        200,
    );
    assert_status(
        &c.admin(M::DELETE, "/admin/operators/alice", operator, Nothing)
            .await,
        404,
    );
    let alerts = "/admin/alerts/test";
    let tested = c
        .admin(M::POST, alerts, alerts, Json(json!({"trigger": "deny"})))
        .await;
    assert_status(&tested, 200);
    assert_eq!(tested.body["receivers"][0]["delivered"], false);
    let unknown = Json(json!({"trigger": "sometimes"}));
    assert_status(&c.admin(M::POST, alerts, alerts, unknown).await, 400);

    // Revoke, restore, delete, purge; a revoked agent's token is refused, then throttled.
    let revoke = "/admin/agents/{agent}/revoke";
    assert_status(
        &c.admin(M::POST, "/admin/agents/other/revoke", revoke, Nothing)
            .await,
        200,
    );
    assert_status(
        &c.check(&other_token_2, json!({"action": "read:x"})).await,
        401,
    );
    let throttled = c.check(&other_token_2, json!({"action": "read:x"})).await;
    assert_status(&throttled, 429);
    assert!(throttled.headers.contains_key("retry-after"));
    let restore = "/admin/agents/{agent}/restore";
    assert_status(
        &c.admin(M::POST, "/admin/agents/other/restore", restore, Nothing)
            .await,
        200,
    );
    let one = "/admin/agents/{agent}";
    assert_status(
        &c.admin(M::DELETE, "/admin/agents/other", one, Nothing)
            .await,
        200,
    );
    assert_status(
        &c.admin(M::DELETE, "/admin/agents/other?purge=maybe", one, Nothing)
            .await,
        400,
    );
    let purged = c
        .admin(M::DELETE, "/admin/agents/other?purge=true", one, Nothing)
        .await;
    assert_status(&purged, 200);
    assert_eq!(purged.body["purged"], true);

    // What was covered: every operation of the document but these, which this test cannot
    // reach with the real binary alone.
    let unreached: BTreeMap<(&str, &str), &str> = BTreeMap::from([
        (
            ("options", "/proxy/{path}"),
            "the same handler as the methods exercised",
        ),
        (
            ("put", "/proxy/{path}"),
            "the same handler as the methods exercised",
        ),
        (
            ("patch", "/proxy/{path}"),
            "the same handler as the methods exercised",
        ),
        (
            ("post", "/proxy/{path}"),
            "the same handler as the methods exercised",
        ),
        (
            ("head", "/proxy/{path}"),
            "the same handler as the methods exercised",
        ),
        (
            ("options", "/auth/forward"),
            "the same handler as the methods exercised",
        ),
        (
            ("put", "/auth/forward"),
            "the same handler as the methods exercised",
        ),
        (
            ("patch", "/auth/forward"),
            "the same handler as the methods exercised",
        ),
        (
            ("delete", "/auth/forward"),
            "the same handler as the methods exercised",
        ),
        (
            ("head", "/auth/forward"),
            "the same handler as the methods exercised",
        ),
    ]);
    let covered = contract.covered.lock().unwrap().clone();
    let all = contract.operations();
    let missing: Vec<&(String, String)> = all
        .iter()
        .filter(|op| !covered.contains(*op))
        .filter(|(method, path)| !unreached.contains_key(&(method.as_str(), path.as_str())))
        .collect();
    assert!(
        missing.is_empty(),
        "operations of the document no answer was validated for: {missing:?}"
    );
    eprintln!(
        "{} answers validated, covering {} of {} operations",
        contract.answers.lock().unwrap(),
        covered.len(),
        all.len()
    );
}

/// The validation above would pass anything if the schemas were loose or the references did not
/// resolve: an answer with a field the document does not name, one without a required field and
/// one with a wrong type are each refused, also inside a flattened (`allOf`) answer.
#[test]
fn the_contract_refuses_what_the_document_does_not_declare() {
    let run = CliRun::bare(&["openapi"]);
    run.assert_code(0);
    let contract = Contract::of(&serde_json::from_str(&run.stdout).unwrap());
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let errors = |name: &str, instance: Value| contract.errors(&schema(name), &instance, name);

    let error = json!({"error": "not_found", "message": "agent `x` not found"});
    assert_eq!(errors("ErrorBody", error.clone()), Vec::<String>::new());
    let mut extra = error.clone();
    extra["detail"] = json!("undocumented");
    assert!(
        !errors("ErrorBody", extra).is_empty(),
        "an undocumented field passed"
    );
    assert!(
        !errors("ErrorBody", json!({"error": "not_found"})).is_empty(),
        "a missing field passed"
    );
    assert!(
        !errors("ErrorBody", json!({"error": "nope", "message": "m"})).is_empty(),
        "an unknown code passed"
    );

    let agent = json!({
        "id": "agent_1", "name": "a", "trustTier": "verified", "tags": [], "status": "active",
        "description": null, "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z",
    });
    let mut created = agent.clone();
    created["token"] = json!("jwt");
    created["tokenId"] = json!("tok_1");
    created["expiresAt"] = Value::Null;
    assert_eq!(
        errors("CreatedAgent", created.clone()),
        Vec::<String>::new()
    );
    created["secret"] = json!("undocumented");
    assert!(
        !errors("CreatedAgent", created).is_empty(),
        "a flattened answer took an undocumented field"
    );
    let mut nested = json!({"agents": [agent], "nextCursor": null});
    assert_eq!(errors("AgentList", nested.clone()), Vec::<String>::new());
    nested["agents"][0]["status"] = json!("asleep");
    assert!(
        !errors("AgentList", nested).is_empty(),
        "a nested wrong value passed"
    );
}
