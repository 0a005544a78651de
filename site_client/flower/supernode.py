"""Run the site's SuperNode and keep it running: restart with exponential back-off whenever it exits.

The SuperNode gets its node_config from a TOML file (``<work-dir>/node-config.toml``): every value is
a quoted TOML string, because Flower rejects bare strings (and paths contain '/' and spaces).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from site_client.flower.client_app import SiteSettings
from protocols.files import write_atomic

# flower-supernode exit codes worth explaining to hospital IT (flwr.common.exit.ExitCode). Flower prints
# "Exit Code: <n>" before leaving (the process status itself may be 1), so the supervisor reads its output.
EXIT_CODE_LINE = re.compile(r"Exit Code: (\d+)")
# After an HTTP 500 from the SuperLink (SQLite "database is locked" under load), flower-supernode 1.41
# logs "SuperNode terminated gracefully" but its process can stay alive, serving nothing. The supervisor
# ends such a process after HUNG_AFTER_S and restarts it.
FINISHED_LINE = "SuperNode terminated gracefully"
HUNG_AFTER_S = 10.0
EXIT_HINTS = {
    305: "the SuperLink refused this SuperNode: its key is not registered with the coordinator "
    "(send your .pub file), or the TLS certificate could not be verified (check --root-certificates); "
    "`site-client doctor` tells which",
    3: "stopped by SIGTERM",
}
# Phrases in the SuperNode's output that name the cause more precisely than its exit code: Flower exits
# with 305 both for an unregistered key and for a TLS failure.
CAUSES = (
    ("Failed to activate SuperNode",
     "the SuperLink does not accept this site's key: the key is not registered with the coordinator (send your .pub "
     "file), or a SuperNode with the same key is online already"),
    ("CERTIFICATE_VERIFY_FAILED",
     "the coordinator's TLS certificate could not be verified with --root-certificates (wrong ca.crt, a host "
     "name the certificate does not list, or a TLS-inspecting proxy); `site-client doctor` tells which"),
    ("Invalid SuperNode authentication",
     "the SuperLink refused this key's signature: check that the clock is synchronised"),
)


def node_config_toml(settings: SiteSettings) -> str:
    """node_config as TOML, every value quoted."""
    values = {
        "site-name": settings.site_name,
        "data": str(settings.data.resolve()),
        "data-kind": settings.data_kind,
        "work-dir": str(settings.work_dir.resolve()),
        "protocol-path": str(settings.protocol_path.resolve()),
        "approvals-path": str(settings.approvals_path.resolve()),
    }
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


def write_node_config(settings: SiteSettings) -> Path:
    path = settings.work_dir / "node-config.toml"
    write_atomic(path, node_config_toml(settings).encode("utf-8"))
    return path


def supernode_launcher_command() -> list[str]:
    """The site's SuperNode: ``flower-supernode`` through :mod:`site_client.flower.supernode_launcher` (Flower's
    fixed idle sleep shortened where the installed Flower is the pinned one), from this Python."""
    return [sys.executable, "-m", "site_client.flower.supernode_launcher"]


def supernode_command(
    coordinator: str,
    node_config: Path,
    clientappio_port: int,
    root_certificates: Path | None = None,
    key: Path | None = None,
    insecure: bool = False,
    executable: str | None = None,
    superexec_auth_secret_file: Path | None = None,
) -> list[str]:
    """Arguments for ``flower-supernode`` (started through :func:`supernode_launcher_command` unless
    ``executable`` names another); TLS unless ``insecure``; a key turns on authentication.

    The SuperNode always leaves ClientApps to the site's SuperExec (``--isolation process``, see
    :mod:`site_client.flower.warm_exec`), which the supervisor starts next to it: Flower's own
    ``--isolation subprocess`` would install and run the coordinator's FAB. ``superexec_auth_secret_file``
    protects the local Runtime API (only a SuperExec holding the secret may take tasks).
    """
    command = [
        *([executable] if executable else supernode_launcher_command()),
        "--superlink",
        coordinator,
        "--node-config",
        str(node_config),
        "--port",
        str(clientappio_port),
    ]
    command += ["--isolation", "process"]
    if superexec_auth_secret_file is not None:
        command += ["--superexec-auth-secret-file", str(superexec_auth_secret_file)]
    if insecure:
        if key is not None:
            raise ValueError("--key needs TLS: SuperNode authentication is not possible with --insecure")
        return command + ["--insecure"]
    if root_certificates is not None:
        command += ["--root-certificates", str(root_certificates)]
    if key is not None:
        command += ["--auth-supernode-private-key", str(key)]
    return command


def backoff_delays(initial_s: float = 2.0, maximum_s: float = 60.0) -> Iterator[float]:
    """initial, 2*initial, 4*initial, ... capped at maximum."""
    delay = initial_s
    while True:
        yield delay
        delay = min(delay * 2, maximum_s)


def _relay(child: subprocess.Popen[bytes], reported: list[int], finished: threading.Event,
           causes: list[str] | None = None) -> None:
    """Copy the SuperNode's output to our stderr; note the exit code Flower prints, its farewell line and
    any known cause of a failure (:data:`CAUSES`)."""
    assert child.stdout is not None
    for raw in child.stdout:
        sys.stderr.buffer.write(raw)
        sys.stderr.buffer.flush()
        text = raw.decode(errors="replace")
        match = EXIT_CODE_LINE.search(text)
        if match:
            reported.append(int(match.group(1)))
        if FINISHED_LINE in text:
            finished.set()
        if causes is not None:
            causes.extend(cause for phrase, cause in CAUSES if phrase in text and cause not in causes)


class CompanionWatch:
    """Keeps the site's SuperExec (the companion of the SuperNode) running while the SuperNode runs.

    A SuperExec that exits is restarted (after ``restart_delay_s``); one that exited ``fallback_after``
    times within ``window_s`` in its first mode (the warm fork: an import error after an upgrade, out of
    memory) is restarted in ``fallback_mode`` (fresh processes, still only the installed study code), with
    a message. A SuperExec that exits with ``fatal_codes`` (the installed Flower is not supported) stops
    the site: restarting cannot help.
    """

    def __init__(self, command: Callable[[int, str], list[str]], env: dict[str, str], say: Callable[[str], None],
                 modes: tuple[str, ...] = ("fork", "spawn"), fallback_after: int = 3, window_s: float = 300.0,
                 restart_delay_s: float = 2.0, fatal_codes: frozenset[int] = frozenset({78})) -> None:
        self.command, self.env, self.say = command, env, say
        self.modes = modes
        self.mode = modes[0]
        self.fallback_after, self.window_s, self.restart_delay_s = fallback_after, window_s, restart_delay_s
        self.fatal_codes = fatal_codes
        self.process: subprocess.Popen[bytes] | None = None
        self.exits: list[float] = []
        self.fatal: int | None = None
        self._parent = 0
        self._restart_at: float | None = None

    def start(self, parent_pid: int) -> None:
        self._parent = parent_pid
        self.process = subprocess.Popen(self.command(parent_pid, self.mode), env=self.env)
        self._restart_at = None

    def poll(self) -> None:
        """Called while the SuperNode runs: notice an exit, schedule and do the restart."""
        if self.process is not None and self._restart_at is None:
            code = self.process.poll()
            if code is None:
                return
            now = time.monotonic()
            if code in self.fatal_codes:
                self.fatal = code
                self.say(f"site SuperExec exited with code {code}: it cannot run with the installed Flower; "
                         "stopping the site (see the message above)")
                return
            self.exits = [t for t in self.exits if now - t < self.window_s] + [now]
            if len(self.exits) >= self.fallback_after and self.mode != self.modes[-1]:
                self.mode = self.modes[self.modes.index(self.mode) + 1]
                self.exits = []
                self.say(f"site SuperExec exited {self.fallback_after} times in {self.window_s:.0f} s; "
                         f"falling back to '{self.mode}' mode (a fresh process per message, slower, still only "
                         "the installed study code)")
            self.say(f"site SuperExec exited with code {code}; restarting it in {self.restart_delay_s:.0f} s "
                     "(messages wait on the SuperNode meanwhile)")
            self._restart_at = now + self.restart_delay_s
        if self._restart_at is not None and time.monotonic() >= self._restart_at:
            self.start(self._parent)

    def stop(self) -> None:
        _stop_process(self.process)
        self.process = None


def _wait(child: subprocess.Popen[bytes], finished: threading.Event, say: Callable[[str], None],
          companion: CompanionWatch | None = None) -> int:
    """Wait for the SuperNode to exit; end it when it said goodbye but is still running HUNG_AFTER_S later,
    or when its companion SuperExec cannot run at all. Restarts the companion meanwhile."""
    while True:
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        if companion is not None:
            companion.poll()
            if companion.fatal is not None:
                _stop_process(child)
                return companion.fatal
        if finished.is_set():
            try:
                return child.wait(timeout=HUNG_AFTER_S)
            except subprocess.TimeoutExpired:
                say(f"SuperNode reported termination but is still running after {HUNG_AFTER_S:.0f} s; stopping it")
                child.terminate()
                try:
                    return child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    return child.wait()


def _stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 15 s; nothing when it has already exited."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def supervise(
    command: list[str],
    env: dict[str, str],
    say: Callable[[str], None],
    initial_backoff_s: float = 2.0,
    max_backoff_s: float = 60.0,
    stable_after_s: float = 120.0,
    max_restarts: int | None = None,
    companion: CompanionWatch | None = None,
    warn: Callable[[str], None] | None = None,
) -> int:
    """Run ``command`` until SIGTERM/SIGINT; restart it with back-off after every exit.

    ``companion``: the site's SuperExec, started with each run of ``command`` (given its pid), watched and
    restarted while it runs (:class:`CompanionWatch`) and stopped with it. A run that lasted ``stable_after_s`` resets the back-off. Returns the last exit code. The child stays
    in this process's group, so stopping the group (Ctrl-C, a service manager) stops the SuperNode and its
    ClientApps too; SIGTERM/SIGINT to this process alone is forwarded (SIGKILL after 15 s).
    ``warn`` (default ``say``) gets the lines about exits and restarts.
    """
    warn = warn or say
    child: subprocess.Popen[bytes] | None = None
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.terminate()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    delays = backoff_delays(initial_s=initial_backoff_s, maximum_s=max_backoff_s)
    restarts = 0
    code = 0
    try:
        while not stopping:
            started = time.monotonic()
            # unbuffered: a pipe would otherwise hold the SuperNode's last lines until it exits
            child = subprocess.Popen(command, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
            say(f"SuperNode started (pid {child.pid})")
            if companion is not None:
                companion.start(child.pid)
            reported: list[int] = []
            causes: list[str] = []
            finished = threading.Event()
            reader = threading.Thread(target=_relay, args=(child, reported, finished, causes), daemon=True)
            reader.start()
            code = _wait(child, finished, warn, companion)
            reader.join(timeout=5)
            if companion is not None:
                companion.stop()
            if reported:
                code = reported[-1]
            if stopping or (companion is not None and companion.fatal is not None):
                break
            if time.monotonic() - started >= stable_after_s:
                delays = backoff_delays(initial_s=initial_backoff_s, maximum_s=max_backoff_s)
            if max_restarts is not None and restarts >= max_restarts:
                warn(f"SuperNode exited with code {code}; giving up after {restarts} restart(s)")
                break
            delay = next(delays)
            hint = f" ({'; '.join(causes)})" if causes else f" ({EXIT_HINTS[code]})" if code in EXIT_HINTS else ""
            warn(f"SuperNode exited with code {code}{hint}; restarting in {delay:.0f} s")
            deadline = time.monotonic() + delay
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.2)
            restarts += 1
    finally:
        _stop_process(child)
        if companion is not None:
            companion.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
