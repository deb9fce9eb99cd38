"""Compile fusionkit's Triton kernels ahead of time for GPU targets, without a GPU, and check
each program's shared memory against what those GPUs give a program.

    python bench/gpu_aot.py                          # targets 7.5, 8.0, 8.6, 9.0 (minutes)
    python bench/gpu_aot.py --targets 8.6 --dtypes float32 --head-dims 128
    python bench/gpu_aot.py --json aot.json

For each target (compute capability), input dtype and head dim, the three kernels (forward,
dK/dV, dQ) are compiled with the launch configuration fusionkit uses (``_config`` in
``fusionkit/attention/triton_kernel.py``; key mask and causal on), through Triton's own
compiler and the ``ptxas`` its wheel ships. A kernel that needs more shared memory than the
target's per-program limit would fail at launch on that GPU ("out of resources"). What this
cannot see: whether the kernel runs correctly or fast; that needs a GPU (``bench/gpu.sh``).
16-bit inputs on 7.5 are compiled in fp16 (7.5 has no bf16 tensor cores); fp32 is not
checked against 7.5's 64 KiB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARED_LIMIT_KIB = {"7.5": 64, "8.0": 163, "8.6": 99, "8.7": 163, "8.9": 99, "9.0": 227}
"""The most shared memory one program (thread block) may use, by compute capability
(CUDA C++ Programming Guide, "Technical Specifications per Compute Capability")."""
KERNELS = ("_fwd_kernel", "_bwd_dkdv_kernel", "_bwd_dq_kernel")
POINTERS = {"Q", "K", "V", "O", "DO", "DK", "DV", "DQ"}
HEADERS = [
    "target",
    "dtype",
    "head dim",
    "BM x BN, stages",
    "kernel",
    "shared KiB",
    "limit KiB",
    "fits",
]


def compile_kernel(name: str, dtype: str, head_dim: int, target: str):
    """The kernel ``name`` compiled for ``target`` ("8.6") at fusionkit's configuration."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fusionkit.attention import triton_kernel as tk

    fn = getattr(tk, name)
    fp32 = dtype == "float32"
    bm, bn, stages = tk._config(head_dim, head_dim, fp32)
    short = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[dtype]
    compute = tl.float32 if fp32 else getattr(tl, dtype)
    padded = tk._padded(head_dim)
    consts = {"HAS_MASK": True, "CAUSAL": True, "PRECISION": "ieee", "COMPUTE": compute}
    consts |= {"BM": bm, "BN": bn, "BD": padded, "BDV": padded}
    signature = {}
    for arg in fn.arg_names:
        if arg in consts:
            signature[arg] = "constexpr"
        elif arg in POINTERS:
            signature[arg] = f"*{short}"
        elif arg in ("LSE", "DELTA"):
            signature[arg] = "*fp32"
        elif arg == "MASK":
            signature[arg] = "*u8"
        else:
            signature[arg] = "fp32" if arg == "scale" else "i32"
    src = ASTSource(
        fn=fn,
        signature=signature,
        constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()},
    )
    major, minor = (int(x) for x in target.split("."))
    options = {} if stages is None else {"num_stages": stages}
    kernel = triton.compile(src, target=GPUTarget("cuda", 10 * major + minor, 32), options=options)
    return kernel, (bm, bn, stages)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--targets", nargs="+", default=["7.5", "8.0", "8.6", "9.0"])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--head-dims", nargs="+", type=int, default=[32, 64, 128])
    p.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    p.add_argument("--json", metavar="PATH", help="also write the table here")
    args = p.parse_args(argv)
    if "fusionkit.attention.triton_kernel" in sys.modules and os.environ.get("TRITON_INTERPRET"):
        p.error("the kernels were imported for Triton's interpreter: run this in its own process")
    os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels, not interpreted ones
    unknown = sorted(set(args.targets) - set(SHARED_LIMIT_KIB))
    if unknown:
        p.error(
            f"--targets: unknown compute capability {unknown}; known: {sorted(SHARED_LIMIT_KIB)}"
        )
    rows, failures = [], 0
    start = time.perf_counter()
    for target in args.targets:
        limit = SHARED_LIMIT_KIB[target]
        for dtype in args.dtypes:
            if target == "7.5" and dtype == "float32":
                continue
            compiled_dtype = "float16" if target == "7.5" and dtype == "bfloat16" else dtype
            for d in args.head_dims:
                for name in args.kernels:
                    kernel, (bm, bn, stages) = compile_kernel(name, compiled_dtype, d, target)
                    kib = kernel.metadata.shared / 1024
                    fits = kib <= limit
                    failures += not fits
                    rows.append(
                        [
                            target, compiled_dtype, d, f"{bm} x {bn}, {stages or 'default'}",
                            name.strip("_").removesuffix("_kernel"), f"{kib:.1f}", limit,
                            "yes" if fits else "**no**",
                        ]
                    )  # fmt: skip
                    print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    import triton

    print(
        f"Triton {triton.__version__}: fusionkit's kernels compiled ahead of time "
        f"({time.perf_counter() - start:.0f} s), key mask and causal on\n"
    )
    print("| " + " | ".join(HEADERS) + " |")
    print("|" + "---|" * len(HEADERS))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"headers": HEADERS, "rows": rows}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
