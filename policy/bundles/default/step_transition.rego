# step.transition: may the run move from one step to the next?
#
# The workflow definition is a state machine, and `allowed_next` lists the states the current
# step may hand over to. A model may propose the next step; it cannot invent a branch.
package baton.step_transition

import rego.v1

import data.baton.lib

# Entrypoint baton/step_transition/decision; the default answers when there is no input.
default decision := {"allow": false, "require_approval": false, "reasons": ["no input document"]}

decision := decide(input)

decide(inp) := lib.allowed if granted(inp) else := lib.refused(denials(inp))

granted(inp) := true if {
	is_string(inp.from)
	next := inp.allowed_next
	is_array(next)
	inp.to in next
	lib.within_limits(inp.run)
} else := false

# --- Deny checks: each answers its reasons, [] when it does not fire -------------------------

# A transition without a run has no check to explain its refusal.
denials(inp) := [reason |
	some reasons in [
		not_in_workflow(inp),
		lib.hop_limit_reached(run),
		lib.budget_exceeded(run),
		lib.deadline_passed(run),
	]
	some reason in reasons
] if {
	run := inp.run
} else := []

not_in_workflow(inp) := [concat("", ["transition ", inp.from, " -> ", to, " is not in the workflow"])] if {
	to := inp.to
	next := inp.allowed_next
	not to in next
} else := []
