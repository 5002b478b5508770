//! The policies in force: an immutable [`PolicySet`] swapped atomically on every change, so a
//! check never sees half an update and never waits for one.
//!
//! The store is the source of truth. Every change (admin API, policy files) is written to the
//! store first and the set is then rebuilt from it; changes are serialised by one async lock.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use meshguard_policy::{Policy, PolicyError, PolicySet, PolicySetError, parse_policy};
use meshguard_store::{NewPolicy, PolicyOrigin, PolicyUpsert, Store, StoreError, StoredPolicy};
use tokio::sync::Mutex;

/// Why a policy change was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyChangeError {
    /// The text is not a valid policy.
    #[error(transparent)]
    Invalid(#[from] PolicyError),
    /// The policy cannot join the others (a duplicate name).
    #[error(transparent)]
    Set(#[from] PolicySetError),
    /// The policy belongs to a file of `serve --policies DIR`.
    #[error("policy `{name}` is loaded from `{file}`: change the file instead")]
    FileOwned {
        /// The policy name.
        name: String,
        /// The file that owns it.
        file: String,
    },
    /// Two policy files define the same policy name.
    #[error("policy `{name}` in `{file}` is already defined by `{owner}`; rename one of them")]
    DefinedTwice {
        /// The policy name.
        name: String,
        /// The file refused.
        file: String,
        /// The file that defines it.
        owner: String,
    },
    /// The store refused or is unreachable.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The policies in force, shared by every request.
pub struct PolicyRegistry {
    current: ArcSwap<PolicySet>,
    store: Arc<dyn Store>,
    changes: Mutex<()>,
}

impl std::fmt::Debug for PolicyRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyRegistry")
            .field("policies", &self.current.load().len())
            .finish()
    }
}

/// The origin a stored policy is parsed under, so errors and lints name its file.
fn origin_label(stored: &StoredPolicy) -> String {
    match &stored.origin {
        PolicyOrigin::Api => format!("{}.yaml", stored.name),
        PolicyOrigin::File(path) => path.clone(),
    }
}

impl PolicyRegistry {
    /// Loads every stored policy. A stored policy that no longer parses stops the start: serving
    /// without it could turn one of its denials into an allow.
    pub async fn load(store: Arc<dyn Store>) -> Result<PolicyRegistry, PolicyChangeError> {
        let set = build(&*store).await?;
        Ok(PolicyRegistry {
            current: ArcSwap::from_pointee(set),
            store,
            changes: Mutex::new(()),
        })
    }

    /// The set in force now; a snapshot that later changes do not alter.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Re-reads the store (after a change made elsewhere).
    pub async fn reload(&self) -> Result<(), PolicyChangeError> {
        let _guard = self.changes.lock().await;
        self.current.store(Arc::new(build(&*self.store).await?));
        Ok(())
    }

    /// Validates the text of a policy file and stores it under its name (upsert), then puts it
    /// in force. A name another file defines is refused, naming that file.
    pub async fn apply_file(
        &self,
        file: &str,
        text: &str,
    ) -> Result<(Policy, PolicyUpsert), PolicyChangeError> {
        let store = &self.store;
        self.apply_with(
            PolicyOrigin::File(file.to_owned()),
            text,
            |policy| async move { Ok(store.upsert_policy(policy).await?) },
        )
        .await
    }

    /// Validates a policy an operator applies and hands it to `write` (the admin change that
    /// stores it with its audit event), then puts it in force. A file-owned policy is refused,
    /// naming the file; when `write` fails, the policies in force stay as they were.
    pub async fn apply_by_admin<E, Fut>(
        &self,
        text: &str,
        write: impl FnOnce(NewPolicy) -> Fut,
    ) -> Result<(Policy, PolicyUpsert), E>
    where
        E: From<PolicyChangeError>,
        Fut: Future<Output = Result<PolicyUpsert, E>>,
    {
        self.apply_with(PolicyOrigin::Api, text, write).await
    }

    async fn apply_with<E, Fut>(
        &self,
        origin: PolicyOrigin,
        text: &str,
        write: impl FnOnce(NewPolicy) -> Fut,
    ) -> Result<(Policy, PolicyUpsert), E>
    where
        E: From<PolicyChangeError>,
        Fut: Future<Output = Result<PolicyUpsert, E>>,
    {
        let label = match &origin {
            PolicyOrigin::Api => "request body".to_owned(),
            PolicyOrigin::File(path) => path.clone(),
        };
        let policy = parse_policy(&label, text).map_err(PolicyChangeError::from)?;
        let _guard = self.changes.lock().await;
        match &origin {
            PolicyOrigin::Api => refuse_file_owned(&*self.store, policy.name()).await?,
            PolicyOrigin::File(file) => {
                refuse_other_file(&*self.store, policy.name(), file).await?;
            }
        }
        // Prove the new set builds before anything is stored.
        let current = self.current.load_full();
        let candidate: Vec<Policy> = current
            .policies()
            .filter(|p| p.name() != policy.name())
            .cloned()
            .chain([policy.clone()])
            .collect();
        let set = PolicySet::new(candidate).map_err(PolicyChangeError::from)?;
        let upsert = write(NewPolicy {
            name: policy.name().to_owned(),
            version: policy.version().to_owned(),
            origin,
            source: text.to_owned(),
        })
        .await?;
        self.current.store(Arc::new(set));
        Ok((policy, upsert))
    }

    /// Removes the policy of a policy file that is gone (or now defines another name).
    pub async fn delete_for_file(&self, name: &str) -> Result<StoredPolicy, PolicyChangeError> {
        let _guard = self.changes.lock().await;
        let store = &self.store;
        self.remove_after(name, || async move { Ok(store.delete_policy(name).await?) })
            .await
    }

    /// Removes a policy an operator deletes: `write` is the admin change that deletes it with
    /// its audit event. A file-owned policy is refused, naming the file.
    pub async fn delete_by_admin<E, Fut>(
        &self,
        name: &str,
        write: impl FnOnce() -> Fut,
    ) -> Result<StoredPolicy, E>
    where
        E: From<PolicyChangeError>,
        Fut: Future<Output = Result<StoredPolicy, E>>,
    {
        let _guard = self.changes.lock().await;
        refuse_file_owned(&*self.store, name).await?;
        self.remove_after(name, write).await
    }

    /// Runs `write`, then takes `name` out of the set in force. The caller holds `changes`.
    async fn remove_after<E, Fut>(
        &self,
        name: &str,
        write: impl FnOnce() -> Fut,
    ) -> Result<StoredPolicy, E>
    where
        E: From<PolicyChangeError>,
        Fut: Future<Output = Result<StoredPolicy, E>>,
    {
        let deleted = write().await?;
        let remaining: Vec<Policy> = self
            .current
            .load()
            .policies()
            .filter(|p| p.name() != name)
            .cloned()
            .collect();
        self.current.store(Arc::new(
            PolicySet::new(remaining).map_err(PolicyChangeError::from)?,
        ));
        Ok(deleted)
    }
}

async fn refuse_file_owned(store: &dyn Store, name: &str) -> Result<(), PolicyChangeError> {
    match store.get_policy(name).await {
        Ok(StoredPolicy {
            origin: PolicyOrigin::File(file),
            ..
        }) => Err(PolicyChangeError::FileOwned {
            name: name.to_owned(),
            file,
        }),
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(other) => Err(other.into()),
    }
}

async fn refuse_other_file(
    store: &dyn Store,
    name: &str,
    file: &str,
) -> Result<(), PolicyChangeError> {
    match store.get_policy(name).await {
        Ok(StoredPolicy {
            origin: PolicyOrigin::File(owner),
            ..
        }) if owner != file => Err(PolicyChangeError::DefinedTwice {
            name: name.to_owned(),
            file: file.to_owned(),
            owner,
        }),
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(other) => Err(other.into()),
    }
}

async fn build(store: &dyn Store) -> Result<PolicySet, PolicyChangeError> {
    let stored = meshguard_store::all_policies(store).await?;
    let policies = stored
        .iter()
        .map(|p| parse_policy(&origin_label(p), &p.source))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PolicySet::new(policies)?)
}
