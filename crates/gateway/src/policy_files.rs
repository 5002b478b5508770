//! `serve --policies DIR`: every policy file in DIR (see [`list_policy_files`]) is applied at
//! start and re-applied when it changes.
//!
//! The directory is polled once a second rather than watched with inotify: polling works the same
//! on every filesystem (bind mounts, network shares, editors that replace files by rename) and
//! costs a few small reads. A file that fails validation is logged with `file:line:col` and the
//! last good version of its policy stays in force. The same message goes out as an `error` alert,
//! once per distinct failure of a file: an unchanged broken file is not re-read, and a retry that
//! fails the same way does not alert again.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshguard_store::{PolicyOrigin, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alerts::{AlertQueue, POLICY_FILE_NOT_APPLIED};
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
    /// The failure last alerted for each file, until the file applies or goes away.
    alerted: BTreeMap<PathBuf, String>,
    /// Whether the directory itself could not be read at the last poll (alerted once per streak).
    unreadable: bool,
    /// Where `error` alerts about files go.
    alerts: AlertQueue,
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
    /// file of this directory used to define but that no longer exists. Files that fail raise
    /// `error` alerts on `alerts`.
    pub async fn load(
        registry: &PolicyRegistry,
        store: &dyn meshguard_store::Store,
        dir: &Path,
        alerts: AlertQueue,
    ) -> Result<PolicyDir, PolicyDirError> {
        let mut state = PolicyDir {
            dir: dir.to_path_buf(),
            alerts,
            ..PolicyDir::default()
        };
        let files = read_policy_files(dir).map_err(|source| PolicyDirError {
            dir: dir.display().to_string(),
            source,
        })?;
        state.sync(registry, files).await;
        match meshguard_store::all_policies(store).await {
            Ok(stored) => {
                for policy in stored {
                    if let PolicyOrigin::File(file) = &policy.origin {
                        let path = PathBuf::from(file);
                        if path.parent() == Some(dir) && !state.seen.contains_key(&path) {
                            tracing::info!(policy = %policy.name, file, "policy file is gone; removing its policy");
                            let removed = registry.delete_for_file(&policy.name).await;
                            state.report(removed.map(|_| ()), &path);
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
        match read_policy_files(&self.dir) {
            Ok(files) => {
                self.unreadable = false;
                self.sync(registry, files).await;
            }
            Err(err) => {
                tracing::error!(dir = %self.dir.display(), error = %err, "cannot read the policies directory; keeping the policies in force");
                if !self.unreadable {
                    let dir = self.dir.display().to_string();
                    self.alerts.failure(
                        POLICY_FILE_NOT_APPLIED,
                        "policy.load",
                        Some(&dir),
                        format!(
                            "cannot read the policies directory {dir}: {err}; the policies in force stay"
                        ),
                    );
                }
                self.unreadable = true;
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
            if let Some(name) = self.owned.get(&path).cloned() {
                let label = path.display().to_string();
                tracing::info!(policy = %name, file = %label, "policy file removed; removing its policy");
                let removed = registry.delete_for_file(&name).await;
                if removed.as_ref().is_err_and(is_transient) {
                    // Still known as seen and owned: the next poll tries the removal again.
                    self.report(removed.map(|_| ()), &path);
                    continue;
                }
                self.report(removed.map(|_| ()), &path);
                released = true;
            }
            self.owned.remove(&path);
            self.seen.remove(&path);
            self.refused.remove(&path);
            self.alerted.remove(&path);
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
            match registry.apply_file(&label, text).await {
                Ok((policy, upsert)) => {
                    tracing::info!(policy = policy.name(), file = %label, revision = upsert.revision, changed = upsert.changed, "policy file applied");
                    self.refused.remove(path);
                    // A later failure of this file is news again.
                    self.alerted.remove(path);
                    let previous = self.owned.insert(path.clone(), policy.name().to_owned());
                    if let Some(old) = previous.filter(|old| old != policy.name()) {
                        let removed = registry.delete_for_file(&old).await;
                        self.report(removed.map(|_| ()), path);
                    }
                }
                Err(err) if is_transient(&err) => {
                    // The text may be fine: forget it, so the next poll applies it again.
                    self.seen.remove(path);
                    self.report(Err(err), path);
                }
                Err(err) => {
                    self.refused.insert(path.clone());
                    self.report(Err(err), path);
                }
            }
        }
    }

    /// Logs a change of `path` that failed and raises an `error` alert with the same message,
    /// unless this file's last alert said the same.
    fn report(&mut self, result: Result<(), PolicyChangeError>, path: &Path) {
        let file = path.display().to_string();
        let message = match result {
            Ok(()) | Err(PolicyChangeError::Store(StoreError::NotFound { .. })) => return,
            Err(PolicyChangeError::Invalid(err)) => {
                // The error's Display is `file:line:col: path: message`.
                let message = format!("{err}; the last good version stays in force");
                tracing::error!("{message}");
                message
            }
            Err(err) => {
                tracing::error!(file, error = %err, "policy file not applied; the last good version stays in force");
                format!("{err}; the last good version stays in force")
            }
        };
        if self.alerted.get(path) == Some(&message) {
            return;
        }
        self.alerts.failure(
            POLICY_FILE_NOT_APPLIED,
            "policy.load",
            Some(&file),
            message.clone(),
        );
        self.alerted.insert(path.to_path_buf(), message);
    }
}

/// A failure that says nothing about the file (the store could not be written), so the same
/// change is tried again at the next poll rather than only when the file changes.
fn is_transient(err: &PolicyChangeError) -> bool {
    matches!(
        err,
        PolicyChangeError::Store(StoreError::Unavailable(_) | StoreError::Corrupt(_))
    )
}

/// The policy files of `dir`, in name order: its `*.yaml` and `*.yml` files (symlinks to files
/// included), not recursive. Hidden names (`.a.yaml`, an editor's `.#a.yaml` lock) and backups
/// ending in `~` are skipped. `serve --policies`, `serve --validate-only` and the CLI's
/// `policy validate|apply DIR` all list a directory with this, so they agree on what a policy
/// file is.
pub fn list_policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().is_some_and(is_policy_file_name) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Whether a file name found in a policies directory names a policy file.
fn is_policy_file_name(name: &OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    if bytes.starts_with(b".") || bytes.ends_with(b"~") {
        return false;
    }
    Path::new(name)
        .extension()
        .is_some_and(|ext| ext == "yaml" || ext == "yml")
}

/// Every policy file of `dir` with its text, by path.
fn read_policy_files(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, String>> {
    let mut files = BTreeMap::new();
    for path in list_policy_files(dir)? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_yml_count_hidden_files_and_backups_do_not() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.yml",
            "a.yaml",
            ".hidden.yaml",
            ".#a.yaml",
            "a.yaml~",
            "c.yml~",
            "notes.txt",
            "UPPER.YAML",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        let names: Vec<_> = list_policy_files(dir.path())
            .unwrap()
            .into_iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.yaml", "b.yml"]);
    }
}
