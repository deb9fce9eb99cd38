"""The stages of ``bench/gpu.sh`` after the install: run each with a time limit, keep every
table in one folder, and write ``summary.md``.

    python bench/gpu_run.py --out runs/gpu/x           # on a GPU machine (gpu.sh calls this)
    python bench/gpu_run.py --dry-run --out /tmp/x     # the plan, then its CPU parts, tiny

Stages, in order: the machine (GPU, driver, versions, what ``auto`` picks there); the
``cuda`` tests (``tests/cuda``, in parallel processes with pytest-xdist where installed);
the CMATH training step eager (``bench/gpu_train.py``: fp32 and bf16 autocast, the IEMOCAP
configuration); the attention benchmark (``bench/attention.py``: fusionkit's triton, sdpa
and math backends, the bare SDPA call and that call on each of SDPA's kernels, at CMATH's
shapes and at dialogues up to 4,096 utterances; in bf16, then fp32); last, the training
step eager and compiled side by side (compiling takes minutes: last, so that an overrun
costs no other table). Each stage runs in its own process with a time limit: the smaller of its own limit and what
is left of the whole run's budget (``--budget``, counted from ``--started``, when gpu.sh
began) after keeping a minimum for each later stage. A stage that fails or runs out of time
is recorded as such, and the next one runs. Benchmarks run with shape checking off
(``FUSIONKIT_TYPECHECK=0``), as production runs should.

``--dry-run`` prints the plan, then runs the same stages on the CPU at tiny sizes, with any
GPU hidden (``CUDA_VISIBLE_DEVICES=``): the machine, the ``cuda`` tests (which skip, with the
reason), the benchmarks at tiny sizes; the compiled training step is skipped (compiling
takes minutes on a CPU). ``tests/bench/test_gpu_script.py`` runs it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 470
"""The whole run, install included, stays under 8 minutes: 470 s, and 10 s to spare."""

CMATH_SHAPES = ["16,8,110,110,32", "16,8,110,110,128"]
"""b, h, tq, tk, dh of CMATH's attention at hidden 256 and 1024 (IEMOCAP's batch of 16
dialogues padded to 110 utterances, 8 heads)."""
LONG_SHAPES = [f"1,8,{t},{t},{dh}" for dh in (32, 128) for t in (512, 1024, 2048, 4096)]
"""One dialogue of 512 to 4,096 utterances, 8 heads of width 32 and 128."""
TINY_SHAPES = ["2,2,24,40,16"]


@dataclass(frozen=True)
class Stage:
    """One step of the run: a command, where its output goes, and its time limits."""

    name: str
    title: str
    argv: list[str]
    limit_s: int  # the most this stage may take
    reserve_s: int  # what an earlier stage must leave for this one
    table: bool = False  # stdout is a Markdown table (the benchmarks)
    env: dict[str, str] = field(default_factory=dict)
    skip: str = ""  # why this stage does not run (a dry run's GPU-only stage)

    def command(self) -> str:
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (prefix + " " if prefix else "") + shlex.join(self.argv)


def plan(out: Path, *, dry_run: bool, python: str = sys.executable) -> list[Stage]:
    """The stages of a run writing into ``out`` (``dry_run``: on the CPU, tiny)."""
    py = [python]
    device = ["--device", "cpu" if dry_run else "cuda"]
    # A dry run hides any GPU: on a GPU machine too it runs the CPU parts only.
    hide = {"CUDA_VISIBLE_DEVICES": ""} if dry_run else {}
    quiet = {**hide, "FUSIONKIT_TYPECHECK": "0"}
    tests = [*py, "-m", "pytest", "-q", "-m", "cuda", "tests/cuda", "-rfEs"]
    tests += ["-p", "no:cacheprovider", f"--junitxml={out / 'cuda-tests.xml'}"]
    if not dry_run and importlib.util.find_spec("xdist") is not None:
        # Compiling the Triton kernels (about 60 variants) is most of the tests' time.
        tests += ["-n", str(max(1, min(8, os.cpu_count() or 1)))]
    if dry_run:
        train = [*py, "bench/gpu_train.py", *device, "--quick", "--threads", "1"]
        sizes = ["--shapes", *TINY_SHAPES, "--budget", "0.01", "--threads", "1"]
    else:
        train = [*py, "bench/gpu_train.py", *device, "--hidden", "1024", "--repeats", "10"]
        sizes = ["--shapes", *CMATH_SHAPES, *LONG_SHAPES, "--budget", "0.1"]
    attention = [*py, "bench/attention.py", *device, "--sdpa-kernels", *sizes]
    compiled = [*train, "--compile", "--json", str(out / "train-compiled.json")]
    return [
        Stage("machine", "Machine", [*py, "bench/gpu_run.py", "--machine"], 60, 5, env=hide),
        Stage("cuda-tests", "CUDA tests", tests, 180, 30, env=hide),
        Stage(
            "train",
            "Training step, eager",
            [*train, "--no-compile", "--json", str(out / "train.json")],
            90,
            30,
            table=True,
            env=quiet,
        ),
        *(
            Stage(
                f"attention-{dtype}",
                f"Attention, {dtype}",
                [*attention, "--dtype", dtype, "--json", str(out / f"attention-{dtype}.json")],
                90,
                30,
                table=True,
                env=quiet,
            )
            for dtype in ("bfloat16", "float32")
        ),
        # Last: compiling CMATH takes minutes, and an overrun here loses no other table.
        Stage(
            "train-compiled",
            "Training step, eager and compiled",
            compiled,
            300,
            60,
            table=True,
            env=quiet,
            skip="compiling CMATH takes minutes on a CPU" if dry_run else "",
        ),
    ]


def _run(stage: Stage, out: Path, limit: float) -> tuple[str, float]:
    """Run ``stage`` with ``limit`` seconds: stdout to ``<name>.md`` (a table) or
    ``<name>.txt``, stderr to ``<name>.log``; returns (status, seconds)."""
    suffix = ".md" if stage.table else ".txt"
    start = time.monotonic()
    with (
        open(out / f"{stage.name}{suffix}", "w") as stdout,
        open(out / f"{stage.name}.log", "w") as err,
    ):
        proc = subprocess.Popen(
            stage.argv,
            cwd=ROOT,
            env={**os.environ, **stage.env},
            stdout=stdout,
            stderr=err,
            start_new_session=True,  # its own process group: a time-out ends its children too
        )
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return f"timed out after {limit:.0f} s", time.monotonic() - start
    status = "ok" if rc == 0 else f"failed (exit status {rc})"
    if stage.name == "cuda-tests" and rc == 5:  # pytest: nothing was collected
        status = "failed (no test collected)"
    return status, time.monotonic() - start


def run(stages: list[Stage], out: Path, *, started: float, budget: float) -> list[dict]:
    """Every stage in turn, each within its limit and the run's budget."""
    deadline = started + budget
    results = []
    for i, stage in enumerate(stages):
        later = sum(s.reserve_s for s in stages[i + 1 :])
        limit = min(stage.limit_s, deadline - time.time() - later)
        head = f"[{i + 1}/{len(stages)}] {stage.title}"
        if stage.skip:
            status, seconds = f"skipped: {stage.skip}", 0.0
        elif limit < 5:
            status, seconds = "skipped: the run's time budget is spent", 0.0
        else:
            print(f"{head}: running (at most {limit:.0f} s) ...", flush=True)
            status, seconds = _run(stage, out, limit)
        print(f"{head}: {status} ({seconds:.0f} s)", flush=True)
        results.append({"stage": stage, "status": status, "seconds": seconds, "limit": limit})
    return results


def _tail(path: Path, lines: int) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def summary(results: list[dict], out: Path, *, dry_run: bool, total: float) -> str:
    """``summary.md``: what ran, how it went, and every table."""
    kind = "DRY RUN on the CPU, tiny sizes: no figure here says anything" if dry_run else "GPU"
    lines = [
        f"# bench/gpu.sh: {kind}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {total:.0f} s in all; files in `{out}`.",
        "",
        "| stage | status | seconds | limit s | command |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        s = r["stage"]
        lines.append(
            f"| {s.title} | {r['status']} | {r['seconds']:.0f} | {max(r['limit'], 0):.0f} "
            f"| `{s.command()}` |"
        )
    for r in results:
        s = r["stage"]
        lines += ["", f"## {s.title}", ""]
        if s.table:
            lines.append(_tail(out / f"{s.name}.md", 200) or "(no table)")
        elif s.name == "cuda-tests":
            lines += ["```text", _tail(out / f"{s.name}.txt", 40), "```"]
        else:
            lines.append(_tail(out / f"{s.name}.txt", 60))
        if r["status"] != "ok":
            lines += ["", "Last lines of its error output:", "", "```text"]
            lines += [_tail(out / f"{s.name}.log", 25), "```"]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def machine() -> str:
    """The machine as Markdown: GPU, versions, and what ``auto`` picks on this device."""
    import platform

    import torch

    from fusionkit.attention import TRITON_MEASURED, auto_backend, triton_available

    rows = {"python": platform.python_version(), "torch": torch.__version__}
    rows["CUDA (torch built with)"] = str(torch.version.cuda)
    if triton_available():
        import triton

        rows["triton"] = triton.__version__
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    rows["fusionkit commit"] = commit or "unknown"
    rows["CPU cores"] = str(os.cpu_count())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        cap = torch.cuda.get_device_capability(0)
        rows["GPU"] = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs"
        rows["compute capability"] = f"{cap[0]}.{cap[1]}"
        rows["cuDNN"] = str(torch.backends.cudnn.version())
        rows["bf16 supported"] = str(torch.cuda.is_bf16_supported())
        q = torch.zeros(1, 1, 8, 32, device="cuda", dtype=torch.bfloat16)
        rows["`auto` attention backend here"] = auto_backend(q, q)
        rows["Triton kernel measured on this generation"] = str(cap in TRITON_MEASURED)
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        rows["driver"] = smi.stdout.strip() or "unknown (no nvidia-smi)"
    else:
        rows["GPU"] = "none (torch.cuda.is_available() is False)"
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows.items())])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, help="the folder for every table (created)")
    p.add_argument("--dry-run", action="store_true", help="the plan, then the CPU parts, tiny")
    p.add_argument("--started", type=float, help="when the run began (epoch s; default now)")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole run")
    p.add_argument("--machine", action="store_true", help="print the machine and stop")
    args = p.parse_args(argv)
    if args.machine:
        print(machine())
        return 0
    if args.out is None:
        p.error("--out: required")
    started = args.started or time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    stages = plan(args.out.resolve(), dry_run=args.dry_run)
    print(f"plan ({'dry run: CPU, tiny sizes' if args.dry_run else 'GPU'}), into {args.out}:")
    for i, s in enumerate(stages):
        when = f"skipped: {s.skip}" if s.skip else f"at most {s.limit_s} s"
        print(f"  {i + 1}. {s.title} ({when}): {s.command()}")
    print(flush=True)
    results = run(stages, args.out, started=started, budget=args.budget)
    summary(results, args.out, dry_run=args.dry_run, total=time.time() - started)
    print(f"\nsummary: {args.out / 'summary.md'}")
    return 0 if all(r["status"] == "ok" or r["stage"].skip for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
