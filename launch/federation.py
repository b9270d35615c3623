"""A secure Flower federation on this machine: one SuperLink, one SuperNode per user device.

    python -m launch.federation up users.count=3      # certificates, keys, processes
    python -m launch.federation run "experiment.rounds=10" --output outputs/deployed
    python -m launch.federation down                  # stop every process it started

Everything runs as Flower's deployment runtime (not the simulation), with TLS
(a CA and a server certificate for 127.0.0.1/localhost made here) and
SuperNode authentication (one key pair per device, registered with the
SuperLink). Each device builds its own assets into its own folder and its
SuperNode names them in its node config, as a device on another machine
would. The state lives in one folder (``.federation`` by default): ``certs/``,
``keys/``, ``devices/<k>/`` (each device's cache), ``logs/``, ``flwr/`` (the
Flower home with the connection) and ``pids.json``. ``docs/DEPLOYMENT.md``
gives the same steps as commands for separate machines.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clients.device import Device
from launch.environment import QUIET_ENV, descendants, stop_process

REPO = Path(__file__).resolve().parents[1]
CONNECTION = "fedalign-local"  # the connection's name in the Flower home's config.toml
DEFAULT_FOLDER = Path(".federation")
DEFAULT_PORT = 8000
NODE_PORT_OFFSET = 100  # SuperNode k serves its own runtime API on SuperLink port + 100 + k


class FederationError(RuntimeError):
    """A step of bringing the federation up or running on it failed; says which and why."""


# ---- certificates and keys -------------------------------------------------------------------
def write_run_config(path: Path, values: dict[str, str]) -> Path:
    """A ``flwr run --run-config <file>.toml`` file holding ``values`` as TOML strings.

    Flower's inline syntax (``--run-config "overrides='...'"``) cannot carry a quote
    inside a value (``simulation='my label'`` arrives emptied, ``simulation='a b'`` as
    "invalid format"); a TOML file carries any string. Each value is written as a basic
    string (JSON's escapes are TOML's).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    text = "".join(
        f"{key} = {json.dumps(value, ensure_ascii=False)}\n" for key, value in values.items()
    )
    path.write_text(text, encoding="utf-8")
    return path


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def make_certificates(folder: Path, days: int = 30) -> dict[str, Path]:
    """A CA and a server certificate it signs, valid for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def builder(subject: x509.Name, issuer: x509.Name, key) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
        )

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = name("fedalign federation CA")
    ca = (
        builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    hosts = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = (
        builder(name("127.0.0.1"), ca_name, server_key)
        .add_extension(x509.SubjectAlternativeName(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    pem = serialization.Encoding.PEM
    paths["ca"].write_bytes(ca.public_bytes(pem))
    paths["cert"].write_bytes(server.public_bytes(pem))
    _write_private(
        paths["key"],
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return paths


def make_node_key(folder: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's authentication key pair (EC P-384, OpenSSH format): private, public."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / name, folder / f"{name}.pub"
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n"
    )
    return private, public


# ---- processes -------------------------------------------------------------------------------
def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Federation:
    """The files and processes of one local federation (see the module's docstring)."""

    folder: Path = DEFAULT_FOLDER
    port: int = DEFAULT_PORT

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).resolve()

    # where things are
    @property
    def certs(self) -> dict[str, Path]:
        d = self.folder / "certs"
        return {"ca": d / "ca.crt", "cert": d / "server.pem", "key": d / "server.key"}

    def key(self, user: int) -> Path:
        return self.folder / "keys" / f"user{user}"

    def device_dir(self, user: int) -> Path:
        return self.folder / "devices" / str(user)

    @property
    def flwr_home(self) -> Path:
        return self.folder / "flwr"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self, name: str) -> Path:
        return self.folder / "logs" / f"{name}.log"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of every process: quiet Flower, this venv first on PATH, the
        federation's Flower home."""
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            **QUIET_ENV,
            "FLWR_HOME": str(self.flwr_home),
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            **extra,
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return env

    # process bookkeeping
    def _pids(self) -> dict[str, int]:
        path = self.folder / "pids.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _remember(self, name: str, pid: int | None) -> None:
        pids = self._pids()
        if pid is None:
            pids.pop(name, None)
        else:
            pids[name] = pid
        (self.folder / "pids.json").write_text(json.dumps(pids, indent=1) + "\n")

    def _start(self, name: str, command: Sequence[str], env: dict[str, str]) -> subprocess.Popen:
        self.log(name).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log(name), "ab") as log:
            proc = subprocess.Popen(
                list(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
        self._remember(name, proc.pid)
        return proc

    def stop(self, name: str) -> None:
        """Stop a process started here and everything below it, also what runs in a process
        group of its own (the SuperLink's SuperExec and ServerApp)."""
        pid = self._pids().get(name)
        if pid is not None:
            below = [child for child, _ in descendants(pid)]
            stop_process(pid)
            for child in below:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child, signal.SIGKILL)
            self._remember(name, None)

    def running(self) -> dict[str, int]:
        """The processes started here that are still alive, by name."""
        alive = {}
        for name, pid in self._pids().items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, 0)
                alive[name] = pid
        return alive

    def serverapp_pids(self) -> list[int]:
        """The processes running a ServerApp (the AP) under this federation's SuperLink."""
        superlink = self._pids().get("superlink")
        if superlink is None:
            return []
        return [pid for pid, command in descendants(superlink) if "flwr-serverapp" in command]

    def down(self) -> list[str]:
        """Stop every process this federation started (SuperNodes first); their names."""
        names = sorted(self._pids(), key=lambda n: n == "superlink")
        for name in names:
            self.stop(name)
        return names

    # bringing it up
    def secure(self, users: int) -> None:
        """Certificates and one key pair per user (kept if already there)."""
        if not self.certs["ca"].exists():
            make_certificates(self.folder / "certs")
        for user in range(users):
            if not self.key(user).exists():
                make_node_key(self.folder / "keys", f"user{user}")
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.address}"\nroot-certificates = "{self.certs["ca"]}"\n'
        )

    def start_superlink(self, ap_cache: str | None = None, timeout: float = 60.0) -> None:
        """The SuperLink with TLS and SuperNode authentication on ``127.0.0.1:port``, its
        state in ``superlink.db`` (started again, it knows the registered devices); the
        AP's ServerApp reads its assets from ``ap_cache`` (``$FEDALIGN_CACHE`` if None)."""
        if _port_open(self.port):
            raise FederationError(
                f"port {self.port} on 127.0.0.1 is in use: stop what runs "
                "there, or choose another with --port"
            )
        for name, path in self.certs.items():
            if not path.is_file():
                raise FederationError(f"the {name} file {path} is missing: run `up` first")
        extra = {"FEDALIGN_CACHE": ap_cache} if ap_cache else {}
        proc = self._start(
            "superlink",
            [
                "flower-superlink",
                "--ssl-ca-certfile",
                str(self.certs["ca"]),
                "--ssl-certfile",
                str(self.certs["cert"]),
                "--ssl-keyfile",
                str(self.certs["key"]),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                # registered keys and runs survive a restart of the SuperLink
                "--database",
                str(self.folder / "superlink.db"),
            ],
            self.env(FLWR_LOG_LEVEL="INFO", **extra),
        )
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise FederationError(f"the SuperLink did not start (see {self.log('superlink')})")
            time.sleep(0.2)

    def flwr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """A ``flwr`` command against this federation's SuperLink."""
        return subprocess.run(
            ["flwr", *args],
            env=self.env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def register(self, user: int) -> None:
        """Register user ``user``'s public key with the SuperLink (once)."""
        done = self.flwr("supernode", "register", f"{self.key(user)}.pub", CONNECTION)
        if done.returncode != 0 and "already" not in (done.stdout + done.stderr).lower():
            raise FederationError(
                f"registering user {user}'s key failed: "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )

    def start_supernode(
        self,
        user: int,
        model: str,
        *,
        key: Path | None = None,
        root_certificates: Path | None | bool = True,
    ) -> subprocess.Popen:
        """User ``user``'s SuperNode, with its model and its own asset folder in its node
        config (``key``/``root_certificates`` default to the user's key and the CA)."""
        certificates = self.certs["ca"] if root_certificates is True else root_certificates
        key = key or self.key(user)
        for flag, path in (
            ("--root-certificates", certificates),
            ("--auth-supernode-private-key", key),
        ):
            if path and not Path(path).is_file():
                raise FederationError(
                    f"{flag} {path}: no such file (the CA certificate and the "
                    "device's private key must be on the device)"
                )
        config = Device(user, model, str(self.device_dir(user))).node_config()
        command = [
            "flower-supernode",
            "--superlink",
            self.address,
            "--auth-supernode-private-key",
            str(key),
            "--port",
            str(self.port + NODE_PORT_OFFSET + user),
            "--node-config",
            config,
        ]
        if certificates:
            command += ["--root-certificates", str(certificates)]
        return self._start(f"supernode-{user}", command, self.env(FLWR_LOG_LEVEL="INFO"))

    def kill_supernode(self, user: int) -> None:
        """User ``user``'s SuperNode and the ClientApps below it killed with SIGKILL, as a
        crash or a power cut would: no goodbye reaches the SuperLink."""
        pid = self._pids().get(f"supernode-{user}")
        if pid is None:
            raise FederationError(f"no SuperNode of user {user} was started here")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        self._remember(f"supernode-{user}", None)

    def restart_supernode(
        self,
        user: int,
        model: str,
        *,
        every: float = 2.0,
        settled: float = 10.0,
        timeout: float = 300.0,
    ) -> int:
        """Start user ``user``'s SuperNode again as a restart loop would (``until
        flower-supernode ...; do sleep 2; done``): the SuperLink refuses it while the
        node it replaces is still online; returns how many starts it took.

        Parameters
        ----------
        every : float
            Seconds between a refused start and the next.
        settled : float
            Seconds a start must stay up to count as accepted.
        timeout : float
            Seconds after which to give up (:class:`FederationError`).
        """
        starts, deadline = 0, time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise FederationError(
                    f"user {user}'s SuperNode was refused for {timeout:.0f} s (see "
                    f"{self.log(f'supernode-{user}')})"
                )
            starts += 1
            proc = self.start_supernode(user, model)
            deadline = time.monotonic() + settled
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if proc.poll() is None:
                return starts
            time.sleep(every)

    def build_device_assets(self, user: int, model: str, overrides: Sequence[str] = ()) -> None:
        """Build user ``user``'s assets into its device folder (``launch.assets user``)."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "launch.assets",
                "user",
                "--model",
                model,
                "--cache-dir",
                str(self.device_dir(user)),
                *overrides,
            ],
            env=self.env(),
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise FederationError(
                f"building user {user}'s device ({model}) failed: {done.stderr.strip()[-800:]}"
            )

    def up(
        self, models: Sequence[str], overrides: Sequence[str] = (), ap_cache: str | None = None
    ) -> None:
        """Certificates, keys, every device's assets, the SuperLink, the registrations and
        one SuperNode per user."""
        self.secure(len(models))
        for user, model in enumerate(models):
            self.build_device_assets(user, model, overrides)
        self.start_superlink(ap_cache)
        for user, model in enumerate(models):
            self.register(user)
            self.start_supernode(user, model)

    # running
    def submit(self, overrides: str, output_dir: Path) -> int:
        """Start a run of this project; its run id."""
        if not (self.flwr_home / "config.toml").is_file() or "superlink" not in self.running():
            raise FederationError(f"no federation is up in {self.folder}: run `up` first")
        output_dir = Path(output_dir).resolve()
        output_dir.mkdir(parents=True, exist_ok=True)
        run_config = write_run_config(
            output_dir / "run_config.toml",
            {"overrides": overrides, "output-dir": str(output_dir)},
        )
        done = self.flwr(
            "run", str(REPO), CONNECTION, "--run-config", str(run_config), "--format", "json"
        )
        try:
            return int(json.loads(done.stdout)["run-id"])
        except (ValueError, KeyError, TypeError):
            said = (done.stdout + done.stderr).strip()[-800:]
            raise FederationError(f"`flwr run` did not start a run: {said}") from None

    def status(self, run_id: int) -> str:
        """The run's status as Flower reports it, e.g. ``running`` or ``finished:completed``."""
        done = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
        try:
            return str(json.loads(done.stdout)["runs"][0]["status"])
        except (ValueError, KeyError, IndexError, TypeError):
            said = (done.stdout + done.stderr).strip()[-500:]
            raise FederationError(f"`flwr ls` failed: {said}") from None

    def wait(self, run_id: int, timeout: float = 1800.0) -> str:
        """Wait until the run is finished; its final status."""
        deadline = time.monotonic() + timeout
        while not (status := self.status(run_id)).startswith("finished"):
            if time.monotonic() > deadline:
                raise FederationError(f"run {run_id} is still {status} after {timeout:.0f} s")
            time.sleep(1.0)
        return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m launch.federation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="certificates, keys, devices, SuperLink, SuperNodes")
    up.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides naming the users "
        "(users.count=..., users.models=[...]) and the pilot set",
    )
    run = commands.add_parser("run", help="run on the federation and wait for the end")
    run.add_argument("overrides", nargs="?", default="", help="the run's Hydra overrides")
    run.add_argument("--output", type=Path, required=True, help="where the tables go")
    commands.add_parser("down", help="stop every process the federation started")
    args = parser.parse_args(argv)
    federation = Federation(args.folder, args.port)
    try:
        if args.command == "up":
            from conf import settings

            users = settings(*args.overrides)
            federation.up(users.users.models, args.overrides)
            print(
                f"federation up in {federation.folder}: SuperLink on {federation.address}, "
                f"{users.num_users} SuperNodes ({', '.join(users.users.models)})"
            )
        elif args.command == "run":
            run_id = federation.submit(args.overrides, args.output)
            print(f"run {run_id} started; waiting (logs: flwr log {run_id} {CONNECTION})")
            status = federation.wait(run_id)
            print(f"run {run_id}: {status}; tables in {args.output}")
            return 0 if status == "finished:completed" else 1
        else:
            stopped = federation.down()
            print(f"stopped {', '.join(stopped) or 'nothing (no process was running)'}")
    except (FederationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.command == "up":
            federation.down()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
