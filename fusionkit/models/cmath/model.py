"""CMATH (Zhu et al., arXiv 2411.10060) built from fusionkit blocks, one line per step of
the design (docs/cmath.md).

    x_m --[2. ModalityReconstructor]--> z_m --Linear--> [1. DialogueContextEncoder] --> h_m
    {h_m} --[3. CMATransformer per central c + GatedFusion]--> F_c          (fine)
    {F_c} --[4. VariationalFusion]--> z                                     (coarse)
    [5. heads] on z, on each F_c, on each h_m (unimodal)
    [6. HierarchicalDistillation] coarse -> fine -> unimodal
    [7. objective] CE(coarse) + sum CE(fine) + alpha L_rec + beta L_KL + gamma L_KD

The model's forward returns outputs only; :func:`objective` turns outputs and a batch into
the loss (its means' denominators given by the training loop, summed over processes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
    StreamCache,
    VariationalFusion,
)
from fusionkit.attention import Backend
from fusionkit.batch import IGNORE_INDEX
from fusionkit.errors import ConfigError
from fusionkit.losses import DistillationLevel, HierarchicalDistillation
from fusionkit.losses.masked import present
from fusionkit.typing import Bool, Int, check_features, typechecked


@dataclass
class CMATHConfig:
    """Every choice of the model; the ones cmath.md marks [ours] included. The defaults are
    fusionkit's recipe for data nobody tuned for (docs/training.md); ``configs/*.toml`` hold
    what differs for each dataset.

    Ablations: ``shortcut=False``; ``reconstruction=False``; ``symmetric=True``;
    ``centrals=["audio"]`` (any subset); ``fusion="concat"`` (plain, no variational);
    ``distillation=False``; ``granularity="single"`` (coarse head only).
    """

    hidden_dim: int = 64
    heads: int = 4
    ff_mult: int = 2
    dropout: float = 0.2
    # [ours] on the input features in training (the reconstruction still aims at the clean
    # ones), and a linear map of each modality's own input features added to the coarse
    # logits: what brings CMATH to the linear probe on data nobody tuned for (docs/cmath.md)
    input_dropout: float = 0.5
    shortcut: bool = True
    # on the attention weights (None: dropout); 0 keeps the CPU's fused attention in
    # training, whose memory grows linearly with the dialogue (docs/performance.md)
    attention_dropout: float | None = None
    context_depth: int = 1
    cma_depth: int = 1
    max_positions: int = 512  # the position table; longer training dialogues extend it
    # step 2: modality reconstruction
    reconstruction: bool = True
    reconstruction_kind: Literal["unet", "mlp"] = "unet"
    compressed_dim: int = 64
    reconstruction_hidden: int = 256  # first U-Net level's width (0: the input's)
    reconstruction_kernel: int = 1  # utterances each convolution sees; 3 blurred MELD emotions
    reconstruction_reduction: Literal["sum", "mean"] = "sum"  # ||x - x_hat||^2, or its mean
    # step 3: CMA-Transformer; None = every modality takes the central role in turn
    centrals: list[str] | None = None
    symmetric: bool = False
    aligned: bool = False  # also add each utterance's own auxiliary features in every CMA layer
    # step 4: "poe" (product of experts), "vconcat" (one Gaussian from the concatenation),
    # "concat" (plain concatenation, not variational: the ablation)
    fusion: Literal["poe", "vconcat", "concat"] = "poe"
    latent_dim: int = 0  # width of the coarse z (0: hidden_dim)
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
    # online use: every attention and convolution sees the current and earlier utterances only
    causal: bool = False
    # training for missing modalities: the chance of hiding each modality of an utterance,
    # and of a whole dialogue; > 0 also gives the fusions learned absence vectors
    modality_dropout: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ConfigError(
                f"modality_dropout: expected a value in [0, 1), got {self.modality_dropout}"
            )


@dataclass(frozen=True)
class DataSpec:
    """What the model takes from its data: modality widths, classes, speakers, longest dialogue."""

    input_dims: dict[str, int]
    label_names: list[str]
    num_speakers: int
    longest: int = 1

    @classmethod
    def of(cls, ds) -> DataSpec:
        """The spec of a :class:`~fusionkit.data.ConversationDataset`."""
        return cls(
            input_dims=ds.feature_dims,
            label_names=list(ds.label_names),
            num_speakers=ds.num_speakers,
            longest=max(len(d) for d in ds.dialogues.values()),
        )


@dataclass(frozen=True)
class CMATHLoss:
    """``total`` and every named term (unweighted)."""

    total: Tensor
    terms: dict[str, Tensor]


@dataclass(frozen=True)
class CMATHOutput:
    """Logits (b, t, classes) per granularity, the representations they come from, the
    auxiliary losses of one forward pass, and the presence masks it used."""

    logits: Tensor
    fine_logits: dict[str, Tensor]
    unimodal_logits: dict[str, Tensor]
    fine: dict[str, Tensor]
    unimodal: dict[str, Tensor]
    coarse: Tensor
    reconstruction_loss: Tensor
    kl: Tensor
    presence: dict[str, Tensor]
    # product-of-experts fusion only: each central branch's share of the posterior
    # precision, then the prior's (b, t, centrals + 1), columns named by share_names
    shares: Tensor | None = None
    share_names: tuple[str, ...] | None = None


class CMATH(nn.Module):
    """The CMATH model for any non-empty set of modalities (see the module docstring).

    ``spec`` gives what comes from the data; ``class_weights`` (classes,), if given, weight
    the cross-entropy terms and are saved with the model.
    """

    def __init__(self, config: CMATHConfig, spec: DataSpec, class_weights: Tensor | None = None):
        super().__init__()
        if not spec.input_dims:
            raise ValueError("spec.input_dims: at least one modality is needed")
        self.config, self.spec = config, spec
        c = config
        self.modalities = sorted(spec.input_dims)
        self.centrals = sorted(spec.input_dims) if c.centrals is None else list(c.centrals)
        unknown = sorted(set(self.centrals) - set(self.modalities))
        if unknown or not self.centrals:
            raise ConfigError(
                f"centrals: {unknown or 'none'} not among the modalities {self.modalities}"
            )
        dims, classes = spec.input_dims, len(spec.label_names)
        if class_weights is not None and class_weights.shape != (classes,):
            raise ValueError(
                f"class_weights: expected shape ({classes},), got {tuple(class_weights.shape)}"
            )
        self.register_buffer("class_weights", class_weights)
        self.absence = c.modality_dropout > 0  # learned absence vectors in the fusions
        d = c.hidden_dim
        self.input_dropout = nn.Dropout(c.input_dropout)
        hierarchical = c.granularity == "hierarchical"
        self.reconstructors = nn.ModuleDict(
            {
                m: ModalityReconstructor(
                    dims[m],
                    latent_dim=min(c.compressed_dim, dims[m]),
                    hidden_dim=min(c.reconstruction_hidden or dims[m], dims[m]),
                    kind=c.reconstruction_kind,
                    kernel_size=c.reconstruction_kernel,
                    causal=c.causal,
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
                for m, w in dims.items()
            }
        )
        self.context = nn.ModuleDict(
            {
                m: DialogueContextEncoder(
                    d,
                    depth=c.context_depth,
                    heads=c.heads,
                    num_speakers=spec.num_speakers,
                    max_len=max(c.max_positions, spec.longest),
                    dropout=c.dropout,
                    attention_dropout=c.attention_dropout,
                    ff_mult=c.ff_mult,
                    causal=c.causal,
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
                    attention_dropout=c.attention_dropout,
                    symmetric=c.symmetric,
                    aligned=c.aligned,
                    causal=c.causal,
                    backend=c.backend,
                )
                for central in self.centrals
            }
        )
        self.gate = nn.ModuleDict(
            {
                k: GatedFusion(dict.fromkeys(cma.output_names, d), d, absence=self.absence)
                for k, cma in self.cma.items()
            }
        )
        latent = c.latent_dim or d
        if c.fusion == "concat":
            self.fusion = ConcatFusion(
                dict.fromkeys(self.centrals, d), latent, absence=self.absence
            )
        else:
            mode = "poe" if c.fusion == "poe" else "concat"
            self.fusion = VariationalFusion(
                dict.fromkeys(self.centrals, d),
                latent,
                mode=mode,
                absence=self.absence and mode != "poe",
            )
        self.variational = c.fusion != "concat"
        self.head = nn.Linear(latent, classes)
        self.shortcut = nn.ModuleDict(
            {m: nn.Linear(w, classes, bias=False) for m, w in dims.items()} if c.shortcut else {}
        )
        self.fine_heads = nn.ModuleDict(
            {k: nn.Linear(d, classes) for k in self.centrals} if hierarchical else {}
        )
        distil = hierarchical and c.distillation
        self.unimodal_heads = nn.ModuleDict(
            {m: nn.Linear(d, classes) for m in self.modalities} if distil else {}
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
                f"modalities: {', '.join(f'{m} ({self.spec.input_dims[m]})' for m in self.modalities)}",
                f"reconstruction: {c.reconstruction_kind if c.reconstruction else 'off'}",
                f"centrals: {', '.join(self.centrals)} ({'symmetric' if c.symmetric else 'asymmetric'})",
                f"fusion: {c.fusion}; granularity: {c.granularity}; distillation: {'on' if self.distillation else 'off'}",
                f"parameters: {sum(p.numel() for p in self.parameters()):,}",
            ]
        )

    def forward(
        self, batch: DialogueBatch, *, presence: Mapping[str, Tensor] | None = None
    ) -> CMATHOutput:
        """The model on ``batch``; ``presence`` (modality -> (b, t)) replaces the batch's
        own (training under modality dropout hides modalities this way)."""
        return self.encode(
            batch.features,
            mask=batch.mask,
            speakers=batch.speakers,
            presence=batch.presence if presence is None else presence,
        )

    @typechecked
    def encode(
        self,
        features: Mapping[str, Tensor],
        *,
        mask: Bool[Tensor, "batch time"],
        speakers: Int[Tensor, "batch time"],
        presence: Mapping[str, Tensor] | None = None,
        cache: StreamCache | None = None,
    ) -> CMATHOutput:
        """Logits and auxiliary losses for features (modality -> (b, t, d_m)), mask and
        speakers (b, t), and ``presence`` (modality -> (b, t)) for modalities some utterance
        lacks. With a ``cache`` (causal models, online use) the inputs are the dialogue's
        next utterance, and the cache advances past it."""
        check_features("features", features, mask, expected=self.spec.input_dims)
        presence = dict(presence or {})
        if cache is not None and self.reconstructors and self.config.reconstruction_kernel > 1:
            raise ValueError("cache: streaming needs reconstruction_kernel = 1 (the default)")
        zero = torch.zeros((), device=mask.device)
        rec_loss, unimodal, shortcut = zero, {}, zero
        for m in self.modalities:  # steps 1 and 2
            x, p = features[m], presence.get(m)
            z = self.input_dropout(x)
            if m in self.shortcut:  # never read where the modality is absent
                kept = present(mask, p).unsqueeze(-1)
                shortcut = shortcut + self.shortcut[m](torch.where(kept, z, 0.0))
            if m in self.reconstructors:
                rec = self.reconstructors[m](z, mask=mask, presence=p, target=x)
                z, rec_loss = rec.latent, rec_loss + rec.loss
            unimodal[m] = self.context[m](
                self.project[m](z), mask=mask, speakers=speakers, presence=p, cache=cache
            )
        fine = {}
        for central, cma in self.cma.items():  # step 3
            branch = [central, *cma.auxiliary]
            streams = cma(
                {m: unimodal[m] for m in branch},
                mask=mask,
                presence={m: presence[m] for m in branch if m in presence} or None,
                cache=cache,
            )
            fine[central] = self.gate[central](
                streams, mask=mask, presence=self._stream_presence(cma, presence)
            )
        absent = {c: presence[c] for c in self.centrals if c in presence} or None
        variational_poe = self.variational and self.config.fusion == "poe"
        fused = self.fusion(
            fine, mask=mask, presence=absent if self.absence or variational_poe else None
        )
        coarse, kl = (fused.z, fused.kl) if self.variational else (fused, zero)  # step 4
        if cache is not None:
            cache.position += mask.shape[1]
        return CMATHOutput(  # step 5
            logits=self.head(coarse) + shortcut,
            fine_logits={k: h(fine[k]) for k, h in self.fine_heads.items()},
            unimodal_logits={m: h(unimodal[m]) for m, h in self.unimodal_heads.items()},
            fine=fine,
            unimodal=unimodal,
            coarse=coarse,
            reconstruction_loss=rec_loss,
            kl=kl,
            presence=presence,
            shares=fused.shares if self.variational else None,
            share_names=fused.share_names if self.variational else None,
        )

    def _stream_presence(self, cma: CMATransformer, presence: Mapping[str, Tensor]):
        """Where each stream of a branch carries information, for gates with absence
        vectors: ``c`` where c is present, ``c<-a`` where c or a is (None: everywhere)."""
        if not self.absence or not presence:
            return None
        out = {}
        for name in cma.output_names:
            parts = [presence[m] for m in name.split("<-") if m in presence]
            if len(parts) == len(name.split("<-")):  # absent only where every part is
                out[name] = parts[0] if len(parts) == 1 else parts[0] | parts[1]
        return out or None


def loss_counts(batch: DialogueBatch, class_weights: Tensor | None) -> Tensor:
    """(sum of the class weights of the labelled utterances, number of real utterances) of
    ``batch``: summed over a step's processes, the denominators of :func:`objective`'s means."""
    valid = batch.labels != IGNORE_INDEX
    if class_weights is None:
        weight = valid.float()
    else:
        weight = class_weights[batch.labels.clamp_min(0)] * valid
    return torch.stack([weight.sum(), batch.mask.sum().to(weight.dtype)])


def objective(
    model: CMATH, out: CMATHOutput, batch: DialogueBatch, normalizer: Tensor
) -> CMATHLoss:
    """Step 7 with every term: this batch's share of the step's means.

    ``normalizer`` is :func:`loss_counts` summed over the step's processes. Cross-entropy
    is class-weighted as PyTorch's ``weight=``, divided by the step's label weight; the
    utterance-averaged terms are scaled by this batch's share of the step's utterances.
    Summed over processes, each term is the single-process mean.
    """
    c, labels, mask = model.config, batch.labels, batch.mask
    ce_norm, utt_scale = normalizer[0].clamp_min(1e-12), mask.sum() / normalizer[1].clamp_min(1)

    def ce(logits: Tensor) -> Tensor:
        nll = F.cross_entropy(
            logits.flatten(0, 1).float(),
            labels.flatten(),
            weight=model.class_weights,
            ignore_index=IGNORE_INDEX,
            reduction="none",
        )
        return nll.sum() / ce_norm

    terms = {"ce/coarse": ce(out.logits)}
    for k, lg in out.fine_logits.items():
        terms[f"ce/fine/{k}"] = ce(lg)
    terms["reconstruction"] = out.reconstruction_loss * utt_scale
    terms["kl"] = out.kl * utt_scale
    total = sum(v for k, v in terms.items() if k.startswith("ce/"))
    total = total + c.alpha * terms["reconstruction"] + c.beta * terms["kl"]
    if model.distillation is not None:  # step 6
        levels = [
            DistillationLevel({"coarse": out.logits}, {"coarse": out.coarse}),
            DistillationLevel(out.fine_logits, out.fine),
            DistillationLevel(out.unimodal_logits, out.unimodal, masks=out.presence or None),
        ]
        kd = model.distillation(levels, mask=mask)
        for k, v in kd.terms.items():
            terms[f"kd/{k}"] = v * utt_scale
        terms["kd"] = kd.total * utt_scale
        total = total + c.gamma * terms["kd"]
    return CMATHLoss(total=total, terms=terms)
