//! The shared conformance corpus and the example policies, run against the library.

use std::path::{Path, PathBuf};

use meshguard_policy::corpus::{Corpus, PolicyFile, policy_search_dirs};
use meshguard_policy::{PolicySet, lint, parse_policy};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn resolver(corpus_path: &Path) -> impl FnMut(&str) -> Result<PolicyFile, String> + use<> {
    let dirs = policy_search_dirs(corpus_path);
    move |name: &str| {
        for dir in &dirs {
            let path = dir.join(name);
            if let Ok(text) = std::fs::read_to_string(&path) {
                return Ok(PolicyFile {
                    origin: name.to_owned(),
                    text,
                });
            }
        }
        Err(format!("not found in {dirs:?}"))
    }
}

#[test]
fn every_conformance_case_passes() {
    let path = repo_root().join("tests/conformance/decisions.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let corpus = Corpus::parse("decisions.yaml", &text).unwrap();
    let outcomes = corpus
        .run_offline(time::OffsetDateTime::now_utc(), &mut resolver(&path))
        .unwrap();
    assert_eq!(outcomes.len(), corpus.case_count());
    assert!(
        outcomes.len() >= 50,
        "the corpus shrank: {}",
        outcomes.len()
    );
    let failures: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(ToString::to_string)
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_example_policy_loads_into_one_set() {
    let dir = repo_root().join("examples/policies");
    let mut policies = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            policies.push(parse_policy(&name, &text).unwrap_or_else(|e| panic!("{e}")));
        }
    }
    assert!(
        policies.len() >= 2,
        "expected the example policies in {dir:?}"
    );
    for policy in &policies {
        assert!(!policy.rules().is_empty(), "{} has no rules", policy.name());
        let json = serde_json::to_value(policy).unwrap();
        assert_eq!(json["name"], policy.name());
        assert!(json["appliesTo"].is_object());
    }
    let warnings = lint(&policies, None);
    let set = PolicySet::new(policies).unwrap();
    assert!(set.len() >= 2);
    // The production example asks for approvals its own deny rule always beats.
    assert!(
        warnings
            .iter()
            .any(|w| w.message.contains("`send:email`") && w.message.contains("unreachable"))
    );
}
