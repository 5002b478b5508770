# Rego translation of payments-hours.yaml (beside it), kept equivalent by hand for the
# `policy_decide` benchmark. It is loaded with the helpers and the combining section of
# autogpt-production.rego (the benchmark slices them out of that file, as for the generated sets).
#
# What is new here:
# - a context condition on `arguments.amount` → `amount`, defined only when the value is a number
#   (Rego orders values of different types, so a string must not reach a numeric comparison);
# - `arguments.currency: {in: [EUR, USD]}` → set membership;
# - `schedule` → `input.day` and `input.minute`: Rego has no time zones, so the request adapter
#   puts the check's weekday and minute of the day in Europe/Berlin into the input, inside the
#   measured call, as MeshGuard computes them inside its own.
package meshguard

import rego.v1

# ---- policy payments-hours --------------------------------------------------------------------

payments_hours_applies if "payer" in input.agent.tags

amount := input.context.arguments.amount if is_number(input.context.arguments.amount)

payments_hours_verdict := {"effect": "deny", "rule": "never-above-500"} if {
	startswith(input.action, "pay:")
	amount > 500
} else := {"effect": "allow", "rule": "small-payments"} if {
	startswith(input.action, "pay:")
	amount >= 0
	amount <= 50
	input.context.arguments.currency in {"EUR", "USD"}
} else := {"effect": "allow", "rule": "office-deploys"} if {
	startswith(input.action, "deploy:")
	input.day in {"mon", "tue", "wed", "thu", "fri"}
	input.minute >= 540
	input.minute < 1080
}

applicable contains "payments-hours" if payments_hours_applies

# defaultEffect: deny
default_denies contains "payments-hours" if payments_hours_applies

verdicts contains {"policy": "payments-hours", "effect": v.effect, "rule": v.rule} if {
	payments_hours_applies
	v := payments_hours_verdict
}

# No approval entry: the combining section's set stays empty.
approvals contains "payments-hours" if {
	payments_hours_applies
	false
}
