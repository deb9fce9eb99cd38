"""Train and evaluate CMATH.

    python examples/cmath/train.py                                   # synthetic data, ~75 s on 2 CPU cores
    python examples/cmath/train.py --config iemocap --data IEMOCAP_features.pkl
    python examples/cmath/train.py --config meld --data meld_multimodal_features.pkl
    python examples/cmath/train.py --dataset meld-csv --data ../shared/data/meld
    python examples/cmath/train.py --seeds 0 1 2 3 4                 # mean and std over seeds
    python examples/cmath/train.py --ablations                       # the ablation table
    python examples/cmath/train.py --resume --out runs/x             # continue an interrupted run
    python examples/cmath/train.py --eval runs/x/seed0/best.pt       # score a saved model
    torchrun --nproc_per_node 2 examples/cmath/train.py              # DistributedDataParallel

Each run writes to ``--out`` (default ``runs/<dataset>``): per seed ``results.json``,
``confusion.png``, ``curves.png``, ``last.pt`` (every epoch, atomically) and ``best.pt``
(best dev epoch); ``summary.json`` with mean and std over seeds; with ``--ablations``,
``ablations.md``. Reported: ``test_at_best_dev`` (the honest figure) and
``best_test_over_epochs`` (the field's convention), both named as such.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from examples.cmath import report  # noqa: E402
from examples.cmath.config import DataConfig, RunConfig, load_config, override, with_model  # noqa: E402
from examples.cmath.model import CMATH, CMATHConfig, loss_counts  # noqa: E402
from fusionkit import DialogueBatch, classification_report  # noqa: E402
from fusionkit.data import (  # noqa: E402
    ConversationDataset,
    SyntheticConversations,
    load_npz,
    read_feature_pickle,
)


# --------------------------------------------------------------------------- data
def load_data(cfg: DataConfig) -> ConversationDataset:
    """The dataset a config names, with its modality subset, dev split and standardisation."""
    if cfg.dataset == "synthetic":
        ds = SyntheticConversations(
            num_dialogues=cfg.num_dialogues,
            min_len=cfg.min_len,
            max_len=cfg.max_len,
            dims=cfg.dims,
            seed=cfg.synthetic_seed,
        ).build()
    elif cfg.path is None:
        raise ValueError(f"--data: a path is needed for dataset {cfg.dataset!r}")
    elif cfg.dataset in ("iemocap", "meld"):
        ds = read_feature_pickle(cfg.path, text=cfg.text_layer)
        if ds.name != cfg.dataset:
            raise ValueError(
                f"--dataset {cfg.dataset}: {cfg.path} holds {ds.name} features ({ds.source})"
            )
    elif cfg.dataset == "npz":
        ds = load_npz(cfg.path)
    elif cfg.dataset == "meld-csv":
        from fusionkit.data.text import meld_text_dataset

        ds = meld_text_dataset(
            cfg.path,
            encoder=cfg.encoder,
            cache_dir=cfg.cache_dir,
            limit_dialogues=cfg.limit_dialogues,
        )
    else:
        raise ValueError(f"dataset: unknown {cfg.dataset!r}")
    if cfg.modalities is not None:
        ds = ds.select_modalities(cfg.modalities)
    ds = ds.with_dev_split(cfg.dev_fraction, seed=cfg.dev_seed)
    return ds.standardized("train") if cfg.standardize else ds


def build_model(cfg: CMATHConfig, ds: ConversationDataset) -> CMATH:
    longest = max(len(d) for d in ds.dialogues.values())
    return CMATH(
        replace(
            cfg,
            input_dims=ds.feature_dims,
            num_classes=len(ds.label_names),
            num_speakers=ds.num_speakers,
            max_len=max(cfg.max_len, longest),
        )
    )


# --------------------------------------------------------------------------- distribution
def world() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if size > 1 else (0, 1)


def all_sum(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(x)
    return x


class Objective(nn.Module):
    """The model's loss as a forward pass, so DistributedDataParallel can wrap it."""

    def __init__(self, model: CMATH):
        super().__init__()
        self.model = model

    def forward(self, batch: DialogueBatch, class_weights, global_counts):
        return self.model.loss(batch, class_weights=class_weights, global_counts=global_counts)


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(
    model: CMATH, dialogues, batch_size: int, device: torch.device
) -> dict[str, np.ndarray]:
    """Predicted labels per dialogue id (this process's dialogues only)."""
    model.eval()
    out = {}
    for start in range(0, len(dialogues), batch_size):
        batch = DialogueBatch.collate(dialogues[start : start + batch_size]).to(device)
        pred = model(batch.features, batch.mask, batch.speakers).logits.argmax(-1).cpu().numpy()
        for i, did in enumerate(batch.ids):
            out[did] = pred[i, : int(batch.mask[i].sum())]
    return out


def evaluate(
    model: CMATH, ds: ConversationDataset, split: str, batch_size: int, device: torch.device
):
    """Report on ``split``; under DDP each process predicts a shard and the predictions are
    gathered, so the figures equal a single process's."""
    rank, size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    dialogues = ds.split(split)
    preds = predict(model, dialogues[rank::size], batch_size, device)
    if size > 1:
        shards = [None] * size
        dist.all_gather_object(shards, preds)
        preds = {k: v for shard in shards for k, v in shard.items()}
    p = np.concatenate([preds[d.id] for d in dialogues])
    y = np.concatenate([np.asarray(d.labels) for d in dialogues])
    return classification_report(p, y, ds.label_names)


def linear_probe(ds: ConversationDataset) -> dict:
    """Per-utterance logistic regression on the concatenated features (no dialogue context),
    its inverse regularisation C chosen on dev among 0.01, 0.1, 1, 10."""
    from sklearn.linear_model import LogisticRegression

    (x, y), (xd, yd), (xt, yt) = (ds.utterances(s) for s in ("train", "dev", "test"))
    best = None
    for c in (0.01, 0.1, 1.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(x, y)
        dev = classification_report(clf.predict(xd), yd, ds.label_names)
        if best is None or dev.weighted_f1 > best[0].weighted_f1:
            best = (dev, clf, c)
    test = classification_report(best[1].predict(xt), yt, ds.label_names)
    return {"C": best[2], "dev_weighted_f1": best[0].weighted_f1, **test.to_dict()}


# --------------------------------------------------------------------------- training
def save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def device_for(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def train_seed(
    config: RunConfig,
    ds: ConversationDataset,
    seed: int,
    out: Path,
    *,
    resume: bool,
    quiet: bool,
    probe: dict | None = None,
) -> dict:
    """Train one seed; returns (and writes) its results, with the linear ``probe``'s if given."""
    rank, size = world()
    tc = config.train
    device = device_for(tc.device)
    torch.manual_seed(seed)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = build_model(config.model, ds).to(device)
    if tc.compile:
        model.compile()
    objective = Objective(model)
    if size > 1:
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
    opt_cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    class_weights = ds.class_weights("train").to(device) if tc.class_weights else None
    amp = tc.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)

    out.mkdir(parents=True, exist_ok=True)
    state = {"epoch": 0, "history": [], "best_dev": -1.0, "best": None, "best_test": None}
    if resume and (out / "last.pt").exists():
        ckpt = torch.load(out / "last.pt", map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"])
        state = ckpt["state"]
        if not quiet and rank == 0:
            print(f"resumed {out / 'last.pt'} after epoch {state['epoch']}")

    if not quiet and rank == 0:
        print(model.describe())
    train = ds.split("train")
    started = time.time()
    for epoch in range(state["epoch"] + 1, tc.epochs + 1):
        model.train()
        order = np.random.default_rng([seed, epoch]).permutation(len(train))
        starts = range(0, len(order), tc.batch_size)
        losses = []
        bar = tqdm(
            starts,
            desc=f"seed {seed} epoch {epoch}/{tc.epochs}",
            leave=False,
            disable=True if quiet or rank else None,
        )
        for start in bar:
            chunk = [train[i] for i in order[start : start + tc.batch_size]]
            local = chunk[rank::size]
            # A process left without a dialogue in the last, short batch still runs one
            # (weighted 0) so that every process takes part in the same collectives.
            batch = DialogueBatch.collate(local or chunk[:1]).to(device)
            counts = loss_counts(batch, class_weights) * (1.0 if local else 0.0)
            counts = all_sum(counts)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                loss = objective(batch, class_weights, (counts[0], counts[1])).total * (
                    1.0 if local else 0.0
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss * size).backward()  # DDP averages: scale back to the global sum
            scaler.unscale_(optimizer)
            if tc.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            losses.append(all_sum(loss.detach().float().clone()).item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        dev = evaluate(model, ds, "dev", tc.batch_size, device)
        test = evaluate(model, ds, "test", tc.batch_size, device)
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
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
        if rank == 0:
            payload = {
                "model": model.state_dict(),
                "config": config.to_dict(),
                "label_names": ds.label_names,
                "seed": seed,
            }
            if improved:
                save_atomic({**payload, "epoch": epoch}, out / "best.pt")
            save_atomic(
                {
                    **payload,
                    "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state(),
                    "state": state,
                },
                out / "last.pt",
            )
        if not quiet and rank == 0:
            print(
                f"seed {seed} epoch {epoch:3d}  loss {record['train_loss']:.4f}  dev acc {dev.accuracy:5.2f} wF1 {dev.weighted_f1:5.2f}  "
                f"test acc {test.accuracy:5.2f} wF1 {test.weighted_f1:5.2f}"
                + ("  *" if improved else "")
            )

    best = state["best"]
    results = {
        "seed": seed,
        "dataset": ds.name,
        "source": ds.source,
        "modalities": ds.modalities,
        "model": model.describe(),
        "config": config.to_dict(),
        "world_size": size,
        "seconds": time.time() - started,
        "best_dev_epoch": best["epoch"],
        "dev_at_best_dev": best["dev"],
        "test_at_best_dev": best["test"],
        "best_test_over_epochs": state["best_test"],
        "history": state["history"],
    }
    if probe is not None:
        results["linear_probe"] = probe
    if rank == 0:
        (out / "results.json").write_text(json.dumps(results, indent=2))
        report.plot_confusion(
            best["test"]["confusion"],
            ds.label_names,
            out / "confusion.png",
            f"test at best dev epoch {best['epoch']}: acc {best['test']['accuracy']:.2f}, wF1 {best['test']['weighted_f1']:.2f}",
        )
        report.plot_curves(state["history"], out / "curves.png", best["epoch"])
    return results


def run(
    config: RunConfig, ds: ConversationDataset, out: Path, *, resume: bool, quiet: bool
) -> dict:
    """Every seed of ``config``; writes and returns the summary over seeds."""
    rank, _ = world()
    probe = linear_probe(ds) if config.train.probe else None  # deterministic: fit once
    runs = [
        train_seed(config, ds, s, out / f"seed{s}", resume=resume, quiet=quiet, probe=probe)
        for s in config.train.seeds
    ]
    summary = {"seeds": config.train.seeds, **report.summarize(runs)}
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        for key, stat in summary.items():
            if key != "seeds":
                print(f"{key:40s} {report.fmt(stat)}")
    return summary


def ablations(ds: ConversationDataset) -> list[tuple[str, dict]]:
    """The paper's kind of ablation table: (name, model overrides)."""
    rows = [
        ("CMATH (full)", {}),
        ("w/o modality reconstruction", {"reconstruction": False}),
        ("symmetric fusion (MulT-style)", {"symmetric": True}),
    ]
    rows += [(f"central = {m} only", {"centrals": [m]}) for m in ds.modalities]
    central = "text" if "text" in ds.modalities else ds.modalities[0]
    rows.append((f"central = {central} only, aligned", {"centrals": [central], "aligned": True}))
    rows += [
        ("w/o variational fusion (concat)", {"fusion": "concat"}),
        ("w/o hierarchical distillation", {"distillation": False}),
        ("single granularity (coarse head only)", {"granularity": "single"}),
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        help="TOML file, or a name in examples/cmath/configs (synthetic, iemocap, meld, meld-csv)",
    )
    parser.add_argument("--dataset", choices=["synthetic", "iemocap", "meld", "npz", "meld-csv"])
    parser.add_argument("--data", help="the data file or folder")
    parser.add_argument("--out", help="run folder (default runs/<dataset>)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value",
    )
    parser.add_argument("--ablations", action="store_true", help="run the ablation table")
    parser.add_argument("--resume", action="store_true", help="continue from each seed's last.pt")
    parser.add_argument("--eval", metavar="CHECKPOINT", help="score a saved model and exit")
    parser.add_argument("--split", default="test", help="split scored by --eval")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--probe", action="store_true", help="also report a per-utterance linear probe"
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    if args.eval:
        ckpt = torch.load(args.eval, map_location="cpu", weights_only=True)
        from examples.cmath.config import from_dict

        config = from_dict(ckpt["config"])
    else:
        default = args.config or (
            args.dataset if args.dataset in ("iemocap", "meld", "meld-csv") else "synthetic"
        )
        config = load_config(default)
    config = override(config, args.set)
    data_changes = {
        k: v for k, v in (("dataset", args.dataset), ("path", args.data)) if v is not None
    }
    train_changes = {
        k: v for k, v in (("epochs", args.epochs), ("seeds", args.seeds)) if v is not None
    }
    if args.compile:
        train_changes["compile"] = True
    if args.probe:
        train_changes["probe"] = True
    config = replace(
        config,
        data=replace(config.data, **data_changes),
        train=replace(config.train, **train_changes),
    )

    ds = load_data(config.data)
    rank, _ = world()
    if rank == 0 and not args.quiet:
        print(ds.summary())
    if args.eval:
        model = build_model(config.model, ds)
        model.load_state_dict(ckpt["model"])
        result = evaluate(model, ds, args.split, config.train.batch_size, torch.device("cpu"))
        print(
            json.dumps({"checkpoint": args.eval, "split": args.split, **result.to_dict()}, indent=2)
        )
        return 0

    out = Path(args.out or f"runs/{config.data.dataset}")
    if not args.ablations:
        run(config, ds, out, resume=args.resume, quiet=args.quiet)
        return 0
    rows = []
    for i, (name, changes) in enumerate(ablations(ds)):
        if rank == 0:
            print(f"== ablation {i}: {name} {changes}")
        rows.append(
            (
                name,
                run(
                    with_model(config, **changes),
                    ds,
                    out / f"ablation{i}",
                    resume=args.resume,
                    quiet=True,
                ),
            )
        )
    if rank == 0:
        table = report.ablation_table(rows, config.train.seeds)
        (out / "ablations.md").write_text(f"# Ablations on {ds.name}\n\n{table}")
        print(table)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
