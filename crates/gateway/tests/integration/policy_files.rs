//! `--policies DIR` polling, driven one poll at a time: additions, edits, bad files, removals,
//! renames, and two files claiming one policy name.

use crate::common::TestGateway;
use meshguard_store::PolicyOrigin;

fn policy(name: &str, version: &str) -> String {
    format!(
        "name: {name}\nversion: \"{version}\"\nrules:\n  - effect: allow\n    actions: [\"read:*\"]\n"
    )
}

async fn in_force(gw: &TestGateway) -> Vec<(String, String, String)> {
    meshguard_store::all_policies(&*gw.store)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.version, p.origin.as_str().to_owned()))
        .collect()
}

#[tokio::test]
async fn files_are_applied_edited_kept_on_error_and_removed() {
    let gw = TestGateway::new().await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yaml");
    std::fs::write(&a, policy("alpha", "1")).unwrap();
    std::fs::write(&b, "name: beta\nversion: \"1\"\nrules: [oops\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();

    let mut watched = gw.watch_policies(dir.path()).await;
    let a_label = a.display().to_string();
    assert_eq!(
        in_force(&gw).await,
        [("alpha".into(), "1".into(), a_label.clone())]
    );
    assert_eq!(gw.state.policies.current().len(), 1);

    // Fixing the bad file applies it; breaking a good one keeps its last good version.
    std::fs::write(&b, policy("beta", "1")).unwrap();
    std::fs::write(
        &a,
        "name: alpha\nversion: \"2\"\nrules:\n  - effect: alow\n",
    )
    .unwrap();
    watched.poll(&gw.state.policies).await;
    let now = in_force(&gw).await;
    assert_eq!(now.len(), 2);
    assert_eq!(now[0], ("alpha".into(), "1".into(), a_label.clone()));
    assert_eq!(now[1].0, "beta");

    // A removed file takes its policy with it.
    std::fs::remove_file(&b).unwrap();
    watched.poll(&gw.state.policies).await;
    assert_eq!(in_force(&gw).await.len(), 1);
    assert!(gw.state.policies.current().get("beta").is_none());

    // A file renamed keeps its policy in force, now owned by the new path.
    let renamed = dir.path().join("alpha.yaml");
    std::fs::write(&a, policy("alpha", "3")).unwrap();
    std::fs::rename(&a, &renamed).unwrap();
    watched.poll(&gw.state.policies).await;
    assert_eq!(
        in_force(&gw).await,
        [("alpha".into(), "3".into(), renamed.display().to_string())]
    );
}

#[tokio::test]
async fn a_second_file_with_the_same_name_waits_until_the_first_is_gone() {
    let gw = TestGateway::new().await;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("1-first.yaml");
    let second = dir.path().join("2-second.yaml");
    std::fs::write(&first, policy("shared", "first")).unwrap();
    std::fs::write(&second, policy("shared", "second")).unwrap();
    let mut watched = gw.watch_policies(dir.path()).await;
    let stored = gw.store.get_policy("shared").await.unwrap();
    assert_eq!(stored.version, "first");
    assert_eq!(
        stored.origin,
        PolicyOrigin::File(first.display().to_string())
    );

    std::fs::remove_file(&first).unwrap();
    watched.poll(&gw.state.policies).await;
    let stored = gw.store.get_policy("shared").await.unwrap();
    assert_eq!(stored.version, "second");
    assert_eq!(
        stored.origin,
        PolicyOrigin::File(second.display().to_string())
    );
}

#[tokio::test]
async fn policies_of_files_deleted_while_stopped_are_removed_at_start() {
    let gw = TestGateway::new().await;
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone.yaml");
    std::fs::write(&gone, policy("gone", "1")).unwrap();
    gw.watch_policies(dir.path()).await;
    assert_eq!(in_force(&gw).await.len(), 1);
    std::fs::remove_file(&gone).unwrap();
    gw.watch_policies(dir.path()).await;
    assert!(in_force(&gw).await.is_empty());
    assert!(gw.state.policies.current().is_empty());
}

#[tokio::test]
async fn a_change_the_store_could_not_take_is_applied_once_it_is_back() {
    let gw = TestGateway::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edited.yaml");
    let gone = dir.path().join("gone.yaml");
    std::fs::write(&file, policy("edited", "1")).unwrap();
    std::fs::write(&gone, policy("gone", "1")).unwrap();
    let mut watched = gw.watch_policies(dir.path()).await;
    assert_eq!(in_force(&gw).await.len(), 2);

    // The store goes away while one file is edited and the other removed.
    gw.link.cut(true);
    std::fs::write(&file, policy("edited", "2")).unwrap();
    std::fs::remove_file(&gone).unwrap();
    watched.poll(&gw.state.policies).await;
    watched.poll(&gw.state.policies).await;
    gw.link.cut(false);
    let versions = |policies: Vec<(String, String, String)>| {
        policies
            .into_iter()
            .map(|(name, version, _)| (name, version))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        versions(in_force(&gw).await),
        [("edited".into(), "1".into()), ("gone".into(), "1".into())],
        "nothing changed while the store was down"
    );

    // Back: the next poll applies both changes, although neither file changed since.
    watched.poll(&gw.state.policies).await;
    assert_eq!(
        versions(in_force(&gw).await),
        [("edited".into(), "2".into())]
    );
    let in_memory = gw.state.policies.current();
    assert_eq!(in_memory.len(), 1);
    assert_eq!(in_memory.get("edited").unwrap().version(), "2");
}

#[tokio::test]
async fn yml_files_are_applied_and_hidden_files_and_backups_are_not() {
    let gw = TestGateway::new().await;
    let dir = tempfile::tempdir().unwrap();
    let yml = dir.path().join("short.yml");
    std::fs::write(&yml, policy("short", "1")).unwrap();
    // An editor's lock file and backup of another policy must not become policies.
    std::fs::write(dir.path().join(".#draft.yaml"), policy("draft", "1")).unwrap();
    std::fs::write(dir.path().join("draft.yaml~"), policy("backup", "1")).unwrap();

    let mut watched = gw.watch_policies(dir.path()).await;
    assert_eq!(
        in_force(&gw).await,
        [("short".into(), "1".into(), yml.display().to_string())]
    );

    std::fs::write(&yml, policy("short", "2")).unwrap();
    watched.poll(&gw.state.policies).await;
    assert_eq!(in_force(&gw).await[0].1, "2");
}
