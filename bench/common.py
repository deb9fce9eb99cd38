"""What the benchmark scripts share: arguments, the machine's description, timing side by
side, peak memory, Markdown tables, and CMATH at the field's IEMOCAP shapes.

Timing: every variant of a table is warmed up, then timed in rounds that alternate the
variants (the order rotates each round), so that a slow spell of a shared machine hits
them all alike; a table reports each variant's median and its ratio to the row it is
compared with. On CUDA every timed call ends with ``torch.cuda.synchronize()``.

Peak memory (:func:`peak_bytes`), the most memory one call holds at once above what was
held just before it; the callers measure a call already warmed up, so first-call costs
are not in it. Two figures, one per device, which do not compare with each other:

- CPU: the process's **peak resident set** (what the operating system gave it: PyTorch's
  tensors, oneDNN's scratch space, Python's objects alike) during the call, less its
  resident set before the call. Before the call, freed memory that glibc keeps is handed
  back (``malloc_trim``) and the peak is reset (``/proc/self/clear_refs``), so that the
  figure is this call's, not an earlier one's. The peak is ``VmHWM`` of
  ``/proc/self/status``, the counter ``getrusage``'s ``ru_maxrss`` reports for the
  process's own memory; ``ru_maxrss`` itself starts, in a process started by another,
  at that parent's peak. Where the peak cannot be reset (no such ``/proc``), the figure is
  the growth of ``ru_maxrss`` over the call, which reads low once an earlier call went
  higher.
- CUDA: the **allocator peak**, ``torch.cuda.max_memory_allocated`` after
  ``torch.cuda.reset_peak_memory_stats``, less ``torch.cuda.memory_allocated`` before:
  tensor memory only, without what the caching allocator holds unused or libraries
  allocate outside it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from fusionkit import Dialogue, DialogueBatch
from fusionkit.data import IEMOCAP_LABELS, SyntheticConversations
from fusionkit.data.synthetic import IEMOCAP_DIMS
from fusionkit.models.cmath import (
    CMATH,
    CMATHConfig,
    DataSpec,
    load_config,
    loss_counts,
    objective,
)

ROOT = Path(__file__).resolve().parents[1]
QUICK_DIMS = {"text": 24, "audio": 40, "visual": 16}
"""Modality widths of ``--quick`` runs (the real ones are IEMOCAP's: 1024 / 1582 / 342)."""
QUICK_RUN = [
    "data.num_dialogues=18",
    "data.min_len=3",
    "data.max_len=12",
    "data.dims={text = 16, audio = 12, visual = 8}",
    "model.hidden_dim=16",
    "model.heads=2",
    "model.compressed_dim=8",
    "model.reconstruction_hidden=0",
    "train.batch_size=4",
    "train.epochs=2",
]
"""``--set`` assignments of ``--quick`` training runs on the synthetic source: tiny data and
model, two epochs."""


# -- arguments and the machine ---------------------------------------------------------


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when it is set, else every core this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def parser(doc: str, *, clock: bool = True) -> argparse.ArgumentParser:
    """An argument parser with the options every script has; ``clock=False`` for a script
    whose times are the training loop's own (wall clock), which has no ``--clock``."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of seconds")
    p.add_argument(
        "--threads",
        type=int,
        default=default_threads(),
        help="torch threads (default: all cores, or OMP_NUM_THREADS when it is set)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    if clock:
        p.add_argument(
            "--clock",
            choices=["wall", "cpu"],
            default="wall",
            help="wall time (default), or this process's CPU time: steadier on a shared "
            "machine (with --threads 1 it is the time the step computed, not the time it waited)",
        )
    else:
        p.set_defaults(clock="wall")
    p.add_argument("--json", metavar="PATH", help="also write the table and its settings here")
    return p


def torch_device(device: str, threads: int) -> torch.device:
    """Use ``threads`` CPU threads; return the device."""
    torch.set_num_threads(threads)
    return torch.device(device)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(device: torch.device | str) -> dict:
    """Where the figures come from: CPU, cores, threads, GPU, versions, the load when started."""
    device = torch.device(device)
    info = {
        "device": device.type,
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "typecheck": os.environ.get("FUSIONKIT_TYPECHECK", "1"),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def describe(info: Mapping, clock: str = "wall") -> str:
    """One line for the top of a table."""
    where = f"GPU {info['gpu']}" if info.get("gpu") else "CPU only (no GPU)"
    load = f", load average {info['load_average_1min']}" if "load_average_1min" in info else ""
    timing = "wall time" if clock == "wall" else "CPU time of the process (--clock cpu)"
    return (
        f"{where}; {info['cpu']}, {info['cores']} cores, {info['threads']} torch threads; "
        f"torch {info['torch']}, python {info['python']}{load}; {timing}"
    )


# -- timing ------------------------------------------------------------------------------


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_alternating(
    fns: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    device: torch.device | str,
    warmup: int = 1,
    clock: str = "wall",
) -> dict[str, list[float]]:
    """Seconds of each call of each function: ``warmup`` untimed calls each, then
    ``repeats`` rounds that call every function once, the order rotating each round.
    ``clock``: ``"wall"`` or ``"cpu"`` (this process's CPU time, all its threads)."""
    if clock == "cpu" and torch.device(device).type == "cuda":
        raise ValueError("--clock cpu: a GPU's time is not this process's CPU time; use wall")
    now = CLOCKS[clock]
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = now()
            fns[name]()
            sync(device)
            times[name].append(now() - start)
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (the profiler's C++ side logs there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# -- memory ------------------------------------------------------------------------------


PROC = Path("/proc/self")


def _status_bytes(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in bytes."""
    for line in (PROC / "status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024  # kB
    raise KeyError(field)


def _max_rss_bytes() -> int:
    """``getrusage``'s peak resident set (KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _cpu_peak(fn: Callable[[], object]) -> int:
    """The process's peak resident set during ``fn()`` above its resident set before."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    try:
        (PROC / "clear_refs").write_text("5")  # the peak resident set := the resident set
    except OSError:
        before = _max_rss_bytes()
        fn()
        return _max_rss_bytes() - before
    before = _status_bytes("VmRSS")
    fn()
    return max(0, _status_bytes("VmHWM") - before)


def peak_bytes(fn: Callable[[], object], device: torch.device | str) -> int:
    """The most memory ``fn()`` holds at once above what was held before the call: the
    process's resident set on the CPU, the allocator's tensor memory on CUDA (the module
    docstring says how, and what each leaves out)."""
    device = torch.device(device)
    if device.type != "cuda":
        return _cpu_peak(fn)
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) - base


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) against log(x): the growth exponent."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-12)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den if den else float("nan")


# -- output ------------------------------------------------------------------------------


def markdown(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; floats keep the format they were given as strings."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | None, payload: Mapping) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str))


def emit(
    script: str,
    title: str,
    info: Mapping,
    headers: Sequence[str],
    rows: list,
    *,
    json_path,
    argv,
    **extra,
) -> None:
    """Print ``title`` and the table; with ``json_path``, write them, the machine and
    ``extra`` (more figures, by name) as JSON."""
    print(title)
    print()
    print(markdown(headers, rows))
    write_json(
        json_path,
        {"script": script, "argv": sys.argv[1:] if argv is None else argv, "machine": info,
         "headers": headers, "rows": rows, **extra},
    )  # fmt: skip


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


# -- CMATH at the field's shapes -----------------------------------------------------------


def cmath_config(hidden: int, *, quick: bool = False, **changes) -> CMATHConfig:
    """The IEMOCAP configuration (``configs/iemocap.toml``) at width ``hidden``; ``--quick``:
    a tiny one."""
    config = replace(load_config("iemocap").model, hidden_dim=hidden)
    if quick:
        config = replace(config, heads=2, ff_mult=2, cma_depth=1, compressed_dim=8)
    return replace(config, **changes)


def iemocap_dialogues(
    num: int = 16, max_len: int = 110, *, quick: bool = False, seed: int = 0
) -> list[Dialogue]:
    """``num`` synthetic dialogues of 10 to ``max_len`` utterances at IEMOCAP's widths
    (with the default seed: 16 dialogues, 1,213 utterances, the longest 110)."""
    dims = QUICK_DIMS if quick else IEMOCAP_DIMS
    gen = SyntheticConversations(
        num_dialogues=num, min_len=min(10, max_len), max_len=max_len, dims=dims, seed=seed
    )
    return list(gen.load().dialogues.values())


def random_batch(b: int, t: int, dims: Mapping[str, int], *, seed: int = 0) -> DialogueBatch:
    """``b`` dialogues of exactly ``t`` utterances with random features, two speakers and
    six classes: the input of the scaling runs, cheap to make at any length."""
    g = torch.Generator().manual_seed(seed)
    return DialogueBatch(
        features={m: torch.randn(b, t, d, generator=g) for m, d in sorted(dims.items())},
        mask=torch.ones(b, t, dtype=torch.bool),
        speakers=torch.randint(0, 2, (b, t), generator=g),
        labels=torch.randint(0, 6, (b, t), generator=g),
    )


def spec_for(dims: Mapping[str, int], longest: int) -> DataSpec:
    """What the model needs to know of IEMOCAP-shaped data of these widths."""
    return DataSpec(
        input_dims=dict(dims), label_names=list(IEMOCAP_LABELS), num_speakers=2, longest=longest
    )


def class_weights_of(dialogues: Sequence[Dialogue], classes: int = 6) -> torch.Tensor:
    """Inverse class frequencies of ``dialogues`` (the training script's class weights)."""
    labels = torch.cat([torch.as_tensor(d.labels) for d in dialogues])
    freq = torch.bincount(labels, minlength=classes)[:classes].float() / labels.numel()
    return torch.where(freq > 0, 1.0 / freq.clamp_min(1e-12), 0.0)


def build_cmath(config: CMATHConfig, spec: DataSpec, weights=None, *, seed: int = 0) -> CMATH:
    torch.manual_seed(seed)
    return CMATH(config, spec, weights)


def loss(model: CMATH, batch: DialogueBatch, normalizer: torch.Tensor | None = None):
    """The training objective of ``model`` on ``batch`` (``normalizer``: its
    :func:`~fusionkit.models.cmath.loss_counts`, computed when not given)."""
    if normalizer is None:
        normalizer = loss_counts(batch, model.class_weights)
    return objective(model, model(batch), batch, normalizer).total


def spawn_worker(script: str, opts: dict, **env: str) -> dict:
    """Run ``script --worker OPTS`` in a fresh process (with ``env`` added and
    ``OMP_NUM_THREADS`` from ``opts["threads"]``); return the JSON its last line prints."""
    environ = dict(os.environ, **env, OMP_NUM_THREADS=str(opts["threads"]))
    proc = subprocess.run(
        [sys.executable, str(Path(script).resolve()), "--worker", json.dumps(opts)],
        env=environ,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({opts}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
