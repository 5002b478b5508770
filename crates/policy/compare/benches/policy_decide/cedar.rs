//! The `cedar-policy` side: a policy set validated against the schema, one entity store per
//! agent, and a request built per check the way a gateway would build it.

use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityId, EntityTypeName, EntityUid, PolicySet,
    Request, Response, RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::workload::{Agent, Verdict};

/// Policies, schema and the request parts that never change.
pub struct CedarEngine {
    policies: PolicySet,
    schema: Schema,
    authorizer: Authorizer,
    check: EntityUid,
    resource_type: EntityTypeName,
    /// The policies read the amount, the currency and the Berlin weekday and minute: the adapter
    /// adds them to every request (only then, so that the other cases pay nothing for them).
    conditions: bool,
}

/// An agent loaded once, as a gateway would cache it: its uid and an entity store holding it.
pub struct CedarAgent {
    uid: EntityUid,
    entities: Entities,
}

impl CedarEngine {
    /// Parses `policies` and refuses any statement the schema rejects, so that a typo in the
    /// translation cannot silently turn into "never matches".
    pub fn new(schema_text: &str, policies_text: &str) -> CedarEngine {
        CedarEngine::build(schema_text, policies_text, false)
    }

    /// [`CedarEngine::new`] for policies with numeric and time conditions.
    pub fn with_conditions(schema_text: &str, policies_text: &str) -> CedarEngine {
        CedarEngine::build(schema_text, policies_text, true)
    }

    fn build(schema_text: &str, policies_text: &str, conditions: bool) -> CedarEngine {
        let (schema, warnings) =
            Schema::from_cedarschema_str(schema_text).expect("the Cedar schema parses");
        assert_eq!(warnings.count(), 0, "the Cedar schema has warnings");
        let policies = PolicySet::from_str(policies_text).expect("the Cedar policies parse");
        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        assert!(
            validation.validation_passed(),
            "the Cedar policies do not validate: {validation}"
        );
        CedarEngine {
            policies,
            schema,
            authorizer: Authorizer::new(),
            check: EntityUid::from_str(r#"Action::"check""#).expect("a valid action uid"),
            resource_type: EntityTypeName::from_str("Resource").expect("a valid type name"),
            conditions,
        }
    }

    pub fn agent(&self, agent: &Agent) -> CedarAgent {
        let entities = serde_json::json!([{
            "uid": {"type": "Agent", "id": agent.id},
            "attrs": {"tags": agent.tags, "trust": agent.trust},
            "parents": []
        }]);
        CedarAgent {
            uid: EntityUid::from_str(&format!("Agent::\"{}\"", agent.id)).expect("a valid uid"),
            entities: Entities::from_json_value(entities, Some(&self.schema))
                .expect("the agent entity matches the schema"),
        }
    }

    /// One check: the request is built from the MeshGuard request (action, resource, context)
    /// and the answer is read back from the statements that decided.
    pub fn decide(
        &self,
        agent: &CedarAgent,
        action: &str,
        resource: &str,
        context: &serde_json::Map<String, serde_json::Value>,
        now: time::OffsetDateTime,
    ) -> Verdict {
        let sandbox = context.get("sandbox") == Some(&serde_json::Value::Bool(true));
        let mut extra = Vec::new();
        if self.conditions {
            let arguments = context.get("arguments");
            if let Some(amount) = arguments
                .and_then(|a| a.get("amount"))
                .and_then(|v| v.as_i64())
            {
                extra.push(("amount".to_owned(), RestrictedExpression::new_long(amount)));
            }
            if let Some(currency) = arguments
                .and_then(|a| a.get("currency"))
                .and_then(|v| v.as_str())
            {
                extra.push((
                    "currency".to_owned(),
                    RestrictedExpression::new_string(currency.to_owned()),
                ));
            }
            let (day, minute) = crate::workload::berlin_day_and_minute(now);
            extra.push((
                "day".to_owned(),
                RestrictedExpression::new_string(day.to_owned()),
            ));
            extra.push(("minute".to_owned(), RestrictedExpression::new_long(minute)));
        }
        let context = Context::from_pairs(
            [
                (
                    "action".to_owned(),
                    RestrictedExpression::new_string(action.to_owned()),
                ),
                (
                    "resource".to_owned(),
                    RestrictedExpression::new_string(resource.to_owned()),
                ),
                (
                    "sandbox".to_owned(),
                    RestrictedExpression::new_bool(sandbox),
                ),
            ]
            .into_iter()
            .chain(extra),
        )
        .expect("a valid context");
        let resource =
            EntityUid::from_type_name_and_id(self.resource_type.clone(), EntityId::new(resource));
        let request = Request::new(
            agent.uid.clone(),
            self.check.clone(),
            resource,
            context,
            None,
        )
        .expect("a valid request");
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &agent.entities);
        self.verdict(&response)
    }

    /// Maps Cedar's answer onto MeshGuard's: Cedar reports the set of statements that decided,
    /// MeshGuard the first one (smallest policy name, then rule order).
    fn verdict(&self, response: &Response) -> Verdict {
        assert_eq!(
            response.diagnostics().errors().count(),
            0,
            "a Cedar statement failed to evaluate"
        );
        let annotation = |id, key| self.policies.annotation(id, key).unwrap_or_default();
        let mut decided: Vec<(&str, u32, &str)> = Vec::new();
        let mut approval: Option<&str> = None;
        for id in response.diagnostics().reason() {
            if let Some(policy) = self.policies.annotation(id, "approval") {
                approval = Some(approval.map_or(policy, |first| first.min(policy)));
                continue;
            }
            let rule = annotation(id, "rule");
            let order = rule
                .strip_prefix("rule-")
                .and_then(|n| n.parse().ok())
                .unwrap_or(u32::MAX);
            decided.push((annotation(id, "policy"), order, rule));
        }
        let first = decided
            .iter()
            .min()
            .map(|(policy, _, rule)| (policy.to_string(), rule.to_string()));
        match (response.decision(), approval, first) {
            (Decision::Allow, Some(policy), _) => Verdict::RequireApproval {
                policy: policy.to_owned(),
            },
            (Decision::Allow, None, Some((policy, rule))) => Verdict::Allow { policy, rule },
            (Decision::Deny, _, Some((policy, rule))) => Verdict::Deny { policy, rule },
            (Decision::Deny, _, None) => Verdict::DenyWithoutRule,
            (Decision::Allow, None, None) => Verdict::Other("allow without a statement".to_owned()),
        }
    }
}
