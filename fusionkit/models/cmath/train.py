"""Train CMATH for one seed: the whole step, top to bottom, in :func:`fit`.

One step: a batch of dialogues -> (modality dropout) -> the model's outputs ->
:func:`~fusionkit.models.cmath.model.objective` -> backward -> clip -> optimizer and
learning-rate steps. Under torchrun each step's dialogues are split across processes, the
objective's denominators (:func:`~fusionkit.models.cmath.model.loss_counts`) are summed
over them, and DistributedDataParallel averages the gradients, so two processes train to
the figures of one. Each epoch ends with dev and test reports; ``best.pt`` (weights and
what prediction needs) is written when dev weighted F1 improves, ``state.pt`` (what
resuming needs) every ``save_every`` epochs and at the end.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from fusionkit import batches, length_buckets
from fusionkit.augment import modality_dropout
from fusionkit.data import ConversationDataset
from fusionkit.data.dataset import Stats
from fusionkit.errors import DivergenceError
from fusionkit.models.cmath import checkpoint, report
from fusionkit.models.cmath.config import RunConfig, TrainConfig
from fusionkit.models.cmath.evaluate import evaluate
from fusionkit.models.cmath.model import CMATH, DataSpec, loss_counts, objective


@dataclass(frozen=True)
class Fitted:
    """A trained seed: its ``results`` (what ``results.json`` holds) and the ``model`` with
    its best epoch's weights."""

    results: dict
    model: CMATH


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


ONE_PROCESS = Distributed()


def device_for(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def budget(steps_per_epoch: int) -> int:
    """The default budget in optimizer steps: 20 epochs' worth, at least 500 and at most
    3,000. Few dialogues still get enough updates to train (a 151-dialogue manifest at 8 a
    step is 19 steps an epoch: 20 epochs are 380 steps), and a large corpus does not pay
    for epochs it does not need."""
    return min(3000, max(500, 20 * steps_per_epoch))


def epochs_for(tc: TrainConfig, train_dialogues: int) -> int:
    """Epochs of the run: ``tc.epochs`` if set, else enough whole epochs for ``tc.steps``
    (default: :func:`budget`) optimizer steps at ``tc.batch_size`` dialogues a step."""
    if tc.epochs is not None:
        return tc.epochs
    per_epoch = math.ceil(train_dialogues / tc.batch_size)
    steps = tc.steps if tc.steps is not None else budget(per_epoch)
    return max(1, math.ceil(steps / per_epoch))


def lr_factor(tc: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """The learning rate's multiplier at each optimizer step: a linear warmup over
    ``tc.warmup`` of ``total_steps``, then constant or a cosine down to 0 at the end."""
    warm = round(tc.warmup * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if tc.schedule == "constant":
            return 1.0
        done = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

    return factor


def fit(
    config: RunConfig,
    ds: ConversationDataset,
    stats: Stats | None,
    seed: int,
    out: Path,
    *,
    world: Distributed = ONE_PROCESS,
    resume: bool = False,
    quiet: bool = False,
    probe: dict | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> Fitted:
    """Train one seed; writes ``out/best.pt``, ``out/state.pt``, ``results.json`` and the
    figures, and returns the results (with the linear ``probe``'s, if given) and the model
    at its best epoch. ``on_epoch`` is called with each epoch's record (a search prunes
    trials there)."""
    tc, main, show = config.train, world.rank == 0, world.rank == 0 and not quiet
    torch.manual_seed(seed)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = device_for(tc.device)
    weights = ds.class_weights("train") if tc.class_weights else None
    model = CMATH(config.model, DataSpec.of(ds), weights).to(device)
    if tc.compile:
        model.compile()
    step_fn = model  # what a step calls: the model, or DDP around it
    if world.size > 1:
        ids = [device.index] if device.type == "cuda" else None
        step_fn = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    opt_cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    # The fused kernel: one pass over all parameters (the per-tensor loop took 2.8x as
    # long on the CPU at hidden 256), on the devices PyTorch has it for.
    optimizer = opt_cls(
        model.parameters(),
        lr=tc.lr,
        weight_decay=tc.weight_decay,
        fused=device.type in ("cpu", "cuda"),
    )
    train = ds.split("train")
    epochs = epochs_for(tc, len(train))
    per_epoch = math.ceil(len(train) / tc.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(tc, epochs * per_epoch))
    amp = None
    if tc.amp and device.type == "cuda":
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)

    out.mkdir(parents=True, exist_ok=True)
    state = {"epoch": 0, "history": [], "best_dev": -1.0, "best": None, "best_test": None}
    if resume and (out / "state.pt").exists():
        saved = checkpoint.load(out / "state.pt", map_location=device)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        state = saved["state"]
        if show:
            print(f"resumed {out / 'state.pt'} after epoch {state['epoch']}")
    if show:
        print(model.describe())
    best_weights = None
    score = dict(device=device, shard=world.shard, gather=world.gather)
    started = time.time()

    def save_state() -> None:
        resumable = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "state": state,
        }
        checkpoint.save(checkpoint.payload(model, config, stats, ds, **resumable), out / "state.pt")

    for epoch in range(state["epoch"] + 1, epochs + 1):
        rng = np.random.default_rng([seed, epoch])
        if tc.bucket:
            order = length_buckets([len(d) for d in train], tc.batch_size, rng)
        else:
            order = rng.permutation(len(train))
        model.train()
        losses, tick = [], time.perf_counter()
        steps = batches(train, tc.batch_size, order=order, shard=world.shard)
        for step, batch in enumerate(
            tqdm(steps, desc=f"seed {seed} epoch {epoch}/{epochs}", leave=False, disable=not show)
        ):
            batch = batch.to(device)
            presence = None
            if model.config.modality_dropout > 0:
                presence = modality_dropout(batch, model.config.modality_dropout)
            normalizer = world.all_sum(loss_counts(batch, model.class_weights))
            with torch.autocast(device.type, amp, enabled=amp is not None):
                outputs = step_fn(batch, presence=presence)
                loss = objective(model, outputs, batch, normalizer).total
            optimizer.zero_grad(set_to_none=True)
            # DDP averages gradients over processes; each loss is its share of the sum.
            scaler.scale(loss * world.size).backward()
            scaler.unscale_(optimizer)
            norm = nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip or math.inf)
            step_loss = world.all_sum(loss.detach().float().clone()).item()
            if not math.isfinite(step_loss) or (not scaler.is_enabled() and not norm.isfinite()):
                what = "loss" if not math.isfinite(step_loss) else "gradient norm"
                raise DivergenceError(
                    f"seed {seed}, epoch {epoch}, step {step + 1}: the {what} is not finite; "
                    f"best.pt holds the best epoch so far and state.pt the last saved state "
                    f"(lower train.lr, or check the data for extreme values)"
                )
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(step_loss)
        seconds = {"train": time.perf_counter() - tick}

        tick = time.perf_counter()
        dev = evaluate(model, ds, "dev", tc.batch_size, **score)
        test = evaluate(model, ds, "test", tc.batch_size, **score)
        seconds["evaluate"] = time.perf_counter() - tick
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "lr": scheduler.get_last_lr()[0],
            "dev_accuracy": dev.accuracy,
            "dev_weighted_f1": dev.weighted_f1,
            "test_accuracy": test.accuracy,
            "test_weighted_f1": test.weighted_f1,
        }
        improved = dev.weighted_f1 > state["best_dev"]
        if improved:
            state["best_dev"] = dev.weighted_f1
            state["best"] = {"epoch": epoch, "dev": dev.to_dict(), "test": test.to_dict()}
            best_weights = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
        if state["best_test"] is None or test.weighted_f1 > state["best_test"]["weighted_f1"]:
            state["best_test"] = {"epoch": epoch, **test.to_dict()}
        stale = epoch - state["best"]["epoch"]
        done = epoch == epochs or (tc.patience > 0 and stale >= tc.patience)
        tick = time.perf_counter()
        state["epoch"] = epoch
        state["history"].append({**record, "seconds": seconds})
        if main and improved:
            checkpoint.save(
                checkpoint.payload(model, config, stats, ds, epoch=epoch), out / "best.pt"
            )
        if main and (done or epoch % tc.save_every == 0):
            save_state()
        seconds["checkpoint"] = time.perf_counter() - tick  # in this run's record only
        if show:
            print(
                f"seed {seed} epoch {epoch:3d}  loss {record['train_loss']:.4f}  "
                f"dev acc {dev.accuracy:5.2f} wF1 {dev.weighted_f1:5.2f}  "
                f"test acc {test.accuracy:5.2f} wF1 {test.weighted_f1:5.2f}"
                + ("  *" if improved else "")
            )
        if on_epoch is not None:
            on_epoch(state["history"][-1])
        if done:
            if show and epoch < epochs:
                print(f"seed {seed}: stopped early, {stale} epochs without a better dev wF1")
            break
    if best_weights is None and (out / "best.pt").exists():  # resumed past the best epoch
        best_weights = checkpoint.load(out / "best.pt")["model"]
    if best_weights is not None:  # the model leaves with its best epoch's weights
        model.load_state_dict(best_weights)
    figures = results(config, ds, model, state, seed, world, time.time() - started, probe)
    if main:
        report.write_results(figures, ds.label_names, out)
    return Fitted(figures, model)


def results(config, ds, model, state, seed, world, seconds, probe) -> dict:
    """The run's figures: the honest ``test_at_best_dev`` and the field's
    ``best_test_over_epochs``, named as such, with the history and what was run."""
    best = state["best"]
    out = {
        "seed": seed,
        "dataset": ds.name,
        "source": ds.source,
        "modalities": ds.modalities,
        "model": model.describe(),
        "config": config.to_dict(),
        "world_size": world.size,
        "seconds": seconds,
        "epochs_run": state["epoch"],
        "best_dev_epoch": best["epoch"],
        "dev_at_best_dev": best["dev"],
        "test_at_best_dev": best["test"],
        "best_test_over_epochs": state["best_test"],
        "history": state["history"],
    }
    if probe is not None:
        out["linear_probe"] = probe
    return out
