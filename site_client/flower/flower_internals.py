"""Every adaptation of Flower's internals that the site makes, in one module, checked before use.

Flower 1.41 gives a SuperNode's ClientApp process whatever the coordinator's FAB (Flower App Bundle) says:
it unpacks the FAB under FLWR_HOME, puts that folder first on ``sys.path`` and imports the ``clientapp``
component named in the FAB's ``pyproject.toml``. A coordinator (or anyone reaching the SuperLink's Control
API, which has no access control in open-source Flower) could therefore run its own code at a hospital,
e.g. a package named like a dependency the study imports lazily. A fedradval site runs only the code its
IT department installed. In every ClientApp process the site starts (warm forks and cold processes alike,
see :mod:`site_client.flower.warm_exec`), :func:`confine_clientapp` replaces two names Flower's ClientApp
entry point (``flwr.supernode.runtime.run_clientapp``) looks up:

* ``install_from_fab`` -> :func:`verify_fab`: the FAB is read in memory and never unpacked; it may hold
  only ``pyproject.toml`` (and Flower's ``.info/`` manifest), and its components must be exactly
  :data:`INSTALLED_COMPONENTS`; anything else is refused before any study code runs.
* ``get_load_client_app_fn`` -> a loader that returns the installed ``site_client.flower.client_app.app``,
  imported from the fedradval package (nothing of the FAB is on ``sys.path``).

and :func:`use_executor` replaces ``get_executor`` in Flower's SuperExec loop (the fork / bounded
executors). :func:`check_flower_internals` verifies, before anything is patched, that the installed Flower
is in the pinned range and still has these names with the expected parameters; a Flower upgrade that
moved them stops the site with a message instead of silently running Flower's own loader.
"""

from __future__ import annotations

import importlib
import inspect
import io
import logging
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowerglue.versions import UnsupportedFlowerError, require_supported_flower

log = logging.getLogger("fedradval.site.flower")

# The components of the study app that ``coordinator run`` ships (coordinator/flower/app/pyproject.toml);
# a test checks the two agree.
INSTALLED_COMPONENTS = {
    "serverapp": "coordinator.flower.server_app:app",
    "clientapp": "site_client.flower.client_app:app",
}
FAB_ALLOWED_FILES = frozenset({"pyproject.toml"})
FAB_MANIFEST_DIR = ".info/"

RUN_CLIENTAPP = "flwr.supernode.runtime.run_clientapp"
RUN_SUPEREXEC = "flwr.supercore.superexec.run_superexec"
# module -> {name: parameters it must accept}; what the patches below rely on.
EXPECTED_INTERNALS: dict[str, dict[str, tuple[str, ...]]] = {
    RUN_CLIENTAPP: {
        "run_clientapp": ("runtime_api_address", "token", "insecure", "certificates", "parent_pid",
                          "runtime_dependency_install"),
        "install_from_fab": ("fab_file",),
        "get_load_client_app_fn": ("default_app_ref", "app_path", "multi_app"),
    },
    RUN_SUPEREXEC: {
        "run_superexec": ("runtime_api_address", "insecure", "superexec_auth_secret", "parent_pid",
                          "runtime_dependency_install"),
        "get_executor": (),
    },
}


class FlowerInternalsError(RuntimeError):
    """The installed Flower does not have what the site's adaptations need."""


class FabRefused(RuntimeError):
    """The coordinator's FAB is not the installed study app: nothing of it runs at this site."""


def check_flower_internals() -> None:
    """Raise :class:`FlowerInternalsError` (version outside the pinned range, or a name/parameter gone)."""
    try:
        require_supported_flower()
    except UnsupportedFlowerError as exc:
        raise FlowerInternalsError(str(exc)) from None
    problems = []
    for module_name, names in EXPECTED_INTERNALS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            problems.append(f"{module_name} cannot be imported ({exc})")
            continue
        for name, parameters in names.items():
            target = getattr(module, name, None)
            if not callable(target):
                problems.append(f"{module_name}.{name} is missing")
                continue
            accepted = inspect.signature(target).parameters
            missing = [p for p in parameters if p not in accepted]
            if missing:
                problems.append(f"{module_name}.{name} no longer takes {', '.join(missing)}")
    if problems:
        raise FlowerInternalsError(
            "the installed Flower differs from the one this fedradval release adapts: " + "; ".join(problems)
            + ". Install the Flower version pinned by fedradval.")


def verify_fab(fab: bytes | Path, *_: Any, **__: Any) -> Path:
    """Refuse (:class:`FabRefused`) a FAB that carries any file beyond ``pyproject.toml`` or names other
    components than :data:`INSTALLED_COMPONENTS`. Unpacks nothing; returns a path that is never used."""
    data = fab.read_bytes() if isinstance(fab, Path) else bytes(fab)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            extra = sorted(n for n in names if n not in FAB_ALLOWED_FILES and not n.startswith(FAB_MANIFEST_DIR))
            if extra:
                shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
                raise _refuse(f"the study app bundle carries files ({shown}); this site runs only the "
                              "installed fedradval code and accepts a bundle holding pyproject.toml only")
            if "pyproject.toml" not in names:
                raise _refuse("the study app bundle has no pyproject.toml")
            config = tomllib.loads(archive.read("pyproject.toml").decode("utf-8"))
    except (zipfile.BadZipFile, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _refuse(f"the study app bundle cannot be read ({type(exc).__name__})") from None
    components = config.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {})
    if components != INSTALLED_COMPONENTS:
        raise _refuse(f"the study app bundle names components {components!r}; this site runs only "
                      f"{INSTALLED_COMPONENTS!r} from the installed fedradval package")
    log.debug("study app bundle checked: pyproject.toml only, installed components")
    return Path("/nonexistent/fedradval-fab-not-installed")


def _refuse(reason: str) -> FabRefused:
    log.error("refused the coordinator's app bundle before running anything: %s", reason)
    return FabRefused(reason)


def installed_client_app_loader(*_: Any, **__: Any) -> Callable[[str, str, str], Any]:
    """Stands in for Flower's ``get_load_client_app_fn``: always the installed site ClientApp."""

    def _load(_fab_id: str, _fab_version: str, _fab_hash: str) -> Any:
        module_name, _, attribute = INSTALLED_COMPONENTS["clientapp"].partition(":")
        return getattr(importlib.import_module(module_name), attribute)

    return _load


def confine_clientapp() -> Any:
    """Adapt Flower's ClientApp entry point (see module doc); returns its ``run_clientapp``."""
    check_flower_internals()
    module = importlib.import_module(RUN_CLIENTAPP)
    module.install_from_fab = verify_fab
    module.get_load_client_app_fn = installed_client_app_loader
    return module.run_clientapp


def use_executor(executor: Any) -> Any:
    """Make Flower's SuperExec loop use ``executor``; returns its ``run_superexec``."""
    check_flower_internals()
    module = importlib.import_module(RUN_SUPEREXEC)
    module.get_executor = lambda *_, **__: executor
    return module.run_superexec


START_CLIENT_INTERNAL = "flwr.supernode.start_client_internal"
# The SuperNode's fixed sleeps in flwr 1.41.0 ``supernode/start_client_internal.py`` and what the site's
# SuperNode sleeps instead (seconds):
# * line 263, ``time.sleep(3)`` after a pull that brought no message. In lockstep rounds the last site to
#   reply always pulls once more, finds nothing and sleeps: the next round's message then waits for the rest
#   of those 3 s (2.0 s median of a 5.2 s loopback round). 0.5 s: one small Fleet API request per site and
#   half-second while idle (the SuperLink answers ``receive`` from its state, nothing is pushed).
# * lines 470 and 506, ``time.sleep(0.5)`` while the ClientApp's reply (or an object of it) is not yet in
#   the SuperNode's own in-memory state: a local check, so 0.05 s.
SUPERNODE_SLEEPS = {3: 0.5, 0.5: 0.05}
SUPERNODE_SLEEP_CALLS = {"time.sleep(3)": 1, "time.sleep(0.5)": 2}  # exactly these, and no other sleep


class _ShorterSleeps:
    """Stands in for the ``time`` module inside Flower's SuperNode loop: ``sleep(d)`` sleeps
    ``SUPERNODE_SLEEPS.get(d, d)``; every other attribute is the real ``time``'s."""

    def __init__(self, real: Any, sleeps: dict[float, float]) -> None:
        self._real, self._sleeps = real, dict(sleeps)

    def sleep(self, seconds: float) -> None:
        self._real.sleep(self._sleeps.get(seconds, seconds))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def shorten_supernode_sleeps() -> bool:
    """Make the SuperNode's idle pull and reply polls shorter (:data:`SUPERNODE_SLEEPS`), only when the
    installed Flower is in the pinned range and its loop still holds exactly the sleeps listed in
    :data:`SUPERNODE_SLEEP_CALLS`. Returns False (Flower's own timing is kept, with a warning) otherwise: the
    change only saves time, so a Flower that moved these lines still runs, just slower."""
    try:
        require_supported_flower()
        module = importlib.import_module(START_CLIENT_INTERNAL)
        source = inspect.getsource(module)
    except (UnsupportedFlowerError, ImportError, OSError) as exc:
        log.warning("SuperNode idle sleep left at Flower's default: %s", exc)
        return False
    found = {call: source.count(call) for call in SUPERNODE_SLEEP_CALLS}
    if found != SUPERNODE_SLEEP_CALLS or source.count("sleep(") != sum(SUPERNODE_SLEEP_CALLS.values()) \
            or not isinstance(getattr(module, "time", None), type(inspect)):
        log.warning("SuperNode idle sleep left at Flower's default: %s no longer has the sleeps %s (found %s)",
                    START_CLIENT_INTERNAL, SUPERNODE_SLEEP_CALLS, found)
        return False
    module.time = _ShorterSleeps(module.time, SUPERNODE_SLEEPS)
    return True


FLEET_HTTP = "flwr.supernode.fleet_http_connection"
EXPECTED_INTERNALS[FLEET_HTTP] = {"FleetHttpClient": (), "NodeAuthHttpInterceptor": ("private_key", "public_key")}


SUPERNODE_LAUNCHER = "site_client.flower.supernode_launcher"  # ``python -m`` this: the site's SuperNode


def running_supernode_with_key(private_key: Path) -> int | None:
    """The pid of a live SuperNode (``flower-supernode``, or ``python -m`` :data:`SUPERNODE_LAUNCHER`) on
    this machine started with ``private_key``, else None."""
    wanted = str(private_key.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        supernode = any(w.endswith("flower-supernode") for w in words[:2]) or SUPERNODE_LAUNCHER in words[:3]
        if supernode and "--auth-supernode-private-key" in words:
            index = words.index("--auth-supernode-private-key")
            if index + 1 < len(words) and words[index + 1] == wanted:
                return int(entry.name)
    return None


class KeyProbe:
    """Outcome of :func:`probe_node_key`: ``accepted`` (True/False/None = could not tell) and a reason."""

    def __init__(self, accepted: bool | None, reason: str) -> None:
        self.accepted, self.reason = accepted, reason


def probe_node_key(address: str, root_certificates: Path | None, private_key: Path, insecure: bool = False) -> KeyProbe:
    """Ask the SuperLink whether it accepts this SuperNode key, the way ``flower-supernode`` does on start:
    a signed ActivateNode call over the Fleet API. A node it activates is deactivated at once (it was
    offline before); a node that is online already (``site-client join`` running) is left alone.
    Tells an unregistered key, a signature refused (clock off) and an accepted key apart."""
    import httpx
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL
    from flwr.proto.fleet_pb2 import ActivateNodeRequest, DeactivateNodeRequest  # pylint: disable=E0611
    from flwr.supercore.error import FlowerError
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    module = importlib.import_module(FLEET_HTTP)
    try:
        key = load_ssh_private_key(private_key.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        return KeyProbe(False, f"{private_key} is not a readable SuperNode private key ({exc})")
    public = key.public_key()
    client = module.FleetHttpClient.from_server_address(
        address, insecure, None if insecure else (root_certificates.read_bytes() if root_certificates else None),
        interceptors=[module.NodeAuthHttpInterceptor(key, public)])
    try:
        response = client.ActivateNode(ActivateNodeRequest(public_key=public_key_to_bytes(public),
                                                           heartbeat_interval=HEARTBEAT_DEFAULT_INTERVAL))
        try:
            client.DeactivateNode(DeactivateNodeRequest(node_id=response.node_id))
        except httpx.HTTPError:
            pass
        return KeyProbe(True, f"key registered (node id {response.node_id})")
    except httpx.HTTPStatusError as exc:
        error = FlowerError.from_json(exc.response.text)
        text = error.message if error else exc.response.text[:300]
        if exc.response.status_code == 412:  # Flower hides the detail: not registered, or online already
            running = running_supernode_with_key(private_key)
            if running is not None:
                return KeyProbe(True, f"key in use by the SuperNode running here (pid {running}); the SuperLink "
                                "accepted it")
            return KeyProbe(False, "the SuperLink does not accept this key: send the .pub file to the coordinator "
                            "(`coordinator register-site NAME KEY.pub`); if `site-client join` with this key runs "
                            "on another machine, the key is in use there")
        if exc.response.status_code == 401:
            return KeyProbe(False, "the SuperLink refused the key's signature: check that this machine's clock is "
                            "synchronised (Flower allows a few seconds) and that the key file is intact")
        return KeyProbe(None, f"the SuperLink answered HTTP {exc.response.status_code}: {text}")
    except httpx.HTTPError as exc:
        return KeyProbe(None, f"the Fleet API did not answer ({type(exc).__name__}: {exc})")
    finally:
        client.close()
