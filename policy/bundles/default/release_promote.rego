# release.promote: may this actor point this channel at this release?
#
# A gated channel (production) takes only a release that passed its evaluations and was
# signed off by people other than its author. No channel takes a release that uses a
# retired agent. The reasons are worded like the registry's own promotion problems.
package baton.release_promote

import rego.v1

import data.baton.lib

# Entrypoint baton/release_promote/decision (the default answers when there is no input).
default decision := {"allow": false, "require_approval": false, "reasons": ["no input document"]}

decision := decide(input)

decide(inp) := lib.decision(granted(inp), denials) if {
	denials := {msg | some check in deny_checks; msg := deny(check, inp)}
}

# --- Settings (data.baton.release) -----------------------------------------------------------

default default_min_score := 0.9

default_min_score := data.baton.release.min_score

default required_signoffs := 2

required_signoffs := data.baton.release.required_signoffs

default promoter_roles := ["platform", "admin"]

promoter_roles := data.baton.release.promoter_roles

# --- The positive rule -----------------------------------------------------------------------

granted(inp) := true if {
	lib.envelope_ok(inp, "release.promote")
	lib.non_empty(inp.actor.username)
	actor_may_promote(inp)
	retired_agents(inp) == []
	gates_pass(inp)
} else := false

# An ungated channel (staging) only keeps retired agents out.
gates_pass(inp) if inp.channel.gated == false

gates_pass(inp) if {
	inp.channel.gated == true
	is_array(inp.release.evaluations)
	count(inp.release.evaluations) > 0
	every evaluation in inp.release.evaluations {
		passes(evaluation, min_score(inp))
	}
	count(independent_signoffs(inp)) >= required_signoffs
}

required_paths := {
	["release", "id"],
	["release", "author"],
	["release", "evaluations"],
	["release", "signoffs"],
	["channel", "name"],
	["channel", "gated"],
	["actor", "username"],
	["actor", "roles"],
} | lib.envelope_paths

actor_may_promote(inp) if {
	some role in inp.actor.roles
	role in promoter_roles
}

# The release's own threshold (from its workflow definition) when it has one.
min_score(inp) := inp.release.min_score if is_number(inp.release.min_score) else := default_min_score

passes(evaluation, threshold) if {
	is_number(evaluation.score)
	evaluation.score >= threshold
}

# Distinct, named people other than the author.
independent_signoffs(inp) := {person |
	some person in inp.release.signoffs
	lib.non_empty(person)
	person != inp.release.author
}

retired_agents(inp) := lib.get(inp, ["release", "retired_agents"], [])

# --- Deny checks -----------------------------------------------------------------------------

deny_checks := [
	"incomplete_input",
	"wrong_decision_point",
	"unsupported_version",
	"actor_role",
	"retired_agents",
	"no_evaluations",
	"low_scores",
	"signoffs",
]

deny("incomplete_input", inp) := lib.incomplete(inp, required_paths)

deny("wrong_decision_point", inp) := lib.wrong_point_reason(inp, "release.promote")

deny("unsupported_version", inp) := lib.version_reason(inp)

deny("actor_role", inp) := msg if {
	lib.has_path(inp, ["actor", "roles"])
	not actor_may_promote(inp)
	roles := lib.join(" or ", promoter_roles)
	msg := lib.message(["actor ", inp.actor.username, " needs role ", roles, " to promote a release"])
}

deny("retired_agents", inp) := msg if {
	is_array(retired_agents(inp))
	count(retired_agents(inp)) > 0
	msg := lib.message(["uses retired agents: ", lib.join(", ", lib.sorted(retired_agents(inp)))])
}

deny("no_evaluations", inp) := "no evaluation results are attached" if {
	inp.channel.gated == true
	inp.release.evaluations == []
}

deny("low_scores", inp) := msg if {
	inp.channel.gated == true
	failing := {suite |
		some evaluation in inp.release.evaluations
		not passes(evaluation, min_score(inp))
		suite := lib.get(evaluation, ["suite"], "(unnamed suite)")
	}
	count(failing) > 0
	msg := lib.message(["evaluations below ", min_score(inp), ": ", lib.join(", ", lib.sorted(failing))])
}

deny("signoffs", inp) := msg if {
	inp.channel.gated == true
	signers := count(independent_signoffs(inp))
	signers < required_signoffs
	msg := lib.message([signers, " of ", required_signoffs, " sign-offs by people other than the author"])
}
