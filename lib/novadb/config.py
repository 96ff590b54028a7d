"""Read nova.conf the way nova-manage does, for the options novadb needs.

Where: ``--config-file`` (repeatable) then ``--config-dir``'s ``*.conf`` sorted
by name; with neither (and no URL option), nova-manage's defaults,
``/etc/nova/nova.conf`` and ``/etc/nova/nova.conf.d/*.conf`` when they exist.
With nothing at all, novadb refuses with one line rather than guessing: there
is no SQLite default, a SQLite database is used only where a URL names it.

Why configparser and not oslo.config: only the three ``connection`` options and
a handful of ``[DEFAULT]``/``[placement]`` values matter here, and oslo.config
would bring oslo.i18n, debtcollector, netaddr, stevedore and more into every
environment the library is installed in (the charm's venv, beside other
software).  The differences that matter for a ``connection`` value are matched:

- no ``%`` interpolation: a ``%`` in a password is literal, as oslo.config's
  own ini parser reads it (configparser's default would fail or mangle it);
- ``[DEFAULT]`` is an ordinary section, never copied into the others;
- several files: a later file wins, option by option; a section that appears
  in several files (or twice in one) is merged the same way;
- ``--config-dir``: ``*.conf`` only, in sorted order, after the files.

Not matched: oslo.config's ``$option`` substitution (``$$`` for a literal ``$``).
A ``$`` in a connection value is taken literally here; nova-manage would try to
substitute it, so such a nova.conf does not work with Nova either.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass, field
from pathlib import Path

from novadb.connections import same_database
from novadb.errors import ConfigError, PlacementNotConfigured

# Where nova-manage's default files are looked for (``etc/nova/`` under it);
# tests point it at a fake root.
NOVA_MANAGE_ROOT = Path("/")

NO_CONFIGURATION = (
    "no configuration: /etc/nova/nova.conf does not exist; pass --config-file FILE, "
    "--config-dir DIR or --database/--api-database URLs (or try `novadb demo`)"
)

_SECTION = {"main": "database", "api": "api_database", "placement": "placement_database"}
_FLAG = {"main": "--database", "api": "--api-database", "placement": "--placement-database"}


@dataclass(frozen=True)
class Settings:
    """Where each database lives, and the few other options operations read.

    A URL is ``None`` when config files were given but do not set it; asking
    for it then fails with a message naming the option to set.
    ``placement_is_api`` is true when Placement's URL came from the
    ``[api_database]`` fallback rather than being set on its own: then
    Placement's database is *not configured* (:meth:`placement_url` refuses).
    Sharing the API database on purpose (the same URL given for both) is
    configured, and :meth:`placement_shares_api` says so.
    """

    main: str | None
    api: str | None
    placement: str | None
    placement_is_api: bool = False
    sources: tuple[str, ...] = ()
    options: dict[tuple[str, str], str] = field(default_factory=dict)

    def url(self, database: str) -> str:
        """URL of ``main``, ``api`` or ``placement``; ConfigError if unset."""
        value = {"main": self.main, "api": self.api, "placement": self.placement}[database]
        if value is None:
            where = f" in {', '.join(self.sources)}" if self.sources else ""
            raise ConfigError(
                f"[{_SECTION[database]}]/connection is not set{where}; "
                f"set it or pass {_FLAG[database]} URL"
            )
        return value

    @property
    def placement_configured(self) -> bool:
        """Placement's database was named ([placement_database] or --placement-database)."""
        return self.placement is not None and not self.placement_is_api

    def placement_url(self) -> str:
        """Placement's URL for the Placement operations; PlacementNotConfigured without one."""
        if not self.placement_configured:
            raise PlacementNotConfigured()
        return self.url("placement")

    def placement_shares_api(self) -> bool:
        """Placement's database is the API database (by the fallback, or named so).

        The one answer to "may Placement's schema be migrated or dropped here?":
        no, when this is true (Nova's API and Placement's Alembic histories
        would share one ``alembic_version``).  ``sync``, ``online-migrate``,
        ``check`` and ``rebuild-placement`` all ask it.
        """
        if self.placement_is_api:
            return True
        if self.placement is None or self.api is None:
            return False
        try:
            return same_database(self.placement, self.api)
        except ConfigError:
            return False

    def option(self, section: str, name: str, default: str | None = None) -> str | None:
        """A raw option value from the config files, or ``default``."""
        return self.options.get((section.lower(), name), default)


def default_config_files(root: Path = Path("/")) -> tuple[list[str], str | None]:
    """nova-manage's defaults under ``root``: ``etc/nova/nova.conf`` and ``etc/nova/nova.conf.d``.

    Each is returned only when it exists (the file as a config file, the
    directory as a config dir); ``root`` is there for tests.
    """
    etc = root / "etc" / "nova"
    files = [str(etc / "nova.conf")] if (etc / "nova.conf").is_file() else []
    directory = str(etc / "nova.conf.d") if (etc / "nova.conf.d").is_dir() else None
    return files, directory


def _read_files(config_files: list[str], config_dir: str | None) -> list[Path]:
    paths = [Path(p) for p in config_files]
    if config_dir is not None:
        directory = Path(config_dir)
        if not directory.is_dir():
            raise ConfigError(f"--config-dir {config_dir}: not a directory")
        paths += sorted(directory.glob("*.conf"))
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"config file {path} not found; check --config-file")
    return paths


def load_settings(
    config_files: list[str] | None = None,
    config_dir: str | None = None,
    *,
    database: str | None = None,
    api_database: str | None = None,
    placement_database: str | None = None,
    defaults_root: Path | str | None = None,
) -> Settings:
    """Resolve the three database URLs.

    Order of precedence for each: the CLI override, then the config files, then
    (placement only) the API database's URL, marked as that fallback.  With no
    config file, no config dir and no URL, the files under ``defaults_root``
    (nova-manage's ``/etc/nova``; pass it to look there); none there is a
    ConfigError that says what to pass.
    """
    given = config_files or config_dir is not None
    given = given or any((database, api_database, placement_database))
    if not given and defaults_root is not None:
        config_files, config_dir = default_config_files(Path(defaults_root))
        if not config_files and config_dir is None:
            raise ConfigError(NO_CONFIGURATION)
    paths = _read_files(config_files or [], config_dir)
    options: dict[tuple[str, str], str] = {}
    for path in paths:
        # [DEFAULT] is read as an ordinary section: oslo.config does not copy its
        # values into other sections the way ConfigParser would.
        parser = configparser.ConfigParser(
            interpolation=None, strict=False, default_section="\x00no-default"
        )
        # ConfigParser.read() skips a file it cannot open without a word, and a
        # later file's database would then be used: nova-manage refuses such a
        # file, and so does novadb.
        try:
            with path.open(encoding="utf-8") as handle:
                parser.read_file(handle, source=str(path))
        except OSError as exc:
            raise ConfigError(
                f"config file {path} cannot be read: {exc.strerror or exc}; check its "
                "permissions (or run as a user that may read it)"
            ) from exc
        except (configparser.Error, UnicodeDecodeError) as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"config file {path} cannot be parsed: {first}") from exc
        for section in parser.sections():
            for name, value in parser.items(section, raw=True):
                options[(section.lower(), name)] = value

    def from_files(db: str) -> str | None:
        value = options.get((_SECTION[db], "connection"))
        return value.strip() or None if value is not None else None

    def resolve(db: str, override: str | None) -> str | None:
        return override or from_files(db)

    main = resolve("main", database)
    api = resolve("api", api_database)
    placement = resolve("placement", placement_database)
    placement_is_api = False
    if placement is None and api is not None:
        placement, placement_is_api = api, True
    return Settings(
        main=main,
        api=api,
        placement=placement,
        placement_is_api=placement_is_api,
        sources=tuple(str(p) for p in paths),
        options=options,
    )


# nova.conf's initial_<kind>_allocation_ratio defaults (Nova since Stein).
INITIAL_ALLOCATION_RATIOS = {"cpu": 4.0, "ram": 1.0, "disk": 1.0}


def _ratio_option(settings: Settings, name: str) -> float | None:
    raw = settings.option("DEFAULT", name)
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        # nova-compute refuses to start on it (oslo.config FloatOpt), so no
        # ratio Nova uses can come from it: say so instead of guessing.
        raise ConfigError(f"[DEFAULT]{name} = {raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"[DEFAULT]{name} = {raw!r} is negative")
    return value


def allocation_ratio(
    settings: Settings, kind: str, stored: float | None = None
) -> tuple[float, str]:
    """Nova's allocation ratio for ``kind`` (cpu, ram, disk), and where it comes from.

    Nova's rule (``ComputeDriver._get_allocation_ratios`` and Stein's
    ``migrate_empty_ratio``): ``[DEFAULT]<kind>_allocation_ratio`` when set and
    not 0.0 overrides everything; else the ``stored`` value (a compute node's
    column, what Nova last wrote) when it is above 0; else
    ``[DEFAULT]initial_<kind>_allocation_ratio`` (4.0 / 1.0 / 1.0).  The
    second item names the option (or ``compute_nodes``) the value came from.
    """
    name = f"{kind}_allocation_ratio"
    configured = _ratio_option(settings, name)
    if configured:
        return configured, name
    if stored is not None and stored > 0:
        return stored, "compute_nodes"
    initial = _ratio_option(settings, f"initial_{name}")
    return (INITIAL_ALLOCATION_RATIOS[kind] if initial is None else initial), f"initial_{name}"
