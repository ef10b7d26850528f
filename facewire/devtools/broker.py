"""Start and stop a private mosquitto (tests, benchmarks): own config, free port, by PID.

>>> from facewire.devtools.broker import Mosquitto
>>> import tempfile, pathlib
>>> with Mosquitto(pathlib.Path(tempfile.mkdtemp())) as broker:   # doctest: +SKIP
...     print(broker.url)
mqtt://127.0.0.1:40123
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_exe() -> str:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        raise RuntimeError("mosquitto is not installed: apt-get install -y mosquitto")
    return exe


class Mosquitto:
    """One mosquitto process on loopback. ``extra`` lines go into its config.

    Restartable on the same port, so a test can kill the broker mid-stream.
    ``nodelay`` sets ``set_tcp_nodelay``: mosquitto leaves Nagle on for its client
    sockets by default, and a small message to a subscriber then often waits ~40 ms
    for the previous one's delayed ACK.

    ``password_file`` (and ``acl_file``) make it refuse anonymous clients and check
    those files, as a deployment does. ``tls`` = ``(cafile, certfile, keyfile)`` adds
    a TLS listener on a second free port (:attr:`tls_port`, :attr:`tls_url`).
    ``config`` replaces the generated config (listening on ``port`` and ``tls_port``).
    :meth:`reload` sends SIGHUP (mosquitto re-reads the password file and ACL).
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra: str = "",
        nodelay: bool = True,
        *,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        config: str | None = None,
        tls_port: int = 0,
    ) -> None:
        self.exe = mosquitto_exe()
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir = workdir
        self.port = port or free_port()
        self.tls_port = tls_port or (free_port() if tls else 0)
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        if password_file is not None:
            access = f"allow_anonymous false\npassword_file {password_file}\n"
            access += f"acl_file {acl_file}\n" if acl_file is not None else ""
        elif acl_file is not None:
            raise ValueError("acl_file needs a password_file (the ACL names its users)")
        else:
            access = "allow_anonymous true\n"
        listeners = f"listener {self.port} 127.0.0.1\n"
        if tls is not None:
            cafile, certfile, keyfile = tls
            listeners += (
                f"listener {self.tls_port} 127.0.0.1\n"
                f"cafile {cafile}\ncertfile {certfile}\nkeyfile {keyfile}\n"
                "tls_version tlsv1.2\n"
            )
        # As root mosquitto would switch to the user "mosquitto", who cannot read a
        # private temp folder (log, password file); stay who we are.
        me = pwd.getpwuid(os.geteuid()).pw_name
        if config is not None:
            # a whole config of the caller's (a deployment's, rewritten for loopback):
            # its listeners must be ``port`` (and ``tls_port``)
            self.conf.write_text(f"{config}\nuser {me}\nlog_dest file {self.log}\n" + extra)
            return
        self.conf.write_text(
            listeners + access + f"user {me}\npersistence false\n"
            "max_queued_messages 100000\n"
            f"set_tcp_nodelay {'true' if nodelay else 'false'}\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\n" + extra
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        """``mqtts://127.0.0.1:<tls_port>`` (an address the lab server certificate carries)."""
        if not self.tls_port:
            raise RuntimeError("this broker has no TLS listener (Mosquitto(..., tls=...))")
        return f"mqtts://127.0.0.1:{self.tls_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its password file and ACL."""
        if self.pid is None:
            raise RuntimeError("mosquitto is not running")
        os.kill(self.pid, signal.SIGHUP)

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log.read_text() if self.log.exists() else ""
                raise RuntimeError(f"mosquitto exited at once: {log}")
            try:
                for port in (self.port, self.tls_port) if self.tls_port else (self.port,):
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        pass
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
