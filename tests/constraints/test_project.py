"""The constraint sets' projections against closed forms: the box is a clamp, A x = b is x - Aᵀ(AAᵀ)⁻¹(Ax - b)
(and the KKT solution with fixed values as extra rows), projections are idempotent and orthogonal (x - Π x is
normal to C), scale·C, per-sample table rows, and every infeasible or malformed constraint is refused."""

from __future__ import annotations

import pytest
import torch

from kuosan.constraints import Affine, Box, Constraint, ConstraintError, make_constraint

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_box_is_a_clamp_and_its_violation_the_largest_excess():
    x = torch.tensor([[-2.0, 0.0, 0.5], [0.1, 0.2, 3.0]], dtype=F64)
    C = make_constraint((3,), box=(-1.0, 1.0))
    torch.testing.assert_close(C.project(x), x.clamp(-1, 1), rtol=0, atol=0)
    torch.testing.assert_close(C.violation(x), torch.tensor([1.0, 2.0], dtype=F64))
    assert float(C.violation(C.project(x)).max()) == 0


def test_linear_projection_equals_the_closed_form_and_is_orthogonal():
    d, k = 7, 3
    A = torch.randn(k, d, generator=gen(0), dtype=F64)
    b = torch.randn(k, generator=gen(1), dtype=F64)
    x = torch.randn(5, d, generator=gen(2), dtype=F64)
    C = make_constraint((d,), A=A, b=b)
    p = C.project(x)
    closed = x - ((x @ A.T - b) @ torch.linalg.inv(A @ A.T)) @ A  # x - Aᵀ(AAᵀ)⁻¹(Ax - b), row by row
    torch.testing.assert_close(p, closed, rtol=0, atol=1e-12)
    assert float((p @ A.T - b).abs().max()) < 1e-12
    torch.testing.assert_close(C.project(p), p, rtol=0, atol=1e-12)  # idempotent
    v = C.project(torch.randn(5, d, generator=gen(3), dtype=F64))  # other points of C
    assert float(((x - p) * (v - p)).sum(1).abs().max()) < 1e-11  # x - Π x ⟂ C (an affine set)


def test_redundant_consistent_rows_are_fine_and_an_inconsistent_system_is_refused():
    d = 5
    A = torch.randn(2, d, generator=gen(4), dtype=F64)
    b = torch.randn(2, generator=gen(5), dtype=F64)
    A3, b3 = torch.cat([A, A[:1] + A[1:]]), torch.cat([b, b[:1] + b[1:]])  # third row = sum of the others
    x = torch.randn(4, d, generator=gen(6), dtype=F64)
    torch.testing.assert_close(make_constraint((d,), A=A3, b=b3).project(x), make_constraint((d,), A=A, b=b).project(x),
                               rtol=0, atol=1e-12)
    with pytest.raises(ConstraintError, match="no solution"):
        make_constraint((d,), A=A3, b=b3 + torch.tensor([0.0, 0.0, 0.5], dtype=F64))


def test_fixed_values_with_linear_equals_the_kkt_solution():
    """min ‖x' - x‖² s.t. A x' = b and x'_M = y_M: the closed form with the fixed coordinates as unit rows."""
    d = 8
    A = torch.randn(2, d, generator=gen(7), dtype=F64)
    b = torch.randn(2, generator=gen(8), dtype=F64)
    mask = torch.tensor([1, 0, 0, 1, 0, 0, 0, 1], dtype=F64)
    known = torch.randn(d, generator=gen(9), dtype=F64)
    x = torch.randn(3, d, generator=gen(10), dtype=F64)
    C = make_constraint((d,), mask=mask, known=known, A=A, b=b)
    E = torch.eye(d, dtype=F64)[mask == 1]
    G, h = torch.cat([A, E]), torch.cat([b, known[mask == 1]])
    closed = x - ((x @ G.T - h) @ torch.linalg.inv(G @ G.T)) @ G
    torch.testing.assert_close(C.project(x), closed, rtol=0, atol=1e-12)
    assert float(C.violation(C.project(x)).max()) < 1e-12
    with pytest.raises(ConstraintError, match="with these fixed values"):  # x_0 = 1, x_0 = 2 via A
        make_constraint((2,), mask=torch.tensor([1.0, 0.0]), known=torch.tensor([1.0, 0.0]),
                        A=torch.tensor([[1.0, 0.0]]), b=torch.tensor([2.0]))


def test_scaled_set_and_per_sample_rows():
    d = 4
    mask = torch.tensor([[1, 0, 0, 0], [0, 0, 1, 1]], dtype=F64)  # K = 2 rows
    known = torch.tensor([[0.5, 0, 0, 0], [0, 0, -1.0, 2.0]], dtype=F64)
    aff = Affine((d,), mask, known, A=torch.ones(1, d, dtype=F64), b=torch.tensor([1.0], dtype=F64))
    x = torch.randn(5, d, generator=gen(11), dtype=F64)
    rows = torch.tensor([0, 1, 2, 3, 7])
    p = aff.project(x, rows, scale=0.3)
    for r, out in zip(rows.tolist(), p):  # sample r uses table row r mod 2, on 0.3·C
        k = r % 2
        on = mask[k] == 1
        torch.testing.assert_close(out[on], 0.3 * known[k][on], rtol=0, atol=1e-15)
        assert abs(float(out.sum()) - 0.3) < 1e-12
    m, y = aff.fixed_values(rows, x)
    torch.testing.assert_close(m, mask[rows % 2])


def test_box_with_fixed_values_and_float32_precision():
    shape = (1, 8, 8)
    mask = (torch.rand(shape, generator=gen(12)) < 0.3).to(F64)
    known = torch.rand(shape, generator=gen(13), dtype=F64) * 1.6 - 0.8
    C = make_constraint(shape, box=(-0.9, 0.9), mask=mask, known=known)
    x = 2 * torch.randn(6, *shape, generator=gen(14))
    p = C.project(x)
    assert p.dtype == torch.float32
    assert float(C.violation(p).max()) <= 1e-6
    on = mask.expand_as(p) == 1
    assert float((p.double() - known)[on].abs().max()) <= 1e-7  # the fixed values themselves, rounded to float32
    A = torch.randn(3, 64, generator=gen(15), dtype=F64)  # A x = b in float32 too
    L = make_constraint(shape, A=A, b=torch.randn(3, generator=gen(16), dtype=F64))
    assert float(L.violation(L.project(x)).max()) <= 1e-6


@pytest.mark.parametrize("build, match", [
    (lambda: Box(1.0, -1.0), "empty"),
    (lambda: Box(float("nan"), 1.0), "finite"),
    (lambda: make_constraint((2,), box=(-1, 1), A=torch.eye(2), b=torch.zeros(2)), "not supported"),
    (lambda: make_constraint((2,), box=(-1, 1), mask=torch.ones(2), known=torch.tensor([0.0, 2.0])), "outside the box"),
    (lambda: make_constraint((2,), mask=torch.tensor([1.0, 0.5]), known=torch.zeros(2)), "binary"),
    (lambda: make_constraint((3,), A=torch.ones(1, 2), b=torch.zeros(1)), "shape"),
    (lambda: make_constraint((3,), mask=torch.ones(2, 3), known=torch.zeros(3, 3)), "rows"),
    (lambda: Constraint(), "needs"),
])
def test_bad_constraints_are_refused_with_a_reason(build, match):
    with pytest.raises(ConstraintError, match=match):
        build()
