"""Placement without ``[placement_database]``: one condition, one line, exit 78.

A classic nova.conf names ``[database]`` and ``[api_database]`` only; Placement
runs as its own service with its own database.  ``check`` says so once (INFO),
the Placement operations refuse with the same line, and ``online-migrate``
never runs Placement's migrations on the API database, whether Placement's
URL is the fallback or was named equal to the API's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from novadb.cli.main import main
from novadb.config import load_settings
from novadb.errors import PLACEMENT_NOT_CONFIGURED, BadInput, PlacementNotConfigured
from novadb.online.registry import MIGRATIONS
from novadb.online.runner import online_migrate
from novadb.progress import Event
from novadb.schema.sync import sync

ONE_LINE = f"novadb: error: {PLACEMENT_NOT_CONFIGURED}\n"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("nova")
    sync(
        load_settings(
            database=f"sqlite:///{directory / 'nova.sqlite'}",
            api_database=f"sqlite:///{directory / 'nova_api.sqlite'}",
        ),
        "api",
    )
    sync(load_settings(database=f"sqlite:///{directory / 'nova.sqlite'}"), "main",
         local_cell=True)  # fmt: skip
    return directory


@pytest.fixture
def classic(tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A nova.conf with [database] and [api_database] only, and those two databases."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    for name in ("nova.sqlite", "nova_api.sqlite"):
        shutil.copy(template / name, tmp_path / name)
    conf = tmp_path / "nova.conf"
    conf.write_text(
        f"[database]\nconnection = sqlite:///{tmp_path / 'nova.sqlite'}\n"
        f"[api_database]\nconnection = sqlite:///{tmp_path / 'nova_api.sqlite'}\n",
        encoding="utf-8",
    )
    return conf


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize(
    "operation",
    [
        ["placement-audit"],
        ["placement-audit", "--delete"],
        ["heal-allocations", "--dry-run"],
        ["heal-allocations"],
        ["sync-aggregates", "--dry-run"],
        ["sync-aggregates"],
        ["rebuild-placement", "--dry-run"],
        ["rebuild-placement"],
        ["rebuild-placement", "--restore", "backup.json.gz"],
        ["online-migrate", "--database", "placement"],
        ["sync", "--database", "placement"],
    ],
)
def test_placement_operations_refuse_with_one_line_and_78(
    classic: Path, operation: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(classic.parent)

    code = main(["--config-file", str(classic), *operation])
    out, err = capsys.readouterr()

    # (online-migrate says its batch size first, as nova-manage does)
    assert out in ("", "Running batches of 50 until complete\n")
    assert (code, err) == (78, ONE_LINE)
    assert snapshot(classic.parent) == before  # nothing created, nothing changed


def test_check_says_it_once_as_info(classic: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--json", "--config-file", str(classic), "check"])
    out = capsys.readouterr().out

    findings = json.loads(out)["findings"]
    placement = [f for f in findings if f["database"] == "placement"]
    assert [(f["severity"], f["code"], f["summary"]) for f in placement] == [
        ("info", "placement-not-checked", PLACEMENT_NOT_CONFIGURED)
    ]
    assert not [f for f in findings if f["severity"] == "blocker"]
    assert code == 0


def test_sync_table_shows_the_section_name(
    classic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "[placement_database]" must not be swallowed as rich markup.
    assert main(["--config-file", str(classic), "sync"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "[placement_database]/connection is not set" in out


def test_sync_skips_placement_by_the_one_predicate(classic: Path) -> None:
    settings = load_settings([str(classic)])
    placement = sync(settings).databases[-1]
    assert (placement.name, placement.skipped) == ("placement", PLACEMENT_NOT_CONFIGURED)
    with pytest.raises(PlacementNotConfigured):
        sync(settings, "placement")


PLACEMENT_MIGRATIONS = {m.name for m in MIGRATIONS if m.database == "placement"}


@pytest.mark.parametrize("how", ["fallback", "named"])
def test_online_migrate_never_runs_placement_on_the_api_database(classic: Path, how: str) -> None:
    base = load_settings([str(classic)])
    if how == "named":  # --placement-database set explicitly to the API URL
        settings = load_settings([str(classic)], placement_database=base.api)
        assert settings.placement_configured
    else:
        settings = base
    assert settings.placement_shares_api()
    events: list[Event] = []

    result = online_migrate(settings, progress=events.append)

    assert PLACEMENT_MIGRATIONS  # there are some to skip
    assert [m.name for m in result.migrations if m.database == "placement"] == []
    assert result.exit_code == 0 and not result.failed
    assert [e.message for e in events if e.kind == "warning"][:1] == [
        PLACEMENT_NOT_CONFIGURED if how == "fallback" else
        "Placement shares the API database; skipping Placement's migrations (Placement "
        "needs a database of its own: set [placement_database]/connection)"
    ]  # fmt: skip
    error = PlacementNotConfigured if how == "fallback" else BadInput
    with pytest.raises(error):
        online_migrate(settings, database="placement")


@pytest.mark.parametrize(
    "operation",
    [
        ["placement-audit"],
        ["heal-allocations", "--dry-run"],
        ["sync-aggregates", "--dry-run"],
        ["rebuild-placement", "--dry-run"],
    ],
)
def test_refused_before_any_database_is_opened(
    tmp_path: Path, operation: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """No connection is needed to know Placement is not configured: Nova's databases are
    not even opened (here they do not exist), so the answer is 78, not 3."""
    missing = [
        f"--database=sqlite:///{tmp_path / 'absent.sqlite'}",
        f"--api-database=sqlite:///{tmp_path / 'absent_api.sqlite'}",
    ]
    assert main([*missing, *operation]) == 78
    assert capsys.readouterr().err == ONE_LINE
    assert list(tmp_path.iterdir()) == []
