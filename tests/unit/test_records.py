"""Output that fits: tables at 60, 80 and 200 columns and through a pipe; fix lines."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from novadb.cli.main import build_parser, global_options, main
from novadb.config import load_settings
from novadb.errors import PLACEMENT_NOT_CONFIGURED
from novadb.render.operations import null_uuid_table, sync_table, with_options
from novadb.render.records import Records
from novadb.schema.null_uuid import NullUuidDatabase, NullUuidResult
from novadb.schema.sync import DatabaseSync, SyncResult, sync
from rich.console import Console

ROOT = Path(__file__).resolve().parents[2]
API_URL = "mysql+pymysql://nova:***@controller.example.com:3306/nova_api?charset=utf8mb4"
CELL_URL = "mysql+pymysql://nova:***@controller.example.com:3306/nova_cell1?charset=utf8mb4"
RECORDS = Records(
    "version",
    ("Database", "URL", "Current", "Head", "Pending", "Release"),
    [
        ("api", API_URL, "cdeec0c85668", "cdeec0c85668", "0", "2025.1"),
        ("cell1", CELL_URL, "13863f4e1612", "2903cd72dc14", "2", "-"),
    ],
    right=frozenset({"Pending"}),
)


def render(renderable: object, width: int, *, terminal: bool = True) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=terminal, color_system=None)
    console.print(renderable, crop=terminal)  # as novadb.cli.output.Output prints results
    return buffer.getvalue()


def cells(records: Records) -> list[str]:
    return [cell for row in records.rows for cell in row]


@pytest.mark.parametrize("width", [60, 80])
def test_narrow_terminal_stacks_rows_as_records(width: int) -> None:
    text = render(RECORDS, width)
    lines = text.splitlines()

    assert lines[:2] == ["version", "Database: api"]
    first = lines.index("Current:  cdeec0c85668")
    assert lines[first : first + 6] == ["Current:  cdeec0c85668", "Head:     cdeec0c85668",
                                        "Pending:  0", "Release:  2025.1", "",
                                        "Database: cell1"]  # fmt: skip
    assert lines[-4:] == ["Current:  13863f4e1612", "Head:     2903cd72dc14", "Pending:  2",
                          "Release:  -"]  # fmt: skip
    flat = text.replace("\n", "")
    for cell in cells(RECORDS):
        assert cell in flat  # every id and URL whole (a URL longer than the line folds)
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())


def test_wide_terminal_is_a_table_with_every_cell_whole() -> None:
    text = render(RECORDS, 200)
    lines = text.splitlines()

    assert lines[0].rstrip() == "version"
    assert lines[1].startswith("┌") and lines[-1].startswith("└")
    ids = "│ cdeec0c85668 │ cdeec0c85668 │       0 │ 2025.1  │"
    assert f"│ api      │ {API_URL:{len(CELL_URL)}} {ids}" in lines
    assert "…" not in text


def test_off_a_terminal_plain_lines_without_padding() -> None:
    text = render(RECORDS, 200, terminal=False)

    gap = " " * (len(CELL_URL) - len(API_URL) + 2)
    assert text.splitlines() == [
        "version",
        f"Database  URL{' ' * (len(CELL_URL) - 1)}Current       Head          Pending  Release",
        f"api       {API_URL}{gap}cdeec0c85668  cdeec0c85668        0  2025.1",
        f"cell1     {CELL_URL}  13863f4e1612  2903cd72dc14        2  -",
    ]


def test_cells_are_text_never_markup() -> None:
    records = Records("sync", ("Database", "Applied"), [("placement", "[placement_database]/x")])

    for width, terminal in ((200, True), (20, True), (200, False)):
        flat = render(records, width, terminal=terminal).replace("\n", "")
        assert "[placement_database]/x" in flat


def test_empty_result_is_a_sentence() -> None:
    databases = (
        NullUuidDatabase("cell1", "sqlite:///c", {"instances": 0}),
        NullUuidDatabase("api", "sqlite:///a", {}),
    )
    clean = NullUuidResult(databases, deleted=False)

    for width, terminal in ((60, True), (200, False)):
        assert render(null_uuid_table(clean), width, terminal=terminal) == (
            "No rows with a NULL instance uuid in 2 databases.\n"
        )


def test_version_through_a_pipe_is_plain(tmp_path: Path) -> None:
    urls = {db: f"sqlite:///{tmp_path / db}.sqlite" for db in ("main", "api", "placement")}
    result = sync(load_settings(database=urls["main"], api_database=urls["api"],
                                placement_database=urls["placement"]))  # fmt: skip
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": f"{ROOT / 'lib'}"}
    env.pop("NO_COLOR", None)

    piped = subprocess.run(
        [sys.executable, "-m", "novadb.cli.main", "--database", urls["main"],
         "--api-database", urls["api"], "--placement-database", urls["placement"], "version"],
        capture_output=True, text=True, env=env, check=False, timeout=120,
    )  # fmt: skip

    assert (piped.returncode, piped.stderr) == (0, "")
    lines = piped.stdout.splitlines()
    assert lines[0] == "version"
    assert lines[1].split() == ["Database", "URL", "Current", "Head", "Pending", "Release"]
    assert all(line == line.rstrip() for line in lines)
    heads = {d.name: d.after for d in result.databases}
    for line in lines[2:]:
        name, url, current, head, pending, _release = line.split(maxsplit=5)
        assert url.startswith("sqlite:///") and url.endswith(".sqlite")
        assert current == head == heads[name] and pending == "0"
    assert "\x1b" not in piped.stdout


def test_sync_table_keeps_section_names() -> None:
    skipped = DatabaseSync(
        "placement", "placement", API_URL, None, None, skipped=PLACEMENT_NOT_CONFIGURED
    )
    result = SyncResult((skipped,), 0.1)

    for width, terminal in ((80, True), (200, True), (200, False)):
        flat = " ".join(render(sync_table(result), width, terminal=terminal).split())
        assert f"skipped: {PLACEMENT_NOT_CONFIGURED}" in flat


# -- fix lines repeat the operator's global options ---------------------------------------


def test_fix_commands_get_the_global_options() -> None:
    options = "--config-file /etc/nova/nova.conf"

    assert with_options("novadb rebuild-placement", options) == (
        "novadb --config-file /etc/nova/nova.conf rebuild-placement"
    )
    assert with_options("see the summary, then run `novadb placement-audit`", options) == (
        "see the summary, then run `novadb --config-file /etc/nova/nova.conf placement-audit`"
    )
    assert with_options("another novadb archive is running", options) == (
        "another novadb archive is running"
    )
    assert with_options("novadb check", "") == "novadb check"


def test_global_options_are_masked_and_quoted() -> None:
    args = build_parser().parse_args(
        ["--config-file", "/etc/nova/my nova.conf", "--database",
         "mysql+pymysql://nova:s3cr3t@db/nova", "version"]
    )  # fmt: skip

    assert global_options(args) == (
        "--config-file '/etc/nova/my nova.conf' --database 'mysql+pymysql://nova:***@db/nova'"
    )


def test_an_error_s_fix_carries_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "nova.conf"
    missing = tmp_path / "api.sqlite"
    conf.write_text(f"[api_database]\nconnection = sqlite:///{missing}\n", encoding="utf-8")

    assert main(["--config-file", str(conf), "version", "--database", "api"]) == 3
    err = capsys.readouterr().err

    assert f"run `novadb --config-file {conf} sync` first" in err
    assert not missing.exists()


def test_text_results_are_not_read_as_markup(capsys: pytest.CaptureFixture[str]) -> None:
    from novadb.cli.output import Output

    Output(as_json=False).result("x", lambda _r: "[placement_database]/connection is not set")

    assert capsys.readouterr().out == "[placement_database]/connection is not set\n"
