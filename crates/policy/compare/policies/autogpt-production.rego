# Rego translation of autogpt-production.yaml (beside it), kept equivalent by hand for the
# `policy_decide` benchmark (the benchmark asserts that Rego, Cedar and MeshGuard give the same
# answer before it measures anything). Evaluated by the `regorus` crate as `data.meshguard.decision`.
#
# input: {"agent": {"tags": [..], "trust": 0..3}, "action": "verb:object", "resource": "...",
#         "context": {...}}   (trust: unverified = 0, verified = 1, trusted = 2, privileged = 3)
#
# How each MeshGuard construct maps:
# - appliesTo.tags → `<policy>_applies`: the agent has one of the tags.
# - First-match rule order → an `else` chain: the first body that holds is the policy's verdict;
#   no body holds → no verdict, only the policy's weak defaultEffect.
# - Across policies (SPEC step 4-7) → `decision`, an `else` chain: no applicable policy, then any
#   deny verdict, then an approval entry, then any allow verdict, then the weak defaults. "First"
#   means the smallest policy name, as in MeshGuard (sets sort, so `sort(...)[0]`).
# - Patterns → `pattern_match(s, literals, prefixes, dirs)`: a literal is set membership, `verb:*`
#   is `startswith`, and `dir/*` is `dir` itself or `startswith(s, "dir/")`. The qualified form
#   `action/resource` needs no test here: a literal without `/` can never equal it, `verb:*`
#   matches it exactly when it matches the action, and `dir/*` matches it exactly when the action
#   is `dir` or lies under `dir/`, which `dirs` already covers.
# - resourcePattern → the same matcher on `input.resource`; sandbox: true →
#   `input.context.sandbox == true` (absent is undefined: the body fails, as "absent = false").
# - humanInTheLoop.requireApproval → `approvals`, consulted after denials and before allows.
# - rateLimit / rateLimits → not part of a Rego decision; the MeshGuard side of the benchmark uses
#   the `Unlimited` oracle so that no engine pays for limits.
package meshguard

import rego.v1

pattern_match(s, literals, _, _) if s in literals

pattern_match(s, _, prefixes, _) if {
	some p in prefixes
	startswith(s, p)
}

pattern_match(s, _, _, dirs) if {
	some d in dirs
	in_dir(s, d)
}

in_dir(s, d) if s == d

in_dir(s, d) if startswith(s, concat("", [d, "/"]))

# ---- policy autogpt-production ----------------------------------------------------------------

autogpt_production_applies if {
	some tag in input.agent.tags
	tag in {"autogpt", "production"}
}

autogpt_production_verdict := {"effect": "allow", "rule": "rule-1"} if {
	pattern_match(input.action, {"browse:web", "search:web"}, [], [])
} else := {"effect": "allow", "rule": "rule-2"} if {
	pattern_match(input.action, set(), [], ["read:workspace", "write:workspace"])
	pattern_match(input.resource, set(), [], ["workspace"])
} else := {"effect": "allow", "rule": "rule-3"} if {
	pattern_match(input.action, {"execute:python"}, [], [])
	input.context.sandbox == true
} else := {"effect": "deny", "rule": "rule-4"} if {
	pattern_match(input.action, {"execute:shell"}, ["delete:", "send:", "pay:", "admin:"], [])
}

applicable contains "autogpt-production" if autogpt_production_applies

# defaultEffect: deny
default_denies contains "autogpt-production" if autogpt_production_applies

verdicts contains {"policy": "autogpt-production", "effect": v.effect, "rule": v.rule} if {
	autogpt_production_applies
	v := autogpt_production_verdict
}

approvals contains "autogpt-production" if {
	autogpt_production_applies
	pattern_match(input.action, {"send:email", "post:social"}, ["pay:"], [])
}

# ---- combining policies -----------------------------------------------------------------------

denials := {[v.policy, v.rule] | some v in verdicts; v.effect == "deny"}

allows := {[v.policy, v.rule] | some v in verdicts; v.effect == "allow"}

decision := {"effect": "deny", "code": "no_policy"} if {
	count(applicable) == 0
} else := {"effect": "deny", "code": "denied_by_rule", "policy": first[0], "rule": first[1]} if {
	count(denials) > 0
	first := sort(denials)[0]
} else := {"effect": "require_approval", "code": "approval_required", "policy": first} if {
	count(approvals) > 0
	first := sort(approvals)[0]
} else := {"effect": "allow", "code": "allowed", "policy": first[0], "rule": first[1]} if {
	count(allows) > 0
	first := sort(allows)[0]
} else := {"effect": "allow", "code": "allowed", "policy": sort(applicable)[0]} if {
	count(default_denies) == 0
} else := {"effect": "deny", "code": "default_deny", "policy": sort(default_denies)[0]}
