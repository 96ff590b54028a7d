"""What the charm tests share: rebuild-placement's backup directory and two clouds.

The Placement cloud (placement_cloud.py) and the demo's cloud at 2025.1
(demo_cloud.py) are each made once per worker and copied by every test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import charm
from tests.charm import demo_cloud
from tests.charm.demo_cloud import DemoCloud
from tests.charm.fake_packages import FakePackages
from tests.charm.placement_cloud import PlacementCloud, copy_cloud, make_template


@pytest.fixture(autouse=True)
def backup_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """charm.BACKUP_DIR (/var/lib/novadb on a unit), not created: no test writes outside tmp."""
    path = tmp_path / "var-lib-novadb"
    monkeypatch.setattr(charm, "BACKUP_DIR", path)
    return path


@pytest.fixture(autouse=True)
def packages(monkeypatch: pytest.MonkeyPatch) -> FakePackages:
    """No test touches apt: the charm sees a noble unit with nova-common 34.0.0 (2026.2)."""
    fake = FakePackages(version="34.0.0")
    monkeypatch.setattr(charm.NovaCloudControllerCharm, "packages", fake)
    return fake


@pytest.fixture(scope="session")
def placement_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two-cell Placement cloud, made once per worker and copied by each test."""
    directory = tmp_path_factory.mktemp("placement")
    make_template(directory)
    return directory


@pytest.fixture
def pcloud(tmp_path: Path, placement_template: Path, backup_dir: Path) -> Iterator[PlacementCloud]:
    """A copy of the Placement cloud of the test's own, and its nova.conf."""
    made = copy_cloud(placement_template, tmp_path, backup_dir)
    yield made
    made.cloud.close()


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's cloud at 2025.1, made once per worker and copied by each test."""
    directory = tmp_path_factory.mktemp("demo")
    demo_cloud.make_template(directory)
    return directory


@pytest.fixture
def demo(tmp_path: Path, demo_template: Path) -> DemoCloud:
    """A copy of the demo's cloud of the test's own, and its nova.conf."""
    return demo_cloud.copy_cloud(demo_template, tmp_path)
