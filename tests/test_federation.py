"""The local federation's files and bad input, without starting Flower (fast)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from launch.environment import descendants, is_alive, stop_process
from launch.federation import (
    Federation,
    FederationError,
    main,
    make_certificates,
    make_node_key,
)


def test_the_server_certificate_is_signed_by_the_ca_for_loopback(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    paths = make_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    server = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert paths["key"].stat().st_mode & 0o077 == 0  # the private key is private


def test_a_node_key_pair_is_what_flower_loads(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        load_ssh_private_key,
        load_ssh_public_key,
    )

    private, public = make_node_key(tmp_path, "user0")
    key = load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert load_ssh_public_key(public.read_bytes()) == key.public_key()
    assert private.stat().st_mode & 0o077 == 0


def test_bad_input_is_refused_naming_the_flag_or_the_step(tmp_path, capsys):
    federation = Federation(tmp_path / "fed", port=18000)
    federation.secure(1)
    (tmp_path / "fed" / "certs" / "ca.crt").unlink()
    with pytest.raises(FederationError, match=r"--root-certificates .*ca.crt: no such file"):
        federation.start_supernode(0, "resnet10t")
    with pytest.raises(FederationError, match=r"--auth-supernode-private-key .*user5: no such"):
        federation.start_supernode(5, "resnet10t", root_certificates=None)
    with pytest.raises(FederationError, match=r"the ca file .*ca.crt is missing: run `up` first"):
        federation.start_superlink()
    assert main(["--folder", str(tmp_path / "none"), "run", "", "--output", "x"]) == 1
    assert "no federation is up in" in capsys.readouterr().err
    assert main(["--folder", str(tmp_path / "none"), "down"]) == 0
    assert "nothing (no process was running)" in capsys.readouterr().out
    assert federation.running() == {}


def test_processes_are_found_below_a_parent_and_stopped_by_pid():
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen([sys.executable, "
            "'-c', 'import time; time.sleep(60)']); time.sleep(60)",
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while len(descendants(parent.pid)) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        children = descendants(parent.pid)
        assert len(children) == 1 and "time.sleep(60)" in children[0][1]
    finally:
        stop_process(parent.pid, grace=5)
    assert parent.wait(timeout=10) is not None
    deadline = time.monotonic() + 10
    while is_alive(children[0][0]) and time.monotonic() < deadline:  # the group was stopped
        time.sleep(0.1)
    assert not is_alive(children[0][0])
