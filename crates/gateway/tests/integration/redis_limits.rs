//! Global rate limits in Redis (`--redis-url`): the in-memory limiter's semantics — at most N
//! admitted checks in any rolling window, all-or-nothing across limits, denied checks counted,
//! `Retry-After` until the oldest admitted entry leaves — held by one atomic script, and a
//! gateway that refuses every check (503) while Redis is gone.
//!
//! The tests need the Redis named by `MESHGUARD_TEST_REDIS_URL` (`scripts/services.sh` exports
//! it); without it they say so and pass. Each test uses its own key prefix, so they run in
//! parallel on one Redis and never see each other's counters. The outage tests start their own
//! throwaway `redis-server` on a free port.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use meshguard_gateway::config::Config;
use meshguard_gateway::history::HistoryStore;
use meshguard_gateway::rate_limit_redis::{RedisCounter, RedisLimiter};
use meshguard_gateway::{ConfigFlags, GatewayOptions, serve_listener};
use meshguard_policy::{Admission, LimitCharge, LimitKey, Window};
use serde_json::json;

use crate::common::TestGateway;

/// The shared test Redis, or `None` after saying why the test is skipped.
fn redis_url() -> Option<String> {
    let url = std::env::var("MESHGUARD_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!(
            "skipped: MESHGUARD_TEST_REDIS_URL is not set (eval \"$(bash scripts/services.sh)\")"
        );
    }
    url
}

/// A prefix no other test (or earlier run) uses.
fn prefix(test: &str) -> String {
    format!("meshguard-test:{test}:{}:", uuid::Uuid::new_v4().simple())
}

async fn limiter(test: &str) -> Option<RedisLimiter> {
    let url = redis_url()?;
    Some(RedisLimiter::connect(&url, &prefix(test)).await.unwrap())
}

fn counter(limiter: &RedisLimiter, name: &str, max: u64, window_ms: u64) -> RedisCounter {
    // The limiter's own key layout, with a name standing in for the agent.
    let key = limiter.key(name, &charge("p", None, max, Window::Minute));
    RedisCounter::requests(key, max, window_ms)
}

fn charge(policy: &str, rule: Option<&str>, max: u64, window: Window) -> LimitCharge {
    LimitCharge {
        key: LimitKey::requests(policy, rule),
        max,
        window,
        cost: 1,
    }
}

#[tokio::test]
async fn admits_n_then_denies_with_retry_after_until_the_oldest_leaves() {
    let Some(limiter) = limiter("admits-n").await else {
        return;
    };
    let limits = [charge("p", None, 3, Window::Minute)];
    for _ in 0..3 {
        assert_eq!(
            limiter.admit("a", &limits, true).await.unwrap(),
            Admission::Admitted
        );
    }
    // The oldest entry was admitted a moment ago: it leaves the window in (just under) 60 s.
    assert_eq!(
        limiter.admit("a", &limits, true).await.unwrap(),
        Admission::Exhausted {
            charge: 0,
            used: 3,
            retry_after_secs: Some(60)
        }
    );
    // Another agent, another counter; peeking charges nothing.
    for _ in 0..5 {
        assert_eq!(
            limiter.admit("b", &limits, false).await.unwrap(),
            Admission::Admitted
        );
    }
    assert_eq!(
        limiter.admit("b", &limits, true).await.unwrap(),
        Admission::Admitted
    );
    // Hour windows answer in hours.
    let hourly = [charge("p", None, 1, Window::Hour)];
    assert_eq!(
        limiter.admit("c", &hourly, true).await.unwrap(),
        Admission::Admitted
    );
    assert!(matches!(
        limiter.admit("c", &hourly, false).await.unwrap(),
        Admission::Exhausted {
            retry_after_secs: Some(3600),
            ..
        }
    ));
    // A zero limit admits nothing.
    assert!(matches!(
        limiter
            .admit("d", &[charge("p", None, 0, Window::Minute)], true)
            .await
            .unwrap(),
        Admission::Exhausted {
            charge: 0,
            used: 0,
            retry_after_secs: None
        }
    ));
}

#[tokio::test]
async fn all_or_nothing_charges_none_when_one_is_exhausted() {
    let Some(limiter) = limiter("all-or-nothing").await else {
        return;
    };
    let policy = charge("p", None, 5, Window::Minute);
    let rule = charge("p", Some("r"), 1, Window::Minute);
    let both = [policy.clone(), rule.clone()];
    assert_eq!(
        limiter.admit("a", &both, true).await.unwrap(),
        Admission::Admitted
    );
    for _ in 0..3 {
        assert!(matches!(
            limiter.admit("a", &both, true).await.unwrap(),
            Admission::Exhausted { charge: 1, .. }
        ));
    }
    // The refused checks charged nothing on the policy counter: 4 more fit.
    for _ in 0..4 {
        assert_eq!(
            limiter
                .admit("a", std::slice::from_ref(&policy), true)
                .await
                .unwrap(),
            Admission::Admitted
        );
    }
    assert!(matches!(
        limiter
            .admit("a", std::slice::from_ref(&policy), true)
            .await
            .unwrap(),
        Admission::Exhausted { charge: 0, .. }
    ));
}

#[tokio::test]
async fn the_window_rolls_and_keys_expire_after_it() {
    let Some(limiter) = limiter("rolling").await else {
        return;
    };
    // A 1.5 s window with room for 2, driven on Redis's clock.
    let c = [counter(&limiter, "a", 2, 1500)];
    let start = Instant::now();
    assert_eq!(
        limiter.admit_counters(&c, true).await.unwrap(),
        Admission::Admitted
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        limiter.admit_counters(&c, true).await.unwrap(),
        Admission::Admitted
    );
    // Full: one more fits when the first entry leaves, about 0.8 s from now (rounded up: 1 s).
    assert_eq!(
        limiter.admit_counters(&c, true).await.unwrap(),
        Admission::Exhausted {
            charge: 0,
            used: 2,
            retry_after_secs: Some(1)
        }
    );
    let url = redis_url().unwrap();
    let client = redis::Client::open(url).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&c[0].key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 1500, "{ttl}");

    // Past the first entry's window, not the second's: the window slid by one entry.
    tokio::time::sleep(Duration::from_millis(1600).saturating_sub(start.elapsed())).await;
    assert_eq!(
        limiter.admit_counters(&c, true).await.unwrap(),
        Admission::Admitted
    );
    assert!(matches!(
        limiter.admit_counters(&c, true).await.unwrap(),
        Admission::Exhausted { .. }
    ));
    // Idle for a whole window: the counter and its sum are gone.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&c[0].key)
        .arg(format!("{}:sum", c[0].key))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(exists, 0);
}

#[tokio::test]
async fn fifty_concurrent_checks_against_thirty_admit_exactly_thirty() {
    let Some(limiter) = limiter("concurrent").await else {
        return;
    };
    let limits = [
        charge("p", None, 30, Window::Minute),
        charge("p", Some("r"), 100, Window::Minute),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let limiter = limiter.clone();
        let limits = limits.clone();
        tasks.spawn(async move { limiter.admit("a", &limits, true).await.unwrap() });
    }
    let answers = tasks.join_all().await;
    let admitted = answers
        .iter()
        .filter(|a| **a == Admission::Admitted)
        .count();
    assert_eq!(admitted, 30, "{answers:?}");
    // The refused ones charged the rule counter nothing either.
    let url = redis_url().unwrap();
    let client = redis::Client::open(url).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    for limit in &limits {
        let count: i64 = redis::cmd("ZCARD")
            .arg(limiter.key("a", limit))
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(count, 30, "{limit:?}");
    }
}

const LIMITED: &str = r#"
name: limited
version: "1"
appliesTo: {tags: [t]}
rules:
  - name: no-delete
    effect: deny
    actions: ["delete:*"]
  - name: read
    effect: allow
    actions: ["read:*"]
rateLimits: {requestsPerMinute: 3}
"#;

async fn redis_gateway(limiter: RedisLimiter) -> TestGateway {
    TestGateway::with_options(GatewayOptions {
        redis: Some(limiter),
        ..GatewayOptions::default()
    })
    .await
}

#[tokio::test]
async fn a_gateway_on_redis_counts_denied_checks_and_answers_retry_after() {
    let Some(limiter) = limiter("gateway").await else {
        return;
    };
    let gw = redis_gateway(limiter).await;
    gw.policy(LIMITED).await;
    let (id, token) = gw.agent("dev", "verified", &["t"]).await;
    // Denied checks count too, as in memory.
    for _ in 0..2 {
        let reply = gw.check(&token, json!({"action": "delete:x"})).await;
        assert_eq!(reply.body["code"], "denied_by_rule", "{}", reply.text);
    }
    let reply = gw.check(&token, json!({"action": "read:x"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    // The admin `decide` peeks: it sees the exhausted limit and charges nothing.
    let peek = gw
        .admin(
            Method::POST,
            "/admin/decide",
            Some(json!({"agent": id, "action": "read:x"})),
        )
        .await;
    assert_eq!(peek.status, StatusCode::OK, "{}", peek.text);
    assert!(peek.text.contains("rate_limited"), "{}", peek.text);
    // An explicit deny still wins over the exhausted limit.
    let denied = gw.check(&token, json!({"action": "delete:x"})).await;
    assert_eq!(denied.body["code"], "denied_by_rule", "{}", denied.text);
    let limited = gw.check(&token, json!({"action": "read:x"})).await;
    assert_eq!(limited.status, StatusCode::FORBIDDEN, "{}", limited.text);
    assert_eq!(limited.body["code"], "rate_limited", "{}", limited.text);
    assert_eq!(limited.body["policy"], "limited", "{}", limited.text);
    let retry = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!((59..=60).contains(&retry), "{retry}");
    assert_eq!(limited.body["retry_after_seconds"], retry);

    let health = gw
        .send(Request::get("/health").body(Body::empty()).unwrap())
        .await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
    assert_eq!(health.body["checks"]["rate_limits"]["backend"], "redis");
    assert_eq!(health.body["checks"]["rate_limits"]["status"], "ok");
}

/// A `redis-server` of this test's own, on a free port, killed on drop.
struct ThrowawayRedis {
    child: Child,
    url: String,
}

impl ThrowawayRedis {
    /// `None`, after saying so, when `redis-server` is not installed.
    async fn start() -> Option<ThrowawayRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        ThrowawayRedis::start_on(port).await
    }

    async fn start_on(port: u16) -> Option<ThrowawayRedis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            eprintln!("skipped: redis-server is not installed");
            return None;
        };
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(ThrowawayRedis { child, url })
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn checks_fail_closed_with_503_while_redis_is_down() {
    if redis_url().is_none() {
        return;
    }
    let Some(mut server) = ThrowawayRedis::start().await else {
        return;
    };
    let limiter = RedisLimiter::connect(&server.url, &prefix("outage"))
        .await
        .unwrap();
    let gw = redis_gateway(limiter).await;
    gw.policy(LIMITED).await;
    let (id, token) = gw.agent("dev", "verified", &["t"]).await;
    let (_, stranger) = gw.agent("stranger", "verified", &["other"]).await;
    let reply = gw.check(&token, json!({"action": "read:x"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let before = gw.events().await.len();

    server.kill();
    let started = Instant::now();
    let reply = gw.check(&token, json!({"action": "read:x"})).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(reply.body["allowed"], false);
    assert_eq!(reply.body["decision"], "deny");
    assert_eq!(reply.body["code"], "unavailable");
    assert_eq!(
        reply.body["reason"],
        "rate-limit store (Redis) unavailable: nothing is allowed until it is back",
        "{}",
        reply.text
    );
    // A check no limit applies to needs no Redis: `no_policy` is still answered.
    let reply = gw.check(&stranger, json!({"action": "read:x"})).await;
    assert_eq!(reply.body["code"], "no_policy", "{}", reply.text);
    // The admin `decide` cannot peek either.
    let peek = gw
        .admin(
            Method::POST,
            "/admin/decide",
            Some(json!({"agent": id, "action": "read:x"})),
        )
        .await;
    assert_eq!(
        peek.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        peek.text
    );
    assert_eq!(peek.body["error"], "unavailable", "{}", peek.text);
    assert_eq!(
        peek.body["message"], "rate-limit store (Redis) unavailable",
        "{}",
        peek.text
    );
    let health = gw
        .send(Request::get("/health").body(Body::empty()).unwrap())
        .await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        health.body["checks"]["rate_limits"]["status"],
        "unavailable"
    );
    assert_eq!(health.body["checks"]["store"]["status"], "ok");
    // Only the `no_policy` check was recorded; the 503 answers have no event.
    assert_eq!(gw.events().await.len(), before + 1);

    // Redis back (empty: its counters were in memory): checks are admitted again.
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let _back = ThrowawayRedis::start_on(port).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = gw.check(&token, json!({"action": "read:x"})).await;
        if reply.status == StatusCode::OK {
            break;
        }
        assert_eq!(reply.body["code"], "unavailable", "{}", reply.text);
        assert!(Instant::now() < deadline, "no recovery: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn serve_refuses_to_start_when_redis_does_not_answer() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let flags = ConfigFlags {
        redis_url: Some(format!("redis://:secret@127.0.0.1:{port}")),
        data_dir: Some(tmp.path().join("home")),
        ..ConfigFlags::default()
    };
    let config = Config::load(None, &HashMap::new(), &flags, None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    let err = serve_listener(config, listener, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("redis"), "{err}");
    assert!(!err.contains("secret"), "{err}");
}

const EXFILTRATION: &str = r#"name: exfiltration
version: "1"
appliesTo: {tags: [t]}
rules:
  - name: no-mail-after-secrets
    effect: deny
    actions: ["send:email"]
    conditions:
      after: {action: "read:secrets/*", within: "1h"}
  - name: rest
    effect: allow
    actions: ["read:*", "send:*"]
"#;

#[tokio::test]
async fn history_conditions_read_the_past_that_redis_keeps_for_every_gateway() {
    let url = match redis_url() {
        Some(url) => url,
        None => return,
    };
    let prefix = prefix("history");
    let first = RedisLimiter::connect(&url, &prefix).await.unwrap();
    let second = RedisLimiter::connect(&url, &prefix).await.unwrap();

    // A check path on Redis: the secret read makes the next mail a denial.
    let gw = redis_gateway(first.clone()).await;
    gw.policy(EXFILTRATION).await;
    let (id, token) = gw.agent("dev", "verified", &["t"]).await;
    let mail = gw.check(&token, json!({"action": "send:email"})).await;
    assert_eq!(mail.status, StatusCode::OK, "{}", mail.text);
    let read = gw
        .check(
            &token,
            json!({"action": "read:secrets", "resource": "db.key"}),
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    let mail = gw.check(&token, json!({"action": "send:email"})).await;
    assert_eq!(mail.body["rule"], "no-mail-after-secrets", "{}", mail.text);

    // Another gateway on the same Redis sees the same past for the same agent.
    let patterns = gw.state.policies.current().history_patterns().to_vec();
    let other = HistoryStore::Redis(second);
    let history = other.view(&id, None, &patterns).await.unwrap();
    let last = history
        .last("read:secrets/*", meshguard_policy::HistoryScope::Agent)
        .expect("the read is in Redis");
    assert!(time::OffsetDateTime::now_utc() - last < time::Duration::minutes(1));
    assert!(
        history
            .last("read:secrets/*", meshguard_policy::HistoryScope::Session)
            .is_none()
    );
}

const SPENDING: &str = r#"
name: spending
version: "1"
appliesTo: {tags: [t]}
rules:
  - name: paid-calls
    effect: allow
    actions: ["call:*"]
    budget: {field: arguments.cost, perHour: 100}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_hold_one_budget_exactly_under_concurrent_checks() {
    let Some(url) = redis_url() else {
        return;
    };
    let prefix = prefix("budget");
    let first = RedisLimiter::connect(&url, &prefix).await.unwrap();
    let second = RedisLimiter::connect(&url, &prefix).await.unwrap();
    let a = redis_gateway(first.clone()).await;
    a.policy(SPENDING).await;
    let (id, token) = a.agent("spender", "verified", &["t"]).await;
    // A second gateway over the same store and the same Redis.
    let data = meshguard_gateway::data_dir::DataDir::open(a.dir.path(), None).unwrap();
    // The audit log is one process's: the second gateway commits to the store directly.
    let options = GatewayOptions {
        redis: Some(second),
        audit_log: false,
        ..GatewayOptions::default()
    };
    let (b_state, _background) =
        meshguard_gateway::state::AppState::new(a.store.clone(), &data, options)
            .await
            .unwrap();
    let b = meshguard_gateway::app(b_state);
    let a_app = meshguard_gateway::app(a.state.clone());

    // 40 checks of 5 at once, half through each gateway: the budget of 100 admits exactly 20.
    let body = json!({"action": "call:api", "context": {"arguments": {"cost": 5}}}).to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/proxy/governance/check")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap();
        let app = if i % 2 == 0 { b.clone() } else { a_app.clone() };
        tasks.spawn(async move {
            use tower::ServiceExt as _;
            let response = app.oneshot(request).await.unwrap();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["code"].clone()
        });
    }
    let codes = tasks.join_all().await;
    let allowed = codes.iter().filter(|c| **c == "allowed").count();
    let exceeded = codes.iter().filter(|c| **c == "budget_exceeded").count();
    assert_eq!((allowed, exceeded), (20, 20), "{codes:?}");

    // Redis holds exactly the budget: 100 in millionths, over 20 charges.
    let charge = LimitCharge {
        key: LimitKey::budget("spending", Some("paid-calls")),
        max: 100 * meshguard_policy::AMOUNT_SCALE,
        window: Window::Hour,
        cost: 0,
    };
    let key = first.key(&id, &charge);
    let client = redis::Client::open(url).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let sum: i64 = redis::cmd("GET")
        .arg(format!("{key}:sum"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(sum, 100_000_000);
    let members: i64 = redis::cmd("ZCARD")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(members, 20);

    // The refusal says what is used and left, and when the window makes room.
    let refused = a
        .check(
            &token,
            json!({"action": "call:api", "context": {"arguments": {"cost": 1}}}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert_eq!(refused.body["code"], "budget_exceeded");
    assert_eq!(refused.body["rule"], "paid-calls");
    let reason = refused.body["reason"].as_str().unwrap();
    assert!(
        reason.contains("has 100 used and 0 left; this check needs 1; retry in"),
        "{reason}"
    );
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&retry), "{retry}");
}
