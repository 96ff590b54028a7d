"""Where the charm's database credentials come from: shared-db, a user secret, or nova.conf.

In a charmed OpenStack model nova-cloud-controller gets its databases over the
``shared-db`` relation (interface ``mysql-shared``) from its mysql-router
subordinate, speaking the protocol the classic charm speaks:

- the unit asks, on its own side of the relation, for one database per
  prefix: ``<prefix>_database``, ``<prefix>_username`` and
  ``<prefix>_hostname`` for ``nova``, ``novaapi`` and ``novacell0`` (and
  ``placement`` for the Placement operations, unless turned off; see
  :class:`Requested`);
- the provider answers with ``db_host`` (and ``db_port`` where it has one),
  ``<prefix>_password`` and ``<prefix>_allowed_units``, the units (space
  separated) that may connect with it.

A unit uses an answer only once its own name is in every prefix's
``allowed_units``: before that the grants may not exist yet.

Precedence: the relation, then the ``database-secret`` user secret, then
``nova-conf``.  The first source that is complete wins; a relation still
waiting for its grants is reported (status *waiting*) when no other source
is there.  Nothing here talks to ops or a database: the charm passes in what
it read, so every rule is tested on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from novadb.config import Settings, load_settings
from novadb.errors import ConfigError
from sqlalchemy.engine import URL

RELATION = "shared-db"


class WaitingForDatabase(ConfigError):
    """The relation is there but its grants are not (yet): wait, do not block."""


@dataclass(frozen=True)
class Requested:
    """What this unit asks shared-db for: prefix -> (database, username).

    With the defaults these are the classic charm's: ``nova``, ``nova_api`` and
    ``nova_cell0`` for user ``nova``, and ``placement`` (for the Placement
    operations; an empty ``placement_database`` asks for none).
    """

    database: str = "nova"
    username: str = "nova"
    placement_database: str = "placement"

    @property
    def prefixes(self) -> dict[str, tuple[str, str]]:
        """Each prefix's database and user."""
        out = {
            "nova": (self.database, self.username),
            "novaapi": (f"{self.database}_api", self.username),
            "novacell0": (f"{self.database}_cell0", self.username),
        }
        if self.placement_database:
            out["placement"] = (self.placement_database, self.username)
        return out


def shared_db_request(hostname: str, requested: Requested) -> dict[str, str]:
    """What this unit writes on its side of the relation."""
    request: dict[str, str] = {}
    for prefix, (database, username) in requested.prefixes.items():
        request[f"{prefix}_database"] = database
        request[f"{prefix}_username"] = username
        request[f"{prefix}_hostname"] = hostname
    return request


@dataclass(frozen=True)
class SharedDbAnswer:
    """The provider's answer: URLs for the three options, or what is still missing."""

    urls: dict[str, str | None] | None
    waiting: str | None


def read_shared_db(
    answers: list[Mapping[str, str]], unit: str, requested: Requested
) -> SharedDbAnswer:
    """Read the remote side(s) of the relation (one mapping per remote unit or app).

    The provider is usually the one mysql-router unit beside this one; the
    first answer that names a host is used.
    """
    data = next((a for a in answers if a.get("db_host")), None)
    if data is None:
        return SharedDbAnswer(None, "shared-db: waiting for the database host")
    missing = []
    prefixes = requested.prefixes
    for prefix in prefixes:
        allowed = (data.get(f"{prefix}_allowed_units") or "").split()
        if not data.get(f"{prefix}_password") or unit not in allowed:
            missing.append(prefix)
    if missing:
        return SharedDbAnswer(
            None, f"shared-db: waiting for access to {', '.join(missing)} for {unit}"
        )
    host = data["db_host"]
    port = int(data["db_port"]) if data.get("db_port", "").isdigit() else None

    def url(prefix: str) -> str:
        database, username = prefixes[prefix]
        return URL.create(
            "mysql+pymysql",
            username=username,
            password=data[f"{prefix}_password"],
            host=host,
            port=port,
            database=database,
        ).render_as_string(hide_password=False)

    return SharedDbAnswer(
        {
            "database": url("nova"),
            "api_database": url("novaapi"),
            "placement_database": url("placement") if "placement" in prefixes else None,
        },
        None,
    )


@dataclass(frozen=True)
class Credentials:
    """The settings operations run with, and the source they came from (for status)."""

    settings: Settings
    source: str


def resolve(
    shared_db: SharedDbAnswer | None,
    secret: Mapping[str, str] | None,
    nova_conf: str,
) -> Credentials:
    """Pick the first complete source: shared-db, then the secret, then nova.conf.

    ``shared_db`` is None without the relation; ``secret`` is the user
    secret's content, None when ``database-secret`` is not set.
    """
    if shared_db is not None and shared_db.urls is not None:
        return Credentials(load_settings([], **shared_db.urls), RELATION)
    conf = [nova_conf] if Path(nova_conf).is_file() else []
    if secret is not None:
        urls = {
            "database": secret.get("connection"),
            "api_database": secret.get("api-connection"),
            "placement_database": secret.get("placement-connection"),
        }
        if conf or (urls["database"] and urls["api_database"]):
            return Credentials(load_settings(conf, **urls), "database-secret")
    if conf:
        return Credentials(load_settings(conf), "nova.conf")
    if shared_db is not None and shared_db.waiting is not None:
        raise WaitingForDatabase(shared_db.waiting)
    raise ConfigError(
        "no database configured: relate the application to mysql-router (shared-db), "
        f"or set database-secret, or provide {nova_conf}"
    )
