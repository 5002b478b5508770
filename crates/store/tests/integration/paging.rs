//! Every listing pages by key: reading page after page returns each row that was there once, in
//! order, with no gap, even when rows are added between two pages.

use std::collections::HashSet;
use std::sync::Arc;

use crate::common::{TestDb, new_agent};
use crate::on_every_backend;
use meshguard_store::{NewApproval, NewPolicy, Page, PageRequest, PolicyOrigin, Store, StoreError};
use time::{Duration, OffsetDateTime};

on_every_backend!(
    agents_page_by_name,
    policies_and_revisions_page,
    approvals_page_newest_first,
    a_bad_cursor_is_refused
);

/// Reads every page of a listing, `size` rows at a time, calling `between` after the first page;
/// returns the keys in the order read.
async fn read_all<T, F, Fut>(size: u32, mut list: F, key: impl Fn(&T) -> String) -> Vec<String>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Page<T>>,
{
    let mut request = PageRequest::first(size);
    let mut keys = Vec::new();
    loop {
        let page = list(request.clone()).await;
        assert!(page.items.len() <= size as usize);
        keys.extend(page.items.iter().map(&key));
        match page.next_cursor {
            Some(cursor) => request.cursor = Some(cursor),
            None => return keys,
        }
    }
}

fn assert_unique(keys: &[String]) {
    let distinct: HashSet<_> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "a row came twice: {keys:?}");
}

async fn agents_page_by_name(db: TestDb) {
    let store = db.open().await;
    for name in ["delta", "alpha", "echo", "charlie", "bravo"] {
        store
            .create_agent(new_agent(name, "verified", &[]))
            .await
            .unwrap();
    }
    let first = store.list_agents(&PageRequest::first(2)).await.unwrap();
    let names: Vec<_> = first.items.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["alpha", "bravo"]);
    // Added between pages: one before the cursor (not shown), one after it (shown in its place).
    for name in ["aaron", "dana"] {
        store
            .create_agent(new_agent(name, "verified", &[]))
            .await
            .unwrap();
    }
    let mut rest = read_all(
        2,
        |mut request| {
            let store = Arc::clone(&store);
            if request.cursor.is_none() {
                request.cursor.clone_from(&first.next_cursor);
            }
            async move { store.list_agents(&request).await.unwrap() }
        },
        |a| a.name.clone(),
    )
    .await;
    let mut all = vec!["alpha".to_owned(), "bravo".to_owned()];
    all.append(&mut rest);
    assert_eq!(all, ["alpha", "bravo", "charlie", "dana", "delta", "echo"]);

    let everything = store.list_agents(&PageRequest::default()).await.unwrap();
    assert_eq!(everything.items.len(), 7);
    assert_eq!(everything.next_cursor, None, "the last page says so");
}

fn policy(name: &str, body: &str) -> NewPolicy {
    NewPolicy {
        name: name.to_owned(),
        version: "1".to_owned(),
        origin: PolicyOrigin::Api,
        source: format!("name: {name}\nversion: \"1\"\n# {body}\n"),
    }
}

async fn policies_and_revisions_page(db: TestDb) {
    let store = db.open().await;
    let names: Vec<String> = (0..7).map(|n| format!("policy-{n}")).collect();
    for name in names.iter().rev() {
        store.upsert_policy(policy(name, "v1")).await.unwrap();
    }
    let listed = read_all(
        3,
        |request| {
            let store = Arc::clone(&store);
            async move { store.list_policies(&request).await.unwrap() }
        },
        |p| p.name.clone(),
    )
    .await;
    assert_eq!(listed, names);
    assert_eq!(
        meshguard_store::all_policies(&*store).await.unwrap().len(),
        7
    );

    for body in ["v2", "v3", "v4"] {
        store.upsert_policy(policy("policy-0", body)).await.unwrap();
    }
    let first = store
        .policy_revisions("policy-0", &PageRequest::first(3))
        .await
        .unwrap();
    let numbers: Vec<u64> = first.items.iter().map(|r| r.revision).collect();
    assert_eq!(numbers, [1, 2, 3]);
    store.upsert_policy(policy("policy-0", "v5")).await.unwrap();
    let second = store
        .policy_revisions(
            "policy-0",
            &PageRequest {
                limit: 3,
                cursor: first.next_cursor,
            },
        )
        .await
        .unwrap();
    let numbers: Vec<u64> = second.items.iter().map(|r| r.revision).collect();
    assert_eq!(numbers, [4, 5], "the revision added between pages is read");
    assert_eq!(second.next_cursor, None);
}

async fn approvals_page_newest_first(db: TestDb) {
    let store = db.open().await;
    let agent = store
        .create_agent(new_agent("asker", "verified", &[]))
        .await
        .unwrap();
    let start = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let ask = |action: String, created_at| NewApproval {
        agent_id: agent.id.clone(),
        action,
        resource: "r".to_owned(),
        timeout_secs: 3600,
        trace_id: None,
        created_at,
        max_pending: u32::MAX,
        arguments: None,
    };
    // Three at the same instant, so that pages also split rows ordered by id alone.
    let mut expected = Vec::new();
    for n in 0..7 {
        let created_at = start + Duration::seconds(n.min(3));
        let record = store
            .create_approval(ask(format!("act:{n}"), created_at))
            .await
            .unwrap()
            .into_record()
            .unwrap();
        expected.push((created_at, record.id));
    }
    expected.sort();
    expected.reverse();
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    let first = store
        .list_approvals(None, &PageRequest::first(2))
        .await
        .unwrap();
    // A newer one, asked for between pages, belongs before the cursor: later pages skip it.
    store
        .create_approval(ask("act:late".to_owned(), start + Duration::hours(1)))
        .await
        .unwrap();
    let mut seen: Vec<String> = first.items.iter().map(|a| a.id.clone()).collect();
    let mut request = PageRequest {
        limit: 2,
        cursor: first.next_cursor,
    };
    while request.cursor.is_some() {
        let page = store.list_approvals(None, &request).await.unwrap();
        seen.extend(page.items.iter().map(|a| a.id.clone()));
        request.cursor = page.next_cursor;
    }
    assert_unique(&seen);
    assert_eq!(seen, expected);

    let all = read_all(
        3,
        |request| {
            let store = Arc::clone(&store);
            async move { store.list_approvals(None, &request).await.unwrap() }
        },
        |a| a.id.clone(),
    )
    .await;
    assert_unique(&all);
    assert_eq!(all.len(), 8);
}

async fn a_bad_cursor_is_refused(db: TestDb) {
    let store: Arc<dyn Store> = db.open().await;
    for name in ["one", "two", "three"] {
        store
            .create_agent(new_agent(name, "verified", &[]))
            .await
            .unwrap();
    }
    let agents_cursor = store
        .list_agents(&PageRequest::first(1))
        .await
        .unwrap()
        .next_cursor
        .unwrap();
    let garbage = PageRequest {
        limit: 1,
        cursor: Some("not a cursor".to_owned()),
    };
    let foreign = PageRequest {
        limit: 1,
        cursor: Some(agents_cursor),
    };
    for request in [&garbage, &foreign] {
        let refused = store.list_policies(request).await.unwrap_err();
        assert!(
            matches!(
                refused,
                StoreError::Invalid {
                    field: "cursor",
                    ..
                }
            ),
            "{refused}"
        );
        let refused = store.list_approvals(None, request).await.unwrap_err();
        assert!(
            matches!(
                refused,
                StoreError::Invalid {
                    field: "cursor",
                    ..
                }
            ),
            "{refused}"
        );
    }
    let refused = store.list_agents(&garbage).await.unwrap_err();
    assert!(matches!(
        refused,
        StoreError::Invalid {
            field: "cursor",
            ..
        }
    ));
}
