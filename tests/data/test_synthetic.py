"""The synthetic generator's switches for missing modalities and per-dialogue modality
quality (issue 11); its default data are checked in test_dataset.py."""

import hashlib

import numpy as np
import pytest

from fusionkit.data import SyntheticConversations

SMALL = {"text": 6, "audio": 5, "visual": 4}
ALL = {"text": 32, "audio": 32, "visual": 32}


def _fingerprint(ds):
    """sha256 of ids, labels, speakers and splits; per-modality feature sums; one row each."""
    h = hashlib.sha256()
    for k in sorted(ds.dialogues):
        d = ds.dialogues[k]
        h.update(k.encode())
        h.update(np.asarray(d.labels, np.int64).tobytes())
        h.update(np.asarray(d.speakers, np.int64).tobytes())
    for s in sorted(ds.splits):
        h.update(s.encode())
        h.update(",".join(ds.splits[s]).encode())
    sums = {
        m: np.concatenate([d.features[m] for d in ds.dialogues.values()]).astype(np.float64).sum()
        for m in ds.modalities
    }
    rows = {m: ds.dialogues["synthetic_0003"].features[m][1] for m in ds.modalities}
    return h.hexdigest(), sums, rows


def test_default_data_are_unchanged():
    """With both switches off the data are those of fusionkit 0.2 (recorded from its code)."""
    ds = SyntheticConversations(num_dialogues=12, min_len=3, max_len=9, dims=SMALL, seed=7).load()
    digest, sums, rows = _fingerprint(ds)
    assert digest == "8905dac9e0137054aa633b41a044c8fbd8e317a6f705a740ef3facab949e93ac"
    expected_sums = {
        "audio": 59.67482081661001,
        "text": -111.37218598462641,
        "visual": -23.763332698028535,
    }
    for m, total in expected_sums.items():
        assert sums[m] == pytest.approx(total, rel=1e-6)
    np.testing.assert_allclose(rows["visual"], [4.543087, 4.850244, 0.934656, 2.243013], rtol=1e-5)
    np.testing.assert_allclose(
        rows["audio"], [0.113963, 9.138291, 4.499959, 6.886913, -0.691929], rtol=1e-5
    )
    assert all(not d.presence and not d.extras for d in ds.dialogues.values())
    assert ds.source == "SyntheticConversations(seed=7, num_dialogues=12, lengths 3-9)"
    assert set(ds.info) == {"feature_dims", "modalities"}


def test_missing_rate_drops_utterances_at_the_requested_rate():
    rates = {"audio": 0.3, "visual": 0.1}
    base = SyntheticConversations(num_dialogues=60, dims=SMALL, seed=3)
    plain = base.load()
    ds = SyntheticConversations(num_dialogues=60, dims=SMALL, missing_rate=rates, seed=3).load()
    again = SyntheticConversations(num_dialogues=60, dims=SMALL, missing_rate=rates, seed=3).load()
    n = sum(len(d) for d in ds.dialogues.values())
    for m in SMALL:
        present = np.concatenate([d.present(m) for d in ds.dialogues.values()])
        # within 4 standard deviations of the requested rate (about 3,800 utterances)
        rate = rates.get(m, 0.0)
        assert abs((1 - present.mean()) - rate) <= 4 * np.sqrt(rate * (1 - rate) / n) + 1e-12, m
    assert all("text" not in d.presence for d in ds.dialogues.values())
    for k, d in ds.dialogues.items():
        np.testing.assert_array_equal(d.presence["audio"], again.dialogues[k].presence["audio"])
        assert np.array_equal(d.labels, plain.dialogues[k].labels)
        for m, x in d.features.items():
            p = d.present(m)
            assert np.all(x[~p] == 0)  # absent: zeros
            np.testing.assert_array_equal(x[p], plain.dialogues[k].features[m][p])
    assert ds.splits == plain.splits
    assert ds.info["missing_rate"] == rates and "missing_rate" in ds.source


@pytest.mark.slow  # fits logistic regressions on thousands of utterances
def test_noise_spread_varies_which_modality_a_probe_reads_well():
    """Per dialogue, a modality drawn less noisy is read better by the same per-utterance
    linear probe, and which modality is the least noisy changes from dialogue to dialogue."""
    from sklearn.linear_model import LogisticRegression

    ds = SyntheticConversations(num_dialogues=80, dims=ALL, noise_spread=4.0, seed=1).load()
    plain = SyntheticConversations(num_dialogues=80, dims=ALL, seed=1).load()
    noise = {k: d.extras["noise"] for k, d in ds.dialogues.items()}
    assert all(0.25 <= q <= 4.0 for n in noise.values() for q in n.values())
    assert all(np.array_equal(d.labels, plain.dialogues[k].labels) for k, d in ds.dialogues.items())
    held_out = ds.split("test") + ds.split("dev")
    for m in ALL:
        probe = LogisticRegression(max_iter=300).fit(*ds.utterances("train", [m]))
        right = {True: [], False: []}
        for d in held_out:
            right[d.extras["noise"][m] < 1].append(probe.predict(d.features[m]) == d.labels)
        quiet, loud = (np.concatenate(right[k]).mean() for k in (True, False))
        assert quiet > loud + 0.1, (m, quiet, loud)
    base = {"text": 3.5, "audio": 4.0, "visual": 6.0}  # the generator's noise per modality
    least = {min(ALL, key=lambda m: base[m] * n[m]) for n in noise.values()}
    assert least == set(ALL)


def test_switches_are_checked():
    with pytest.raises(ValueError, match="missing_rate"):
        SyntheticConversations(dims=SMALL, missing_rate={"depth": 0.1}).load()
    with pytest.raises(ValueError, match="missing_rate"):
        SyntheticConversations(dims=SMALL, missing_rate={"audio": 1.5}).load()
    with pytest.raises(ValueError, match="noise_spread"):
        SyntheticConversations(dims=SMALL, noise_spread=0.5).load()
