"""Time and peak memory of the attention backends against the bare PyTorch call, side by side.

    python bench/attention.py                 # the full grid (slow on a CPU: see --max-len)
    python bench/attention.py --max-len 1024  # skip rows with tq or tk above 1024
    python bench/attention.py --quick         # a smoke test of seconds
    python bench/attention.py --device cuda --dtype bfloat16 --sdpa-kernels \
        --shapes 16,8,110,110,32 1,8,4096,4096,32   # chosen shapes, each SDPA kernel (bench/gpu.sh)

Rows: b=1, h=8 for tq, tk in {64, 256, 1024, 4096} and dh in {64, 128}, then the CMATH
shape (b=16, h=8, t=110, dh=32). For each shape, first the bare
``torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None,
None, :])`` (no handling of rows without an allowed key), then fusionkit's ``attention``
with each backend: ``sdpa`` (the wrapper: boolean key mask, rows with no allowed key give
zeros, shape checks), ``math``, and on CUDA ``triton``. The key mask pads ~10% of the keys.
``--sdpa-kernels`` adds the bare call forced onto each of SDPA's kernels (flash, efficient,
cudnn, math; PyTorch's switches ``torch.backends.cuda.enable_*_sdp`` around the forward): a
kernel that refuses a key mask (flash) is timed without one and says so, one that refuses
the inputs altogether is listed as unsupported. ``--shapes`` replaces the grid.
Ratios first, each to the bare call measured in the same alternating rounds; then median
times (forward, and forward + backward through ``torch.autograd.grad``) and the peak
memory of a forward + backward (``bench/common.py`` says how it is measured per device).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools
import time
import warnings

import torch
import torch.nn.functional as F

from bench import common
from fusionkit.attention import attention, triton_available

HEADERS = [
    "b", "h", "tq", "tk", "dh", "backend",
    "fwd x bare", "fwd+bwd x bare", "fwd ms", "fwd+bwd ms", "peak MiB",
]  # fmt: skip


def bare(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])


def fusionkit(backend):
    return lambda q, k, v, mask: attention(q, k, v, key_mask=mask, backend=backend)


CUDA_BACKENDS = torch.backends.cuda
SDPA_KERNELS = {  # name -> (is it enabled, enable or disable it): PyTorch's global switches
    "flash": (CUDA_BACKENDS.flash_sdp_enabled, CUDA_BACKENDS.enable_flash_sdp),
    "efficient": (CUDA_BACKENDS.mem_efficient_sdp_enabled, CUDA_BACKENDS.enable_mem_efficient_sdp),
    "cudnn": (CUDA_BACKENDS.cudnn_sdp_enabled, CUDA_BACKENDS.enable_cudnn_sdp),
    "math": (CUDA_BACKENDS.math_sdp_enabled, CUDA_BACKENDS.enable_math_sdp),
}


def bare_on(kernel: str, with_mask: bool):
    """The bare call restricted to one of SDPA's kernels (with the key mask, or none).

    The switches are flipped around the forward only (the backward is the one the forward
    recorded): a few C calls, not ``torch.nn.attention.sdpa_kernel``, whose context cost
    about 25 µs a call here (CPU), a large share of a small call.
    """
    saved = {name: enabled() for name, (enabled, _) in SDPA_KERNELS.items()}

    def fn(q, k, v, mask):
        try:
            for name, (_, enable) in SDPA_KERNELS.items():
                enable(name == kernel)
            if with_mask:
                return bare(q, k, v, mask)
            return F.scaled_dot_product_attention(q, k, v)
        finally:
            for name, (_, enable) in SDPA_KERNELS.items():
                enable(saved[name])

    return fn


def kernel_variants(leaves, mask, grad) -> tuple[dict, list[str]]:
    """Each SDPA kernel that runs these inputs forward and backward, with the mask if it
    takes one, else without; and the names of the kernels that run neither."""
    variants, unsupported = {}, []
    for name in SDPA_KERNELS:
        for with_mask in (True, False):
            fn = bare_on(name, with_mask)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # SDPA warns why a kernel refuses
                    calls(fn, leaves, mask, grad)[1]()
            except RuntimeError:
                continue
            label = f"bare sdpa [{name}]" + ("" if with_mask else ", no key mask")
            variants[label] = fn
            break
        else:
            unsupported.append(f"bare sdpa [{name}]")
    return variants, unsupported


def parse_shape(text: str) -> tuple[int, int, int, int, int]:
    """``b,h,tq,tk,dh`` -> a tuple of five positive ints."""
    try:
        shape = tuple(int(x) for x in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 5 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"--shapes: expected b,h,tq,tk,dh, got {text!r}")
    return shape


def calls(fn, leaves, mask, grad):
    """(forward, forward + backward) closures of ``fn`` on fixed inputs."""

    def forward():
        with torch.no_grad():
            fn(*leaves, mask)

    def both():
        torch.autograd.grad(fn(*leaves, mask), leaves, grad)

    return forward, both


def repeats_for(fn, device, budget: float, lo: int, hi: int) -> int:
    """Enough repeats to spend about ``budget`` seconds on ``fn``, within [lo, hi]."""
    fn()
    common.sync(device)
    start = time.perf_counter()
    fn()
    common.sync(device)
    return max(lo, min(hi, int(budget / max(time.perf_counter() - start, 1e-6))))


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__)
    p.add_argument(
        "--dtype", help="float32, float16 or bfloat16 (default: fp16 on CUDA, fp32 on CPU)"
    )
    p.add_argument("--max-len", type=int, default=4096)
    p.add_argument(
        "--budget", type=float, default=1.0, help="seconds of timing per variant and row"
    )
    p.add_argument(
        "--shapes",
        nargs="+",
        type=parse_shape,
        metavar="B,H,TQ,TK,DH",
        help="these shapes instead of the grid and the CMATH shape",
    )
    p.add_argument(
        "--sdpa-kernels", action="store_true", help="also the bare call on each SDPA kernel"
    )
    args = p.parse_args(argv)
    device = common.torch_device(args.device, args.threads)
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.float16 if device.type == "cuda" else torch.float32)
    )
    backends = ["sdpa", "math"]
    if device.type == "cuda" and triton_available():
        backends.append("triton")
    if args.quick:
        shapes = [(2, 2, 16, 16, 16), (2, 2, 16, 48, 16), (16, 8, 110, 110, 32)]
        budget, lo, hi = 0.05, 2, 5
    elif args.shapes:
        shapes, budget, lo, hi = args.shapes, args.budget, 3, 200
    else:
        lengths = [n for n in (64, 256, 1024, 4096) if n <= args.max_len]
        shapes = [
            (1, 8, tq, tk, dh) for dh in (64, 128) for tq, tk in itertools.product(lengths, lengths)
        ]
        shapes.append((16, 8, 110, 110, 32))
        budget, lo, hi = args.budget, 5, 200
    rows = []
    for b, h, tq, tk, dh in shapes:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(b, h, n, dh, generator=g).to(device, dtype) for n in (tq, tk, tk))
        mask = (torch.rand(b, tk, generator=g) > 0.1).to(device)
        mask[:, 0] = True
        grad = torch.randn(b, h, tq, dh, generator=g).to(device, dtype)
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        variants = {"bare sdpa": bare, **{f"fusionkit {n}": fusionkit(n) for n in backends}}
        unsupported = []
        if args.sdpa_kernels:
            kernels, unsupported = kernel_variants(leaves, mask, grad)
            variants |= kernels
        fns = {name: calls(fn, leaves, mask, grad) for name, fn in variants.items()}
        reps = repeats_for(fns["bare sdpa"][1], device, budget, lo, hi)
        fwd = common.time_alternating(
            {n: f for n, (f, _) in fns.items()}, repeats=reps, device=device, clock=args.clock
        )
        both = common.time_alternating(
            {n: f for n, (_, f) in fns.items()}, repeats=reps, device=device, clock=args.clock
        )
        t_fwd = {n: common.median(ts) for n, ts in fwd.items()}
        t_both = {n: common.median(ts) for n, ts in both.items()}
        for name, (_, fb) in fns.items():
            rows.append(
                [
                    b, h, tq, tk, dh, name,
                    f"{t_fwd[name] / t_fwd['bare sdpa']:.3f}",
                    f"{t_both[name] / t_both['bare sdpa']:.3f}",
                    f"{1e3 * t_fwd[name]:.3f}",
                    f"{1e3 * t_both[name]:.3f}",
                    common.mib(common.peak_bytes(fb, device)),
                ]
            )  # fmt: skip
        rows += [[b, h, tq, tk, dh, name, *["unsupported"] * 5] for name in unsupported]
    info = common.machine(device)
    title = f"attention, {str(dtype).removeprefix('torch.')}; {common.describe(info, args.clock)}"
    common.emit("attention", title, info, HEADERS, rows, json_path=args.json, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
