"""The public API: every name in ``novadb.__all__`` imports, and every operation has one shape.

``op(settings, options, *, progress=..., stop=...) -> Result``: scripts and the
charm call every operation the same way, and internal coordination
(``lock_held``, ``lock_timeout``, ``workers``) never shows in a signature.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
import typing
from pathlib import Path

import novadb
import pytest
from novadb.api.operations import OPERATIONS

ROOT = Path(__file__).resolve().parents[2]
P = inspect.Parameter


def test_every_name_in_all_imports() -> None:
    assert len(set(novadb.__all__)) == len(novadb.__all__)
    for name in novadb.__all__:
        assert getattr(novadb, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from novadb import *", namespace)  # noqa: S102 - what a star import really gives
    assert set(novadb.__all__) <= set(namespace)


def test_version_comes_from_the_package_metadata() -> None:
    assert novadb.__version__ != "0+unknown"
    assert novadb.__version__[0].isdigit()


def test_the_package_says_it_is_typed_and_the_wheel_ships_the_marker() -> None:
    assert (ROOT / "lib" / "novadb" / "py.typed").is_file()
    text = (ROOT / "pyproject.toml").read_text()
    assert 'packages = ["lib/novadb"]' in text  # hatch ships every file of the package


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda f: f.__name__)
def test_each_operation_has_the_one_shape(op: typing.Callable[..., object]) -> None:
    assert getattr(novadb, op.__name__) is op
    assert op.__name__ in novadb.__all__
    params = list(inspect.signature(op).parameters.values())
    assert [(p.name, p.kind) for p in params] == [
        ("settings", P.POSITIONAL_OR_KEYWORD),
        ("options", P.POSITIONAL_OR_KEYWORD),
        ("progress", P.KEYWORD_ONLY),
        ("stop", P.KEYWORD_ONLY),
    ]
    hints = typing.get_type_hints(op)
    assert hints["settings"] is novadb.Settings
    assert hints["stop"] == threading.Event | None
    assert params[3].default is None
    options = [t for t in typing.get_args(hints["options"]) if t is not type(None)] or [
        hints["options"]
    ]
    option_type: type = options[0]
    assert len(options) == 1 and dataclasses.is_dataclass(option_type)
    assert option_type.__name__ in novadb.__all__
    assert hints["return"].__name__ in novadb.__all__
    assert hasattr(hints["return"], "exit_code"), "every result carries its exit code"
    internal = {"lock_held", "lock_timeout", "workers", "max_bytes", "before_text"}
    fields = {f.name for f in dataclasses.fields(option_type)}
    assert not fields & (internal - _KNOWN_INTERNAL.get(option_type.__name__, set()))


# Options that still carry an internal field, and why it is not moved yet: the
# archive's batch machinery is being reworked (issue 17) and reads these.
_KNOWN_INTERNAL = {
    "ArchiveOptions": {"workers", "before_text", "lock_timeout", "max_bytes"},
    "PurgeOptions": {"workers", "lock_timeout"},
}


def test_choices_are_literal_types() -> None:
    for options, field in [
        (novadb.SyncOptions, "database"),
        (novadb.VersionOptions, "database"),
        (novadb.OnlineMigrateOptions, "database"),
    ]:
        hint = typing.get_type_hints(options)[field]
        assert typing.get_origin(hint) is typing.Literal
        assert set(typing.get_args(hint)) == {"all", "api", "main", "placement"}


def test_check_includes_the_placement_audit_by_default() -> None:
    assert novadb.CheckOptions().placement is True


def test_a_stop_set_before_a_short_operation_begins_does_nothing() -> None:
    stop = threading.Event()
    stop.set()
    settings = novadb.Settings(main="sqlite:////nonexistent/nova.sqlite", api=None, placement=None)
    with pytest.raises(novadb.Interrupted) as info:
        novadb.version(settings, stop=stop)
    assert info.value.exit_code == 130
    assert str(info.value) == "version interrupted before it began; nothing was done"
