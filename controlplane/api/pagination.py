from rest_framework.pagination import CursorPagination


class NewestFirstPagination(CursorPagination):
    """Stable pages under concurrent inserts: a cursor, not an offset."""

    ordering = ("-created_at", "-pk")
    page_size_query_param = "page_size"
    max_page_size = 200
