"""Every public block as a uniform case, so the properties every block must satisfy
(padding invariance, batch independence, empty dialogues, gradients, determinism, dtypes)
are tested once for all of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import fusionkit as fk
from fusionkit.losses import DistillationLevel, HierarchicalDistillation, masked_mean
from tests.helpers import lengths_mask

D = 16


def score(*outputs: Tensor) -> Tensor:
    """A scalar that depends on every output entry: each weighted by a fixed random number.

    (A plain sum would not do: a LayerNorm's output sums to a constant.)"""
    total = 0.0
    for o in outputs:
        g = torch.Generator().manual_seed(o.shape[-1])
        total = total + (o * torch.randn(o.shape[-1], generator=g).to(o.dtype)).sum()
    return total


@dataclass
class Case:
    """``run(module, features, mask, speakers)`` returns outputs (b, t, ...) and a scalar loss."""

    name: str
    build: Callable[[], nn.Module]
    dims: dict[str, int]
    run: Callable[[nn.Module, dict[str, Tensor], Tensor, Tensor], tuple[list[Tensor], Tensor]]
    stochastic: bool = False


def _fusion(cls, **kw):
    dims = {"text": 12, "audio": 7, "visual": 5}
    return Case(
        cls.__name__,
        lambda: cls(dims, D, **kw),
        dims,
        lambda m, f, mask, s: ([m(f, mask=mask)], score(m(f, mask=mask))),
    )


def _cma(symmetric: bool, aligned: bool = False) -> Case:
    def run(m, f, mask, s):
        out = m(f, mask=mask)
        return list(out.values()), score(*out.values())

    return Case(
        f"CMATransformer(symmetric={symmetric}, aligned={aligned})",
        lambda: fk.CMATransformer(
            D,
            central="text",
            auxiliary=["audio", "visual"],
            depth=2,
            heads=2,
            dropout=0.0,
            symmetric=symmetric,
            aligned=aligned,
        ),
        {"text": D, "audio": D, "visual": D},
        run,
    )


def _reconstructor(kind: str) -> Case:
    def run(m, f, mask, s):
        r = m(f["x"], mask=mask)
        return [r.latent, r.reconstruction], score(r.reconstruction, r.latent) + r.loss

    return Case(
        f"ModalityReconstructor({kind})",
        lambda: fk.ModalityReconstructor(20, latent_dim=4, kind=kind),
        {"x": 20},
        run,
    )


def _variational(mode: str) -> Case:
    def run(m, f, mask, s):
        out = m(f, mask=mask)
        return [out.z, out.mu, out.logvar], score(out.z) + out.kl

    return Case(
        f"VariationalFusion({mode})",
        lambda: fk.VariationalFusion({"a": D, "b": D}, 8, mode=mode),
        {"a": D, "b": D},
        run,
        stochastic=True,
    )


def _context(m, f, mask, s):
    out = m(f["x"], mask=mask, speakers=s)
    return [out], score(out)


def _cross(m, f, mask, s):
    out = m(f["x"], f["c"], key_mask=mask, mask=mask)
    return [out], score(out)


class _Distil(nn.Module):
    """Hierarchical distillation with feature terms, fed by linear heads so it has inputs.

    The teacher is detached inside the loss, so the teacher head gets a stand-in supervised
    term (its mean square) to have a gradient, as a classifier's CE would give it."""

    def __init__(self):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(D, 3) for _ in range(3))
        self.loss = HierarchicalDistillation([D, D], temperature=2.0, feature_weight=1.0)


def _distil(m, f, mask, s):
    logits = [h(f[k]) * mask[..., None] for h, k in zip(m.heads, ("a", "b", "c"))]
    levels = [
        DistillationLevel({"coarse": logits[0]}, {"coarse": f["a"]}),
        DistillationLevel({"b": logits[1], "c": logits[2]}, {"b": f["b"], "c": f["c"]}),
    ]
    out = m.loss(levels, mask=mask)
    return logits, out.total + masked_mean(logits[0].square().mean(-1), mask=mask)


CASES = [
    Case("MultiHeadAttention", lambda: fk.MultiHeadAttention(D, heads=2), {"x": D, "c": D}, _cross),
    Case(
        "DialogueContextEncoder",
        lambda: fk.DialogueContextEncoder(
            D, depth=2, heads=2, num_speakers=3, max_len=64, dropout=0.0
        ),
        {"x": D},
        _context,
    ),
    _cma(False),
    _cma(True),
    _cma(False, aligned=True),
    _reconstructor("unet"),
    _reconstructor("mlp"),
    _variational("poe"),
    _variational("concat"),
    _fusion(fk.ConcatFusion),
    _fusion(fk.GatedFusion),
    _fusion(fk.TensorFusion, factor_dim=3),
    _fusion(fk.LowRankFusion, rank=3),
    Case("HierarchicalDistillation", _Distil, {"a": D, "b": D, "c": D}, _distil),
]


def make_inputs(case: Case, lengths: list[int], t: int, *, dtype=torch.float32, generator=None):
    """Random features, a mask with the given real lengths, and speaker ids for ``case``."""
    b = len(lengths)
    feats = {m: torch.randn(b, t, d, generator=generator).to(dtype) for m, d in case.dims.items()}
    mask = lengths_mask(lengths, t)
    speakers = torch.randint(0, 3, (b, t), generator=generator)
    return feats, mask, speakers
