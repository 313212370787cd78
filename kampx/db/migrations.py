"""The SQLite schema as numbered migrations, and the code that applies them.

The `version` table is Kamailio's (table_name, table_version): one row per table with that
table's layout version, plus the row "kampx" holding the number of the last migration applied.
Opening a database applies every newer migration in one write transaction, so a crash
mid-upgrade leaves the old schema intact and two processes opening an old database at once
upgrade it exactly once. A database newer than this code is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kampx.db.base import StorageError

SCHEMA_ROW = "kampx"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]
    # Kamailio-style per-table versions this migration leaves behind
    tables: Mapping[str, int] = field(default_factory=dict)


_V1 = Migration(
    1,
    "subscriber, address and location tables",
    (
        # Kamailio's own layout: a database that already has it keeps it.
        """CREATE TABLE IF NOT EXISTS version (
            id INTEGER PRIMARY KEY NOT NULL,
            table_name VARCHAR(32) NOT NULL,
            table_version INTEGER DEFAULT 0 NOT NULL,
            CONSTRAINT version_table_name_idx UNIQUE (table_name))""",
        # No password column: only the HA1 digests (MD5 and SHA-256, RFC 8760) are stored.
        """CREATE TABLE subscriber (
            id INTEGER PRIMARY KEY NOT NULL,
            username VARCHAR(64) DEFAULT '' NOT NULL,
            domain VARCHAR(64) DEFAULT '' NOT NULL,
            ha1 VARCHAR(128) DEFAULT '' NOT NULL,
            ha1b VARCHAR(128) DEFAULT '' NOT NULL,
            ha1_sha256 VARCHAR(128) DEFAULT '' NOT NULL,
            ha1b_sha256 VARCHAR(128) DEFAULT '' NOT NULL,
            CONSTRAINT subscriber_account_idx UNIQUE (username, domain))""",
        "CREATE INDEX subscriber_username_idx ON subscriber (username)",
        """CREATE TABLE address (
            id INTEGER PRIMARY KEY NOT NULL,
            grp INTEGER DEFAULT 1 NOT NULL,
            ip_addr VARCHAR(50) NOT NULL,
            mask INTEGER DEFAULT 32 NOT NULL,
            port SMALLINT DEFAULT 0 NOT NULL,
            tag VARCHAR(64))""",
        "CREATE INDEX address_grp_ip_idx ON address (grp, ip_addr)",
        # Kamailio's columns where they mean the same; times are epoch seconds (REAL) and q is
        # q*1000 as kampx.usrloc.Binding holds them, so a row round-trips without conversion.
        """CREATE TABLE location (
            id INTEGER PRIMARY KEY NOT NULL,
            ruid VARCHAR(64) DEFAULT '' NOT NULL,
            username VARCHAR(64) DEFAULT '' NOT NULL,
            domain VARCHAR(64) DEFAULT NULL,
            contact VARCHAR(512) DEFAULT '' NOT NULL,
            received VARCHAR(128) DEFAULT '' NOT NULL,
            path VARCHAR(512) DEFAULT '' NOT NULL,
            socket VARCHAR(64) DEFAULT '' NOT NULL,
            user_agent VARCHAR(255) DEFAULT '' NOT NULL,
            callid VARCHAR(255) DEFAULT '' NOT NULL,
            instance VARCHAR(255) DEFAULT '' NOT NULL,
            reg_id INTEGER DEFAULT 0 NOT NULL,
            cseq INTEGER DEFAULT 1 NOT NULL,
            q INTEGER DEFAULT -1 NOT NULL,
            expires REAL DEFAULT 0 NOT NULL,
            last_modified REAL DEFAULT 0 NOT NULL,
            flags INTEGER DEFAULT 0 NOT NULL,
            CONSTRAINT location_ruid_idx UNIQUE (ruid))""",
        "CREATE INDEX location_account_contact_idx ON location (username, domain, contact)",
        "CREATE INDEX location_expires_idx ON location (expires)",
    ),
    {"version": 1, "subscriber": 1, "address": 1, "location": 1},
)

_V2 = Migration(
    2,
    "subscriber change counter (lets workers' auth caches ignore location writes)",
    (
        """CREATE TABLE kampx_changes (
            name VARCHAR(32) PRIMARY KEY NOT NULL,
            counter INTEGER DEFAULT 0 NOT NULL)""",
        "INSERT INTO kampx_changes (name, counter) VALUES ('subscriber', 0)",
    )
    + tuple(
        f"""CREATE TRIGGER subscriber_changed_{op.lower()} AFTER {op} ON subscriber
            BEGIN UPDATE kampx_changes SET counter = counter + 1 WHERE name = 'subscriber'; END"""
        for op in ("INSERT", "UPDATE", "DELETE")
    ),
    {"kampx_changes": 1},
)

_V3 = Migration(
    3,
    "dialog table (the dialogs kampx established, for its in-dialog check after a restart)",
    (
        # Kamailio's dialog table keeps these columns under these names (and many more,
        # which kampx does not track yet); timeout is epoch seconds, as Kamailio's.
        """CREATE TABLE dialog (
            id INTEGER PRIMARY KEY NOT NULL,
            callid VARCHAR(255) NOT NULL,
            from_tag VARCHAR(128) NOT NULL,
            state INTEGER NOT NULL,
            start_time INTEGER DEFAULT 0 NOT NULL,
            timeout REAL DEFAULT 0 NOT NULL,
            CONSTRAINT dialog_callid_ftag_idx UNIQUE (callid, from_tag))""",
        "CREATE INDEX dialog_timeout_idx ON dialog (timeout)",
    ),
    {"dialog": 1},
)

# Kamailio's dispatcher table (version 4 of its schema), columns and defaults as Kamailio's.
_DISPATCHER_TABLE = """CREATE TABLE dispatcher (
            id {serial} PRIMARY KEY NOT NULL,
            setid INTEGER DEFAULT 0 NOT NULL,
            destination VARCHAR(192) DEFAULT '' NOT NULL,
            flags INTEGER DEFAULT 0 NOT NULL,
            priority INTEGER DEFAULT 0 NOT NULL,
            attrs VARCHAR(128) DEFAULT '' NOT NULL,
            description VARCHAR(64) DEFAULT '' NOT NULL)"""

_V4 = Migration(
    4,
    "dispatcher table (carrier gateway sets)",
    (_DISPATCHER_TABLE.format(serial="INTEGER"),),
    {"dispatcher": 4},
)

# Kamailio's acc tables (acc version 5, missed_calls 4, acc_cdrs 2 in Kamailio 5.x), with the
# extra columns its default kamailio.cfg adds for log_extra (src_user... dst_domain) and
# kampx's `direction`; acc_cdrs with what kampx's dialog tracking knows of a call besides
# Kamailio's start_time, end_time and duration. Times are UTC: SQLite keeps them as the text
# 'YYYY-MM-DD HH:MM:SS.mmm' (so that `time >= datetime('now', '-1 hour')` works),
# PostgreSQL as TIMESTAMP without time zone.
_ACC_PARTIES = """
            src_user VARCHAR(64) DEFAULT '' NOT NULL,
            src_domain VARCHAR(128) DEFAULT '' NOT NULL,
            src_ip VARCHAR(64) DEFAULT '' NOT NULL,
            dst_ouser VARCHAR(64) DEFAULT '' NOT NULL,
            dst_user VARCHAR(64) DEFAULT '' NOT NULL,
            dst_domain VARCHAR(128) DEFAULT '' NOT NULL,
            direction VARCHAR(8) DEFAULT '' NOT NULL"""


def _acc_tables(serial: str, datetime: str, real: str) -> tuple[str, ...]:
    out = []
    for table in ("acc", "missed_calls"):
        out += [
            f"""CREATE TABLE {table} (
            id {serial} PRIMARY KEY NOT NULL,
            method VARCHAR(16) DEFAULT '' NOT NULL,
            from_tag VARCHAR(128) DEFAULT '' NOT NULL,
            to_tag VARCHAR(128) DEFAULT '' NOT NULL,
            callid VARCHAR(255) DEFAULT '' NOT NULL,
            sip_code VARCHAR(3) DEFAULT '' NOT NULL,
            sip_reason VARCHAR(128) DEFAULT '' NOT NULL,
            time {datetime},{_ACC_PARTIES})""",
            f"CREATE INDEX {table}_callid_idx ON {table} (callid)",
            f"CREATE INDEX {table}_time_idx ON {table} (time)",
        ]
    out += [
        f"""CREATE TABLE acc_cdrs (
            id {serial} PRIMARY KEY NOT NULL,
            start_time {datetime},
            end_time {datetime},
            duration {real} DEFAULT 0 NOT NULL,
            setup_time {datetime},
            callid VARCHAR(255) DEFAULT '' NOT NULL,
            from_tag VARCHAR(128) DEFAULT '' NOT NULL,
            to_tag VARCHAR(128) DEFAULT '' NOT NULL,{_ACC_PARTIES},
            sip_code VARCHAR(3) DEFAULT '' NOT NULL,
            sip_reason VARCHAR(128) DEFAULT '' NOT NULL,
            end_reason VARCHAR(16) DEFAULT '' NOT NULL)""",
        "CREATE INDEX acc_cdrs_start_time_idx ON acc_cdrs (start_time)",
        "CREATE INDEX acc_cdrs_callid_idx ON acc_cdrs (callid)",
    ]
    return tuple(out)


ACC_TABLE_VERSIONS = {"acc": 5, "missed_calls": 4, "acc_cdrs": 2}

_V5 = Migration(
    5,
    "accounting tables acc, missed_calls and acc_cdrs",
    _acc_tables("INTEGER", "DATETIME", "REAL"),
    ACC_TABLE_VERSIONS,
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4, _V5)


def check_sequence(migrations: Sequence[Migration]) -> None:
    """Migrations are numbered 1, 2, 3... with no gap: a gap would skip a step silently."""
    for expected, m in enumerate(migrations, start=1):
        if m.version != expected:
            raise ValueError(f"migration {m.version} is out of sequence (expected {expected})")


def schema_version(conn: sqlite3.Connection) -> int:
    """The last migration applied; 0 for a database kampx has never set up."""
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'version'"
    ).fetchone()
    if not has_table:
        return 0
    row = conn.execute(
        "SELECT table_version FROM version WHERE table_name = ?", (SCHEMA_ROW,)
    ).fetchone()
    return int(row[0]) if row else 0


def upgrade(
    conn: sqlite3.Connection, where: str, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Bring the database to the last migration; returns the schema version it ends at.

    `conn` must be in autocommit mode (isolation_level=None): the transaction is ours."""
    check_sequence(migrations)
    latest = migrations[-1].version if migrations else 0
    current = schema_version(conn)
    if current == latest:
        return current  # the common case: no write lock taken
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = schema_version(conn)  # another process may have upgraded meanwhile
        if current > latest:
            raise StorageError(
                f"database {where} has schema version {current}; this kampx knows up to "
                f"{latest} (upgrade kampx)"
            )
        for m in migrations[current:]:
            try:
                for stmt in m.statements:
                    conn.execute(stmt)
            except sqlite3.Error as e:
                raise StorageError(
                    f"database {where}: migration {m.version} ({m.description}) failed: {e}"
                ) from None
            for table, version in version_rows(m):
                conn.execute(
                    "INSERT INTO version (table_name, table_version) VALUES (?, ?) "
                    "ON CONFLICT (table_name) DO UPDATE SET table_version = excluded.table_version",
                    (table, version),
                )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # some SQLite errors have rolled back already
            conn.execute("ROLLBACK")
        raise
    return latest


# -- PostgreSQL (kampx/db/postgres.py) ----------------------------------------------------------
# Numbered on their own: the PostgreSQL schema began with what SQLite reached in three steps.
# Beyond Kamailio's columns, what nodes need to follow each other's changes:
# - location.seq: every insert or update takes the next value of location_seq (trigger), and
#   the trigger first takes a transaction-level advisory lock, so transactions writing the
#   location table commit one at a time and in seq order. A node that has seen every change
#   up to N therefore only ever needs "seq > N", never misses a change committed late.
# - location_tombstone: a deleted binding's ruid and AOR with the seq of its deletion, so
#   that deletions travel like updates (purged after a day; a node away that long resyncs).
# - statement triggers NOTIFY kampx_location / kampx_subscriber / kampx_address after every
#   change (delivered at commit) and count subscriber and address changes in kampx_changes.
PG_LOCATION_LOCK = 0x6B78_6C6F_6331  # advisory lock key ("kxloc1")

_PG_V1 = Migration(
    1,
    "subscriber, address, location (with its change sequence), dialog",
    (
        """CREATE TABLE IF NOT EXISTS version (
            id SERIAL PRIMARY KEY NOT NULL,
            table_name VARCHAR(32) NOT NULL,
            table_version INTEGER DEFAULT 0 NOT NULL,
            CONSTRAINT version_table_name_idx UNIQUE (table_name))""",
        """CREATE TABLE subscriber (
            id SERIAL PRIMARY KEY NOT NULL,
            username VARCHAR(64) DEFAULT '' NOT NULL,
            domain VARCHAR(64) DEFAULT '' NOT NULL,
            ha1 VARCHAR(128) DEFAULT '' NOT NULL,
            ha1b VARCHAR(128) DEFAULT '' NOT NULL,
            ha1_sha256 VARCHAR(128) DEFAULT '' NOT NULL,
            ha1b_sha256 VARCHAR(128) DEFAULT '' NOT NULL,
            CONSTRAINT subscriber_account_idx UNIQUE (username, domain))""",
        "CREATE INDEX subscriber_username_idx ON subscriber (username)",
        # port INTEGER, not Kamailio's SMALLINT: PostgreSQL's SMALLINT stops at 32767
        """CREATE TABLE address (
            id SERIAL PRIMARY KEY NOT NULL,
            grp INTEGER DEFAULT 1 NOT NULL,
            ip_addr VARCHAR(50) NOT NULL,
            mask INTEGER DEFAULT 32 NOT NULL,
            port INTEGER DEFAULT 0 NOT NULL,
            tag VARCHAR(64))""",
        "CREATE INDEX address_grp_ip_idx ON address (grp, ip_addr)",
        "CREATE SEQUENCE location_seq",
        """CREATE TABLE location (
            id BIGSERIAL PRIMARY KEY NOT NULL,
            ruid VARCHAR(64) DEFAULT '' NOT NULL,
            username VARCHAR(64) DEFAULT '' NOT NULL,
            domain VARCHAR(64) DEFAULT NULL,
            contact VARCHAR(512) DEFAULT '' NOT NULL,
            received VARCHAR(128) DEFAULT '' NOT NULL,
            path VARCHAR(512) DEFAULT '' NOT NULL,
            socket VARCHAR(64) DEFAULT '' NOT NULL,
            user_agent VARCHAR(255) DEFAULT '' NOT NULL,
            callid VARCHAR(255) DEFAULT '' NOT NULL,
            instance VARCHAR(255) DEFAULT '' NOT NULL,
            reg_id INTEGER DEFAULT 0 NOT NULL,
            cseq BIGINT DEFAULT 1 NOT NULL,
            q INTEGER DEFAULT -1 NOT NULL,
            expires DOUBLE PRECISION DEFAULT 0 NOT NULL,
            last_modified DOUBLE PRECISION DEFAULT 0 NOT NULL,
            flags BIGINT DEFAULT 0 NOT NULL,
            seq BIGINT DEFAULT 0 NOT NULL,
            CONSTRAINT location_ruid_idx UNIQUE (ruid))""",
        "CREATE INDEX location_account_contact_idx ON location (username, domain, contact)",
        "CREATE INDEX location_expires_idx ON location (expires)",
        "CREATE INDEX location_seq_idx ON location (seq)",
        """CREATE TABLE location_tombstone (
            ruid VARCHAR(64) PRIMARY KEY NOT NULL,
            username VARCHAR(64) DEFAULT '' NOT NULL,
            domain VARCHAR(64) DEFAULT NULL,
            removed_at DOUBLE PRECISION DEFAULT 0 NOT NULL,
            seq BIGINT DEFAULT 0 NOT NULL)""",
        "CREATE INDEX location_tombstone_seq_idx ON location_tombstone (seq)",
        f"""CREATE FUNCTION kampx_location_seq() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_advisory_xact_lock({PG_LOCATION_LOCK});
                NEW.seq := nextval('location_seq');
                RETURN NEW;
            END $$""",
        """CREATE TRIGGER location_seq BEFORE INSERT OR UPDATE ON location
            FOR EACH ROW EXECUTE FUNCTION kampx_location_seq()""",
        """CREATE TRIGGER location_tombstone_seq BEFORE INSERT OR UPDATE ON location_tombstone
            FOR EACH ROW EXECUTE FUNCTION kampx_location_seq()""",
        """CREATE TABLE kampx_changes (
            name VARCHAR(32) PRIMARY KEY NOT NULL,
            counter BIGINT DEFAULT 0 NOT NULL)""",
        "INSERT INTO kampx_changes (name, counter) VALUES ('subscriber', 0), ('address', 0)",
        """CREATE FUNCTION kampx_changed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE kampx_changes SET counter = counter + 1 WHERE name = TG_ARGV[0];
                PERFORM pg_notify('kampx_' || TG_ARGV[0], '');
                RETURN NULL;
            END $$""",
    )
    + tuple(
        f"""CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE OR DELETE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION kampx_changed('{table}')"""
        for table in ("subscriber", "address", "location")
    )
    + (
        """CREATE TABLE dialog (
            id BIGSERIAL PRIMARY KEY NOT NULL,
            callid VARCHAR(255) NOT NULL,
            from_tag VARCHAR(128) NOT NULL,
            state INTEGER NOT NULL,
            start_time BIGINT DEFAULT 0 NOT NULL,
            timeout DOUBLE PRECISION DEFAULT 0 NOT NULL,
            CONSTRAINT dialog_callid_ftag_idx UNIQUE (callid, from_tag))""",
        "CREATE INDEX dialog_timeout_idx ON dialog (timeout)",
    ),
    {
        "version": 1,
        "subscriber": 1,
        "address": 1,
        "location": 1,
        "location_tombstone": 1,
        "kampx_changes": 1,
        "dialog": 1,
    },
)

_PG_V2 = Migration(
    2,
    "dispatcher table (carrier gateway sets), its changes notified to the nodes",
    (
        _DISPATCHER_TABLE.format(serial="SERIAL"),
        "INSERT INTO kampx_changes (name, counter) VALUES ('dispatcher', 0)",
        """CREATE TRIGGER dispatcher_changed AFTER INSERT OR UPDATE OR DELETE ON dispatcher
            FOR EACH STATEMENT EXECUTE FUNCTION kampx_changed('dispatcher')""",
    ),
    {"dispatcher": 4},
)

# duration DOUBLE PRECISION, not Kamailio's REAL: PostgreSQL's REAL (float4) loses the
# milliseconds of a call longer than a few hours
_PG_V3 = Migration(
    3,
    "accounting tables acc, missed_calls and acc_cdrs",
    _acc_tables("BIGSERIAL", "TIMESTAMP", "DOUBLE PRECISION"),
    ACC_TABLE_VERSIONS,
)

PG_MIGRATIONS: tuple[Migration, ...] = (_PG_V1, _PG_V2, _PG_V3)


def version_rows(m: Migration) -> list[tuple[str, int]]:
    """The `version` rows a migration leaves: its tables' versions and the schema's."""
    return list({**m.tables, SCHEMA_ROW: m.version}.items())
