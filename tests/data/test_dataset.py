import numpy as np
import pytest

from fusionkit.data import SyntheticConversations

SMALL = {"text": 24, "audio": 20, "visual": 12}


@pytest.fixture(scope="module")
def synthetic():
    return SyntheticConversations(num_dialogues=60, dims=SMALL, seed=3).load()


def test_synthetic_is_seeded(synthetic):
    again = SyntheticConversations(num_dialogues=60, dims=SMALL, seed=3).load()
    other = SyntheticConversations(num_dialogues=60, dims=SMALL, seed=4).load()
    d = synthetic.dialogues["synthetic_0007"]
    assert np.array_equal(d.features["audio"], again.dialogues["synthetic_0007"].features["audio"])
    assert not np.array_equal(
        d.features["audio"], other.dialogues["synthetic_0007"].features["audio"]
    )


def test_synthetic_shape_and_splits(synthetic):
    lengths = [len(d) for d in synthetic.dialogues.values()]
    assert min(lengths) >= 10 and max(lengths) <= 110
    assert synthetic.feature_dims == SMALL
    ids = [i for s in synthetic.splits.values() for i in s]
    assert sorted(ids) == sorted(synthetic.dialogues) and len(ids) == len(set(ids))
    assert len(synthetic.splits["test"]) == 12
    assert all(set(np.unique(d.speakers)) <= {0, 1} for d in synthetic.dialogues.values())


def test_synthetic_class_imbalance_is_iemocap_like():
    ds = SyntheticConversations(num_dialogues=300, dims={"text": 4}, seed=0).load()
    freq = ds.class_counts("train") / ds.class_counts("train").sum()
    assert freq.argmax() in (2, 5)  # neutral or frustrated, as in IEMOCAP
    assert freq.argmin() == 0  # happy is the rarest


def test_emotions_persist_per_speaker(synthetic):
    same = total = 0
    for d in synthetic.dialogues.values():
        for s in (0, 1):
            labels = d.labels[d.speakers == s]
            same += int((labels[1:] == labels[:-1]).sum())
            total += max(len(labels) - 1, 0)
    assert same / total > 0.7  # chance agreement would be about 0.2


@pytest.mark.slow  # fits logistic regressions on thousands of utterances
def test_fusion_beats_the_best_single_modality():
    """A linear probe per utterance: every modality carries something the others lack."""
    from sklearn.linear_model import LogisticRegression

    ds = SyntheticConversations(
        num_dialogues=80, dims={"text": 32, "audio": 32, "visual": 32}, seed=1
    ).load()

    acc = {}
    for mods in (["text"], ["audio"], ["visual"], ["text", "audio", "visual"]):
        clf = LogisticRegression(max_iter=300).fit(*ds.utterances("train", mods))
        x, y = ds.utterances("test", mods)
        acc["+".join(mods)] = (clf.predict(x) == y).mean()
    best_single = max(acc["text"], acc["audio"], acc["visual"])
    assert acc["text"] == best_single
    assert acc["text+audio+visual"] > best_single + 0.1, acc


def test_dev_split_is_seeded_and_disjoint(synthetic):
    no_dev = type(synthetic)(
        **{
            **synthetic.__dict__,
            "splits": {k: v for k, v in synthetic.splits.items() if k != "dev"},
        }
    )
    a, b = no_dev.with_dev_split(0.1, seed=0), no_dev.with_dev_split(0.1, seed=0)
    assert a.splits["dev"] == b.splits["dev"] and len(a.splits["dev"]) == round(
        0.1 * len(no_dev.splits["train"])
    )
    assert not set(a.splits["dev"]) & set(a.splits["train"])
    assert no_dev.with_dev_split(0.1, seed=1).splits["dev"] != a.splits["dev"]
    assert synthetic.with_dev_split() is synthetic  # an existing dev split is kept


def test_class_weights_are_inverse_frequencies(synthetic):
    counts = synthetic.class_counts("train")
    w = synthetic.class_weights("train").numpy()
    np.testing.assert_allclose(w, counts.sum() / counts, rtol=1e-5)


def test_select_modalities(synthetic):
    assert synthetic.select_modalities(["text"]).modalities == ["text"]
    with pytest.raises(ValueError, match=r"\['depth'\] not available"):
        synthetic.select_modalities(["text", "depth"])


def test_utterances_flattens_labelled_utterances(synthetic):
    x, y = synthetic.utterances("dev", ["text", "visual"])
    assert x.shape == (synthetic.num_utterances("dev"), SMALL["text"] + SMALL["visual"])
    first = synthetic.split("dev")[0]
    np.testing.assert_array_equal(
        x[0], np.concatenate([first.features["text"][0], first.features["visual"][0]])
    )
    assert y.tolist()[: len(first)] == first.labels.tolist()
