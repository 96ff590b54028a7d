"""The fault model's pieces without a server: error classes, lock names, URLs, inputs, budgets."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pymysql
import pytest
from novadb import dberrors
from novadb.batching import MIN_BUDGET, Adaptation, Faults, GaveUp, Shrink, StopWhen
from novadb.cli.main import main
from novadb.config import load_settings
from novadb.connections import mask, parse_url, scrub
from novadb.errors import ConfigError
from novadb.locking import lock_key
from sqlalchemy.exc import InterfaceError, OperationalError


def _error(number: int, text: str, cls: type = OperationalError) -> OperationalError:
    return cls("SELECT 1", {}, pymysql.err.OperationalError(number, text))


# -- classification ------------------------------------------------------------------------


def test_1105_is_too_big_only_in_its_write_set_form() -> None:
    assert dberrors.is_too_big(_error(1105, "Maximum writeset size exceeded"))
    assert not dberrors.is_too_big(_error(1105, "Unknown error"))
    assert dberrors.is_too_big(_error(1180, "wsrep_max_ws_rows exceeded"))


def test_lost_connections_in_every_form() -> None:
    assert dberrors.is_lost_connection(_error(2013, "Lost connection to MySQL server"))
    assert dberrors.is_lost_connection(_error(2006, "MySQL server has gone away (BrokenPipe)"))
    assert dberrors.is_lost_connection(_error(2003, "Can't connect to MySQL server"))
    reused = InterfaceError("SELECT 1", {}, pymysql.err.InterfaceError(0, ""))
    assert dberrors.is_lost_connection(reused)
    assert not dberrors.is_lost_connection(_error(1213, "Deadlock found"))


def test_privilege_problem_names_user_command_and_table() -> None:
    exc = _error(
        1142,
        "INSERT command denied to user 'nova'@'10.0.0.5' for table `nova`.`shadow_instances`",
    )
    assert (
        dberrors.privilege_problem(exc)
        == "user 'nova'@'10.0.0.5' lacks INSERT on shadow_instances"
    )
    assert dberrors.privilege_problem(_error(1213, "Deadlock")) is None


# -- the retry budget --------------------------------------------------------------------


def test_conflicts_are_retried_past_ten_attempts_within_the_budget() -> None:
    counts = Adaptation()
    faults = Faults(StopWhen(), counts, conflict_budget=30)
    calls = []

    def work() -> str:
        calls.append(1)
        if len(calls) < 14:
            raise _error(1213, "Deadlock found when trying to get lock")
        return "done"

    faults.stop = StopWhen()
    # No waiting in a unit test: the budget is what is being checked, not the pauses.
    faults.stop.sleep = lambda _s: None  # type: ignore[method-assign]
    assert faults.call(work) == "done"
    assert (len(calls), counts.retries, counts.reconnects) == (14, 13, 0)


def test_the_third_conflict_in_a_row_asks_for_a_smaller_batch() -> None:
    stop = StopWhen()
    stop.sleep = lambda _s: None  # type: ignore[method-assign]
    faults = Faults(stop, Adaptation())

    def work() -> None:
        raise _error(1213, "Deadlock found")

    with pytest.raises(Shrink):
        faults.call(work, shrinkable=True)


def test_a_spent_budget_gives_up_with_what_happened() -> None:
    stop = StopWhen(deadline=time.monotonic())  # --max-runtime already spent
    counts = Adaptation()
    faults = Faults(stop, counts, reconnect_budget=60)

    def work() -> None:
        raise _error(2003, "Can't connect to MySQL server on '10.0.0.9'")

    started = time.monotonic()
    with pytest.raises(GaveUp) as info:
        faults.call(work)
    # Never much longer than the deadline allows, but more than one attempt all the same.
    assert time.monotonic() - started < MIN_BUDGET + 1
    assert info.value.kind == "lost"
    assert counts.reconnects >= 1 and info.value.attempts == counts.reconnects + 1
    assert info.value.describe().startswith("the server was unreachable for ")


def test_ctrl_c_while_retrying_gives_up_at_once() -> None:
    event = threading.Event()
    faults = Faults(StopWhen(event=event), Adaptation())

    def work() -> None:
        event.set()
        raise _error(1213, "Deadlock found")

    with pytest.raises(GaveUp) as info:
        faults.call(work)
    assert info.value.kind == "interrupted"


# -- lock names ------------------------------------------------------------------------------


def test_lock_names_never_share_a_prefix_cut() -> None:
    common = "nova_cell_region_one_availability_zone_long_prefix"  # 51 characters
    a, b = lock_key("archive", f"{common}_cell_a"), lock_key("archive", f"{common}_cell_b")
    assert a != b
    assert len(a) <= 64 and len(b) <= 64
    assert lock_key("archive", "nova") == lock_key("archive", "nova")
    assert lock_key("archive", "nova") != lock_key("purge", "nova")


# -- URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql://nova:p@ssSECRET@127.0.0.1/nova",
        "mysql+pymysql://nova:pa/ssSECRET@127.0.0.1:3306/nova?charset=utf8",
        "mysql+pymysql://nova:p:a?ssSECRET@db/nova",
        "mysql+pymysql://nova:p%40ssSECRET@db/nova",
    ],
)
def test_no_part_of_a_password_shows(url: str) -> None:
    parsed = parse_url(url)
    assert "SECRET" in str(parsed.password)
    assert parsed.database == "nova"
    assert "SECRET" not in mask(url)
    assert "SECRET" not in mask(parsed)
    assert ":***@" in mask(url)
    assert scrub(f"login failed for {parsed.password}", url) == "login failed for ***"


def test_an_at_sign_in_the_password_is_the_password() -> None:
    parsed = parse_url("mysql+pymysql://nova:p@ssSECRET@127.0.0.1:3307/nova")
    assert (parsed.host, parsed.port, parsed.password) == ("127.0.0.1", 3307, "p@ssSECRET")
    assert str(parse_url("sqlite:////tmp/a@b/nova.sqlite").database) == "/tmp/a@b/nova.sqlite"


def test_wrong_password_with_an_at_sign_never_shows_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        ["--database", "mysql+pymysql://nova:p@ssSECRET@127.0.0.1:1/nova", "version",
         "--database", "main"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 3
    assert "SECRET" not in out + err
    assert err.startswith("novadb: error: cannot connect to mysql+pymysql://nova:***@127.0.0.1:1/")


# -- inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sleep", "inf"], "--sleep must be zero or a positive number of seconds"),
        (["--sleep", "nan"], "--sleep must be zero or a positive number of seconds"),
        (["--max-runtime", "nan"], "--max-runtime must be a positive number of seconds"),
        (["--max-runtime", "inf"], "--max-runtime must be a positive number of seconds"),
    ],
)
def test_non_finite_numbers_exit_2(
    sqlite_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["archive", *args])
    out, err = capsys.readouterr()
    assert (code, out, err) == (2, "", f"novadb: error: {message}\n")


def _unreadable(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """``path`` cannot be opened, as a nova.conf readable only by root is for another user.

    (The tests run as root, for whom chmod does not make a file unreadable.)
    """
    opener = Path.open

    def refuse(self: Path, *args: object, **kwargs: object):  # noqa: ANN202
        if self == path:
            raise PermissionError(13, "Permission denied", str(path))
        return opener(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", refuse)


def test_an_unreadable_config_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "nova.conf"
    secret.write_text("[database]\nconnection = sqlite:///secret.sqlite\n")
    other = tmp_path / "other.conf"
    other.write_text("[database]\nconnection = sqlite:///other.sqlite\n")
    _unreadable(monkeypatch, secret)

    with pytest.raises(ConfigError) as info:
        load_settings([str(secret), str(other)])
    assert str(info.value) == (
        f"config file {secret} cannot be read: Permission denied; check its permissions "
        "(or run as a user that may read it)"
    )
    assert info.value.exit_code == 1
    # Alone, it is not mistaken for a file that does not set the connection.
    code = main(["--config-file", str(secret), "archive"])
    assert code == 1
    assert "cannot be read: Permission denied" in capsys.readouterr().err
