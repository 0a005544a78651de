"""Loopback deployment harness: real ``coordinator start`` / ``site-client join`` processes on free ports.

Every process is started with ``start_new_session=True`` (its own process group, so the SuperNode,
SuperExec and ClientApp children go with it), a private FLWR_HOME and Flower's phone-home switches off;
``close()`` sends SIGTERM to each group, SIGKILL after 15 s, and :func:`leftover_processes` lets tests
assert that nothing survived.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowerglue.runtime_env import flower_env
from coordinator.flower.flwr_cli import list_runs, list_supernodes
from coordinator.flower.state import flwr_home, runs_dir
from coordinator.flower.status import read_status, status_path
from protocols import load_protocol, protocol_id
from site_client.flower.approvals import approve
from demo.processes import free_port, process_table
from site_client.flower.keys import generate_keypair
from site_client.flower.state import approvals_path

BIN = Path(sys.executable).parent


def descendants(root: int) -> set[int]:
    """Every live descendant of ``root`` (Flower's SuperExec starts its own session, so process groups
    alone miss the ServerApp / ClientApp processes)."""
    table = process_table()
    found, frontier = set(), {root}
    while frontier:
        children = {pid for pid, (_, ppid, _, _) in table.items() if ppid in frontier and pid not in found}
        found |= children
        frontier = children
    return found


def process_groups_alive(groups: set[int]) -> list[str]:
    """'pid cmdline' of every live (non-zombie) process whose process group or session is in ``groups``."""
    alive = []
    for pid, (state, _, pgid, sid) in process_table().items():
        if state != "Z" and (pgid in groups or sid in groups):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            alive.append(f"{pid} {command[:150]}")
    return alive


@dataclass
class Site:
    name: str
    features: Path
    work_dir: Path
    key: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None


@dataclass
class Deployment:
    root: Path
    port: int = field(default_factory=free_port)
    superlink: subprocess.Popen[bytes] | None = None
    sites: dict[str, Site] = field(default_factory=dict)
    pgids: set[int] = field(default_factory=set)
    _opened: list[Any] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.root / "coordinator"

    @property
    def certs(self) -> Path:
        return self.state / "certs"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self, home: Path) -> dict[str, str]:
        return flower_env(home)

    def track(self, proc: subprocess.Popen[bytes]) -> None:
        """Remember the process groups / sessions of ``proc``'s current descendants for the leftover check."""
        table = process_table()
        for pid in descendants(proc.pid):
            if pid in table:
                self.pgids.add(table[pid][2])
                self.pgids.add(table[pid][3])

    def _spawn(self, args: list[str], log: Path, home: Path) -> subprocess.Popen[bytes]:
        handle = open(log, "ab")
        self._opened.append(handle)
        proc = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=self.env(home),
                                cwd=self.root, start_new_session=True)
        self.pgids.add(proc.pid)
        return proc

    def cli(self, tool: str, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, cwd=self.root,
                                env=self.env(self.root / "cli-home"), timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    # -- coordinator ------------------------------------------------------------------------------------
    def start_superlink(self, timeout: float = 60) -> None:
        if not (self.certs / "server.pem").exists():
            self.cli("coordinator", "certs", str(self.certs))
        self.superlink = self._spawn(
            [str(BIN / "coordinator"), "start", "--state-dir", str(self.state), "--port", str(self.port)],
            self.root / "superlink.log", flwr_home(self.state),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.superlink.poll() is not None:
                raise AssertionError(f"SuperLink exited {self.superlink.returncode}: {(self.root / 'superlink.log').read_text()[-3000:]}")
            try:
                list_runs(flwr_home(self.state))
                return
            except Exception:
                time.sleep(1)
        raise AssertionError("SuperLink did not answer within 60 s")

    def stop_superlink(self) -> None:
        if self.superlink is not None:
            self.track(self.superlink)
            _stop_group(self.superlink)
            self.superlink = None

    def nodes(self) -> list[dict[str, Any]]:
        return list_supernodes(flwr_home(self.state))

    def online_node_ids(self) -> set[str]:
        return {str(n["node-id"]) for n in self.nodes() if n.get("status") == "online"}

    def wait_online(self, count: int, timeout: float = 120) -> set[str]:
        deadline = time.monotonic() + timeout
        online: set[str] = set()
        while time.monotonic() < deadline:
            try:
                online = self.online_node_ids()
            except Exception:
                online = set()
            if len(online) >= count:
                return online
            time.sleep(2)
        raise AssertionError(f"only {len(online)} of {count} sites online after {timeout:.0f} s")

    # -- sites ------------------------------------------------------------------------------------------
    def add_site(self, name: str, features: Path, register: bool = True) -> Site:
        keys = self.root / "keys"
        generate_keypair(keys / name)  # the keygen CLI is covered in test_flower_glue; each CLI start costs seconds
        site = Site(name, features, self.root / "sites" / name, keys / name, free_port())
        if register:
            self.cli("coordinator", "register-site", name, str(keys / f"{name}.pub"), "--state-dir", str(self.state))
        self.sites[name] = site
        return site

    def approve(self, name: str, protocol: Path) -> None:
        loaded = load_protocol(protocol)
        approve(approvals_path(self.sites[name].work_dir), protocol_id(loaded), loaded.study.name, loaded.study.version)

    def join(self, name: str, protocol: Path, max_backoff: float = 10.0) -> Site:
        site = self.sites[name]
        site.log = self.root / f"join-{name}.log"
        site.process = self._spawn(
            [str(BIN / "site-client"), "join", "--coordinator", self.address, "--site-name", name,
             "--features", str(site.features), "--protocol", str(protocol), "--root-certificates",
             str(self.certs / "ca.crt"), "--key", str(site.key), "--work-dir", str(site.work_dir),
             "--port", str(site.port), "--max-backoff", str(max_backoff)],
            site.log, site.work_dir / "flwr-home",
        )
        return site

    def kill_site(self, name: str) -> None:
        """SIGKILL the site's whole process group (supervisor, SuperNode, ClientApps): a crashed hospital."""
        site = self.sites[name]
        if site.process is not None:
            self.track(site.process)
            for pid in descendants(site.process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.killpg(site.process.pid, signal.SIGKILL)
            site.process.wait()
            site.process = None

    # -- runs -------------------------------------------------------------------------------------------
    def run(self, protocol: Path, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return self.cli("coordinator", "run", "--protocol", str(protocol), "--state-dir", str(self.state),
                        *extra, timeout=timeout, check=False)

    def launch(self, protocol: Path, *extra: str) -> int:
        out = self.cli("coordinator", "run", "--protocol", str(protocol), "--state-dir", str(self.state),
                       "--no-follow", *extra).stdout
        return int(out.split("run id ")[1].split(":")[0])

    def study_status(self, run_id: int) -> dict[str, Any]:
        return read_status(status_path(runs_dir(self.state), run_id)) or {}

    def wait_phase(self, run_id: int, phase: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.study_status(run_id)
            if status.get("phase") == phase:
                return
            if status.get("state") in ("completed", "failed"):
                raise AssertionError(f"run {run_id} ended before phase {phase}: {json.dumps(status)[-2000:]}")
            time.sleep(1)
        raise AssertionError(f"run {run_id} did not reach phase {phase} in {timeout:.0f} s")

    def close(self) -> None:
        for site in self.sites.values():
            if site.process is not None:
                self.track(site.process)
                _stop_group(site.process)
                site.process = None
        self.stop_superlink()
        for handle in self._opened:
            handle.close()


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group and every descendant (also those in their own sessions), SIGKILL after 15 s."""
    tree = descendants(proc.pid)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        proc.wait()
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 15
    while process_groups_alive({proc.pid}) and time.monotonic() < deadline:
        time.sleep(0.3)
    if process_groups_alive({proc.pid}):
        os.killpg(proc.pid, signal.SIGKILL)
    table = process_table()
    for pid in tree:
        if pid in table and table[pid][0] != "Z":
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
