from django.core.exceptions import ValidationError
from django.db import connections
from django.db.models import QuerySet
from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination


class NewestFirstPagination(CursorPagination):
    """Stable pages under concurrent inserts: a cursor, not an offset."""

    ordering = ("-created_at", "-pk")
    page_size_query_param = "page_size"
    max_page_size = 200

    def paginate_queryset(self, queryset: QuerySet, request, view=None) -> list | None:
        self.queryset = queryset
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request) -> Cursor | None:
        # DRF checks a cursor's offset but not its position, which goes into the query as it is:
        # a forged one ("p=not-a-date") is an invalid cursor (404), not a database error.
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            model = self.queryset.model
            name = self.ordering[0].lstrip("-")
            field = model._meta.pk if name == "pk" else model._meta.get_field(name)
            try:
                field.get_db_prep_value(cursor.position, connections[self.queryset.db])
            except (ValidationError, ValueError, TypeError, OverflowError) as error:
                raise NotFound(self.invalid_cursor_message) from error
        return cursor
