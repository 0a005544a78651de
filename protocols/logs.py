"""The one place that configures logging for fedradval's services (site and coordinator).

Every service module logs through ``logging.getLogger("fedradval.<part>")``; the CLIs call
:func:`configure_logging` once (``--log-level``, ``--log-json``). The choice is also written to the
environment (FEDRADVAL_LOG_LEVEL, FEDRADVAL_LOG_JSON) so that the processes a service starts (the site's
SuperExec and its ClientApp processes, the coordinator's ServerApp) log the same way:
they call :func:`configure_from_env`.

Line format: ``2026-11-29T23:50:01.123Z INFO fedradval.site.join: message``; with ``--log-json`` one JSON
object per line: ``{"time", "level", "logger", "message"}`` (+ ``"exception"``), for a log collector.
Timestamps are UTC. Nothing here decides what is logged: data never goes into a message that leaves the
site; the site's own log may name files and rows.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import IO

ROOT = "fedradval"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LEVEL_ENV = "FEDRADVAL_LOG_LEVEL"
JSON_ENV = "FEDRADVAL_LOG_JSON"
_HANDLER_NAME = "fedradval-console"


def _utc_stamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc_stamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": _utc_stamp(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def parse_level(level: str) -> int:
    """``info`` / ``INFO`` -> logging.INFO; a clear error for anything else."""
    name = str(level).strip().upper()
    if name not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    return getattr(logging, name)


def configure_logging(level: str = "INFO", json_lines: bool = False, stream: IO[str] | None = None,
                      export: bool = True) -> logging.Logger:
    """(Re)configure the ``fedradval`` logger: one handler on ``stream`` (stderr), ``level``, text or JSON.

    ``export``: also set FEDRADVAL_LOG_LEVEL / FEDRADVAL_LOG_JSON for the processes this one starts.
    """
    logger = logging.getLogger(ROOT)
    logger.setLevel(parse_level(level))
    for handler in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    logger.addHandler(handler)
    logger.propagate = False  # Flower configures the root logger its own way; do not print twice
    if export:
        os.environ[LEVEL_ENV] = logging.getLevelName(logger.level)
        os.environ[JSON_ENV] = "1" if json_lines else "0"
    return logger


def configure_from_env() -> logging.Logger:
    """What a child process calls: the parent's choice, INFO text when none was made."""
    return configure_logging(os.environ.get(LEVEL_ENV, "INFO"), os.environ.get(JSON_ENV, "0") == "1", export=False)


def get_logger(part: str) -> logging.Logger:
    """``fedradval.<part>``."""
    return logging.getLogger(f"{ROOT}.{part}")
