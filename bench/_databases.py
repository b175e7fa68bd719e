"""Throwaway PostgreSQL databases and percentiles for the benchmarks (no Django needed).

Each benchmark that writes makes its own database on the server of DATABASE_URL (or
postgres://postgres@127.0.0.1:5432 when DATABASE_URL is not PostgreSQL) and drops it at the end.
"""

import os
from urllib.parse import urlsplit, urlunsplit

import psycopg

DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"


def postgres_url(database: str, server: str | None = None) -> str:
    """The URL of `database` on `server`, else on the server of DATABASE_URL."""
    url = server or os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        url = DEFAULT_SERVER
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def create_database(name: str, server: str | None = None) -> None:
    with psycopg.connect(postgres_url("postgres", server), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str, server: str | None = None) -> None:
    with psycopg.connect(postgres_url("postgres", server), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]
