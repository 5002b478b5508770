//! An in-process gateway over a temp-dir SQLite store, driven through `app(state).oneshot(req)`.

pub mod severable;
pub mod upstream;
pub mod wire;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use meshguard_gateway::config::{AuditDurability, Mode};
use meshguard_gateway::data_dir::DataDir;
use meshguard_gateway::proxy::Upstreams;
use meshguard_gateway::rate_limit::ManualClock;
use meshguard_gateway::{AppState, Background, GatewayOptions, app};
use meshguard_store::{AuditEvent, AuditFilter, AuditOrder, Store, StoreLocation};
use serde_json::{Value, json};
use tower::ServiceExt;

pub struct TestGateway {
    pub state: AppState,
    pub background: Option<Background>,
    pub clock: Arc<ManualClock>,
    /// The real store, for reading what was committed whatever the switch says.
    pub store: Arc<dyn Store>,
    /// The store the gateway uses: the real one behind a switch.
    pub link: Arc<severable::Severable>,
    pub admin: String,
    pub dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl TestGateway {
    /// Loads `dir` as `serve --policies DIR` does, alerts included; `poll` it to reload.
    pub async fn watch_policies(
        &self,
        dir: &std::path::Path,
    ) -> meshguard_gateway::policy_files::PolicyDir {
        meshguard_gateway::policy_files::PolicyDir::load(
            &self.state.policies,
            &*self.store,
            dir,
            self.state.alerts.queue(),
        )
        .await
        .unwrap()
    }

    pub async fn new() -> TestGateway {
        TestGateway::with(Mode::Enforce, 64 * 1024).await
    }

    pub async fn with(mode: Mode, body_limit: usize) -> TestGateway {
        TestGateway::with_durability(mode, body_limit, AuditDurability::Sync).await
    }

    pub async fn with_durability(
        mode: Mode,
        body_limit: usize,
        audit_durability: AuditDurability,
    ) -> TestGateway {
        TestGateway::build(mode, body_limit, audit_durability, Upstreams::default()).await
    }

    pub async fn with_upstreams(mode: Mode, upstreams: Upstreams) -> TestGateway {
        TestGateway::build(mode, 64 * 1024, AuditDurability::Sync, upstreams).await
    }

    pub async fn build(
        mode: Mode,
        body_limit: usize,
        audit_durability: AuditDurability,
        upstreams: Upstreams,
    ) -> TestGateway {
        TestGateway::with_options(GatewayOptions {
            mode,
            body_limit,
            audit_durability,
            upstreams,
            ..GatewayOptions::default()
        })
        .await
    }

    /// A gateway with `options`, its rate-limit clock replaced by a [`ManualClock`].
    pub async fn with_options(options: GatewayOptions) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path(), None).unwrap();
        let store = meshguard_store::open(&StoreLocation::in_data_dir(dir.path()))
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new());
        let options = GatewayOptions {
            clock: clock.clone(),
            ..options
        };
        let link = Arc::new(severable::Severable::new(store.clone()));
        let (state, background) = AppState::new(link.clone(), &data, options).await.unwrap();
        TestGateway {
            state,
            background: Some(background),
            clock,
            store,
            link,
            admin: data.admin_token.expose().to_owned(),
            dir,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("x-admin-token", &self.admin);
        let body = match body {
            Some(value) => {
                builder = builder.header("content-type", "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).unwrap()).await
    }

    pub async fn admin_text(&self, method: Method, path: &str, text: &str) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("x-admin-token", &self.admin)
            .header("content-type", "application/yaml")
            .body(Body::from(text.to_owned()))
            .unwrap();
        self.send(request).await
    }

    /// Creates an agent and returns (id, token).
    pub async fn agent(&self, name: &str, trust: &str, tags: &[&str]) -> (String, String) {
        let reply = self
            .admin(
                Method::POST,
                "/admin/agents",
                Some(json!({"name": name, "trustTier": trust, "tags": tags})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        (
            reply.body["id"].as_str().unwrap().to_owned(),
            reply.body["token"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn policy(&self, yaml: &str) {
        let reply = self.admin_text(Method::POST, "/admin/policies", yaml).await;
        assert!(reply.status.is_success(), "{}", reply.text);
    }

    pub async fn check(&self, token: &str, body: Value) -> Reply {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/proxy/governance/check")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(request).await
    }

    /// A check sent in the trace (session) `trace`.
    pub async fn check_in_trace(&self, token: &str, body: Value, trace: &str) -> Reply {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/proxy/governance/check")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("x-trace-id", trace)
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(request).await
    }

    pub async fn check_raw(&self, token: &str, body: impl Into<Body>) -> Reply {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/proxy/governance/check")
            .header("authorization", format!("Bearer {token}"))
            .body(body.into())
            .unwrap();
        self.send(request).await
    }

    /// Writes the open refusal counts now, as the gateway does once their minute is over.
    pub async fn flush_refusals(&self) {
        meshguard_gateway::refusals::flush(&self.state.refusals, &self.state.audit).await;
    }

    /// Every committed event, oldest first.
    pub async fn events(&self) -> Vec<AuditEvent> {
        let mut all = Vec::new();
        let mut filter = AuditFilter {
            limit: 1000,
            order: AuditOrder::OldestFirst,
            ..AuditFilter::default()
        };
        // Acknowledged events may still be on their way from the audit log to the index.
        self.state.audit.settled().await;
        loop {
            let page = self.store.query_audit(&filter).await.unwrap();
            all.extend(page.entries);
            match page.next_cursor {
                Some(cursor) => filter.cursor = Some(cursor),
                None => return all,
            }
        }
    }
}

pub const AUTOGPT: &str = include_str!("../../../../../examples/policies/autogpt.yaml");
pub const AUTOGPT_PRODUCTION: &str =
    include_str!("../../../../../examples/policies/autogpt-production.yaml");
