"""Synthetic conversations shaped like IEMOCAP, where good multimodal fusion pays off.

The generative story (seeded, so the same arguments give the same data):

- Each dialogue has two speakers who take turns (the same speaker again with probability
  ``1 - turn_switch``) and a length drawn uniformly in ``[min_len, max_len]``.
- Emotions persist: a dialogue draws a mood (a few likely classes) from the IEMOCAP class
  prior; each speaker keeps their previous emotion with probability ``persistence``, else
  draws a new one from the mood. Context therefore helps to read a noisy utterance.
- Each modality sees only part of the emotion (complementary information): ``text`` sees
  the class up to two confusions (happy = excited, angry = frustrated), with little noise;
  ``audio`` sees arousal (low: happy, sad, frustrated; mid: neutral; high: excited, angry),
  with more noise; ``visual`` sees the class itself, with the most noise. Text alone
  cannot separate happy from excited, audio can: fusion beats the best single modality.
- An utterance's features are ``W_m (signal_m * code_m[class] + noise_m * eps + speaker
  style)``, with a random projection ``W_m`` from a small latent space to ``dims[m]``.

Two switches, both off by default (the data are then exactly as without them), model what
real recordings do (docs/missing.md):

- ``noise_spread`` (per-dialogue modality quality): each dialogue draws, for each modality,
  a noise multiplier log-uniform in ``[1 / noise_spread, noise_spread]`` (recorded in
  ``Dialogue.extras["noise"]``), so which modality is reliable varies from dialogue to
  dialogue: the premise of CMATH's precision-weighted fusion.
- ``missing_rate`` (missing modalities): modality -> probability that an utterance lacks it,
  independently per utterance (so an utterance may lack every modality). Absences are
  recorded in ``Dialogue.presence``, and the features of an absent utterance are zeros.

Each switch draws from a random stream of its own: turning one on changes neither the
labels, speakers and splits nor the other's draws, and turning on ``missing_rate`` leaves
the features of present utterances as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fusionkit.batch import Dialogue
from fusionkit.data.dataset import ConversationDataset
from fusionkit.data.pickles import IEMOCAP_LABELS
from fusionkit.errors import ConfigError

IEMOCAP_CLASS_COUNTS = (648, 1084, 1708, 1103, 1041, 1849)  # hap sad neu ang exc fru, all sessions
IEMOCAP_DIMS = {"text": 1024, "audio": 1582, "visual": 342}  # layout C (SDT)

# Which code of each modality each class shows (classes in IEMOCAP order).
_VIEWS = {
    "text": (0, 1, 2, 3, 0, 3),  # hap=exc, ang=fru
    "audio": (0, 0, 1, 2, 2, 0),  # arousal: low, mid, high
    "visual": (0, 1, 2, 3, 4, 5),
}
# (signal, noise per latent dimension): per utterance, a linear probe reads text best,
# audio and visual worse, and every pair better than either alone.
_QUALITY = {"text": (1.0, 3.5), "audio": (1.0, 4.0), "visual": (1.0, 6.0)}


@dataclass(frozen=True)
class SyntheticConversations:
    """Parameters of the generator; :meth:`load` returns the dataset.

    Args:
        num_dialogues: dialogues in all splits (IEMOCAP has 151).
        min_len, max_len: range of dialogue lengths in utterances.
        dims: modality -> feature width (IEMOCAP's SDT widths by default). Any subset of
            ``text``, ``audio``, ``visual``.
        test_fraction, dev_fraction: shares of dialogues in test, and of the rest in dev.
        persistence: probability that a speaker keeps their previous emotion.
        turn_switch: probability that the next utterance is by the other speaker.
        latent_dim: width of the latent space the features are projected from.
        noise_scale: multiplies every modality's noise (harder data above 1).
        noise_spread: per dialogue and modality, the noise is also multiplied by a number
            drawn log-uniformly in ``[1 / noise_spread, noise_spread]`` (1: off).
        missing_rate: modality -> probability that an utterance lacks it (none: off).
        seed: the seed of everything.
    """

    num_dialogues: int = 151
    min_len: int = 10
    max_len: int = 110
    dims: Mapping[str, int] = field(default_factory=lambda: dict(IEMOCAP_DIMS))
    test_fraction: float = 0.2
    dev_fraction: float = 0.1
    persistence: float = 0.8
    turn_switch: float = 0.8
    latent_dim: int = 32
    noise_scale: float = 1.0
    noise_spread: float = 1.0
    missing_rate: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0

    def _labels(self, rng: np.random.Generator, n: int, prior: np.ndarray):
        mood = rng.dirichlet(2.0 * prior * len(prior))
        speakers = np.zeros(n, dtype=np.int64)
        labels = np.zeros(n, dtype=np.int64)
        current = {0: rng.choice(len(prior), p=mood), 1: rng.choice(len(prior), p=mood)}
        for i in range(n):
            if i > 0:
                switch = rng.random() < self.turn_switch
                speakers[i] = 1 - speakers[i - 1] if switch else speakers[i - 1]
            s = int(speakers[i])
            if i > 0 and rng.random() > self.persistence:
                current[s] = rng.choice(len(prior), p=mood)
            labels[i] = current[s]
        return speakers, labels

    def load(self) -> ConversationDataset:
        unknown = sorted(set(self.dims) - set(_VIEWS))
        if unknown or not self.dims:
            raise ConfigError(
                f"dims: modalities must be a non-empty subset of {sorted(_VIEWS)}, got {sorted(self.dims)}"
            )
        if not 1 <= self.min_len <= self.max_len:
            raise ConfigError(
                f"min_len, max_len: need 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}"
            )
        unknown = sorted(set(self.missing_rate) - set(self.dims))
        if unknown or not all(0.0 <= r <= 1.0 for r in self.missing_rate.values()):
            raise ConfigError(
                f"missing_rate: expected modality -> probability in [0, 1] for modalities of dims, got {dict(self.missing_rate)}"
            )
        if not self.noise_spread >= 1.0:
            raise ConfigError(f"noise_spread: expected >= 1 (1: off), got {self.noise_spread}")
        rng = np.random.default_rng(self.seed)
        quality_rng = np.random.default_rng([self.seed, 1])  # streams of their own (see above)
        missing_rng = np.random.default_rng([self.seed, 2])
        missing = {m: r for m, r in sorted(self.missing_rate.items()) if r > 0}
        prior = np.asarray(IEMOCAP_CLASS_COUNTS, dtype=np.float64)
        prior /= prior.sum()
        k = self.latent_dim
        modalities = sorted(self.dims)
        codes = {m: rng.normal(size=(max(_VIEWS[m]) + 1, k)) for m in modalities}
        proj = {m: rng.normal(size=(k, self.dims[m])) / np.sqrt(k) for m in modalities}
        dialogues = {}
        for d in range(self.num_dialogues):
            n = int(rng.integers(self.min_len, self.max_len + 1))
            speakers, labels = self._labels(rng, n, prior)
            extras = {}
            if self.noise_spread > 1.0:
                log_spread = np.log(self.noise_spread)
                draws = quality_rng.uniform(-log_spread, log_spread, size=len(modalities))
                extras["noise"] = dict(zip(modalities, np.exp(draws).tolist()))
            feats = {}
            for m in modalities:
                signal, noise = _QUALITY[m]
                noise *= extras.get("noise", {}).get(m, 1.0)
                style = rng.normal(scale=0.3, size=(2, k))
                latent = signal * codes[m][np.asarray(_VIEWS[m])[labels]]
                latent += self.noise_scale * noise * rng.normal(size=(n, k)) + style[speakers]
                feats[m] = (latent @ proj[m]).astype(np.float32)
            presence = {m: missing_rng.random(n) >= r for m, r in missing.items()}
            for m, p in presence.items():
                feats[m][~p] = 0.0
            did = f"synthetic_{d:04d}"
            dialogues[did] = Dialogue(
                id=did,
                features=feats,
                speakers=speakers,
                labels=labels,
                extras=extras,
                presence=presence,
            )
        ids = list(dialogues)
        order = rng.permutation(len(ids))
        n_test = max(1, round(self.test_fraction * len(ids)))
        n_dev = max(1, round(self.dev_fraction * (len(ids) - n_test)))
        test = sorted(ids[i] for i in order[:n_test])
        dev = sorted(ids[i] for i in order[n_test : n_test + n_dev])
        train = sorted(ids[i] for i in order[n_test + n_dev :])
        on = {"noise_spread": self.noise_spread} if self.noise_spread > 1.0 else {}
        on |= {"missing_rate": missing} if missing else {}
        switches = "".join(f", {k} {v}" for k, v in on.items())
        return ConversationDataset(
            name="synthetic",
            dialogues=dialogues,
            splits={"train": train, "dev": dev, "test": test},
            label_names=list(IEMOCAP_LABELS),
            num_speakers=2,
            source=f"SyntheticConversations(seed={self.seed}, num_dialogues={self.num_dialogues}, lengths {self.min_len}-{self.max_len}{switches})",
            info={"feature_dims": dict(self.dims), "modalities": modalities, **on},
        )
