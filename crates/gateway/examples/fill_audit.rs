//! Writes N audited checks of one agent into a gateway's store, straight through the store (as
//! a second gateway's chain, `gw_fill`), so replay and stats can be measured over a trail of
//! millions without making millions of HTTP checks. One in ten is `read:secrets`, the rest
//! `read:docs`, spread evenly over the last `SPREAD_HOURS` hours.
//!
//! Usage: `fill_audit DATA_DIR AGENT_NAME COUNT` (prints how many `read:secrets` it wrote).

use std::path::PathBuf;

use meshguard_policy::{Code, Effect};
use meshguard_store::{AuditAgent, AuditKind, NewAuditEvent, StoreLocation};
use time::{Duration, OffsetDateTime};

/// Events per append transaction.
const BATCH: usize = 1000;
/// How far back the events go.
const SPREAD_HOURS: i64 = 6 * 24;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(agent), Some(count)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: fill_audit DATA_DIR AGENT_NAME COUNT".into());
    };
    let count: usize = count.parse()?;
    let store = meshguard_store::open(&StoreLocation::in_data_dir(&PathBuf::from(dir))).await?;
    let record = store.get_agent(&agent).await?;
    let agent = AuditAgent {
        id: record.id,
        name: record.name,
    };
    let now = OffsetDateTime::now_utc();
    let step = Duration::hours(SPREAD_HOURS) / i32::try_from(count.max(1)).unwrap_or(i32::MAX);
    let mut secrets = 0;
    let mut written = 0;
    while written < count {
        let batch: Vec<NewAuditEvent> = (written..count.min(written + BATCH))
            .map(|i| {
                let secret = i % 10 == 0;
                secrets += usize::from(secret);
                let age = step * i32::try_from(count - i).unwrap_or(i32::MAX);
                NewAuditEvent {
                    ts: now - age,
                    agent: Some(agent.clone()),
                    resource: Some(format!("file-{i}")),
                    decision: Some(Effect::Allow),
                    code: Some(Code::Allowed.into()),
                    reason: Some("allowed by rule 'all-reads' of policy 'reads'".into()),
                    policy: Some("reads".into()),
                    rule: Some("all-reads".into()),
                    trace_id: Some(format!("fill-{i}")),
                    latency_us: Some(50),
                    ..NewAuditEvent::new(
                        AuditKind::Check,
                        if secret { "read:secrets" } else { "read:docs" },
                        "gw_fill",
                    )
                }
            })
            .collect();
        written += batch.len();
        store.append_audit(&batch).await?;
    }
    println!("{secrets}");
    Ok(())
}
