"""The site's SuperNode launcher shortens Flower's fixed sleeps only where it knows them: the pinned Flower,
whose SuperNode loop holds exactly the sleeps it was read from (issue #17: ~2 s of a 5.2 s loopback round was
the SuperNode's idle sleep). Anything else keeps Flower's own timing, with a warning."""

from __future__ import annotations

import importlib
import logging
import sys
import time
from pathlib import Path

import pytest

from flowerglue.versions import UnsupportedFlowerError
from site_client.flower import flower_internals as fi
from site_client.flower.supernode import supernode_command


class _Recorder:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def monotonic(self) -> float:
        return 42.0


def test_the_installed_flower_gets_the_shorter_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    module = importlib.import_module(fi.START_CLIENT_INTERNAL)
    monkeypatch.setattr(module, "time", time)  # restored after the test
    assert fi.shorten_supernode_sleeps() is True
    assert isinstance(module.time, fi._ShorterSleeps) and module.time.sleep != time.sleep
    recorder = _Recorder()
    module.time._real = recorder
    for seconds in (3, 0.5, 0.5, 7):  # Flower's idle sleep, its two reply polls, anything else unchanged
        module.time.sleep(seconds)
    assert recorder.slept == [0.5, 0.05, 0.05, 7]
    assert module.time.monotonic() == 42.0  # every other attribute is the real module's


def _fake_flower_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str):
    (tmp_path / "fake_supernode_loop.py").write_text(f"import time\n\n\ndef loop():\n{body}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(fi, "START_CLIENT_INTERNAL", "fake_supernode_loop")
    sys.modules.pop("fake_supernode_loop", None)
    return importlib.import_module("fake_supernode_loop")


@pytest.mark.parametrize("body", [
    "    time.sleep(2)\n    time.sleep(0.5)\n    time.sleep(0.5)",                      # Flower changed the idle sleep
    "    time.sleep(3)\n    time.sleep(0.5)\n    time.sleep(0.5)\n    time.sleep(1)",  # a sleep the launcher does not know
    "    time.sleep(3)\n    time.sleep(0.5)",                                          # one of the reply polls moved
])
def test_a_flower_loop_with_other_sleeps_keeps_flowers_timing(tmp_path, monkeypatch, caplog, body) -> None:
    module = _fake_flower_loop(tmp_path, monkeypatch, body)
    with caplog.at_level(logging.WARNING, logger=fi.log.name):
        assert fi.shorten_supernode_sleeps() is False
    assert module.time is time
    assert "SuperNode idle sleep left at Flower's default: fake_supernode_loop no longer has the sleeps" in caplog.text


def test_a_flower_outside_the_pinned_range_keeps_its_timing(tmp_path, monkeypatch, caplog) -> None:
    module = _fake_flower_loop(tmp_path, monkeypatch, "    time.sleep(3)\n    time.sleep(0.5)\n    time.sleep(0.5)")

    def unsupported() -> None:
        raise UnsupportedFlowerError("Flower (flwr) 1.99.0 is installed, but fedradval supports flwr>=1.41,<1.42 only")

    monkeypatch.setattr(fi, "require_supported_flower", unsupported)
    with caplog.at_level(logging.WARNING, logger=fi.log.name):
        assert fi.shorten_supernode_sleeps() is False
    assert module.time is time
    assert "SuperNode idle sleep left at Flower's default: Flower (flwr) 1.99.0 is installed" in caplog.text


def test_join_starts_the_supernode_through_the_launcher(tmp_path: Path) -> None:
    command = supernode_command("h:1", tmp_path / "n.toml", 9100, root_certificates=tmp_path / "ca.crt")
    assert command[:3] == [sys.executable, "-m", fi.SUPERNODE_LAUNCHER]
    assert command[command.index("--superlink") + 1] == "h:1"
