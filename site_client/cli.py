"""``site-client``: what hospital IT runs. Each command lives in its own module under site_client.commands."""

from __future__ import annotations

import typer

from protocols.console import print_version_and_exit

app = typer.Typer(
    name="site-client",
    help="Hospital side of a fedradval study: check the cohort, extract features, join the federation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=print_version_and_exit,
                                 help="Print the fedradval, Flower and Python versions and exit."),
) -> None:
    """Keeps typer in multi-command mode even while only one command is registered."""


# Each import registers its command(s) on ``app``.
from site_client.commands import check as _check  # noqa: E402,F401
from site_client.commands import protocol as _protocol  # noqa: E402,F401
from site_client.commands import keygen as _keygen  # noqa: E402,F401
from site_client.commands import approve as _approve  # noqa: E402,F401
from site_client.commands import join as _join  # noqa: E402,F401
from site_client.commands import audit as _audit  # noqa: E402,F401
from site_client.commands import extract as _extract  # noqa: E402,F401
