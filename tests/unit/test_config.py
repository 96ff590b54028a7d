"""novadb.config.load_settings: where each database URL comes from."""

from __future__ import annotations

from pathlib import Path

import pytest
from novadb import exit_codes
from novadb.config import NO_CONFIGURATION, default_config_files, load_settings
from novadb.errors import (
    PLACEMENT_NOT_CONFIGURED,
    ConfigError,
    PlacementNotConfigured,
)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def conf(tmp_path: Path, name: str, **sections: str) -> str:
    """A config file with ``[section] connection = URL`` for each keyword."""
    body = "".join(f"[{section}]\nconnection = {url}\n" for section, url in sections.items())
    return write(tmp_path / name, body)


# -- defaults -----------------------------------------------------------------


def test_nothing_given_is_no_database_at_all() -> None:
    settings = load_settings()

    assert (settings.main, settings.api, settings.placement) == (None, None, None)
    assert settings.sources == ()


def test_cli_overrides_without_files_set_only_what_they_name() -> None:
    settings = load_settings(database="mysql+pymysql://n:p@db/nova")

    assert settings.main == "mysql+pymysql://n:p@db/nova"
    assert settings.api is None
    assert settings.placement is None
    with pytest.raises(ConfigError, match=r"pass --api-database URL$"):
        settings.url("api")


# -- config files -------------------------------------------------------------


def test_reads_the_three_connection_options(tmp_path: Path) -> None:
    path = conf(
        tmp_path,
        "nova.conf",
        database="mysql+pymysql://nova:a@db/nova",
        api_database="mysql+pymysql://nova:b@db/nova_api",
        placement_database="mysql+pymysql://placement:c@db/placement",
    )

    settings = load_settings([path])

    assert settings.url("main") == "mysql+pymysql://nova:a@db/nova"
    assert settings.url("api") == "mysql+pymysql://nova:b@db/nova_api"
    assert settings.url("placement") == "mysql+pymysql://placement:c@db/placement"
    assert settings.placement_is_api is False
    assert settings.sources == (path,)


def test_connection_value_is_stripped(tmp_path: Path) -> None:
    path = write(tmp_path / "nova.conf", "[database]\nconnection =   sqlite:///x.db   \n")

    assert load_settings([path]).main == "sqlite:///x.db"


def test_later_config_file_wins(tmp_path: Path) -> None:
    first = conf(
        tmp_path, "a.conf", database="sqlite:///first.db", api_database="sqlite:///api.db"
    )
    second = conf(tmp_path, "b.conf", database="sqlite:///second.db")

    settings = load_settings([first, second])

    assert settings.main == "sqlite:///second.db"
    # What only the first file sets survives.
    assert settings.api == "sqlite:///api.db"
    assert settings.sources == (first, second)

    # The order of the files, not their names, decides.
    assert load_settings([second, first]).main == "sqlite:///first.db"


def test_config_dir_read_sorted_after_the_files(tmp_path: Path) -> None:
    directory = tmp_path / "nova.conf.d"
    directory.mkdir()
    conf(directory, "20-late.conf", database="sqlite:///dir-20.db")
    conf(directory, "10-early.conf", database="sqlite:///dir-10.db", api_database="sqlite:///a.db")
    write(directory / "99-ignored.txt", "[database]\nconnection = sqlite:///txt.db\n")
    main_file = conf(tmp_path, "nova.conf", database="sqlite:///file.db")

    settings = load_settings([main_file], str(directory))

    assert settings.main == "sqlite:///dir-20.db"
    assert settings.api == "sqlite:///a.db"
    assert settings.sources == (
        main_file,
        str(directory / "10-early.conf"),
        str(directory / "20-late.conf"),
    )


def test_cli_overrides_beat_files(tmp_path: Path) -> None:
    path = conf(
        tmp_path,
        "nova.conf",
        database="sqlite:///file-main.db",
        api_database="sqlite:///file-api.db",
        placement_database="sqlite:///file-placement.db",
    )

    settings = load_settings(
        [path],
        database="sqlite:///cli-main.db",
        api_database="sqlite:///cli-api.db",
        placement_database="sqlite:///cli-placement.db",
    )

    assert settings.main == "sqlite:///cli-main.db"
    assert settings.api == "sqlite:///cli-api.db"
    assert settings.placement == "sqlite:///cli-placement.db"
    assert settings.placement_is_api is False


# -- placement fallback ---------------------------------------------------------


def test_placement_falls_back_to_api_database(tmp_path: Path) -> None:
    path = conf(tmp_path, "nova.conf", database="sqlite:///m.db", api_database="sqlite:///api.db")

    settings = load_settings([path])

    assert settings.url("placement") == "sqlite:///api.db"
    assert settings.placement_is_api is True


def test_placement_falls_back_to_api_override_too() -> None:
    settings = load_settings(api_database="sqlite:///api.db")

    assert settings.placement == "sqlite:///api.db"
    assert settings.placement_is_api is True


def test_explicit_placement_database_beats_the_fallback(tmp_path: Path) -> None:
    path = conf(tmp_path, "nova.conf", database="sqlite:///m.db", api_database="sqlite:///api.db")

    settings = load_settings([path], placement_database="sqlite:///p.db")

    assert settings.url("placement") == "sqlite:///p.db"
    assert settings.placement_is_api is False


def test_placement_section_beats_the_fallback(tmp_path: Path) -> None:
    path = conf(
        tmp_path,
        "nova.conf",
        api_database="sqlite:///api.db",
        placement_database="sqlite:///p.db",
    )

    settings = load_settings([path])

    assert settings.placement == "sqlite:///p.db"
    assert settings.placement_is_api is False


# -- unset options and bad files ------------------------------------------------


def test_missing_database_connection_names_option_and_flag(tmp_path: Path) -> None:
    path = conf(tmp_path, "nova.conf", api_database="sqlite:///api.db")

    settings = load_settings([path])

    assert settings.main is None  # no SQLite default once a file is given
    with pytest.raises(ConfigError) as info:
        settings.url("main")
    message = str(info.value)
    assert "[database]/connection" in message
    assert "--database" in message
    assert path in message
    assert info.value.exit_code == 1


def test_missing_api_and_placement_name_their_own_option(tmp_path: Path) -> None:
    path = conf(tmp_path, "nova.conf", database="sqlite:///m.db")

    settings = load_settings([path])

    assert settings.placement is None
    assert settings.placement_is_api is False
    with pytest.raises(ConfigError, match=r"\[api_database\]/connection .*--api-database"):
        settings.url("api")
    with pytest.raises(
        ConfigError, match=r"\[placement_database\]/connection .*--placement-database"
    ):
        settings.url("placement")


def test_empty_connection_counts_as_unset(tmp_path: Path) -> None:
    path = write(tmp_path / "nova.conf", "[database]\nconnection =\n")

    with pytest.raises(ConfigError, match=r"\[database\]/connection is not set"):
        load_settings([path]).url("main")


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"

    with pytest.raises(ConfigError) as info:
        load_settings([str(missing)])

    assert str(missing) in str(info.value)
    assert "not found" in str(info.value)


def test_unparsable_config_file(tmp_path: Path) -> None:
    path = write(tmp_path / "nova.conf", "connection = sqlite:///x.db\n")

    with pytest.raises(ConfigError) as info:
        load_settings([path])

    message = str(info.value)
    assert message.startswith(f"config file {path} cannot be parsed: ")
    assert "no section headers" in message
    assert "\n" not in message


def test_non_utf8_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nova.conf"
    path.write_bytes(b"[DEFAULT]\n# \xe9t\xe9\n[database]\nconnection = sqlite:///x.db\n")

    with pytest.raises(ConfigError, match="cannot be parsed"):
        load_settings([str(path)])


def test_config_dir_that_is_not_a_directory(tmp_path: Path) -> None:
    not_dir = conf(tmp_path, "nova.conf", database="sqlite:///x.db")

    with pytest.raises(ConfigError, match=r"^--config-dir .*nova\.conf: not a directory$"):
        load_settings(config_dir=not_dir)
    with pytest.raises(ConfigError, match="not a directory"):
        load_settings(config_dir=str(tmp_path / "absent"))


def test_empty_config_dir_sets_nothing(tmp_path: Path) -> None:
    settings = load_settings(config_dir=str(tmp_path))

    assert settings.main is None
    assert settings.sources == ()
    with pytest.raises(ConfigError, match=r"^\[database\]/connection is not set; set it or pass "):
        settings.url("main")


# -- other options -------------------------------------------------------------


def test_option_returns_raw_values(tmp_path: Path) -> None:
    path = write(
        tmp_path / "nova.conf",
        "[DEFAULT]\ncpu_allocation_ratio = 16.0\nlog_dir = %(state_path)s/log\n"
        "[placement]\nregion_name = RegionOne\n",
    )

    settings = load_settings([path])

    assert settings.option("DEFAULT", "cpu_allocation_ratio") == "16.0"
    assert settings.option("default", "cpu_allocation_ratio") == "16.0"
    # No interpolation: the raw text.
    assert settings.option("DEFAULT", "log_dir") == "%(state_path)s/log"
    assert settings.option("placement", "region_name") == "RegionOne"
    # DEFAULT values do not leak into other sections.
    assert settings.option("placement", "cpu_allocation_ratio") is None
    assert settings.option("DEFAULT", "ram_allocation_ratio") is None
    assert settings.option("DEFAULT", "ram_allocation_ratio", "1.5") == "1.5"


def test_option_later_file_wins(tmp_path: Path) -> None:
    first = write(tmp_path / "a.conf", "[DEFAULT]\ncpu_allocation_ratio = 4.0\n")
    second = write(tmp_path / "b.conf", "[DEFAULT]\ncpu_allocation_ratio = 8.0\n")

    assert load_settings([first, second]).option("DEFAULT", "cpu_allocation_ratio") == "8.0"


def test_option_set_in_section_and_default_with_same_value(tmp_path: Path) -> None:
    path = write(
        tmp_path / "nova.conf", "[DEFAULT]\nregion_name = R1\n[placement]\nregion_name = R1\n"
    )

    assert load_settings([path]).option("placement", "region_name") == "R1"


# -- nova-manage's default files (a fake /etc/nova) ---------------------------------------


def etc_nova(root: Path) -> Path:
    etc = root / "etc" / "nova"
    etc.mkdir(parents=True)
    return etc


def test_default_files_are_nova_conf_then_conf_d(tmp_path: Path) -> None:
    etc = etc_nova(tmp_path)
    conf(etc, "nova.conf", database="sqlite:///main.db", api_database="sqlite:///api.db")
    (etc / "nova.conf.d").mkdir()
    conf(etc / "nova.conf.d", "20-late.conf", database="sqlite:///late.db")
    conf(etc / "nova.conf.d", "10-early.conf", database="sqlite:///early.db")
    write(etc / "nova.conf.d" / "99-ignored.conf.bak", "[database]\nconnection = sqlite:///x\n")

    assert default_config_files(tmp_path) == ([str(etc / "nova.conf")], str(etc / "nova.conf.d"))
    settings = load_settings(defaults_root=tmp_path)

    # nova.conf, then conf.d's *.conf sorted by name: the last one wins.
    assert settings.main == "sqlite:///late.db"
    assert settings.api == "sqlite:///api.db"
    assert settings.sources == (
        str(etc / "nova.conf"),
        str(etc / "nova.conf.d" / "10-early.conf"),
        str(etc / "nova.conf.d" / "20-late.conf"),
    )


def test_default_conf_d_alone_is_read(tmp_path: Path) -> None:
    etc = etc_nova(tmp_path)
    (etc / "nova.conf.d").mkdir()
    conf(etc / "nova.conf.d", "db.conf", database="sqlite:///d.db")

    assert default_config_files(tmp_path) == ([], str(etc / "nova.conf.d"))
    assert load_settings(defaults_root=tmp_path).main == "sqlite:///d.db"


def test_neither_default_present_is_the_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(defaults_root=tmp_path)

    assert str(raised.value) == NO_CONFIGURATION
    assert "\n" not in NO_CONFIGURATION
    assert "--config-file" in NO_CONFIGURATION and "novadb demo" in NO_CONFIGURATION
    assert raised.value.exit_code == 1


def test_explicit_files_or_urls_skip_the_defaults(tmp_path: Path) -> None:
    etc = etc_nova(tmp_path)
    conf(etc, "nova.conf", database="sqlite:///default.db")
    mine = conf(tmp_path, "mine.conf", database="sqlite:///mine.db")

    assert load_settings([mine], defaults_root=tmp_path).main == "sqlite:///mine.db"
    by_url = load_settings(api_database="sqlite:///a.db", defaults_root=tmp_path)
    assert (by_url.main, by_url.sources) == (None, ())


# -- where configparser and oslo.config could differ -----------------------------------------


def test_percent_in_a_password_is_literal(tmp_path: Path) -> None:
    # oslo.config's ini parser has no %-interpolation; configparser's default would fail.
    url = "mysql+pymysql://nova:50%off%(x)s@db/nova"
    path = write(tmp_path / "nova.conf", f"[database]\nconnection = {url}\n")

    assert load_settings([path]).main == url


def test_duplicate_sections_merge_and_the_last_value_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path / "nova.conf",
        "[api_database]\nconnection = sqlite:///first.db\n"
        "[database]\nconnection = sqlite:///main.db\n"
        "[api_database]\nconnection = sqlite:///second.db\n",
    )

    settings = load_settings([path])

    assert (settings.main, settings.api) == ("sqlite:///main.db", "sqlite:///second.db")


def test_a_section_spread_over_files_is_merged(tmp_path: Path) -> None:
    first = write(tmp_path / "a.conf", "[placement_database]\nconnection = sqlite:///p.db\n")
    second = write(tmp_path / "b.conf", "[placement_database]\nmax_retries = 3\n")

    settings = load_settings([first, second])

    assert settings.placement == "sqlite:///p.db"
    assert settings.option("placement_database", "max_retries") == "3"


# -- Placement's database: configured, shared on purpose, or only the fallback -------------


def test_placement_fallback_is_not_configured() -> None:
    settings = load_settings(database="sqlite:///m.db", api_database="sqlite:///a.db")

    assert settings.placement_is_api and not settings.placement_configured
    assert settings.placement_shares_api()
    with pytest.raises(PlacementNotConfigured) as raised:
        settings.placement_url()
    assert str(raised.value) == PLACEMENT_NOT_CONFIGURED
    assert raised.value.exit_code == exit_codes.PLACEMENT_NOT_CONFIGURED == 78


@pytest.mark.parametrize("via", ["option", "file"])
def test_placement_named_as_the_api_database_is_configured_and_shared(
    tmp_path: Path, via: str
) -> None:
    api = "mysql+pymysql://nova:pw@db/nova_api"
    if via == "option":
        settings = load_settings(api_database=api, placement_database=api)
    else:
        path = conf(tmp_path, "nova.conf", api_database=api, placement_database=api)
        settings = load_settings([path])

    assert settings.placement_configured and not settings.placement_is_api
    assert settings.placement_shares_api()
    assert settings.placement_url() == api


def test_placement_of_its_own_is_configured_and_not_shared() -> None:
    settings = load_settings(
        api_database="sqlite:///a.db", placement_database="sqlite:///./sub/../p.db"
    )

    assert settings.placement_configured and not settings.placement_shares_api()
    assert load_settings(
        api_database="sqlite:///a.db", placement_database="sqlite:///./sub/../a.db"
    ).placement_shares_api()
