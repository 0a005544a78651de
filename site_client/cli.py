"""``site-client``: what hospital IT runs. Each command lives in its own module under site_client.commands."""

from __future__ import annotations

import typer

from protocols.console import print_version_and_exit
from protocols.logs import configure_logging

app = typer.Typer(
    name="site-client",
    help="Hospital side of a fedradval study: check the cohort, extract features, join the federation.",
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
from site_client.commands import check as _check  # noqa: E402,F401
from site_client.commands import protocol as _protocol  # noqa: E402,F401
from site_client.commands import keygen as _keygen  # noqa: E402,F401
from site_client.commands import approve as _approve  # noqa: E402,F401
from site_client.commands import join as _join  # noqa: E402,F401
from site_client.commands import audit as _audit  # noqa: E402,F401
from site_client.commands import extract as _extract  # noqa: E402,F401
from site_client.commands import doctor as _doctor  # noqa: E402,F401
