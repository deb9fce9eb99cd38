"""Hierarchical distillation: each granularity learns from the one above (cmath.md, step 6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor, nn

from fusionkit.losses.masked import masked_mean, presence_masks
from fusionkit.typing import typechecked


@typechecked
def distillation_kl(
    student_logits: Float[Tensor, "batch time classes"],
    teacher_logits: Float[Tensor, "batch time classes"],
    *,
    mask: Bool[Tensor, "batch time"],
    temperature: float = 1.0,
) -> Float[Tensor, ""]:
    """``tau^2 * KL(softmax(teacher/tau) || softmax(student/tau))`` over real utterances.

    The teacher is detached: gradients reach the student only. Logits where ``mask`` is
    False are never read.
    """
    tau, keep = temperature, mask.unsqueeze(-1)
    log_p_teacher = F.log_softmax(torch.where(keep, teacher_logits.detach().float(), 0.0) / tau, -1)
    log_p_student = F.log_softmax(torch.where(keep, student_logits.float(), 0.0) / tau, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    return tau**2 * masked_mean(kl, mask=mask)


@typechecked
def feature_consistency(
    student: Float[Tensor, "batch time dim"],
    teacher: Float[Tensor, "batch time dim"],
    *,
    mask: Bool[Tensor, "batch time"],
    kind: Literal["mse", "cosine"] = "mse",
) -> Float[Tensor, ""]:
    """Distance between student and detached teacher features, averaged over real utterances.

    ``mse``: mean squared error over features; ``cosine``: 1 - cosine similarity. Features
    where ``mask`` is False are never read.
    """
    keep = mask.unsqueeze(-1)
    s = torch.where(keep, student.float(), 0.0)
    t = torch.where(keep, teacher.detach().float(), 0.0)
    if kind == "mse":
        dist = (s - t).square().mean(-1)
    elif kind == "cosine":
        dist = 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-6)
    else:
        raise ValueError(f"kind: expected 'mse' or 'cosine', got {kind!r}")
    return masked_mean(dist, mask=mask)


@dataclass(frozen=True)
class DistillationLevel:
    """One granularity: ``logits`` name -> (b, t, classes), optional ``features`` name -> (b, t, d),
    and optional ``masks`` name -> bool (b, t): where that member is defined, e.g. the
    presence of a unimodal member's modality (a member left out is defined at every real
    utterance). A member is distilled only where it is defined, and it counts in its level's
    teacher mean only there (see :class:`HierarchicalDistillation`)."""

    logits: Mapping[str, Tensor]
    features: Mapping[str, Tensor] | None = None
    masks: Mapping[str, Tensor] | None = None

    def defined(self, mask: Tensor) -> dict[str, Tensor]:
        """Where each member is defined (b, t): its mask, or ``mask`` when it has none."""
        members = [*self.logits, *(k for k in self.features or {} if k not in self.logits)]
        return presence_masks(mask, self.masks, members, name="masks")


def member_mean(
    values: Mapping[str, Tensor], defined: Mapping[str, Tensor]
) -> tuple[Tensor, Tensor]:
    """The mean of ``values`` (name -> (b, t, d)) over the members defined at each utterance,
    and where at least one is (b, t); zeros where none is.

    Written as the mean over all k members (an undefined one counting 0) times k / (number
    defined), which is exactly the plain mean where every member is defined."""
    keep = torch.stack([defined[k] for k in values])
    stacked = torch.where(keep.unsqueeze(-1), torch.stack(list(values.values())), 0.0)
    count = keep.sum(0)
    scale = (len(values) / count.clamp_min(1)).to(stacked.dtype).unsqueeze(-1)
    return stacked.mean(0) * scale, count > 0


@dataclass(frozen=True)
class DistillationOutput:
    """``total`` scalar and the named terms ``level{i}/kd`` and ``level{i}/feature``."""

    total: Tensor
    terms: dict[str, Tensor]


class HierarchicalDistillation(nn.Module):
    """Distil each level of an ordered list (coarse first) from the level above it.

    Each member of level i learns from the mean logits of level i-1 (the teacher ensemble)
    by :func:`distillation_kl`; with ``feature_weight > 0`` its features, projected by a
    Linear per level to the teacher level's width, also match the mean teacher features by
    :func:`feature_consistency`. Members of one level share the projection.

    Missing modalities (:attr:`DistillationLevel.masks`): a student member is distilled only
    at utterances where it is defined, and the teacher mean at an utterance is over the
    teacher members defined there; where no teacher member is, no student is distilled.
    Each term stays a mean over the utterances it counts.

    Args:
        dims: feature width of each level (needed only when ``feature_weight > 0``).
        temperature: distillation temperature tau.
        logit_weight: weight of the logit terms.
        feature_weight: weight of the feature terms (0 turns them off).
        feature_kind: ``"mse"`` or ``"cosine"``.
    """

    def __init__(
        self,
        dims: Sequence[int] | None = None,
        *,
        temperature: float = 1.0,
        logit_weight: float = 1.0,
        feature_weight: float = 0.0,
        feature_kind: Literal["mse", "cosine"] = "mse",
    ):
        super().__init__()
        if feature_weight > 0 and (dims is None or len(dims) < 2):
            raise ValueError("dims: feature consistency needs the width of every level (>= 2)")
        self.temperature, self.logit_weight = temperature, logit_weight
        self.feature_weight, self.feature_kind = feature_weight, feature_kind
        self.dims = list(dims) if dims is not None else None
        self.projections = (
            nn.ModuleList(
                nn.Linear(d_student, d_teacher)
                for d_teacher, d_student in zip(self.dims[:-1], self.dims[1:])
            )
            if feature_weight > 0
            else nn.ModuleList()
        )

    @typechecked
    def forward(
        self, levels: Sequence[DistillationLevel], *, mask: Bool[Tensor, "batch time"]
    ) -> DistillationOutput:
        """Sum the distillation terms of every level below the first."""
        if len(levels) < 2:
            raise ValueError(f"levels: need at least 2 levels to distil, got {len(levels)}")
        if self.dims is not None and self.feature_weight > 0 and len(levels) != len(self.dims):
            raise ValueError(f"levels: expected {len(self.dims)} levels (dims), got {len(levels)}")
        terms: dict[str, Tensor] = {}
        total = torch.zeros((), device=mask.device)
        for i in range(1, len(levels)):
            teacher, student = levels[i - 1], levels[i]
            teacher_defined, student_defined = teacher.defined(mask), student.defined(mask)
            teacher_logits, taught = member_mean(teacher.logits, teacher_defined)
            kd = torch.stack(
                [
                    distillation_kl(
                        s,
                        teacher_logits,
                        mask=taught & student_defined[k],
                        temperature=self.temperature,
                    )
                    for k, s in student.logits.items()
                ]
            ).sum()
            terms[f"level{i}/kd"] = kd
            total = total + self.logit_weight * kd
            if self.feature_weight > 0:
                if teacher.features is None or student.features is None:
                    raise ValueError(f"levels[{i}]: features are needed when feature_weight > 0")
                target, taught = member_mean(teacher.features, teacher_defined)
                proj = self.projections[i - 1]
                feat = []
                for k, f in student.features.items():
                    keep = taught & student_defined[k]
                    f = proj(torch.where(keep.unsqueeze(-1), f, 0.0))
                    feat.append(feature_consistency(f, target, mask=keep, kind=self.feature_kind))
                feat = torch.stack(feat).sum()
                terms[f"level{i}/feature"] = feat
                total = total + self.feature_weight * feat
        return DistillationOutput(total=total, terms=terms)
