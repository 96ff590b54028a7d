"""novadb.placement.resources: flavor -> placement resources, as heal_allocations."""

from __future__ import annotations

import json
from typing import Any

import pytest
from novadb.errors import BadInput
from novadb.placement.resources import (
    UnsupportedFlavor,
    flavor_from_instance_extra,
    resources_from_flavor,
)


def flavor(**specs: str) -> dict[str, Any]:
    base: dict[str, Any] = {"vcpus": 2, "memory_mb": 2048, "root_gb": 20}
    return {**base, "ephemeral_gb": 0, "swap": 0, "extra_specs": specs}


BASE = {"VCPU": 2, "MEMORY_MB": 2048, "DISK_GB": 20}


@pytest.mark.parametrize(
    ("fields", "specs", "bfv", "expected"),
    [
        ({}, {}, False, BASE),
        ({"swap": 1}, {}, False, {**BASE, "DISK_GB": 21}),
        ({"swap": 1024}, {}, False, {**BASE, "DISK_GB": 21}),
        ({"swap": 1025}, {}, False, {**BASE, "DISK_GB": 22}),
        ({"ephemeral_gb": 5, "swap": 512}, {}, False, {**BASE, "DISK_GB": 26}),
        ({"ephemeral_gb": 5, "swap": 512}, {}, True, {**BASE, "DISK_GB": 6}),
        ({}, {}, True, {"VCPU": 2, "MEMORY_MB": 2048}),
        ({"root_gb": 0}, {}, False, {"VCPU": 2, "MEMORY_MB": 2048}),
        # dedicated CPUs, emulator threads
        (
            {},
            {"hw:cpu_policy": "dedicated"},
            False,
            {"PCPU": 2, "MEMORY_MB": 2048, "DISK_GB": 20},
        ),
        (
            {},
            {"hw:cpu_policy": "dedicated", "hw:emulator_threads_policy": "isolate"},
            False,
            {"PCPU": 3, "MEMORY_MB": 2048, "DISK_GB": 20},
        ),
        (
            {},
            {"hw:cpu_policy": "dedicated", "hw:emulator_threads_policy": "share"},
            False,
            {"PCPU": 2, "MEMORY_MB": 2048, "DISK_GB": 20},
        ),
        ({}, {"hw:cpu_policy": "shared"}, False, BASE),
        # overrides and additions, unsuffixed and grouped; 0 removes
        ({}, {"resources:VCPU": "4"}, False, {**BASE, "VCPU": 4}),
        ({}, {"resources1:MEMORY_MB": "512"}, False, {**BASE, "MEMORY_MB": 512}),
        ({}, {"resources_x:DISK_GB": "7"}, False, {**BASE, "DISK_GB": 7}),
        ({}, {"resources:DISK_GB": "0"}, False, {"VCPU": 2, "MEMORY_MB": 2048}),
        ({}, {"resources2:VCPU": "0"}, False, {"MEMORY_MB": 2048, "DISK_GB": 20}),
        ({}, {"resources:PCPU": "2"}, False, {"PCPU": 2, "MEMORY_MB": 2048, "DISK_GB": 20}),
        (
            {},
            {"resources1:CUSTOM_NIC": "1", "resources2:CUSTOM_NIC": "2"},
            False,
            {**BASE, "CUSTOM_NIC": 3},
        ),
        (
            {},
            {"resources:VCPU": "0", "resources:CUSTOM_BAREMETAL_GOLD": "1"},
            False,
            {"MEMORY_MB": 2048, "DISK_GB": 20, "CUSTOM_BAREMETAL_GOLD": 1},
        ),
        ({}, {"resources:CUSTOM_X": "0"}, False, BASE),
        # ignored as Nova ignores them: unknown class, bad amounts, other keys
        ({}, {"resources:BOGUS": "1", "resources:CUSTOM_A": "-1"}, False, BASE),
        ({}, {"resources:CUSTOM_A": "x", "trait:HW_CPU_X86_AVX": "required"}, False, BASE),
        # vPMEM labels
        (
            {},
            {"hw:pmem": "4GB, 4GB,SMALL"},
            False,
            {**BASE, "CUSTOM_PMEM_NAMESPACE_4GB": 2, "CUSTOM_PMEM_NAMESPACE_SMALL": 1},
        ),
    ],
)
def test_resources(
    fields: dict[str, int], specs: dict[str, str], bfv: bool, expected: dict[str, int]
) -> None:
    result = resources_from_flavor({**flavor(**specs), **fields}, boot_from_volume=bfv)

    assert result == expected


@pytest.mark.parametrize(
    ("specs", "words"),
    [
        ({"resources:VGPU": "1"}, "vGPU"),
        ({"resources1:VGPU": "1"}, "vGPU"),
        ({"resources_gpu:VGPU": "2"}, "vGPU"),
        ({"accel:device_profile": "dp1"}, "device profile"),
        ({"hw:cpu_policy": "mixed", "hw:cpu_dedicated_mask": "^0"}, "mixed"),
        ({"hw:cpu_policy": "bogus"}, "hw:cpu_policy"),
        ({"hw:emulator_threads_policy": "bogus"}, "hw:emulator_threads_policy"),
        ({"hw:mem_encryption": "True"}, "hw:mem_encryption"),
    ],
)
def test_unsupported_flavor(specs: dict[str, str], words: str) -> None:
    with pytest.raises(UnsupportedFlavor, match=words) as info:
        resources_from_flavor(flavor(**specs), boot_from_volume=False)

    assert info.value.exit_code == 8
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("fields", [{"vcpus": None}, {"memory_mb": "1"}, {"swap": -1}])
def test_bad_flavor_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(BadInput):
        resources_from_flavor({**flavor(), **fields}, boot_from_volume=False)


def extra(cur: object) -> str:
    return json.dumps({"cur": cur, "old": None, "new": None})


def test_flavor_from_instance_extra_uses_cur() -> None:
    data = {**flavor(**{"resources:VCPU": "1"}), "flavorid": "m1"}
    text = extra({"nova_object.name": "Flavor", "nova_object.data": data})

    result = flavor_from_instance_extra(text)

    assert result == data
    assert resources_from_flavor(result, boot_from_volume=False) == {**BASE, "VCPU": 1}


def test_flavor_without_extra_specs_gets_empty_ones() -> None:
    data = {"vcpus": 1, "memory_mb": 64, "root_gb": 1, "ephemeral_gb": 0, "swap": 0}

    result = flavor_from_instance_extra(extra({"nova_object.data": data}))

    assert result == {**data, "extra_specs": {}}


@pytest.mark.parametrize(
    "text",
    [
        "",
        None,
        "{not json",
        "[]",
        "{}",
        extra(None),
        extra({"nova_object.name": "Flavor"}),
        extra({"nova_object.data": {"vcpus": 1, "extra_specs": ["x"]}}),
    ],
)
def test_bad_instance_extra(text: str | None) -> None:
    with pytest.raises(BadInput) as info:
        flavor_from_instance_extra(text)

    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)
