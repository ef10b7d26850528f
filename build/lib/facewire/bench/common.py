"""Shared helpers for the benchmarks: a private mosquitto, percentiles, tables, JSON.

Every bench prints a readable table (or, with ``--json``, one JSON object per line on
stdout) and writes ``bench/results/<name>.json`` with the rows and the machine they
were measured on. Benchmarks are measurements, not tests: nothing here asserts a time.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facewire.devtools.broker import Mosquitto, mosquitto_exe

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


# -- the broker ------------------------------------------------------------------------


class Broker(Mosquitto):
    """A private mosquitto on a free loopback port, its config in a temp dir."""

    def __init__(self, port: int | None = None, nodelay: bool = True) -> None:
        try:
            mosquitto_exe()
        except RuntimeError as exc:
            raise SystemExit(f"{exc}: the benches start their own broker") from None
        self._dir = tempfile.TemporaryDirectory(prefix="facewire-bench-")
        super().__init__(Path(self._dir.name), port, nodelay=nodelay)

    def stop(self) -> None:
        super().stop()
        self._dir.cleanup()


def broker_config(url: str) -> Any:
    from facewire.config.schema import BrokerConfig

    return BrokerConfig(url=url)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGINT (clean shutdown), then SIGKILL: by PID, only our own child."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a bench's child process: this repo importable, quiet logs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("GLOG_minloglevel", "2")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.update(extra)
    return env


def limit_faiss_threads(n: int) -> None:
    """Give FAISS ``n`` OpenMP threads in every thread of this process (0: leave it).

    ``faiss.omp_set_num_threads`` only changes the *calling* thread's setting (OpenMP's
    per-thread ICV), not a worker thread's; ``OMP_NUM_THREADS`` before the first
    ``import faiss`` applies to all of them.
    """
    if n <= 0:
        return
    if "faiss" in sys.modules:
        raise RuntimeError("limit_faiss_threads() must run before faiss is imported")
    os.environ["OMP_NUM_THREADS"] = str(n)


# -- numbers -------------------------------------------------------------------------------


def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 95, 99)) -> list[float | None]:
    a = np.fromiter(values, float)
    if not len(a):
        return [None for _ in qs]
    return [round(float(v), 3) for v in np.percentile(a, list(qs))]


def summary(values: Iterable[float], prefix: str = "", suffix: str = "_ms") -> dict[str, Any]:
    """``{p50, p95, p99, max}`` of ``values`` with keys like ``<prefix>p50<suffix>``."""
    a = np.fromiter(values, float)
    p50, p95, p99 = percentiles(a)
    return {
        f"{prefix}p50{suffix}": p50,
        f"{prefix}p95{suffix}": p95,
        f"{prefix}p99{suffix}": p99,
        f"{prefix}max{suffix}": round(float(a.max()), 3) if len(a) else None,
    }


def machine() -> dict[str, Any]:
    """Where it ran: CPU model, cores, load average (the machines can be shared)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "loadavg": load,
        "python": platform.python_version(),
    }


# -- output ----------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1000:
        return f"{value:,}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain-text table; ``columns`` are ``(key, header)``. Numbers right-aligned."""
    cells = [[fmt(r.get(k)) for k, _ in columns] for r in rows]
    heads = [h for _, h in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]
    numeric = [
        all(isinstance(r.get(k), int | float) or r.get(k) is None for r in rows) for k, _ in columns
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(heads), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in cells]
    return "\n".join(out)


def note(text: str) -> None:
    """Progress and remarks go to stderr, so ``--json`` stdout stays pure JSON lines."""
    print(text, file=sys.stderr, flush=True)


def emit(
    name: str,
    rows: list[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    as_json: bool,
    params: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
    out_dir: Path | None = None,
) -> Path:
    """Print ``rows`` (table or JSON lines) and write ``<out_dir>/<name>.json``."""
    if as_json:
        for r in rows:
            print(json.dumps(r), flush=True)
    else:
        print(table(rows, columns))
        for n in notes:
            print(f"note: {n}")
        sys.stdout.flush()
    out_dir = out_dir or Path(os.environ.get("FACEWIRE_BENCH_RESULTS") or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    doc = {
        "bench": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "params": params or {},
        "notes": list(notes),
        "rows": rows,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``n`` random L2-normalised float32 vectors (a synthetic gallery or probes)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


SYNTHETIC_PER_ID = 10  # synthetic gallery: photos per identity
# Spread of one person's photos around their centre: cosine ≈ 0.6 between two photos
# of one person and ≈ 0 between people, as real face embeddings behave.
SYNTHETIC_SPREAD = 0.8


def _around(centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(centres.shape, dtype=np.float32)
    v = centres + noise * np.float32(SYNTHETIC_SPREAD / np.sqrt(centres.shape[1]))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def synthetic_gallery(n: int, dim: int) -> tuple[np.ndarray, list[str]]:
    """``n`` vectors of ``n / 10`` made-up people (10 "photos" each), and their labels."""
    people = -(-n // SYNTHETIC_PER_ID)
    centres = unit_vectors(people, dim, seed=0)
    rng = np.random.default_rng(1)
    vectors = _around(np.repeat(centres, SYNTHETIC_PER_ID, axis=0)[:n], rng)
    labels = [f"id{i // SYNTHETIC_PER_ID:06d}" for i in range(n)]
    return vectors, labels


def synthetic_probes(n_gallery: int, dim: int, count: int = 256) -> np.ndarray:
    """Queries for ``synthetic_gallery(n_gallery, dim)``: half new "photos" of its
    people (they should be named), half strangers (random: they should not)."""
    people = -(-n_gallery // SYNTHETIC_PER_ID)
    centres = unit_vectors(people, dim, seed=0)
    rng = np.random.default_rng(2)
    known = _around(centres[rng.integers(0, people, count // 2)], rng)
    strangers = unit_vectors(count - len(known), dim, seed=3)
    return np.concatenate([known, strangers])
