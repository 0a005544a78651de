"""The coordinator's services log through ``protocols.logs`` (levels, UTC times, ``--log-json``), never ``print``.

An AST scan finds every bare ``print`` in the coordinator package and the Flower glue, and any direct write
to the terminal (``typer.echo``, ``sys.stdout/stderr``) in the service modules (everything but the CLI
commands, whose result output, tables and ``--version`` may go to the terminal). The same logging is checked
end to end: the study's progress as JSON lines, and ``coordinator --log-json start`` on a real SuperLink.
"""

from __future__ import annotations

import ast
import io
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from coordinator.flower.status import RunStatus
from coordinator.study import run_study
from demo.processes import free_port
from federation.conftest import make_contexts
from federation.inprocess import InProcessTransport
from federation.synthetic import synthetic_protocol, synthetic_sites
from protocols.logs import configure_logging

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("coordinator", "flowerglue")
CLI_MODULES = ("coordinator/cli.py", "coordinator/__main__.py", "coordinator/study_table.py")  # + coordinator/commands/


def _terminal_writes(tree: ast.AST, service: bool) -> list[tuple[int, str]]:
    """(line, what) of every bare ``print(...)``; in a service module also ``typer.echo`` / ``typer.secho``
    and ``sys.stdout`` / ``sys.stderr`` used at all."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append((node.lineno, "print"))
        if not service:
            continue
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and (node.value.id, node.attr) in {("typer", "echo"), ("typer", "secho"), ("sys", "stdout"), ("sys", "stderr")}):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return found


def _is_cli(relative: str) -> bool:
    return relative in CLI_MODULES or relative.startswith("coordinator/commands/")


def test_the_scan_finds_what_it_looks_for() -> None:
    planted = ast.parse("import sys, typer\nprint('x')\ntyper.echo('y')\nsys.stderr.write('z')\nconsole.print('ok')\n")
    assert sorted(_terminal_writes(planted, service=True)) == [(2, "print"), (3, "typer.echo"), (4, "sys.stderr")]
    assert _terminal_writes(planted, service=False) == [(2, "print")]


def test_coordinator_services_hold_no_bare_print() -> None:
    modules = sorted(p for top in SCANNED for p in (ROOT / top).rglob("*.py"))
    assert len(modules) > 40, "the scan must see the coordinator package"
    offenders = []
    for path in modules:
        relative = path.relative_to(ROOT).as_posix()
        for line, what in _terminal_writes(ast.parse(path.read_text(encoding="utf-8")), service=not _is_cli(relative)):
            offenders.append(f"{relative}:{line}: {what}")
    assert offenders == [], "log through protocols.logs.get_logger instead:\n" + "\n".join(offenders)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_study_progress_and_failure_are_json_log_lines(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging("INFO", True, stream=stream, export=False)
    try:
        p, pid = synthetic_protocol(model={"rounds": 2})
        run_study(p, pid, InProcessTransport(make_contexts(tmp_path, p, pid, synthetic_sites())))  # default progress
        status = RunStatus(None, 7)
        status.progress("sites: H1, H2")
        status.finish(error="site H3 dropped")
    finally:
        configure_logging("INFO", False, export=False)
    entries = _json_lines(stream.getvalue())  # every line is one JSON object
    assert {e["logger"] for e in entries} == {"fedradval.coordinator.study"}
    assert all(e["time"].endswith("Z") for e in entries)
    messages = [(e["level"], e["message"]) for e in entries]
    assert ("INFO", "handshake with 4 site(s): H1, H2, H3, H4") in messages
    assert any(level == "INFO" and m.startswith("study finished in ") for level, m in messages)
    assert messages[-2:] == [("INFO", "run 7: sites: H1, H2"), ("ERROR", "run 7: study failed: site H3 dropped")]


def test_coordinator_start_logs_json_lines(tmp_path: Path) -> None:
    """``coordinator --log-json start``: its own lines are JSON (then the SuperLink it becomes logs Flower's way)."""
    command = [str(Path(sys.executable).parent / "coordinator"), "--log-json", "start", "--insecure", "--in-memory",
               "--port", str(free_port()), "--state-dir", str(tmp_path / "state")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ})
    lines: list[str] = []
    try:
        selector = selectors.DefaultSelector()
        selector.register(proc.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("SuperLink on" in line for line in lines):
            if selector.select(timeout=1) and (line := proc.stderr.readline()):
                lines.append(line)
            elif proc.poll() is not None:
                break
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = "".join(lines)
    entries = [e for e in (json.loads(line) for line in lines if line.startswith("{"))
               if e.get("logger", "").startswith("fedradval")]
    assert not [line for line in lines if "fedradval.coordinator" in line and not line.startswith("{")], text[-3000:]
    assert [e["level"] for e in entries] == ["WARNING", "INFO"], text[-3000:]
    assert {e["logger"] for e in entries} == {"fedradval.coordinator.start"}
    assert entries[1]["message"].startswith("SuperLink on 127.0.0.1:") and "(fedradval " in entries[1]["message"]
