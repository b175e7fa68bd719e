from django import forms

from controlplane.pages import ServiceForm

from .services import FORMATS


class EvidenceExportForm(ServiceForm):
    run = forms.UUIDField(required=False, label="Run id")
    release = forms.CharField(required=False, max_length=40, label="Release id")
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    format = forms.ChoiceField(choices=[(name, name.upper()) for name in FORMATS], initial="json")
