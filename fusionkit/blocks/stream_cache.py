"""What causal blocks keep between calls when a dialogue arrives one utterance at a time."""

from __future__ import annotations

from torch import Tensor, nn


def _grown(old: Tensor | None, like: Tensor, dim: int, size: int, length: int) -> Tensor:
    """A zero tensor shaped as ``like`` but ``size`` long along ``dim``, starting with the
    first ``length`` entries of ``old``."""
    shape = list(like.shape)
    shape[dim] = size
    out = like.new_zeros(shape)
    if old is not None:
        out.narrow(dim, 0, length).copy_(old.narrow(dim, 0, length))
    return out


class KVCache:
    """The keys and values (b, heads, n, d) one attention layer has seen, and their key mask
    (b, n); storage grows by doubling, so appending an utterance costs O(1) amortised."""

    def __init__(self):
        self.length = 0
        self.keys: Tensor | None = None
        self.values: Tensor | None = None
        self.key_mask: Tensor | None = None

    def extend(self, k: Tensor, v: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Append k, v (b, h, t, d) and key_mask (b, t); return everything seen so far."""
        new = self.length + k.shape[2]
        if self.keys is None or new > self.keys.shape[2]:
            size = max(16, 2 * new)
            self.keys = _grown(self.keys, k, 2, size, self.length)
            self.values = _grown(self.values, v, 2, size, self.length)
            self.key_mask = _grown(self.key_mask, key_mask, 1, size, self.length)
        self.keys[:, :, self.length : new] = k
        self.values[:, :, self.length : new] = v
        self.key_mask[:, self.length : new] = key_mask
        self.length = new
        return self.keys[:, :, :new], self.values[:, :, :new], self.key_mask[:, :new]


class StreamCache:
    """Threaded through a causal model's blocks when it is fed a dialogue utterance by
    utterance: a :class:`KVCache` per attention layer, and ``position``, the number of
    utterances seen before the current call (the model advances it after each call)."""

    def __init__(self):
        self.position = 0
        self._layers: dict[nn.Module, KVCache] = {}

    def layer(self, module: nn.Module) -> KVCache:
        """The cache of attention layer ``module`` (created on first use)."""
        return self._layers.setdefault(module, KVCache())
