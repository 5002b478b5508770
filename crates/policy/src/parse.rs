//! YAML text → [`Policy`]: a typed walk over the positioned tree, so every error names the
//! file, line, column and field path.

use std::collections::HashMap;

use jiff::tz::TimeZone;

use crate::conditions::{
    Comparison, ContextCondition, DAY_NAMES, OPERATORS, Operand, Schedule, ScheduleText, ValueTest,
    parse_hours, parse_time,
};
use crate::error::{Loc, PolicyError};
use crate::history::{HistoryCondition, HistoryScope, parse_window};
use crate::limits::amount_of;
use crate::model::TrustTier;
use crate::pattern::Pattern;
use crate::policy::{
    AppliesTo, ApprovalRequirement, Budget, Conditions, HumanInTheLoop, Policy, PolicyMode,
    PolicyPositions, RateLimits, Rule, RuleEffect,
};
use crate::yaml::{Node, NodeKind, ScalarType, parse_document, parse_int};

/// Parses and compiles one policy. `origin` (usually the file name) prefixes every error.
/// JSON is accepted too: it is YAML.
pub fn parse_policy(origin: &str, text: &str) -> Result<Policy, PolicyError> {
    let root = parse_document(origin, text)?;
    Walker { origin }.policy(&root, text)
}

/// Whether `name` follows the agent-name syntax `[a-z0-9][a-z0-9._-]{0,63}`, which policy
/// names share so they are safe in URLs, file names and CLI arguments.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let lower_or_digit = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match bytes.split_first() {
        Some((first, rest)) => {
            lower_or_digit(first)
                && rest.len() <= 63
                && rest
                    .iter()
                    .all(|b| lower_or_digit(b) || matches!(b, b'.' | b'_' | b'-'))
        }
        None => false,
    }
}

/// Typed access to the positioned tree; shared with the corpus reader.
pub(crate) struct Walker<'a> {
    pub origin: &'a str,
}

/// The entries of a mapping, checked against the keys a field allows.
pub(crate) struct Fields<'n> {
    node: &'n Node,
    entries: HashMap<&'n str, &'n Node>,
}

impl<'n> Fields<'n> {
    /// The value of `key`, treating an explicit `null` as absent.
    pub fn optional(&self, key: &str) -> Option<&'n Node> {
        self.entries.get(key).copied().filter(|n| !n.is_null())
    }

    /// The value of `key`, an explicit `null` included.
    pub fn entries_get(&self, key: &str) -> Option<&'n Node> {
        self.entries.get(key).copied()
    }
}

pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Walker<'_> {
    pub fn error(&self, loc: Loc, path: &str, message: impl Into<String>) -> PolicyError {
        PolicyError::new(self.origin, loc, path, message)
    }

    pub fn wrong_type(&self, node: &Node, path: &str, expected: &str) -> PolicyError {
        self.error(
            node.loc,
            path,
            format!("expected {expected}, got {}", node.describe()),
        )
    }

    pub fn fields<'n>(
        &self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Result<Fields<'n>, PolicyError> {
        let NodeKind::Map(entries) = &node.kind else {
            return Err(self.wrong_type(node, path, "a mapping"));
        };
        let mut map = HashMap::new();
        for (key, value) in entries {
            let name = key.scalar_text().unwrap_or_default();
            if !allowed.contains(&name) {
                let expected = allowed
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(self.error(
                    key.loc,
                    &child(path, name),
                    format!("unknown key `{name}`; expected one of {expected}"),
                ));
            }
            map.insert(name, value);
        }
        Ok(Fields { node, entries: map })
    }

    pub fn required<'n>(
        &self,
        fields: &Fields<'n>,
        path: &str,
        key: &str,
    ) -> Result<&'n Node, PolicyError> {
        match fields.entries.get(key) {
            Some(node) => Ok(node),
            None => Err(self.error(
                fields.node.loc,
                &child(path, key),
                format!("missing required field `{key}`"),
            )),
        }
    }

    pub fn string(&self, node: &Node, path: &str) -> Result<String, PolicyError> {
        match (node.scalar_type(), node.scalar_text()) {
            (Some(ScalarType::Str), Some(text)) => Ok(text.to_owned()),
            _ => Err(self.wrong_type(node, path, "a string")),
        }
    }

    pub fn list<'n>(
        &self,
        node: &'n Node,
        path: &str,
        what: &str,
    ) -> Result<&'n [Node], PolicyError> {
        match &node.kind {
            NodeKind::Seq(items) => Ok(items),
            _ => Err(self.wrong_type(node, path, &format!("a list of {what}"))),
        }
    }

    pub fn string_list(&self, node: &Node, path: &str) -> Result<Vec<String>, PolicyError> {
        self.list(node, path, "strings")?
            .iter()
            .enumerate()
            .map(|(i, item)| self.string(item, &format!("{path}[{i}]")))
            .collect()
    }

    pub fn boolean(&self, node: &Node, path: &str) -> Result<bool, PolicyError> {
        match node.scalar_type() {
            Some(ScalarType::Bool(b)) => Ok(b),
            _ => Err(self.wrong_type(node, path, "`true` or `false`")),
        }
    }

    fn positive(&self, node: &Node, path: &str) -> Result<u64, PolicyError> {
        let value = match (node.scalar_type(), node.scalar_text()) {
            (Some(ScalarType::Int), Some(text)) => parse_int(text),
            _ => None,
        };
        match value.and_then(|v| u64::try_from(v).ok()) {
            Some(v) if v > 0 => Ok(v),
            _ => Err(self.wrong_type(node, path, "a positive whole number")),
        }
    }

    fn pattern(&self, node: &Node, path: &str) -> Result<Pattern, PolicyError> {
        let text = self.string(node, path)?;
        Pattern::compile(&text, node.loc).map_err(|message| self.error(node.loc, path, message))
    }

    fn patterns(&self, node: &Node, path: &str) -> Result<Vec<Pattern>, PolicyError> {
        let items = self.list(node, path, "patterns")?;
        if items.is_empty() {
            return Err(self.error(node.loc, path, "expected at least one pattern"));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.pattern(item, &format!("{path}[{i}]")))
            .collect()
    }

    pub fn tier(&self, node: &Node, path: &str) -> Result<TrustTier, PolicyError> {
        let text = self.string(node, path)?;
        text.parse().map_err(|err: crate::model::UnknownTrustTier| {
            self.error(node.loc, path, err.to_string())
        })
    }

    pub fn effect(&self, node: &Node, path: &str) -> Result<RuleEffect, PolicyError> {
        match node.scalar_text() {
            Some("allow") if node.scalar_type() == Some(ScalarType::Str) => Ok(RuleEffect::Allow),
            Some("deny") if node.scalar_type() == Some(ScalarType::Str) => Ok(RuleEffect::Deny),
            Some(other) if node.scalar_type() == Some(ScalarType::Str) => Err(self.error(
                node.loc,
                path,
                format!("expected \"allow\" or \"deny\", got \"{other}\""),
            )),
            _ => Err(self.wrong_type(node, path, "\"allow\" or \"deny\"")),
        }
    }

    fn policy(&self, root: &Node, text: &str) -> Result<Policy, PolicyError> {
        let fields = self.fields(
            root,
            "",
            &[
                "name",
                "version",
                "description",
                "appliesTo",
                "rules",
                "defaultEffect",
                "rateLimits",
                "budget",
                "humanInTheLoop",
                "mode",
            ],
        )?;
        let name_node = self.required(&fields, "", "name")?;
        let name = self.string(name_node, "name")?;
        if !is_valid_name(&name) {
            return Err(self.error(
                name_node.loc,
                "name",
                format!(
                    "invalid policy name \"{name}\": use 1 to 64 of `a-z`, `0-9`, `.`, `_`, `-`, starting with a letter or digit"
                ),
            ));
        }
        let version_node = self.required(&fields, "", "version")?;
        let (version, version_is_number) =
            match (version_node.scalar_type(), version_node.scalar_text()) {
                (Some(ScalarType::Str), Some(v)) => (v.to_owned(), false),
                (Some(ScalarType::Int | ScalarType::Float), Some(v)) => (v.to_owned(), true),
                _ => {
                    return Err(self.wrong_type(
                        version_node,
                        "version",
                        "a string such as \"1.0\"",
                    ));
                }
            };
        if version.is_empty() {
            return Err(self.error(version_node.loc, "version", "the version cannot be empty"));
        }
        let description = fields
            .optional("description")
            .map(|n| self.string(n, "description"))
            .transpose()?;
        let applies_to = fields
            .optional("appliesTo")
            .map(|n| self.applies_to(n))
            .transpose()?;
        let rules = match fields.optional("rules") {
            Some(node) => self.rules(node)?,
            None => Vec::new(),
        };
        let default_effect = fields
            .optional("defaultEffect")
            .map(|n| self.effect(n, "defaultEffect"))
            .transpose()?
            .unwrap_or(RuleEffect::Deny);
        let rate_limits = fields
            .optional("rateLimits")
            .map(|n| self.rate_limits(n, "rateLimits"))
            .transpose()?;
        let budget = fields
            .optional("budget")
            .map(|n| self.budget(n, "budget"))
            .transpose()?;
        let human_in_the_loop = fields
            .optional("humanInTheLoop")
            .map(|n| self.human_in_the_loop(n))
            .transpose()?;
        let mode = match fields.optional("mode") {
            None => PolicyMode::Enforce,
            Some(n) => match (n.scalar_type(), n.scalar_text()) {
                (Some(ScalarType::Str), Some("enforce")) => PolicyMode::Enforce,
                (Some(ScalarType::Str), Some("shadow")) => PolicyMode::Shadow,
                _ => {
                    return Err(self.wrong_type(n, "mode", "\"enforce\" or \"shadow\""));
                }
            },
        };
        Ok(Policy {
            name,
            version,
            description,
            applies_to,
            rules,
            default_effect,
            rate_limits,
            budget,
            human_in_the_loop,
            mode,
            origin: self.origin.to_owned(),
            source: text.to_owned(),
            positions: PolicyPositions {
                name: name_node.loc,
                version: version_node.loc,
                version_is_number,
                default_effect: fields.optional("defaultEffect").map(|n| n.loc),
            },
        })
    }

    fn applies_to(&self, node: &Node) -> Result<AppliesTo, PolicyError> {
        let path = "appliesTo";
        let fields = self.fields(node, path, &["tags", "trustTiers", "agentIds"])?;
        let tags = fields
            .optional("tags")
            .map(|n| self.string_list(n, "appliesTo.tags"))
            .transpose()?;
        let trust_tiers = fields
            .optional("trustTiers")
            .map(|n| {
                self.list(n, "appliesTo.trustTiers", "trust tiers")?
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.tier(item, &format!("appliesTo.trustTiers[{i}]")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let agent_ids = fields
            .optional("agentIds")
            .map(|n| self.string_list(n, "appliesTo.agentIds"))
            .transpose()?;
        Ok(AppliesTo {
            tags,
            trust_tiers,
            agent_ids,
        })
    }

    fn rules(&self, node: &Node) -> Result<Vec<Rule>, PolicyError> {
        let items = self.list(node, "rules", "rules")?;
        let mut rules: Vec<Rule> = Vec::with_capacity(items.len());
        let mut names: HashMap<String, (usize, Loc)> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("rules[{i}]");
            let rule = self.rule(item, &path, i)?;
            if let Some((first, _)) = names.get(&rule.name) {
                return Err(self.error(
                    rule.loc,
                    &child(&path, "name"),
                    format!(
                        "duplicate rule name \"{}\" (also rules[{first}]); every rule needs its own name",
                        rule.name
                    ),
                ));
            }
            names.insert(rule.name.clone(), (i, rule.loc));
            rules.push(rule);
        }
        Ok(rules)
    }

    fn rule(&self, node: &Node, path: &str, index: usize) -> Result<Rule, PolicyError> {
        let fields = self.fields(
            node,
            path,
            &[
                "name",
                "effect",
                "actions",
                "conditions",
                "reason",
                "budget",
            ],
        )?;
        let name = fields
            .optional("name")
            .map(|n| {
                let name = self.string(n, &child(path, "name"))?;
                if name.is_empty() {
                    return Err(self.error(
                        n.loc,
                        &child(path, "name"),
                        "a rule name cannot be empty",
                    ));
                }
                Ok(name)
            })
            .transpose()?;
        let effect_path = child(path, "effect");
        let effect = self.effect(self.required(&fields, path, "effect")?, &effect_path)?;
        let actions_path = child(path, "actions");
        let actions = self.patterns(self.required(&fields, path, "actions")?, &actions_path)?;
        let conditions = match fields.optional("conditions") {
            Some(n) => self.conditions(n, &child(path, "conditions"))?,
            None => Conditions::default(),
        };
        let reason = fields
            .optional("reason")
            .map(|n| self.string(n, &child(path, "reason")))
            .transpose()?;
        let budget = match fields.optional("budget") {
            Some(n) if effect == RuleEffect::Deny => {
                return Err(self.error(
                    n.loc,
                    &child(path, "budget"),
                    "a deny rule lets nothing through, so it spends no budget: put `budget` on an allow rule or on the policy",
                ));
            }
            Some(n) => Some(self.budget(n, &child(path, "budget"))?),
            None => None,
        };
        Ok(Rule {
            name: name.unwrap_or_else(|| format!("rule-{}", index + 1)),
            effect,
            actions,
            conditions,
            reason,
            budget,
            loc: node.loc,
        })
    }

    fn conditions(&self, node: &Node, path: &str) -> Result<Conditions, PolicyError> {
        let fields = self.fields(
            node,
            path,
            &[
                "resourcePattern",
                "sandbox",
                "minTrust",
                "context",
                "schedule",
                "after",
                "notAfter",
                "rateLimit",
            ],
        )?;
        let resource_pattern = fields
            .optional("resourcePattern")
            .map(|n| {
                let p = child(path, "resourcePattern");
                match n.kind {
                    NodeKind::Seq(_) => self.patterns(n, &p),
                    _ => self.pattern(n, &p).map(|pattern| vec![pattern]),
                }
            })
            .transpose()?;
        let sandbox = fields
            .optional("sandbox")
            .map(|n| self.boolean(n, &child(path, "sandbox")))
            .transpose()?;
        let min_trust = fields
            .optional("minTrust")
            .map(|n| self.tier(n, &child(path, "minTrust")))
            .transpose()?;
        let context = fields
            .optional("context")
            .map(|n| self.context_conditions(n, &child(path, "context")))
            .transpose()?
            .unwrap_or_default();
        let schedule = fields
            .optional("schedule")
            .map(|n| self.schedule(n, &child(path, "schedule")))
            .transpose()?;
        let after = fields
            .optional("after")
            .map(|n| self.history_condition(n, &child(path, "after")))
            .transpose()?;
        let not_after = fields
            .optional("notAfter")
            .map(|n| self.history_condition(n, &child(path, "notAfter")))
            .transpose()?;
        let rate_limit = fields
            .optional("rateLimit")
            .map(|n| self.rate_limits(n, &child(path, "rateLimit")))
            .transpose()?;
        Ok(Conditions {
            resource_pattern,
            sandbox,
            min_trust,
            context,
            schedule,
            after,
            not_after,
            rate_limit,
        })
    }

    /// `after` / `notAfter: {action: pattern, within: "1h", scope: agent|session}`.
    fn history_condition(&self, node: &Node, path: &str) -> Result<HistoryCondition, PolicyError> {
        let fields = self.fields(node, path, &["action", "within", "scope"])?;
        let action_node = self.required(&fields, path, "action")?;
        let action = self.pattern(action_node, &child(path, "action"))?;
        let within_node = self.required(&fields, path, "within")?;
        let within_text = self.string(within_node, &child(path, "within"))?;
        let within = parse_window(&within_text)
            .map_err(|message| self.error(within_node.loc, &child(path, "within"), message))?;
        let scope = match fields.optional("scope") {
            None => HistoryScope::Agent,
            Some(n) => match self.string(n, &child(path, "scope"))?.as_str() {
                "agent" => HistoryScope::Agent,
                "session" => HistoryScope::Session,
                other => {
                    return Err(self.error(
                        n.loc,
                        &child(path, "scope"),
                        format!("expected \"agent\" or \"session\", got \"{other}\""),
                    ));
                }
            },
        };
        Ok(HistoryCondition {
            action,
            within,
            scope,
            within_text,
        })
    }

    /// `conditions.context`: each key a dotted path; each value a plain value (equality) or a
    /// mapping whose keys are all operators.
    fn context_conditions(
        &self,
        node: &Node,
        path: &str,
    ) -> Result<Vec<ContextCondition>, PolicyError> {
        let NodeKind::Map(entries) = &node.kind else {
            return Err(self.wrong_type(node, path, "a mapping of keys to values"));
        };
        entries
            .iter()
            .map(|(key, value)| {
                let name = key.scalar_text().unwrap_or_default();
                let here = child(path, name);
                let segments: Vec<String> = name.split('.').map(str::to_owned).collect();
                if segments.iter().any(String::is_empty) {
                    return Err(self.error(
                        key.loc,
                        &here,
                        format!("`{name}` is not a dotted path: a segment is empty"),
                    ));
                }
                let tests = match &value.kind {
                    NodeKind::Map(ops)
                        if !ops.is_empty()
                            && ops.iter().all(|(k, _)| {
                                OPERATORS.contains(&k.scalar_text().unwrap_or_default())
                            }) =>
                    {
                        ops.iter()
                            .map(|(op, operand)| {
                                let op = op.scalar_text().unwrap_or_default();
                                self.value_test(op, operand, &child(&here, op))
                            })
                            .collect::<Result<Vec<_>, _>>()?
                    }
                    NodeKind::Map(ops)
                        if ops.iter().any(|(k, _)| {
                            OPERATORS.contains(&k.scalar_text().unwrap_or_default())
                        }) =>
                    {
                        return Err(self.error(
                            value.loc,
                            &here,
                            "mixes operators with plain keys: to compare with a mapping, write it under `eq`",
                        ));
                    }
                    _ => vec![ValueTest::Eq(value.to_json())],
                };
                Ok(ContextCondition {
                    key: name.to_owned(),
                    path: segments,
                    tests,
                    written: value.to_json(),
                })
            })
            .collect()
    }

    /// One operator of a context condition and its operand.
    fn value_test(&self, op: &str, node: &Node, path: &str) -> Result<ValueTest, PolicyError> {
        let comparison = match op {
            "lt" => Some(Comparison::Lt),
            "le" => Some(Comparison::Le),
            "gt" => Some(Comparison::Gt),
            "ge" => Some(Comparison::Ge),
            _ => None,
        };
        if let Some(comparison) = comparison {
            let operand = match node.to_json() {
                serde_json::Value::Number(n) => n.as_f64().map(Operand::Number),
                serde_json::Value::String(text) => parse_time(&text).map(Operand::Time),
                _ => None,
            };
            return operand
                .map(|operand| ValueTest::Compare(comparison, operand))
                .ok_or_else(|| {
                    self.wrong_type(
                        node,
                        path,
                        "a number or an RFC 3339 time such as \"2026-03-01T09:00:00Z\"",
                    )
                });
        }
        let values = |node: &Node| -> Result<Vec<serde_json::Value>, PolicyError> {
            match node.to_json() {
                serde_json::Value::Array(items) => Ok(items),
                _ => Err(self.wrong_type(node, path, "a list of values")),
            }
        };
        match op {
            "eq" => Ok(ValueTest::Eq(node.to_json())),
            "ne" => Ok(ValueTest::Ne(node.to_json())),
            "in" => Ok(ValueTest::In(values(node)?)),
            "notIn" => Ok(ValueTest::NotIn(values(node)?)),
            "matches" => Ok(ValueTest::Matches(match node.kind {
                NodeKind::Seq(_) => self.patterns(node, path)?,
                _ => vec![self.pattern(node, path)?],
            })),
            "exists" => Ok(ValueTest::Exists(self.boolean(node, path)?)),
            other => Err(self.error(
                node.loc,
                path,
                format!(
                    "unknown operator `{other}`; expected one of {}",
                    OPERATORS.join(", ")
                ),
            )),
        }
    }

    /// `conditions.schedule: {days, hours, timezone}`.
    fn schedule(&self, node: &Node, path: &str) -> Result<Schedule, PolicyError> {
        let fields = self.fields(node, path, &["days", "hours", "timezone"])?;
        let days_written = fields
            .optional("days")
            .map(|n| self.string_list(n, &child(path, "days")))
            .transpose()?;
        let mut days = [days_written.is_none(); 7];
        if let (Some(written), Some(n)) = (&days_written, fields.optional("days")) {
            let items = self.list(n, &child(path, "days"), "day names")?;
            for (i, (day, item)) in written.iter().zip(items).enumerate() {
                let index = DAY_NAMES.iter().position(|d| d == day).ok_or_else(|| {
                    self.error(
                        item.loc,
                        &format!("{}[{i}]", child(path, "days")),
                        format!(
                            "unknown day `{day}`; expected one of {}",
                            DAY_NAMES.join(", ")
                        ),
                    )
                })?;
                if let Some(slot) = days.get_mut(index) {
                    *slot = true;
                }
            }
        }
        let hours_written = fields
            .optional("hours")
            .map(|n| self.string(n, &child(path, "hours")))
            .transpose()?;
        let hours = match (&hours_written, fields.optional("hours")) {
            (Some(text), Some(n)) => Some(
                parse_hours(text)
                    .map_err(|message| self.error(n.loc, &child(path, "hours"), message))?,
            ),
            _ => None,
        };
        let timezone = fields
            .optional("timezone")
            .map(|n| {
                self.string(n, &child(path, "timezone"))
                    .map(|name| (name, n.loc))
            })
            .transpose()?;
        let (zone, timezone) = match timezone {
            None => (TimeZone::UTC, "UTC".to_owned()),
            Some((name, loc)) => {
                let zone = TimeZone::get(&name).map_err(|_| {
                    self.error(
                        loc,
                        &child(path, "timezone"),
                        format!("unknown time zone `{name}`; expected an IANA name such as \"Europe/Berlin\" or \"UTC\""),
                    )
                })?;
                (zone, name)
            }
        };
        Ok(Schedule {
            days,
            hours,
            zone,
            written: ScheduleText {
                days: days_written,
                hours: hours_written,
                timezone,
            },
        })
    }

    fn rate_limits(&self, node: &Node, path: &str) -> Result<RateLimits, PolicyError> {
        let fields = self.fields(node, path, &["requestsPerMinute", "requestsPerHour"])?;
        let count = |key: &str| -> Result<Option<u32>, PolicyError> {
            fields
                .optional(key)
                .map(|n| {
                    let p = child(path, key);
                    let value = self.positive(n, &p)?;
                    u32::try_from(value)
                        .map_err(|_| self.error(n.loc, &p, "the limit is too large"))
                })
                .transpose()
        };
        Ok(RateLimits {
            requests_per_minute: count("requestsPerMinute")?,
            requests_per_hour: count("requestsPerHour")?,
        })
    }

    /// `budget: {field: arguments.amount, perHour: 100, perDay: 1000}`: a dotted path and at
    /// least one positive maximum (decimals allowed, to a millionth).
    fn budget(&self, node: &Node, path: &str) -> Result<Budget, PolicyError> {
        let fields = self.fields(node, path, &["field", "perHour", "perDay"])?;
        let field_node = self.required(&fields, path, "field")?;
        let field_path = child(path, "field");
        let field = self.string(field_node, &field_path)?;
        let segments: Vec<String> = field.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(self.error(
                field_node.loc,
                &field_path,
                format!("`{field}` is not a dotted path such as `arguments.amount`"),
            ));
        }
        let amount = |key: &str| -> Result<Option<u64>, PolicyError> {
            let Some(n) = fields.optional(key) else {
                return Ok(None);
            };
            let p = child(path, key);
            let value = match (n.scalar_type(), n.scalar_text()) {
                (Some(ScalarType::Int | ScalarType::Float), Some(text)) => {
                    text.replace('_', "").parse::<f64>().ok()
                }
                _ => None,
            };
            match value.and_then(amount_of) {
                Some(millionths) if millionths > 0 => Ok(Some(millionths)),
                _ => Err(self.wrong_type(n, &p, "a positive number")),
            }
        };
        let per_hour = amount("perHour")?;
        let per_day = amount("perDay")?;
        if per_hour.is_none() && per_day.is_none() {
            return Err(self.error(node.loc, path, "a budget needs `perHour`, `perDay` or both"));
        }
        Ok(Budget {
            field,
            path: segments,
            per_hour,
            per_day,
            loc: node.loc,
        })
    }

    /// A `requireApproval` entry: a pattern, or `{action, when}` with conditions as a rule's
    /// (every condition but `rateLimit`, which only rules charge).
    fn approval_requirement(
        &self,
        node: &Node,
        path: &str,
    ) -> Result<ApprovalRequirement, PolicyError> {
        if !matches!(node.kind, NodeKind::Map(_)) {
            return Ok(ApprovalRequirement {
                action: self.pattern(node, path)?,
                when: Conditions::default(),
            });
        }
        let fields = self.fields(node, path, &["action", "when"])?;
        let action_node = self.required(&fields, path, "action")?;
        let action = self.pattern(action_node, &child(path, "action"))?;
        let when = match fields.optional("when") {
            Some(n) => {
                let when_path = child(path, "when");
                let when = self.conditions(n, &when_path)?;
                if when.rate_limit.is_some() {
                    let loc = match &n.kind {
                        NodeKind::Map(entries) => entries
                            .iter()
                            .find(|(k, _)| k.scalar_text() == Some("rateLimit"))
                            .map_or(n.loc, |(k, _)| k.loc),
                        _ => n.loc,
                    };
                    return Err(self.error(
                        loc,
                        &child(&when_path, "rateLimit"),
                        "an approval has no rate limit: put `rateLimit` on a rule",
                    ));
                }
                when
            }
            None => Conditions::default(),
        };
        Ok(ApprovalRequirement { action, when })
    }

    fn human_in_the_loop(&self, node: &Node) -> Result<HumanInTheLoop, PolicyError> {
        let path = "humanInTheLoop";
        let fields = self.fields(node, path, &["requireApproval", "timeoutSeconds"])?;
        let require_approval = match fields.optional("requireApproval") {
            None => Vec::new(),
            Some(n) => {
                let list_path = "humanInTheLoop.requireApproval";
                let items = self.list(n, list_path, "patterns or `{action, when}` entries")?;
                if items.is_empty() {
                    return Err(self.error(n.loc, list_path, "expected at least one pattern"));
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.approval_requirement(item, &format!("{list_path}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let timeout_seconds = fields
            .optional("timeoutSeconds")
            .map(|n| self.positive(n, "humanInTheLoop.timeoutSeconds"))
            .transpose()?;
        Ok(HumanInTheLoop {
            require_approval,
            timeout_seconds,
        })
    }
}
