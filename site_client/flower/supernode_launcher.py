"""``python -m site_client.flower.supernode_launcher ARGS``: Flower's ``flower-supernode ARGS`` with shorter
fixed sleeps (:func:`site_client.flower.flower_internals.shorten_supernode_sleeps`: 0.5 s instead of 3 s
between idle pulls, 0.05 s instead of 0.5 s between checks for the ClientApp's reply). Same arguments, same
exit codes; where the installed Flower is not the one the sleeps were read from, Flower runs unchanged, and
with ``FEDRADVAL_SUPERNODE_SLEEPS=flower`` in the environment it does so on purpose (Flower's own timing:
fewer requests to the SuperLink while idle; the benchmark's comparison). ``site-client join`` starts the
SuperNode this way (:func:`site_client.flower.supernode.supernode_command`).
"""

from __future__ import annotations

import os
import sys

from site_client.flower.flower_internals import shorten_supernode_sleeps


KEEP_FLOWER_SLEEPS_ENV = "FEDRADVAL_SUPERNODE_SLEEPS"  # "flower": leave Flower's sleeps as they are


def main() -> None:
    if os.environ.get(KEEP_FLOWER_SLEEPS_ENV, "").strip().lower() != "flower":
        shorten_supernode_sleeps()
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"  # Flower's argument parser names itself after argv[0]
    flower_supernode()


if __name__ == "__main__":
    main()
