"""``coordinator demo``: a whole multi-centre study on one machine, with the real processes of a deployment.

Steps (work folder, default ``work/demo``):

1. the seeded synthetic cohort (``cohort/``, reused when it was generated with the same settings);
2. the study protocol (``protocol.yaml``: ``protocols/examples/demo_study.yaml``, ``--rounds`` applied);
   a demo CA and SuperLink certificate (``coordinator/certs``), one SuperNode key pair per site (``keys/``);
3. a SuperLink with TLS, SuperNode authentication and its state in memory (no SQLite lock time-outs) on a free
   loopback port; each site's public key registered; each site approves the protocol and joins with its
   manifest (``site-client keygen / approve / join``, one SuperNode per site, state in ``sites/<site>``):
   feature extraction runs at the sites, inside the study;
4. the study, launched like ``coordinator run`` (the ServerApp logs it into ``mlflow.db`` beside the
   artifacts in ``mlartifacts/``), its progress streamed; then the report (``report/``);
5. the table per held-out site, read back from the MLflow store, and the command that opens the MLflow UI.

Every process started here is stopped at the end, on failure, and on Ctrl-C / SIGTERM (see processes.py).
Logs of every process are in ``logs/``. Site-side steps go through the ``site-client`` command line, as a
hospital would run them (the coordinator package never imports the site package).
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console

from demo.cohort import CohortError, generate_cohort, site_names, validate_arguments
from demo.processes import Processes, free_port
from demo.results import ResultsNotFound, read_results, results_table, verdict
from coordinator.flower.certs import create_certificates
from flowerglue.runtime_env import flower_env
from coordinator.flower.flwr_cli import FlwrCommandError, list_runs, register_supernode, start_run, stop_run
from coordinator.flower.registry import record_site
from coordinator.flower.server_app import encode_protocol
from coordinator.flower.state import flwr_home, runs_dir
from coordinator.flower.status import read_status, status_path
from coordinator.tracking import default_tracking_uri
import protocols
from protocols import load_protocol, protocol_id

# the example protocols ship inside the installed protocols package (package data), wherever it is installed
DEMO_PROTOCOL = Path(protocols.__file__).resolve().parent / "examples" / "demo_study.yaml"
DEFAULT_WORK = Path("work/demo")
DEFAULT_SEED = 20261123
STUDY_TIMEOUT_S = 3600.0
# The sites would be other machines; here their SuperNodes and ClientApps share the CPU with the SuperLink and
# the ServerApp. Lower priority for the sites keeps the coordinator responsive: a starved SuperLink misses its
# SQLite lock (5 s busy timeout, fixed in Flower) and declares the ServerApp dead ("No heartbeat received").
SITE_NICENESS = 10


class DemoFailed(RuntimeError):
    """A demo step failed; the message says which and where its log is."""


class DemoInterrupted(BaseException):
    """SIGINT / SIGTERM arrived: stop everything and leave (BaseException, so no step swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class DemoSettings:
    work: Path = DEFAULT_WORK
    sites: int = 4
    cases_per_site: int = 60
    seed: int = DEFAULT_SEED
    rounds: int | None = None          # None: the demo protocol's model.rounds


@dataclass(frozen=True)
class Layout:
    """Where everything of one demo lives."""

    work: Path

    cohort = property(lambda self: self.work / "cohort")
    protocol = property(lambda self: self.work / "protocol.yaml")
    coordinator = property(lambda self: self.work / "coordinator")
    certs = property(lambda self: self.work / "coordinator" / "certs")
    keys = property(lambda self: self.work / "keys")
    sites = property(lambda self: self.work / "sites")
    logs = property(lambda self: self.work / "logs")
    report = property(lambda self: self.work / "report")
    mlflow_db = property(lambda self: self.work / "mlflow.db")

    def fresh(self) -> None:
        """Remove the state of an earlier demo (keys, SuperLink database, site state, logs); the cohort and the
        MLflow store are kept (the store collects every demo run, like a real one)."""
        for folder in (self.coordinator, self.keys, self.sites, self.logs, self.report):
            if folder.exists():
                shutil.rmtree(folder)


def write_demo_protocol(target: Path, rounds: int | None) -> Path:
    """The demo protocol, with ``model.rounds`` replaced when ``rounds`` is given (written atomically)."""
    text = DEMO_PROTOCOL.read_text(encoding="utf-8")
    if rounds is not None:
        if rounds < 1:
            raise DemoFailed(f"--rounds must be at least 1, got {rounds}")
        data = yaml.safe_load(text)
        data.setdefault("model", {})["rounds"] = rounds
        text = (f"# {DEMO_PROTOCOL.name} with model.rounds = {rounds} (coordinator demo --rounds {rounds})\n"
                + yaml.safe_dump(data, sort_keys=False))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target


@contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`DemoInterrupted` while the demo runs."""

    def _raise(signum: int, _frame: object) -> None:
        raise DemoInterrupted(signum)

    previous = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore_signals() -> None:
    """During shutdown: a second Ctrl-C must not abandon half-stopped processes."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


class Demo:
    """One demo run: the steps above, each announced on the console."""

    def __init__(self, settings: DemoSettings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self.layout = Layout(settings.work.resolve())
        self.processes = Processes()
        self.bin = Path(sys.executable).parent
        self.names = site_names(settings.sites)
        self.port = 0
        self.started = time.monotonic()

    # -- output ----------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f} s[/dim]  {text}", highlight=False, soft_wrap=True)

    def step(self, number: int, text: str) -> None:
        self.console.rule(f"[bold]{number}/5  {text}", align="left")

    # -- helpers ---------------------------------------------------------------------------------------
    def _log_tail(self, log: Path, chars: int = 3000) -> str:
        try:
            return log.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def run_tools(self, commands: dict[str, list[str]], env: dict[str, str]) -> None:
        """Run short commands side by side (logs/<name>.log); raise naming the one that failed."""
        running = {name: self.processes.start(name, args, self.layout.logs / f"{name}.log", env)
                   for name, args in commands.items()}
        for name, proc in running.items():
            code = proc.wait()
            log = self.layout.logs / f"{name}.log"
            if code != 0:
                shown = " ".join([Path(commands[name][0]).name, *commands[name][1:]])
                raise DemoFailed(f"`{shown}` failed (exit {code}); log {log}:\n{self._log_tail(log)}")

    def check_alive(self) -> None:
        """Fail fast when the SuperLink or a site's supervisor died."""
        for started in self.processes.started:
            if started.name in ("superlink",) or started.name.startswith("site "):
                if started.process.poll() is not None:
                    raise DemoFailed(f"{started.name} exited with code {started.process.returncode}; "
                                     f"log {started.log}:\n{self._log_tail(started.log)}")

    # -- steps -----------------------------------------------------------------------------------------
    def cohort(self) -> list[Path]:
        s = self.settings
        self.step(1, f"synthetic cohort: {s.sites} sites x {s.cases_per_site} lesions (seed {s.seed})")
        with self.console.status("generating lesions and acquiring them with each site's scanner ..."):
            return generate_cohort(self.layout.cohort, sites=s.sites, cases_per_site=s.cases_per_site, seed=s.seed,
                                   force=True, progress=self.say)

    def prepare(self) -> tuple[Path, str, str]:
        """Fresh state, protocol, certificates, SuperLink, site keys and approvals; returns (protocol path,
        protocol id, experiment). The SuperLink boots while the sites create their keys and approve."""
        self.step(2, "protocol, demo CA, SuperLink (TLS + SuperNode authentication), site keys and approvals")
        self.layout.fresh()
        path = write_demo_protocol(self.layout.protocol, self.settings.rounds)
        protocol = load_protocol(path)
        identifier = protocol_id(protocol)
        self.say(f"protocol {protocol.study.name} v{protocol.study.version}: {protocol.model.rounds} training rounds, "
                 f"ComBat {'on' if protocol.harmonisation.combat else 'off'}, id {identifier} ({path})")
        create_certificates(self.layout.certs, ["localhost", "127.0.0.1"])
        self.say(f"demo CA and server certificate in {self.layout.certs} (ca.crt goes to every site)")
        self.start_superlink()
        site_client = str(self.bin / "site-client")
        tools = {}
        for n in self.names:
            tools[f"keygen-{n}"] = [site_client, "keygen", "--out", str(self.layout.keys), "--name", n]
            tools[f"approve-{n}"] = [site_client, "approve", str(path), "--work-dir", str(self.layout.sites / n)]
        with self.console.status("sites: site-client keygen and site-client approve ..."):
            self.run_tools(tools, flower_env(self.layout.work / "tools-home"))
        self.say(f"{len(self.names)} SuperNode key pairs in {self.layout.keys} (site-client keygen); every site "
                 f"approved protocol {identifier[:12]} (site-client approve)")
        self.wait_superlink()
        return path, identifier, protocol.tracking.experiment

    def start_superlink(self) -> None:
        self.port = free_port()
        state = self.layout.coordinator
        self.processes.start("superlink", [str(self.bin / "coordinator"), "start", "--state-dir", str(state),
                                           "--port", str(self.port), "--in-memory"],
                             self.layout.logs / "superlink.log", flower_env(flwr_home(state)))

    def wait_superlink(self, timeout_s: float = 180.0) -> None:
        context = ssl.create_default_context(cafile=str(self.layout.certs / "ca.crt"))
        deadline = time.monotonic() + timeout_s
        with self.console.status(f"waiting for the SuperLink: https://127.0.0.1:{self.port}/health ..."):
            while True:
                self.check_alive()
                try:
                    with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/health", context=context, timeout=5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise DemoFailed(f"the SuperLink did not answer within {timeout_s:.0f} s; "
                                         f"log {self.layout.logs / 'superlink.log'}") from None
                    time.sleep(0.5)
        self.say(f"SuperLink on 127.0.0.1:{self.port} (TLS, SuperNode authentication), state in memory, "
                 f"log {self.layout.logs / 'superlink.log'}")

    def sites(self, protocol: Path, manifests: list[Path]) -> None:
        self.step(3, "sites: keys registered with the SuperLink, one SuperNode per site joins with its manifest")
        home = flwr_home(self.layout.coordinator)

        def register(name: str) -> str:  # what `coordinator register-site` does
            try:
                result = register_supernode(home, self.layout.keys / f"{name}.pub", name)
            except FlwrCommandError as exc:
                raise DemoFailed(f"registering {name}'s key failed: {exc}") from None
            return str(result.get("node-id", "?"))

        with self.console.status("registering the sites' public keys ..."), ThreadPoolExecutor(len(self.names)) as pool:
            node_ids = list(pool.map(register, self.names))
        for name, node_id in zip(self.names, node_ids):
            record_site(self.layout.coordinator, node_id, name)
            self.say(f"registered {name}'s key (node id {node_id})")
        for name, manifest in zip(self.names, manifests):
            work = self.layout.sites / name
            self.processes.start(
                f"site {name}",
                [str(self.bin / "site-client"), "join", "--coordinator", f"127.0.0.1:{self.port}", "--site-name", name,
                 "--manifest", str(manifest), "--protocol", str(protocol), "--root-certificates",
                 str(self.layout.certs / "ca.crt"), "--key", str(self.layout.keys / name), "--work-dir", str(work),
                 "--port", str(free_port()), "--max-backoff", "8"],
                self.layout.logs / f"site-{name}.log", flower_env(work / "flwr-home"), nice=SITE_NICENESS)
            self.say(f"{name} joined with {manifest} (site-client join; log {self.layout.logs / f'site-{name}.log'})")

    def study(self, protocol: Path, identifier: str, tracking_uri: str) -> int:
        """Launch the study as ``coordinator run`` does, stream its progress; returns the Flower run id."""
        self.step(4, "the study: extraction at the sites, federated ComBat, leave-one-site-out training, "
                     "recalibration, conformal prediction, external validation, MLflow")
        state = self.layout.coordinator
        home = flwr_home(state)
        try:
            run_id = start_run(home, {
                "protocol-b64": encode_protocol(protocol.read_text(encoding="utf-8")),
                "protocol-id": identifier,
                "mlflow-uri": tracking_uri,
                "status-dir": str(runs_dir(state)),
                "outcome-dir": str(state.resolve() / "outcomes"),   # saved before MLflow (coordinator log)
                "promote": "true",                                   # the demo's model is the one to try
                "wait-for": len(self.names),
                "wait-timeout-s": 300.0,
            })
        except FlwrCommandError as exc:
            raise DemoFailed(f"launching the study failed: {exc}") from None
        self.say(f"run {run_id} launched; the ServerApp waits for the {len(self.names)} SuperNodes")
        self.follow(home, run_id)
        return run_id

    def follow(self, home: Path, run_id: int) -> None:
        """Print the study's progress lines; return when it completed, raise when it failed."""
        path = status_path(runs_dir(self.layout.coordinator), run_id)
        shown, last_check = 0, time.monotonic()
        deadline = time.monotonic() + STUDY_TIMEOUT_S
        with self.console.status("starting the ServerApp ...") as spinner:
            while True:
                self.processes.track()
                self.check_alive()
                status = read_status(path) or {}
                lines = status.get("lines", [])
                for line in lines[shown:]:
                    self.say(line)
                shown = len(lines)
                phase = status.get("phase", "starting")
                hint = " (the sites extract features from their images)" if phase == "handshake" else ""
                spinner.update(f"phase: {phase}{hint}")
                if status.get("state") == "completed":
                    return
                if status.get("state") == "failed":
                    raise DemoFailed(f"the study failed: {status.get('error')}")
                now = time.monotonic()
                if now - last_check > 60:  # a ServerApp that crashed before writing its status (each check is a flwr process)
                    last_check = now
                    try:
                        runs = list_runs(home, run_id)
                    except FlwrCommandError:
                        runs = []
                    flower = str(runs[0].get("status", "")) if runs else ""
                    if flower.startswith("finished") and (read_status(path) or {}).get("state") not in ("completed",):
                        time.sleep(2)  # the status file may lag the Flower state by a moment
                        if (read_status(path) or {}).get("state") == "completed":
                            continue
                        details = runs[0].get("status-details") or flower
                        raise DemoFailed(f"run {run_id} ended {flower} ({details}); see {self.layout.logs / 'superlink.log'}")
                if now > deadline:
                    try:
                        stop_run(home, run_id)
                    except FlwrCommandError:
                        pass
                    raise DemoFailed(f"the study did not finish within {STUDY_TIMEOUT_S:.0f} s")
                time.sleep(1.0)

    def results(self, identifier: str, experiment: str, tracking_uri: str, launched_ms: int) -> None:
        from coordinator.report import write_report

        self.step(5, "results, read back from the MLflow store; the report")

        try:
            results = read_results(tracking_uri, experiment, identifier, launched_ms)
        except ResultsNotFound as exc:
            raise DemoFailed(f"the MLflow store does not hold the study: {exc}") from None
        html, _ = write_report(results.parent_run_id, self.layout.report, tracking_uri)
        alpha = load_protocol(self.layout.protocol).validation.conformal_alpha
        self.console.print()
        self.console.print(results_table(results, target_coverage=1 - alpha))
        self.console.print("calibration slope: of the recalibrated model at the held-out site (1 = ideal); "
                           "AUC 95% CI: DeLong, from the sites' binned score histograms; coverage \"≥ x\" (\"≤ x\"): the "
                           "site released only that fewer than k cases fell outside (inside) their prediction sets.",
                           style="dim")
        line = verdict(results)
        if line:
            self.console.print(line, style="bold", soft_wrap=True)
        self.console.print(f"MLflow: experiment {experiment!r}, study run {results.parent_run_id}"
                           + (f", registered model {results.registered_model}" if results.registered_model else ""))
        self.console.print(f"report: {html}")
        self.console.print("open the MLflow UI on the demo's store:")
        self.console.print(f"  {self.bin / 'mlflow'} ui --backend-store-uri {tracking_uri} --port 5000",
                           highlight=False, soft_wrap=True)

    def run(self) -> None:
        manifests = self.cohort()
        protocol, identifier, experiment = self.prepare()
        self.sites(protocol, manifests)
        tracking_uri = default_tracking_uri(self.layout.work)
        launched_ms = int(time.time() * 1000) - 1000
        self.study(protocol, identifier, tracking_uri)
        self.results(identifier, experiment, tracking_uri, launched_ms)

    def stop(self) -> list[str]:
        if not self.processes.started:
            return []
        with self.console.status("stopping every process the demo started ..."):
            left = self.processes.stop_all()
        if left:
            self.console.print(f"[red]could not stop: {left}")
        else:
            self.say(f"stopped {len(self.processes.started)} started process(es) and their children; none left")
        return left


def run_demo(settings: DemoSettings, console: Console | None = None) -> int:
    """The whole demo; exit code 0 (done), 1 (a step failed), 2 (bad arguments), 130/143 (interrupted)."""
    console = console or Console()
    try:
        validate_arguments(settings.sites, settings.cases_per_site, settings.seed)
        if settings.rounds is not None and settings.rounds < 1:
            raise CohortError(f"--rounds must be at least 1, got {settings.rounds}")
    except CohortError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    demo = Demo(settings, console)
    code = 0
    with signals_raise():
        try:
            demo.run()
            console.print(f"demo finished in {time.monotonic() - demo.started:.0f} s (logs: {demo.layout.logs})")
        except DemoInterrupted as exc:
            _ignore_signals()
            console.print(f"[yellow]interrupted ({exc}); stopping ...")
            code = 128 + exc.signum
        except (DemoFailed, CohortError, FlwrCommandError, OSError, subprocess.SubprocessError) as exc:
            _ignore_signals()
            console.print(f"[red]demo failed:[/red] {exc}", highlight=False)
            code = 1
        finally:  # also for an unexpected exception, which then propagates
            _ignore_signals()
            if demo.stop() and code == 0:
                code = 1
    return code
