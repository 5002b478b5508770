//! Offline runner for `suites:` files (the conformance corpus format): the policy crate parses and
//! decides; this module only finds the policy files a suite names.

use std::path::Path;

use meshguard_policy::corpus::{Corpus, PolicyFile, policy_search_dirs};

use crate::commands::policy_test::TestResult;

/// Runs every case of the corpus at `path` with no gateway: each suite gets its own policies,
/// agents, fresh rate limits and no approvals.
pub fn run(path: &Path, origin: &str, text: &str) -> anyhow::Result<Vec<TestResult>> {
    let corpus = Corpus::parse(origin, text)?;
    let dirs = policy_search_dirs(path);
    let mut resolve = |name: &str| -> Result<PolicyFile, String> {
        // A suite names a file, never a path: `../` would read outside the search directories.
        if name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err("expected a file name, not a path".to_owned());
        }
        for dir in &dirs {
            let candidate = dir.join(name);
            if candidate.is_file() {
                let text = std::fs::read_to_string(&candidate)
                    .map_err(|e| format!("cannot read `{}`: {e}", candidate.display()))?;
                return Ok(PolicyFile {
                    origin: candidate.display().to_string(),
                    text,
                });
            }
        }
        let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        Err(format!("not found in {}", searched.join(", ")))
    };
    let outcomes = corpus.run_offline(time::OffsetDateTime::now_utc(), &mut resolve)?;
    Ok(outcomes
        .into_iter()
        .map(|outcome| {
            let failure = (!outcome.passed).then(|| {
                let parts: Vec<String> = outcome
                    .mismatches
                    .iter()
                    .map(|m| format!("{}: expected {}, got {}", m.field, m.expected, m.actual))
                    .collect();
                format!(
                    "{} ({}; reason: {})",
                    parts.join("; "),
                    outcome.location,
                    outcome.actual.reason
                )
            });
            TestResult {
                name: format!("{} / {}", outcome.suite, outcome.name),
                failure,
            }
        })
        .collect())
}
