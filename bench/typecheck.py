"""Cost of run-time shape checking: one CMATH training step with checking on and off.

    python bench/typecheck.py

Runs the same step in two fresh processes (the switch, ``FUSIONKIT_TYPECHECK``, is read at
import), alternating, and prints the median step time of each, their ratio, and the cost per
checked call (the step's extra time divided by the number of checked calls it makes).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETUP = r"""
import json, sys, time, torch
sys.path.insert(0, {root!r})
import fusionkit.typing as ft
from examples.cmath.model import CMATH, CMATHConfig
from fusionkit.data import SyntheticConversations

torch.manual_seed(0)
torch.set_num_threads(1)  # steadier step times: the cost measured is Python-side
ds = SyntheticConversations(num_dialogues=16, min_len=20, max_len=40, dims={{"text": 100, "audio": 100, "visual": 100}}).build()
model = CMATH(CMATHConfig(input_dims=ds.feature_dims, hidden_dim=64, heads=4, compressed_dim=32))
batch = next(ds.batches("train", 8))
"""

STEP = (
    SETUP
    + r"""
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
def step():
    loss = model.loss(batch).total
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(3):
    step()
times = []
for _ in range({repeats}):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print(json.dumps({{"checking": ft.CHECKING, "times": times}}))
"""
)

COUNT = (
    SETUP
    + r"""
n = 0
def profile(frame, event, arg):  # count entries into the checking wrapper of fusionkit.typing
    global n
    if event == "call" and frame.f_code is ft_wrapper_code:
        n += 1
ft_wrapper_code = next(c for c in ft.typechecked.__code__.co_consts if getattr(c, "co_name", "") == "wrapper")
sys.setprofile(profile)
model.loss(batch).total.backward()
sys.setprofile(None)
print(n)
"""
)


def _run(code: str, checking: bool) -> str:
    env = dict(os.environ, FUSIONKIT_TYPECHECK="1" if checking else "0")
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout


def main() -> None:
    repeats, rounds = 10, 6
    times = {True: [], False: []}
    for _ in range(rounds):
        for checking in (True, False):
            out = json.loads(
                _run(STEP.format(root=str(ROOT), repeats=repeats), checking)
                .strip()
                .splitlines()[-1]
            )
            times[checking] += out["times"]
    calls = int(_run(COUNT.format(root=str(ROOT)), True).strip().splitlines()[-1])
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"CMATH training step (b=8, t<=40, d=64, 3 modalities, 1 thread), {rounds} x {repeats} steps each, alternating processes"
    )
    print(f"checking on : {1e3 * on:8.2f} ms/step")
    print(f"checking off: {1e3 * off:8.2f} ms/step")
    print(f"ratio on/off: {on / off:8.3f}")
    print(
        f"checked calls per step: {calls}; cost per checked call: {1e6 * (on - off) / max(calls, 1):.1f} us"
    )


if __name__ == "__main__":
    main()
