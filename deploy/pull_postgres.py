#!/usr/bin/env python3
"""The PostgreSQL half of `deploy/pull.sh HOST --into postgresql://...`: a facility's database as
the place every rig's rows land, shared by every desktop that pulls.

Run with the project's virtualenv python ($METASCOPE_PYTHON: psycopg 3, the `postgres` extra);
pull.sh itself and pull_merge.py stay standard-library only. It decides where a pull goes and
lands its rows with the same code as the folder's results store (pull_merge.land, pull_target
.choose), through PostgresStore, a store with the same methods:

    prepare URL HOST STATUS_JSON RUNS_CSV ANSWER  -> ANSWER: the database's folder name (under
                                       --crops-dir/HOST/), then the tables to export, as pull_merge's
    merge URL HOST WORK_DIR LABEL      -> lands WORK_DIR/{cells,views,frames,runs}.csv in one transaction
    migrate URL                        -> creates or migrates the schema (as the database's owner)

Every row is keyed by (host, database id, epoch, row id): `databases` holds one row per host,
Pi database id and epoch (the epoch pull_target bumps when the Pi's database went back in time),
and each pulled table's primary key is (that row's key, id). Rows are appended with INSERT ... ON
CONFLICT DO NOTHING in one transaction per pull, so two desktops pulling the same rig at once
land each row once (the second waits on the first's rows, then finds them held); runs, whose end
and totals change, are refreshed (ON CONFLICT DO UPDATE). A row's columns are kept as the Pi
exported them, text in a jsonb object (`fields`), so a Pi with a newer schema never needs a
migration here, and the pulling role needs no right to change tables.

Exit status: 0 done; 9 what the host sent is not usable; 12 the database cannot be used (named:
no psycopg, the server refused, the schema is newer or cannot be made by this role).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pull_errors import EXIT_BAD_EXPORT, EXIT_PULL_TARGET_UNUSABLE, EXIT_USAGE, PullError, exit_status
from pull_intake import read_small
from pull_merge import export_plan, land, read_status
from pull_store import TABLES, Database
from pull_target import UNIDENTIFIED, Target, choose, database_name

try:
    import psycopg
    from psycopg.types.json import Jsonb
except ImportError:  # said clearly by main(): this python is not the project's virtualenv
    psycopg = None  # type: ignore[assignment]

SCHEMA = "metascope"  # every table in its own schema: a facility's database may hold others
SCHEMA_VERSION = 1
MIGRATION_LOCK = 0x6D657461  # pg_advisory_lock key: two first pulls migrate one at a time

# Each version's statements, applied in order by the database's owner (or the first pull).
MIGRATIONS: dict[int, list[str]] = {
    1: [
        f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
        f"CREATE TABLE {SCHEMA}.schema_version (version integer NOT NULL)",
        f"INSERT INTO {SCHEMA}.schema_version VALUES (0)",
        f"""CREATE TABLE {SCHEMA}.databases (
            key integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            host text NOT NULL,
            database_id text NOT NULL,
            epoch integer NOT NULL,
            folder text NOT NULL,
            first_pulled_at timestamptz NOT NULL DEFAULT now(),
            last_pulled_at timestamptz NOT NULL DEFAULT now(),
            note text,
            UNIQUE (host, database_id, epoch),
            UNIQUE (host, folder))""",
        f"""CREATE TABLE {SCHEMA}.columns (
            db integer NOT NULL REFERENCES {SCHEMA}.databases, tbl text NOT NULL, names jsonb NOT NULL,
            PRIMARY KEY (db, tbl))""",
        *(
            f"""CREATE TABLE {SCHEMA}.{table} (
                db integer NOT NULL REFERENCES {SCHEMA}.databases, id bigint NOT NULL, fields jsonb NOT NULL,
                PRIMARY KEY (db, id))"""
            for table in TABLES
        ),
    ],
}


def schema_version(connection: psycopg.Connection) -> int:
    """The version the database's schema records (0: none made yet)."""
    if connection.execute(f"SELECT to_regclass('{SCHEMA}.schema_version')").fetchone()[0] is None:
        return 0
    return int(connection.execute(f"SELECT max(version) FROM {SCHEMA}.schema_version").fetchone()[0] or 0)


def migrate(connection: psycopg.Connection) -> int | None:
    """Bring the schema to SCHEMA_VERSION (the version it was at when it had to change, else None).
    A role that may not create tables is told to have the owner run `migrate` once."""
    if (found := schema_version(connection)) == SCHEMA_VERSION:
        return None
    if found > SCHEMA_VERSION:
        raise PullError(
            EXIT_PULL_TARGET_UNUSABLE,
            f"the database's metascope schema is version {found}, newer than this pull.sh knows ({SCHEMA_VERSION})",
        )
    # The lock is taken before the transaction starts, not inside it: a transaction that began
    # before another pull's migration committed still sees the catalog without its tables, and
    # would make them again (and fail on their names).
    connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        with connection.transaction():
            found = schema_version(connection)  # another pull may have migrated while this one waited
            for version in range(found + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    connection.execute(statement)  # type: ignore[arg-type]
                connection.execute(f"UPDATE {SCHEMA}.schema_version SET version = %s", (version,))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PullError(
            EXIT_PULL_TARGET_UNUSABLE,
            f"the database's metascope schema is version {found}, this pull needs {SCHEMA_VERSION}, and this role "
            f"cannot make it ({exc.diag.message_primary}): have the database's owner run once "
            "$METASCOPE_PYTHON deploy/pull_postgres.py migrate URL",
        ) from None
    finally:
        connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return found if found < SCHEMA_VERSION else None


class PostgresStore:
    """One host's part of a facility's database, with ResultsStore's methods (pull_store.Store)."""

    def __init__(self, url: str, host: str) -> None:
        self.host = host
        self.db = connect(url)
        migrate(self.db)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.db.transaction():
            yield

    def databases(self, database_id: str | None = None) -> list[Database]:
        where, params = ("AND database_id = %s", (database_id,)) if database_id is not None else ("", ())
        rows = self.db.execute(
            f"SELECT key, database_id, epoch, folder FROM {SCHEMA}.databases WHERE host = %s {where}"  # type: ignore[arg-type]
            " ORDER BY database_id, epoch",
            (self.host, *params),
        )
        return [Database(*row) for row in rows]

    def add_database(self, database_id: str, epoch: int, folder: str, note: str | None = None) -> int:
        """The key of (host, database id, epoch), added when missing: a desktop pulling the same
        rig at once adds it first, and this one waits for it and takes its key."""
        self.db.execute(
            f"INSERT INTO {SCHEMA}.databases (host, database_id, epoch, folder, note) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (host, database_id, epoch) DO NOTHING",
            (self.host, database_id, epoch, folder, note),
        )
        row = self.db.execute(
            f"SELECT key FROM {SCHEMA}.databases WHERE host = %s AND database_id = %s AND epoch = %s",
            (self.host, database_id, epoch),
        ).fetchone()
        return int(row[0])

    def touch(self, key: int) -> None:
        # Also locks the database's row until commit: a second pull of the same rig waits here
        # and then sees every row the first landed (READ COMMITTED: each statement sees commits).
        self.db.execute(f"UPDATE {SCHEMA}.databases SET last_pulled_at = now() WHERE key = %s", (key,))

    def columns(self, key: int, table: str) -> list[str] | None:
        row = self.db.execute(f"SELECT names FROM {SCHEMA}.columns WHERE db = %s AND tbl = %s", (key, table)).fetchone()
        return list(row[0]) if row else None

    def widen(self, key: int, table: str, names: list[str]) -> list[str]:
        """This database's header for TABLE with ``names`` added; the columns it gained."""
        held = self.columns(key, table)
        gained = [name for name in names if held is not None and name not in held]
        header = [*(held or []), *(name for name in names if name not in (held or []))]
        if header != held:
            self.db.execute(
                f"INSERT INTO {SCHEMA}.columns VALUES (%s, %s, %s)"
                " ON CONFLICT (db, tbl) DO UPDATE SET names = EXCLUDED.names",
                (key, table, Jsonb(header)),
            )
        return gained

    def last_id(self, key: int | None, table: str) -> int:
        if key is None:
            return 0
        row = self.db.execute(f"SELECT max(id) FROM {SCHEMA}.{table} WHERE db = %s", (key,)).fetchone()  # type: ignore[arg-type]
        return int(row[0] or 0)

    def insert(self, key: int, table: str, names: list[str], rows: Iterable[list[str]], replace: bool = False) -> int:
        """Rows (id first) streamed in by COPY, then added: those held already are left as they are,
        except runs (``replace``), refreshed. The number added or refreshed."""
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS incoming (id bigint, fields jsonb) ON COMMIT DELETE ROWS")
        self.db.execute("TRUNCATE incoming")
        with self.db.cursor().copy("COPY incoming (id, fields) FROM STDIN") as copy:
            for row in rows:
                if any("\0" in value for value in row):
                    raise PullError(
                        EXIT_BAD_EXPORT,
                        f"the export of {table}, id {row[0]}: a NUL character, which no metascope sends",
                    )
                copy.write_row((int(row[0]), Jsonb(dict(zip(names[1:], row[1:], strict=True)))))
        conflict = "DO UPDATE SET fields = EXCLUDED.fields" if replace else "DO NOTHING"
        cursor = self.db.execute(
            f"INSERT INTO {SCHEMA}.{table} (db, id, fields) SELECT %s, id, fields FROM incoming ORDER BY id"  # type: ignore[arg-type]
            f" ON CONFLICT (db, id) {conflict}",
            (key,),
        )
        return max(cursor.rowcount, 0)

    def rows(self, key: int, table: str, names: list[str], after: int = 0) -> Iterator[list[str]]:
        cursor = self.db.execute(
            f"SELECT id, fields FROM {SCHEMA}.{table} WHERE db = %s AND id > %s ORDER BY id",  # type: ignore[arg-type]
            (key, after),
        )
        for row_id, fields in cursor:
            yield [str(row_id), *(str(fields.get(name) or "") for name in names[1:])]


def connect(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=True, application_name="metascope pull.sh")
    except psycopg.Error as exc:
        raise PullError(EXIT_PULL_TARGET_UNUSABLE, f"cannot use the PostgreSQL database: {exc}") from None


def prepare(url: str, host: str, status_json: Path, runs_csv: Path, answer: Path) -> None:
    """The folder name of the host's database (under --crops-dir/HOST/) and the export plan into
    ANSWER, the Target beside it (merge reads it)."""
    status = read_status(status_json)
    name = database_name(status.get("database_id"))
    runs = read_small(runs_csv, "runs", "the runs export")
    store = PostgresStore(url, host)
    try:
        target = choose(store, name, runs)
        plan = export_plan(status, store, target.key)
    finally:
        store.close()
    if target.note:
        print(f"the database on the host {target.note} (a backup restored?): this pull starts epoch {target.epoch}")
    if name == UNIDENTIFIED:
        print(f"the host's database has no id yet (metascope there is older, or has not run since an upgrade): {name}")
    target.save(answer.parent / "target.json")
    answer.write_text("\n".join([target.folder, *plan]) + "\n", encoding="utf-8")


def merge(url: str, host: str, work: Path, label: str) -> list[str]:
    target = Target.load(work / "target.json")
    store = PostgresStore(url, host)
    try:
        with store.transaction():
            return land(store, target, work, label)
    finally:
        store.close()


def run(argv: list[str]) -> None:
    if len(argv) == 6 and argv[0] == "prepare":
        prepare(argv[1], argv[2], Path(argv[3]), Path(argv[4]), Path(argv[5]))
    elif len(argv) == 5 and argv[0] == "merge":
        print("\n".join(merge(argv[1], argv[2], Path(argv[3]), argv[4])))
    elif len(argv) == 2 and argv[0] == "migrate":
        connection = connect(argv[1])
        try:
            before = migrate(connection)
        finally:
            connection.close()
        done = "up to date" if before is None else f"migrated from version {before}"
        print(f"metascope schema version {SCHEMA_VERSION}: {done}")
    else:
        raise PullError(EXIT_USAGE, "usage:\n" + __doc__.split("\n\n")[2])


def main(argv: list[str]) -> int:
    if psycopg is None:
        print(
            f"pull.sh: {sys.executable} has no psycopg: set METASCOPE_PYTHON to the python of a virtualenv with "
            "metascope's postgres extra (pip install 'metascope[postgres]', or make venv: .venv/bin/python)",
            file=sys.stderr,
        )
        return EXIT_PULL_TARGET_UNUSABLE
    return exit_status(run, argv, psycopg.Error, "the PostgreSQL database", "the pull's work folder")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
