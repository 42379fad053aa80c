"""A throw-away certificate authority for a local TLS listener: a CA, a server
certificate for 127.0.0.1/localhost, and a client certificate (mutual TLS), made with
``openssl``. PEM files, which Kafka 4 reads directly (``ssl.keystore.type=PEM``)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA certificate: what clients trust
    server_keystore: Path  # server key (unencrypted PKCS#8) followed by its certificate
    client_cert: Path
    client_key: Path


def make_certificates(folder: Path, name: str = "outbox-test") -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    f = folder

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=f, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
            f"/CN={name}-ca", "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    (f / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for who in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}-{who}",
                "-keyout", f"{who}.key", "-out", f"{who}.csr")  # fmt: skip
        extra = ["-extfile", "server.ext"] if who == "server" else []
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "30", "-out", f"{who}.crt", *extra)  # fmt: skip
    # Kafka's PEM keystore: the private key as unencrypted PKCS#8, then the certificate.
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server.pk8")
    keystore = f / "server-keystore.pem"
    keystore.write_text((f / "server.pk8").read_text() + (f / "server.crt").read_text())
    return Certificates(f / "ca.crt", keystore, f / "client.crt", f / "client.key")
