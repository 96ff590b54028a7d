"""Every exit code novadb returns, named once: the CLI exits with them, the charm reports them.

Result types compute their ``exit_code`` from these names and error classes
carry theirs as class defaults, so the CLI, the charm and the demo read a
code and never re-derive it.  Where an operation mirrors nova-manage or
placement-manage, the number is theirs (an automation written for
nova-manage keeps working), which is why the same number means different
things per operation.  ``TABLE`` lists every (operation, code) pair with
its meaning; tools/docs.py writes it into docs/operations.md, whose
hand-written "Exit codes" table ("In detail") must list the same pairs
(tests/unit/test_exit_codes.py compares them).

The codes of every operation:

====  ==============================================================
code  meaning
====  ==============================================================
0     success
1     a schema or data problem that needs the operator
2     bad input (usage, values, dates, revision, release)
3     a database cannot be reached, refuses the credentials or a
      privilege, or (SQLite) does not exist
75    the database kept failing past the run's retry budget: rerun
78    Placement operations: [placement_database]/connection is not set
127   a bad option value where novadb mirrors nova-manage
130   interrupted (Ctrl-C)
255   unexpected error, or another run holds the database's lock
====  ==============================================================

Each operation's own codes are the constants below, prefixed with its name.
"""

from __future__ import annotations

from typing import NamedTuple

# -- every operation ---------------------------------------------------------------------------
OK = 0
PROBLEM = 1  # a schema or data problem that needs the operator (unknown revision, blocker)
BAD_INPUT = 2  # usage, values, dates (argparse's own code too)
UNREACHABLE = 3  # cannot connect, credentials or privileges refused, SQLite file missing
# The database failed under a run (a lost server, conflicts that did not stop)
# for longer than the run's retry budget: nothing is lost or half-done, and
# running the same command again finishes the job.  75 is sysexits' EX_TEMPFAIL.
DATABASE_FAULT = 75
# Placement's own database is not configured ([placement_database]/connection
# unset, or only its fallback to [api_database]): the Placement operations
# cannot run, check skips its Placement audit.  78 is sysexits' EX_CONFIG.
PLACEMENT_NOT_CONFIGURED = 78
INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT (128 + 2)
UNEXPECTED = 255  # a bug: the traceback is behind --debug
LOCK_BUSY = 255  # another novadb run holds the database's advisory lock
# nova-manage's and placement-manage's code for a bad option value (their
# argument parsing returns 127), kept where novadb mirrors those commands.
NOVA_MANAGE_BAD_INPUT = 127

# -- null-instance-uuid-scan ---------------------------------------------------------------------
NULL_UUID_FOUND = 1

# -- online-migrate (nova-manage db online_data_migrations) --------------------------------------
ONLINE_DONE = 0
ONLINE_MORE = 1  # --max-count given and rows were migrated: run again
ONLINE_FAILED = 2  # a migration raised

# -- archive (nova-manage db archive_deleted_rows) -----------------------------------------------
ARCHIVE_NOTHING = 0
ARCHIVE_MOVED = 1  # rows were archived: run again, or use --until-complete
ARCHIVE_BAD_OPTION = 2
ARCHIVE_NO_API = 3  # the API database cannot be reached
ARCHIVE_BAD_DATE = 4
ARCHIVE_TABLE_FAILED = 255

# -- purge (nova-manage db purge) ----------------------------------------------------------------
PURGE_DELETED = 0
PURGE_NO_SCOPE = 1  # neither --before nor --all
PURGE_BAD_INPUT = 2
PURGE_NOTHING = 3
PURGE_NO_CELL_LIST = 4

# -- check ---------------------------------------------------------------------------------------
CHECK_CLEAN = 0
CHECK_WARNINGS = 1
CHECK_BLOCKERS = 2

# -- placement-audit (nova-manage placement audit) -----------------------------------------------
AUDIT_CLEAN = 0
AUDIT_RACES = 1  # --delete lost to concurrent writers too often: nothing deleted
AUDIT_FOUND = 3
AUDIT_DELETED = 4

# -- heal-allocations (nova-manage placement heal_allocations) -----------------------------------
HEAL_HEALED = 0
HEAL_MAX_COUNT = 1
HEAL_NO_NODE = 2
HEAL_FAILED = 3
HEAL_NOTHING = 4
HEAL_UNSUPPORTED = 8

# -- sync-aggregates (nova-manage placement sync_aggregates) -------------------------------------
AGGREGATES_OK = 0
AGGREGATES_TOO_MANY_NODES = 1
AGGREGATES_NO_PROVIDER = 2
AGGREGATES_RACES = 3
AGGREGATES_UNMAPPED = 4
AGGREGATES_NO_NODE = 5

# -- rebuild-placement ---------------------------------------------------------------------------
REBUILD_DONE = 0
REBUILD_BAD_INPUT = 2
REBUILD_PROBLEMS = 3
REBUILD_REFUSED = 5
REBUILD_INTERRUPTED = 130


class Row(NamedTuple):
    """One line of the exit-code table: which operation, which code, what it means."""

    operation: str
    code: int
    meaning: str


EVERY = "every operation"

TABLE: tuple[Row, ...] = (
    Row(EVERY, OK, "success"),
    Row(EVERY, PROBLEM, "a schema or data problem that needs the operator"),
    Row(EVERY, BAD_INPUT, "bad input"),
    Row(EVERY, UNREACHABLE, "a database cannot be reached or refuses the credentials"),
    Row(EVERY, DATABASE_FAULT, "the database kept failing past the run's retry budget"),
    Row(EVERY, PLACEMENT_NOT_CONFIGURED, "Placement's database is not configured"),
    Row(EVERY, INTERRUPTED, "interrupted (Ctrl-C)"),
    Row(EVERY, UNEXPECTED, "unexpected error, or another run holds the database's lock"),
    Row("null-instance-uuid-scan", NULL_UUID_FOUND, "rows found (not deleted)"),
    Row("online-migrate", ONLINE_DONE, "done"),
    Row("online-migrate", ONLINE_MORE, "--max-count given and rows were migrated"),
    Row("online-migrate", ONLINE_FAILED, "a migration failed"),
    Row("online-migrate", NOVA_MANAGE_BAD_INPUT, "bad --max-count or --batch-size"),
    Row("archive", ARCHIVE_NOTHING, "nothing was archived"),
    Row("archive", ARCHIVE_MOVED, "rows were archived"),
    Row("archive", ARCHIVE_BAD_OPTION, "bad --batch-size, --sleep, --max-runtime or --parallel"),
    Row("archive", ARCHIVE_NO_API, "the API database cannot be reached"),
    Row("archive", ARCHIVE_BAD_DATE, "bad --before date"),
    Row("archive", ARCHIVE_TABLE_FAILED, "a table failed"),
    Row("purge", PURGE_DELETED, "rows were deleted"),
    Row("purge", PURGE_NOTHING, "nothing was deleted"),
    Row("purge", PURGE_NO_SCOPE, "neither --before nor --all"),
    Row("purge", PURGE_BAD_INPUT, "bad --before date or --batch-size"),
    Row("purge", PURGE_NO_CELL_LIST, "--all-cells and the cell list is unavailable"),
    Row("check", CHECK_CLEAN, "nothing (or only info)"),
    Row("check", CHECK_WARNINGS, "warnings"),
    Row("check", CHECK_BLOCKERS, "blockers"),
    Row("placement-audit", AUDIT_CLEAN, "Placement agrees with the cells"),
    Row("placement-audit", AUDIT_FOUND, "findings left"),
    Row("placement-audit", AUDIT_DELETED, "orphans found and deleted, nothing else"),
    Row("placement-audit", AUDIT_RACES, "--delete could not delete: run it again"),
    Row("placement-audit", NOVA_MANAGE_BAD_INPUT, "--resource-provider names no provider"),
    Row("heal-allocations", HEAL_HEALED, "instances healed"),
    Row("heal-allocations", HEAL_NOTHING, "nothing to heal"),
    Row("heal-allocations", HEAL_MAX_COUNT, "--max-count reached"),
    Row("heal-allocations", HEAL_NO_NODE, "an instance's compute node record is missing"),
    Row("heal-allocations", HEAL_FAILED, "an allocation could not be written"),
    Row("heal-allocations", HEAL_UNSUPPORTED, "a flavor heal cannot rebuild"),
    Row("heal-allocations", NOVA_MANAGE_BAD_INPUT, "bad options, unknown cell or instance"),
    Row("sync-aggregates", AGGREGATES_TOO_MANY_NODES, "a host with more than one node"),
    Row("sync-aggregates", AGGREGATES_NO_PROVIDER, "a compute node without a provider"),
    Row("sync-aggregates", AGGREGATES_RACES, "Placement changed under the run too often"),
    Row("sync-aggregates", AGGREGATES_UNMAPPED, "hosts not mapped"),
    Row("sync-aggregates", AGGREGATES_NO_NODE, "mapped hosts without a compute node"),
    Row("rebuild-placement", REBUILD_DONE, "rebuilt, the audit is clean"),
    Row("rebuild-placement", REBUILD_BAD_INPUT, "bad input"),
    Row("rebuild-placement", REBUILD_PROBLEMS, "rebuilt, with problems left"),
    Row("rebuild-placement", REBUILD_REFUSED, "refused: Placement holds what Nova cannot rebuild"),
    Row("rebuild-placement", REBUILD_INTERRUPTED, "Ctrl-C before the drop or between batches"),
)
