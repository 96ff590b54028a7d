"""The apt boundary, faked: a unit's Ubuntu series and nova-common, without touching apt.

Installs and upgrades are recorded, and what they install is the version the
origin's release ships, so the charm's upgrade path runs as on a unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from novadb.schema.releases import RELEASES, release_for_nova_version

from installed import Installed
from nova_package import Origin, PackageError

# Nova's major version per release index: xena (0) is 24, hibiscus (10) is 34.
FIRST_MAJOR = 24


def nova_version(release: str) -> str:
    """The nova-common upstream version a release ships (``2025.1`` → ``31.0.0``)."""
    index = [s for s, _ in RELEASES].index(release)
    return f"{FIRST_MAJOR + index}.0.0"


@dataclass
class FakePackages:
    """A unit's packages: ``version`` None means nova-common is not installed."""

    version: str | None = None
    ubuntu: str = "noble"
    fail_install: str | None = None
    installs: list[str] = field(default_factory=list)

    def series(self) -> str:
        return self.ubuntu

    def installed(self) -> Installed | None:
        if self.version is None:
            return None
        return Installed(self.version, release_for_nova_version(self.version))

    def install(self, origin: Origin) -> Installed:
        self.installs.append(origin.text)
        if self.fail_install is not None:
            raise PackageError(self.fail_install)
        self.version = nova_version(RELEASES[origin.release][0])
        installed = self.installed()
        assert installed is not None
        return installed
