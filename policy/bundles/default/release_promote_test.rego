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

# A release.promote input document: the envelope and `fields`.
document(fields) := lib.merge({"decision_point": "release.promote", "version": 1}, fields)

promoting(release_changes, channel, actor) := document({
	"release": lib.merge(release, release_changes),
	"channel": channel,
	"actor": actor,
})

promote(release_changes, channel, actor) := release_promote.decide(promoting(release_changes, channel, actor))

allowed(d) if {
	d.allow == true
	d.require_approval == false
	d.reasons == []
}

test_empty_input_denies if {
	d := release_promote.decide({})
	d.allow == false
	d.reasons == ["incomplete input: missing actor, channel, decision_point, release, version"]
}

test_entrypoint_is_always_defined_and_denies_without_input if {
	release_promote.decision.allow == false
}

test_missing_gated_flag_denies if {
	d := promote({}, {"name": "production"}, platform_user)
	d.allow == false
	d.reasons == ["incomplete input: missing channel.gated"]
}

# --- Gated channels --------------------------------------------------------------------------

test_evaluated_and_signed_off_release_goes_to_production if {
	allowed(promote({}, production, platform_user))
}

test_admin_may_promote if {
	allowed(promote({}, production, {"username": "root", "roles": ["admin"]}))
}

test_actor_without_platform_or_admin_role_is_denied if {
	d := promote({}, production, {"username": "rita", "roles": ["reviewer"]})
	d.allow == false
	d.reasons == ["actor rita needs role platform or admin to promote a release"]
}

test_actor_role_applies_to_ungated_channels_too if {
	d := promote({}, staging, {"username": "rita", "roles": []})
	d.allow == false
	d.reasons == ["actor rita needs role platform or admin to promote a release"]
}

test_release_without_evaluations_is_denied if {
	d := promote({"evaluations": []}, production, platform_user)
	d.allow == false
	d.reasons == ["no evaluation results are attached"]
}

test_low_scores_are_denied if {
	scores := [{"suite": "safety", "score": 0.95}, {"suite": "golden_cases", "score": 0.85}]
	d := promote({"evaluations": scores}, production, platform_user)
	d.allow == false
	d.reasons == ["evaluations below 0.9: golden_cases"]
}

test_score_at_the_minimum_passes if {
	scores := [{"suite": "golden_cases", "score": 0.9}]
	allowed(promote({"evaluations": scores}, production, platform_user))
}

test_release_min_score_overrides_the_default if {
	d := promote({"min_score": 0.95}, production, platform_user)
	d.allow == false
	d.reasons == ["evaluations below 0.95: golden_cases"]
}

test_lower_release_min_score_is_honoured if {
	scores := [{"suite": "golden_cases", "score": 0.85}]
	allowed(promote({"min_score": 0.8, "evaluations": scores}, production, platform_user))
}

test_author_signoff_does_not_count if {
	d := promote({"signoffs": ["ada", "bob"]}, production, platform_user)
	d.allow == false
	d.reasons == ["1 of 2 sign-offs by people other than the author"]
}

test_blank_signoffs_do_not_count if {
	d := promote({"signoffs": ["bob", " "]}, production, platform_user)
	d.allow == false
	d.reasons == ["1 of 2 sign-offs by people other than the author"]
}

test_repeated_signoffs_count_once if {
	d := promote({"signoffs": ["bob", "bob"]}, production, platform_user)
	d.allow == false
	d.reasons == ["1 of 2 sign-offs by people other than the author"]
}

test_retired_agents_are_denied_on_gated_channels if {
	d := promote({"retired_agents": ["legacy_writer"]}, production, platform_user)
	d.allow == false
	d.reasons == ["uses retired agents: legacy_writer"]
}

test_every_gate_problem_is_reported if {
	problems := {"evaluations": [], "signoffs": ["ada"], "retired_agents": ["z_agent", "a_agent"]}
	d := promote(problems, production, platform_user)
	d.allow == false
	d.reasons == [
		"0 of 2 sign-offs by people other than the author",
		"no evaluation results are attached",
		"uses retired agents: a_agent, z_agent",
	]
}

# --- Ungated channels ------------------------------------------------------------------------

test_ungated_channel_needs_no_evaluations_or_signoffs if {
	allowed(promote({"evaluations": [], "signoffs": []}, staging, platform_user))
}

test_retired_agents_are_denied_on_ungated_channels if {
	d := promote({"retired_agents": ["legacy_writer"]}, staging, platform_user)
	d.allow == false
	d.reasons == ["uses retired agents: legacy_writer"]
}

test_release_settings_from_data if {
	release_promote.default_min_score == 0.9
	release_promote.required_signoffs == 2
	release_promote.promoter_roles == ["platform", "admin"]
}

test_positive_rule_refuses_what_the_deny_checks_explain if {
	nobody := {"username": "rita", "roles": []}
	release_promote.granted(promoting({}, production, platform_user))
	release_promote.granted(promoting({"signoffs": ["ada", "bob"]}, production, platform_user)) == false
	release_promote.granted(promoting({"evaluations": []}, production, platform_user)) == false
	release_promote.granted(promoting({"retired_agents": ["x"]}, staging, platform_user)) == false
	release_promote.granted(promoting({}, {"name": "production"}, platform_user)) == false
	release_promote.granted(promoting({}, staging, nobody)) == false
	release_promote.granted(promoting({}, staging, {"username": "", "roles": ["admin"]})) == false
	release_promote.granted({}) == false
}

test_input_for_another_decision_point_is_denied if {
	misdirected := lib.merge(promoting({}, production, platform_user), {"decision_point": "run.start"})
	d := release_promote.decide(misdirected)
	d.allow == false
	d.reasons == ["input is for run.start, not release.promote"]
}

test_unsupported_input_version_is_denied if {
	d := release_promote.decide(lib.merge(promoting({}, production, platform_user), {"version": "1"}))
	d.allow == false
	d.reasons == ["input version 1 is not supported"]
}

test_evaluation_without_a_score_fails if {
	scores := [{"suite": "golden_cases", "score": 0.94}, {"suite": "safety"}]
	d := promote({"evaluations": scores}, production, platform_user)
	d.allow == false
	d.reasons == ["evaluations below 0.9: safety"]
}
