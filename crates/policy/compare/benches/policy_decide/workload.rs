//! What the three engines are asked: the agents, the requests, the expected answers, and the
//! generated large rule sets, written once here and emitted as MeshGuard YAML, Cedar and Rego
//! from the same model so that the three texts say the same thing.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// An engine's answer, reduced to what all three engines can express. Cedar cannot tell
/// `no_policy` from `default_deny` (both are a deny that no statement decided), so both are
/// `DenyWithoutRule` here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An explicit allow: the first allowing policy (by name) and its first matching rule.
    Allow { policy: String, rule: String },
    /// An explicit deny: the first denying policy (by name) and its first matching rule.
    Deny { policy: String, rule: String },
    /// A `humanInTheLoop.requireApproval` entry matched and nothing denied.
    RequireApproval { policy: String },
    /// No rule decided and the defaults deny (or no policy applies).
    DenyWithoutRule,
    /// Anything else (a code this comparison does not model); never expected here.
    Other(String),
}

/// An agent as every engine sees it.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: &'static str,
    pub tags: BTreeSet<String>,
    /// unverified = 0, verified = 1, trusted = 2, privileged = 3.
    pub trust: u8,
}

impl Agent {
    pub fn new(id: &'static str, trust: u8, tags: &[&str]) -> Agent {
        Agent {
            id,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            trust,
        }
    }
}

/// One request and the answer every engine must give.
#[derive(Debug, Clone)]
pub struct Probe {
    pub label: &'static str,
    pub action: String,
    pub resource: String,
    pub context: serde_json::Map<String, serde_json::Value>,
    /// When the check is asked: fixed, never the real clock, so schedules answer the same in
    /// every run.
    pub now: time::OffsetDateTime,
    pub expected: Verdict,
}

impl Probe {
    fn new(label: &'static str, action: impl Into<String>, resource: &str) -> Probe {
        Probe {
            label,
            action: action.into(),
            resource: resource.to_owned(),
            context: serde_json::Map::new(),
            now: at(WEDNESDAY_MORNING),
            expected: Verdict::DenyWithoutRule,
        }
    }

    fn arguments(mut self, arguments: serde_json::Value) -> Probe {
        self.context.insert("arguments".to_owned(), arguments);
        self
    }

    fn at(mut self, instant: &str) -> Probe {
        self.now = at(instant);
        self
    }

    fn sandboxed(mut self) -> Probe {
        self.context
            .insert("sandbox".to_owned(), serde_json::Value::Bool(true));
        self
    }

    fn expect(mut self, expected: Verdict) -> Probe {
        self.expected = expected;
        self
    }
}

fn allow(policy: &str, rule: &str) -> Verdict {
    Verdict::Allow {
        policy: policy.to_owned(),
        rule: rule.to_owned(),
    }
}

fn deny(policy: &str, rule: &str) -> Verdict {
    Verdict::Deny {
        policy: policy.to_owned(),
        rule: rule.to_owned(),
    }
}

const PRODUCTION: &str = "autogpt-production";
const PAYMENTS: &str = "payments-hours";

/// 11:00 in Berlin on a Wednesday (CET).
const WEDNESDAY_MORNING: &str = "2026-03-04T10:00:00Z";

fn at(instant: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(instant, &time::format_description::well_known::Rfc3339)
        .expect("a fixed RFC 3339 instant")
}

/// The weekday (`mon` … `sun`) and minute of the day of `now` in Europe/Berlin: what the Cedar
/// and Rego adapters give their engines, which have no time zones.
pub fn berlin_day_and_minute(now: time::OffsetDateTime) -> (&'static str, i64) {
    let zone = jiff::tz::TimeZone::get("Europe/Berlin").expect("the bundled zone database");
    let instant =
        jiff::Timestamp::from_second(now.unix_timestamp()).expect("a representable instant");
    let local = instant.to_zoned(zone);
    let day = match local.weekday() {
        jiff::civil::Weekday::Monday => "mon",
        jiff::civil::Weekday::Tuesday => "tue",
        jiff::civil::Weekday::Wednesday => "wed",
        jiff::civil::Weekday::Thursday => "thu",
        jiff::civil::Weekday::Friday => "fri",
        jiff::civil::Weekday::Saturday => "sat",
        jiff::civil::Weekday::Sunday => "sun",
    };
    (
        day,
        i64::from(local.hour()) * 60 + i64::from(local.minute()),
    )
}

/// The agent of payments-hours.yaml.
pub fn payer_agent() -> Agent {
    Agent::new("payer", 1, &["payer"])
}

/// The four measured requests against payments-hours: numeric conditions that allow and deny, a
/// schedule that is open and one that is closed.
pub fn conditions_cases() -> Vec<Probe> {
    vec![
        Probe::new("a small payment", "pay:invoice", "*")
            .arguments(serde_json::json!({"amount": 20, "currency": "EUR"}))
            .expect(allow(PAYMENTS, "small-payments")),
        Probe::new("a huge payment", "pay:invoice", "*")
            .arguments(serde_json::json!({"amount": 900, "currency": "EUR"}))
            .expect(deny(PAYMENTS, "never-above-500")),
        Probe::new("a deploy in office hours", "deploy:api", "*")
            .expect(allow(PAYMENTS, "office-deploys")),
        Probe::new("a deploy on a Saturday", "deploy:api", "*").at("2026-03-07T10:00:00Z"),
    ]
}

/// More requests against payments-hours, checked (not measured): bounds, types and the edges of
/// the schedule, daylight saving time included.
pub fn conditions_coverage() -> Vec<Probe> {
    let pay = |label, arguments: serde_json::Value| {
        Probe::new(label, "pay:invoice", "*").arguments(arguments)
    };
    vec![
        pay(
            "the bound is inclusive",
            serde_json::json!({"amount": 50, "currency": "USD"}),
        )
        .expect(allow(PAYMENTS, "small-payments")),
        pay(
            "above the bound",
            serde_json::json!({"amount": 51, "currency": "EUR"}),
        ),
        pay(
            "at 500 no deny",
            serde_json::json!({"amount": 500, "currency": "EUR"}),
        ),
        pay(
            "another currency",
            serde_json::json!({"amount": 20, "currency": "GBP"}),
        ),
        pay(
            "an amount as text",
            serde_json::json!({"amount": "20", "currency": "EUR"}),
        ),
        pay("no amount", serde_json::json!({"currency": "EUR"})),
        pay(
            "a negative amount",
            serde_json::json!({"amount": -5, "currency": "EUR"}),
        ),
        Probe::new("17:59 in Berlin", "deploy:api", "*")
            .at("2026-03-04T16:59:00Z")
            .expect(allow(PAYMENTS, "office-deploys")),
        Probe::new("18:00 in Berlin", "deploy:api", "*").at("2026-03-04T17:00:00Z"),
        Probe::new("08:59 in Berlin", "deploy:api", "*").at("2026-03-04T07:59:00Z"),
        Probe::new("08:30 CET (winter)", "deploy:api", "*").at("2026-03-27T07:30:00Z"),
        Probe::new("09:30 CEST (summer)", "deploy:api", "*")
            .at("2026-03-30T07:30:00Z")
            .expect(allow(PAYMENTS, "office-deploys")),
        Probe::new("another action", "launch:rocket", "*"),
    ]
}

/// The Rego modules of payments-hours: its policy, and the helpers and combining section of the
/// production translation (as the generated sets use them).
pub fn conditions_rego(production_rego: &str, payments_rego: &str) -> Vec<(String, String)> {
    let policies_at = production_rego
        .find("# ---- policy")
        .expect("the Rego translation marks its policy section");
    let combining_at = production_rego
        .find("# ---- combining")
        .expect("the Rego translation marks its combining section");
    vec![
        (
            "combining.rego".to_owned(),
            format!(
                "{}{}",
                &production_rego[..policies_at],
                &production_rego[combining_at..]
            ),
        ),
        ("payments-hours.rego".to_owned(), payments_rego.to_owned()),
    ]
}

/// The agent of autogpt-production.yaml (beside it).
pub fn production_agent() -> Agent {
    Agent::new("autogpt-agent", 1, &["autogpt", "production"])
}

/// An agent that no policy applies to.
pub fn stranger_agent() -> Agent {
    Agent::new("stranger", 3, &["billing"])
}

/// The three measured requests against the production policy.
pub fn production_cases() -> Vec<Probe> {
    vec![
        Probe::new(
            "allowed (browse:web)",
            "browse:web",
            "https://python.org/downloads",
        )
        .expect(allow(PRODUCTION, "rule-1")),
        Probe::new("denied (execute:shell)", "execute:shell", "ls -la")
            .expect(deny(PRODUCTION, "rule-4")),
        Probe::new("default deny (launch:rocket)", "launch:rocket", "*"),
    ]
}

/// More requests against the production policy, checked (not measured) so that the equivalence of
/// the three translations covers every construct: resourcePattern, bare prefixes, sandbox,
/// approvals, and a deny that an approval entry does not override.
pub fn production_coverage() -> Vec<Probe> {
    vec![
        Probe::new("search", "search:web", "*").expect(allow(PRODUCTION, "rule-1")),
        Probe::new(
            "read in workspace",
            "read:workspace/notes.txt",
            "workspace/notes.txt",
        )
        .expect(allow(PRODUCTION, "rule-2")),
        Probe::new("write bare prefix", "write:workspace", "workspace")
            .expect(allow(PRODUCTION, "rule-2")),
        Probe::new("write outside workspace", "write:workspace", "etc/passwd"),
        Probe::new(
            "read elsewhere",
            "read:home/notes.txt",
            "workspace/notes.txt",
        ),
        Probe::new("python in sandbox", "execute:python", "print(1)")
            .sandboxed()
            .expect(allow(PRODUCTION, "rule-3")),
        Probe::new("python outside sandbox", "execute:python", "print(1)"),
        Probe::new("delete", "delete:workspace/notes.txt", "*").expect(deny(PRODUCTION, "rule-4")),
        Probe::new(
            "send email (deny beats approval)",
            "send:email",
            "ceo@example.com",
        )
        .expect(deny(PRODUCTION, "rule-4")),
        Probe::new("pay (deny beats approval)", "pay:invoice", "*")
            .expect(deny(PRODUCTION, "rule-4")),
        Probe::new("post needs approval", "post:social", "*").expect(Verdict::RequireApproval {
            policy: PRODUCTION.to_owned(),
        }),
    ]
}

/// Number of policies in the large generated set.
pub const LARGE_POLICIES: usize = 1_000;
/// Rules per generated policy.
pub const RULES_PER_POLICY: usize = 10;

/// The generated policies that apply to [`generated_agent`]: a handful out of a thousand.
const AGENT_TEAMS: [usize; 5] = [0, 250, 500, 750, 999];

/// The agent of the generated sets; its tags select [`AGENT_TEAMS`].
pub fn generated_agent() -> Agent {
    let mut agent = Agent::new("fleet-agent", 1, &["fleet"]);
    agent.tags.extend(AGENT_TEAMS.iter().map(|i| team_tag(*i)));
    agent
}

/// The measured request against a generated set: allowed by the last rule of each applicable
/// policy, after three other `browse` rules (3, 6, 9) that do not match it. An engine that
/// indexes rules by verb reads four rules per applicable policy; one that does not reads all ten.
pub fn generated_case() -> Probe {
    Probe::new("browse:web", "browse:web", "*").expect(allow(&policy_name(0), "rule-10"))
}

/// Requests checked (not measured) against the generated sets.
pub fn generated_coverage(policies: usize) -> Vec<Probe> {
    let last = *AGENT_TEAMS
        .iter()
        .filter(|i| **i < policies)
        .max()
        .unwrap_or(&0);
    vec![
        Probe::new(
            "read under a team dir",
            "read:svc-0-1/reports/q3",
            "data/q3.csv",
        )
        .expect(allow(&policy_name(0), "rule-1")),
        Probe::new("read outside data", "read:svc-0-1/reports/q3", "tmp/q3.csv"),
        Probe::new("delete", "delete:svc-0-2:queue", "*").expect(deny(&policy_name(0), "rule-2")),
        Probe::new("browse needs trust", "browse:intranet-0-3", "*").sandboxed(),
        Probe::new("other team's rule", "browse:intranet-1-3", "*"),
        Probe::new("approval", "pay:svc-0/invoice", "*").expect(Verdict::RequireApproval {
            policy: policy_name(0),
        }),
        Probe::new(
            "approval in the last applicable policy",
            format!("pay:svc-{last}/x"),
            "*",
        )
        .expect(Verdict::RequireApproval {
            policy: policy_name(last),
        }),
        Probe::new(
            "last applicable policy",
            format!("delete:svc-{last}-8:x"),
            "*",
        )
        .expect(deny(&policy_name(last), "rule-8")),
    ]
}

fn policy_name(i: usize) -> String {
    format!("gen-{i:04}")
}

fn team_tag(i: usize) -> String {
    format!("team-{i:04}")
}

/// The pattern shapes the generated rules use, each with an exact translation.
enum Pattern {
    /// No wildcard.
    Literal(String),
    /// `prefix*`.
    Prefix(String),
    /// `dir/*`: `dir` itself or anything under `dir/`.
    Dir(String),
}

impl Pattern {
    fn yaml(&self) -> String {
        match self {
            Pattern::Literal(s) => s.clone(),
            Pattern::Prefix(p) => format!("{p}*"),
            Pattern::Dir(d) => format!("{d}/*"),
        }
    }

    fn cedar(&self, attr: &str) -> String {
        match self {
            Pattern::Literal(s) => format!("context.{attr} == \"{s}\""),
            Pattern::Prefix(p) => format!("context.{attr} like \"{p}*\""),
            Pattern::Dir(d) => {
                format!("(context.{attr} == \"{d}\" || context.{attr} like \"{d}/*\")")
            }
        }
    }

    fn rego(&self, input: &str) -> String {
        match self {
            Pattern::Literal(s) => format!("pattern_match({input}, {{\"{s}\"}}, [], [])"),
            Pattern::Prefix(p) => format!("pattern_match({input}, set(), [\"{p}\"], [])"),
            Pattern::Dir(d) => format!("pattern_match({input}, set(), [], [\"{d}\"])"),
        }
    }
}

struct GeneratedRule {
    allow: bool,
    action: Pattern,
    resource: Option<Pattern>,
    sandbox: bool,
    /// minTrust as a tier number.
    min_trust: Option<u8>,
}

impl GeneratedRule {
    fn cedar_condition(&self) -> String {
        let mut parts = vec![self.action.cedar("action")];
        if let Some(resource) = &self.resource {
            parts.push(resource.cedar("resource"));
        }
        if self.sandbox {
            parts.push("context.sandbox".to_owned());
        }
        if let Some(trust) = self.min_trust {
            parts.push(format!("principal.trust >= {trust}"));
        }
        format!("({})", parts.join(" && "))
    }

    fn rego_body(&self) -> String {
        let mut body = format!("\t{}\n", self.action.rego("input.action"));
        if let Some(resource) = &self.resource {
            let _ = writeln!(body, "\t{}", resource.rego("input.resource"));
        }
        if self.sandbox {
            body.push_str("\tinput.context.sandbox == true\n");
        }
        if let Some(trust) = self.min_trust {
            let _ = writeln!(body, "\tinput.agent.trust >= {trust}");
        }
        body
    }
}

/// Rule `j` (1-based) of generated policy `i`: three shapes in turn, then a final allow of
/// `browse:web`.
fn generated_rule(i: usize, j: usize) -> GeneratedRule {
    if j == RULES_PER_POLICY {
        return GeneratedRule {
            allow: true,
            action: Pattern::Literal("browse:web".to_owned()),
            resource: None,
            sandbox: false,
            min_trust: None,
        };
    }
    match j % 3 {
        1 => GeneratedRule {
            allow: true,
            action: Pattern::Dir(format!("read:svc-{i}-{j}")),
            resource: Some(Pattern::Dir("data".to_owned())),
            sandbox: false,
            min_trust: None,
        },
        2 => GeneratedRule {
            allow: false,
            action: Pattern::Prefix(format!("delete:svc-{i}-{j}:")),
            resource: None,
            sandbox: false,
            min_trust: None,
        },
        _ => GeneratedRule {
            allow: true,
            action: Pattern::Literal(format!("browse:intranet-{i}-{j}")),
            resource: None,
            sandbox: true,
            min_trust: Some(2),
        },
    }
}

/// The `humanInTheLoop.requireApproval` entry of generated policy `i`.
fn approval_pattern(i: usize) -> Pattern {
    Pattern::Dir(format!("pay:svc-{i}"))
}

/// `count` generated policies as MeshGuard YAML documents, one per policy.
pub fn generated_yaml(count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let mut yaml = format!(
                "name: {}\nversion: \"1\"\nappliesTo:\n  tags: [{}]\nrules:\n",
                policy_name(i),
                team_tag(i)
            );
            for j in 1..=RULES_PER_POLICY {
                let rule = generated_rule(i, j);
                let effect = if rule.allow { "allow" } else { "deny" };
                let _ = writeln!(
                    yaml,
                    "  - effect: {effect}\n    actions: [\"{}\"]",
                    rule.action.yaml()
                );
                let mut conditions = String::new();
                if let Some(resource) = &rule.resource {
                    let _ = writeln!(conditions, "      resourcePattern: \"{}\"", resource.yaml());
                }
                if rule.sandbox {
                    conditions.push_str("      sandbox: true\n");
                }
                if rule.min_trust == Some(2) {
                    conditions.push_str("      minTrust: trusted\n");
                }
                if !conditions.is_empty() {
                    yaml.push_str("    conditions:\n");
                    yaml.push_str(&conditions);
                }
            }
            let _ = write!(
                yaml,
                "defaultEffect: deny\nhumanInTheLoop:\n  requireApproval: [\"{}\"]\n",
                approval_pattern(i).yaml()
            );
            (format!("{}.yaml", policy_name(i)), yaml)
        })
        .collect()
}

/// The same policies in Cedar, translated as in policies/autogpt-production.cedar.
pub fn generated_cedar(count: usize) -> String {
    let mut cedar = String::new();
    for i in 0..count {
        let applies = format!("principal.tags.contains(\"{}\")", team_tag(i));
        let mut earlier_allows: Vec<String> = Vec::new();
        for j in 1..=RULES_PER_POLICY {
            let rule = generated_rule(i, j);
            let condition = rule.cedar_condition();
            let _ = writeln!(
                cedar,
                "@policy(\"{}\")\n@rule(\"rule-{j}\")",
                policy_name(i)
            );
            if rule.allow {
                let _ = writeln!(
                    cedar,
                    "permit (principal, action == Action::\"check\", resource)\n\
                     when {{ {applies} && {condition} }};"
                );
                earlier_allows.push(condition);
            } else {
                let _ = write!(
                    cedar,
                    "forbid (principal, action == Action::\"check\", resource)\n\
                     when {{ {applies} && {condition} }}"
                );
                if !earlier_allows.is_empty() {
                    let _ = write!(cedar, "\nunless {{ {} }}", earlier_allows.join(" || "));
                }
                cedar.push_str(";\n");
            }
        }
        let _ = writeln!(
            cedar,
            "@policy(\"{name}\")\n@approval(\"{name}\")\n\
             permit (principal, action == Action::\"check\", resource)\n\
             when {{ {applies} && {} }};",
            approval_pattern(i).cedar("action"),
            name = policy_name(i)
        );
    }
    cedar
}

/// Policies per generated Rego module: regorus refuses files over 1 MiB, and a large Rego policy
/// set is a bundle of files anyway.
const REGO_POLICIES_PER_MODULE: usize = 100;

/// The same policies in Rego, translated as in policies/autogpt-production.rego, as `(origin,
/// module)` pairs: that file's helper functions and combining rules, then the generated policies
/// in modules of the same package.
pub fn generated_rego(production_rego: &str, count: usize) -> Vec<(String, String)> {
    let policies_at = production_rego
        .find("# ---- policy")
        .expect("the Rego translation marks its policy section");
    let combining_at = production_rego
        .find("# ---- combining")
        .expect("the Rego translation marks its combining section");
    let header = "package meshguard\n\nimport rego.v1\n\n";
    let mut modules = vec![(
        "generated-combining.rego".to_owned(),
        format!(
            "{}{}",
            &production_rego[..policies_at],
            &production_rego[combining_at..]
        ),
    )];
    let mut rego = String::new();
    for i in 0..count {
        if i % REGO_POLICIES_PER_MODULE == 0 {
            rego = header.to_owned();
        }
        let name = policy_name(i);
        let ident = name.replace('-', "_");
        let _ = writeln!(
            rego,
            "# ---- policy {name}\n\n{ident}_applies if \"{}\" in input.agent.tags\n",
            team_tag(i)
        );
        for j in 1..=RULES_PER_POLICY {
            let rule = generated_rule(i, j);
            let effect = if rule.allow { "allow" } else { "deny" };
            let head = if j == 1 {
                format!("{ident}_verdict :=")
            } else {
                "else :=".to_owned()
            };
            let _ = write!(
                rego,
                "{head} {{\"effect\": \"{effect}\", \"rule\": \"rule-{j}\"}} if {{\n{}}}",
                rule.rego_body()
            );
            rego.push(if j == RULES_PER_POLICY { '\n' } else { ' ' });
        }
        let _ = writeln!(
            rego,
            "\napplicable contains \"{name}\" if {ident}_applies\n\n\
             default_denies contains \"{name}\" if {ident}_applies\n\n\
             verdicts contains {{\"policy\": \"{name}\", \"effect\": v.effect, \"rule\": v.rule}} if {{\n\
             \t{ident}_applies\n\tv := {ident}_verdict\n}}\n\n\
             approvals contains \"{name}\" if {{\n\t{ident}_applies\n\t{}\n}}\n",
            approval_pattern(i).rego("input.action")
        );
        if (i + 1) % REGO_POLICIES_PER_MODULE == 0 || i + 1 == count {
            modules.push((format!("generated-{i:04}.rego"), std::mem::take(&mut rego)));
        }
    }
    modules
}
