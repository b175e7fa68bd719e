package baton_test

import rego.v1

import data.baton

test_allowed_tool_within_scope if {
	baton.allow with input as {
		"decision_point": "tool.call",
		"agent": {"allowed_tools": {"kb_search": "read"}},
		"tool": {"name": "kb_search", "side_effect": "read"},
	}
}

test_tool_needing_a_wider_scope_is_denied if {
	not baton.allow with input as {
		"decision_point": "tool.call",
		"agent": {"allowed_tools": {"crm.update_case": "read"}},
		"tool": {"name": "crm.update_case", "side_effect": "write"},
	}
}
