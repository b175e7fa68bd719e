"""Serializer base classes shared by every app's API."""

from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers


class StrictInputSerializer(serializers.Serializer):
    """An input serializer that refuses fields it does not know instead of ignoring them.

    A silently dropped field is a silently ignored instruction (a misspelt `budget` would
    run without one), so unknown fields are a validation error.
    """

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class StrictInputSchema(OpenApiSerializerExtension):
    """The schema of a strict input says so: `additionalProperties: false`, as the API answers."""

    target_class = StrictInputSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction) -> dict:
        return auto_schema._map_basic_serializer(self.target, direction) | {"additionalProperties": False}
