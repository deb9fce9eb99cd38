"""CMATH (Zhu et al., arXiv 2411.10060) built from fusionkit blocks, one line per step of
``shared/design/cmath.md`` (docs/cmath.md in this repository).

    x_m --[2. ModalityReconstructor]--> z_m --Linear--> [1. DialogueContextEncoder] --> h_m
    {h_m} --[3. CMATransformer per central c + GatedFusion]--> F_c          (fine)
    {F_c} --[4. VariationalFusion]--> z                                     (coarse)
    [5. heads] on z, on each F_c, on each h_m (unimodal)
    [6. HierarchicalDistillation] coarse -> fine -> unimodal
    [7. objective] CE(coarse) + sum CE(fine) + alpha L_rec + beta L_KL + gamma L_KD
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusionkit import (
    CMATransformer,
    ConcatFusion,
    DialogueBatch,
    DialogueContextEncoder,
    GatedFusion,
    ModalityReconstructor,
    VariationalFusion,
)
from fusionkit.attention import Backend
from fusionkit.batch import IGNORE_INDEX
from fusionkit.losses import DistillationLevel, HierarchicalDistillation
from fusionkit.typing import Bool, Int, check_features, typechecked


@dataclass
class CMATHConfig:
    """Every choice of the model; the ones cmath.md marks [ours] included.

    ``input_dims`` (modality -> width), ``num_classes``, ``num_speakers`` and ``max_len``
    come from the data. Ablations: ``reconstruction=False``; ``symmetric=True``;
    ``centrals=["audio"]`` (any subset); ``fusion="concat"`` (plain, no variational);
    ``distillation=False``; ``granularity="single"`` (coarse head only).
    """

    input_dims: dict[str, int] = field(default_factory=dict)
    num_classes: int = 6
    num_speakers: int = 2
    max_len: int = 512
    hidden_dim: int = 128
    heads: int = 4
    ff_mult: int = 2
    dropout: float = 0.3
    context_depth: int = 1
    cma_depth: int = 2
    # step 2: modality reconstruction
    reconstruction: bool = True
    reconstruction_kind: Literal["unet", "mlp"] = "unet"
    compressed_dim: int = 128
    reconstruction_hidden: int | None = None  # first U-Net level's width (None: the input's)
    reconstruction_kernel: int = (
        1  # utterances each convolution sees; 3 blurred MELD emotions (docs)
    )
    reconstruction_reduction: Literal["sum", "mean"] = "sum"  # ||x - x_hat||^2, or its mean
    # step 3: CMA-Transformer; None = every modality takes the central role in turn
    centrals: list[str] | None = None
    symmetric: bool = False
    aligned: bool = False  # also add each utterance's own auxiliary features in every CMA layer
    # step 4: "poe" (product of experts), "vconcat" (one Gaussian from the concatenation),
    # "concat" (plain concatenation, not variational: the ablation)
    fusion: Literal["poe", "vconcat", "concat"] = "poe"
    latent_dim: int | None = None
    # step 5/6: "hierarchical" (coarse, fine and unimodal heads) or "single" (coarse only)
    granularity: Literal["hierarchical", "single"] = "hierarchical"
    distillation: bool = True
    temperature: float = 1.0
    feature_distillation: float = 0.0
    feature_distillation_kind: Literal["mse", "cosine"] = "mse"
    # step 7: loss weights
    alpha: float = 1e-3  # L_rec sums squared errors over features: thousands at the start
    beta: float = 0.01
    gamma: float = 1.0
    backend: Backend = "auto"

    def resolved_centrals(self) -> list[str]:
        centrals = sorted(self.input_dims) if self.centrals is None else list(self.centrals)
        unknown = sorted(set(centrals) - set(self.input_dims))
        if unknown or not centrals:
            raise ValueError(
                f"centrals: {unknown or 'none'} not among the modalities {sorted(self.input_dims)}"
            )
        return centrals

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CMATHOutput:
    """Logits (b, t, classes) per granularity and the auxiliary losses of one forward pass."""

    logits: Tensor
    fine_logits: dict[str, Tensor]
    unimodal_logits: dict[str, Tensor]
    fine: dict[str, Tensor]
    unimodal: dict[str, Tensor]
    coarse: Tensor
    reconstruction_loss: Tensor
    kl: Tensor


@dataclass(frozen=True)
class CMATHLoss:
    """``total`` and every named term (unweighted), and the forward pass they came from."""

    total: Tensor
    terms: dict[str, Tensor]
    output: CMATHOutput


def loss_counts(batch: DialogueBatch, class_weights: Tensor | None = None) -> Tensor:
    """(sum of the class weights of the labelled utterances, number of real utterances) of
    ``batch``: the denominators of the objective's means (its CE is weighted as PyTorch's)."""
    valid = batch.labels != IGNORE_INDEX
    if class_weights is None:
        weight = valid.float()
    else:
        weight = class_weights[batch.labels.clamp_min(0)] * valid
    return torch.stack([weight.sum(), batch.mask.sum().to(weight.dtype)])


class CMATH(nn.Module):
    """The CMATH model for any non-empty set of modalities (see the module docstring)."""

    def __init__(self, config: CMATHConfig):
        super().__init__()
        if not config.input_dims:
            raise ValueError("config.input_dims: at least one modality is needed")
        self.config = c = config
        self.modalities = sorted(c.input_dims)
        self.centrals = c.resolved_centrals()
        d = c.hidden_dim
        hierarchical = c.granularity == "hierarchical"
        self.reconstructors = nn.ModuleDict(
            {
                m: ModalityReconstructor(
                    c.input_dims[m],
                    latent_dim=min(c.compressed_dim, c.input_dims[m]),
                    hidden_dim=min(c.reconstruction_hidden or c.input_dims[m], c.input_dims[m]),
                    kind=c.reconstruction_kind,
                    kernel_size=c.reconstruction_kernel,
                    loss_reduction=c.reconstruction_reduction,
                )
                for m in self.modalities
            }
            if c.reconstruction
            else {}
        )
        self.project = nn.ModuleDict(
            {
                m: nn.Linear(min(c.compressed_dim, w) if c.reconstruction else w, d)
                for m, w in c.input_dims.items()
            }
        )
        self.context = nn.ModuleDict(
            {
                m: DialogueContextEncoder(
                    d,
                    depth=c.context_depth,
                    heads=c.heads,
                    num_speakers=c.num_speakers,
                    max_len=c.max_len,
                    dropout=c.dropout,
                    ff_mult=c.ff_mult,
                    backend=c.backend,
                )
                for m in self.modalities
            }
        )
        self.cma = nn.ModuleDict(
            {
                central: CMATransformer(
                    d,
                    central=central,
                    auxiliary=[m for m in self.modalities if m != central],
                    depth=c.cma_depth,
                    heads=c.heads,
                    ff_mult=c.ff_mult,
                    dropout=c.dropout,
                    symmetric=c.symmetric,
                    aligned=c.aligned,
                    backend=c.backend,
                )
                for central in self.centrals
            }
        )
        self.gate = nn.ModuleDict(
            {k: GatedFusion(dict.fromkeys(cma.output_names, d), d) for k, cma in self.cma.items()}
        )
        latent = c.latent_dim or d
        if c.fusion == "concat":
            self.fusion = ConcatFusion(dict.fromkeys(self.centrals, d), latent)
        else:
            mode = "poe" if c.fusion == "poe" else "concat"
            self.fusion = VariationalFusion(dict.fromkeys(self.centrals, d), latent, mode=mode)
        self.variational = c.fusion != "concat"
        self.head = nn.Linear(latent, c.num_classes)
        self.fine_heads = nn.ModuleDict(
            {k: nn.Linear(d, c.num_classes) for k in self.centrals} if hierarchical else {}
        )
        distil = hierarchical and c.distillation
        self.unimodal_heads = nn.ModuleDict(
            {m: nn.Linear(d, c.num_classes) for m in self.modalities} if distil else {}
        )
        self.distillation = (
            HierarchicalDistillation(
                [latent, d, d],
                temperature=c.temperature,
                feature_weight=c.feature_distillation,
                feature_kind=c.feature_distillation_kind,
            )
            if distil
            else None
        )

    def describe(self) -> str:
        """What this instance computes, in one line per step."""
        c = self.config
        return "\n".join(
            [
                f"modalities: {', '.join(f'{m} ({c.input_dims[m]})' for m in self.modalities)}",
                f"reconstruction: {c.reconstruction_kind if c.reconstruction else 'off'}",
                f"centrals: {', '.join(self.centrals)} ({'symmetric' if c.symmetric else 'asymmetric'})",
                f"fusion: {c.fusion}; granularity: {c.granularity}; distillation: {'on' if self.distillation else 'off'}",
                f"parameters: {sum(p.numel() for p in self.parameters()):,}",
            ]
        )

    @typechecked
    def forward(
        self,
        features: Mapping[str, Tensor],
        mask: Bool[Tensor, "batch time"],
        speakers: Int[Tensor, "batch time"],
    ) -> CMATHOutput:
        """Logits and auxiliary losses for features (modality -> (b, t, d_m)), mask and speakers (b, t)."""
        check_features("features", features, mask, expected=self.config.input_dims)
        zero = torch.zeros((), device=mask.device)
        rec_loss, unimodal = zero, {}
        for m in self.modalities:  # steps 1 and 2
            z = features[m]
            if m in self.reconstructors:
                rec = self.reconstructors[m](z, mask=mask)
                z, rec_loss = rec.latent, rec_loss + rec.loss
            unimodal[m] = self.context[m](self.project[m](z), mask=mask, speakers=speakers)
        fine = {}
        for central, cma in self.cma.items():  # step 3
            streams = cma({m: unimodal[m] for m in [central, *cma.auxiliary]}, mask=mask)
            fine[central] = self.gate[central](streams, mask=mask)
        fused = self.fusion(fine, mask=mask)  # step 4
        coarse, kl = (fused.z, fused.kl) if self.variational else (fused, zero)
        return CMATHOutput(  # step 5
            logits=self.head(coarse),
            fine_logits={k: h(fine[k]) for k, h in self.fine_heads.items()},
            unimodal_logits={m: h(unimodal[m]) for m, h in self.unimodal_heads.items()},
            fine=fine,
            unimodal=unimodal,
            coarse=coarse,
            reconstruction_loss=rec_loss,
            kl=kl,
        )

    def loss(
        self,
        batch: DialogueBatch,
        *,
        class_weights: Tensor | None = None,
        global_counts: tuple[Tensor, Tensor] | None = None,
    ) -> CMATHLoss:
        """The objective (step 7) on ``batch``, with every term.

        Cross-entropy is the class-weighted mean over labelled utterances (as PyTorch's
        ``weight=``). ``global_counts`` = (sum of label weights, number of real utterances)
        over the whole distributed batch: each term is then this process's share of the global mean, so
        that averaging gradients across processes gives the single-process gradient.
        """
        c = self.config
        out = self(batch.features, batch.mask, batch.speakers)
        labels, mask = batch.labels, batch.mask
        if class_weights is not None:
            class_weights = class_weights.to(out.logits.device)
        ce_norm, utt_scale = loss_counts(batch, class_weights)[0], 1.0
        if global_counts is not None:
            ce_norm, utt_scale = global_counts[0], mask.sum() / global_counts[1]

        def ce(logits: Tensor) -> Tensor:
            nll = F.cross_entropy(
                logits.flatten(0, 1).float(),
                labels.flatten(),
                weight=class_weights,
                ignore_index=IGNORE_INDEX,
                reduction="none",
            )
            return nll.sum() / ce_norm.clamp_min(1e-12)

        terms = {"ce/coarse": ce(out.logits)}
        for k, lg in out.fine_logits.items():
            terms[f"ce/fine/{k}"] = ce(lg)
        terms["reconstruction"] = out.reconstruction_loss * utt_scale
        terms["kl"] = out.kl * utt_scale
        total = sum(v for k, v in terms.items() if k.startswith("ce/"))
        total = total + c.alpha * terms["reconstruction"] + c.beta * terms["kl"]
        if self.distillation is not None:  # step 6
            levels = [
                DistillationLevel({"coarse": out.logits}, {"coarse": out.coarse}),
                DistillationLevel(out.fine_logits, out.fine),
                DistillationLevel(out.unimodal_logits, out.unimodal),
            ]
            kd = self.distillation(levels, mask=mask)
            for k, v in kd.terms.items():
                terms[f"kd/{k}"] = v * utt_scale
            terms["kd"] = kd.total * utt_scale
            total = total + c.gamma * terms["kd"]
        return CMATHLoss(total=total, terms=terms, output=out)
