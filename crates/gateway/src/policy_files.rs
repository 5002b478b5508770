//! `serve --policies DIR`: every `*.yaml` in DIR is applied at start and re-applied when it
//! changes.
//!
//! The directory is polled once a second rather than watched with inotify: polling works the same
//! on every filesystem (bind mounts, network shares, editors that replace files by rename) and
//! costs a few small reads. A file that fails validation is logged with `file:line:col` and the
//! last good version of its policy stays in force.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshguard_store::{PolicyOrigin, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::policies::{PolicyChangeError, PolicyRegistry};

/// How often the directory is read.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What the watcher knows about the directory between polls.
#[derive(Debug, Default)]
pub struct PolicyDir {
    dir: PathBuf,
    /// Last text read from each file (valid or not), so an unchanged file is not re-applied.
    seen: BTreeMap<PathBuf, String>,
    /// The policy name each file successfully defined.
    owned: BTreeMap<PathBuf, String>,
    /// Files whose last version was refused; retried when another file's policy goes away.
    refused: std::collections::BTreeSet<PathBuf>,
}

/// A directory that cannot be read at start.
#[derive(Debug, thiserror::Error)]
#[error("{dir}: {source}")]
pub struct PolicyDirError {
    dir: String,
    source: std::io::Error,
}

impl PolicyDir {
    /// Reads `dir` for the first time: applies every valid file, and removes policies that a
    /// file of this directory used to define but that no longer exists.
    pub async fn load(
        registry: &PolicyRegistry,
        store: &dyn meshguard_store::Store,
        dir: &Path,
    ) -> Result<PolicyDir, PolicyDirError> {
        let mut state = PolicyDir {
            dir: dir.to_path_buf(),
            ..PolicyDir::default()
        };
        let files = list_yaml(dir).map_err(|source| PolicyDirError {
            dir: dir.display().to_string(),
            source,
        })?;
        state.sync(registry, files).await;
        match store.list_policies().await {
            Ok(stored) => {
                for policy in stored {
                    if let PolicyOrigin::File(file) = &policy.origin {
                        let path = PathBuf::from(file);
                        if path.parent() == Some(dir) && !state.seen.contains_key(&path) {
                            tracing::info!(policy = %policy.name, file, "policy file is gone; removing its policy");
                            report(registry.delete(&policy.name, false).await.map(|_| ()), file);
                        }
                    }
                }
            }
            Err(err) => tracing::error!(error = %err, "cannot list stored policies"),
        }
        Ok(state)
    }

    /// Reads the directory once and applies what changed.
    pub async fn poll(&mut self, registry: &PolicyRegistry) {
        match list_yaml(&self.dir) {
            Ok(files) => self.sync(registry, files).await,
            Err(err) => {
                tracing::error!(dir = %self.dir.display(), error = %err, "cannot read the policies directory; keeping the policies in force");
            }
        }
    }

    async fn sync(&mut self, registry: &PolicyRegistry, files: BTreeMap<PathBuf, String>) {
        // Removals first: a policy moved to another file must leave its old file before the
        // new one can own it.
        let gone: Vec<PathBuf> = self
            .seen
            .keys()
            .filter(|p| !files.contains_key(*p))
            .cloned()
            .collect();
        let mut released = false;
        for path in gone {
            self.seen.remove(&path);
            self.refused.remove(&path);
            if let Some(name) = self.owned.remove(&path) {
                let label = path.display().to_string();
                tracing::info!(policy = %name, file = %label, "policy file removed; removing its policy");
                report(registry.delete(&name, false).await.map(|_| ()), &label);
                released = true;
            }
        }
        if released {
            // A file refused because another file owned its name may apply now.
            for path in std::mem::take(&mut self.refused) {
                self.seen.remove(&path);
            }
        }
        for (path, text) in &files {
            if self.seen.get(path) == Some(text) {
                continue;
            }
            self.seen.insert(path.clone(), text.clone());
            let label = path.display().to_string();
            match registry
                .apply(PolicyOrigin::File(label.clone()), text)
                .await
            {
                Ok((policy, upsert)) => {
                    tracing::info!(policy = policy.name(), file = %label, revision = upsert.revision, changed = upsert.changed, "policy file applied");
                    self.refused.remove(path);
                    let previous = self.owned.insert(path.clone(), policy.name().to_owned());
                    if let Some(old) = previous.filter(|old| old != policy.name()) {
                        report(registry.delete(&old, false).await.map(|_| ()), &label);
                    }
                }
                Err(err) => {
                    self.refused.insert(path.clone());
                    report(Err(err), &label);
                }
            }
        }
    }
}

fn report(result: Result<(), PolicyChangeError>, file: &str) {
    match result {
        Ok(()) | Err(PolicyChangeError::Store(StoreError::NotFound { .. })) => {}
        Err(PolicyChangeError::Invalid(err)) => {
            // The error's Display is `file:line:col: path: message`.
            tracing::error!("{err}; the last good version stays in force");
        }
        Err(err) => {
            tracing::error!(file, error = %err, "policy file not applied; the last good version stays in force")
        }
    }
}

/// Every `*.yaml` file of `dir` with its text, by path.
fn list_yaml(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, String>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "yaml") && path.is_file() {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    files.insert(path, text);
                }
                // A file being replaced can vanish between listing and reading: next poll.
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "cannot read policy file")
                }
            }
        }
    }
    Ok(files)
}

/// Polls the directory until `stop` turns true.
pub fn spawn_watcher(
    registry: Arc<PolicyRegistry>,
    mut dir: PolicyDir,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => dir.poll(&registry).await,
                _ = stop.changed() => break,
            }
        }
    })
}
