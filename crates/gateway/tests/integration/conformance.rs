//! The conformance corpus (tests/conformance/decisions.yaml) through
//! `POST /proxy/governance/check`: one fresh gateway per suite, its agents created and its
//! policies applied through the admin API, one check per case.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::common::TestGateway;
use meshguard_gateway::GatewayOptions;
use meshguard_gateway::state::WallClock;
use meshguard_policy::corpus::{Corpus, PolicySource};
use serde_json::{Value, json};
use time::OffsetDateTime;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn as_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

#[tokio::test]
async fn every_case_of_the_corpus_gets_its_expected_decision_over_http() {
    let path = repo_root().join("tests/conformance/decisions.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let corpus = Corpus::parse("decisions.yaml", &text).unwrap();
    assert!(corpus.case_count() > 0);

    let mut failures = Vec::new();
    let mut ran = 0;
    // The gateway's wall clock, set to each case's `now` (or the real time when it has none).
    let now = Arc::new(Mutex::new(None::<OffsetDateTime>));
    let clock = Arc::clone(&now);
    let wall_clock: WallClock = Arc::new(move || {
        clock
            .lock()
            .unwrap()
            .unwrap_or_else(OffsetDateTime::now_utc)
    });
    for suite in &corpus.suites {
        let gw = TestGateway::with_options(GatewayOptions {
            wall_clock: Arc::clone(&wall_clock),
            ..GatewayOptions::default()
        })
        .await;
        for source in &suite.policies {
            let text = match source {
                PolicySource::File { name, .. } => {
                    std::fs::read_to_string(repo_root().join("examples/policies").join(name))
                        .unwrap_or_else(|e| panic!("suite {}: {name}: {e}", suite.name))
                }
                PolicySource::Inline { text, .. } => text.clone(),
            };
            gw.policy(&text).await;
        }
        let mut tokens = std::collections::BTreeMap::new();
        for (name, agent) in &suite.agents {
            let tags: Vec<&str> = agent.tags.iter().map(String::as_str).collect();
            let (_, token) = gw.agent(name, agent.trust.as_str(), &tags).await;
            tokens.insert(name.clone(), token);
        }
        // The rate-limit clock moves as the cases' `now` moves, so windows roll as they do offline.
        let mut last_now: Option<OffsetDateTime> = None;
        for case in &suite.cases {
            ran += 1;
            *now.lock().unwrap() = case.now;
            if let Some(at) = case.now {
                if let Some(before) = last_now
                    && at > before
                {
                    gw.clock.advance((at - before).try_into().unwrap());
                }
                last_now = Some(at);
            }
            let token = &tokens[&case.agent];
            let body =
                json!({"action": case.action, "resource": case.resource, "context": case.context});
            let reply = match &case.session {
                Some(session) => gw.check_in_trace(token, body, session).await,
                None => gw.check(token, body).await,
            };
            let body = &reply.body;
            let mut wrong = Vec::new();
            if let Some(decision) = &case.expect.decision {
                if body["decision"] != as_json(decision) {
                    wrong.push(format!(
                        "decision {} != {}",
                        body["decision"],
                        as_json(decision)
                    ));
                }
                let status = if decision.as_str() == "allow" {
                    200
                } else {
                    403
                };
                if reply.status.as_u16() != status {
                    wrong.push(format!("status {} != {status}", reply.status));
                }
            }
            if let Some(code) = &case.expect.code
                && body["code"] != as_json(code)
            {
                wrong.push(format!("code {} != {}", body["code"], as_json(code)));
            }
            if let Some(policy) = &case.expect.policy
                && body["policy"] != as_json(policy)
            {
                wrong.push(format!("policy {} != {}", body["policy"], as_json(policy)));
            }
            if let Some(rule) = &case.expect.rule
                && body["rule"] != as_json(rule)
            {
                wrong.push(format!("rule {} != {}", body["rule"], as_json(rule)));
            }
            if !wrong.is_empty() {
                failures.push(format!(
                    "{} / {}: {}",
                    suite.name,
                    case.name,
                    wrong.join("; ")
                ));
            }
        }
    }
    assert_eq!(ran, corpus.case_count());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn every_example_policy_applies_through_the_api() {
    let gw = TestGateway::new().await;
    let dir = repo_root().join("examples/policies");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            gw.policy(&std::fs::read_to_string(&path).unwrap()).await;
            count += 1;
        }
    }
    assert!(count >= 2);
    let listed = gw
        .admin(axum::http::Method::GET, "/admin/policies", None)
        .await;
    assert_eq!(listed.body["policies"].as_array().unwrap().len(), count);
}
