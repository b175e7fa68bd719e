from django import forms
from django.conf import settings

from controlplane.pages import ServiceForm
from registry.models import Release


class ReplayForm(ServiceForm):
    release = forms.ModelChoiceField(
        queryset=Release.objects.none(),
        required=False,
        empty_label="its own release (deterministic)",
        label="Replay on",
    )
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}), label="Why")

    def __init__(self, *args, workflow: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        # Only a registry workflow has other releases to replay on.
        releases = Release.objects.filter(workflow=workflow).order_by("-created_at") if workflow else None
        if releases is None:
            del self.fields["release"]
        else:
            self.fields["release"].queryset = releases


class ReplayBatchForm(ServiceForm):
    release = forms.ModelChoiceField(queryset=Release.objects.order_by("workflow", "-created_at"))
    last_n = forms.IntegerField(
        min_value=1, initial=100, label="Last N runs", max_value=settings.REPLAY_BATCH_MAX_RUNS
    )
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}), label="Why")
