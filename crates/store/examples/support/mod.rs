//! What the store's load examples share: the audit event a gateway writes for a typical check.

use meshguard_store::{AuditAgent, AuditKind, NewAuditEvent};
use time::OffsetDateTime;

/// The `i`th check of `gateway`: an allowed read, as the AutoGPT walkthrough's agent asks it.
pub fn event(gateway: &str, ts: OffsetDateTime, i: usize) -> NewAuditEvent {
    NewAuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        ts,
        kind: AuditKind::Check,
        agent: Some(AuditAgent {
            id: "agent_00000000000000000001".into(),
            name: "autogpt".into(),
        }),
        action: "read:workspace/notes.txt".into(),
        resource: Some("*".into()),
        decision: Some(meshguard_policy::Effect::Allow),
        code: Some(meshguard_store::EventCode::Decided(
            meshguard_policy::Code::Allowed,
        )),
        reason: Some("Action 'read:workspace/notes.txt' allowed by rule 'rule-1'".into()),
        policy: Some("autogpt-policy".into()),
        rule: Some("rule-1".into()),
        trace_id: Some(format!("trace-{i}")),
        approval_id: None,
        status: None,
        result: None,
        context: serde_json::Map::new(),
        latency_us: Some(40),
        gateway: gateway.into(),
        shadow: None,
    }
}
