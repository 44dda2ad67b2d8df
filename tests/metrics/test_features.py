"""kuosan's own feature network: deterministic (same data and seed -> same weights and same FD to the last digit),
cached as safetensors + JSON under a key of the data and config, reused, and the right kind for each data set."""

import json

import pytest
import torch

from kuosan.data import load_dataset
from kuosan.metrics import FeatureConfig, default_cache_dir, feature_dim, feature_extractor, frechet_distance

TINY = FeatureConfig(steps=40, width=8, dim=16, batch_size=64)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", n=300, seed=0)


def _fd(f, train, other):
    return frechet_distance(f.features(train), f.features(other), n_boot=5).value


def test_same_data_and_seed_give_the_same_weights_and_fd_bit_for_bit(digits):
    x, y = digits.x[:200], digits.y[:200]
    rng = torch.get_rng_state()
    a = feature_extractor(x, y, 10, TINY, use_cache=False)
    b = feature_extractor(x, y, 10, TINY, use_cache=False)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left alone
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert _fd(a, x, digits.x[200:]) == _fd(b, x, digits.x[200:])  # to the last digit
    c = feature_extractor(x, y, 10, FeatureConfig(**{**TINY.__dict__, "seed": 1}), use_cache=False)
    assert not torch.equal(c.net.state_dict()["head.weight"], sa["head.weight"])  # the seed matters


def test_cached_on_disk_as_safetensors_and_json_and_reused(digits, tmp_path):
    x, y = digits.x[:200], digits.y[:200]
    first = feature_extractor(x, y, 10, TINY, cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    key = first.info["classifier"]["key"]
    assert files == [f"{key}.json", f"{key}.safetensors"]  # never a pickle
    meta = json.loads((tmp_path / f"{key}.json").read_text())
    assert meta["kind"] == "classifier" and meta["n_train"] == 200 and not first.info["classifier"]["cached"]
    again = feature_extractor(x, y, 10, TINY, cache_dir=tmp_path)
    assert again.info["classifier"]["cached"]
    assert torch.equal(again.features(digits.x), first.features(digits.x))
    # other data (one pixel) or another config: another key, another file pair
    x2 = x.clone()
    x2[0, 0, 0, 0] += 0.5
    feature_extractor(x2, y, 10, TINY, cache_dir=tmp_path)
    feature_extractor(x, y, 10, FeatureConfig(**{**TINY.__dict__, "dim": 8}), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_cache_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KUOSAN_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "features"
    monkeypatch.delenv("KUOSAN_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "kuosan", "features")


def test_kind_follows_the_data(digits):
    img = feature_extractor(digits.x[:100], None, 0, TINY, use_cache=False)
    assert img.kind == "autoencoder" and img.probs(digits.x[:3]) is None and img.dim == 16
    moons = load_dataset("moons", n=200)
    vec = feature_extractor(moons.x, moons.y, 2, TINY, use_cache=False)
    assert vec.kind == "identity" and vec.dim == 2 and vec.probs(moons.x).shape == (200, 2)
    f = vec.features(moons.x)  # identity features, standardised by the training data
    assert torch.allclose(f, (moons.x.double() - moons.x.double().mean(0)) / moons.x.double().std(0))
    clf = feature_extractor(digits.x[:200], digits.y[:200], 10, TINY, use_cache=False)
    feats = clf.features(digits.x[:200])
    assert clf.kind == "classifier" and feats.shape == (200, 16)
    assert feature_dim((1, 8, 8), TINY) == 16 and feature_dim((2,), TINY) == 2  # known before training
    assert torch.allclose(feats.mean(0), torch.zeros(16, dtype=torch.float64), atol=1e-5)  # standardised


def test_a_trained_classifier_classifies(digits):
    f = feature_extractor(digits.x[:240], digits.y[:240], 10, FeatureConfig(steps=150, width=8, dim=16),
                          use_cache=False)
    acc = (f.probs(digits.x[240:]).argmax(1) == digits.y[240:]).double().mean()
    assert acc > 0.7  # 60 held-out digits, chance 0.1


def test_bad_input(digits):
    f = feature_extractor(digits.x[:50], None, 0, TINY, use_cache=False)
    with pytest.raises(ValueError, match=r"shape \(1, 4, 4\) do not match the data's \(1, 8, 8\)"):
        f.features(torch.zeros(3, 1, 4, 4))
    with pytest.raises(ValueError, match="needs labelled data"):
        feature_extractor(digits.x[:50], None, 0, FeatureConfig(kind="classifier"), use_cache=False)
    with pytest.raises(ValueError, match="needs image data"):
        feature_extractor(torch.zeros(50, 2), None, 0, FeatureConfig(kind="autoencoder"), use_cache=False)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        feature_extractor(digits.x[:50], None, 0, FeatureConfig(steps=0), use_cache=False)
