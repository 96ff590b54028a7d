"""Engines for Nova's databases, opened with safe settings and masked in output.

Every URL shown to a person goes through :func:`mask`.  MySQL sessions run with
``sql_mode=TRADITIONAL`` (Nova's default, so bad data fails instead of being
truncated) and a utf8mb4 client charset; pool pre-ping drops dead connections,
and a connection refused at start-up is retried a few times, because a MySQL
router or a Galera node restarting is routine in the clouds we serve.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from novadb.dberrors import errno
from novadb.errors import ConfigError, DatabaseUnreachable

# Client errors that mean "the server is not there (yet)": retried at connect.
_TRANSIENT_CONNECT = {2002, 2003, 2006, 2013}
_ACCESS_DENIED = {1044, 1045, 1698}
_UNKNOWN_DATABASE = 1049


def _credentials(url: str) -> tuple[str, str, str | None, str] | None:
    """``(scheme, user, password, rest)`` of a URL with credentials, split as a person means it.

    The credentials end at the *last* ``@`` (a host never holds one), and the
    password runs from the first ``:`` after the user to there, so a password
    with an unencoded ``@``, ``/``, ``?`` or ``:`` is still the password.
    SQLAlchemy's parser stops at the first ``@`` instead and takes the rest of
    the password for the host, which then shows up in errors.  (An ``@`` in
    the query string must be written ``%40``.)
    """
    head, sep, rest = url.partition("://")
    if not sep or rest.startswith("/") or "@" not in rest:
        return None
    creds, _, tail = rest.rpartition("@")
    user, colon, password = creds.partition(":")
    return head, user, password if colon else None, tail


def parse_url(url: str | URL) -> URL:
    """Parse a database URL, or fail with a ConfigError that shows it masked."""
    if isinstance(url, URL):
        return url
    split = _credentials(url)
    text = url
    if split is not None:
        head, user, password, tail = split
        if password is not None:
            # Percent-encode whatever the password holds, keeping what was encoded.
            password = quote(unquote(password), safe="")
            text = f"{head}://{user}:{password}@{tail}"
    try:
        return make_url(text)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise ConfigError(f"not a database URL: {mask(url)}") from exc


def mask(url: str | URL) -> str:
    """Render a URL with its password replaced by ``***``.

    A string is masked as text, up to its last ``@``, so no part of a password
    shows whatever it holds (or when the URL does not parse).
    """
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    split = _credentials(url)
    if split is None:
        return url
    head, user, password, tail = split
    masked = f"{user}:***" if password is not None else user
    return f"{head}://{masked}@{tail}"


def scrub(text: str, *urls: str | URL) -> str:
    """``text`` (a server's or driver's message) with the passwords of ``urls`` masked."""
    for url in urls:
        try:
            password = parse_url(url).password
        except ConfigError:
            continue
        if password:
            text = text.replace(str(password), "***")
    return text


def is_sqlite(url: URL) -> bool:
    """True for SQLite URLs (the embedded default)."""
    return url.get_backend_name() == "sqlite"


def sqlite_path(url: URL) -> Path | None:
    """The file behind a SQLite URL, or None for an in-memory database."""
    if not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def same_database(a: str, b: str) -> bool:
    """True when two URLs name the same database (SQLite: the same file)."""
    ua, ub = parse_url(a), parse_url(b)
    if is_sqlite(ua) and is_sqlite(ub):
        pa, pb = sqlite_path(ua), sqlite_path(ub)
        return pa is not None and pb is not None and pa.resolve() == pb.resolve()
    return ua.render_as_string(hide_password=False) == ub.render_as_string(hide_password=False)


def _on_mysql_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET SESSION sql_mode = 'TRADITIONAL'")
    finally:
        cursor.close()


def allow_zero_ids(conn: sa.Connection) -> str:
    """Add ``NO_AUTO_VALUE_ON_ZERO`` to the session's sql_mode; return the mode it replaced.

    Placement's resource class VCPU has id 0, which MySQL otherwise replaces
    with the next AUTO_INCREMENT value.  The one place novadb toggles it;
    :func:`restore_sql_mode` puts the returned mode back.
    """
    mode = str(conn.execute(sa.text("SELECT @@SESSION.sql_mode")).scalar() or "")
    conn.execute(
        sa.text(
            "SET SESSION sql_mode = "
            "CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'NO_AUTO_VALUE_ON_ZERO')"
        )
    )
    return mode


def restore_sql_mode(conn: sa.Connection, mode: str) -> None:
    """Put back the sql_mode :func:`allow_zero_ids` returned."""
    conn.execute(sa.text("SET SESSION sql_mode = :mode"), {"mode": mode})


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Wait for a concurrent writer instead of failing at once with "locked".
    dbapi_connection.execute("PRAGMA busy_timeout = 30000")


def create_engine(url: str | URL, *, create: bool = False) -> Engine:
    """Open an engine for ``url`` and check that it answers.

    ``create`` allows a missing SQLite file to be created (``sync``); every
    other operation refuses a missing file rather than silently working on a
    new, empty database.
    """
    parsed = parse_url(url)
    if is_sqlite(parsed):
        path = sqlite_path(parsed)
        if path is not None and not create and not path.exists():
            raise DatabaseUnreachable(_missing_sqlite(path))
        if path is not None and create:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed)
        event.listen(engine, "connect", _on_sqlite_connect)
    else:
        if parsed.get_backend_name() == "mysql" and "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        try:
            engine = sa.create_engine(parsed, pool_pre_ping=True, pool_recycle=3600)
        except (NoSuchModuleError, ImportError) as exc:
            raise ConfigError(f"unsupported database URL {mask(parsed)}: {exc}") from exc
        if engine.dialect.name == "mysql":
            event.listen(engine, "connect", _on_mysql_connect)
    _check_connect(engine, mask(url if isinstance(url, str) else parsed))
    return engine


@contextmanager
def engine_for(url: str | URL, *, create: bool = False) -> Iterator[Engine]:
    """An engine for one piece of work, disposed afterwards so no connection lingers."""
    engine = create_engine(url, create=create)
    try:
        yield engine
    finally:
        engine.dispose()


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and errno(exc) in _TRANSIENT_CONNECT


@retry(
    retry=retry_if_exception(_is_transient),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.5, max=4),
    reraise=True,
)
def _connect_once(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def _cannot_connect(exc: DBAPIError, where: str, url: str | URL) -> str:
    """The one line for a failed connect: where, the server's words, and what to check."""
    number = errno(exc)
    if number in _ACCESS_DENIED:
        hint = "check the user and password in the connection URL"
    elif number == _UNKNOWN_DATABASE:
        hint = "the database does not exist; create it first"
    elif number in _TRANSIENT_CONNECT:
        hint = "is the server running and reachable?"
    else:
        hint = "check the connection URL"
    detail = scrub(str(getattr(exc, "orig", exc)).splitlines()[0], url)
    return f"cannot connect to {where}: {detail}; {hint}"


def _missing_sqlite(path: Path) -> str:
    return f"SQLite database {path} does not exist; run `novadb sync` first or check the URL"


def _check_connect(engine: Engine, where: str) -> None:
    try:
        _connect_once(engine)
    except DBAPIError as exc:
        engine.dispose()
        raise DatabaseUnreachable(_cannot_connect(exc, where, engine.url)) from exc


def probe(url: str | URL, timeout: float = 3.0) -> str | None:
    """One bounded attempt to reach ``url``: None when it answers, else the one-line reason.

    For callers that must stay quick when a server is down (the charm's status
    after every hook): no retries, and at most ``timeout`` seconds to connect.
    """
    parsed = parse_url(url)
    if is_sqlite(parsed):
        path = sqlite_path(parsed)
        if path is not None and not path.exists():
            return _missing_sqlite(path)
        return None
    # connect_timeout bounds the TCP connect; read_timeout the handshake and SELECT 1
    # (a server that accepts and then says nothing, as a hung node does).
    seconds = max(1, int(timeout))
    args = (
        {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
        if parsed.get_backend_name() == "mysql"
        else {}
    )
    try:
        engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool, connect_args=args)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        return f"unsupported database URL {mask(parsed)}: {exc}"
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except DBAPIError as exc:
        return _cannot_connect(exc, mask(url if isinstance(url, str) else parsed), parsed)
    finally:
        engine.dispose()
    return None
