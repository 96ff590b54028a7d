"""The archive graph read from a database Nova's schema created."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from novadb.archive.graph import Edge, load_graph
from novadb.config import load_settings
from novadb.schema.sync import sync


def test_graph_of_a_nova_34_cell(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cell.sqlite'}"
    sync(load_settings(database=url, api_database=f"sqlite:///{tmp_path / 'api.sqlite'}"), "main")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        graph = load_graph(conn)
    engine.dispose()

    # No shadow twin: console_auth_tokens, tags, share_mapping. Legacy tables are not model tables.
    assert "console_auth_tokens" not in graph.tables
    assert "share_mapping" not in graph.tables
    assert "tags" not in graph.tables
    assert "fixed_ips" not in graph.tables and "consoles" not in graph.tables
    assert graph.tables.index("instances") < graph.tables.index("instance_extra")
    assert len(graph.tables) == 27

    instance_children = {e.child for e in graph.children("instances")}
    assert instance_children == {
        "block_device_mapping", "instance_actions", "instance_extra", "instance_faults",
        "instance_info_caches", "instance_metadata", "instance_system_metadata", "migrations",
        "security_group_instance_association", "virtual_interfaces",
    }  # fmt: skip
    subtree = graph.subtree("instances")
    events = Edge("instance_actions_events", "action_id", "instance_actions", "id")
    actions = Edge("instance_actions", "instance_uuid", "instances", "uuid")
    # Grandchildren move before their parents.
    assert subtree.index(events) < subtree.index(actions)
    assert len(subtree) == 11
    assert {e.column for e in graph.children("security_groups")} == {
        "security_group_id",
        "parent_group_id",
        "group_id",
    }
