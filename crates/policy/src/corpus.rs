//! The conformance corpus (`tests/conformance/decisions.yaml`): suites of policies, agents and
//! cases with expected decisions. The library tests, the gateway tests and the CLI's offline
//! `meshguard policy test --file` all run the same file, so the three must agree.
//!
//! Format: `suites: [{name, policies, agents, cases}]`. A `policies` entry is a file name, or
//! an inline policy (any string holding a newline). `agents` maps a name to
//! `{trust, tags}`. A case is `{name, agent, action, resource = "*", context = {}, now?, expect}`
//! (`now`, an RFC 3339 time, is when the check is asked; without it, the runner's clock; `session`
//! names the trace the check belongs to; the allowed checks of a suite are its agents' past for
//! `after` / `notAfter` conditions), where
//! `expect` may hold `decision`, `code`, `policy` and `rule`; only the fields present are
//! checked, and `policy: null` / `rule: null` expect no policy / rule.
//!
//! The crate does no IO: file names are resolved by the caller. MeshGuard's runners look in the
//! corpus's own directory, then `<dir>/../examples/policies`, then `examples/policies/` under
//! each ancestor directory ([`policy_search_dirs`] lists them in that order).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Loc, PolicyError};
use crate::history::HistoryLog;
use crate::limits::BurstCounter;
use crate::model::{AgentProfile, CheckRequest, Code, Decision, Effect, TrustTier};
use crate::parse::{Walker, child, parse_policy};
use crate::set::PolicySet;
use crate::yaml::{Node, NodeKind, parse_document};

/// A parsed corpus file.
#[derive(Debug, Clone, Serialize)]
pub struct Corpus {
    /// The corpus's origin (file name), used in outcomes.
    pub origin: String,
    /// The suites, in file order.
    pub suites: Vec<Suite>,
}

/// Policies, agents and the cases run against them with fresh limits and no approvals.
#[derive(Debug, Clone, Serialize)]
pub struct Suite {
    /// The suite's name.
    pub name: String,
    /// The policies, by file name or inline.
    pub policies: Vec<PolicySource>,
    /// The agents, by name.
    pub agents: BTreeMap<String, AgentProfile>,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

/// Where a suite's policy comes from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySource {
    /// A file name, resolved by the caller.
    File {
        /// The name as written.
        name: String,
        /// Where it was written.
        loc: Loc,
    },
    /// A policy written in the corpus; its errors use `origin` (lines relative to the block).
    Inline {
        /// `corpus-file:suites[i].policies[j]`.
        origin: String,
        /// The policy text.
        text: String,
    },
}

/// One check and the fields of the decision it must get.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    /// The case's name.
    pub name: String,
    /// Where the case was written.
    pub loc: Loc,
    /// The agent's name in the suite.
    pub agent: String,
    /// The action.
    pub action: String,
    /// The resource (`*` when absent).
    pub resource: String,
    /// The context (empty when absent).
    pub context: Map<String, Value>,
    /// The session (trace id) the check belongs to, for `scope: session` history conditions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// When the check is asked (`now:`, an RFC 3339 time); `None`: the runner's clock.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub now: Option<time::OffsetDateTime>,
    /// The expected fields.
    pub expect: Expectation,
}

/// Expected decision fields; `None` means "not checked", `Some(None)` means "must be null".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Expectation {
    /// The expected effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Effect>,
    /// The expected code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<Code>,
    /// The expected policy, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Option<String>>,
    /// The expected rule, or null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Option<String>>,
}

/// One field that did not come out as expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// `decision`, `code`, `policy` or `rule`.
    pub field: &'static str,
    /// The expected value as text (`null` for none).
    pub expected: String,
    /// The actual value as text (`null` for none).
    pub actual: String,
}

/// The result of one case. Display is one line, ready to print:
/// `ok   suite / case` or `FAIL suite / case (decisions.yaml:17:9): code: expected …, got …`.
#[derive(Debug, Clone, Serialize)]
pub struct CaseOutcome {
    /// The suite's name.
    pub suite: String,
    /// The case's name.
    pub name: String,
    /// `corpus-file:line:col` of the case.
    pub location: String,
    /// Whether every expected field matched.
    pub passed: bool,
    /// What was expected.
    pub expected: Expectation,
    /// The decision the engine made.
    pub actual: Decision,
    /// The fields that differ.
    pub mismatches: Vec<Mismatch>,
}

impl fmt::Display for CaseOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed {
            return write!(f, "ok   {} / {}", self.suite, self.name);
        }
        write!(
            f,
            "FAIL {} / {} ({}): ",
            self.suite, self.name, self.location
        )?;
        let parts: Vec<String> = self
            .mismatches
            .iter()
            .map(|m| format!("{}: expected {}, got {}", m.field, m.expected, m.actual))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

/// A policy file's contents as the caller found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    /// The origin to report in errors (usually the path).
    pub origin: String,
    /// The YAML text.
    pub text: String,
}

/// Why a corpus could not be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorpusError {
    /// The corpus file itself is malformed.
    #[error(transparent)]
    Corpus(#[from] PolicyError),
    /// A policy file name could not be resolved.
    #[error("{origin}:{loc}: suite `{suite}`: policy file `{file}`: {message}")]
    Unresolved {
        /// The corpus origin.
        origin: String,
        /// Where the name was written.
        loc: Loc,
        /// The suite.
        suite: String,
        /// The file name.
        file: String,
        /// What the resolver said.
        message: String,
    },
    /// A suite's policy does not parse.
    #[error("suite `{suite}`: {error}")]
    Policy {
        /// The suite.
        suite: String,
        /// The parse error.
        error: PolicyError,
    },
    /// A suite's policies do not form a set.
    #[error("suite `{suite}`: {error}")]
    Set {
        /// The suite.
        suite: String,
        /// The set error.
        error: crate::error::PolicySetError,
    },
}

/// Directories where MeshGuard's runners look for a corpus's policy files, in order: the
/// corpus's directory, `<dir>/../examples/policies`, then `examples/policies` under each
/// ancestor. Pure path arithmetic; the caller reads the files.
pub fn policy_search_dirs(corpus_path: &Path) -> Vec<PathBuf> {
    let dir = corpus_path.parent().unwrap_or(Path::new("."));
    let mut dirs = vec![
        dir.to_path_buf(),
        dir.join("..").join("examples").join("policies"),
    ];
    for ancestor in dir.ancestors() {
        let candidate = ancestor.join("examples").join("policies");
        if !dirs.contains(&candidate) {
            dirs.push(candidate);
        }
    }
    dirs
}

impl Corpus {
    /// Parses a corpus; errors name `file:line:col` and the field path.
    pub fn parse(origin: &str, text: &str) -> Result<Corpus, PolicyError> {
        let root = parse_document(origin, text)?;
        let walker = Walker { origin };
        let fields = walker.fields(&root, "", &["suites"])?;
        let suites_node = walker.required(&fields, "", "suites")?;
        let suites = walker
            .list(suites_node, "suites", "suites")?
            .iter()
            .enumerate()
            .map(|(i, node)| suite(&walker, node, &format!("suites[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Corpus {
            origin: origin.to_owned(),
            suites,
        })
    }

    /// Total number of cases.
    pub fn case_count(&self) -> usize {
        self.suites.iter().map(|s| s.cases.len()).sum()
    }

    /// Runs every case offline: per suite a fresh [`BurstCounter`] on the case's clock (a limit
    /// of N admits exactly N checks asked at one instant; windows roll as cases' `now` moves) and
    /// no approvals. `resolve` turns a policy file name into its contents; a case
    /// that sets no `now` is asked at `now`.
    pub fn run_offline(
        &self,
        now: time::OffsetDateTime,
        resolve: &mut dyn FnMut(&str) -> Result<PolicyFile, String>,
    ) -> Result<Vec<CaseOutcome>, CorpusError> {
        let mut outcomes = Vec::with_capacity(self.case_count());
        for suite in &self.suites {
            let set = self.load_suite(suite, resolve)?;
            let mut limiter = BurstCounter::new();
            let mut past = HistoryLog::new();
            for case in &suite.cases {
                let Some(agent) = suite.agents.get(&case.agent) else {
                    continue;
                };
                let asked_at = case.now.unwrap_or(now);
                limiter.set_time(asked_at);
                let request = CheckRequest {
                    action: &case.action,
                    resource: &case.resource,
                    context: &case.context,
                    now: asked_at,
                };
                let history = past.view(&agent.id, case.session.as_deref(), set.history_patterns());
                let actual = set.decide_with_history(agent, &request, &history, &mut limiter);
                if actual.is_allowed() {
                    let matched = set.history_matches(&case.action, &case.resource);
                    past.record(&agent.id, case.session.as_deref(), &matched, asked_at);
                }
                let mismatches = compare(&case.expect, &actual);
                outcomes.push(CaseOutcome {
                    suite: suite.name.clone(),
                    name: case.name.clone(),
                    location: format!("{}:{}", self.origin, case.loc),
                    passed: mismatches.is_empty(),
                    expected: case.expect.clone(),
                    actual,
                    mismatches,
                });
            }
        }
        Ok(outcomes)
    }

    fn load_suite(
        &self,
        suite: &Suite,
        resolve: &mut dyn FnMut(&str) -> Result<PolicyFile, String>,
    ) -> Result<PolicySet, CorpusError> {
        let mut policies = Vec::with_capacity(suite.policies.len());
        for source in &suite.policies {
            let (origin, text) = match source {
                PolicySource::File { name, loc } => {
                    let file = resolve(name).map_err(|message| CorpusError::Unresolved {
                        origin: self.origin.clone(),
                        loc: *loc,
                        suite: suite.name.clone(),
                        file: name.clone(),
                        message,
                    })?;
                    (file.origin, file.text)
                }
                PolicySource::Inline { origin, text } => (origin.clone(), text.clone()),
            };
            let policy = parse_policy(&origin, &text).map_err(|error| CorpusError::Policy {
                suite: suite.name.clone(),
                error,
            })?;
            policies.push(policy);
        }
        PolicySet::new(policies).map_err(|error| CorpusError::Set {
            suite: suite.name.clone(),
            error,
        })
    }
}

fn show(value: Option<&str>) -> String {
    value.map_or_else(|| "null".to_owned(), |v| format!("\"{v}\""))
}

fn compare(expect: &Expectation, actual: &Decision) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    if let Some(decision) = expect.decision
        && decision != actual.effect()
    {
        mismatches.push(Mismatch {
            field: "decision",
            expected: decision.as_str().to_owned(),
            actual: actual.effect().as_str().to_owned(),
        });
    }
    if let Some(code) = expect.code
        && code != actual.code
    {
        mismatches.push(Mismatch {
            field: "code",
            expected: code.as_str().to_owned(),
            actual: actual.code.as_str().to_owned(),
        });
    }
    for (field, expected, got) in [
        ("policy", &expect.policy, &actual.policy),
        ("rule", &expect.rule, &actual.rule),
    ] {
        if let Some(expected) = expected
            && expected != got
        {
            mismatches.push(Mismatch {
                field,
                expected: show(expected.as_deref()),
                actual: show(got.as_deref()),
            });
        }
    }
    mismatches
}

fn suite(walker: &Walker<'_>, node: &Node, path: &str) -> Result<Suite, PolicyError> {
    let fields = walker.fields(node, path, &["name", "policies", "agents", "cases"])?;
    let name = walker.string(
        walker.required(&fields, path, "name")?,
        &child(path, "name"),
    )?;
    let policies_path = child(path, "policies");
    let policies = walker
        .list(
            walker.required(&fields, path, "policies")?,
            &policies_path,
            "policy file names or inline policies",
        )?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let item_path = format!("{policies_path}[{i}]");
            let text = walker.string(item, &item_path)?;
            Ok(if text.contains('\n') {
                PolicySource::Inline {
                    origin: format!("{}:{item_path}", walker.origin),
                    text,
                }
            } else {
                PolicySource::File {
                    name: text,
                    loc: item.loc,
                }
            })
        })
        .collect::<Result<Vec<_>, PolicyError>>()?;
    let agents_path = child(path, "agents");
    let mut agents = BTreeMap::new();
    if let Some(agents_node) = fields.optional("agents") {
        let NodeKind::Map(entries) = &agents_node.kind else {
            return Err(walker.wrong_type(agents_node, &agents_path, "a mapping of agent names"));
        };
        for (key, value) in entries {
            let agent_name = key.scalar_text().unwrap_or_default().to_owned();
            let agent_path = child(&agents_path, &agent_name);
            agents.insert(
                agent_name.clone(),
                agent(walker, value, &agent_path, agent_name)?,
            );
        }
    }
    let cases_path = child(path, "cases");
    let cases = walker
        .list(
            walker.required(&fields, path, "cases")?,
            &cases_path,
            "cases",
        )?
        .iter()
        .enumerate()
        .map(|(i, item)| case(walker, item, &format!("{cases_path}[{i}]"), &agents))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Suite {
        name,
        policies,
        agents,
        cases,
    })
}

fn agent(
    walker: &Walker<'_>,
    node: &Node,
    path: &str,
    name: String,
) -> Result<AgentProfile, PolicyError> {
    let fields = walker.fields(node, path, &["trust", "tags", "id"])?;
    let trust = match fields.optional("trust") {
        Some(n) => walker.tier(n, &child(path, "trust"))?,
        None => TrustTier::Unverified,
    };
    let tags = match fields.optional("tags") {
        Some(n) => walker
            .string_list(n, &child(path, "tags"))?
            .into_iter()
            .collect(),
        None => Default::default(),
    };
    let id = match fields.optional("id") {
        Some(n) => walker.string(n, &child(path, "id"))?,
        None => format!("agent_{name}"),
    };
    Ok(AgentProfile {
        id,
        name,
        trust,
        tags,
    })
}

fn case(
    walker: &Walker<'_>,
    node: &Node,
    path: &str,
    agents: &BTreeMap<String, AgentProfile>,
) -> Result<Case, PolicyError> {
    let fields = walker.fields(
        node,
        path,
        &[
            "name", "agent", "action", "resource", "context", "now", "session", "expect",
        ],
    )?;
    let name = walker.string(
        walker.required(&fields, path, "name")?,
        &child(path, "name"),
    )?;
    let agent_node = walker.required(&fields, path, "agent")?;
    let agent = walker.string(agent_node, &child(path, "agent"))?;
    if !agents.contains_key(&agent) {
        return Err(walker.error(
            agent_node.loc,
            &child(path, "agent"),
            format!("unknown agent `{agent}`; the suite's `agents` does not define it"),
        ));
    }
    let action = walker.string(
        walker.required(&fields, path, "action")?,
        &child(path, "action"),
    )?;
    let resource = match fields.optional("resource") {
        Some(n) => walker.string(n, &child(path, "resource"))?,
        None => "*".to_owned(),
    };
    let context = match fields.optional("context") {
        Some(n) => match (&n.kind, n.to_json()) {
            (NodeKind::Map(_), Value::Object(map)) => map,
            _ => return Err(walker.wrong_type(n, &child(path, "context"), "a mapping")),
        },
        None => Map::new(),
    };
    let now = fields
        .optional("now")
        .map(|n| {
            let text = walker.string(n, &child(path, "now"))?;
            time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    walker.wrong_type(
                        n,
                        &child(path, "now"),
                        "an RFC 3339 time such as \"2026-03-02T10:00:00Z\"",
                    )
                })
        })
        .transpose()?;
    let session = fields
        .optional("session")
        .map(|n| walker.string(n, &child(path, "session")))
        .transpose()?;
    let expect_path = child(path, "expect");
    let expect_node = walker.required(&fields, path, "expect")?;
    let expect = expectation(walker, expect_node, &expect_path)?;
    Ok(Case {
        name,
        loc: node.loc,
        agent,
        action,
        resource,
        context,
        session,
        now,
        expect,
    })
}

/// `expect` is a mapping of `decision`, `code`, `policy`, `rule`, or just the decision
/// (`expect: deny`), as in MeshGuard's `tests:` files.
fn expectation(walker: &Walker<'_>, node: &Node, path: &str) -> Result<Expectation, PolicyError> {
    if !matches!(node.kind, NodeKind::Map(_)) {
        return Ok(Expectation {
            decision: Some(decision_value(walker, node, path)?),
            ..Expectation::default()
        });
    }
    let expect_fields = walker.fields(node, path, &["decision", "code", "policy", "rule"])?;
    let decision = expect_fields
        .optional("decision")
        .map(|n| decision_value(walker, n, &child(path, "decision")))
        .transpose()?;
    let code = expect_fields
        .optional("code")
        .map(|n| {
            let p = child(path, "code");
            let text = walker.string(n, &p)?;
            serde_json::from_value::<Code>(Value::String(text.clone()))
                .map_err(|_| walker.error(n.loc, &p, format!("unknown code \"{text}\"")))
        })
        .transpose()?;
    let nullable = |key: &str| -> Result<Option<Option<String>>, PolicyError> {
        match expect_fields.entries_get(key) {
            None => Ok(None),
            Some(n) if n.is_null() => Ok(Some(None)),
            Some(n) => Ok(Some(Some(walker.string(n, &child(path, key))?))),
        }
    };
    Ok(Expectation {
        decision,
        code,
        policy: nullable("policy")?,
        rule: nullable("rule")?,
    })
}

fn decision_value(walker: &Walker<'_>, node: &Node, path: &str) -> Result<Effect, PolicyError> {
    match walker.string(node, path)?.as_str() {
        "allow" => Ok(Effect::Allow),
        "deny" => Ok(Effect::Deny),
        "require_approval" => Ok(Effect::RequireApproval),
        other => Err(walker.error(
            node.loc,
            path,
            format!("expected \"allow\", \"deny\" or \"require_approval\", got \"{other}\""),
        )),
    }
}
