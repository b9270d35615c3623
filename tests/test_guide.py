"""docs/DEPLOYMENT.md, run as written: every marked command block of the guide, on one
machine, to a finished secure run.

Each party (the AP, two user devices, the operator who runs ``flwr``) gets a home folder
of its own (``HOME``); the blocks run from the project folder, as the guide says. What
the guide leaves to the reader is done here as a reader would: ``ap.example.org`` and
``10.0.0.5`` become loopback, the ports free ones, ``/home/you`` the operator's home;
files the guide says to copy (the CA certificate, the public keys) are copied. A block
marked ``background`` keeps running (the SuperLink, the SuperNodes) and is stopped by its
process group when the test ends. The assets' folders point to the shared test cache, so
nothing is trained twice.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "DEPLOYMENT.md"
MARKED = re.compile(
    r"<!-- guide: (?P<party>\w+)(?P<extra>[^>]*?)-->\s*```(?P<lang>\w+)\n(?P<body>.*?)```", re.S
)
USERS = 2


@dataclass(frozen=True)
class Block:
    party: str  # ap, device or operator
    background: bool  # keeps running
    file: str | None  # the block is that file's content, not commands
    body: str


def guide_blocks(text: str) -> list[Block]:
    """The marked blocks of the guide, in order."""
    blocks = []
    for match in MARKED.finditer(text):
        extra = match["extra"].split()
        file = extra[extra.index("file") + 1] if "file" in extra else None
        blocks.append(Block(match["party"], "background" in extra, file, match["body"]))
    return blocks


def test_the_guide_marks_its_steps():
    """Each step of the guide is a marked block (a block left unmarked is not tested)."""
    blocks = guide_blocks(GUIDE.read_text())
    assert [b.party for b in blocks] == [
        "operator",  # plan
        "ap",  # certificates
        "device",  # key pair
        "ap",  # AP assets
        "ap",  # SuperLink
        "operator",  # config.toml
        "operator",  # register
        "device",  # device assets
        "device",  # SuperNode
        "operator",  # flwr run
    ]
    assert [b.background for b in blocks].count(True) == 2
    assert [b.file for b in blocks if b.file] == ["~/.flwr/config.toml"]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (the SuperLink's, or the devices')."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count < 65000 and not any(_listening(first + k) for k in range(count)):
            return first
    raise RuntimeError("no free ports")


def test_the_deployment_guide_runs_as_written_to_a_finished_secure_run(tmp_path, cache_dir):
    port = _free_ports(1)
    node_port = _free_ports(USERS)
    assert node_port != port
    homes = {name: tmp_path / name for name in ("ap", "operator")}
    homes.update({f"device{k}": tmp_path / f"device{k}" for k in range(USERS)})
    for home in homes.values():
        home.mkdir()
    (homes["ap"] / "fedalign-ap").symlink_to(cache_dir)  # the AP's assets, already built
    for k in range(USERS):
        (homes[f"device{k}"] / "fedalign").symlink_to(cache_dir)

    def concrete(body: str) -> str:
        return (
            body.replace("ap.example.org", "localhost")
            .replace("10.0.0.5", "127.0.0.1")
            .replace("0.0.0.0", "127.0.0.1")
            .replace("8000", str(port))
            .replace("9100 + K", f"{node_port} + K")
            .replace("/home/you", str(homes["operator"]))
        )

    env = {k: v for k, v in os.environ.items() if k not in ("FLWR_HOME", "FEDALIGN_CACHE")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    background: list[subprocess.Popen] = []
    models: list[str] = []

    def run(block: Block, home: Path, **extra: str) -> subprocess.CompletedProcess | None:
        where = {**env, "HOME": str(home), **extra}
        script = concrete(block.body)
        if block.file is not None:
            path = Path(block.file.replace("~", str(home)))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(script)
            return None
        if block.background:
            log = (home / f"background-{len(background)}.log").open("w")
            background.append(
                subprocess.Popen(
                    ["bash", "-euc", script],
                    cwd=ROOT,
                    env=where,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            return None
        done = subprocess.run(
            ["bash", "-euc", script],
            cwd=ROOT,
            env=where,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, f"{block.party} block failed:\n{script}\n{done.stderr[-2000:]}"
        return done

    try:
        for block in guide_blocks(GUIDE.read_text()):
            if block.party == "device":
                for k in range(USERS):
                    run(block, homes[f"device{k}"], K=str(k), MODEL=models[k])
                    if "ssh-keygen" in block.body:  # "send the public key to the operator"
                        shutil.copy(homes[f"device{k}"] / f"device{k}.key.pub", homes["operator"])
                if block.background:
                    time.sleep(2.0)
                continue
            home = homes[block.party]
            done = run(block, home)
            if "launch.assets plan" in block.body:
                models = re.findall(r"model=(\S+)", done.stdout)
                assert len(models) == USERS
            if "openssl" in block.body:  # "copy ca.crt to every device and the operator"
                for name, other in homes.items():
                    if name != "ap":
                        shutil.copy(home / "certs" / "ca.crt", other)
            if block.background:  # the SuperLink: wait until it listens
                deadline = time.monotonic() + 60
                while not _listening(port):
                    assert time.monotonic() < deadline, "the SuperLink did not start"
                    assert background[-1].poll() is None, "the SuperLink exited"
                    time.sleep(0.3)
            if "flwr run" in block.body:
                run_id = re.search(r"Successfully started run (\d+)", done.stdout + done.stderr)
                assert run_id, done.stdout + done.stderr
        operator = {**env, "HOME": str(homes["operator"])}
        deadline = time.monotonic() + 600
        while True:
            listed = subprocess.run(
                ["flwr", "ls", "my-ap", "--run-id", run_id[1], "--format", "json"],
                cwd=ROOT,
                env=operator,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert all(p.poll() is None for p in background), "a SuperLink or SuperNode exited"
            status = re.search(r'"status": "([^"]+)"', listed.stdout)
            if status and status[1].startswith("finished"):
                break
            assert time.monotonic() < deadline, listed.stdout + listed.stderr
            time.sleep(2.0)
        assert status[1] == "finished:completed"
        out = homes["operator"] / "runs" / "r1"
        assert (out / "results.parquet").exists() and (out / "precoders.npz").exists()
    finally:
        for proc in reversed(background):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
