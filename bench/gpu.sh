#!/usr/bin/env bash
# Measure fusionkit on a GPU in one go, in under 8 minutes from a fresh checkout:
#
#   bash bench/gpu.sh                 # install, CUDA tests, training step, attention tables
#   bash bench/gpu.sh --out DIR       # the folder for every table (default runs/gpu/<time>)
#   bash bench/gpu.sh --dry-run       # print the plan, run its CPU parts at tiny sizes
#
# 1. install: torch==2.13.0 only if torch is missing (a GPU machine brings its own CUDA
#    build), then this checkout with the test and triton extras (pip install -e), and
#    pytest-xdist: the cuda tests run in parallel (compiling the kernels is most of them);
# 2. the rest is bench/gpu_run.py: the machine, the `cuda` tests, the CMATH training step
#    (fp32 and bf16, eager and compiled), the attention benchmark (bf16 and fp32), each with
#    a time limit; every table, log and summary.md go to one folder.
# Without a CUDA device it stops before installing anything (use --dry-run there).
# Exit status: 0 when every stage passed, 1 when one failed or ran out of time, 2 on a
# usage error or a machine without a GPU.
set -uo pipefail

STARTED=$(date +%s)
cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-$(command -v python || command -v python3 || echo python)}
DRY_RUN=0
OUT=""

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --out) [[ $# -ge 2 ]] || { echo "gpu.sh: --out needs a folder" >&2; exit 2; }; OUT=$2; shift ;;
    --out=*) OUT=${1#--out=} ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
OUT=${OUT:-runs/gpu/$(date +%Y%m%d-%H%M%S)}

has_torch() { "$PYTHON" -c "import torch" 2>/dev/null; }
has_cuda() { "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }

INSTALL_TORCH=("$PYTHON" -m pip install torch==2.13.0)
INSTALL_FUSIONKIT=("$PYTHON" -m pip install -e ".[test,triton]" pytest-xdist)

if [[ $DRY_RUN == 1 ]]; then
  echo "gpu.sh --dry-run: nothing is installed; the stages run on the CPU at tiny sizes."
  echo "install (on a GPU machine):"
  has_torch || echo "  $PYTHON -m pip install torch==2.13.0"
  has_torch && echo "  (torch is installed: kept)"
  echo "  $PYTHON -m pip install -e \".[test,triton]\" pytest-xdist"
  exec "$PYTHON" bench/gpu_run.py --dry-run --out "$OUT" --started "$STARTED"
fi

# Refuse early, before installing anything, where there is no GPU.
if has_torch; then
  has_cuda || {
    echo "gpu.sh: no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine, or use --dry-run" >&2
    exit 2
  }
elif ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu.sh: no CUDA device (no torch, and nvidia-smi finds no GPU); run it on a GPU machine, or use --dry-run" >&2
  exit 2
fi

mkdir -p "$OUT" || exit 2
{
  if ! has_torch; then
    echo "+ $PYTHON -m pip install torch==2.13.0"
    "${INSTALL_TORCH[@]}" || exit 2
  fi
  echo "+ $PYTHON -m pip install -e \".[test,triton]\" pytest-xdist"
  "${INSTALL_FUSIONKIT[@]}" || exit 2
} >"$OUT/install.log" 2>&1 || { echo "gpu.sh: the install failed, see $OUT/install.log" >&2; tail -20 "$OUT/install.log" >&2; exit 2; }
echo "installed in $(($(date +%s) - STARTED)) s (log: $OUT/install.log)"
has_cuda || { echo "gpu.sh: torch sees no CUDA device after the install" >&2; exit 2; }

exec "$PYTHON" bench/gpu_run.py --out "$OUT" --started "$STARTED"
