package baton.approval_decide_test

import rego.v1

import data.baton.approval_decide
import data.baton.lib

reviewer := {"username": "rita", "groups": ["reviewer"], "clearance": "confidential"}

# case_manager asked (on ada's run) for a refund that the reviewer group must decide.
request := {
	"requested_by": "ada",
	"agent": "case_manager",
	"approver_group": "reviewer",
	"sensitivity": "confidential",
}

# An approval.decide input document: the envelope and `fields`.
document(fields) := lib.merge({"decision_point": "approval.decide", "version": 1}, fields)

decide_as(reviewer_changes, request_changes, verdict) := approval_decide.decide(document({
	"reviewer": lib.merge(reviewer, reviewer_changes),
	"request": lib.merge(request, request_changes),
	"decision": verdict,
}))

allowed(d) if {
	d.allow == true
	d.require_approval == false
	d.reasons == []
}

test_empty_input_denies if {
	d := approval_decide.decide({})
	d.allow == false
	d.reasons == ["incomplete input: missing decision, decision_point, request, reviewer, version"]
}

test_entrypoint_is_always_defined_and_denies_without_input if {
	approval_decide.decision.allow == false
}

test_missing_requester_denies if {
	anonymous := object.remove(request, ["requested_by"])
	d := approval_decide.decide(document({"reviewer": reviewer, "request": anonymous, "decision": "approve"}))
	d.allow == false
	d.reasons == ["incomplete input: missing request.requested_by"]
}

test_group_member_may_approve if {
	allowed(decide_as({}, {}, "approve"))
}

test_group_member_may_reject if {
	allowed(decide_as({}, {}, "reject"))
}

test_unknown_decision_is_denied if {
	d := decide_as({}, {}, "maybe")
	d.allow == false
	d.reasons == ["the decision must be approve or reject"]
}

# --- Separation of duties --------------------------------------------------------------------

test_requester_cannot_approve_their_own_request if {
	d := decide_as({"username": "ada"}, {}, "approve")
	d.allow == false
	d.reasons == ["requester cannot approve their own request"]
}

test_requester_cannot_reject_their_own_request_either if {
	d := decide_as({"username": "ada"}, {}, "reject")
	d.allow == false
	d.reasons == ["requester cannot reject their own request"]
}

test_agent_cannot_approve_its_own_action if {
	d := decide_as({"username": "agent.case_manager"}, {}, "approve")
	d.allow == false
	d.reasons == ["the agent cannot approve its own action"]
}

test_agent_named_by_slug_cannot_approve_its_own_action if {
	d := decide_as({"username": "case_manager"}, {}, "approve")
	d.allow == false
	d.reasons == ["the agent cannot approve its own action"]
}

test_another_agent_is_not_the_acting_agent if {
	allowed(decide_as({"username": "agent.auditor_bot"}, {}, "approve"))
}

test_reviewer_outside_the_approver_group_is_denied if {
	d := decide_as({}, {"approver_group": "platform"}, "approve")
	d.allow == false
	d.reasons == ["reviewer rita is not in the approver group platform"]
}

test_reviewer_outside_the_approver_group_cannot_reject_either if {
	d := decide_as({"groups": ["auditor"]}, {}, "reject")
	d.allow == false
	d.reasons == ["reviewer rita is not in the approver group reviewer"]
}

test_member_of_several_groups_may_decide_for_any if {
	allowed(decide_as({"groups": ["reviewer", "platform"]}, {"approver_group": "platform"}, "approve"))
}

# --- Clearance -------------------------------------------------------------------------------

test_clearance_below_the_request_sensitivity_is_denied if {
	d := decide_as({}, {"sensitivity": "restricted"}, "approve")
	d.allow == false
	d.reasons == [
		"reviewer rita is cleared for confidential data, and the request holds restricted data",
	]
}

test_missing_clearance_counts_as_internal if {
	d := approval_decide.decide(document({
		"reviewer": object.remove(reviewer, ["clearance"]),
		"request": request,
		"decision": "approve",
	}))
	d.allow == false
	d.reasons == [
		"reviewer rita is cleared for internal data, and the request holds confidential data",
	]
}

test_missing_clearance_covers_internal_data if {
	allowed(approval_decide.decide(document({
		"reviewer": object.remove(reviewer, ["clearance"]),
		"request": lib.merge(request, {"sensitivity": "internal"}),
		"decision": "approve",
	})))
}

test_higher_clearance_covers_less_sensitive_data if {
	allowed(decide_as({"clearance": "restricted"}, {"sensitivity": "public"}, "approve"))
}

test_every_violation_is_reported if {
	d := decide_as({"username": "ada", "groups": [], "clearance": "public"}, {}, "approve")
	d.allow == false
	d.reasons == [
		"requester cannot approve their own request",
		"reviewer ada is cleared for public data, and the request holds confidential data",
		"reviewer ada is not in the approver group reviewer",
	]
}

deciding(reviewer_changes, a_request, verdict) := document({
	"reviewer": lib.merge(reviewer, reviewer_changes),
	"request": a_request,
	"decision": verdict,
})

test_positive_rule_refuses_what_the_deny_checks_explain if {
	approval_decide.granted(deciding({}, request, "approve"))
	approval_decide.granted(deciding({"username": "ada"}, request, "approve")) == false
	approval_decide.granted(deciding({"username": "agent.case_manager"}, request, "reject")) == false
	approval_decide.granted(deciding({"groups": []}, request, "approve")) == false
	approval_decide.granted(deciding({"clearance": "public"}, request, "approve")) == false
	approval_decide.granted(deciding({}, object.remove(request, ["agent"]), "approve")) == false
	approval_decide.granted(deciding({}, request, "abstain")) == false
	approval_decide.granted(object.remove(deciding({}, request, "approve"), ["version"])) == false
	approval_decide.granted({}) == false
}

test_input_for_another_decision_point_is_denied if {
	d := approval_decide.decide(lib.merge(deciding({}, request, "approve"), {"decision_point": "tool.call"}))
	d.allow == false
	d.reasons == ["input is for tool.call, not approval.decide"]
}

test_unsupported_input_version_is_denied if {
	d := approval_decide.decide(lib.merge(deciding({}, request, "approve"), {"version": 2}))
	d.allow == false
	d.reasons == ["input version 2 is not supported"]
}
