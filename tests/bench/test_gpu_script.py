"""``bench/gpu.sh``: its dry run on the CPU (the plan, then the CPU parts at tiny sizes, every
table in one folder), its GPU plan, its time limits, and its refusal to install anything on
a machine without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import gpu_run
from fusionkit.attention import triton_available

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "bench" / "gpu.sh")


def _gpu_sh(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "tables"
    return _gpu_sh("--dry-run", "--out", str(out)), out


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir() and Path("/proc/self").exists():
        return stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _table(path: Path) -> dict:
    table = json.loads(path.read_text())
    assert table["rows"] and all(len(r) == len(table["headers"]) for r in table["rows"])
    return table


def test_dry_run_prints_the_plan_and_installs_nothing(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "nothing is installed" in text and 'pip install -e ".[test,triton]"' in text
    stages = gpu_run.plan(out, dry_run=True)
    for i, stage in enumerate(stages[:-1], 1):
        assert f"{i}. {stage.title}" in text and f"[{i}/6] {stage.title}: ok" in text
    assert "[6/6] Training step, eager and compiled: skipped: compiling CMATH" in text
    assert "-m pytest -q -m cuda tests/cuda" in text
    assert "bench/gpu_train.py --device cpu" in text and "bench/attention.py --device cpu" in text


def test_dry_run_writes_every_table_into_one_folder(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stderr
    train = _table(out / "train.json")
    assert {(r[1], r[2]) for r in train["rows"]} == {("fp32", "eager"), ("bf16", "eager")}
    assert all(float(r[5]) > 0 for r in train["rows"])  # utterances per second
    for dtype in ("bfloat16", "float32"):
        rows = _table(out / f"attention-{dtype}.json")["rows"]
        backends = [r[5] for r in rows]
        assert {"bare sdpa", "fusionkit sdpa", "fusionkit math"} <= set(backends)
        for kernel in ("flash", "efficient", "cudnn", "math"):  # each, run or unsupported
            assert any(b.startswith(f"bare sdpa [{kernel}]") for b in backends), kernel
        assert (out / f"attention-{dtype}.md").read_text().count("| b | h |") == 1
    summary = (out / "summary.md").read_text()
    assert "DRY RUN" in summary and summary.count("| ok |") == 5
    assert not (out / "train-compiled.json").exists()
    assert "| fp32 | eager |" in summary and "bare sdpa [math]" in summary


def test_dry_run_cuda_tests_skip_with_the_reason(dry_run):
    """The dry run hides any GPU: every ``cuda`` test is collected and skips, saying why."""
    _, out = dry_run
    report = (out / "cuda-tests.txt").read_text()
    assert " skipped" in report and "failed" not in report and " passed" not in report
    assert "no CUDA device" in report


def test_the_gpu_plan():
    """On a GPU: the cuda tests, then fp32/bf16 eager and compiled at the IEMOCAP
    configuration, then attention at CMATH's shapes and dialogues up to 4,096 utterances,
    with every SDPA kernel, in bf16 and fp32; shape checking off for the benchmarks."""
    stages = {s.name: s for s in gpu_run.plan(Path("out"), dry_run=False)}
    assert list(stages) == [
        "machine", "cuda-tests", "train", "attention-bfloat16", "attention-float32",
        "train-compiled",
    ]  # fmt: skip
    assert not any(s.skip for s in stages.values())
    assert stages["cuda-tests"].argv[1:8] == [
        "-m",
        "pytest",
        "-q",
        "-m",
        "cuda",
        "tests/cuda",
        "-rfEs",
    ]
    train, compiled = stages["train"].argv, stages["train-compiled"].argv
    assert train[1] == compiled[1] == "bench/gpu_train.py" and "--quick" not in train
    assert train[train.index("--device") + 1] == "cuda" and "--no-compile" in train
    assert train[train.index("--hidden") + 1] == "1024" and "--compile" in compiled
    for dtype in ("bfloat16", "float32"):
        argv = stages[f"attention-{dtype}"].argv
        assert argv[argv.index("--dtype") + 1] == dtype and "--sdpa-kernels" in argv
        shapes = argv[argv.index("--shapes") + 1 : argv.index("--budget")]
        assert {"16,8,110,110,32", "16,8,110,110,128", "1,8,4096,4096,32"} <= set(shapes)
    for name in ("train", "attention-bfloat16", "attention-float32", "train-compiled"):
        assert stages[name].env == {"FUSIONKIT_TYPECHECK": "0"} and stages[name].table
    assert "CUDA_VISIBLE_DEVICES" not in stages["cuda-tests"].env


def test_each_stage_keeps_to_its_limit_and_the_budget(tmp_path):
    """A stage that overruns is killed at its limit (its children too) and recorded; a stage
    the budget cannot fit is skipped; the next stages still run."""
    child = tmp_path / "child.pid"
    code = (  # a process that starts a child, records its pid, and sleeps
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(child)!r}, 'w').write(str(c.pid)); time.sleep(60)"
    )
    sleep = [sys.executable, "-c", code]
    quick = [sys.executable, "-c", "print('| a |')"]
    stages = [
        gpu_run.Stage("slow", "Slow", sleep, limit_s=6, reserve_s=1),
        gpu_run.Stage("quick", "Quick", quick, limit_s=30, reserve_s=1, table=True),
        gpu_run.Stage("late", "Late", quick, limit_s=30, reserve_s=1),
    ]
    started = time.time()
    results = gpu_run.run(stages, tmp_path, started=started, budget=20)
    assert results[0]["status"] == "timed out after 6 s" and results[0]["seconds"] < 15
    time.sleep(0.5)
    assert not _alive(int(child.read_text()))  # the child was killed with its parent
    assert results[1]["status"] == "ok" and (tmp_path / "quick.md").read_text() == "| a |\n"
    assert results[2]["status"] == "ok"
    squeezed = gpu_run.run(stages[1:], tmp_path, started=time.time() - 100, budget=101)
    assert [r["status"] for r in squeezed] == ["skipped: the run's time budget is spent"] * 2
    text = gpu_run.summary(results, tmp_path, dry_run=True, total=time.time() - started)
    assert "| Slow | timed out after 6 s |" in text and (tmp_path / "summary.md").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: gpu.sh would run")
def test_without_a_gpu_it_stops_before_installing_anything(tmp_path):
    out = tmp_path / "never"
    proc = _gpu_sh("--out", str(out), timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
    assert "--dry-run" in proc.stderr and not out.exists()


def test_a_wrong_argument_is_a_usage_error():
    proc = _gpu_sh("--dryrun", timeout=30)
    assert proc.returncode == 2 and "unknown argument '--dryrun'" in proc.stderr
    assert "bash bench/gpu.sh --dry-run" in proc.stderr  # the usage follows


@pytest.mark.slow
@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_the_kernel_compiles_for_a_gpu_without_one(tmp_path):
    """``bench/gpu_aot.py`` compiles a kernel for compute capability 8.6 with Triton's own
    compiler (no GPU) and checks its shared memory against that GPU's limit."""
    out = tmp_path / "aot.json"
    argv = ["--targets", "8.6", "--dtypes", "bfloat16", "--head-dims", "32", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "bench/gpu_aot.py", *argv, "--kernels", "_fwd_kernel"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row[:3] == ["8.6", "bfloat16", 32] and row[4] == "fwd" and row[-1] == "yes"
    assert 0 < float(row[5]) <= 99
