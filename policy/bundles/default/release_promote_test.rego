package baton.release_promote_test

import rego.v1

import data.baton.lib
import data.baton.release_promote

release := {
	"id": "rel_0123456789abcdef",
	"workflow": "support_case_resolution",
	"author": "ada",
	"evaluations": [{"suite": "golden_cases", "score": 0.94}, {"suite": "safety", "score": 0.97}],
	"signoffs": ["bob", "carol"],
	"retired_agents": [],
}

production := {"name": "production", "gated": true, "mode": "full"}

staging := {"name": "staging", "gated": false, "mode": "full"}

platform_user := {"username": "pat", "roles": ["platform"], "kind": "user"}

# A release.promote input: the release with `release_changes`, a channel and an actor.
promoting(release_changes, channel, actor) := {
	"decision_point": "release.promote",
	"version": 1,
	"release": lib.merge(release, release_changes),
	"channel": channel,
	"actor": actor,
}

promote(release_changes, channel, actor) := release_promote.decide(promoting(release_changes, channel, actor))

ok := {"allow": true, "require_approval": false, "reasons": []}

refusal(reasons) := {"allow": false, "require_approval": false, "reasons": reasons}

test_entrypoint_is_always_defined_and_denies_without_input if {
	release_promote.decision.allow == false
}

test_empty_input_denies if {
	release_promote.decide({}).allow == false
}

test_missing_gated_flag_denies if {
	promote({}, {"name": "production"}, platform_user) == refusal(["no rule allows this request"])
}

# --- Who may promote -------------------------------------------------------------------------

test_evaluated_and_signed_off_release_goes_to_production if {
	promote({}, production, platform_user) == ok
}

test_actor_without_platform_or_admin_role_is_denied if {
	reason := "actor rita needs role platform or admin to promote a release"
	promote({}, production, {"username": "rita", "roles": ["reviewer"]}) == refusal([reason])
	promote({}, staging, {"username": "rita", "roles": []}) == refusal([reason])
}

# --- Gated channels --------------------------------------------------------------------------

test_release_without_evaluations_is_denied if {
	promote({"evaluations": []}, production, platform_user) == refusal(["no evaluation results are attached"])
}

test_low_scores_are_denied if {
	scores := [{"suite": "safety", "score": 0.95}, {"suite": "golden_cases", "score": 0.85}]
	reason := "evaluations below 0.9: golden_cases"
	promote({"evaluations": scores}, production, platform_user) == refusal([reason])
}

test_score_at_the_minimum_passes if {
	promote({"evaluations": [{"suite": "golden_cases", "score": 0.9}]}, production, platform_user) == ok
}

test_evaluation_without_a_score_fails if {
	scores := [{"suite": "golden_cases", "score": 0.94}, {"suite": "safety"}]
	promote({"evaluations": scores}, production, platform_user) == refusal(["evaluations below 0.9: safety"])
}

test_release_min_score_overrides_the_default if {
	promote({"min_score": 0.95}, production, platform_user) == refusal(["evaluations below 0.95: golden_cases"])
}

test_lower_release_min_score_is_honoured if {
	scores := [{"suite": "golden_cases", "score": 0.85}]
	promote({"min_score": 0.8, "evaluations": scores}, production, platform_user) == ok
}

test_author_signoff_does_not_count if {
	d := promote({"signoffs": ["ada", "bob"]}, production, platform_user)
	d == refusal(["1 of 2 sign-offs by people other than the author"])
}

test_blank_and_repeated_signoffs_count_once if {
	reason := "1 of 2 sign-offs by people other than the author"
	promote({"signoffs": ["bob", " "]}, production, platform_user) == refusal([reason])
	promote({"signoffs": ["bob", "bob"]}, production, platform_user) == refusal([reason])
}

test_every_gate_problem_is_reported if {
	problems := {"evaluations": [], "signoffs": ["ada"], "retired_agents": ["z_agent", "a_agent"]}
	promote(problems, production, platform_user) == refusal([
		"0 of 2 sign-offs by people other than the author",
		"no evaluation results are attached",
		"uses retired agents: a_agent, z_agent",
	])
}

# --- Ungated channels and retired agents -----------------------------------------------------

test_ungated_channel_needs_no_evaluations_or_signoffs if {
	promote({"evaluations": [], "signoffs": []}, staging, platform_user) == ok
}

test_retired_agents_are_denied_on_every_channel if {
	reason := "uses retired agents: legacy_writer"
	promote({"retired_agents": ["legacy_writer"]}, production, platform_user) == refusal([reason])
	promote({"retired_agents": ["legacy_writer"]}, staging, platform_user) == refusal([reason])
}

test_release_without_retired_agents_list_is_allowed if {
	doc := promoting({}, staging, platform_user)
	release_promote.decide(lib.merge(doc, {"release": object.remove(release, ["retired_agents"])})) == ok
}

test_release_settings_from_data if {
	release_promote.default_min_score == 0.9
	release_promote.required_signoffs == 2
	release_promote.promoter_roles == ["platform", "admin"]
}

test_positive_rule_refuses_without_every_fact if {
	release_promote.granted(promoting({}, production, platform_user))
	release_promote.granted(promoting({"evaluations": "passed"}, production, platform_user)) == false
	release_promote.granted(promoting({}, staging, {"username": "", "roles": ["admin"]})) == false
	release_promote.granted(promoting({"author": 7}, production, platform_user)) == false
	release_promote.granted({}) == false
}
