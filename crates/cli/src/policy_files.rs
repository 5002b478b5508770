//! Reading policy files from disk and validating them locally, so that a broken file is reported
//! with its position before anything reaches the gateway.

use std::path::PathBuf;

use anyhow::Context as _;
use meshguard_gateway::policy_files::list_policy_files;
use meshguard_policy::{Policy, PolicySet};

/// One policy file as read and parsed.
#[derive(Debug)]
pub struct PolicyFile {
    /// The path as the user would write it (used as the origin in messages).
    pub path: PathBuf,
    /// The text exactly as in the file: this is what gets stored as the policy's source.
    pub text: String,
    /// The parsed, compiled policy.
    pub policy: Policy,
}

/// Every file named by `paths`: files as given, directories expanded to their policy files in
/// name order, exactly as `serve --policies` lists them.
pub fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let found = list_policy_files(path)
                .with_context(|| format!("cannot read the directory `{}`", path.display()))?;
            if found.is_empty() {
                anyhow::bail!("`{}` holds no *.yaml or *.yml file", path.display());
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Reads and parses every file; returns the parsed files, or every error message
/// (`file:line:col: field: what`) when any file is invalid.
pub fn load(paths: &[PathBuf]) -> anyhow::Result<Result<Vec<PolicyFile>, Vec<String>>> {
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for path in expand(paths)? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        match meshguard_policy::parse_policy(&path.display().to_string(), &text) {
            Ok(policy) => parsed.push(PolicyFile { path, text, policy }),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        // Two files defining the same name would silently overwrite each other on the gateway.
        if let Err(e) = PolicySet::new(parsed.iter().map(|f| f.policy.clone()).collect()) {
            errors.push(e.to_string());
        }
    }
    Ok(if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    })
}
