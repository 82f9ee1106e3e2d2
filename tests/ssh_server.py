"""A throwaway OpenSSH server on 127.0.0.1 for testing DVC's SSH remote end to end."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass(frozen=True)
class SshServer:
    """Where the server listens and the key that logs in."""

    port: int
    user: str
    client_key: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@contextlib.contextmanager
def start_ssh_server(workdir: Path) -> Iterator[SshServer]:
    """Run sshd on a free loopback port with fresh keys; stop it on exit.

    Skips the calling test when sshd is not installed or we are not root (sshd must switch
    to the logging-in user).
    """
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server not installed (Debian: openssh-server; `make` installs it)")
    if os.geteuid() != 0:
        pytest.skip("running sshd for the test needs root")
    workdir.mkdir(parents=True)
    _keygen(workdir / "host_key")
    _keygen(workdir / "client_key")
    authorized = workdir / "authorized_keys"
    authorized.write_text((workdir / "client_key.pub").read_text())
    authorized.chmod(0o600)
    port = _free_port()
    config = workdir / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {workdir / 'host_key'}",
        f"AuthorizedKeysFile {authorized}", f"PidFile {workdir / 'sshd.pid'}",
        "StrictModes no", "UsePAM no", "PasswordAuthentication no",
        "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", "",
    ]))
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation directory
    log = open(workdir / "sshd.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    try:
        _wait_for_port(port, process, workdir / "sshd.log")
        yield SshServer(port, getpass.getuser(), workdir / "client_key")
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on {port}: {log.read_text()}")
