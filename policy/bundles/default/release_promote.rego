# release.promote: may this actor point this channel at this release?
#
# A gated channel (production) takes only a release that passed its evaluations and was
# signed off by people other than its author. No channel takes a release that uses a
# retired agent. The reasons are worded like the registry's own promotion problems.
package baton.release_promote

import rego.v1

import data.baton.lib

# Entrypoint baton/release_promote/decision; the default answers when there is no input.
default decision := {"allow": false, "require_approval": false, "reasons": ["no input document"]}

decision := decide(input)

decide(inp) := lib.allowed if granted(inp) else := lib.refused(denials(inp))

# --- Settings (data.baton.release) -----------------------------------------------------------

default default_min_score := 0.9

default_min_score := data.baton.release.min_score

default required_signoffs := 2

required_signoffs := data.baton.release.required_signoffs

default promoter_roles := ["platform", "admin"]

promoter_roles := data.baton.release.promoter_roles

# --- The positive rule -----------------------------------------------------------------------

granted(inp) := true if {
	actor := inp.actor
	lib.non_empty(actor.username)
	may_promote(actor)
	release := inp.release
	retired_agents(release) == []
	gates_pass(release, inp.channel)
} else := false

may_promote(actor) if {
	some role in actor.roles
	role in promoter_roles
}

# An ungated channel (staging) only keeps retired agents out.
gates_pass(_, channel) if channel.gated == false

gates_pass(release, channel) if {
	channel.gated == true
	evaluations := release.evaluations
	is_array(evaluations)
	not evaluations == []
	threshold := min_score(release)
	every evaluation in evaluations {
		passes(evaluation, threshold)
	}
	is_string(release.author)
	count(independent_signoffs(release)) >= required_signoffs
}

# The release's own threshold (from its workflow definition) when it has one.
min_score(release) := score if {
	score := release.min_score
	is_number(score)
} else := default_min_score

passes(evaluation, threshold) if evaluation.score - threshold >= 0

# Distinct, named people other than the author.
independent_signoffs(release) := {person |
	author := release.author
	some person in release.signoffs
	lib.non_empty(person)
	not person == author
}

retired_agents(release) := agents if {
	agents := release.retired_agents
} else := []

# --- Deny checks: each answers its reasons, [] when it does not fire -------------------------

denials(inp) := [reason |
	some reasons in [
		actor_role(inp),
		uses_retired_agents(inp),
		no_evaluations(inp),
		low_scores(inp),
		too_few_signoffs(inp),
	]
	some reason in reasons
]

actor_role(inp) := [concat("", [
	"actor ", actor.username, " needs role ", concat(" or ", promoter_roles), " to promote a release",
])] if {
	actor := inp.actor
	not may_promote(actor)
} else := []

uses_retired_agents(inp) := [concat("", ["uses retired agents: ", concat(", ", sort(agents))])] if {
	agents := retired_agents(inp.release)
	not agents == []
} else := []

no_evaluations(inp) := ["no evaluation results are attached"] if {
	inp.channel.gated == true
	inp.release.evaluations == []
} else := []

low_scores(inp) := [concat("", [
	sprintf("evaluations below %v: ", [threshold]), concat(", ", lib.sorted(failing)),
])] if {
	inp.channel.gated == true
	release := inp.release
	threshold := min_score(release)
	failing := {lib.get(evaluation, "suite", "(unnamed suite)") |
		some evaluation in release.evaluations
		not passes(evaluation, threshold)
	}
	not failing == set()
} else := []

too_few_signoffs(inp) := [sprintf(
	"%v of %v sign-offs by people other than the author",
	[signers, required_signoffs],
)] if {
	inp.channel.gated == true
	signers := count(independent_signoffs(inp.release))
	signers < required_signoffs
} else := []
