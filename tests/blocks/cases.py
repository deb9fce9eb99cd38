"""Every public block as a uniform case, so the properties every block must satisfy
(padding invariance, batch independence, empty dialogues, gradients, determinism, dtypes,
and absent modalities) are tested once for all of them, with and without absences."""

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
    """``build(absences)`` makes the block (``absences``: it will be given presence masks);
    ``run(module, features, mask, speakers, presence)`` returns outputs (b, t, ...) and a
    scalar loss. ``present`` names the inputs that can be absent, the first one the block's
    central or most important one (default: every input)."""

    name: str
    build: Callable[[bool], nn.Module]
    dims: dict[str, int]
    run: Callable[
        [nn.Module, dict[str, Tensor], Tensor, Tensor, dict[str, Tensor] | None],
        tuple[list[Tensor], Tensor],
    ]
    stochastic: bool = False
    present: tuple[str, ...] = ()

    def __post_init__(self):
        self.present = self.present or tuple(self.dims)


FUSION_DIMS = {"text": 12, "audio": 7, "visual": 5}


def _fusion(cls, **kw):
    def run(m, f, mask, s, presence):
        out = m(f, mask=mask, presence=presence)
        return [out], score(out)

    return Case(
        cls.__name__,
        lambda absences: cls(FUSION_DIMS, D, absence=absences, **kw),
        FUSION_DIMS,
        run,
    )


def _cma(symmetric: bool, aligned: bool = False) -> Case:
    def run(m, f, mask, s, presence):
        out = m(f, mask=mask, presence=presence)
        return list(out.values()), score(*out.values())

    return Case(
        f"CMATransformer(symmetric={symmetric}, aligned={aligned})",
        lambda absences: fk.CMATransformer(
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
    def run(m, f, mask, s, presence):
        r = m(f["x"], mask=mask, presence=None if presence is None else presence["x"])
        return [r.latent, r.reconstruction], score(r.reconstruction, r.latent) + r.loss

    return Case(
        f"ModalityReconstructor({kind})",
        lambda absences: fk.ModalityReconstructor(20, latent_dim=4, kind=kind),
        {"x": 20},
        run,
    )


def _variational(mode: str) -> Case:
    def run(m, f, mask, s, presence):
        out = m(f, mask=mask, presence=presence)
        return [out.z, out.mu, out.logvar], score(out.z) + out.kl

    return Case(
        f"VariationalFusion({mode})",
        lambda absences: fk.VariationalFusion({"a": D, "b": D}, 8, mode=mode, absence=absences),
        {"a": D, "b": D},
        run,
        stochastic=True,
    )


def _context(m, f, mask, s, presence):
    out = m(f["x"], mask=mask, speakers=s, presence=None if presence is None else presence["x"])
    return [out], score(out)


def _cross(m, f, mask, s, presence):
    """Queries x at every real utterance, keys c where c is present."""
    out = m(f["x"], f["c"], key_mask=mask if presence is None else presence["c"], mask=mask)
    return [out], score(out)


class _Distil(nn.Module):
    """Hierarchical distillation over three levels (coarse ``a``; fine ``b``, ``c``;
    unimodal ``b``, ``c``) with feature terms, fed by linear heads so it has inputs.

    The teacher is detached inside the loss, so the coarse head gets a stand-in supervised
    term (its mean square) to have a gradient, as a classifier's CE would give it."""

    def __init__(self):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(D, 3) for _ in range(5))
        self.loss = HierarchicalDistillation([D, D, D], temperature=2.0, feature_weight=1.0)


def _distil(m, f, mask, s, presence):
    """Where a member is not defined, its logits hold the raw (meaningless) values of its
    features, which the loss must ignore; the heads see defined utterances only."""
    defined = {k: mask if presence is None else presence.get(k, mask) for k in f}

    def logits(head, k):
        keep = defined[k].unsqueeze(-1)
        return torch.where(keep, head(torch.where(keep, f[k], 0.0)), f[k][..., :3])

    raw = [logits(h, k) for h, k in zip(m.heads, ("a", "b", "c", "b", "c"))]
    masks = None if presence is None else presence
    levels = [
        DistillationLevel({"coarse": raw[0]}, {"coarse": f["a"]}),
        DistillationLevel({"b": raw[1], "c": raw[2]}, {"b": f["b"], "c": f["c"]}, masks),
        DistillationLevel({"b": raw[3], "c": raw[4]}, {"b": f["b"], "c": f["c"]}, masks),
    ]
    out = m.loss(levels, mask=mask)
    outs = [torch.where(defined[k].unsqueeze(-1), x, 0.0) for x, k in zip(raw, "abcbc")]
    return outs, out.total + masked_mean(outs[0].square().mean(-1), mask=mask)


CASES = [
    Case(
        "MultiHeadAttention",
        lambda absences: fk.MultiHeadAttention(D, heads=2),
        {"x": D, "c": D},
        _cross,
        present=("c",),
    ),
    Case(
        "DialogueContextEncoder",
        lambda absences: fk.DialogueContextEncoder(
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
    Case(
        "HierarchicalDistillation",
        lambda absences: _Distil(),
        {"a": D, "b": D, "c": D},
        _distil,
        present=("b", "c"),
    ),
]


def make_presence(case: Case, mask: Tensor, generator=None) -> dict[str, Tensor]:
    """Presence of each input ``case.present`` can lose: about a third of the real
    utterances lack each; in the last dialogue utterance 0 has none of them and utterance
    1 the first one only; in the first dialogue the last one is absent throughout."""
    b, t = mask.shape
    presence = {}
    for i, name in enumerate(case.present):
        p = torch.rand(b, t, generator=generator) < 0.65
        p[-1, 0] = False
        p[-1, 1:2] = i == 0
        if i == len(case.present) - 1 and b > 1:
            p[0] = False
        presence[name] = p & mask
    return presence


def make_inputs(
    case: Case,
    lengths: list[int],
    t: int,
    *,
    absences: bool = False,
    dtype=torch.float32,
    generator=None,
):
    """Random features, a mask with the given real lengths, speaker ids for ``case``, and
    the presence of its inputs (:func:`make_presence`; None without ``absences``)."""
    b = len(lengths)
    feats = {m: torch.randn(b, t, d, generator=generator).to(dtype) for m, d in case.dims.items()}
    mask = lengths_mask(lengths, t)
    speakers = torch.randint(0, 3, (b, t), generator=generator)
    presence = make_presence(case, mask, generator) if absences else None
    return feats, mask, speakers, presence
