//! The `regorus` side: the Rego translation compiled once with `data.meshguard.decision` as its
//! entry point, and an input document built per check.

use regorus::{CompiledPolicy, Engine, Value};

use crate::workload::{Agent, Verdict};

/// A compiled Rego policy set.
pub struct RegoEngine {
    compiled: CompiledPolicy,
    /// The policies read the Berlin weekday and minute: the adapter adds them to every input.
    conditions: bool,
}

impl RegoEngine {
    /// Loads `(origin, text)` modules of package `meshguard`.
    pub fn new(modules: Vec<(String, String)>) -> RegoEngine {
        let mut engine = Engine::new();
        for (origin, text) in modules {
            engine
                .add_policy(origin, text)
                .expect("the Rego translation parses");
        }
        let compiled = engine
            .compile_with_entrypoint(&"data.meshguard.decision".into())
            .expect("the Rego translation compiles");
        RegoEngine {
            compiled,
            conditions: false,
        }
    }

    /// [`RegoEngine::new`] for policies with time conditions.
    pub fn with_conditions(modules: Vec<(String, String)>) -> RegoEngine {
        RegoEngine {
            conditions: true,
            ..RegoEngine::new(modules)
        }
    }

    /// The agent part of the input document, built once as a gateway would cache it.
    pub fn agent(agent: &Agent) -> Value {
        Value::from(serde_json::json!({"tags": agent.tags, "trust": agent.trust}))
    }

    /// One check: the input document is built from the MeshGuard request and the decision
    /// object is read back.
    pub fn decide(
        &self,
        agent: &Value,
        action: &str,
        resource: &str,
        context: &serde_json::Map<String, serde_json::Value>,
        now: time::OffsetDateTime,
    ) -> Verdict {
        let mut input = Value::new_object();
        let fields = input.as_object_mut().expect("a new object");
        fields.insert(Value::from("agent"), agent.clone());
        fields.insert(Value::from("action"), Value::from(action));
        fields.insert(Value::from("resource"), Value::from(resource));
        fields.insert(
            Value::from("context"),
            Value::from(serde_json::Value::Object(context.clone())),
        );
        if self.conditions {
            let (day, minute) = crate::workload::berlin_day_and_minute(now);
            fields.insert(Value::from("day"), Value::from(day));
            fields.insert(Value::from("minute"), Value::from(minute));
        }
        let decision = self
            .compiled
            .eval_with_input(input)
            .expect("the Rego decision evaluates");
        verdict(&decision)
    }
}

fn verdict(decision: &Value) -> Verdict {
    let text = |key: &str| match &decision[key] {
        Value::String(s) => s.to_string(),
        _ => String::new(),
    };
    match (text("effect").as_str(), text("code").as_str()) {
        ("allow", "allowed") => Verdict::Allow {
            policy: text("policy"),
            rule: text("rule"),
        },
        ("deny", "denied_by_rule") => Verdict::Deny {
            policy: text("policy"),
            rule: text("rule"),
        },
        ("require_approval", _) => Verdict::RequireApproval {
            policy: text("policy"),
        },
        ("deny", "default_deny" | "no_policy") => Verdict::DenyWithoutRule,
        _ => Verdict::Other(format!("{decision:?}")),
    }
}
