"""Forms of the registry pages: they parse what a person typed; the services decide."""

from typing import Any, TypeVar

from django import forms
from django.utils.dateformat import format as date_format
from django.utils.timezone import localtime

from controlplane.pages import ServiceForm

from .artifact_kinds import NAME_PATTERN, SIDE_EFFECTS
from .models import Agent, Channel, Release, Team

T = TypeVar("T")


class AllowedToolsField(forms.CharField):
    """One `tool_name:scope` per line, as the list of {tool, scope} an agent keeps."""

    widget = forms.Textarea

    def to_python(self, value: Any) -> list[dict[str, str]]:
        tools = []
        for number, line in enumerate(super().to_python(value).splitlines(), start=1):
            if not line.strip():
                continue
            tool, _, scope = (part.strip() for part in line.partition(":"))
            if not (tool and scope):
                raise forms.ValidationError(f"Line {number}: write tool_name:scope.")
            tools.append({"tool": tool, "scope": scope})
        return tools

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(f"{entry['tool']}:{entry['scope']}" for entry in value)
        return value


class AgentEditForm(ServiceForm):
    display_name = forms.CharField(max_length=200)
    owner_team = forms.ModelChoiceField(
        Team.objects.order_by("slug"), required=False, to_field_name="slug", empty_label="(no owner yet)"
    )
    purpose = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    runbook_url = forms.URLField(required=False, label="Runbook URL", assume_scheme="https")
    slo_p95_latency_ms = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=Agent.MAX_SLO_P95_LATENCY_MS,
        label="SLO: p95 latency (ms)",
    )
    slo_success_rate = forms.DecimalField(
        required=False,
        min_value=0,
        max_value=1,
        max_digits=5,
        decimal_places=4,
        label="SLO: success rate (0 to 1)",
    )
    data_classification = forms.ChoiceField(
        choices=Agent.Classification.choices, initial=Agent.Classification.INTERNAL
    )
    allowed_tools = AllowedToolsField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=f"One per line, as tool_name:scope; the scope is one of {', '.join(SIDE_EFFECTS)}.",
    )

    @classmethod
    def initial_for(cls, agent: Agent) -> dict[str, Any]:
        return {name: getattr(agent, name) for name in cls.base_fields}


class AgentRegisterForm(AgentEditForm):
    slug = forms.RegexField(
        regex=NAME_PATTERN,
        max_length=100,
        help_text="Lower-case letters, digits, '.', '_' and '-'; it cannot change later.",
        error_messages={"invalid": "Use lower-case letters, digits, '.', '_' and '-'."},
    )

    field_order = ("slug",)


class LifecycleForm(ServiceForm):
    to_status = forms.ChoiceField(choices=Agent.Status.choices, widget=forms.HiddenInput)
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class SignOffForm(ServiceForm):
    comment = forms.CharField(required=False, max_length=2000)


class PromoteForm(ServiceForm):
    channel = forms.RegexField(
        regex=r"^[a-z0-9][a-z0-9_\-]{0,49}$",
        initial="staging",
        error_messages={"invalid": "Lower-case letters, digits, '_' and '-'."},
    )
    mode = forms.ChoiceField(choices=Channel.Mode.choices, initial=Channel.Mode.FULL)
    canary_percent = forms.IntegerField(
        required=False, min_value=1, max_value=99, help_text="Canary mode only: the share of new runs."
    )
    reason = forms.CharField(required=False, max_length=2000)


class RollbackForm(ServiceForm):
    reason = forms.CharField(required=False, max_length=2000)


class ReleaseChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Release) -> str:
        return f"{obj.workflow} · {obj.pk} · {date_format(localtime(obj.created_at), 'Y-m-d H:i T')}"


class ReleaseDiffForm(forms.Form):
    def __init__(self, *args: Any, releases, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["from"] = ReleaseChoiceField(releases, label="From")
        self.fields["to"] = ReleaseChoiceField(releases, label="To")

    def clean(self) -> dict:
        data = super().clean()
        old, new = data.get("from"), data.get("to")
        if old and new and old.workflow != new.workflow:
            raise forms.ValidationError("Pick two releases of the same workflow.")
        return data
