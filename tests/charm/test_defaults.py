"""Defaults are defined once, on the library's option dataclasses.

actions.yaml (what Juju shows and fills in), the charm's params and the CLI's
argparse defaults must all say what the options say; a default changed in one
place only fails here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from novadb import (
    ArchiveOptions,
    CheckOptions,
    HealOptions,
    NullUuidScanOptions,
    OnlineMigrateOptions,
    PlacementAuditOptions,
    PurgeOptions,
    RebuildPlacementOptions,
    SyncAggregatesOptions,
    SyncOptions,
    VersionOptions,
)
from novadb.archive.archive import DEFAULT_BATCH_SIZE
from novadb.cli.main import build_parser

import charm_params

ROOT = Path(__file__).resolve().parents[2]
ACTIONS: dict[str, Any] = yaml.safe_load((ROOT / "actions.yaml").read_text())

# action -> (its options class, the charm's params class, param -> option renames)
OPTIONS: dict[str, tuple[type, type, dict[str, str]]] = {
    "sync": (SyncOptions, charm_params.SyncParams, {}),
    "version": (VersionOptions, VersionOptions, {}),  # the charm loads the options
    "online-migrate": (OnlineMigrateOptions, OnlineMigrateOptions, {}),
    "archive": (ArchiveOptions, charm_params.ArchiveParams, {}),
    "purge": (PurgeOptions, charm_params.PurgeParams, {"all": "purge_all"}),
    "null-instance-uuid-scan": (NullUuidScanOptions, NullUuidScanOptions, {}),
    "placement-audit": (PlacementAuditOptions, PlacementAuditOptions, {}),
    "heal-allocations": (HealOptions, HealOptions, {}),
    "sync-aggregates": (SyncAggregatesOptions, SyncAggregatesOptions, {}),
    "rebuild-placement": (RebuildPlacementOptions, charm_params.RebuildPlacementParams, {}),
}


def _defaults(options: type) -> dict[str, Any]:
    return {
        f.name: f.default
        for f in dataclasses.fields(options)
        if f.default is not dataclasses.MISSING
    }


@pytest.mark.parametrize("action", sorted(OPTIONS))
def test_actions_yaml_and_the_params_take_the_options_defaults(action: str) -> None:
    options, params, renames = OPTIONS[action]
    want = _defaults(options)
    params_defaults = _defaults(params)
    compared = 0
    for param, schema in ACTIONS[action].get("params", {}).items():
        name = param.replace("-", "_")
        option = renames.get(name, name)
        if option not in want:
            continue  # an action-only param (rebuild's restore)
        compared += 1
        assert schema.get("default") == want[option], (action, param)
        assert params_defaults[name] == want[option], (action, name)
    assert compared, action


def test_check_includes_placement_everywhere_by_default() -> None:
    assert CheckOptions().placement is True
    assert ACTIONS["check"]["params"]["no-placement"]["default"] is False
    assert charm_params.CheckParams().no_placement is False
    assert build_parser().parse_args(["check"]).no_placement is False


@pytest.mark.parametrize(
    ("argv", "dest", "want"),
    [
        (["archive"], "batch_size", ArchiveOptions.batch_size),
        (["archive"], "sleep", ArchiveOptions.sleep),
        (["purge"], "batch_size", PurgeOptions.batch_size),
        (["online-migrate"], "batch_size", str(OnlineMigrateOptions.batch_size)),
        (["online-migrate"], "target", OnlineMigrateOptions.database),
        (["heal-allocations"], "batch_size", HealOptions.batch_size),
        (["sync"], "target", SyncOptions.database),
        (["version"], "target", VersionOptions.database),
    ],
)
def test_the_cli_takes_the_options_defaults(argv: list[str], dest: str, want: object) -> None:
    assert getattr(build_parser().parse_args(argv), dest) == want


def test_the_numbers_themselves() -> None:
    # Written out once, so that a change to a default is a visible decision.
    # Archive: no batch size means nova-manage's 1000 parent rows, or (until
    # complete) batches sized by the row and byte bounds; two in flight.
    assert (ArchiveOptions.batch_size, DEFAULT_BATCH_SIZE, ArchiveOptions.parallel) == (
        None, 1000, 2,
    )  # fmt: skip
    assert PurgeOptions.batch_size == 200000
    assert (OnlineMigrateOptions.batch_size, HealOptions.batch_size) == (50, 1000)
