"""Every process the demo starts, and how to stop all of them (Ctrl-C, SIGTERM, failure, normal end).

Each process is started in its own session (``start_new_session=True``), so a terminal's Ctrl-C reaches the
demo only and the demo decides the order of shutdown. Flower's SuperExec opens further sessions of its own
for the ServerApp / ClientApp processes, so process groups alone would miss them: :meth:`Processes.track`
records the group and session of every live descendant (call it while the study runs), and :meth:`stop_all`
signals those groups, the sessions and every current descendant (SIGTERM, SIGKILL after a grace period).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def free_port() -> int:
    """A TCP port on loopback that is free right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_table() -> dict[int, tuple[str, int, int, int]]:
    """pid → (state, parent pid, process group, session) of every process (Linux ``/proc``)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and ')'
        table[int(entry.name)] = (fields[0], int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def descendants(roots: set[int], table: dict[int, tuple[str, int, int, int]] | None = None) -> set[int]:
    """Every live descendant of ``roots``."""
    table = process_table() if table is None else table
    found: set[int] = set()
    frontier = set(roots)
    while frontier:
        children = {pid for pid, (_, ppid, _, _) in table.items() if ppid in frontier and pid not in found}
        found |= children
        frontier = children
    return found


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Processes:
    """The demo's child processes; ``stop_all`` is idempotent."""

    started: list[Started] = field(default_factory=list)
    groups: set[int] = field(default_factory=set)  # process groups and sessions seen among our processes
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, args: list[str], log: Path, env: dict[str, str], cwd: Path | None = None,
              nice: int = 0) -> subprocess.Popen[bytes]:
        """Start ``args`` in a new session, stdout and stderr appended to ``log``; ``nice`` > 0 lowers its CPU
        priority and that of everything it starts (through ``nice``, when the system has it)."""
        if nice and shutil.which("nice"):
            args = ["nice", "-n", str(nice), *args]
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = open(log, "ab")
        self._logs.append(handle)
        proc = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
        self.started.append(Started(name, proc, log))
        self.groups.add(proc.pid)
        return proc

    def roots(self) -> set[int]:
        return {s.process.pid for s in self.started}

    def track(self) -> None:
        """Remember the group and session of every live descendant (SuperExec children open new sessions)."""
        table = process_table()
        own = {0, 1, os.getpgrp(), os.getsid(0)}  # never our own group or session (the demo, make, the shell)
        for pid in descendants(self.roots(), table) | (self.roots() & set(table)):
            self.groups |= {table[pid][2], table[pid][3]} - own

    def alive(self) -> list[str]:
        """'pid command' of every live (non-zombie) process that is ours: a descendant, or in one of our groups
        or sessions."""
        table = process_table()
        ours = descendants(self.roots(), table) | (self.roots() & set(table))
        ours |= {pid for pid, (_, _, pgid, sid) in table.items() if pgid in self.groups or sid in self.groups}
        ours.discard(os.getpid())
        return [f"{pid} {_command_line(pid)[:160]}" for pid in sorted(ours) if table.get(pid, ("Z",))[0] != "Z"]

    def failed(self) -> list[Started]:
        """Started processes that have already exited."""
        return [s for s in self.started if s.process.poll() is not None]

    def stop_all(self, grace_s: float = 15.0) -> list[str]:
        """SIGTERM every process of ours (newest first), SIGKILL what is left after ``grace_s``; returns what
        could not be stopped (empty when everything ended)."""
        self.track()
        table = process_table()
        for started in reversed(self.started):
            tree = descendants({started.process.pid}, table)
            for pid in tree:
                _signal(pid, signal.SIGTERM)
            if started.process.poll() is None:
                try:
                    os.killpg(started.process.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        for group in self.groups:
            try:
                os.killpg(group, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            for started in self.started:
                started.process.poll()  # reap our direct children
            if not self.alive():
                break
            time.sleep(0.3)
        for line in self.alive():
            _signal(int(line.split()[0]), signal.SIGKILL)
        for group in self.groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for started in self.started:
            try:
                started.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        time.sleep(0.3)
        for handle in self._logs:
            handle.close()
        self._logs.clear()
        return self.alive()
