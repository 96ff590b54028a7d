"""archive's guarantees on generated cells: nothing lost, no dangling row, batch size irrelevant.

Hypothesis draws small cells (0-40 instances, any share deleted or orphaned,
rows pinned by legacy tables, task_log rows), a batch size and an optional
``--before``; each example archives two identical copies, one in small batches
and one in a single large one.  SQLite copies one synced template per example;
the MariaDB variant runs a handful of examples on fresh databases.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from novadb.sample.cloud import CloudSpec, populate

from tests.integration.test_archive import (
    API_TABLES,
    Cloud,
    Databases,
    as_dict,
    assert_state,
    check_api,
    check_moves,
    counts_of,
    dangling,
    simulate,
    soft_deleted_live,
    sqlite_template_dir,
)


@dataclass(frozen=True)
class Case:
    """One generated cell and how to archive it."""

    spec: CloudSpec
    pins: tuple[int, ...]  # deleted instances (by rank) a fixed_ips row keeps live
    task_logs: tuple[tuple[bool, datetime | None], ...]  # (deleted, updated_at)
    batch_size: int
    before: datetime | None
    task_log: bool


DATES = st.datetimes(min_value=datetime(2023, 10, 1), max_value=datetime(2025, 3, 1)).map(
    lambda d: d.replace(microsecond=0)
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    spec = CloudSpec(
        instances=draw(st.integers(0, 40)),
        deleted_fraction=draw(st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0])),
        orphan_fraction=draw(st.sampled_from([0.0, 0.3, 1.0])),
        hosts=draw(st.integers(1, 3)),
        deleted_hosts=draw(st.integers(0, 2)),
        seed=draw(st.integers(0, 2**16)),
        group_fraction=0.3,
    )
    return Case(
        spec=spec,
        pins=tuple(draw(st.lists(st.integers(0, 40), max_size=2, unique=True))),
        task_logs=tuple(draw(st.lists(st.tuples(st.booleans(), st.none() | DATES), max_size=4))),
        batch_size=draw(st.integers(1, 50)),
        before=draw(st.none() | DATES),
        task_log=draw(st.booleans()),
    )


def fill(cloud: Cloud, case: Case) -> None:
    """Write the case's cell: the sample cloud, legacy pins, task_log rows."""
    populate(cloud.main, cloud.api, case.spec)
    instances = cloud.snapshot().rows("instances")
    deleted = sorted(i for i, d in instances.items() if d["deleted"])
    for n, rank in enumerate(sorted({r % len(deleted) for r in case.pins} if deleted else ())):
        cloud.insert(
            "fixed_ips",
            id=n + 1,
            address=f"10.0.0.{n + 1}",
            instance_uuid=instances[deleted[rank]]["uuid"],
            deleted=0,
        )
    for n, (is_deleted, updated_at) in enumerate(case.task_logs, start=1):
        cloud.insert(
            "task_log",
            id=n,
            task_name="instance_usage_audit",
            state="DONE",
            host=f"host-{n}",
            period_beginning=datetime(2023, 1, 1),
            period_ending=datetime(2023, 2, 1),
            message="done",
            updated_at=updated_at,
            deleted_at=updated_at if is_deleted else None,
            deleted=n if is_deleted else 0,
        )


def check_case(databases: Databases, case: Case) -> None:
    """Archive two copies of the case's cell (small and large batches) and compare."""
    small = databases.cloud()
    fill(small, case)
    large = databases.clone(small)
    before = small.snapshot()
    graph = small.graph()
    plan = simulate(before, graph, before=case.before, task_log=case.task_log)
    options = {"before": case.before, "task_log": case.task_log}

    dry = small.archive(dry_run=True, **options)
    assert_state(small.snapshot(), before)
    result = small.archive(until_complete=True, batch_size=case.batch_size, **options)
    after = small.snapshot()

    # Every row is in exactly one place, unchanged.
    moved = check_moves(before, after)
    # No live row references an archived one.
    assert dangling(after, moved) == []
    check_api(before, after, moved)
    # Counts: what moved, what the dry run said, what the model says.
    assert result.rows == counts_of(before, after, moved)
    assert dry.rows == result.rows
    assert dry.held_back == result.held_back == plan.held_back
    assert result.failures == []
    assert result.complete is True
    assert_state(after, plan.apply(before))
    if case.before is None:
        held = {d["id"] for d in after.rows("instances").values() if d["deleted"]}
        assert soft_deleted_live(after, graph) == ({"instances": held} if held else {})
        assert len(held) == plan.held_back.get("instances", 0)

    # One large batch ends in the very same state.
    big = large.archive(until_complete=True, batch_size=1000, **options)
    assert big.rows == result.rows
    assert_state(large.snapshot(), after)
    for table in API_TABLES:
        assert {as_dict(r)["instance_uuid"] for r in large.snapshot().api[table]} == {
            as_dict(r)["instance_uuid"] for r in after.api[table]
        }


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sqlite_template_dir(tmp_path_factory.mktemp("archive-property-template"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_archive_properties_sqlite(template: Path, case: Case) -> None:
    with tempfile.TemporaryDirectory(prefix=f"archive-{uuid.uuid4().hex[:6]}-") as work:
        databases = Databases("sqlite", Path(work), template, None)
        try:
            check_case(databases, case)
        finally:
            databases.close()


@pytest.mark.mariadb
@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=cases())
def test_archive_properties_mariadb(
    mysql_dbs: Callable[[], str], tmp_path: Path, case: Case
) -> None:
    # mysql_dbs is a factory: every example gets databases of its own.
    databases = Databases("mariadb", tmp_path, tmp_path, mysql_dbs)
    try:
        check_case(databases, case)
    finally:
        databases.close()
