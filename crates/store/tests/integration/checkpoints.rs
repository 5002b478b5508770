//! Signed checkpoints: routine verification walks only what came after the newest checkpoint an
//! earlier verification walked through, `--full` walks everything, and a chain rewritten
//! consistently (every hash recomputed, the head moved along) is caught by the signature it no
//! longer matches — which the hash chain alone cannot do.

use ed25519_dalek::SigningKey;
use futures::TryStreamExt as _;
use meshguard_store::{
    AuditCheckpoint, AuditEvent, AuditFilter, CheckpointKeys, ExportLine, Store, VerifyOptions,
    VerifyReport, chain_event, export_audit,
};
use time::{Duration, OffsetDateTime, macros::datetime};

use crate::common::{TestDb, check_event};
use crate::on_every_backend;

on_every_backend!(
    routine_verification_starts_at_the_last_verified_checkpoint,
    a_consistently_rewritten_chain_breaks_its_checkpoint,
    forged_checkpoints_break_the_chain,
    exports_carry_the_checkpoints_after_their_events,
    retention_archives_what_it_deletes_before_deleting_it
);

const GATEWAY: &str = "gw-c";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn accepting(key: &SigningKey) -> CheckpointKeys {
    let mut keys = CheckpointKeys::default();
    keys.add(key.verifying_key());
    keys
}

async fn append(store: &dyn Store, count: i64) {
    let start = datetime!(2026-03-01 00:00:00 UTC);
    let batch: Vec<_> = (0..count)
        .map(|i| check_event(GATEWAY, start + Duration::seconds(i), "read:x", "allow"))
        .collect();
    store.append_audit(&batch).await.unwrap();
}

async fn event(store: &dyn Store, seq: u64) -> AuditEvent {
    let mut found = store.audit_chain_after(GATEWAY, seq - 1, 1).await.unwrap();
    assert_eq!(found.len(), 1, "seq {seq}");
    found.remove(0)
}

async fn sign(store: &dyn Store, key: &SigningKey, seq: u64) -> AuditCheckpoint {
    let signed = AuditCheckpoint::sign(
        key,
        GATEWAY,
        seq,
        &event(store, seq).await.hash,
        OffsetDateTime::now_utc(),
    );
    store.add_audit_checkpoint(&signed).await.unwrap();
    signed
}

async fn verify(store: &dyn Store, key: &SigningKey, full: bool) -> VerifyReport {
    let options = VerifyOptions {
        full,
        keys: accepting(key),
    };
    store.verify_audit(&options).await.unwrap()
}

async fn tamper(db: &TestDb, seq: u64) {
    let changed = db
        .raw(&format!(
            "UPDATE audit_events SET reason = 'nothing to see here' WHERE {} AND seq = {seq}",
            TestDb::chain_of(GATEWAY)
        ))
        .await;
    assert_eq!(changed, 1);
}

async fn routine_verification_starts_at_the_last_verified_checkpoint(db: TestDb) {
    let store = db.open().await;
    let key = key(7);
    append(&*store, 100).await;
    sign(&*store, &key, 60).await;

    // The first verification has nothing verified to start from: it walks everything and checks
    // the checkpoint on the way.
    let first = verify(&*store, &key, false).await;
    assert!(first.ok, "{first:?}");
    let chain = &first.chains[0];
    assert_eq!(
        (
            chain.from_seq,
            chain.events,
            chain.checkpoints,
            chain.signed_seq
        ),
        (0, 100, 1, Some(60))
    );

    // The next starts at the checkpoint (checked again) and walks only the events after it.
    append(&*store, 10).await;
    let routine = verify(&*store, &key, false).await;
    assert!(routine.ok, "{routine:?}");
    let chain = &routine.chains[0];
    assert_eq!(
        (chain.from_seq, chain.events, chain.head_seq),
        (60, 50, 110)
    );
    assert!(!routine.full);

    // An event altered before the checkpoint: routine verification does not walk it, --full does.
    tamper(&db, 30).await;
    assert!(verify(&*store, &key, false).await.ok);
    let full = verify(&*store, &key, true).await;
    let broken = full.first_break().expect("--full finds the altered event");
    assert_eq!(broken.seq, 30);
    assert!(broken.reason.contains("altered"), "{}", broken.reason);

    // An event altered after it: routine verification finds it.
    tamper(&db, 80).await;
    let routine = verify(&*store, &key, false).await;
    let broken = routine
        .first_break()
        .expect("routine verification finds it");
    assert_eq!((broken.seq, routine.chains[0].from_seq), (80, 60));

    // The checkpoint's own event altered: the walk cannot start there.
    tamper(&db, 60).await;
    let routine = verify(&*store, &key, false).await;
    let broken = routine
        .first_break()
        .expect("the checkpoint's event is checked");
    assert_eq!(broken.seq, 60);
    assert!(
        broken.reason.contains("verified checkpoint"),
        "{}",
        broken.reason
    );
}

/// Rewrites `seq` and every later event with correct hashes and moves the head along: the hash
/// chain alone still verifies after this, as an intruder with database access can do.
async fn rewrite_from(db: &TestDb, store: &dyn Store, seq: u64, head: u64) {
    let mut prev = event(store, seq).await.prev_hash;
    for at in seq..=head {
        let mut original = event(store, at).await;
        if at == seq {
            original.event.reason = Some("nothing to see here".into());
        }
        let rewritten = chain_event(&original.event, at, &prev).unwrap();
        db.raw(&format!(
            "UPDATE audit_events SET reason = '{}', prev_hash = {}, hash = {} \
             WHERE {} AND seq = {at}",
            rewritten.event.reason.clone().unwrap_or_default(),
            db.hash_literal(&rewritten.prev_hash),
            db.hash_literal(&rewritten.hash),
            TestDb::chain_of(GATEWAY)
        ))
        .await;
        prev = rewritten.hash;
    }
    db.raw(&format!(
        "UPDATE audit_chains SET head_hash = '{prev}' WHERE gateway = '{GATEWAY}'"
    ))
    .await;
}

async fn a_consistently_rewritten_chain_breaks_its_checkpoint(db: TestDb) {
    let store = db.open().await;
    let key = key(7);
    append(&*store, 50).await;
    let signed = sign(&*store, &key, 40).await;

    rewrite_from(&db, &*store, 10, 50).await;
    // Every hash of the rewritten chain is right: the walk passes seq 10 and breaks only at
    // the checkpoint whose signed hash the new event 40 no longer has.
    let full = verify(&*store, &key, true).await;
    let broken = full.first_break().expect("the signature no longer matches");
    assert_eq!(broken.seq, 40);
    assert_eq!(full.chains[0].events, 40);
    assert!(
        broken.reason.contains(&signed.hash) && broken.reason.contains("replaced"),
        "{}",
        broken.reason
    );
}

async fn forged_checkpoints_break_the_chain(db: TestDb) {
    let store = db.open().await;
    let ours = key(7);
    append(&*store, 20).await;
    // Signed by a key the verification does not accept.
    sign(&*store, &key(8), 5).await;
    let report = verify(&*store, &ours, true).await;
    let broken = report.first_break().expect("an unknown key");
    assert_eq!(broken.seq, 5);
    assert!(
        broken.reason.contains("not among the keys"),
        "{}",
        broken.reason
    );

    // Ours, with its signature altered in the database.
    let signed = sign(&*store, &ours, 10).await;
    db.raw(&format!(
        "DELETE FROM audit_checkpoints WHERE gateway = '{GATEWAY}' AND seq = 5"
    ))
    .await;
    let mut signature = signed.signature.clone();
    signature.replace_range(
        0..2,
        if signature.starts_with("00") {
            "11"
        } else {
            "00"
        },
    );
    db.raw(&format!(
        "UPDATE audit_checkpoints SET signature = '{signature}' WHERE gateway = '{GATEWAY}' AND seq = 10"
    ))
    .await;
    let report = verify(&*store, &ours, true).await;
    let broken = report.first_break().expect("an altered signature");
    assert_eq!(broken.seq, 10);
    assert!(
        broken.reason.contains("forged or altered"),
        "{}",
        broken.reason
    );
}

async fn exports_carry_the_checkpoints_after_their_events(db: TestDb) {
    let store = db.open().await;
    let key = key(7);
    append(&*store, 1200).await;
    // One in the first page of the export (500 events), one on a page's last event, one later.
    let signed = [
        sign(&*store, &key, 3).await,
        sign(&*store, &key, 500).await,
        sign(&*store, &key, 1100).await,
    ];
    let lines: Vec<ExportLine> = export_audit(store.clone(), AuditFilter::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(lines.len(), 1203);
    let mut last_seq = 0;
    let mut seen = Vec::new();
    for line in &lines {
        match line {
            ExportLine::Event(event) => last_seq = event.seq,
            ExportLine::Checkpoint { checkpoint } => {
                assert_eq!(checkpoint.seq, last_seq, "right after its event");
                seen.push(checkpoint.clone());
            }
        }
    }
    assert_eq!(seen, signed);
    let text = serde_json::to_string(&lines[3]).unwrap();
    assert!(
        text.starts_with(r#"{"checkpoint":{"gateway":"gw-c","seq":3,"#),
        "{text}"
    );
}

async fn retention_archives_what_it_deletes_before_deleting_it(db: TestDb) {
    use std::io::BufRead as _;
    let store = db.open().await;
    let key = key(7);
    // 12,000 old events (two archive files, twelve delete transactions), then 5 recent ones.
    let old = datetime!(2026-01-01 00:00:00 UTC);
    for part in 0..12 {
        let batch: Vec<_> = (0..1000)
            .map(|i| {
                check_event(
                    GATEWAY,
                    old + Duration::seconds(part * 1000 + i),
                    "read:x",
                    "allow",
                )
            })
            .collect();
        store.append_audit(&batch).await.unwrap();
    }
    let recent = datetime!(2026-03-01 00:00:00 UTC);
    let batch: Vec<_> = (0..5)
        .map(|i| check_event(GATEWAY, recent + Duration::seconds(i), "read:y", "deny"))
        .collect();
    store.append_audit(&batch).await.unwrap();
    let mut old_events = Vec::new();
    let mut after = 0;
    while after < 12_000 {
        let page = store.audit_chain_after(GATEWAY, after, 1000).await.unwrap();
        after = page.last().unwrap().seq;
        old_events.extend(page);
    }
    old_events.truncate(12_000);
    let signed = [
        sign(&*store, &key, 4_000).await,
        sign(&*store, &key, 10_001).await,
        sign(&*store, &key, 12_003).await,
    ];

    let dir = tempfile::tempdir().unwrap();
    let report = store
        .apply_retention(datetime!(2026-02-01 00:00:00 UTC), Some(dir.path()))
        .await
        .unwrap();
    assert_eq!(report.deleted, 12_000);
    let names: Vec<String> = report
        .archived
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "gw-c-000000000001-000000010000.jsonl.gz",
            "gw-c-000000010001-000000012000.jsonl.gz"
        ]
    );
    // The archives hold exactly the deleted events, in order, each checkpoint after its event.
    let mut archived = Vec::new();
    let mut checkpoints = Vec::new();
    for path in &report.archived {
        let file = std::fs::File::open(path).unwrap();
        let lines = std::io::BufReader::new(flate2::read::GzDecoder::new(file)).lines();
        for line in lines {
            let value: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            match value.get("checkpoint") {
                Some(checkpoint) => {
                    let checkpoint: AuditCheckpoint =
                        serde_json::from_value(checkpoint.clone()).unwrap();
                    assert_eq!(
                        checkpoint.seq,
                        archived.last().map_or(0, |e: &AuditEvent| e.seq)
                    );
                    checkpoints.push(checkpoint);
                }
                None => archived.push(serde_json::from_value::<AuditEvent>(value).unwrap()),
            }
        }
    }
    assert_eq!(archived, old_events);
    assert_eq!(checkpoints, signed[..2]);
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|entry| {
        !entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")
    }));
    // What is left verifies from the new anchor; the checkpoint of a deleted event is gone.
    let routine = verify(&*store, &key, true).await;
    assert!(routine.ok, "{routine:?}");
    assert_eq!(
        (routine.chains[0].anchor_seq, routine.chains[0].checkpoints),
        (12_000, 1)
    );
    assert_eq!(
        store.latest_audit_checkpoint(GATEWAY).await.unwrap(),
        Some(signed[2].clone())
    );
    assert!(
        store
            .audit_checkpoints(GATEWAY, 0, 12_000)
            .await
            .unwrap()
            .is_empty()
    );
}
