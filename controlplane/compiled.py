"""Small reads that every request or step makes, with their SQL compiled once per process.

Django compiles a queryset's SQL each time it runs; for a read by primary key or slug that a
hot path makes again and again, compiling costs more than the round trip. `compiled_once`
keeps the statement (per set of arguments) and converts the rows as the queryset would.
"""

from collections.abc import Callable
from functools import lru_cache, wraps
from typing import Any

from django.db import connections
from django.db.models import QuerySet


def compiled_once(build: Callable[..., QuerySet]) -> Callable[..., list[tuple]]:
    """The rows of the `values_list` queryset `build(*args)` returns, compiled once for each set
    of (hashable) arguments. `build` must depend on its arguments alone: the statement is kept
    (at most 1,024 of them), not rebuilt."""

    @lru_cache(maxsize=1024)
    def statement(*args) -> tuple[str, tuple, str, list[tuple[int, list, Any]]]:
        queryset = build(*args)
        compiler = queryset.query.get_compiler(queryset.db)
        sql, params = compiler.as_sql()
        fields = [selected[0] for selected in compiler.select[: compiler.col_count]]
        converters = [(position, *each) for position, each in compiler.get_converters(fields).items()]
        return sql, params, queryset.db, converters

    @wraps(build)
    def rows(*args) -> list[tuple]:
        sql, params, alias, converters = statement(*args)
        connection = connections[alias]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            fetched = cursor.fetchall()
        if not converters:
            return fetched
        converted = []
        for row in fetched:
            values = list(row)
            for position, functions, expression in converters:
                for convert in functions:
                    values[position] = convert(values[position], expression, connection)
            converted.append(tuple(values))
        return converted

    return rows
