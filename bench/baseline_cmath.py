"""CMATH written as the field's public code writes a model (SDT, MulT), for comparison.

The same function as ``fusionkit.models.cmath.CMATH`` in its default form (U-Net
reconstruction, asymmetric CMA-Transformer with every modality central in turn, gated
streams, product-of-experts variational fusion, hierarchical distillation), built the
straightforward way: ``torch.nn.TransformerEncoderLayer`` for each modality's context,
``torch.nn.MultiheadAttention`` for the cross-modal layers (a boolean
``key_padding_mask``, which PyTorch turns into an additive ``-inf`` mask), Python loops
over modalities and modality pairs, padding masks multiplied in, and the losses from
``torch.nn.functional``. Nothing is deliberately slow: it is how a careful reader of the
paper would write it without fusionkit.

:meth:`BaselineCMATH.load_fusionkit` copies a fusionkit CMATH's weights into it, so that the
two compute the same outputs (``tests/bench/test_baseline.py`` checks logits and loss).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusionkit.models.cmath import CMATH, CMATHConfig, DataSpec


def unet_widths(in_dim: int, hidden: int, latent: int) -> list[int]:
    """Channel widths of the encoder: ``in_dim``, then halving from ``hidden`` to ``latent``."""
    widths = [in_dim, hidden]
    while widths[-1] // 2 > latent:
        widths.append(widths[-1] // 2)
    widths.append(latent)
    return widths[1:] if widths[1] == in_dim else widths


class UNet(nn.Module):
    """1-D convolutional U-Net over the utterance axis; returns (latent, reconstruction)."""

    def __init__(self, in_dim: int, hidden: int, latent: int, kernel: int):
        super().__init__()
        widths = unet_widths(in_dim, hidden, latent)
        self.pad = kernel // 2
        self.down = nn.ModuleList(nn.Conv1d(i, o, kernel) for i, o in itertools.pairwise(widths))
        ups = list(zip(reversed(widths[1:]), reversed(widths[:-1])))
        self.up = nn.ModuleList(
            nn.Conv1d(i + (o if j < len(ups) - 1 else 0), o, kernel) for j, (i, o) in enumerate(ups)
        )

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        m = mask.unsqueeze(1).float()  # (b, 1, t)
        h = x.transpose(1, 2)
        skips = []
        for i, conv in enumerate(self.down):
            skips.append(h)
            h = conv(F.pad(h * m, (self.pad, self.pad)))
            if i < len(self.down) - 1:
                h = F.gelu(h)
        latent = h * m
        for i, conv in enumerate(self.up):
            if i < len(self.up) - 1:
                h = torch.cat([h, skips[-1 - i]], dim=1)
            h = conv(F.pad(h * m, (self.pad, self.pad)))
            if i < len(self.up) - 1:
                h = F.gelu(h)
        return latent.transpose(1, 2), (h * m).transpose(1, 2)


class CrossModalLayer(nn.Module):
    """Pre-norm cross-attention layer: ``x + MHA(LN(x), LN(ctx))``, then ``x + FFN(LN(x))``."""

    def __init__(self, d: int, heads: int, ff_mult: int, dropout: float, attention_dropout: float):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=attention_dropout, batch_first=True)
        self.ff = nn.Sequential(
            nn.Linear(d, ff_mult * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_mult * d, d)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, ctx: Tensor, padding: Tensor) -> Tensor:
        kv = self.norm_kv(ctx)
        attended, _ = self.attn(
            self.norm_q(x), kv, kv, key_padding_mask=padding, need_weights=False
        )
        x = x + self.drop(attended)
        return x + self.drop(self.ff(self.norm_ff(x)))


class BaselineCMATH(nn.Module):
    """CMATH the straightforward way; ``forward(features, mask, speakers)`` returns a dict
    of logits and auxiliary losses, :meth:`loss` the objective (as fusionkit's ``objective``)."""

    def __init__(self, config: CMATHConfig, spec: DataSpec, class_weights: Tensor | None = None):
        super().__init__()
        c = config
        assumed = dict(
            reconstruction=True,
            reconstruction_kind="unet",
            reconstruction_reduction="sum",
            centrals=None,
            symmetric=False,
            aligned=False,
            fusion="poe",
            latent_dim=0,
            granularity="hierarchical",
            distillation=True,
            feature_distillation=0.0,
        )
        differ = {k: getattr(c, k) for k, v in assumed.items() if getattr(c, k) != v}
        if differ:
            raise ValueError(f"the baseline builds the default CMATH only; got {differ}")
        self.config = c
        self.modalities = sorted(spec.input_dims)
        d, dims, classes = c.hidden_dim, spec.input_dims, len(spec.label_names)
        self.register_buffer("class_weights", class_weights)
        latent = {m: min(c.compressed_dim, dims[m]) for m in self.modalities}
        self.reconstructors = nn.ModuleDict(
            {
                m: UNet(
                    dims[m],
                    min(c.reconstruction_hidden or dims[m], dims[m]),
                    latent[m],
                    c.reconstruction_kernel,
                )
                for m in self.modalities
            }
        )
        self.project = nn.ModuleDict({m: nn.Linear(latent[m], d) for m in self.modalities})
        self.speaker = nn.ModuleDict(
            {m: nn.Embedding(spec.num_speakers, d) for m in self.modalities}
        )
        length = max(c.max_positions, spec.longest)
        self.position = nn.ModuleDict({m: nn.Embedding(length, d) for m in self.modalities})
        attention_p = c.dropout if c.attention_dropout is None else c.attention_dropout
        self.context = nn.ModuleDict(
            {
                m: nn.ModuleList(
                    nn.TransformerEncoderLayer(
                        d,
                        c.heads,
                        dim_feedforward=c.ff_mult * d,
                        dropout=c.dropout,
                        activation="gelu",
                        batch_first=True,
                        norm_first=True,
                    )
                    for _ in range(c.context_depth)
                )
                for m in self.modalities
            }
        )
        for layers in self.context.values():
            for layer in layers:  # nn.TransformerEncoderLayer has one dropout for all
                layer.self_attn.dropout = attention_p
        self.context_norm = nn.ModuleDict({m: nn.LayerNorm(d) for m in self.modalities})
        self.cross = nn.ModuleDict()  # "c<-a" -> the layers of that stream
        for central in self.modalities:
            for aux in self.modalities:
                if aux != central:
                    self.cross[f"{central}<-{aux}"] = nn.ModuleList(
                        CrossModalLayer(d, c.heads, c.ff_mult, c.dropout, attention_p)
                        for _ in range(c.cma_depth)
                    )
        self.cross_norm = nn.ModuleDict({m: nn.LayerNorm(d) for m in self.modalities})
        k = len(self.modalities)  # streams of a branch: the central one and one per auxiliary
        self.gate_proj = nn.ModuleDict(
            {m: nn.ModuleList(nn.Linear(d, d) for _ in range(k)) for m in self.modalities}
        )
        self.gate = nn.ModuleDict({m: nn.Linear(k * d, k) for m in self.modalities})
        self.mu = nn.ModuleDict({m: nn.Linear(d, d) for m in self.modalities})
        self.logvar = nn.ModuleDict({m: nn.Linear(d, d) for m in self.modalities})
        self.head = nn.Linear(d, classes)
        self.fine_heads = nn.ModuleDict({m: nn.Linear(d, classes) for m in self.modalities})
        self.unimodal_heads = nn.ModuleDict({m: nn.Linear(d, classes) for m in self.modalities})

    def forward(self, features: dict[str, Tensor], mask: Tensor, speakers: Tensor) -> dict:
        m3 = mask.unsqueeze(-1).float()
        padding = ~mask  # nn.MultiheadAttention's convention: True at padding
        positions = torch.arange(mask.shape[1], device=mask.device)
        rec_loss, unimodal = 0.0, {}
        for m in self.modalities:
            latent, recon = self.reconstructors[m](features[m], mask)
            err = ((recon - features[m]) ** 2 * m3).sum(-1)
            rec_loss = rec_loss + err.sum() / mask.sum()
            h = (
                self.project[m](latent)
                + self.speaker[m](speakers * mask)
                + self.position[m](positions)
            )
            for layer in self.context[m]:
                h = layer(h, src_key_padding_mask=padding) * m3
            unimodal[m] = self.context_norm[m](h) * m3
        fine = {}
        for central in self.modalities:
            streams = {central: unimodal[central]}
            for aux in self.modalities:
                if aux == central:
                    continue
                u = unimodal[central]
                for layer in self.cross[f"{central}<-{aux}"]:
                    u = layer(u, unimodal[aux], padding) * m3
                streams[f"{central}<-{aux}"] = self.cross_norm[central](u) * m3
            hs = [
                torch.tanh(p(streams[n])) for p, n in zip(self.gate_proj[central], sorted(streams))
            ]
            weights = torch.softmax(self.gate[central](torch.cat(hs, dim=-1)), dim=-1)
            fine[central] = (weights.unsqueeze(-1) * torch.stack(hs, dim=2)).sum(2) * m3
        mus = torch.stack([self.mu[k](fine[k]) for k in self.modalities])
        logvars = torch.stack([self.logvar[k](fine[k]) for k in self.modalities]).clamp(-10, 10)
        precisions = torch.exp(-logvars)
        precision = 1.0 + precisions.sum(0)  # the standard-normal prior is one more expert
        mu, logvar = (precisions * mus).sum(0) / precision, -torch.log(precision)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        kl = (0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1) * mask).sum() / mask.sum()
        z = z * m3
        return {
            "logits": self.head(z),
            "fine_logits": {k: self.fine_heads[k](fine[k]) for k in self.modalities},
            "unimodal_logits": {k: self.unimodal_heads[k](unimodal[k]) for k in self.modalities},
            "reconstruction_loss": rec_loss,
            "kl": kl,
        }

    def loss(self, out: dict, mask: Tensor, labels: Tensor, normalizer: Tensor) -> Tensor:
        """The objective: CE (coarse and fine) + alpha L_rec + beta L_KL + gamma L_KD."""
        c = self.config
        ce = nn.CrossEntropyLoss(weight=self.class_weights, reduction="sum")
        ce_norm, share = normalizer[0], mask.sum() / normalizer[1]
        classes = out["logits"].shape[-1]
        total = ce(out["logits"].reshape(-1, classes), labels.reshape(-1)) / ce_norm
        for lg in out["fine_logits"].values():
            total = total + ce(lg.reshape(-1, classes), labels.reshape(-1)) / ce_norm

        def kd(student: Tensor, teacher: Tensor) -> Tensor:
            tau = c.temperature
            kl = F.kl_div(
                F.log_softmax(student / tau, -1),
                F.log_softmax(teacher.detach() / tau, -1),
                reduction="none",
                log_target=True,
            ).sum(-1)
            return tau**2 * (kl * mask).sum() / mask.sum()

        fine, unimodal = out["fine_logits"].values(), out["unimodal_logits"].values()
        distil = sum(kd(s, out["logits"]) for s in fine)
        fine_mean = torch.stack(list(fine)).mean(0)
        distil = distil + sum(kd(s, fine_mean) for s in unimodal)
        total = total + c.alpha * out["reconstruction_loss"] * share
        total = total + c.beta * out["kl"] * share
        return total + c.gamma * distil * share

    @torch.no_grad()
    def load_fusionkit(self, model: CMATH) -> BaselineCMATH:
        """Copy the weights of a fusionkit CMATH of the same configuration; returns self."""
        src, own = model.state_dict(), {}
        for m in self.modalities:
            for part in ("down", "up"):
                for i in range(len(getattr(self.reconstructors[m], part))):
                    for p in ("weight", "bias"):
                        own[f"reconstructors.{m}.{part}.{i}.{p}"] = src[
                            f"reconstructors.{m}.{part}.{i}.{p}"
                        ]
            ctx = f"context.{m}"
            for p in ("weight", "bias"):
                own[f"project.{m}.{p}"] = src[f"project.{m}.{p}"]
                own[f"context_norm.{m}.{p}"] = src[f"{ctx}.norm.{p}"]
            own[f"speaker.{m}.weight"] = src[f"{ctx}.speaker.weight"]
            own[f"position.{m}.weight"] = src[f"{ctx}.position.weight"]
            for i in range(len(self.context[m])):
                fk, bl = f"{ctx}.layers.{i}", f"context.{m}.{i}"
                names = {"norm1": "norm_q", "norm2": "norm_ff", "linear1": "ff.net.0"}
                names["linear2"] = "ff.net.3"
                for p in ("weight", "bias"):
                    for ours, theirs in names.items():
                        own[f"{bl}.{ours}.{p}"] = src[f"{fk}.{theirs}.{p}"]
                own.update(_attention(src, f"{fk}.attn", f"{bl}.self_attn"))
        for name, layers in self.cross.items():
            central = name.split("<-")[0]
            for i in range(len(layers)):
                fk, bl = f"cma.{central}.streams.{name}.{i}", f"cross.{name}.{i}"
                names = {"norm_q": "norm_q", "norm_kv": "norm_kv", "norm_ff": "norm_ff"}
                names.update({"ff.0": "ff.net.0", "ff.3": "ff.net.3"})
                for p in ("weight", "bias"):
                    for ours, theirs in names.items():
                        own[f"{bl}.{ours}.{p}"] = src[f"{fk}.{theirs}.{p}"]
                own.update(_attention(src, f"{fk}.attn", f"{bl}.attn"))
        order = {k: i for i, k in enumerate(self.modalities)}  # fusion inputs, sorted by name
        for m in self.modalities:
            for p in ("weight", "bias"):
                own[f"cross_norm.{m}.{p}"] = src[f"cma.{m}.norm.{p}"]
                own[f"gate.{m}.{p}"] = src[f"gate.{m}.gate.{p}"]
                for j in range(len(self.gate_proj[m])):
                    own[f"gate_proj.{m}.{j}.{p}"] = src[f"gate.{m}.proj.{j}.{p}"]
                own[f"mu.{m}.{p}"] = src[f"fusion.mu.{order[m]}.{p}"]
                own[f"logvar.{m}.{p}"] = src[f"fusion.logvar.{order[m]}.{p}"]
                own[f"fine_heads.{m}.{p}"] = src[f"fine_heads.{m}.{p}"]
                own[f"unimodal_heads.{m}.{p}"] = src[f"unimodal_heads.{m}.{p}"]
        for p in ("weight", "bias"):
            own[f"head.{p}"] = src[f"head.{p}"]
        if "class_weights" in src and src["class_weights"] is not None:
            own["class_weights"] = src["class_weights"]
        self.load_state_dict(own, strict=True)
        return self


def _attention(src: dict, fk: str, bl: str) -> dict:
    """fusionkit's to_q and to_kv projections as nn.MultiheadAttention's packed in_proj."""
    return {
        f"{bl}.in_proj_weight": torch.cat([src[f"{fk}.to_q.weight"], src[f"{fk}.to_kv.weight"]]),
        f"{bl}.in_proj_bias": torch.cat([src[f"{fk}.to_q.bias"], src[f"{fk}.to_kv.bias"]]),
        f"{bl}.out_proj.weight": src[f"{fk}.to_out.weight"],
        f"{bl}.out_proj.bias": src[f"{fk}.to_out.bias"],
    }
