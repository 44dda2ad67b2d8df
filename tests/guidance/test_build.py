"""``guide`` by name: at each kind's unguided scale (cfg and auto: w = 1; classifier: s = 0) every sampler draws
exactly what it draws from the model itself, bit for bit; a guided scale changes the samples; missing parts and
unknown kinds are refused."""

from __future__ import annotations

import pytest
import torch

from kuosan.exact import ConditionalExactDenoiser, ExactClassifier, ExactDenoiser, GaussianMixture, LabelledMixture
from kuosan.guidance import GUIDANCE_KINDS, UNGUIDED_SCALE, guide
from kuosan.paths import discrete_vp
from kuosan.sampling import SAMPLERS, sample

DATA = LabelledMixture(GaussianMixture(torch.tensor([[-1.5, 0.0], [1.0, 1.2], [1.0, -1.2]]),
                                       0.1 * torch.eye(2).expand(3, 2, 2).clone(), torch.tensor([0.5, 0.3, 0.2])),
                       torch.tensor([0, 1, 1]))
PATH = discrete_vp("linear", 1000)  # every sampler runs here (ddpm only on the discrete chain)
WEAK = ConditionalExactDenoiser(LabelledMixture(GaussianMixture(DATA.mixture.means * 0.8, DATA.mixture.covs * 2,
                                                                DATA.mixture.weights), DATA.labels), PATH)


def guided(kind: str, scale: float):
    D = ConditionalExactDenoiser(DATA, PATH)
    return D, guide(D, kind, scale, null_label=2, weak=WEAK, classifier=ExactClassifier(DATA, PATH),
                    conditional_model=True)


@pytest.mark.parametrize("kind", GUIDANCE_KINDS)
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_the_unguided_scale_is_the_unguided_sampler_bit_for_bit(kind, name):
    opts = {"rtol": 1e-3, "atol": 1e-3} if name == "ode" else {}
    cond = {"y": torch.tensor([0, 1, 1, 0, 1, 1])}
    D, G = guided(kind, UNGUIDED_SCALE[kind])
    ref = sample(D, name, (6, 2), 5, seed=4, cond=cond, dtype=torch.float64, **opts)
    assert torch.equal(sample(G, name, (6, 2), 5, seed=4, cond=cond, dtype=torch.float64, **opts), ref)
    _, G2 = guided(kind, UNGUIDED_SCALE[kind] + 2.0)
    assert not torch.equal(sample(G2, name, (6, 2), 5, seed=4, cond=cond, dtype=torch.float64, **opts), ref)


def test_missing_parts_and_unknown_kinds_are_refused():
    D = ExactDenoiser(DATA.mixture, PATH)
    with pytest.raises(ValueError, match="weaker guide"):
        guide(D, "auto", 2.0)
    with pytest.raises(ValueError, match="needs a classifier"):
        guide(D, "classifier", 2.0)
    with pytest.raises(ValueError, match="unknown guidance kind"):
        guide(D, "nope", 2.0)  # type: ignore[arg-type]
