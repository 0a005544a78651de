"""A real Docker daemon for the container-image tests: find or start one, build the images, run containers.

The daemon: the one ``docker info`` reaches; otherwise, as root with ``dockerd`` installed, one started here
(and stopped by SIGTERM to its PID at the end). The images are built by ``deploy/build-images.sh``, the script
the docs give to users: FROM ``debian:bookworm-slim`` where an image registry answers, else from a Debian base
made locally with debootstrap (``--local-base``). A CA bundle and a wheel folder of this machine's pip settings
(``PIP_CERT``, ``PIP_FIND_LINKS``) are passed on when they exist; they stay in the build stages.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_UID = 10001  # the image's `fedradval` user (Dockerfile)
REQUIRE_ENV = "FEDRADVAL_REQUIRE_DOCKER"  # set in CI (.ci/run): a missing daemon fails instead of skipping


class DockerUnavailable(RuntimeError):
    """No daemon answers and none can be started here; the message says why."""


def project_version() -> str:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def docker(*args: str, timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _daemon_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Daemon:
    """The daemon the tests use; ``process`` is set only when this harness started it."""

    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @classmethod
    def find_or_start(cls, scratch: Path) -> "Daemon":
        if shutil.which("docker") is None:
            raise DockerUnavailable("no docker client on PATH (apt-get install docker.io)")
        if _daemon_answers():
            return cls()
        if shutil.which("dockerd") is None:
            raise DockerUnavailable("no Docker daemon answers and dockerd is not installed (apt-get install docker.io iptables)")
        if os.geteuid() != 0:
            raise DockerUnavailable("no Docker daemon answers and starting dockerd needs root")
        log = scratch / "dockerd.log"
        handle = open(log, "wb")
        process = subprocess.Popen(["dockerd"], stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DockerUnavailable(f"dockerd exited {process.returncode}: {log.read_text()[-1500:]}")
            if _daemon_answers():
                return cls(process, log)
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        raise DockerUnavailable(f"dockerd did not answer within 60 s: {log.read_text()[-1500:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _registry_has_debian() -> bool:
    if docker("image", "inspect", "debian:bookworm-slim", check=False).returncode == 0:
        return True
    try:
        return docker("pull", "debian:bookworm-slim", check=False, timeout=120).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def build_images(log: Path) -> dict[str, str]:
    """Build both targets with deploy/build-images.sh; returns role -> image tag."""
    command = [str(REPO_ROOT / "deploy" / "build-images.sh")]
    if not _registry_has_debian():
        if shutil.which("debootstrap") is None:
            raise DockerUnavailable("no image registry answers and debootstrap is not installed for a local base")
        command.append("--local-base")
    ca_bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if ca_bundle and Path(ca_bundle).is_file():
        command += ["--ca-bundle", ca_bundle]
    wheels = os.environ.get("PIP_FIND_LINKS", "")
    if wheels and Path(wheels).is_dir() and any(Path(wheels).glob("torch-*.whl")):
        command += ["--wheels", wheels]
    with open(log, "wb") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO_ROOT, timeout=3600)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}:\n{log.read_text()[-4000:]}")
    version = project_version()
    return {role: f"fedradval-{role}:{version}" for role in ("site", "coordinator")}


def owned_by_image_user(path: Path) -> Path:
    """Create ``path`` writable by the image's unprivileged user (a host folder mounted as /work or /keys)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, IMAGE_UID, IMAGE_UID)
    else:
        path.chmod(0o777)
    return path


@dataclass
class Network:
    """A user-defined Docker network (container names resolve) and the containers started on it."""

    name: str
    containers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        docker("network", "create", self.name)

    def start(self, name: str, image: str, *args: str, mounts: dict[Path, str], alias: str | None = None) -> str:
        volumes = [a for host, inside in mounts.items() for a in ("-v", f"{host}:{inside}")]
        docker("run", "-d", "--name", name, "--network", self.name, *(["--network-alias", alias] if alias else []),
               *volumes, image, *args)
        self.containers.append(name)
        return name

    def logs(self, name: str) -> str:
        done = docker("logs", name, check=False)
        return done.stdout + done.stderr

    def close(self) -> None:
        for name in self.containers:
            docker("rm", "-f", name, check=False, timeout=120)
        docker("network", "rm", self.name, check=False)


def run_once(image: str, *args: str, mounts: dict[Path, str] | None = None, timeout: float = 600,
             entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
    """``docker run --rm`` (not checked: the caller asserts on the exit code and the output)."""
    volumes = [a for host, inside in (mounts or {}).items() for a in ("-v", f"{host}:{inside}")]
    return docker("run", "--rm", *(["--entrypoint", entrypoint] if entrypoint else []), *volumes, image, *args,
                  timeout=timeout, check=False)
