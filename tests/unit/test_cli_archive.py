"""``novadb archive`` run in-process on SQLite: exit codes, error lines, nova-manage's table.

The working directory holds the default ``nova.sqlite`` and ``nova_api.sqlite``
(copied from a synced template) with a handful of hand-written rows, so every
count in the expected output is known exactly.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from novadb.cli.main import main
from novadb.config import load_settings
from novadb.schema.sync import sync

FILES = ("nova.sqlite", "nova_api.sqlite")
SUMMARY = re.compile(r"archived (\d+) rows in (\d+) batches, \d+\.\d s; (.*)")


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli-archive")
    settings = load_settings(
        database=f"sqlite:///{directory / 'nova.sqlite'}",
        api_database=f"sqlite:///{directory / 'nova_api.sqlite'}",
    )
    sync(settings, "api")
    sync(settings, "main", local_cell=True)
    return directory


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template: Path, etc_nova: Path) -> Path:
    """A working directory with synced, empty default databases."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    for name in FILES:
        shutil.copy(template / name, tmp_path / name)
    return tmp_path


def insert(database: str, table: str, *rows: dict[str, Any]) -> None:
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(sa.Table(table, sa.MetaData(), autoload_with=conn)), rows)
    finally:
        engine.dispose()


def count(database: str, sql: str) -> int:
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())
    finally:
        engine.dispose()


GONE = datetime(2024, 3, 1)


@pytest.fixture
def deleted(cwd: Path) -> list[str]:
    """Two deleted instances (one instance_extra each), a live one, a deleted service."""
    uuids = [str(uuid.uuid4()) for _ in range(3)]
    insert(
        "nova.sqlite",
        "instances",
        *(
            {
                "id": n,
                "uuid": u,
                "deleted": n if n < 3 else 0,
                "deleted_at": GONE if n < 3 else None,
            }
            for n, u in enumerate(uuids, start=1)
        ),
    )
    insert(
        "nova.sqlite",
        "instance_extra",
        *(
            {"id": n, "instance_uuid": u, "deleted": n if n < 3 else 0}
            for n, u in enumerate(uuids, start=1)
        ),
    )
    insert(
        "nova.sqlite",
        "services",
        {
            "id": 1,
            "host": "old",
            "binary": "nova-compute",
            "report_count": 0,
            "deleted": 1,
            "deleted_at": GONE,
        },
    )
    insert(
        "nova_api.sqlite",
        "instance_mappings",
        *({"instance_uuid": u, "project_id": "p"} for u in uuids),
    )
    insert("nova_api.sqlite", "request_specs", {"instance_uuid": uuids[0], "spec": "{}"})
    return uuids


TABLE = """\
+------------------------------+-------------------------+
| Table                        | Number of Rows Archived |
+------------------------------+-------------------------+
| API_DB.instance_group_member | 0                       |
| API_DB.instance_mappings     | 2                       |
| API_DB.request_specs         | 1                       |
| instance_extra               | 2                       |
| instances                    | 2                       |
| services                     | 1                       |
+------------------------------+-------------------------+"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def only_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert err.endswith("\n")
    return lines[0]


# -- exit 0 and 1 ---------------------------------------------------------------------


def test_verbose_prints_novas_table_and_exits_1(
    deleted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "archive", "--until-complete", "--verbose")

    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert "\n".join(lines[:-1]) == TABLE
    summary = SUMMARY.fullmatch(lines[-1])
    assert summary is not None, lines[-1]
    # The instances tree (instances and their extra) in one batch, services in another.
    assert summary.groups() == ("5", "2", "nothing left to archive")
    assert count("nova.sqlite", "SELECT count(*) FROM shadow_instances") == 2
    assert count("nova_api.sqlite", "SELECT count(*) FROM instance_mappings") == 1

    # Again: nothing left, exit 0, Nova's sentence.
    code, out, err = run(capsys, "archive", "--until-complete", "--verbose")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "Nothing was archived."
    assert len(lines) == 2
    summary = SUMMARY.fullmatch(lines[1])
    assert summary is not None and summary.groups() == ("0", "0", "nothing left to archive")


def test_without_verbose_only_the_summary(
    deleted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "archive")

    assert (code, err) == (1, "")
    summary = SUMMARY.fullmatch(out.rstrip("\n"))
    assert summary is not None, out
    assert summary.groups() == ("5", "2", "nothing left to archive")


def test_batch_size_budget_leaves_more_and_says_so(
    deleted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "archive", "--batch-size", "1", "--verbose")

    assert (code, err) == (1, "")
    # One parent row: the first deleted instance with its children and API rows.
    assert out.splitlines()[:7] == [
        "+------------------------------+-------------------------+",
        "| Table                        | Number of Rows Archived |",
        "+------------------------------+-------------------------+",
        "| API_DB.instance_group_member | 0                       |",
        "| API_DB.instance_mappings     | 1                       |",
        "| API_DB.request_specs         | 1                       |",
        "| instance_extra               | 1                       |",
    ]
    summary = SUMMARY.fullmatch(out.splitlines()[-1])
    assert summary is not None and summary.groups() == ("2", "1", "stopped (budget)")


def test_json_output(deleted: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--json", "archive", "--until-complete")

    assert (code, err) == (1, "")
    result = json.loads(out)
    assert result["rows"] == {
        "instance_extra": 2,
        "instances": 2,
        "services": 1,
        "API_DB.instance_group_member": 0,
        "API_DB.instance_mappings": 2,
        "API_DB.request_specs": 1,
    }
    assert result["total"] == 5
    assert result["complete"] is True
    assert result["dry_run"] is False
    assert result["failures"] == []
    assert [c["name"] for c in result["cells"]] == ["main"]


def test_dry_run_counts_and_exits_0(
    deleted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "--json", "archive", "--dry-run")

    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["dry_run"] is True
    assert result["total"] == 5
    assert result["rows"]["API_DB.instance_mappings"] == 2
    assert count("nova.sqlite", "SELECT count(*) FROM instances") == 3

    code, out, err = run(capsys, "archive", "--dry-run")
    assert (code, err) == (0, "")
    assert re.fullmatch(
        r"would move 5 rows in 0 batches, \d+\.\d s; nothing left to archive\n", out
    )


def test_held_back_rows_are_reported(
    deleted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    insert("nova.sqlite", "fixed_ips", {"id": 1, "instance_uuid": deleted[0], "deleted": 0})

    code, out, err = run(capsys, "archive", "--until-complete")

    assert (code, err) == (1, "")
    lines = out.splitlines()
    summary = SUMMARY.fullmatch(lines[0])
    # Instance 2 and its extra, instance 1's soft-deleted extra (on its own), the service.
    assert summary is not None and summary.groups() == ("4", "3", "nothing left to archive")
    assert lines[1:] == [
        "held back (still referenced by tables archive does not move): instances 1"
    ]


def test_purge_after_archive(deleted: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "archive", "--until-complete", "--purge", "--verbose")

    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert "\n".join(lines[:10]) == TABLE
    assert lines[10] == "Rows were archived, running purge..."
    assert lines[11:14] == [
        "DB: Deleted 2 rows from shadow_instance_extra based on timestamp column (n/a)",
        "DB: Deleted 2 rows from shadow_instances based on timestamp column (n/a)",
        "DB: Deleted 1 rows from shadow_services based on timestamp column (n/a)",
    ]
    assert SUMMARY.fullmatch(lines[14]) is not None
    assert len(lines) == 15
    assert count("nova.sqlite", "SELECT count(*) FROM shadow_instances") == 0


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--batch-size", "0"],
            "--batch-size must be a positive integer, e.g. --batch-size 1000",
        ),
        (["--max-rows", "-5"], "--batch-size must be a positive integer, e.g. --batch-size 1000"),
        (["--batch-size", "2147483648"], "--batch-size must be <= 2147483647"),
        (["--sleep", "-1"], "--sleep must be zero or a positive number of seconds"),
        (["--max-runtime", "0"], "--max-runtime must be a positive number of seconds"),
        (["--parallel", "0"], "--parallel must be between 1 and 8, e.g. --parallel 1"),
        (["--parallel", "9"], "--parallel must be between 1 and 8, e.g. --parallel 1"),
    ],
)
def test_bad_option_values_exit_2(
    deleted: list[str], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run(capsys, "archive", *args)

    assert (code, out) == (2, "")
    assert only_error_line(err) == f"novadb: error: {message}"
    assert count("nova.sqlite", "SELECT count(*) FROM instances") == 3


def test_non_integer_batch_size_is_a_usage_error(
    cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["archive", "--batch-size", "many"])

    assert info.value.code == 2
    line = only_error_line(capsys.readouterr().err)
    assert line == (
        "novadb: error: argument --batch-size/--max-rows/--max_rows: invalid int value: "
        "'many' (see `novadb archive --help`)"
    )


def test_unreachable_api_database_exits_3(
    deleted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "--api-database", "sqlite:///missing.sqlite", "archive")

    assert (code, out) == (3, "")
    assert only_error_line(err) == (
        "novadb: error: Failed to connect to API DB so aborting this archival attempt "
        "(SQLite database missing.sqlite does not exist; run `novadb --api-database "
        "sqlite:///missing.sqlite sync` first or check the URL). Check "
        "[api_database]/connection (or --api-database) and run this command again"
    )
    assert count("nova.sqlite", "SELECT count(*) FROM instances") == 3
    assert not Path("missing.sqlite").exists()


def test_bad_before_exits_4(deleted: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "archive", "--before", "garbage")

    assert (code, out) == (4, "")
    assert only_error_line(err) == (
        "novadb: error: Invalid value for --before: String does not contain a date: garbage; "
        "give a date such as 2024-01-31 or '2024-01-31 12:00'"
    )


def test_before_is_parsed_fuzzily(deleted: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # Deleted 2024-03-01: kept by "Feb 1 2024", archived by "in April 2024".
    assert run(capsys, "archive", "--until-complete", "--before", "Feb 1 2024")[0] == 0
    assert run(capsys, "archive", "--until-complete", "--before", "in April 2024")[0] == 1
    assert count("nova.sqlite", "SELECT count(*) FROM shadow_instances") == 2


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["archive", "--batch-size", "0", "--before", "garbage"], 2),
        (["--api-database", "sqlite:///missing.sqlite", "archive", "--before", "garbage"], 3),
    ],
    ids=["batch-size-first", "api-database-second"],
)
def test_errors_in_nova_manages_order(
    cwd: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int
) -> None:
    assert main(args) == code


HINT = "Run `novadb sync` (or add the columns to the shadow tables) and archive again"
LACK = "shadow_instance_extra lacks column(s) vpmems that instance_extra has"
DRIFT_FAILURES = [
    f"main: instances: {LACK}; nothing moved from instances. {HINT}",
    f"main: instance_extra: {LACK}; nothing moved from instance_extra. {HINT}",
]


def drop_shadow_column() -> None:
    engine = sa.create_engine("sqlite:///nova.sqlite")
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE shadow_instance_extra DROP COLUMN vpmems")
    engine.dispose()


def test_failed_table_exits_255_with_one_line_per_failure(
    deleted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    drop_shadow_column()

    code, out, err = run(capsys, "archive", "--until-complete", "--verbose")

    assert code == 255
    # One line per failed table, once, on stderr.
    assert err == "".join(f"novadb: error: {f}\n" for f in DRIFT_FAILURES)
    lines = out.splitlines()
    assert lines[:5] == [
        "+----------+-------------------------+",
        "| Table    | Number of Rows Archived |",
        "+----------+-------------------------+",
        "| services | 1                       |",
        "+----------+-------------------------+",
    ]
    summary = SUMMARY.fullmatch(lines[5])
    assert summary is not None and summary.groups() == ("1", "1", "more left; run again")
    assert count("nova.sqlite", "SELECT count(*) FROM instances") == 3


# -- online-migrate's error path --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-count", "0"], "Must supply a positive integer for --max-count."),
        (["--max-count", "many"], "Must supply a positive integer for --max-count."),
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
    ],
)
def test_online_migrate_bad_counts_exit_127_before_touching_anything(
    sqlite_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run(capsys, "online-migrate", *args)
    assert code == 127
    assert only_error_line(err) == f"novadb: error: {message}"
    assert list(sqlite_dir.iterdir()) == []  # no database was opened or created
