"""Which fedradval and which Flower are installed, and whether that Flower is one this release supports.

The supported Flower range has one source: the ``flwr`` requirement in ``pyproject.toml``, read back from
the installed package's metadata (``importlib.metadata.requires("fedradval")``), so the range a site
enforces is exactly the one the release was built and tested with. Used by ``site-client join``, the
site's SuperExec, ``coordinator start`` and both ``doctor`` commands.

The fedradval release itself travels in the handshake (``protocols.contract.RELEASE``): the coordinator sends
its release, a site running another one refuses, and the coordinator drops a site that reports another one.
"The same release" is :func:`same_release`: equal as PEP 440 versions (``0.1`` is ``0.1.0``), local labels
included (``0.1.0+hospital.patch`` is a different build, so it is a different release).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

PACKAGE = "fedradval"


class UnsupportedFlowerError(RuntimeError):
    """The installed Flower is outside the range this fedradval release pins."""


@lru_cache(maxsize=1)
def fedradval_version() -> str:
    """The installed fedradval release (what ``--version`` prints and the handshake should carry)."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "0+unknown"  # running from a source tree that was never installed


def same_release(first: str, second: str) -> bool:
    """Whether two fedradval release strings name the same release (PEP 440 equality; text equality for a
    string that is not a version)."""
    try:
        return Version(first) == Version(second)
    except InvalidVersion:
        return first == second


def flower_version() -> str:
    return metadata.version("flwr")


def supported_flower_range(requirements: list[str] | None = None) -> str:
    """The specifier of the ``flwr`` requirement (``>=1.41,<1.42``); a requirement without an extra
    marker wins over one that only an optional extra brings."""
    if requirements is None:
        requirements = metadata.requires(PACKAGE) or []
    found = [Requirement(text) for text in requirements if Requirement(text).name.lower() == "flwr"]
    if not found:
        raise UnsupportedFlowerError(f"the installed {PACKAGE} metadata names no flwr requirement; reinstall {PACKAGE}")
    found.sort(key=lambda req: req.marker is not None)
    return str(found[0].specifier)


def flower_version_problem(installed: str | None = None, supported: str | None = None) -> str | None:
    """None when the installed Flower is inside the pinned range, else a message that says what to do."""
    installed = installed or flower_version()
    supported = supported if supported is not None else supported_flower_range()
    if Version(installed) in SpecifierSet(supported):
        return None
    return (
        f"Flower (flwr) {installed} is installed, but {PACKAGE} {fedradval_version()} supports flwr{supported} "
        f"only; install the Flower version this release pins (`pip install 'flwr{supported}'`, or reinstall "
        f"{PACKAGE} {fedradval_version()} into a fresh environment)"
    )


def require_supported_flower() -> None:
    """Raise :class:`UnsupportedFlowerError` when the installed Flower is outside the pinned range."""
    problem = flower_version_problem()
    if problem:
        raise UnsupportedFlowerError(problem)
