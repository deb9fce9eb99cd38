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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fusionkit.batch import Dialogue
from fusionkit.data.dataset import ConversationDataset
from fusionkit.data.pickles import IEMOCAP_LABELS

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
    """Parameters of the generator; :meth:`build` returns the dataset.

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

    def build(self) -> ConversationDataset:
        unknown = sorted(set(self.dims) - set(_VIEWS))
        if unknown or not self.dims:
            raise ValueError(
                f"dims: modalities must be a non-empty subset of {sorted(_VIEWS)}, got {sorted(self.dims)}"
            )
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(
                f"min_len, max_len: need 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}"
            )
        rng = np.random.default_rng(self.seed)
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
            feats = {}
            for m in modalities:
                signal, noise = _QUALITY[m]
                style = rng.normal(scale=0.3, size=(2, k))
                latent = signal * codes[m][np.asarray(_VIEWS[m])[labels]]
                latent += self.noise_scale * noise * rng.normal(size=(n, k)) + style[speakers]
                feats[m] = (latent @ proj[m]).astype(np.float32)
            did = f"synthetic_{d:04d}"
            dialogues[did] = Dialogue(id=did, features=feats, speakers=speakers, labels=labels)
        ids = list(dialogues)
        order = rng.permutation(len(ids))
        n_test = max(1, round(self.test_fraction * len(ids)))
        n_dev = max(1, round(self.dev_fraction * (len(ids) - n_test)))
        test = sorted(ids[i] for i in order[:n_test])
        dev = sorted(ids[i] for i in order[n_test : n_test + n_dev])
        train = sorted(ids[i] for i in order[n_test + n_dev :])
        return ConversationDataset(
            name="synthetic",
            dialogues=dialogues,
            splits={"train": train, "dev": dev, "test": test},
            label_names=list(IEMOCAP_LABELS),
            num_speakers=2,
            source=f"SyntheticConversations(seed={self.seed}, num_dialogues={self.num_dialogues}, lengths {self.min_len}-{self.max_len})",
            info={"feature_dims": dict(self.dims), "modalities": modalities},
        )
