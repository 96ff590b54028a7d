"""purge on real databases: Nova's timestamp rule, exact batches, dry runs, exit codes.

Every test runs on SQLite and on MariaDB (the ``dbs`` parameter), on shadow
tables filled by a real ``archive`` of a sample cloud plus crafted rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from novadb.archive.archive import ArchiveOptions, archive
from novadb.archive.purge import PurgeOptions, purge, timestamp_column
from novadb.cli.main import main
from novadb.errors import LockTimeout
from novadb.locking import database_lock
from novadb.progress import Event
from novadb.sample.cloud import CloudSpec, populate

from tests.integration.test_archive import (
    DIALECTS,
    Cloud,
    Databases,
    Snapshot,
    as_dict,
    assert_state,
    open_databases,
    sqlite_template_dir,
)

BEFORE = datetime(2024, 7, 1)
OVERRIDES = {
    "instance_actions": "created_at",
    "instance_actions_events": "created_at",
    "task_log": "updated_at",
}


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sqlite_template_dir(tmp_path_factory.mktemp("purge-template"))


@pytest.fixture(params=DIALECTS)
def dbs(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[Databases]:
    yield from open_databases(request, tmp_path, sqlite_template)


@pytest.fixture
def archived(dbs: Databases) -> Cloud:
    """A cell whose deleted rows (orphans' undated children included) are in shadow tables."""
    cloud = dbs.cloud()
    populate(
        cloud.main, cloud.api, CloudSpec(instances=60, deleted_fraction=0.6, orphan_fraction=0.3)
    )
    # Task log rows: shadow_task_log is dated by updated_at, whatever deleted_at says.
    for n, (updated_at, deleted_at) in enumerate(
        [
            (datetime(2024, 1, 1), datetime(2025, 1, 1)),
            (datetime(2025, 1, 1), datetime(2024, 1, 1)),
            (None, datetime(2024, 1, 1)),
        ],
        start=1,
    ):
        cloud.insert(
            "task_log",
            id=n,
            task_name="instance_usage_audit",
            state="DONE",
            host=f"host-{n}",
            period_beginning=datetime(2023, 1, 1),
            period_ending=datetime(2023, 2, 1),
            message="done",
            created_at=datetime(2023, 1, 1),
            updated_at=updated_at,
            deleted_at=deleted_at,
            deleted=n,
        )
    result = archive(cloud.settings, ArchiveOptions(until_complete=True))
    assert result.complete and result.rows["task_log"] == 3
    return cloud


def column_for(table: str, row: dict[str, Any]) -> str:
    """Nova's rule, written out: which column dates a row of shadow_<table>."""
    if table in OVERRIDES:
        return OVERRIDES[table]
    return next(c for c in ("deleted_at", "updated_at", "created_at") if c in row)


def purged_by_before(snap: Snapshot, before: datetime) -> dict[str, set[Any]]:
    """Ids per shadow table that --before must delete (NULL timestamps never match)."""
    out: dict[str, set[Any]] = {}
    for table, rows in snap.shadow.items():
        ids = set()
        for row in rows:
            d = as_dict(row)
            if "id" not in d:
                continue
            value = d[column_for(table, d)]
            if value is not None and value < before:
                ids.add(d["id"])
        if ids:
            out[table] = ids
    return out


def without(snap: Snapshot, gone: dict[str, set[Any]]) -> Snapshot:
    shadow = {
        t: frozenset(r for r in rows if as_dict(r).get("id") not in gone.get(t, set()))
        for t, rows in snap.shadow.items()
    }
    return Snapshot(snap.live, shadow, snap.api)


def test_purge_all_empties_every_shadow_table(archived: Cloud) -> None:
    archived.insert("shadow_alembic_version", version_num="abc123")  # no integer key
    archived.insert("shadow_fixed_ips", id=7, address="10.0.0.7", deleted=7)  # a legacy table
    before = archived.snapshot()
    counts = {f"shadow_{t}": len(rows) for t, rows in before.shadow.items() if rows}
    assert counts["shadow_instances"] > 20 and counts["shadow_alembic_version"] == 1

    result = purge(archived.settings, PurgeOptions(purge_all=True, batch_size=50))

    after = archived.snapshot()
    assert {t: rows for t, rows in after.shadow.items() if rows} == {}
    assert after.live == before.live
    assert after.api == before.api
    assert result.rows == counts
    assert result.total == sum(counts.values())
    assert result.stopped is None
    assert sorted(result.messages) == sorted(
        f"DB: Deleted {n} rows from {t} based on timestamp column (n/a)" for t, n in counts.items()
    )


def test_purge_before_follows_novas_timestamp_rule(archived: Cloud) -> None:
    before = archived.snapshot()
    expected = purged_by_before(before, BEFORE)
    # The cases the rule exists for are all in the data.
    assert expected["instance_actions"] and expected["instance_actions_events"]
    assert expected["task_log"] == {1}  # updated_at 2024-01-01; row 2's old deleted_at is ignored
    undated = {
        as_dict(r)["id"]
        for r in before.shadow["instance_extra"]
        if as_dict(r)["deleted_at"] is None
    }
    assert undated  # orphans' children, archived with their instance, never soft-deleted

    result = purge(archived.settings, PurgeOptions(before=BEFORE, batch_size=5))

    after = archived.snapshot()
    assert_state(after, without(before, expected))
    assert result.rows == {f"shadow_{t}": len(ids) for t, ids in expected.items()}
    assert undated <= {as_dict(r)["id"] for r in after.shadow["instance_extra"]}
    assert (
        "DB: Unable to purge table shadow_alembic_version because it has no timestamp column"
        in (result.messages)
    )
    assert (
        f"DB: Deleted {len(expected['instance_actions'])} rows from shadow_instance_actions "
        "based on timestamp column created_at"
    ) in result.messages
    assert "DB: Deleted 1 rows from shadow_task_log based on timestamp column updated_at" in (
        result.messages
    )


def test_timestamp_column_rule(archived: Cloud) -> None:
    meta = sa.MetaData()
    meta.reflect(archived.main, only=lambda name, _meta: name.startswith("shadow_"))
    found = {name: timestamp_column(table) for name, table in meta.tables.items()}
    assert found["shadow_instance_actions"] == "created_at"
    assert found["shadow_instance_actions_events"] == "created_at"
    assert found["shadow_task_log"] == "updated_at"
    assert found["shadow_alembic_version"] is None
    others = {n: c for n, c in found.items() if n.removeprefix("shadow_") not in OVERRIDES}
    assert set(others.values()) == {"deleted_at", None}
    assert [n for n, c in others.items() if c is None] == ["shadow_alembic_version"]


def test_purge_batches_delete_exactly_the_matching_rows(dbs: Databases) -> None:
    cloud = dbs.cloud()
    dates = [datetime(2024, 1, 1), None, datetime(2025, 1, 1), datetime(2023, 5, 5), None]
    cloud.insert_rows(
        "shadow_instance_metadata",
        [
            {
                "id": n,
                "key": f"k{n}",
                "value": "v",
                "instance_uuid": "00000000-0000-0000-0000-00000000000a",
                "deleted": n,
                "deleted_at": dates[n % len(dates)],
            }
            for n in range(1, 301)
        ],
    )
    matching = {n for n in range(1, 301) if (d := dates[n % len(dates)]) and d < BEFORE}
    assert len(matching) == 120
    events: list[Event] = []

    result = purge(
        cloud.settings, PurgeOptions(before=BEFORE, batch_size=7), progress=events.append
    )

    left = {as_dict(r)["id"] for r in cloud.snapshot().shadow["instance_metadata"]}
    assert left == set(range(1, 301)) - matching
    assert result.rows == {"shadow_instance_metadata": 120}
    batches = [int(str(e.data["rows"])) for e in events if e.kind == "batch"]
    # Windows of 7 primary-key values, each starting at the next matching id.
    expected, low = [], 0
    while any(n > low for n in matching):
        start = min(n for n in matching if n > low)
        expected.append(sum(1 for n in matching if start <= n < start + 7))
        low = start + 6
    assert batches == expected
    assert max(batches) <= 7
    assert [e.data["total"] for e in events if e.kind == "batch"][-1] == 120


def test_dry_run_counts_equal_the_real_run_and_change_nothing(archived: Cloud) -> None:
    before = archived.snapshot()
    expected = purged_by_before(before, BEFORE)

    dry_before = purge(archived.settings, PurgeOptions(before=BEFORE, batch_size=3, dry_run=True))
    dry_all = purge(archived.settings, PurgeOptions(purge_all=True, dry_run=True))

    assert_state(archived.snapshot(), before)
    assert dry_before.dry_run is dry_all.dry_run is True
    assert dry_before.rows == {f"shadow_{t}": len(ids) for t, ids in expected.items()}
    assert dry_all.rows == {f"shadow_{t}": len(r) for t, r in before.shadow.items() if r}
    for message in dry_before.messages + dry_all.messages:
        assert message.startswith(("DB: Would delete ", "DB: Unable to purge ")), message

    real_before = purge(archived.settings, PurgeOptions(before=BEFORE, batch_size=3))
    assert real_before.rows == dry_before.rows
    assert real_before.total == dry_before.total

    middle = archived.snapshot()
    dry_rest = purge(archived.settings, PurgeOptions(purge_all=True, dry_run=True))
    assert_state(archived.snapshot(), middle)
    real_rest = purge(archived.settings, PurgeOptions(purge_all=True))
    assert real_rest.rows == dry_rest.rows
    assert real_rest.total == dry_rest.total == dry_all.total - dry_before.total


def test_purge_waits_for_the_archive_lock(archived: Cloud) -> None:
    before = archived.snapshot()

    with database_lock(archived.main, "archive", 5), pytest.raises(LockTimeout):
        purge(archived.settings, PurgeOptions(purge_all=True, lock_timeout=0.3))

    assert_state(archived.snapshot(), before)


# -- the command line ----------------------------------------------------------------


def run(cloud: Cloud, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--database", cloud.settings.url("main"), "purge", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_exit_codes(archived: Cloud, capsys: pytest.CaptureFixture[str]) -> None:
    before = archived.snapshot()

    assert run(archived, capsys) == (
        1,
        "",
        "novadb: error: Either --before or --all is required\n",
    )
    code, out, err = run(archived, capsys, "--before", "not a date")
    assert (code, out) == (2, "")
    assert err == (
        "novadb: error: Invalid value for --before: String does not contain a date: not a date; "
        "give a date such as 2024-01-31 or '2024-01-31 12:00'\n"
    )
    assert run(archived, capsys, "--all", "--batch-size", "0") == (
        2,
        "",
        "novadb: error: --batch-size must be a positive integer, e.g. --batch-size 10000\n",
    )
    assert_state(archived.snapshot(), before)

    # Nothing is older than 2000: exit 3 and Nova's sentence.
    assert run(archived, capsys, "--before", "2000-01-01") == (
        3,
        "Purging stale soft-deleted rows and no data was deleted\n",
        "",
    )
    code, out, err = run(archived, capsys, "--before", "2024-07-01", "--dry-run")
    assert (code, err) == (0, "")
    assert "\nDB: Would delete " in out
    assert_state(archived.snapshot(), before)

    code, out, err = run(archived, capsys, "--all")
    total = sum(len(rows) for rows in before.shadow.values())
    assert (code, err) == (0, "")
    assert re.fullmatch(rf"purged {total} rows in \d+\.\d s\n", out)

    assert run(archived, capsys, "--all", "--verbose") == (
        3,
        "Purging stale soft-deleted rows and no data was deleted\n",
        "",
    )


def test_cli_verbose_lists_each_table(archived: Cloud, capsys: pytest.CaptureFixture[str]) -> None:
    expected = purged_by_before(archived.snapshot(), BEFORE)

    code, out, err = run(archived, capsys, "--before", "2024-07-01", "--verbose")

    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert (
        lines[0]
        == "DB: Unable to purge table shadow_alembic_version because it has no timestamp column"
    )
    assert sorted(lines[1:]) == sorted(
        f"DB: Deleted {len(ids)} rows from shadow_{t} based on timestamp column "
        f"{OVERRIDES.get(t, 'deleted_at')}"
        for t, ids in expected.items()
    )


def test_cli_all_cells_without_api_database_exits_4(
    archived: Cloud, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.sqlite"
    code = main(
        [
            "--database",
            archived.settings.url("main"),
            "--api-database",
            f"sqlite:///{missing}",
            "purge",
            "--all",
            "--all-cells",
        ]
    )
    out, err = capsys.readouterr()

    assert (code, out) == (4, "")
    assert err == (
        "novadb: error: Unable to get cell list from API DB. Is it configured? "
        f"(SQLite database {missing} does not exist; run `novadb --database "
        f"{archived.settings.url('main')} --api-database sqlite:///{missing} sync` first or "
        "check the URL)\n"
    )
