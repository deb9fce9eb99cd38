"""Train CMATH for one seed. A dialogue walks one way: data -> batch -> model (its loss
included) -> optimizer; the objective's normaliser is computed once per step, here.

Under torchrun each step's dialogues are split across processes, the normaliser is summed
over them, and DistributedDataParallel wraps the model itself, so two processes train to
the figures of one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from examples.cmath import checkpoint, report
from examples.cmath.config import RunConfig
from examples.cmath.data import Stats
from examples.cmath.evaluate import evaluate
from examples.cmath.model import CMATH, DataSpec
from fusionkit import batches
from fusionkit.data import ConversationDataset


@dataclass(frozen=True)
class Distributed:
    """This process's place among the processes of a run (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1

    @classmethod
    def start(cls) -> Distributed:
        """Join the process group torchrun describes (``WORLD_SIZE`` > 1), else one process."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.size

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            dist.all_reduce(x)
        return x

    def gather(self, obj: object) -> list:
        """Every process's ``obj``, in rank order."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out


def device_for(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@dataclass
class Trainer:
    """The model, what a step calls (the model, compiled and/or wrapped by DDP), the
    optimizer and mixed-precision settings of one seed."""

    model: CMATH
    step: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    device: torch.device
    world: Distributed

    @classmethod
    def build(cls, config: RunConfig, ds: ConversationDataset, world: Distributed) -> Trainer:
        tc = config.train
        device = device_for(tc.device)
        weights = ds.class_weights("train") if tc.class_weights else None
        model = CMATH(config.model, DataSpec.of(ds), weights).to(device)
        if tc.compile:
            model.compile()
        step = model
        if world.size > 1:
            ids = [device.index] if device.type == "cuda" else None
            step = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        opt_cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
        # The fused kernel: one pass over all parameters (the per-tensor loop took 2.8x as
        # long on the CPU at hidden 256), on the devices PyTorch has it for.
        fused = device.type in ("cpu", "cuda")
        optimizer = opt_cls(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, fused=fused)
        amp_dtype = None
        if tc.amp and device.type == "cuda":
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        return cls(model, step, optimizer, scaler, amp_dtype, device, world)

    def train_epoch(
        self, dialogues: list, batch_size: int, grad_clip: float, order, *, desc: str, show: bool
    ) -> float:
        """One pass over ``dialogues`` in ``order`` (a progress bar if ``show``); returns
        the mean step loss."""
        self.model.train()
        losses = []
        steps = batches(dialogues, batch_size, order=order, shard=self.world.shard)
        for batch in tqdm(steps, desc=desc, leave=False, disable=None if show else True):
            batch = batch.to(self.device)
            normalizer = self.world.all_sum(self.model.loss_counts(batch))
            with torch.autocast(
                self.device.type, self.amp_dtype, enabled=self.amp_dtype is not None
            ):
                loss = self.step(batch, normalizer=normalizer).loss.total
            self.optimizer.zero_grad(set_to_none=True)
            # DDP averages gradients over processes; each loss is its share of the sum.
            self.scaler.scale(loss * self.world.size).backward()
            self.scaler.unscale_(self.optimizer)
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            losses.append(self.world.all_sum(loss.detach().float().clone()).item())
        return float(np.mean(losses))


def fit(
    config: RunConfig,
    ds: ConversationDataset,
    stats: Stats | None,
    seed: int,
    out: Path,
    *,
    world: Distributed = Distributed(),
    resume: bool = False,
    quiet: bool = False,
    probe: dict | None = None,
) -> dict:
    """Train one seed; writes ``out/{last,best}.pt``, ``results.json`` and the figures, and
    returns the results (with the linear ``probe``'s, if given)."""
    tc, main = config.train, world.rank == 0
    torch.manual_seed(seed)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    run = Trainer.build(config, ds, world)
    out.mkdir(parents=True, exist_ok=True)
    state = {"epoch": 0, "history": [], "best_dev": -1.0, "best": None, "best_test": None}
    if resume and (out / "last.pt").exists():
        ckpt = checkpoint.load(out / "last.pt", map_location=run.device)
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"])
        state = ckpt["state"]
        if main and not quiet:
            print(f"resumed {out / 'last.pt'} after epoch {state['epoch']}")
    if main and not quiet:
        print(run.model.describe())
    train, started = ds.split("train"), time.time()
    score = dict(device=run.device, shard=world.shard, gather=world.gather)
    for epoch in range(state["epoch"] + 1, tc.epochs + 1):
        order = np.random.default_rng([seed, epoch]).permutation(len(train))
        desc, show = f"seed {seed} epoch {epoch}/{tc.epochs}", main and not quiet
        loss = run.train_epoch(train, tc.batch_size, tc.grad_clip, order, desc=desc, show=show)
        dev = evaluate(run.model, ds, "dev", tc.batch_size, **score)
        test = evaluate(run.model, ds, "test", tc.batch_size, **score)
        record = {
            "epoch": epoch,
            "train_loss": loss,
            "dev_accuracy": dev.accuracy,
            "dev_weighted_f1": dev.weighted_f1,
            "test_accuracy": test.accuracy,
            "test_weighted_f1": test.weighted_f1,
        }
        state["history"].append(record)
        state["epoch"] = epoch
        improved = dev.weighted_f1 > state["best_dev"]
        if improved:
            state["best_dev"] = dev.weighted_f1
            state["best"] = {"epoch": epoch, "dev": dev.to_dict(), "test": test.to_dict()}
        if state["best_test"] is None or test.weighted_f1 > state["best_test"]["weighted_f1"]:
            state["best_test"] = {"epoch": epoch, **test.to_dict()}
        if main:
            saved = checkpoint.payload(
                run.model, config, stats, ds.info.get("extraction", {}), seed=seed, epoch=epoch
            )
            if improved:
                checkpoint.save(saved, out / "best.pt")
            extra = {"optimizer": run.optimizer.state_dict(), "rng": torch.get_rng_state()}
            checkpoint.save({**saved, **extra, "state": state}, out / "last.pt")
        if main and not quiet:
            print(
                f"seed {seed} epoch {epoch:3d}  loss {loss:.4f}  dev acc {dev.accuracy:5.2f} wF1 {dev.weighted_f1:5.2f}  "
                f"test acc {test.accuracy:5.2f} wF1 {test.weighted_f1:5.2f}"
                + ("  *" if improved else "")
            )
    results = _results(config, ds, run.model, state, seed, world, time.time() - started, probe)
    if main:
        _write(results, ds.label_names, out)
    return results


def _results(config, ds, model, state, seed, world, seconds, probe) -> dict:
    best = state["best"]
    results = {
        "seed": seed,
        "dataset": ds.name,
        "source": ds.source,
        "modalities": ds.modalities,
        "model": model.describe(),
        "config": config.to_dict(),
        "world_size": world.size,
        "seconds": seconds,
        "best_dev_epoch": best["epoch"],
        "dev_at_best_dev": best["dev"],
        "test_at_best_dev": best["test"],
        "best_test_over_epochs": state["best_test"],
        "history": state["history"],
    }
    if probe is not None:
        results["linear_probe"] = probe
    return results


def _write(results: dict, label_names: list[str], out: Path) -> None:
    """``results.json``, the confusion matrix at the best dev epoch, and the curves."""
    (out / "results.json").write_text(json.dumps(results, indent=2))
    best = results["test_at_best_dev"]
    epoch = results["best_dev_epoch"]
    title = (
        f"test at best dev epoch {epoch}: acc {best['accuracy']:.2f}, wF1 {best['weighted_f1']:.2f}"
    )
    report.plot_confusion(best["confusion"], label_names, out / "confusion.png", title)
    report.plot_curves(results["history"], out / "curves.png", epoch)
