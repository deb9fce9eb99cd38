"""Time and peak memory of the attention backends, side by side in one run.

    python bench/attention.py                 # the full grid (slow on a CPU: see --max-len)
    python bench/attention.py --max-len 1024  # skip rows with tq or tk above 1024

Rows: b=1, h=8 for tq, tk in {64, 256, 1024, 4096} and dh in {64, 128}, then the
CMATH-shaped case (b=16, h=8, t=110, dh=32). Columns: forward and forward+backward median
time in ms, each backend's ratio to sdpa, and peak memory in MiB. On the CPU it times sdpa
and math; on a CUDA device, sdpa, math and triton. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and, on the CPU, the peak of live tensor bytes
recorded by the PyTorch profiler during one call.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import time

import torch

from fusionkit.attention import attention, triton_available


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _step(backend, q, k, v, mask, backward):
    out = attention(q, k, v, key_mask=mask, backend=backend)
    if backward:
        out.backward(torch.ones_like(out))


def _time_ms(fn, device, repeats):
    fn()  # warm-up (and compile, for triton)
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def _peak_mib(fn, device):
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        fn()
    # Net bytes each op allocates itself (frees outside ops appear as "[memory]" events),
    # in time order: the running sum's maximum is the peak at op granularity.
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype",
        default=None,
        help="float32, float16 or bfloat16 (default: fp16 on CUDA, fp32 on CPU)",
    )
    parser.add_argument("--max-len", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = args.device
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.float16 if device == "cuda" else torch.float32)
    )
    backends = ["sdpa", "math"] + (["triton"] if device == "cuda" and triton_available() else [])
    lengths = [n for n in (64, 256, 1024, 4096) if n <= args.max_len]
    rows = [
        (1, 8, tq, tk, dh) for dh in (64, 128) for tq, tk in itertools.product(lengths, lengths)
    ]
    rows.append((16, 8, 110, 110, 32))
    print(
        f"device={device} dtype={dtype} torch={torch.__version__} threads={torch.get_num_threads()}"
    )
    print(
        f"backends: {', '.join(backends)}; key mask with ~10% padding; times are medians of {args.repeats}"
    )
    header = f"{'b':>3} {'h':>2} {'tq':>5} {'tk':>5} {'dh':>4} | {'backend':>7} | {'fwd ms':>9} {'x sdpa':>7} | {'fwd+bwd ms':>10} {'x sdpa':>7} | {'peak MiB':>9}"
    print(header)
    print("-" * len(header))
    for b, h, tq, tk, dh in rows:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(b, h, n, dh, generator=g).to(device, dtype) for n in (tq, tk, tk))
        mask = (torch.rand(b, tk, generator=g) > 0.1).to(device)
        mask[:, 0] = True
        base = {}
        for backend in backends:
            leaves = [x.clone().requires_grad_() for x in (q, k, v)]
            fwd = functools.partial(_step, backend, *leaves, mask, False)
            both = functools.partial(_step, backend, *leaves, mask, True)
            with torch.no_grad():
                t_fwd = _time_ms(fwd, device, args.repeats)
            t_both = _time_ms(both, device, args.repeats)
            peak = _peak_mib(both, device)
            base.setdefault("fwd", t_fwd)
            base.setdefault("both", t_both)
            print(
                f"{b:>3} {h:>2} {tq:>5} {tk:>5} {dh:>4} | {backend:>7} | {t_fwd:>9.2f} {t_fwd / base['fwd']:>7.2f} | "
                f"{t_both:>10.2f} {t_both / base['both']:>7.2f} | {peak:>9.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
