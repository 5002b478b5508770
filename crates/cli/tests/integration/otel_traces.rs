//! OpenTelemetry: the real gateway exports the spans of its checks over OTLP/HTTP to a collector
//! running in this test (an axum server decoding what it receives with OpenTelemetry's own
//! protobuf definitions), linked under the caller's `traceparent`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::support::{CliRun, Gateway, free_port, repo_root};

/// What the collector received: every span, with the service name of its resource.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

async fn receive(State(received): State<Received>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut received = received.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|value| match value {
                AnyValue::StringValue(name) => name.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push((service.clone(), span));
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

/// An OTLP/HTTP collector on a free loopback port: its base URL and what it receives.
async fn collector() -> (String, Received) {
    collector_on(0).await
}

/// An OTLP/HTTP collector on loopback port `port` (0: a free one).
async fn collector_on(port: u16) -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|value| match value {
            AnyValue::StringValue(text) => text.clone(),
            AnyValue::DoubleValue(number) => number.to_string(),
            AnyValue::IntValue(number) => number.to_string(),
            other => format!("{other:?}"),
        })
}

/// Waits (at most 10 s) until the collector holds spans of `trace_id` named `names`.
async fn spans_of(received: &Received, trace_id: &[u8], names: &[&str]) -> Vec<(String, Span)> {
    spans_until(received, trace_id, names, |spans| {
        names
            .iter()
            .all(|name| spans.iter().any(|(_, span)| span.name == *name))
    })
    .await
}

/// Waits (at most 10 s) until the spans of `trace_id` the collector holds are `enough`
/// (`expected` names them in the failure).
async fn spans_until(
    received: &Received,
    trace_id: &[u8],
    expected: &[&str],
    enough: impl Fn(&[(String, Span)]) -> bool,
) -> Vec<(String, Span)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans: Vec<(String, Span)> = received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, span)| span.trace_id == trace_id)
            .cloned()
            .collect();
        if enough(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "the collector never received {expected:?} of the trace; it holds {:?}",
            received
                .lock()
                .unwrap()
                .iter()
                .map(|(_, s)| s.name.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Applies the walkthrough's AutoGPT policy and creates an agent it governs; its token.
/// The one `meshguard.check` span among `spans`, with its service name.
fn check_span(spans: &[(String, Span)]) -> (&str, &Span) {
    spans
        .iter()
        .find(|(_, span)| span.name == "meshguard.check")
        .map(|(service, span)| (service.as_str(), span))
        .expect("a meshguard.check span")
}

/// A check span's decision and code attributes.
fn verdict(check: &Span) -> (&str, &str) {
    let value = |key: &str| {
        check
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|value| match &value.value {
                Some(AnyValue::StringValue(text)) => Some(text.as_str()),
                _ => None,
            })
            .unwrap_or("")
    };
    (value("meshguard.decision"), value("meshguard.code"))
}

fn autogpt_agent(gateway: &Gateway, name: &str) -> String {
    let policy = repo_root().join("examples/policies/autogpt.yaml");
    gateway
        .cli(&["policy", "apply", policy.to_str().unwrap()])
        .assert_code(0);
    gateway.create_agent(name, "verified", "autogpt")
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const CHILDREN: [&str; 4] = [
    "meshguard.auth",
    "meshguard.decide",
    "meshguard.rate_limit",
    "meshguard.audit_commit",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_is_one_span_under_the_callers_traceparent_with_a_child_per_step() {
    let (endpoint, received) = collector().await;
    let gateway = Gateway::start_with_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_SERVICE_NAME", "meshguard-under-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let token = autogpt_agent(&gateway, "traced");

    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let allowed = gateway
        .check_with(
            &token,
            "read:workspace/notes.txt",
            "workspace/notes.txt",
            &[("traceparent", &traceparent)],
        )
        .await;
    assert_eq!(allowed.status, 200, "{:?}", allowed.body);

    let trace_id = hex_bytes(CALLER_TRACE);
    let mut names = vec!["meshguard.check"];
    names.extend(CHILDREN);
    let spans = spans_of(&received, &trace_id, &names).await;
    let (service, check) = check_span(&spans);
    assert_eq!(service, "meshguard-under-test");
    // The gateway's span is a child of the caller's.
    assert_eq!(check.parent_span_id, hex_bytes(CALLER_SPAN));
    assert_eq!(verdict(check), ("allow", "allowed"));
    assert_eq!(
        attribute(check, "meshguard.policy").as_deref(),
        Some("autogpt-policy")
    );
    assert_eq!(
        attribute(check, "meshguard.rule"),
        allowed.body["rule"].as_str().map(str::to_owned)
    );
    assert_eq!(
        attribute(check, "meshguard.agent").as_deref(),
        Some("traced")
    );
    assert_eq!(
        attribute(check, "meshguard.action").as_deref(),
        Some("read:workspace/notes.txt")
    );
    let latency: f64 = attribute(check, "meshguard.latency_ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(latency > 0.0);
    // One child span per step, each inside the check's time.
    for name in CHILDREN {
        let (_, child) = spans.iter().find(|(_, span)| span.name == name).unwrap();
        assert_eq!(child.parent_span_id, check.span_id, "{name}");
        assert!(
            child.start_time_unix_nano >= check.start_time_unix_nano,
            "{name}"
        );
        assert!(
            child.end_time_unix_nano <= check.end_time_unix_nano,
            "{name}"
        );
    }

    // The audit event keeps the caller's W3C trace id.
    let trace = gateway.cli_json(&["audit", "trace", CALLER_TRACE]);
    let entries = trace
        .as_array()
        .or_else(|| trace["entries"].as_array())
        .unwrap_or_else(|| panic!("{trace}"));
    assert_eq!(entries.len(), 1, "{trace}");
    assert_eq!(entries[0]["action"], "read:workspace/notes.txt");

    // A denial is traced too, with its code.
    let denied = gateway
        .check_with(
            &token,
            "execute:shell",
            "*",
            &[(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )],
        )
        .await;
    assert_eq!(denied.status, 403);
    let spans = spans_of(
        &received,
        &hex_bytes("0af7651916cd43dd8448eb211c80319c"),
        &["meshguard.check"],
    )
    .await;
    let (_, check) = check_span(&spans);
    assert_eq!(verdict(check), ("deny", "denied_by_rule"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_w3c_x_trace_id_puts_the_span_in_that_trace_and_the_last_spans_leave_on_stop() {
    let (endpoint, received) = collector().await;
    // A long batch delay: the span can only arrive through the flush of a stopping gateway.
    let mut gateway = Gateway::start_with_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ])
    .await;
    let token = gateway.create_agent("traced", "verified", "");
    let trace = "5b8aa5a2d2c872e8321cf37308d69df2";
    let denied = gateway
        .check_with(&token, "read:anything", "*", &[("X-Trace-ID", trace)])
        .await;
    assert_eq!(denied.status, 403, "no policy: denied by default");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        received.lock().unwrap().is_empty(),
        "exported before the batch was due"
    );
    assert!(
        gateway.stop(),
        "the gateway stops cleanly:\n{}",
        gateway.log()
    );
    let spans = spans_of(&received, &hex_bytes(trace), &["meshguard.check"]).await;
    let (service, check) = check_span(&spans);
    assert_eq!(service, "meshguard");
    assert_eq!(
        attribute(check, "meshguard.trace_id").as_deref(),
        Some(trace)
    );
    assert_eq!(verdict(check), ("deny", "no_policy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authzen_batch_is_one_check_span_per_evaluation_each_with_its_own_decision() {
    let (endpoint, received) = collector().await;
    let gateway = Gateway::start_with_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let token = autogpt_agent(&gateway, "batched");
    let trace = "d4cda95b652f4a1592b449d5929fda1b";
    let answer = crate::support::http(Duration::from_secs(10))
        .post(format!("{}/access/v1/evaluations", gateway.url))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-{CALLER_SPAN}-01"))
        .json(&serde_json::json!({
            "evaluations": [
                {"action": {"name": "read:workspace/notes.txt"}, "resource": {"id": "workspace/notes.txt"}},
                {"action": {"name": "execute:shell"}, "resource": {"id": "ls"}},
            ],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.unwrap();
    let decisions: Vec<&serde_json::Value> = answer["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["decision"])
        .collect();
    assert_eq!(decisions, [true, false], "{answer}");

    // Two check spans, one auth span, and decide, rate limit and audit commit for each check.
    let expected = ["meshguard.check", "meshguard.check", "meshguard.auth"];
    let spans = spans_until(&received, &hex_bytes(trace), &expected, |spans| {
        spans.len() >= 9
    })
    .await;
    assert_eq!(spans.len(), 9, "{spans:?}");
    let mut checks: Vec<&Span> = spans
        .iter()
        .map(|(_, span)| span)
        .filter(|span| span.name == "meshguard.check")
        .collect();
    checks.sort_by_key(|span| span.start_time_unix_nano);
    let described: Vec<(Option<String>, Option<String>)> = checks
        .iter()
        .map(|span| {
            (
                attribute(span, "meshguard.action"),
                attribute(span, "meshguard.decision"),
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            (
                Some("read:workspace/notes.txt".into()),
                Some("allow".into())
            ),
            (Some("execute:shell".into()), Some("deny".into())),
        ]
    );
    for check in &checks {
        assert_eq!(check.parent_span_id, hex_bytes(CALLER_SPAN));
        let children: Vec<&str> = spans
            .iter()
            .map(|(_, span)| span)
            .filter(|span| span.parent_span_id == check.span_id)
            .map(|span| span.name.as_str())
            .collect();
        for name in [
            "meshguard.decide",
            "meshguard.rate_limit",
            "meshguard.audit_commit",
        ] {
            assert_eq!(
                children.iter().filter(|c| **c == name).count(),
                1,
                "{name} of {:?}: {children:?}",
                attribute(check, "meshguard.action")
            );
        }
    }
    // The token was verified once, for the batch: the first evaluation's span holds it.
    let auth: Vec<&Span> = spans
        .iter()
        .map(|(_, span)| span)
        .filter(|span| span.name == "meshguard.auth")
        .collect();
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0].parent_span_id, checks[0].span_id);
    assert!(checks[0].end_time_unix_nano <= checks[1].start_time_unix_nano);
}

/// Waits (at most 10 s) until the gateway's log says `text`.
async fn logged(gateway: &Gateway, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gateway.log().contains(text) {
        assert!(
            Instant::now() < deadline,
            "the log never said {text:?}:\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_does_not_answer_is_logged_once_and_checks_go_on() {
    // Nothing listens on the endpoint's port until the collector starts there below.
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let gateway = Gateway::start_with_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let token = gateway.create_agent("traced", "verified", "");
    for _ in 0..3 {
        let denied = gateway.check(&token, "read:anything", "*").await;
        assert_eq!(denied.status, 403, "{:?}", denied.body);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let failing = "traces cannot be exported";
    logged(&gateway, failing).await;
    assert_eq!(
        gateway.log().matches(failing).count(),
        1,
        "one line per outage, not per export:\n{}",
        gateway.log()
    );

    // The collector comes up: the next spans reach it, and the log says so.
    let (_, received) = collector_on(port).await;
    let trace = "6e0c63257de34c92bf9efcd03927272e";
    let denied = gateway
        .check_with(&token, "read:anything", "*", &[("X-Trace-ID", trace)])
        .await;
    assert_eq!(denied.status, 403);
    spans_of(&received, &hex_bytes(trace), &["meshguard.check"]).await;
    logged(&gateway, "traces are exported again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_traces_off_a_traceparent_still_files_the_audit_event_under_its_trace_id() {
    let gateway = Gateway::start().await;
    let token = gateway.create_agent("untraced", "verified", "");
    let denied = gateway
        .check_with(
            &token,
            "read:anything",
            "*",
            &[(
                "traceparent",
                &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"),
            )],
        )
        .await;
    assert_eq!(denied.status, 403, "{:?}", denied.body);
    assert_eq!(denied.body["trace_id"], CALLER_TRACE);
    let trace = gateway.cli_json(&["audit", "trace", CALLER_TRACE]);
    let entries = trace
        .as_array()
        .or_else(|| trace["entries"].as_array())
        .unwrap_or_else(|| panic!("{trace}"));
    assert_eq!(entries.len(), 1, "{trace}");
    assert_eq!(entries[0]["action"], "read:anything");
    assert!(
        !gateway.log().contains("exporting traces"),
        "traces are off by default:\n{}",
        gateway.log()
    );
}

#[test]
fn an_endpoint_that_is_not_an_http_url_is_refused_naming_where_it_was_set() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("gw.toml");
    std::fs::write(&config, "[otel]\nendpoint = \"collector:4317\"\n").unwrap();
    let validate = |env: &[(&str, &str)]| CliRun::validate_only(&config, &data, env);
    let run = validate(&[]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("otel.endpoint") && run.stderr.contains("`collector:4317`"),
        "{}",
        run.stderr
    );
    // OpenTelemetry's own variable overrides the file, and is named when it is wrong.
    let run = validate(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://collector")]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && run.stderr.contains("grpc://"),
        "{}",
        run.stderr
    );
    let run = validate(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]);
    run.assert_code(0);
    // Empty is unset, as OpenTelemetry reads its variables: traces off, and the file's value is
    // not used either.
    let run = validate(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]);
    run.assert_code(0);
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
