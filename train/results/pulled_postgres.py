"""A facility's PostgreSQL database as `deploy/pull.sh HOST --into postgresql://...` fills it
(deploy/pull_postgres.py has the schema: the tables in schema `metascope`, each row's columns
as exported, text in jsonb), read as a StoreReader (pulled_store.py): every host, database and
epoch it holds. Read-only, in one read-only transaction, so a pull landing meanwhile is either
all on the page or not at all. psycopg (the postgres extra) is imported only here.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from train.results.pulled_store import StoredDatabase, StoreUnreadable, Table

SCHEMA = "metascope"
SCHEMA_VERSIONS = (1,)  # what this reader knows (deploy/pull_postgres.py SCHEMA_VERSION)


def without_password(url: str) -> str:
    """``url`` as a page or a message may show it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=user + host))


class PostgresStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.where = without_password(url)

    def databases(self, tables: tuple[str, ...]) -> Iterator[StoredDatabase]:
        try:
            import psycopg
        except ImportError:
            raise StoreUnreadable(
                f"{self.where}: reading PostgreSQL needs psycopg (pip install 'metascope[postgres]')"
            ) from None
        try:
            with psycopg.connect(self.url, application_name="metascope-train report") as connection:
                connection.read_only = True
                connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot
                yield from self._read(connection, tables)
        except psycopg.Error as exc:
            raise StoreUnreadable(f"{self.where}: cannot read the PostgreSQL database: {exc}") from None

    def _read(self, connection, tables: tuple[str, ...]) -> Iterator[StoredDatabase]:
        if connection.execute(f"SELECT to_regclass('{SCHEMA}.schema_version')").fetchone()[0] is None:
            raise StoreUnreadable(f"{self.where}: no metascope results here (nothing was pulled into it)")
        version = connection.execute(f"SELECT max(version) FROM {SCHEMA}.schema_version").fetchone()[0]
        if version not in SCHEMA_VERSIONS:
            raise StoreUnreadable(f"{self.where}: metascope schema version {version}, which this report does not know")
        held = connection.execute(
            f"SELECT key, host, folder FROM {SCHEMA}.databases ORDER BY host, database_id, epoch"
        ).fetchall()
        for key, host, folder in held:
            found = {table: self._table(connection, key, table) for table in tables}
            yield StoredDatabase(host, folder, {table: rows for table, rows in found.items() if rows is not None})

    @staticmethod
    def _table(connection, key: int, table: str) -> Table | None:
        row = connection.execute(f"SELECT names FROM {SCHEMA}.columns WHERE db = %s AND tbl = %s", (key, table))
        found = row.fetchone()
        if found is None:
            return None
        names = list(found[0])
        cursor = connection.execute(f"SELECT id, fields FROM {SCHEMA}.{table} WHERE db = %s ORDER BY id", (key,))
        return names, [[str(row_id), *(str(fields.get(name) or "") for name in names[1:])] for row_id, fields in cursor]
