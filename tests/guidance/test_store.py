"""A noisy classifier's folder: saved and loaded back to identical logits (from the folder or its run), replaced
whole, and refused when it does not fit the model (shape, classes), is missing or is damaged."""

from __future__ import annotations

import pytest
import torch

from kuosan.checkpoint import CheckpointError
from kuosan.guidance import ClassifierTraining, classifier_times, load_classifier, save_classifier, train_classifier
from kuosan.nets.classifier import ClassifierConfig
from kuosan.paths import f64, make_path

PATH = make_path("vp_cosine")


def test_save_and_load_round_trip_and_refusals(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 2, generator=g), torch.randint(0, 2, (64,), generator=g)
    clf, _ = train_classifier(x, y, 2, PATH, classifier_times("uniform", PATH), ClassifierConfig((2,), 2, width=16),
                              ClassifierTraining(steps=3, batch_size=8))
    out = save_classifier(clf, tmp_path / "run" / "classifier", {"note": "first"})
    save_classifier(clf, out, {"note": "second"})  # replaced whole, no temporary folder left
    assert sorted(p.name for p in out.parent.iterdir()) == ["classifier"]
    got, info = load_classifier(tmp_path / "run", PATH, shape=(2,), num_classes=2)  # a run folder works too
    assert info["note"] == "second" and info["path"]["kind"] == "vp_cosine" and info["num_classes"] == 2
    t = f64([0.1, 0.3, 0.5, 0.7, 0.9])
    assert torch.equal(got.logits(x[:5], t), clf.logits(x[:5], t))
    with pytest.raises(CheckpointError, match="shape"):
        load_classifier(out, PATH, shape=(3,))
    with pytest.raises(CheckpointError, match="classes"):
        load_classifier(out, PATH, num_classes=3)
    with pytest.raises(CheckpointError, match="no classifier"):
        load_classifier(tmp_path, PATH)
    (out / "classifier.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_classifier(out, PATH)
    (out / "classifier.json").write_text('{"format": 99}')
    with pytest.raises(CheckpointError, match="unreadable description"):
        load_classifier(out, PATH)
