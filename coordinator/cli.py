"""``coordinator``: what the study coordinator runs. Each command lives in its own module under coordinator.commands."""

from __future__ import annotations

import typer

from protocols.console import print_version_and_exit
from protocols.logs import configure_logging

app = typer.Typer(
    name="coordinator",
    help="Coordinator side of a fedradval study: run the SuperLink, launch studies, report results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
    log_json: bool = typer.Option(False, "--log-json", help="One JSON object per log line (for a log collector)."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=print_version_and_exit,
                                 help="Print the fedradval, Flower and Python versions and exit."),
) -> None:
    """Configures logging (protocols.logs) for every command; keeps typer in multi-command mode."""
    try:
        configure_logging(log_level, log_json)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-level") from None


# Each import registers its command(s) on ``app``.
from coordinator.commands import validate as _validate  # noqa: E402,F401
from coordinator.commands import demo as _demo  # noqa: E402,F401
from coordinator.commands import demo_run as _demo_run  # noqa: E402,F401
from coordinator.commands import certs as _certs  # noqa: E402,F401
from coordinator.commands import start as _start  # noqa: E402,F401
from coordinator.commands import register_site as _register_site  # noqa: E402,F401
from coordinator.commands import run as _run  # noqa: E402,F401
from coordinator.commands import status as _status  # noqa: E402,F401
from coordinator.commands import simulate as _simulate  # noqa: E402,F401
from coordinator.commands import report as _report  # noqa: E402,F401
from coordinator.commands import doctor as _doctor  # noqa: E402,F401
from coordinator.commands import log as _log  # noqa: E402,F401
