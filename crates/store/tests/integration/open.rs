//! Opening a store: where the file goes, what an unreachable or newer database gives.

use crate::common::{TestDb, new_agent};
use crate::on_every_backend;
use meshguard_store::{PageRequest, StoreError, StoreLocation, open};

on_every_backend!(a_database_from_a_newer_meshguard_is_refused);

async fn a_database_from_a_newer_meshguard_is_refused(db: TestDb) {
    drop(db.open().await);
    db.raw(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         SELECT 99990101000000, 'from the future', success, checksum, execution_time \
         FROM _sqlx_migrations WHERE version = 1",
    )
    .await;
    let err = open(&db.location).await.err().expect("open must fail");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("newer version"), "{err}");
}

#[tokio::test]
async fn the_data_directory_is_created_and_odd_paths_work() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("nested").join("100% ready? #1");
    let location = StoreLocation::in_data_dir(&data_dir);
    let store = open(&location).await.unwrap();
    store
        .create_agent(new_agent("autogpt", "verified", &[]))
        .await
        .unwrap();
    drop(store);
    assert!(data_dir.join("meshguard.db").is_file());
    let reopened = open(&location).await.unwrap();
    assert_eq!(
        reopened
            .list_agents(&PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(reopened.backend(), "sqlite");
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable() {
    let location =
        StoreLocation::parse("postgres://meshguard:secret@127.0.0.1:1/meshguard").unwrap();
    let started = std::time::Instant::now();
    let err = open(&location)
        .await
        .err()
        .expect("nothing listens on port 1");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
