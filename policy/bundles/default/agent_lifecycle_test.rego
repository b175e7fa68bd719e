package baton.agent_lifecycle_test

import rego.v1

import data.baton.agent_lifecycle
import data.baton.lib

ready_agent := {
	"slug": "case_manager",
	"status": "draft",
	"has_owner": true,
	"has_runbook": true,
	"has_slos": true,
}

platform_user := {"username": "pat", "roles": ["platform"], "kind": "user"}

# An agent.lifecycle input document: the envelope and `fields`.
document(fields) := lib.merge({"decision_point": "agent.lifecycle", "version": 1}, fields)

moving(agent, target, actor) := document({"agent": agent, "to": target, "actor": actor})

move(agent_changes, target, extra) := agent_lifecycle.decide(lib.merge(
	moving(lib.merge(ready_agent, agent_changes), target, platform_user),
	extra,
))

allowed(d) if {
	d.allow == true
	d.require_approval == false
	d.reasons == []
}

test_empty_input_denies if {
	d := agent_lifecycle.decide({})
	d.allow == false
	d.reasons == ["incomplete input: missing actor, agent, decision_point, to, version"]
}

test_entrypoint_is_always_defined_and_denies_without_input if {
	agent_lifecycle.decision.allow == false
}

test_missing_agent_status_denies if {
	without_status := {"slug": "case_manager"}
	d := agent_lifecycle.decide(moving(without_status, "deprecated", platform_user))
	d.allow == false
	d.reasons == ["incomplete input: missing agent.status"]
}

# --- Who may move an agent -------------------------------------------------------------------

test_platform_user_may_activate_a_ready_agent if {
	allowed(move({}, "active", {}))
}

test_admin_may_deprecate_an_agent if {
	admin := {"username": "root", "roles": ["admin"]}
	allowed(move({"status": "active"}, "deprecated", {"actor": admin}))
}

test_actor_without_platform_or_admin_role_is_denied if {
	d := move({}, "active", {"actor": {"username": "rita", "roles": ["reviewer"]}})
	d.allow == false
	d.reasons == ["actor rita needs role platform or admin to change an agent's lifecycle"]
}

test_unknown_status_is_denied if {
	d := move({"status": "active"}, "paused", {})
	d.allow == false
	d.reasons == ["unknown status paused: one of active, deprecated, draft, retired"]
}

# --- Activation ------------------------------------------------------------------------------

test_activation_needs_an_owner_a_runbook_and_slos if {
	d := move({"has_owner": false, "has_slos": false}, "active", {})
	d.allow == false
	d.reasons == ["agent case_manager cannot become active: no owner, no SLOs"]
}

test_activation_with_unknown_readiness_is_denied if {
	unknown_readiness := {"slug": "case_manager", "status": "draft"}
	d := agent_lifecycle.decide(moving(unknown_readiness, "active", platform_user))
	d.allow == false
	d.reasons == ["agent case_manager cannot become active: no owner, no runbook, no SLOs"]
}

test_deprecation_needs_no_readiness if {
	allowed(move({"status": "active", "has_runbook": false}, "deprecated", {}))
}

# --- Retirement ------------------------------------------------------------------------------

test_retirement_with_a_reason_is_allowed if {
	allowed(move({"status": "active"}, "retired", {"reason": "replaced by case_manager_v2"}))
}

test_retirement_without_a_reason_is_denied if {
	d := move({"status": "active"}, "retired", {})
	d.allow == false
	d.reasons == ["retiring agent case_manager needs a reason"]
}

test_retirement_with_a_blank_reason_is_denied if {
	d := move({"status": "active"}, "retired", {"reason": "  "})
	d.allow == false
	d.reasons == ["retiring agent case_manager needs a reason"]
}

test_retired_agent_cannot_come_back if {
	d := move({"status": "retired"}, "active", {})
	d.allow == false
	d.reasons == ["agent case_manager is retired and cannot become active"]
}

test_retired_agent_cannot_become_draft if {
	d := move({"status": "retired"}, "draft", {})
	d.allow == false
	d.reasons == ["agent case_manager is retired and cannot become draft"]
}

test_lifecycle_settings_from_data if {
	agent_lifecycle.actor_roles == ["platform", "admin"]
}

test_positive_rule_refuses_what_the_deny_checks_explain if {
	reviewer := {"username": "rita", "roles": ["reviewer"]}
	retired := lib.merge(ready_agent, {"status": "retired"})
	without_slos := lib.merge(ready_agent, {"has_slos": false})
	agent_lifecycle.granted(moving(ready_agent, "active", platform_user))
	agent_lifecycle.granted(moving(retired, "active", platform_user)) == false
	agent_lifecycle.granted(moving(without_slos, "active", platform_user)) == false
	agent_lifecycle.granted(moving(ready_agent, "retired", platform_user)) == false
	agent_lifecycle.granted(moving(ready_agent, "paused", platform_user)) == false
	agent_lifecycle.granted(moving(ready_agent, "active", reviewer)) == false
	agent_lifecycle.granted(moving(ready_agent, "active", {"username": "", "roles": ["admin"]})) == false
	agent_lifecycle.granted({}) == false
}

test_input_for_another_decision_point_is_denied if {
	d := move({}, "active", {"decision_point": "release.promote"})
	d.allow == false
	d.reasons == ["input is for release.promote, not agent.lifecycle"]
}

test_unsupported_input_version_is_denied if {
	d := move({}, "active", {"version": 2})
	d.allow == false
	d.reasons == ["input version 2 is not supported"]
}
