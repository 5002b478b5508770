//! A fresh store per test: a SQLite file in a temp dir, and a new PostgreSQL database (created
//! on the server named by `MESHGUARD_TEST_DATABASE_URL`, dropped afterwards) when that is set.

use std::collections::BTreeSet;
use std::sync::Arc;

use meshguard_store::{AuditAgent, AuditKind, NewAgent, NewAuditEvent, Store, StoreLocation, open};
use sqlx::Connection;
use time::OffsetDateTime;

pub struct TestDb {
    pub location: StoreLocation,
    /// URL for raw SQL access (tampering tests).
    pub raw_url: String,
    _dir: Option<tempfile::TempDir>,
    drop_database: Option<(String, String)>,
}

/// Runs `async fn $test(db: TestDb)` once per backend: `$test::sqlite` always, and
/// `$test::postgres` against `MESHGUARD_TEST_DATABASE_URL` (it says so and passes when unset).
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$test($crate::common::TestDb::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                match $crate::common::TestDb::postgres().await {
                    Some(db) => super::$test(db).await,
                    None => eprintln!("skipped: MESHGUARD_TEST_DATABASE_URL is not set"),
                }
            }
        }
    )+};
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::in_data_dir(dir.path());
        let StoreLocation::Sqlite { path } = &location else {
            unreachable!()
        };
        TestDb {
            raw_url: format!("sqlite://{}", path.display()),
            location,
            _dir: Some(dir),
            drop_database: None,
        }
    }

    pub async fn postgres() -> Option<TestDb> {
        sqlx::any::install_default_drivers();
        let server = std::env::var("MESHGUARD_TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty())?;
        let name = format!("meshguard_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::AnyConnection::connect(&server).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let (base, _) = server.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        Some(TestDb {
            location: StoreLocation::parse(&url).unwrap(),
            raw_url: url,
            _dir: None,
            drop_database: Some((server, name)),
        })
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        open(&self.location).await.unwrap()
    }

    /// Runs one SQL statement outside the store, as an attacker with database access would.
    pub async fn raw(&self, sql: &str) -> u64 {
        let mut conn = sqlx::AnyConnection::connect(&self.raw_url).await.unwrap();
        let done = sqlx::query(sql).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        done.rows_affected()
    }

    /// A SQL literal of the bytes `hex_digits` spell, as a stored hash is written (for
    /// tampering with one).
    pub fn hash_literal(&self, hex_digits: &str) -> String {
        match self.location {
            StoreLocation::Sqlite { .. } => format!("unhex('{hex_digits}')"),
            StoreLocation::Postgres { .. } => format!("decode('{hex_digits}', 'hex')"),
        }
    }

    /// A condition selecting the rows of `gateway`'s chain in `audit_events` (which stores the
    /// chain's number).
    pub fn chain_of(gateway: &str) -> String {
        format!("chain = (SELECT chain FROM audit_chains WHERE gateway = '{gateway}')")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((server, name)) = self.drop_database.take() else {
            return;
        };
        // Drop runs outside any runtime guarantee: use a private one on its own thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut admin = sqlx::AnyConnection::connect(&server).await.unwrap();
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
            });
        })
        .join();
        if dropped.is_err() {
            eprintln!("could not drop the test database");
        }
    }
}

pub fn new_agent(name: &str, trust: &str, tags: &[&str]) -> NewAgent {
    NewAgent {
        name: name.to_owned(),
        trust: trust.to_owned(),
        tags: tags
            .iter()
            .map(|tag| (*tag).to_owned())
            .collect::<BTreeSet<_>>(),
        description: None,
    }
}

/// A check event of `gateway`, with a fresh UUIDv7 id.
pub fn check_event(
    gateway: &str,
    ts: OffsetDateTime,
    action: &str,
    decision: &str,
) -> NewAuditEvent {
    let code = match decision {
        "allow" => "allowed",
        "deny" => "denied_by_rule",
        _ => "approval_required",
    };
    NewAuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        ts,
        kind: AuditKind::Check,
        agent: Some(AuditAgent {
            id: "agent_00000000000000000001".to_owned(),
            name: "autogpt".to_owned(),
        }),
        action: action.to_owned(),
        resource: Some("*".to_owned()),
        decision: meshguard_policy::Effect::parse(decision),
        code: meshguard_store::EventCode::parse(code),
        reason: Some(format!("{decision} by test")),
        policy: Some("autogpt-policy".to_owned()),
        rule: None,
        trace_id: None,
        approval_id: None,
        status: None,
        result: None,
        context: serde_json::Map::new(),
        latency_us: Some(12),
        gateway: gateway.to_owned(),
        shadow: None,
    }
}
