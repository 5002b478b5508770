"""The SDK verifies an https:// gateway's certificate: against ``ca_file`` (or
``MESHGUARD_CA_FILE``) when given, and refuses a certificate it cannot verify. Runs the real
binary with ``serve --tls-cert --tls-key`` and a self-signed certificate made by openssl."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from gateway_process import free_port, meshguard_binary
from meshguard import MeshGuardClient
from meshguard.exceptions import GatewayUnavailableError


def certificate(directory: Path) -> Tuple[Path, Path]:
    cert, key = directory / "gw.crt", directory / "gw.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-days", "2", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
        + ["-addext", "basicConstraints=critical,CA:FALSE"]
        + ["-addext", "extendedKeyUsage=serverAuth"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_gateway(tmp_path: Path) -> Iterator[Tuple[str, Path]]:
    cert, key = certificate(tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [str(meshguard_binary()), "--data-dir", str(tmp_path / "data"), "serve"]
        + ["--addr", f"127.0.0.1:{port}", "--tls-cert", str(cert), "--tls-key", str(key)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    url = f"https://localhost:{port}"
    try:
        deadline = time.monotonic() + 30
        while not MeshGuardClient(gateway_url=url, ca_file=str(cert)).is_healthy():
            assert time.monotonic() < deadline, "the TLS gateway did not answer"
            time.sleep(0.1)
        yield url, cert
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_the_sdk_trusts_the_given_ca_and_refuses_an_unverified_certificate(
    tls_gateway: Tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = tls_gateway
    assert MeshGuardClient(gateway_url=url, ca_file=str(cert)).health()["status"] == "healthy"
    monkeypatch.setenv("MESHGUARD_CA_FILE", str(cert))
    assert MeshGuardClient(gateway_url=url).is_healthy()
    monkeypatch.delenv("MESHGUARD_CA_FILE")
    with pytest.raises(GatewayUnavailableError):
        MeshGuardClient(gateway_url=url).health()
