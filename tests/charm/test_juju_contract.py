"""What Juju and COU check of the charm, beyond what ops.testing accepts.

- Juju validates each action's params with a JSON Schema *draft 4* validator,
  the params wrapped in an object schema; a draft-6 keyword (numeric
  ``exclusiveMinimum``) makes it refuse the charm at deploy time.
- The ``juju run`` examples of README.md and docs/charm.md must pass that validation too.
- COU reads ``openstack-origin``, ``action-managed-upgrade`` and
  ``enable-auto-restarts``, and maps the workload version to a release with
  the ranges of its lookup table.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from novadb.schema.releases import RELEASES, release_for_nova_version

from nova_package import parse_origin, upstream_version

ROOT = Path(__file__).resolve().parents[2]
ACTIONS: dict[str, Any] = yaml.safe_load((ROOT / "actions.yaml").read_text())
CHARMCRAFT: dict[str, Any] = yaml.safe_load((ROOT / "charmcraft.yaml").read_text())

# Every keyword of JSON Schema draft 4 (validation and hyper-schema's core);
# Juju's validator refuses $ref and $schema besides.
DRAFT4_KEYWORDS = frozenset({
    "id", "title", "description", "default", "multipleOf", "maximum", "exclusiveMaximum",
    "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "additionalItems",
    "items", "maxItems", "minItems", "uniqueItems", "maxProperties", "minProperties",
    "required", "additionalProperties", "definitions", "properties", "patternProperties",
    "dependencies", "enum", "type", "allOf", "anyOf", "oneOf", "not", "format",
})  # fmt: skip
# Keys of an action in actions.yaml that Juju consumes and keeps out of the schema.
ACTION_KEYS = frozenset({"description", "params", "parallel", "execution-group"})

# COU's lookup (charmed-openstack-upgrader cou/utils/openstack_lookup.csv) for
# the nova charms: a workload version v is the release when lower <= v < upper.
COU_NOVA_RANGES = {
    "ussuri": (21, 22), "victoria": (22, 23), "wallaby": (23, 24), "xena": (24, 25),
    "yoga": (25, 26), "zed": (26, 27), "antelope": (27, 28), "bobcat": (28, 29),
    "caracal": (29, 30), "dalmatian": (30, 31), "epoxy": (31, 32), "flamingo": (32, 33),
    "gazpacho": (33, 34), "hibiscus": (34, 35),
}  # fmt: skip


def juju_schema(name: str, action: dict[str, Any]) -> dict[str, Any]:
    """The schema Juju builds for an action: its params as an object's properties."""
    schema: dict[str, Any] = {
        "title": name,
        "description": action.get("description", ""),
        "type": "object",
        "properties": action.get("params", {}),
    }
    schema.update({k: v for k, v in action.items() if k not in ACTION_KEYS})
    return schema


def keywords(node: Any, path: str = "") -> list[tuple[str, str]]:
    """Every (path, keyword) of a schema, descending into subschemas but not into names."""
    found: list[tuple[str, str]] = []
    if not isinstance(node, dict):
        return found
    for key, value in node.items():
        found.append((path, key))
        if key in ("properties", "patternProperties", "definitions", "dependencies"):
            for name, sub in value.items():
                found += keywords(sub, f"{path}/{key}/{name}")
        elif key in ("items", "additionalItems", "additionalProperties", "not"):
            subs = value if isinstance(value, list) else [value]
            for i, sub in enumerate(subs):
                found += keywords(sub, f"{path}/{key}/{i}")
        elif key in ("allOf", "anyOf", "oneOf"):
            for i, sub in enumerate(value):
                found += keywords(sub, f"{path}/{key}/{i}")
    return found


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_every_action_schema_is_valid_draft_4(name: str) -> None:
    schema = juju_schema(name, ACTIONS[name])
    jsonschema.Draft4Validator.check_schema(schema)
    unknown = [(p, k) for p, k in keywords(schema) if k not in DRAFT4_KEYWORDS]
    assert unknown == [], f"{name}: keywords draft 4 does not know: {unknown}"
    assert schema.get("additionalProperties") is False, f"{name}: unknown params must be refused"


def test_the_draft_6_form_juju_refuses_is_caught() -> None:
    """The check above can fail: numeric exclusiveMinimum is not draft 4."""
    bad = {"params": {"max-runtime": {"type": "number", "exclusiveMinimum": 0}}}
    with pytest.raises(jsonschema.SchemaError):
        jsonschema.Draft4Validator.check_schema(juju_schema("archive", bad))


class JujuArgLoader(yaml.SafeLoader):
    """YAML as Juju's CLI reads a key=value: go-yaml leaves an untagged date a string."""


JujuArgLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def documented_examples() -> list[tuple[str, dict[str, Any]]]:
    """Every ``juju run <unit> <action> key=value ...`` in README.md and docs/charm.md.

    Values are read as YAML, as Juju's CLI reads them.
    """
    text = (ROOT / "README.md").read_text() + (ROOT / "docs" / "charm.md").read_text()
    found = []
    for line in re.findall(r"^\$? ?juju run \S+ .*$", text, re.M):
        words = line.lstrip("$ ").split()[3:]
        action, args = words[0], words[1:]
        params = {}
        for arg in args:
            key, sep, value = arg.partition("=")
            if sep:  # Juju's CLI parses each value as YAML
                params[key] = yaml.load(value, Loader=JujuArgLoader)
        found.append((action, params))
    return found


def test_documented_examples_pass_jujus_validation() -> None:
    examples = documented_examples()
    assert len(examples) >= 15
    for action, params in examples:
        assert action in ACTIONS, f"the docs run an action the charm lacks: {action}"
        jsonschema.Draft4Validator(juju_schema(action, ACTIONS[action])).validate(params)


def test_cou_reads_the_config_it_requires() -> None:
    options = CHARMCRAFT["config"]["options"]
    assert options["openstack-origin"]["type"] == "string"
    assert options["action-managed-upgrade"] == {
        **options["action-managed-upgrade"],
        "type": "boolean",
        "default": False,
    }
    # COU refuses an application whose enable-auto-restarts is false.
    assert options["enable-auto-restarts"]["type"] == "boolean"
    assert options["enable-auto-restarts"]["default"] is True
    # COU accepts distro, cloud:... and empty; a bare codename it refuses.
    assert options["openstack-origin"]["default"] == "distro"


@pytest.mark.parametrize(("series", "codename"), RELEASES)
def test_workload_version_of_each_release_is_in_cous_range(series: str, codename: str) -> None:
    """The version a release's nova-common reports maps back to that release, in COU too."""
    major = COU_NOVA_RANGES[codename][0]
    for debian in (
        f"3:{major}.0.0-0ubuntu1",
        f"3:{major}.1.2-0ubuntu1~cloud0",
        f"{major}.0.0~rc1-0ubuntu1",
    ):
        version = upstream_version(debian)
        assert re.fullmatch(r"\d+\.\d+\.\d+(rc\d+)?", version), version
        lower, upper = COU_NOVA_RANGES[codename]
        assert lower <= int(version.split(".")[0]) < upper
        index = release_for_nova_version(version)
        assert index is not None and RELEASES[index] == (series, codename)


@pytest.mark.parametrize(
    ("origin", "series", "codename", "pocket"),
    [
        ("distro", "noble", "caracal", "distro"),
        ("", "noble", "caracal", "distro"),
        ("cloud:noble-epoxy", "noble", "epoxy", "updates"),
        ("cloud:noble-epoxy/proposed", "noble", "epoxy", "proposed"),
        ("cloud:noble-epoxy/staging", "noble", "epoxy", "staging"),
        ("cloud:noble-updates/flamingo", "noble", "flamingo", "updates"),
        ("caracal", "noble", "caracal", "distro"),
        ("2025.1", "noble", "epoxy", "updates"),
        (" Epoxy ", "noble", "epoxy", "updates"),
        ("cloud:jammy-caracal", "jammy", "caracal", "updates"),
        ("distro", "jammy", "yoga", "distro"),
        ("cloud:resolute-hibiscus", "resolute", "hibiscus", "updates"),
    ],
)
def test_openstack_origin_is_read_as_the_classic_charms_read_it(
    origin: str, series: str, codename: str, pocket: str
) -> None:
    parsed = parse_origin(origin, series)
    assert (parsed.codename, parsed.pocket, parsed.series) == (codename, pocket, series)
    assert RELEASES[parsed.release][1] == codename


@pytest.mark.parametrize(
    ("origin", "series", "message"),
    [
        ("cloud:jammy-epoxy", "noble", "openstack-origin cloud:jammy-epoxy is for Ubuntu jammy, "
         "but this unit runs noble"),
        ("cloud:noble-caracal", "noble", "openstack-origin cloud:noble-caracal: the Cloud "
         "Archive has no caracal pocket for noble"),
        ("hibiscus", "noble", "openstack-origin hibiscus: Ubuntu noble has no hibiscus"),
        ("ppa:foo/bar", "noble", "openstack-origin 'ppa:foo/bar' is not understood"),
        ("distro", "focal", "openstack-origin distro: novadb supports xena and later"),
        ("distro", "bookworm", "openstack-origin distro: Ubuntu bookworm is not supported"),
    ],
)  # fmt: skip
def test_an_origin_that_cannot_work_says_what_does(origin: str, series: str, message: str) -> None:
    from novadb.errors import ConfigError

    with pytest.raises(ConfigError) as failed:
        parse_origin(origin, series)
    assert str(failed.value).startswith(message + "; use distro, cloud:")
