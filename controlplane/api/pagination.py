from datetime import UTC, datetime

from django.core.exceptions import ValidationError
from django.db import connections, models
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination

# SQLite keeps times as text, written either by the database (`Now()`, to the millisecond) or
# by Django (to the microsecond): one instant reads "…:58.051" or "…:58.051000", and as strings
# the first sorts before the second. A page's cursor position, compared with the column, then
# finds the row it was taken from older than itself: that row opens the next page again, and
# pages of one row never end. On SQLite a page is therefore positioned on the time spelt one way.
_SQLITE_POSITION = "page_position"
_SQLITE_MILLISECONDS = models.Value("%Y-%m-%d %H:%M:%f")


class NewestFirstPagination(CursorPagination):
    """Stable pages under concurrent inserts: a cursor, not an offset."""

    ordering = ("-created_at", "-pk")
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request) -> int:
        # DRF answers a page_size it cannot read with the default page, and a larger one with
        # `max_page_size` rows, both without a word: a client would think it asked for that.
        asked = request.query_params.get(self.page_size_query_param)
        if asked is None:
            return self.page_size
        if not (asked.isascii() and asked.isdigit() and 1 <= int(asked) <= self.max_page_size):
            raise serializers.ValidationError(
                {self.page_size_query_param: [f"An integer from 1 to {self.max_page_size}."]}
            )
        return int(asked)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] |= {"minimum": 1, "maximum": self.max_page_size}
                parameter["description"] = f"Results per page (default {self.page_size})."
        return parameters

    def paginate_queryset(self, queryset: QuerySet, request, view=None) -> list | None:
        name = self.ordering[0].lstrip("-")
        direction = "-" if self.ordering[0].startswith("-") else ""
        model = queryset.model
        self.position_field = model._meta.pk if name == "pk" else model._meta.get_field(name)
        self.connection = connections[queryset.db]
        if self.connection.vendor == "sqlite" and isinstance(self.position_field, models.DateTimeField):
            milliseconds = models.Func(
                _SQLITE_MILLISECONDS, models.F(name), function="strftime", output_field=models.CharField()
            )
            queryset = queryset.annotate(**{_SQLITE_POSITION: milliseconds})
            self.ordering = (f"{direction}{_SQLITE_POSITION}", *self.ordering[1:])
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request) -> Cursor | None:
        # DRF checks a cursor's offset but not its position, which goes into the query as it is:
        # a forged one ("p=not-a-date") is an invalid cursor (404), not a database error.
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                position = self.position_field.to_python(cursor.position)
                if isinstance(position, datetime) and timezone.is_naive(position):
                    position = timezone.make_aware(position, UTC)  # SQLite's spelling is UTC
                self.position_field.get_db_prep_value(position, self.connection)
            except (ValidationError, ValueError, TypeError, OverflowError) as error:
                raise NotFound(self.invalid_cursor_message) from error
        return cursor
