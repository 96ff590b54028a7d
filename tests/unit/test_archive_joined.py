"""A batch's MySQL statements: pinned join order, ids as one bound value, the right index.

The plans themselves are checked on MariaDB (tests/integration/test_archive_parallel.py);
here, what the statements say.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import sqlalchemy as sa
from novadb.archive.archive import ArchiveOptions, batch_mode
from novadb.archive.joined import Chain, JoinedDelete, JoinedInsert, Step, fk_index
from sqlalchemy.dialects import mysql

META = sa.MetaData()
INSTANCES = sa.Table(
    "instances",
    META,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("uuid", sa.String(36)),
)
ACTIONS = sa.Table(
    "instance_actions",
    META,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("instance_uuid", sa.String(36)),
    sa.Index("instance_uuid_idx", "instance_uuid"),
    sa.Index("instance_uuid_and_more", "instance_uuid", "id"),
    sa.Index("by_id_then_uuid", "id", "instance_uuid"),
)
EVENTS = sa.Table(
    "instance_actions_events",
    META,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("action_id", sa.Integer),
    sa.Column("event", sa.String(255)),
    sa.Index("action_id", "action_id"),
)
SHADOW = sa.Table(
    "shadow_instance_actions_events",
    META,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("action_id", sa.Integer),
    sa.Column("event", sa.String(255)),
)
IDS = (7, 9, 12)
UNTIL_DONE = ArchiveOptions(until_complete=True)


def _compiled(statement: sa.ClauseElement) -> tuple[str, dict[str, object]]:
    compiled = statement.compile(dialect=mysql.dialect())
    params: dict[str, object] = {**(compiled.params or {})}
    return " ".join(str(compiled).split()), params


def _events_chain(index: str | None = "action_id") -> Chain:
    return Chain(
        INSTANCES,
        (
            Step(ACTIONS, ACTIONS.c.instance_uuid == INSTANCES.c.uuid, "instance_uuid_idx"),
            Step(EVENTS, EVENTS.c.action_id == ACTIONS.c.id, index),
        ),
        IDS,
    )


def test_the_insert_reads_from_the_ids_down_in_a_pinned_order_and_locks_what_it_copies() -> None:
    sql, params = _compiled(JoinedInsert(SHADOW, ["id", "action_id", "event"], _events_chain()))
    assert sql == (
        "INSERT INTO shadow_instance_actions_events (id, action_id, event) "
        "SELECT instance_actions_events.id, instance_actions_events.action_id, "
        "instance_actions_events.event "
        "FROM JSON_TABLE(%s, '$[*]' COLUMNS (id INTEGER PATH '$')) AS novadb_batch "
        "STRAIGHT_JOIN instances ON instances.id = novadb_batch.id "
        "STRAIGHT_JOIN instance_actions FORCE INDEX (instance_uuid_idx) "
        "ON instance_actions.instance_uuid = instances.uuid "
        "STRAIGHT_JOIN instance_actions_events FORCE INDEX (action_id) "
        "ON instance_actions_events.action_id = instance_actions.id FOR UPDATE"
    )
    # The ids are one bound value, never SQL text.
    assert list(params.values()) == [json.dumps(list(IDS))]


def test_the_delete_reaches_the_same_rows_the_same_way() -> None:
    insert, _ = _compiled(JoinedInsert(SHADOW, ["id", "action_id", "event"], _events_chain()))
    delete, params = _compiled(JoinedDelete(_events_chain()))
    assert delete.startswith("DELETE instance_actions_events FROM JSON_TABLE(")
    assert delete.removeprefix("DELETE instance_actions_events ") == (
        insert[insert.index("FROM JSON_TABLE") :].removesuffix(" FOR UPDATE")
    )
    assert list(params.values()) == [json.dumps(list(IDS))]


def test_a_step_without_an_index_leaves_the_order_to_the_optimizer() -> None:
    sql, _ = _compiled(JoinedDelete(_events_chain(index=None)))
    assert "STRAIGHT_JOIN" not in sql and "FORCE INDEX" not in sql
    assert " JOIN instances ON instances.id = novadb_batch.id JOIN instance_actions ON " in sql


def test_the_root_alone_is_reached_by_primary_key() -> None:
    sql, _ = _compiled(JoinedDelete(Chain(INSTANCES, (), IDS)))
    assert sql == (
        "DELETE instances FROM JSON_TABLE(%s, '$[*]' COLUMNS (id INTEGER PATH '$')) "
        "AS novadb_batch STRAIGHT_JOIN instances ON instances.id = novadb_batch.id"
    )


def test_the_forced_index_is_the_narrowest_one_that_starts_with_the_column() -> None:
    assert fk_index(ACTIONS, "instance_uuid") == "instance_uuid_idx"
    assert fk_index(EVENTS, "action_id") == "action_id"
    assert fk_index(EVENTS, "event") is None  # none starts with it
    odd = sa.Table("odd", sa.MetaData(), sa.Column("x", sa.Integer), sa.Index("x-1; DROP", "x"))
    assert fk_index(odd, "x") is None  # a name that would need quoting is not hinted


@pytest.mark.parametrize(
    ("log_bin", "binlog_format", "options", "expected"),
    [
        (False, "MIXED", UNTIL_DONE, ("READ COMMITTED", 2)),
        (True, "ROW", replace(UNTIL_DONE, parallel=3), ("READ COMMITTED", 3)),
        (True, "MIXED", UNTIL_DONE, ("READ COMMITTED", 2)),
        # Statement-based logging refuses INSERT...SELECT under READ COMMITTED.
        (True, "STATEMENT", replace(UNTIL_DONE, parallel=4), (None, 1)),
        (False, "STATEMENT", UNTIL_DONE, ("READ COMMITTED", 2)),  # no binary log at all
        (False, "ROW", replace(UNTIL_DONE, sleep=0.5), ("READ COMMITTED", 1)),  # --sleep
        # A single run's parent-row budget: one batch at a time spends it exactly.
        (False, "ROW", ArchiveOptions(parallel=3), ("READ COMMITTED", 1)),
    ],
)
def test_batch_mode(
    log_bin: bool, binlog_format: str, options: ArchiveOptions, expected: tuple[str | None, int]
) -> None:
    assert batch_mode(log_bin, binlog_format, options) == expected


def test_parallel_out_of_range_is_one_line_with_an_example() -> None:
    from novadb.errors import BadInput

    for bad in (0, 9):
        with pytest.raises(
            BadInput, match=r"^--parallel must be between 1 and 8, e.g. --parallel 1$"
        ):
            ArchiveOptions(parallel=bad).validate()
