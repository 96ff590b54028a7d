"""The ``novadb`` command run in-process: exit codes, stdout/stderr, confirmations."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from novadb import connections
from novadb.cli.main import main
from novadb.config import load_settings
from novadb.schema import revisions
from novadb.schema.sync import sync
from sqlalchemy.engine import make_url

HEADS = {env: revisions.head(env) for env in ("api", "main", "placement")}
SQLITE_FILES = ("nova_api.sqlite", "nova.sqlite", "placement.sqlite")


@pytest.fixture(scope="session")
def synced_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three default SQLite databases at head, built once and copied per test."""
    directory = tmp_path_factory.mktemp("synced")
    sync(
        load_settings(
            database=f"sqlite:///{directory / 'nova.sqlite'}",
            api_database=f"sqlite:///{directory / 'nova_api.sqlite'}",
            placement_database=f"sqlite:///{directory / 'placement.sqlite'}",
        )
    )
    return directory


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, etc_nova: Path) -> Path:
    """An empty working directory: the fake /etc/nova/nova.conf's SQLite files land here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return tmp_path


@pytest.fixture
def synced(cwd: Path, synced_template: Path) -> Path:
    """The working directory with Nova's databases at head."""
    for name in SQLITE_FILES:
        shutil.copy(synced_template / name, cwd / name)
    return cwd


@pytest.fixture
def no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connection-refused retries without the back-off sleeps."""
    retrying = connections._connect_once.retry  # pyright: ignore[reportFunctionMemberAccess]
    monkeypatch.setattr(retrying, "sleep", lambda _seconds: None)


@pytest.fixture
def stdin_not_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    # Even a "y" waiting on a pipe must not count as a confirmation.
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def only_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert err.endswith("\n")
    return lines[0]


# -- sync and version ----------------------------------------------------------------


def test_sync_then_version_json(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync"]) == 0
    out, err = capsys.readouterr()
    assert "sync" in out
    assert err == ""
    assert {p.name for p in cwd.glob("*.sqlite")} == set(SQLITE_FILES)

    assert main(["--json", "version"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)

    assert [(d["name"], d["environment"]) for d in result["databases"]] == [
        ("api", "api"),
        ("main", "main"),
        ("placement", "placement"),
    ]
    for database in result["databases"]:
        assert database["current"] == database["head"] == HEADS[database["environment"]]
        assert database["pending"] == 0
    assert result["databases"][1]["url"] == "sqlite:///nova.sqlite"
    assert err == ""


def test_json_sync_reports_applied_revisions(
    cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--json", "sync", "--database", "api"]) == 0
    result = json.loads(capsys.readouterr().out)

    [api] = result["databases"]
    assert api["name"] == "api"
    assert api["before"] is None
    assert api["after"] == HEADS["api"]
    assert api["applied"] == list(revisions.chain("api"))
    # Only the API database was asked for.
    assert not (cwd / "placement.sqlite").exists()

    assert main(["--json", "sync", "--database", "api"]) == 0
    [again] = json.loads(capsys.readouterr().out)["databases"]
    assert again["before"] == again["after"] == HEADS["api"]
    assert again["applied"] == []


def test_version_before_sync_says_the_file_is_missing(
    cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["version"]) == 3
    out, err = capsys.readouterr()

    assert out == ""
    assert only_error_line(err) == (
        "novadb: error: SQLite database nova_api.sqlite does not exist; "
        "run `novadb sync` first or check the URL"
    )
    assert list(cwd.iterdir()) == []


def test_unknown_release_is_one_line_exit_2(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "--release", "nope"]) == 2
    out, err = capsys.readouterr()

    assert out == ""
    line = only_error_line(err)
    assert line.startswith("novadb: error: unknown release 'nope'")
    assert "caracal (2024.1)" in line
    # Validated before anything was opened or created.
    assert list(cwd.iterdir()) == []


def test_errors_stay_off_stdout_with_json(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "sync", "--release", "nope"]) == 2
    out, err = capsys.readouterr()

    assert out == ""
    assert only_error_line(err).startswith("novadb: error: unknown release 'nope'")


def test_revision_needs_a_single_database(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "--revision", "abc"]) == 2
    out, err = capsys.readouterr()

    assert out == ""
    assert only_error_line(err) == (
        "novadb: error: --revision needs --database api, main or placement"
    )
    assert list(cwd.iterdir()) == []


def test_unknown_revision_names_the_chain(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "--database", "main", "--revision", "abc"]) == 2
    line = only_error_line(capsys.readouterr().err)

    chain = revisions.chain("main")
    assert line == (
        f"novadb: error: unknown main revision 'abc'; the main chain runs from {chain[0]} "
        f"to {chain[-1]}; nothing was changed"
    )


def test_bad_choice_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sync", "--database", "cell1"])

    assert info.value.code == 2
    line = only_error_line(capsys.readouterr().err)
    assert line.startswith("novadb: error: argument --database: invalid choice: 'cell1'")
    assert line.endswith("(see `novadb sync --help`)")


# -- MariaDB credentials never shown ----------------------------------------------------


def wrong_password_url(mysql_url_base: str) -> str:
    url = make_url(mysql_url_base).set(password="topsecret", database="x")
    return url.render_as_string(hide_password=False)


def test_wrong_mysql_password_exit_3_and_masked(
    cwd: Path, mysql_url_base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = wrong_password_url(mysql_url_base)

    assert main(["--database", url, "version", "--database", "main"]) == 3
    out, err = capsys.readouterr()

    assert "topsecret" not in out
    assert "topsecret" not in err
    line = only_error_line(err)
    masked = make_url(url).render_as_string(hide_password=True)
    assert ":***@" in masked
    assert line.startswith(f"novadb: error: cannot connect to {masked}: ")
    assert "Access denied" in line
    assert line.endswith("check the user and password in the connection URL")


def test_wrong_mysql_password_after_the_api_database(
    synced: Path, mysql_url_base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = wrong_password_url(mysql_url_base)

    api = "sqlite:///nova_api.sqlite"
    assert main(["--json", "--database", url, "--api-database", api, "version"]) == 3
    out, err = capsys.readouterr()

    assert out == ""
    assert "topsecret" not in err
    assert "Access denied" in only_error_line(err)


# -- null-instance-uuid-scan -------------------------------------------------------------


INSERT_METADATA = sa.text(
    "INSERT INTO instance_metadata (created_at, key, value, instance_uuid, deleted) "
    "VALUES (NULL, :key, :value, :instance_uuid, 0)"
)


def add_null_uuid_row(directory: Path) -> None:
    """One instance_metadata row with a NULL instance_uuid ('k'), one with a uuid ('k2')."""
    engine = sa.create_engine(f"sqlite:///{directory / 'nova.sqlite'}")
    try:
        with engine.begin() as conn:
            conn.execute(INSERT_METADATA, {"key": "k", "value": "v", "instance_uuid": None})
            conn.execute(
                INSERT_METADATA,
                {
                    "key": "k2",
                    "value": "v2",
                    "instance_uuid": "b3a9f3f0-4c8f-4f5e-9d1d-6f1e0c5b7a10",
                },
            )
    finally:
        engine.dispose()


def metadata_keys(directory: Path) -> list[str]:
    engine = sa.create_engine(f"sqlite:///{directory / 'nova.sqlite'}")
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(sa.text("SELECT key FROM instance_metadata ORDER BY id")).scalars()
            )
    finally:
        engine.dispose()


def test_scan_lists_rows_and_exits_1(synced: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_null_uuid_row(synced)

    assert main(["null-instance-uuid-scan"]) == 1
    out = capsys.readouterr().out

    assert "rows with NULL instance uuid" in out
    assert "\nmain      instance_metadata     1\n" in out, out  # plain lines off a terminal
    assert metadata_keys(synced) == ["k", "k2"]


def test_scan_json(synced: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_null_uuid_row(synced)

    assert main(["--json", "null-instance-uuid-scan"]) == 1
    result = json.loads(capsys.readouterr().out)

    assert result["deleted"] is False
    assert [(d["name"], d["rows"]) for d in result["databases"]] == [
        ("main", {"instance_metadata": 1})
    ]


def test_scan_clean_database_exits_0(synced: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "null-instance-uuid-scan", "--delete"]) == 0
    result = json.loads(capsys.readouterr().out)

    assert result["databases"][0]["rows"] == {}
    assert result["deleted"] is False


def test_delete_without_confirmation_deletes_nothing(
    synced: Path, stdin_not_a_tty: None, capsys: pytest.CaptureFixture[str]
) -> None:
    add_null_uuid_row(synced)

    assert main(["null-instance-uuid-scan", "--delete"]) == 1
    out, err = capsys.readouterr()

    assert only_error_line(err) == (
        "novadb: error: not confirmed; nothing was deleted (pass --yes to skip the question)"
    )
    assert "rows deleted" not in out
    assert metadata_keys(synced) == ["k", "k2"]


def test_delete_with_yes(
    synced: Path, stdin_not_a_tty: None, capsys: pytest.CaptureFixture[str]
) -> None:
    add_null_uuid_row(synced)

    assert main(["null-instance-uuid-scan", "--delete", "--yes"]) == 0
    out = capsys.readouterr().out

    assert "rows deleted" in out
    assert "\nmain      instance_metadata     1\n" in out, out  # plain lines off a terminal
    assert metadata_keys(synced) == ["k2"]
    assert main(["null-instance-uuid-scan"]) == 0


@pytest.mark.parametrize(
    ("answer", "code", "left"), [("n\n", 1, ["k", "k2"]), ("yes\n", 0, ["k2"])]
)
def test_delete_asks_on_a_tty(
    synced: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answer: str,
    code: int,
    left: list[str],
) -> None:
    add_null_uuid_row(synced)
    monkeypatch.setattr("sys.stdin", FakeTty(answer))

    assert main(["null-instance-uuid-scan", "--delete"]) == code
    out = capsys.readouterr().out

    assert "Delete 1 row(s) with a NULL instance uuid? [y/N]" in out
    assert metadata_keys(synced) == left


# -- help ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "example"),
    [
        ("sync", "novadb sync --release 2024.1"),
        ("version", "novadb --json version"),
        ("null-instance-uuid-scan", "novadb null-instance-uuid-scan --delete --yes"),
        ("demo", "novadb demo --dir ./cloud"),
    ],
)
def test_operation_help_has_examples(
    operation: str, example: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([operation, "--help"])

    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: novadb {operation}")
    assert "\nexamples:\n" in out
    assert example in out


def test_global_help_lists_operations(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])

    assert info.value.code == 0
    out = capsys.readouterr().out
    for operation in ("sync", "version", "null-instance-uuid-scan", "demo"):
        assert operation in out
    assert "\nexamples:\n" in out


# -- sync --sql ------------------------------------------------------------------------------


def test_sql_renders_ddl_for_an_unreachable_database(
    cwd: Path, no_retry_wait: None, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "mysql+pymysql://root:pw@127.0.0.1:1/nova"

    assert main(["--database", url, "sync", "--database", "main", "--sql"]) == 0
    out, err = capsys.readouterr()

    assert out.startswith(
        "-- novadb sync --sql: main (mysql+pymysql://root:***@127.0.0.1:1/nova) empty -> "
        f"{HEADS['main']}\n"
    )
    assert "CREATE TABLE instances (" in out
    assert "ALTER DATABASE nova DEFAULT CHARACTER SET utf8" in out
    assert "pw@" not in out
    assert "pw@" not in err
    # Nothing was created to render it.
    assert list(cwd.iterdir()) == []


def test_sql_on_sqlite_refuses_cleanly(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "--sql"]) == 2
    out, err = capsys.readouterr()

    line = only_error_line(err)
    assert line.startswith("novadb: error: cannot render api's DDL offline (")
    assert line.endswith("; run sync without --sql")
    assert list(cwd.iterdir()) == []


def test_bad_port_is_a_config_error(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "mysql+pymysql://nova:s3cret@db:33o6/nova"
    code = main(["--database", url, "version", "--database", "main"])
    err = capsys.readouterr().err

    assert code == 1
    assert "not a database URL: mysql+pymysql://nova:***@db:33o6/nova" in err
