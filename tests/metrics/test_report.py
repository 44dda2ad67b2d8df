"""The report: samples as good as new data score like the real-vs-real baseline; a run without a held-out split
has no baseline (said in a note); the JSON form and the printed table."""

import json

import pytest
import torch

from kuosan import exact
from kuosan.metrics import NOTE, FeatureConfig, evaluate, feature_extractor, format_table, to_json


def _ring(n, seed):
    return exact.ring().sample(n, generator=torch.Generator().manual_seed(seed)).float()


@pytest.fixture(scope="module")
def setting():
    train, held = _ring(600, 0), _ring(100, 1)
    y = (torch.atan2(train[:, 1], train[:, 0]) > 0).long()  # two labelled halves of the ring
    feats = feature_extractor(train, y, 2, FeatureConfig(steps=100), use_cache=False)
    return train, y, held, (torch.atan2(held[:, 1], held[:, 0]) > 0).long(), feats


def test_new_data_scores_like_the_baseline(setting):
    pytest.importorskip("ot")
    train, y, held, held_y, feats = setting
    r = evaluate(_ring(400, 2), train, y, held, held_y, feats, mixture=exact.ring(), n_boot=20)
    m = r["metrics"]
    assert m["fd"]["model_at_baseline_n"] == pytest.approx(m["fd"]["baseline"], abs=3 * m["fd"]["baseline_stderr"])
    assert abs(m["kid"]["model"]) < 3 * m["kid"]["model_stderr"] + 1e-12
    for name in ("precision", "recall", "density", "coverage"):
        assert m[name]["model_at_baseline_n"] == pytest.approx(m[name]["baseline"], abs=0.15), name
    assert m["near_copies"]["model"] < 0.2 and m["nn_ratio_median"]["model"] == pytest.approx(1.0, abs=0.3)
    assert m["class_kl"]["model"] < 0.05 and m["class_accuracy"]["model"] is None
    ex = r["exact"]
    assert ex["nll_true_density"]["model"] == pytest.approx(ex["nll_true_density"]["baseline"], abs=0.3)
    assert ex["missing_modes"]["model"] == 0 and ex["mode_weights_tv"]["model"] < 0.1
    # a collapsed model: every sample at one mode
    bad = exact.ring().means[0].float() + 0.05 * torch.randn(400, 2, generator=torch.Generator().manual_seed(3))
    rb = evaluate(bad, train, y, held, held_y, feats, mixture=exact.ring(), n_boot=20)
    assert rb["metrics"]["fd"]["model"] > 10 * rb["metrics"]["fd"]["baseline"]
    assert rb["metrics"]["recall"]["model"] < 0.3 and rb["exact"]["missing_modes"]["model"] == 7


def test_no_held_out_split_means_no_baseline(setting):
    train, y, _, _, feats = setting
    r = evaluate(_ring(100, 4), train, y, train[:0], y[:0], feats, n_boot=5)
    assert r["metrics"]["fd"]["baseline"] is None and r["metrics"]["kid"]["baseline"] is None
    assert "memorisation" not in r and "no real-vs-real baseline" in r["notes"][0]


def test_json_and_table(setting):
    train, y, held, held_y, feats = setting
    r = evaluate(_ring(200, 5), train, y, held, held_y, feats, n_boot=5)
    r["metrics"]["class_kl"]["model"] = float("inf")  # a class the data lacks: infinite KL survives as text
    j = to_json(r)
    assert "_memorisation" not in j and j["metrics"]["class_kl"]["model"] == "inf"
    json.dumps(j, allow_nan=False)
    table = format_table(r, "title")
    assert table.splitlines()[:2] == ["title", NOTE] and "real-vs-real (n=100)" in table
    assert "near-copies (ratio < 1/3)" in table and "precision" in table
    with pytest.raises(ValueError, match=r"shape \(3,\) per example but the data has \(2,\)"):
        evaluate(torch.zeros(50, 3), train, y, held, held_y, feats)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(torch.full((50, 2), float("nan")), train, y, held, held_y, feats)
