"""Memorisation: copies of training examples score ratio 0 and count as near-copies; new data scores about 1 by
construction; the PNG shows the worst samples above their neighbours. Class statistics of the feature classifier."""

import math

import pytest
import torch
from PIL import Image

from kuosan.metrics import NEAR_COPY_RATIO, class_stats, memorisation, save_worst_png
from kuosan.metrics.memorisation import nearest


def _images(n, seed):
    return torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_nearest_matches_brute_force():
    q, r = _images(30, 0), _images(50, 1)
    d, i = nearest(q, r, chunk=7)
    full = torch.cdist(q.flatten(1).double(), r.flatten(1).double())
    assert torch.allclose(d, full.min(1).values) and torch.equal(i, full.argmin(1))


def test_copies_are_near_copies_and_new_data_is_not():
    train, held, fresh = _images(400, 0), _images(100, 1), _images(200, 2)
    copies = train[:50] + 1e-4 * _images(50, 3)  # training examples with invisible noise
    m = memorisation(torch.cat([copies, fresh]), train, held)
    assert (m.ratio[:50] < 0.01).all() and torch.equal(m.neighbour[:50], torch.arange(50))
    assert m.near_copy_fraction == pytest.approx(50 / 250)
    assert float(m.heldout_ratio.median()) == pytest.approx(1.0)  # the scale is the held-out median
    assert float(m.ratio[50:].median()) == pytest.approx(1.0, abs=0.1)  # fresh data from the same source
    assert m.baseline_near_copy_fraction == 0.0 and m.threshold == NEAR_COPY_RATIO
    assert m.worst(3).tolist() == m.ratio.argsort()[:3].tolist() and int(m.worst(1)) < 50
    d = m.to_dict()
    assert d["near_copy_fraction"] == m.near_copy_fraction and "ratio" not in d and d["min_ratio"] < 0.01


def test_png_of_the_worst_samples_beside_their_neighbours(tmp_path):
    train, held = _images(100, 0), _images(20, 1)
    samples = torch.cat([train[:4].clone(), _images(10, 2)])
    m = memorisation(samples, train, held)
    save_worst_png(m, samples, train, tmp_path / "worst.png", k=4)
    img = Image.open(tmp_path / "worst.png")
    assert img.width > img.height  # one row of samples above one row of neighbours: 4 wide, 2 high
    with pytest.raises(ValueError, match="needs images"):
        save_worst_png(m, torch.zeros(14, 36), train, tmp_path / "v.png")


def test_memorisation_bad_input():
    with pytest.raises(ValueError, match="held-out split is empty"):
        memorisation(_images(5, 0), _images(5, 1), _images(0, 2))
    with pytest.raises(ValueError, match="36 values per example but the reference has 16"):
        nearest(_images(5, 0), torch.zeros(4, 16))
    train = _images(10, 0)
    with pytest.raises(ValueError, match="duplicates"):
        memorisation(_images(5, 3), train, train[:4])


def test_class_statistics():
    # 4 samples: predicted classes 0, 0, 1, 2 (3 classes); data labels uniform over {0, 1, 2}
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.6, 0.2, 0.2], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]], dtype=torch.float64)
    s = class_stats(probs, torch.tensor([0, 1, 2] * 5), 3, requested=torch.tensor([0, 1, 1, 2]))
    assert s.histogram == [0.5, 0.25, 0.25] and s.data_histogram == pytest.approx([1 / 3] * 3)
    assert s.kl == pytest.approx(0.5 * math.log(1.5) + 0.5 * math.log(0.75))
    assert s.mean_confidence == pytest.approx((0.9 + 0.6 + 0.8 + 0.6) / 4)
    assert s.accuracy == 0.75 and s.missing_classes == 0
    one = class_stats(probs[:2], torch.tensor([0, 1, 2]), 3)
    assert one.missing_classes == 2 and one.kl == pytest.approx(math.log(3)) and one.accuracy is None
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        class_stats(probs, torch.tensor([0, 1]), 4)
