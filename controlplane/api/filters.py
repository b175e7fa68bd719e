"""Query filters that refuse what they do not understand instead of ignoring it.

django-filter drops a query parameter it has no filter for and reads a boolean it cannot parse
as no filter at all: `?stauts=failed` or `?allow=no` would answer the whole list as if it had
been filtered. Like unknown body fields (`StrictInputSerializer`), both are a 422 here.
"""

import django_filters
from django import forms
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError
from rest_framework.settings import api_settings


class KnownParametersFilterBackend(DjangoFilterBackend):
    """django-filter's backend, refusing query parameters that are neither a filter of the view
    nor one of its pagination's."""

    def filter_queryset(self, request, queryset, view):
        unknown = sorted(set(request.query_params) - self._known_parameters(view, queryset))
        if unknown:
            raise ValidationError({name: ["Unknown query parameter."] for name in unknown})
        return super().filter_queryset(request, queryset, view)

    def _known_parameters(self, view, queryset) -> set[str]:
        filterset_class = self.get_filterset_class(view, queryset)
        known = set(filterset_class.base_filters) if filterset_class else set()
        if view.paginator is not None:
            known |= {parameter["name"] for parameter in view.paginator.get_schema_operation_parameters(view)}
        if api_settings.URL_FORMAT_OVERRIDE:  # DRF reads it itself, to choose the renderer
            known.add(api_settings.URL_FORMAT_OVERRIDE)
        return known


class _BooleanField(forms.NullBooleanField):
    widget = forms.TextInput  # hands the raw text to `to_python` (Django's select maps it first)

    def to_python(self, value):
        if value in (None, ""):
            return None
        spelled = str(value).lower()
        if spelled in {"true", "1"}:
            return True
        if spelled in {"false", "0"}:
            return False
        raise forms.ValidationError("Use true or false.")


class BooleanFilter(django_filters.BooleanFilter):
    """`true` or `false` (`1`, `0`); anything else is refused rather than read as no filter."""

    field_class = _BooleanField
