"""The placement resources an instance's embedded flavor asks for.

Groundwork for ``heal-allocations``: the same ``{resource class: amount}`` dict
that ``nova-manage placement heal_allocations`` writes for an instance, derived
the way Nova's scheduler utils do (``resources_from_flavor`` building a
``ResourceRequest`` from a request spec that carries the flavor and
boot-from-volume flag only, no image):

1. ``resources[$S]:$CLASS=$AMOUNT`` extra specs, per group, summed over groups;
   unknown classes and amounts that are not non-negative integers are ignored.
2. ``hw:cpu_policy=dedicated`` sets PCPU = vcpus (+1 for
   ``hw:emulator_threads_policy=isolate``) in the unsuffixed group.
3. ``hw:pmem`` labels add ``CUSTOM_PMEM_NAMESPACE_<LABEL>`` (count per label).
4. VCPU (unless VCPU or PCPU is already requested), MEMORY_MB and DISK_GB come
   from the flavor only when the extra specs did not name that class.
5. Classes whose amount is 0 are dropped.

Flavors heal-allocations cannot handle raise :class:`UnsupportedFlavor`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from novadb import exit_codes
from novadb.errors import BadInput, NovaDbError

# os_resource_classes.STANDARDS; Nova ignores any other non-CUSTOM_ class.
STANDARD_CLASSES = frozenset(
    {
        "VCPU",
        "MEMORY_MB",
        "DISK_GB",
        "PCI_DEVICE",
        "SRIOV_NET_VF",
        "NUMA_SOCKET",
        "NUMA_CORE",
        "NUMA_THREAD",
        "NUMA_MEMORY_MB",
        "IPV4_ADDRESS",
        "VGPU",
        "VGPU_DISPLAY_HEAD",
        "NET_BW_EGR_KILOBIT_PER_SEC",
        "NET_BW_IGR_KILOBIT_PER_SEC",
        "PCPU",
        "MEM_ENCRYPTION_CONTEXT",
        "FPGA",
        "PGPU",
        "NET_PACKET_RATE_KILOPACKET_PER_SEC",
        "NET_PACKET_RATE_EGR_KILOPACKET_PER_SEC",
        "NET_PACKET_RATE_IGR_KILOPACKET_PER_SEC",
    }
)

# Nova's ResourceRequest.XS_KEYPAT restricted to resources (group suffixes as
# allowed since placement microversion 1.33).
_RESOURCE_KEY = re.compile(r"^resources([a-zA-Z0-9_-]{1,64})?:(.*)$")
_FLAVOR_INTS = ("vcpus", "memory_mb", "root_gb", "ephemeral_gb", "swap")
_TRUE = {"1", "t", "true", "on", "y", "yes"}


class UnsupportedFlavor(NovaDbError):
    """The flavor asks for something heal-allocations cannot rebuild."""

    exit_code = exit_codes.HEAL_UNSUPPORTED


def flavor_from_instance_extra(text: str | None) -> dict[str, Any]:
    """Return the current flavor's fields from an ``instance_extra.flavor`` value."""
    if not text:
        raise BadInput("instance_extra.flavor is empty")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"instance_extra.flavor is not valid JSON: {exc}") from None
    cur = doc.get("cur") if isinstance(doc, dict) else None
    data = cur.get("nova_object.data") if isinstance(cur, dict) else None
    if not isinstance(data, dict):
        raise BadInput('instance_extra.flavor has no "cur" flavor object')
    flavor = dict(data)
    specs = flavor.get("extra_specs")
    if specs is None:
        flavor["extra_specs"] = {}
    elif not isinstance(specs, dict):
        raise BadInput("instance_extra.flavor extra_specs is not a mapping")
    return flavor


def resources_from_flavor(flavor: dict[str, Any], *, boot_from_volume: bool) -> dict[str, int]:
    """Return ``{resource class: amount}`` as heal_allocations would allocate it."""
    specs: dict[str, Any] = flavor.get("extra_specs") or {}
    _refuse_unsupported(specs)
    sizes = _flavor_sizes(flavor)

    groups: dict[str | None, dict[str, int]] = {}
    for key, value in specs.items():
        match = _RESOURCE_KEY.match(key)
        if match:
            _add(groups, match.group(1), match.group(2), value)

    policy = specs.get("hw:cpu_policy")
    if policy == "dedicated":
        pcpus = sizes["vcpus"]
        if specs.get("hw:emulator_threads_policy") == "isolate":
            pcpus += 1
        _add(groups, None, "PCPU", pcpus)

    requested = _merged(groups)
    if "VCPU" not in requested and "PCPU" not in requested:
        _add(groups, None, "VCPU", sizes["vcpus"])
    if "MEMORY_MB" not in requested:
        _add(groups, None, "MEMORY_MB", sizes["memory_mb"])
    if "DISK_GB" not in requested:
        disk = sizes["ephemeral_gb"] + math.ceil(sizes["swap"] / 1024)
        if not boot_from_volume:
            disk += sizes["root_gb"]
        _add(groups, None, "DISK_GB", disk)

    pmem: dict[str, int] = {}
    for label in str(specs.get("hw:pmem") or "").split(","):
        if label.strip():
            rclass = "CUSTOM_PMEM_NAMESPACE_" + re.sub("[^0-9A-Za-z]+", "_", label.strip())
            pmem[rclass.upper()] = pmem.get(rclass.upper(), 0) + 1
    for rclass, count in pmem.items():
        _add(groups, None, rclass, count)

    return {rclass: amount for rclass, amount in _merged(groups).items() if amount}


def _refuse_unsupported(specs: dict[str, Any]) -> None:
    for key in specs:
        match = _RESOURCE_KEY.match(key)
        if match and match.group(2) == "VGPU":
            raise UnsupportedFlavor(
                f"heal-allocations cannot heal vGPU allocations (flavor extra spec {key}),"
                " as nova-manage refuses them"
            )
    if "accel:device_profile" in specs:
        raise UnsupportedFlavor(
            "heal-allocations cannot heal Cyborg device profile allocations"
            " (flavor extra spec accel:device_profile), as nova-manage refuses them"
        )
    policy = specs.get("hw:cpu_policy")
    if policy == "mixed":
        raise UnsupportedFlavor(
            "heal-allocations does not support hw:cpu_policy=mixed"
            " (the PCPU/VCPU split needs hw:cpu_dedicated_mask parsing)"
        )
    if policy not in (None, "shared", "dedicated"):
        raise UnsupportedFlavor(f"unknown hw:cpu_policy {policy!r} in the flavor")
    emulator = specs.get("hw:emulator_threads_policy")
    if emulator not in (None, "", "share", "isolate"):
        raise UnsupportedFlavor(f"unknown hw:emulator_threads_policy {emulator!r} in the flavor")
    if str(specs.get("hw:mem_encryption", "")).strip().lower() in _TRUE:
        raise UnsupportedFlavor(
            "heal-allocations does not support hw:mem_encryption (MEM_ENCRYPTION_CONTEXT)"
        )


def _flavor_sizes(flavor: dict[str, Any]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for field in _FLAVOR_INTS:
        value = flavor.get(field, 0 if field in ("ephemeral_gb", "swap") else None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadInput(f"flavor field {field} is {value!r}, not a non-negative integer")
        sizes[field] = value
    return sizes


def _add(
    groups: dict[str | None, dict[str, int]], group: str | None, rclass: str, amount: object
) -> None:
    """Set one class in one group, ignoring what Nova ignores (with a warning there)."""
    if not (rclass.startswith("CUSTOM_") or rclass in STANDARD_CLASSES):
        return
    if not isinstance(amount, (int, str)) or isinstance(amount, bool):
        return
    try:
        value = int(amount)
    except ValueError:
        return
    if value >= 0:
        groups.setdefault(group, {})[rclass] = value


def _merged(groups: dict[str | None, dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for resources in groups.values():
        for rclass, amount in resources.items():
            merged[rclass] = merged.get(rclass, 0) + amount
    return merged
