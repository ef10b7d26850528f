"""Start and stop a private mosquitto (tests, benchmarks): own config, free port, by PID.

>>> from facewire.devtools.broker import Mosquitto
>>> import tempfile, pathlib
>>> with Mosquitto(pathlib.Path(tempfile.mkdtemp())) as broker:   # doctest: +SKIP
...     print(broker.url)
mqtt://127.0.0.1:40123
"""

from __future__ import annotations

import os
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
    """One mosquitto process on loopback. ``extra`` lines go into its config (auth, TLS …).

    Restartable on the same port, so a test can kill the broker mid-stream.
    ``nodelay`` sets ``set_tcp_nodelay``: mosquitto leaves Nagle on for its client
    sockets by default, and a small message to a subscriber then often waits ~40 ms
    for the previous one's delayed ACK.
    """

    def __init__(
        self, workdir: Path, port: int | None = None, extra: str = "", nodelay: bool = True
    ) -> None:
        self.exe = mosquitto_exe()
        self.workdir = workdir
        self.port = port or free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            f"set_tcp_nodelay {'true' if nodelay else 'false'}\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\n" + extra
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

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
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
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
