"""The site's SuperExec: every ClientApp process is forked from one parent that imported everything once.

Flower's own SuperExec (``flower-supernode --isolation subprocess``) starts ``flwr-clientapp`` afresh for
each message, and each start imports Python's flwr, torch, scipy and the study code again: about 4-5 s of
CPU per site and message, which on a 2-core machine with four sites made every round of a study last
10-20 s. This process runs Flower's SuperExec loop (``run_superexec``) against the SuperNode's Runtime API
(``--isolation process``) with one change: a task is launched by ``os.fork()`` of this pre-imported process,
and the child runs Flower's own ClientApp entry point (``run_clientapp``) with the task's token. The child
is still a fresh process per message, as Flower intends (nothing from one message survives into the
next), it just skips the imports. The parent holds no site data: it only imports modules.

Run by ``site-client join`` next to the SuperNode (``python -m site_client.flower.warm_exec``); it exits
when the SuperNode does (``--parent-pid``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

# Imported once here so that forked ClientApp processes need not: Flower's ClientApp runtime, the
# site's glue and study code, and the heavy libraries the study phases use.
PREIMPORT = (
    "flwr.supernode.runtime.run_clientapp",
    "flwr.clientapp",
    "site_client.flower.client_app",
    "site_client.study",
    "site_client.extraction",
    "harmonisation",
    "torch",
    "torch._dynamo",  # torch.optim imports it when the first optimiser is created: 2 s per message otherwise
    "scipy.stats",
    "pandas",
    "SimpleITK",
)


def preimport(modules: Sequence[str] = PREIMPORT) -> list[str]:
    """Import ``modules``; returns the ones that failed (the child then imports them itself, and reports)."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # a missing optional module must not stop the site from serving
            failed.append(name)
    return failed


class ForkExecutor:
    """Flower SuperExec executor (same methods as Flower's ``SubprocessExecutor``) that forks ClientApps."""

    def __init__(self) -> None:
        self.children: dict[int, float] = {}  # pid → fork time (monotonic)

    def get_eligible_capacity(self, supported_task_types: set[Any], **_: Any) -> tuple[set[Any], set[str]]:
        return supported_task_types, set()

    def wait_for_capacity(self, *_: Any, **__: Any) -> None:
        return None

    def launch(self, spec: Any) -> Any:
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor import LaunchResult
        from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

        if spec.task_type != TaskType.CLIENT_APP:  # not expected on a SuperNode; Flower's way then
            return SubprocessExecutor().launch(spec)
        pid = os.fork()
        if pid == 0:
            _run_child(spec)  # never returns
        self.children[pid] = time.monotonic()
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap finished ClientApp processes (no zombies)."""
        for pid, started in list(self.children.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                del self.children[pid]
                code = os.waitstatus_to_exitcode(status)
                print(f"[site-client] ClientApp process {pid} ended (exit {code}) after "
                      f"{time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.children.clear()


def _run_child(spec: Any) -> None:
    """In the forked child: Flower's ClientApp entry point for this task's token, then exit."""
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        from flwr.supercore.tls import validate_and_resolve_root_certificates
        from flwr.supernode.runtime.run_clientapp import run_clientapp

        run_clientapp(
            runtime_api_address=spec.runtime_api_address,
            token=spec.token,
            insecure=spec.insecure,
            certificates=validate_and_resolve_root_certificates(spec.root_certificates_path, spec.insecure),
            parent_pid=spec.parent_pid,
            runtime_dependency_install=False,
        )
        code = 0
    except SystemExit as exc:  # Flower ends every ClientApp with flwr_exit -> SystemExit(code)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def warm_exec_command(runtime_api_address: str, parent_pid: int) -> list[str]:
    """The command ``site-client join`` runs next to the SuperNode."""
    return [sys.executable, "-m", "site_client.flower.warm_exec", "--runtime-api-address", runtime_api_address,
            "--parent-pid", str(parent_pid)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API, HOST:PORT")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the SuperNode) ends")
    args = parser.parse_args(argv)
    # Flower's SuperExec asks the SuperNode for new tasks once a second by default; a task waits for that poll
    # in every message round, so poll more often (a local loopback call).
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.2")
    failed = preimport()
    if failed:
        print(f"[site-client] could not pre-import {', '.join(failed)}; ClientApps will import them", file=sys.stderr)
    from flwr.supercore.superexec import run_superexec as superexec

    executor = ForkExecutor()
    superexec.get_executor = lambda *_, **__: executor  # the one change to Flower's SuperExec loop
    superexec.run_superexec(
        runtime_api_address=args.runtime_api_address,
        insecure=True,  # loopback only: the SuperNode serves its Runtime API on 127.0.0.1
        parent_pid=args.parent_pid,
        runtime_dependency_install=False,
    )


if __name__ == "__main__":
    main()
