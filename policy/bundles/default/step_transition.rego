# step.transition: may the run move from one step to the next?
#
# The workflow definition is a state machine, and `allowed_next` lists the states the current
# step may hand over to. A model may propose the next step; it cannot invent a branch.
package baton.step_transition

import rego.v1

import data.baton.lib

# Entrypoint baton/step_transition/decision (the default answers when there is no input).
default decision := {"allow": false, "require_approval": false, "reasons": ["no input document"]}

decision := decide(input)

decide(inp) := lib.decision(granted(inp), denials) if {
	denials := {msg | some check in deny_checks; msg := deny(check, inp)}
}

granted(inp) := true if {
	lib.envelope_ok(inp, "step.transition")
	is_string(inp.from)
	is_array(inp.allowed_next)
	inp.to in inp.allowed_next
	lib.within_limits(inp.run)
} else := false

required_paths := {["from"], ["to"], ["allowed_next"]} | lib.run_paths | lib.envelope_paths

deny_checks := [
	"incomplete_input",
	"wrong_decision_point",
	"unsupported_version",
	"not_in_workflow",
	"hop_limit",
	"budget",
	"deadline",
]

deny("incomplete_input", inp) := lib.incomplete(inp, required_paths)

deny("wrong_decision_point", inp) := lib.wrong_point_reason(inp, "step.transition")

deny("unsupported_version", inp) := lib.version_reason(inp)

deny("not_in_workflow", inp) := msg if {
	is_array(inp.allowed_next)
	not inp.to in inp.allowed_next
	msg := lib.message(["transition ", inp.from, " -> ", inp.to, " is not in the workflow"])
}

deny("hop_limit", inp) := lib.hop_limit_reason(inp.run)

deny("budget", inp) := lib.budget_reason(inp.run)

deny("deadline", inp) := lib.deadline_reason(inp.run)
