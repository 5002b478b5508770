//! Migrations 8, 9 and 10 copy every audit event into the compact row (the chain and the agent
//! as numbers, hashes as bytes, then ids and trace ids as bytes and reasons as templates, then
//! outcomes as numbers). A trail written in the earlier layout comes back unchanged: the same events (ids and trace ids of every form), the same
//! hashes, verifying; tampering done before the migration is still found after it; `pos` and
//! each chain's `seq` go on where they were.

use meshguard_policy::{Code, Effect};
use meshguard_store::{
    AuditEvent, AuditFilter, AuditOrder, ShadowVerdict, StoreLocation, chain_event,
};
use sqlx::Connection as _;
use time::Duration;
use time::macros::datetime;

use crate::common::{TestDb, check_event};
use crate::on_every_backend;

on_every_backend!(a_trail_in_the_earlier_layout_migrates_to_compact_rows);

/// The migrations before the compact row, for `db`'s backend.
fn migrations_before_compact_rows(db: &TestDb) -> Vec<(&'static str, &'static str)> {
    macro_rules! files {
        ($backend:literal: $($name:literal),+) => {
            vec![$(($name, include_str!(concat!("../../migrations/", $backend, "/", $name)))),+]
        };
    }
    match db.location {
        StoreLocation::Sqlite { .. } => files!("sqlite": "0001_initial.sql",
            "0002_one_pending_approval.sql", "0003_shadow_verdicts.sql",
            "0004_approval_arguments.sql", "0005_operators.sql", "0006_audit_rollups.sql",
            "0007_audit_checkpoints.sql"),
        StoreLocation::Postgres { .. } => files!("postgres": "0001_initial.sql",
            "0002_one_pending_approval.sql", "0003_shadow_verdicts.sql",
            "0004_approval_arguments.sql", "0005_operators.sql", "0006_audit_rollups.sql",
            "0007_audit_checkpoints.sql"),
    }
}

/// Inserts `event` as a gateway before migration 8 stored it (gateway and hashes as text).
async fn insert_old_row(conn: &mut sqlx::AnyConnection, event: &AuditEvent, hash: &str) {
    let e = &event.event;
    let ts = i64::try_from(e.ts.unix_timestamp_nanos() / 1_000).unwrap();
    sqlx::query(
        "INSERT INTO audit_events (id, gateway, seq, ts, kind, agent_id, agent_name, action, \
         resource, decision, code, reason, policy, trace_id, context, latency_us, prev_hash, \
         hash, rule, shadow_decision, shadow_code, shadow_policy, shadow_rule) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21, $22, $23)",
    )
    .bind(&e.id)
    .bind(&e.gateway)
    .bind(i64::try_from(event.seq).unwrap())
    .bind(ts)
    .bind(e.kind.as_str())
    .bind(e.agent.as_ref().map(|a| a.id.clone()))
    .bind(e.agent.as_ref().map(|a| a.name.clone()))
    .bind(&e.action)
    .bind(&e.resource)
    .bind(e.decision.map(|d| d.as_str()))
    .bind(e.code.map(|c| c.as_str()))
    .bind(&e.reason)
    .bind(&e.policy)
    .bind(&e.trace_id)
    .bind("{}")
    .bind(e.latency_us.map(|us| i64::try_from(us).unwrap()))
    .bind(&event.prev_hash)
    .bind(hash)
    .bind(&e.rule)
    .bind(e.shadow.as_ref().map(|s| s.decision.as_str()))
    .bind(e.shadow.as_ref().map(|s| s.code.as_str()))
    .bind(e.shadow.as_ref().and_then(|s| s.policy.clone()))
    .bind(e.shadow.as_ref().and_then(|s| s.rule.clone()))
    .execute(&mut *conn)
    .await
    .unwrap();
}

async fn a_trail_in_the_earlier_layout_migrates_to_compact_rows(db: TestDb) {
    let url = match db.location {
        StoreLocation::Sqlite { .. } => format!("{}?mode=rwc", db.raw_url),
        StoreLocation::Postgres { .. } => db.raw_url.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, sql) in migrations_before_compact_rows(&db) {
        std::fs::write(dir.path().join(name), sql).unwrap();
    }
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    migrator.run(&mut conn).await.unwrap();

    // Two chains interleaved (gw-a 30 events, gw-b 20), their heads recorded, and a chain of
    // 2 events whose record was deleted (gw-lost). gw-a's seq 7 has a hash a hand edit wrote.
    let start = datetime!(2026-03-01 10:00:00 UTC);
    let mut originals: Vec<AuditEvent> = Vec::new();
    let mut heads: Vec<(&str, u64, String)> = vec![
        ("gw-a", 0, "0".repeat(64)),
        ("gw-b", 0, "0".repeat(64)),
        ("gw-lost", 0, "0".repeat(64)),
    ];
    for i in 0..52_i64 {
        let chain = match i {
            50.. => 2,
            _ if i % 5 < 3 => 0,
            _ => 1,
        };
        let (gateway, seq, prev) = &mut heads[chain];
        let decision = if i % 4 == 0 { "deny" } else { "allow" };
        let mut new = check_event(gateway, start + Duration::seconds(i), "read:file", decision);
        // Every form an id or a trace id is stored in (see `stored_id`), and spellings that
        // must stay text.
        new.trace_id = Some(match i % 5 {
            0 => format!("trace-{i}"),
            1 => format!("{i:032x}"),
            2 => format!("{:08x}-0000-4000-8000-{i:012x}", i + 0xabc),
            3 => format!("trace-{i:010}"),
            _ => format!("{i:032X}"),
        });
        // Reasons of every form: with the action once or twice, without it, none, and one
        // holding the template's marker (stored as it is).
        new.action = format!("read:file-{}", i % 3);
        new.reason = match i % 6 {
            0 => Some(format!(
                "Action '{}' allowed by rule 'r' of policy 'p'",
                new.action
            )),
            1 => Some(format!("{0} then {0}", new.action)),
            2 => Some("no action named".to_owned()),
            3 => None,
            4 => Some(format!("odd \u{1} reason for {}", new.action)),
            _ => new.reason.take(),
        };
        // Outcomes of every form: rules named, none and empty, policies with characters
        // beyond ASCII, and shadow verdicts with and without their policy and rule.
        new.rule = match i % 4 {
            0 => Some("rule-1".to_owned()),
            1 => None,
            2 => Some(String::new()),
            _ => Some("1:rule-1-".to_owned()),
        };
        if i % 7 == 0 {
            new.policy = Some("pölicy".to_owned());
        }
        new.shadow = match i % 5 {
            0 => Some(ShadowVerdict {
                decision: Effect::Allow,
                code: Code::Allowed,
                policy: Some("next".to_owned()),
                rule: None,
            }),
            1 => Some(ShadowVerdict {
                decision: Effect::Deny,
                code: Code::DefaultDeny,
                policy: None,
                rule: None,
            }),
            _ => None,
        };
        match i {
            3 => new.id = format!("{:08X}-0000-7000-8000-{i:012X}", i + 0xabc),
            4 => new.id = format!("evt-{i:012}"),
            5 => new.id = format!("{i:032x}"),
            _ => {}
        }
        let event = chain_event(&new, *seq + 1, prev).unwrap();
        let stored_hash = if *gateway == "gw-a" && event.seq == 7 {
            "not a hash".to_owned()
        } else {
            event.hash.clone()
        };
        insert_old_row(&mut conn, &event, &stored_hash).await;
        *seq = event.seq;
        prev.clone_from(&event.hash);
        originals.push(event);
    }
    for (gateway, seq, hash) in &heads[..2] {
        sqlx::query(
            "INSERT INTO audit_chains (gateway, head_seq, head_hash, anchor_seq, anchor_hash) \
             VALUES ($1, $2, $3, 0, $4)",
        )
        .bind(*gateway)
        .bind(i64::try_from(*seq).unwrap())
        .bind(hash)
        .bind("0".repeat(64))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    // A row that came and went (as retention removes them): `pos` must not go back to it.
    let gone = chain_event(
        &check_event("gw-gone", start, "read:file", "allow"),
        1,
        &"0".repeat(64),
    )
    .unwrap();
    insert_old_row(&mut conn, &gone, &gone.hash).await;
    let gone_pos: i64 = sqlx::query_scalar("SELECT MAX(pos) FROM audit_events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_events WHERE gateway = 'gw-gone'")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let store = db.open().await;

    // Every event reads back as it was written, hashes included, in commit order.
    let page = store
        .query_audit(&AuditFilter {
            limit: 1000,
            order: AuditOrder::OldestFirst,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.entries.len(), originals.len());
    for (read, original) in page.entries.iter().zip(&originals) {
        let tampered = read.event.gateway == "gw-a" && read.seq == 7;
        assert_eq!(read.event, original.event);
        assert_eq!(
            (read.seq, &read.prev_hash),
            (original.seq, &original.prev_hash)
        );
        if tampered {
            assert_eq!(read.hash, hex::encode("not a hash"));
        } else {
            assert_eq!(read.hash, original.hash);
        }
    }
    for original in &originals[..6] {
        let one = store.audit_event(&original.event.id).await.unwrap();
        assert_eq!(one.hash, original.hash);
        let traced = store
            .query_audit(&AuditFilter {
                trace_id: original.event.trace_id.clone(),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let ids: Vec<_> = traced.entries.iter().map(|e| &e.event.id).collect();
        assert_eq!(ids, [&original.event.id]);
    }
    let b_only = store
        .query_audit(&AuditFilter {
            limit: 1000,
            gateway: Some("gw-b".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(b_only.entries.len(), 20);

    // Verification: gw-b verifies; gw-a breaks where the hand edit was; gw-lost, which had no
    // chain record, is reported as never appended through MeshGuard.
    let report = store
        .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
        .await
        .unwrap();
    let verdicts: Vec<_> = report
        .chains
        .iter()
        .map(|c| {
            let broken = c.broken.as_ref().map(|b| (b.seq, b.reason.clone()));
            (c.gateway.as_str(), broken)
        })
        .collect();
    assert_eq!(verdicts.len(), 3, "{verdicts:?}");
    let (_, a) = &verdicts[0];
    assert_eq!(a.as_ref().map(|(seq, _)| *seq), Some(7), "{verdicts:?}");
    assert_eq!(verdicts[1], ("gw-b", None));
    let (lost, broken) = &verdicts[2];
    assert_eq!(*lost, "gw-lost");
    let (seq, reason) = broken.as_ref().unwrap();
    assert_eq!(*seq, 1);
    assert!(
        reason.contains("not appended through MeshGuard"),
        "{reason}"
    );

    // Appending goes on: the next seq of each chain, and a `pos` past every earlier one.
    let more = store
        .append_audit(&[check_event(
            "gw-b",
            start + Duration::hours(1),
            "read:file",
            "allow",
        )])
        .await
        .unwrap();
    assert_eq!(more[0].seq, 21);
    assert_eq!(more[0].prev_hash, heads[1].2);
    let newest = store.query_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(newest.entries[0].event.id, more[0].event.id);
    // An event whose outcome the migration numbered (texts beyond ASCII, a shadow verdict)
    // finds that outcome: the migration's keys are the gateway's.
    let mut again = originals[0].event.clone();
    again.id = uuid::Uuid::now_v7().to_string();
    again.ts = start + Duration::hours(2);
    assert_eq!(again.policy.as_deref(), Some("pölicy"));
    assert!(again.shadow.is_some());
    let more = [more, store.append_audit(&[again]).await.unwrap()].concat();
    let mut conn = sqlx::AnyConnection::connect(&db.raw_url).await.unwrap();
    // Every canonical UUID id is stored as its 16 bytes; the three other spellings are not.
    let compact: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE length(id) = 16")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        compact,
        i64::try_from(originals.len() + more.len()).unwrap() - 3
    );
    // No row stores the hash of the event before it, but the one after the hand-edited hash:
    // its `prev_hash` is not that hash, and verification must go on seeing it.
    let linked: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM audit_events WHERE prev_hash IS NOT NULL")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(linked, [8]);
    // Reasons are templates, shared by every action: one row per sentence (the two with the
    // action in them, the one without, and `check_event`'s "allow by test"),
    // none for the reason holding the marker.
    let mut templates: Vec<String> = sqlx::query_scalar("SELECT template FROM audit_reasons")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    templates.sort();
    assert_eq!(
        templates,
        [
            "\u{1} then \u{1}",
            "Action '\u{1}' allowed by rule 'r' of policy 'p'",
            "allow by test",
            "no action named",
        ],
        "{templates:?}"
    );
    let inline: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE reason IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let with_marker = originals
        .iter()
        .filter(|e| {
            e.event
                .reason
                .as_deref()
                .is_some_and(|r| r.contains('\u{1}'))
        })
        .count();
    assert_eq!(
        inline,
        i64::try_from(with_marker).unwrap(),
        "reasons kept in the row"
    );
    assert!(with_marker > 0);
    // Outcomes are numbers: no row keeps its kind, and one outcome stands for each
    // combination of the trail (the appended event's is one of them).
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE kind IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept, 0);
    let combinations: std::collections::BTreeSet<String> = originals
        .iter()
        .chain(&more)
        .map(|e| {
            let e = &e.event;
            format!(
                "{:?}",
                (e.kind, e.decision, e.code, &e.policy, &e.rule, &e.shadow)
            )
        })
        .collect();
    let outcomes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_outcomes")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(outcomes, i64::try_from(combinations.len()).unwrap());
    assert!(combinations.len() > 10, "{combinations:?}");
    let pos: i64 = sqlx::query_scalar("SELECT MAX(pos) FROM audit_events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(pos > gone_pos, "pos {pos} went back to {gone_pos}");

    // A chain record deleted behind MeshGuard's back takes the gateway's name with it: its
    // events are reported under the chain's number.
    let chain: i64 = sqlx::query_scalar("SELECT chain FROM audit_chains WHERE gateway = 'gw-b'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    db.raw("DELETE FROM audit_chains WHERE gateway = 'gw-b'")
        .await;
    let report = store
        .verify_audit(&meshguard_store::VerifyOptions::full(Default::default()))
        .await
        .unwrap();
    let named = format!("chain #{chain}");
    let orphan = report
        .chains
        .iter()
        .find(|c| c.gateway == named)
        .unwrap_or_else(|| panic!("no report for {named}: {report:?}"));
    let broken = orphan.broken.as_ref().unwrap();
    assert_eq!(broken.seq, 1);
    assert!(
        broken.reason.contains("head record is missing"),
        "{broken:?}"
    );
    assert!(!report.chains.iter().any(|c| c.gateway == "gw-b"));
}
