"""One allocation-ratio rule, Nova's, for both its readers; node_inventory with written numbers.

Nova (``ComputeDriver._get_allocation_ratios``, Stein's ``migrate_empty_ratio``):
``[DEFAULT]<kind>_allocation_ratio`` when set and not 0.0 wins over everything,
else what the compute node holds, else ``initial_<kind>_allocation_ratio``
(4.0 / 1.0 / 1.0).  A value oslo.config cannot parse is an error, never a
silent default.
"""

from __future__ import annotations

import pytest
from novadb.config import Settings, allocation_ratio
from novadb.errors import ConfigError
from novadb.online.base import Context
from novadb.online.compute import ratios
from novadb.placement.nova_side import ComputeNode, Inventory, node_inventory


def _settings(**options: str) -> Settings:
    return Settings(
        main="sqlite://",
        api=None,
        placement=None,
        options={("default", name): value for name, value in options.items()},
    )


def test_the_configured_ratio_wins_over_the_node_and_the_initial() -> None:
    s = _settings(cpu_allocation_ratio="16.0", initial_cpu_allocation_ratio="2.0")
    assert allocation_ratio(s, "cpu", 3.0) == (16.0, "cpu_allocation_ratio")
    assert allocation_ratio(s, "cpu") == (16.0, "cpu_allocation_ratio")


def test_without_the_option_the_node_value_then_the_initial() -> None:
    s = _settings(cpu_allocation_ratio="0.0", initial_ram_allocation_ratio="1.5")
    assert allocation_ratio(s, "cpu", 3.0) == (3.0, "compute_nodes")
    assert allocation_ratio(s, "cpu", 0.0) == (4.0, "initial_cpu_allocation_ratio")
    assert allocation_ratio(s, "ram", None) == (1.5, "initial_ram_allocation_ratio")
    assert allocation_ratio(s, "disk") == (1.0, "initial_disk_allocation_ratio")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "[DEFAULT]cpu_allocation_ratio = 'lots' is not a number"),
        ("-1", "[DEFAULT]cpu_allocation_ratio = '-1' is negative"),
    ],
)
def test_a_bad_value_is_an_error_for_both_readers(value: str, message: str) -> None:
    s = _settings(cpu_allocation_ratio=value)
    with pytest.raises(ConfigError) as info:
        allocation_ratio(s, "cpu", 2.0)
    assert str(info.value) == message
    with pytest.raises(ConfigError):
        ratios(Context(s))
    node = ComputeNode("cell1", "u1", "h1", "h1", 8, 4096, 100, {"VCPU": 2.0})
    with pytest.raises(ConfigError):
        node_inventory(node, s)


def test_online_migrate_and_placement_read_the_same_ratio() -> None:
    s = _settings(cpu_allocation_ratio="16.0", initial_disk_allocation_ratio="1.25")
    assert ratios(Context(s)) == {
        "cpu": (16.0, "cpu_allocation_ratio"),
        "disk": (1.25, "initial_disk_allocation_ratio"),
        "ram": (1.0, "initial_ram_allocation_ratio"),
    }
    node = ComputeNode("cell1", "u1", "h1", "h1", 8, 4096, 100, {})
    got = {rc: inv.allocation_ratio for rc, inv in node_inventory(node, s).items()}
    assert got == {"VCPU": 16.0, "MEMORY_MB": 1.0, "DISK_GB": 1.25}


def test_node_inventory_with_written_numbers() -> None:
    s = _settings(
        reserved_host_cpus="1", reserved_host_memory_mb="2048", reserved_host_disk_mb="1500"
    )
    node = ComputeNode(
        "cell1", "u1", "h1", "h1.example", 32, 131072, 0,
        {"VCPU": 8.0, "MEMORY_MB": None, "DISK_GB": 0.0},
    )  # fmt: skip
    assert node_inventory(node, s) == {
        # total, reserved, min_unit, max_unit, step_size, allocation_ratio;
        # DISK_GB is left out: Placement refuses a total of 0.
        "VCPU": Inventory(32, 1, 1, 32, 1, 8.0),
        "MEMORY_MB": Inventory(131072, 2048, 1, 131072, 1, 1.0),
    }
    defaults = node_inventory(ComputeNode("cell1", "u2", "h2", "h2", 4, 8192, 40, {}), _settings())
    assert defaults == {
        "VCPU": Inventory(4, 0, 1, 4, 1, 4.0),
        "MEMORY_MB": Inventory(8192, 512, 1, 8192, 1, 1.0),
        "DISK_GB": Inventory(40, 0, 1, 40, 1, 1.0),
    }
    # reserved_host_disk_mb rounds up to whole GB (1500 MB -> 2 GB).
    disk = node_inventory(ComputeNode("c", "u3", "h3", "h3", 1, 1, 10, {}), s)["DISK_GB"]
    assert disk == Inventory(10, 2, 1, 10, 1, 1.0)
