"""Nova's package on the unit: where it comes from, installing it, and its version.

``openstack-origin`` is read as the classic OpenStack charms read it, so the
values COU writes (``cloud:<series>-<codename>``) and the ones operators know
work unchanged:

- ``distro``: the Ubuntu series' own release (noble ships 2024.1 caracal);
- ``cloud:<series>-<codename>``, with an optional ``/updates`` or
  ``/proposed`` pocket, or ``cloud:<series>-updates/<codename>``: the Ubuntu
  Cloud Archive's pocket for that release;
- ``cloud:<series>-<codename>/staging``: the Cloud Archive's staging PPA;
- a bare codename or ``YYYY.N``: the series' distro release when it is that
  one, else the Cloud Archive pocket for it.

Packages go through charmlibs-apt.  The workload version is the installed
``nova-common``'s upstream version (``31.0.0``), which COU maps to a release.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from charmlibs import apt
from novadb.errors import BadInput, ConfigError
from novadb.schema.releases import RELEASES, release_for_nova_version, release_index

from installed import Installed

PACKAGE = "nova-common"
CLOUD_ARCHIVE = "http://ubuntu-cloud.archive.canonical.com/ubuntu"
CLOUD_KEYRING = "ubuntu-cloud-keyring"

# The release each Ubuntu series ships in its own archive.
DISTRO_RELEASE = {
    "focal": "ussuri",
    "jammy": "yoga",
    "noble": "caracal",
    "oracular": "dalmatian",
    "plucky": "epoxy",
    "questing": "flamingo",
    "resolute": "gazpacho",
}
# The Cloud Archive pockets each LTS series has (the releases after its own,
# up to the next LTS's).
CLOUD_POCKETS = {
    "focal": ("victoria", "wallaby", "xena", "yoga"),
    "jammy": ("zed", "antelope", "bobcat", "caracal"),
    "noble": ("dalmatian", "epoxy", "flamingo", "gazpacho"),
    "resolute": ("hibiscus",),
}

_CLOUD = re.compile(
    r"^cloud:(?P<series>[a-z]+)-(?:(?P<codename>[a-z]+)(?:/(?P<pocket>updates|proposed|staging))?"
    r"|(?P<pocket2>updates|proposed)/(?P<codename2>[a-z]+))$"
)


@dataclass(frozen=True)
class Origin:
    """Where Nova's packages come from, and the release that gives.

    ``pocket`` is ``distro``, ``updates``, ``proposed`` or ``staging``;
    ``release`` is an index into novadb's release list.
    """

    text: str
    series: str
    codename: str
    pocket: str
    release: int

    @property
    def cloud_archive(self) -> bool:
        """True when the packages come from the Ubuntu Cloud Archive (or its PPA)."""
        return self.pocket != "distro"


def _codename(name: str) -> str:
    """A release given as codename or YYYY.N, as its codename (BadInput if unknown)."""
    return RELEASES[release_index(name)][1]


def parse_origin(text: str, series: str) -> Origin:
    """Read ``openstack-origin`` on a unit of Ubuntu ``series``; ConfigError if it cannot work.

    The error says what values work, so an operator can fix the option.
    """
    value = text.strip() or "distro"
    hint = (
        f"use distro, cloud:{series}-<codename> (e.g. cloud:{series}-"
        f"{(CLOUD_POCKETS.get(series) or ('epoxy',))[0]}) or a release name"
    )
    if value == "distro":
        codename = DISTRO_RELEASE.get(series)
        if codename is None:
            raise ConfigError(f"openstack-origin distro: Ubuntu {series} is not supported; {hint}")
        return _origin(value, series, codename, "distro", hint)
    match = _CLOUD.match(value)
    if match is not None:
        named_series = match["series"]
        codename = match["codename"] or match["codename2"]
        pocket = match["pocket"] or match["pocket2"] or "updates"
        if named_series != series:
            raise ConfigError(
                f"openstack-origin {value} is for Ubuntu {named_series}, but this unit runs "
                f"{series}; {hint}"
            )
        if codename not in CLOUD_POCKETS.get(series, ()):
            raise ConfigError(
                f"openstack-origin {value}: the Cloud Archive has no {codename} pocket for "
                f"{series}; {hint}"
            )
        return _origin(value, series, codename, pocket, hint)
    try:
        codename = _codename(value)
    except BadInput:
        raise ConfigError(f"openstack-origin {value!r} is not understood; {hint}") from None
    if DISTRO_RELEASE.get(series) == codename:
        return _origin(value, series, codename, "distro", hint)
    if codename in CLOUD_POCKETS.get(series, ()):
        return _origin(value, series, codename, "updates", hint)
    raise ConfigError(f"openstack-origin {value}: Ubuntu {series} has no {codename}; {hint}")


def _origin(text: str, series: str, codename: str, pocket: str, hint: str) -> Origin:
    try:
        release = release_index(codename)
    except BadInput:  # novadb knows no schema for releases before xena
        raise ConfigError(
            f"openstack-origin {text}: novadb supports {RELEASES[0][1]} and later; {hint}"
        ) from None
    return Origin(text, series, codename, pocket, release)


def upstream_version(debian_version: str) -> str:
    """``3:31.0.0-0ubuntu1~cloud0`` → ``31.0.0``; ``31.0.0~rc1-0ubuntu1`` → ``31.0.0rc1``.

    COU parses the workload version as a Python version, so the Debian epoch
    and revision go, and a ``~`` pre-release becomes PEP 440's form.
    """
    version = debian_version.split(":", 1)[-1]
    if "-" in version:
        version = version.rsplit("-", 1)[0]
    return version.replace("~", "")


class Packages(Protocol):
    """What the charm needs from the machine and apt; the real one is :class:`AptPackages`."""

    def series(self) -> str:
        """The Ubuntu series the unit runs (``noble``)."""
        ...

    def installed(self) -> Installed | None:
        """nova-common's installed version, or None when it is not installed."""
        ...

    def install(self, origin: Origin) -> Installed:
        """Point apt at ``origin`` and install or upgrade nova-common from it."""
        ...


class PackageError(ConfigError):
    """Installing or upgrading Nova's package failed; the message says what to do."""


class AptPackages:
    """nova-common through charmlibs-apt, on the unit's Ubuntu."""

    def series(self) -> str:
        """VERSION_CODENAME from /etc/os-release."""
        try:
            text = Path("/etc/os-release").read_text()
        except OSError:
            return "unknown"
        for line in text.splitlines():
            name, _, value = line.partition("=")
            if name == "VERSION_CODENAME":
                return value.strip().strip('"')
        return "unknown"

    def installed(self) -> Installed | None:
        """Read nova-common's version from dpkg."""
        try:
            package = apt.DebianPackage.from_installed_package(PACKAGE)
        except apt.PackageNotFoundError:
            return None
        version = upstream_version(str(package.version))
        return Installed(version, release_for_nova_version(version))

    def install(self, origin: Origin) -> Installed:
        """Add the origin's source (with the Cloud Archive's keyring), update, install."""
        try:
            if origin.pocket == "staging":
                # charmlibs-apt adds deb lines, not PPAs whose key must be fetched.
                subprocess.run(
                    ["add-apt-repository", "--yes", "--no-update",
                     f"ppa:ubuntu-cloud-archive/{origin.codename}-staging"],
                    check=True, capture_output=True, text=True, timeout=300,
                )  # fmt: skip
            elif origin.cloud_archive:
                apt.add_package(CLOUD_KEYRING, update_cache=True)
                repository = apt.DebianRepository(
                    enabled=True,
                    repotype="deb",
                    uri=CLOUD_ARCHIVE,
                    release=f"{origin.series}-{origin.pocket}/{origin.codename}",
                    groups=["main"],
                )
                apt.RepositoryMapping().add(repository)
            apt.update()
            package = apt.DebianPackage.from_apt_cache(PACKAGE)
            package.ensure(apt.PackageState.Latest)
        except (apt.Error, subprocess.SubprocessError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise PackageError(
                f"installing {PACKAGE} from {origin.text} failed: {first}; check the unit's "
                "apt sources and network, then run the openstack-upgrade action"
            ) from exc
        installed = self.installed()
        if installed is None:
            raise PackageError(
                f"{PACKAGE} is not installed after installing it from {origin.text}"
            )
        return installed
