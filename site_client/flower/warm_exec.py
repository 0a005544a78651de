"""The site's SuperExec: starts one ClientApp process per message, from the installed study code only.

Flower's own SuperExec (``flower-supernode --isolation subprocess``) starts ``flwr-clientapp`` afresh for
each message; that process installs the coordinator's FAB and imports the ClientApp it names, and each
start imports flwr, torch, scipy and the study code again (about 4-5 s of CPU per site and message). The
site runs Flower's SuperExec loop (``run_superexec``) against the SuperNode's Runtime API
(``--isolation process``) with its own executor:

* ``fork`` (default): a task is launched by ``os.fork()`` of this pre-imported process; the child runs
  Flower's ClientApp entry point with the task's token. Still a fresh process per message, as Flower
  intends (nothing from one message survives into the next); it just skips the imports. The parent holds
  no site data: it only imports modules.
* ``spawn`` (``site-client join --cold-clientapps``, and the fallback when the warm SuperExec keeps
  dying): a fresh Python per task (``python -m site_client.flower.warm_exec --task``), the token passed in
  its environment (not on the command line, where every local user could read it).

In both, the ClientApp process is confined by :func:`site_client.flower.flower_internals.confine_clientapp`:
the FAB is checked and never installed, the study code comes from the installed fedradval package. At most
``--max-clientapps`` ClientApp processes run at once; further tasks wait on the SuperNode. When the
SuperNode was started with ``--superexec-auth-secret-file``, this process signs its task requests with the
same secret, so no other local user can take this site's tasks from the Runtime API.

Run by ``site-client join`` next to the SuperNode (``python -m site_client.flower.warm_exec``); it exits
when the SuperNode does (``--parent-pid``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protocols.logs import configure_from_env, get_logger

log = get_logger("site.superexec")

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
MODES = ("fork", "spawn")
DEFAULT_MAX_CLIENTAPPS = 2
TOKEN_ENV = "FEDRADVAL_TASK_TOKEN"
# Exit code of a SuperExec that cannot run with the installed Flower: the supervisor does not retry it.
EXIT_UNSUPPORTED_FLOWER = 78  # EX_CONFIG


def preimport(modules: Sequence[str] = PREIMPORT) -> list[str]:
    """Import ``modules``; returns the ones that failed (the child then imports them itself, and reports)."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # a missing optional module must not stop the site from serving
            failed.append(name)
    return failed


class BoundedExecutor:
    """Flower SuperExec executor (the methods of Flower's ``SubprocessExecutor``) that runs ClientApps in
    ``mode`` (fork | spawn), at most ``max_running`` at a time."""

    def __init__(self, mode: str = "fork", max_running: int = DEFAULT_MAX_CLIENTAPPS) -> None:
        if mode not in MODES:
            raise ValueError(f"executor mode {mode!r} is not one of {', '.join(MODES)}")
        if max_running < 1:
            raise ValueError("at least one ClientApp process must be allowed")
        self.mode = mode
        self.max_running = max_running
        self.children: dict[int, tuple[float, subprocess.Popen[bytes] | None]] = {}  # pid -> (start, process)

    def get_eligible_capacity(self, supported_task_types: set[Any], **_: Any) -> tuple[set[Any], set[str]]:
        """No task types while ``max_running`` ClientApps run: the SuperNode keeps further tasks pending."""
        self.reconcile()
        if len(self.children) >= self.max_running:
            return set(), set()
        return supported_task_types, set()

    def wait_for_capacity(self, *_: Any, **__: Any) -> None:
        return None

    def launch(self, spec: Any) -> Any:
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor import LaunchResult

        if spec.task_type != TaskType.CLIENT_APP:  # a SuperNode only has ClientApp tasks
            log.error("refused a %s task: this SuperExec runs ClientApps only", spec.task_type)
            return LaunchResult.failed("this site runs ClientApp tasks only")
        if len(self.children) >= self.max_running:
            return LaunchResult.capacity_rejected(f"{self.max_running} ClientApp processes already running")
        if self.mode == "fork":
            pid = os.fork()
            if pid == 0:
                _run_child(spec)  # never returns
            self.children[pid] = (time.monotonic(), None)
        else:
            process = subprocess.Popen(task_command(spec), env={**os.environ, TOKEN_ENV: spec.token})
            pid = process.pid
            self.children[pid] = (time.monotonic(), process)
        log.debug("ClientApp process %d started for task %s (%s)", pid, spec.task_id, self.mode)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap finished ClientApp processes (no zombies)."""
        for pid, (started, process) in list(self.children.items()):
            if process is not None:
                code = process.poll()
                if code is None:
                    continue
            else:
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done, status = pid, 0
                if not done:
                    continue
                code = os.waitstatus_to_exitcode(status)
            del self.children[pid]
            level = log.info if code == 0 else log.warning
            level("ClientApp process %d ended (exit %d) after %.1f s", pid, code, time.monotonic() - started)

    def close(self) -> None:
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.children.clear()


def task_command(spec: Any) -> list[str]:
    """A fresh-Python ClientApp process for ``spec`` (token in the environment, see :data:`TOKEN_ENV`)."""
    command = [sys.executable, "-m", "site_client.flower.warm_exec", "--task", "--runtime-api-address",
               spec.runtime_api_address]
    if spec.parent_pid is not None:
        command += ["--parent-pid", str(spec.parent_pid)]
    return command


def run_clientapp_task(runtime_api_address: str, token: str, parent_pid: int | None) -> int:
    """Flower's ClientApp entry point for one task, confined to the installed study code; its exit code."""
    from site_client.flower.flower_internals import confine_clientapp

    run_clientapp = confine_clientapp()
    try:
        run_clientapp(runtime_api_address=runtime_api_address, token=token, insecure=True, certificates=None,
                      parent_pid=parent_pid, runtime_dependency_install=False)
        return 0
    except SystemExit as exc:  # Flower ends every ClientApp with flwr_exit -> SystemExit(code)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def _run_child(spec: Any) -> None:
    """In the forked child: the confined ClientApp for this task's token, then exit."""
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        code = run_clientapp_task(spec.runtime_api_address, spec.token, spec.parent_pid)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def warm_exec_command(runtime_api_address: str, parent_pid: int, mode: str = "fork",
                      max_clientapps: int = DEFAULT_MAX_CLIENTAPPS, secret_file: Path | None = None) -> list[str]:
    """The command ``site-client join`` runs next to the SuperNode."""
    command = [sys.executable, "-m", "site_client.flower.warm_exec", "--runtime-api-address", runtime_api_address,
               "--parent-pid", str(parent_pid), "--mode", mode, "--max-clientapps", str(max_clientapps)]
    if secret_file is not None:
        command += ["--superexec-auth-secret-file", str(secret_file)]
    return command


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API, HOST:PORT")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the SuperNode) ends")
    parser.add_argument("--mode", choices=MODES, default="fork", help="fork a pre-imported process, or spawn one")
    parser.add_argument("--max-clientapps", type=int, default=DEFAULT_MAX_CLIENTAPPS,
                        help="ClientApp processes allowed at once")
    parser.add_argument("--superexec-auth-secret-file", type=Path, default=None,
                        help="the SuperNode's SuperExec auth secret (sign task requests with it)")
    parser.add_argument("--task", action="store_true", help="(internal) run one ClientApp task; token in "
                        f"${TOKEN_ENV}")
    args = parser.parse_args(argv)
    configure_from_env()
    from site_client.flower.flower_internals import FlowerInternalsError, check_flower_internals, use_executor

    try:
        check_flower_internals()
    except FlowerInternalsError as exc:
        log.error("site SuperExec cannot start: %s", exc)
        raise SystemExit(EXIT_UNSUPPORTED_FLOWER) from None
    if args.task:
        token = os.environ.pop(TOKEN_ENV, "")
        if not token:
            log.error("--task needs the task token in $%s", TOKEN_ENV)
            raise SystemExit(2)
        sys.stdout.flush()
        raise SystemExit(run_clientapp_task(args.runtime_api_address, token, args.parent_pid))
    secret = None
    if args.superexec_auth_secret_file is not None:
        secret = args.superexec_auth_secret_file.read_bytes()
        if not secret:
            log.error("SuperExec auth secret file %s is empty", args.superexec_auth_secret_file)
            raise SystemExit(2)
    # Flower's SuperExec asks the SuperNode for new tasks once a second by default; a task waits for that poll
    # in every message round, so poll more often (a local loopback call).
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.2")
    if args.mode == "fork":
        failed = preimport()
        if failed:
            log.warning("could not pre-import %s; ClientApps will import them", ", ".join(failed))
    run_superexec = use_executor(BoundedExecutor(args.mode, args.max_clientapps))
    log.info("site SuperExec serving %s (%s mode, at most %d ClientApp processes, Runtime API auth %s)",
             args.runtime_api_address, args.mode, args.max_clientapps, "on" if secret else "OFF")
    run_superexec(
        runtime_api_address=args.runtime_api_address,
        insecure=True,  # loopback only: the SuperNode serves its Runtime API on 127.0.0.1
        superexec_auth_secret=secret,
        parent_pid=args.parent_pid,
        runtime_dependency_install=False,
    )


if __name__ == "__main__":
    main()
