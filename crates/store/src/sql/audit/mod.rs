//! The audit trail: append (hash chain), query, stats, verify, retention.

mod append;
mod checkpoint;
mod follow;
mod query;
mod retention;
mod rollup;
mod stats;
mod verify;

pub use append::chain_event;
pub(super) use append::{append, append_chained, append_in, head};
pub(super) use checkpoint::{
    add as add_checkpoint, latest as latest_checkpoint, range as checkpoints,
};
pub(super) use follow::{chain_after, heads};
pub(super) use query::{event, query};
pub(super) use retention::retain;
pub(super) use stats::stats;
pub(super) use verify::verify;

use sqlx::any::AnyRow;

use super::{column, time_column, unsigned, unsigned_opt};
use meshguard_policy::{Code, Effect};

use crate::{
    AuditAgent, AuditEvent, AuditKind, EventCode, NewAuditEvent, ShadowVerdict, StoreError,
};

const COLUMNS: &str = "id, gateway, seq, ts, kind, agent_id, agent_name, action, resource, \
                       decision, code, reason, policy, rule, trace_id, approval_id, status, \
                       result, context, latency_us, prev_hash, hash, shadow_decision, \
                       shadow_code, shadow_policy, shadow_rule";

/// Reads a typed column that may be NULL; a spelling MeshGuard never writes is corrupt data.
fn typed<T>(
    id: &str,
    name: &str,
    text: Option<String>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, StoreError> {
    text.map(|text| {
        parse(&text)
            .ok_or_else(|| StoreError::Corrupt(format!("audit event `{id}` has {name} `{text}`")))
    })
    .transpose()
}

/// The shadow verdict columns, all NULL when the event has none.
fn shadow_of(id: &str, row: &AnyRow) -> Result<Option<ShadowVerdict>, StoreError> {
    let Some(decision) = typed(
        id,
        "shadow_decision",
        column(row, "shadow_decision")?,
        Effect::parse,
    )?
    else {
        return Ok(None);
    };
    let code =
        typed(id, "shadow_code", column(row, "shadow_code")?, Code::parse)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "audit event `{id}` has a shadow decision without a code"
            ))
        })?;
    Ok(Some(ShadowVerdict {
        decision,
        code,
        policy: column(row, "shadow_policy")?,
        rule: column(row, "shadow_rule")?,
    }))
}

fn from_row(row: &AnyRow) -> Result<AuditEvent, StoreError> {
    let id: String = column(row, "id")?;
    let kind: String = column(row, "kind")?;
    let kind = AuditKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("audit event `{id}` has kind `{kind}`")))?;
    let agent_id: Option<String> = column(row, "agent_id")?;
    let agent_name: Option<String> = column(row, "agent_name")?;
    let context: String = column(row, "context")?;
    let context = serde_json::from_str(&context).map_err(|err| {
        StoreError::Corrupt(format!(
            "context of audit event `{id}` is not a JSON object: {err}"
        ))
    })?;
    Ok(AuditEvent {
        event: NewAuditEvent {
            ts: time_column(row, "ts")?,
            kind,
            agent: agent_id.map(|id| AuditAgent {
                id,
                name: agent_name.unwrap_or_default(),
            }),
            action: column(row, "action")?,
            resource: column(row, "resource")?,
            decision: typed(&id, "decision", column(row, "decision")?, Effect::parse)?,
            code: typed(&id, "code", column(row, "code")?, EventCode::parse)?,
            reason: column(row, "reason")?,
            policy: column(row, "policy")?,
            rule: column(row, "rule")?,
            trace_id: column(row, "trace_id")?,
            approval_id: column(row, "approval_id")?,
            status: column(row, "status")?,
            result: column(row, "result")?,
            context,
            latency_us: unsigned_opt(row, "latency_us")?,
            gateway: column(row, "gateway")?,
            shadow: shadow_of(&id, row)?,
            id,
        },
        seq: unsigned(row, "seq")?,
        prev_hash: column(row, "prev_hash")?,
        hash: column(row, "hash")?,
    })
}
