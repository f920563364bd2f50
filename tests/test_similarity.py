import math

import pytest
import torch
from conftest import bad_shapes

from xsteer.transfer.similarity import (
    cka_matrix,
    correlation_matrix,
    cosine_matrix,
    cosine_per_layer,
    linear_cka,
    null_quantile,
    random_cosine_null,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _orthogonal(d, g):
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]


def _reference_cka(X, Y):
    # Textbook feature-space formula, straight from Kornblith et al. (2019), eq. 5.
    X = X.double() - X.double().mean(0)
    Y = Y.double() - Y.double().mean(0)
    return float((Y.T @ X).norm() ** 2 / ((X.T @ X).norm() * (Y.T @ Y).norm()))


# (n, d1, d2): n >> d (feature route), n << d (Gram route), mixed widths
SHAPES = [(300, 8, 12), (10, 200, 150), (40, 30, 60)]


@pytest.mark.parametrize("n,d1,d2", SHAPES)
def test_cka_self_is_one_and_matches_reference(n, d1, d2):
    g = _gen()
    X = torch.randn(n, d1, generator=g)
    Y = X[:, : min(d1, d2)] @ torch.randn(min(d1, d2), d2, generator=g) + torch.randn(n, d2, generator=g)
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(X, Y) == pytest.approx(_reference_cka(X, Y), rel=1e-9)
    assert linear_cka(X, Y) == pytest.approx(linear_cka(Y, X), rel=1e-12)


@pytest.mark.parametrize("n,d1,d2", SHAPES)
def test_cka_invariances(n, d1, d2):
    g = _gen(1)
    X = torch.randn(n, d1, generator=g, dtype=torch.float64)
    Y = torch.tanh(X[:, :1]) * torch.randn(n, d2, generator=g, dtype=torch.float64) + X.sum(1, keepdim=True)
    base = linear_cka(X, Y)
    assert 0.05 < base < 0.999
    assert linear_cka(X @ _orthogonal(d1, g), Y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(X, Y @ _orthogonal(d2, g)) == pytest.approx(base, rel=1e-9)
    assert linear_cka(1e4 * X, Y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(X, 1e-4 * Y + 7.0) == pytest.approx(base, rel=1e-9)  # scale and shift
    # float32 inputs still get a float64 computation
    assert linear_cka(X.float(), Y.float()) == pytest.approx(base, rel=1e-5)


def test_cka_of_independent_data_is_small():
    g = _gen(2)
    X = torch.randn(2000, 16, generator=g)
    Y = torch.randn(2000, 24, generator=g)
    assert linear_cka(X, Y) < 0.05
    # ... and close to 1 for a noisy isometric embedding of X (CKA is not invariant
    # to arbitrary linear maps, only to orthogonal ones and isotropic scaling)
    Q = torch.linalg.qr(torch.randn(24, 16, generator=g))[0].T
    assert linear_cka(X, X @ Q + 0.1 * Y) > 0.95


def test_cka_no_variance_is_nan():
    X = torch.randn(20, 5, generator=_gen())
    assert math.isnan(linear_cka(X, torch.ones(20, 3)))


@pytest.mark.parametrize("n,d1,d2", SHAPES)
def test_cka_matrix_agrees_with_linear_cka(n, d1, d2):
    g = _gen(3)
    A = torch.randn(3, n, d1, generator=g)
    B = torch.randn(4, n, d2, generator=g)
    B[1, :, : min(d1, d2)] += 3 * A[2, :, : min(d1, d2)]
    M = cka_matrix(A, B)
    assert M.shape == (3, 4) and M.dtype == torch.float64
    expected = torch.tensor([[linear_cka(a, b) for b in B] for a in A], dtype=torch.float64)
    torch.testing.assert_close(M, expected, rtol=1e-9, atol=1e-12)
    assert int(M[:, 1].argmax()) == 2


def test_cka_errors():
    with bad_shapes("same examples"):
        linear_cka(torch.randn(10, 3), torch.randn(11, 3))
    with bad_shapes("same examples"):
        cka_matrix(torch.randn(2, 10, 3), torch.randn(2, 11, 3))


def test_cosines():
    g = _gen(4)
    a = torch.randn(5, 16, generator=g)
    b = torch.randn(5, 16, generator=g)
    per = cosine_per_layer(a, b)
    mat = cosine_matrix(a, b)
    torch.testing.assert_close(per, torch.diagonal(mat))
    torch.testing.assert_close(per, torch.nn.functional.cosine_similarity(a, b, dim=-1).double())
    torch.testing.assert_close(cosine_per_layer(a, 3 * a), torch.ones(5, dtype=torch.float64))
    assert mat.shape == (5, 5)
    z = torch.zeros(1, 16)
    assert torch.isnan(cosine_matrix(z, b)).all()
    with bad_shapes("one width"):
        cosine_matrix(a, torch.randn(5, 8))


def test_correlation_matrix():
    g = _gen(5)
    a = torch.randn(3, 64, generator=g)
    b = 2 * a + 5  # a positive affine image: correlation exactly 1, cosine not
    c = correlation_matrix(a, b)
    torch.testing.assert_close(torch.diagonal(c), torch.ones(3, dtype=torch.float64))
    assert cosine_per_layer(a, b).max() < 0.9
    for i in range(3):
        for j in range(3):
            ref = torch.corrcoef(torch.stack([a[i], b[j]]).double())[0, 1]
            assert float(c[i, j]) == pytest.approx(float(ref), abs=1e-10)


@pytest.mark.parametrize("d", [64, 1024])
def test_random_cosine_null_matches_theory(d):
    null = random_cosine_null(d, n_samples=10000, seed=0)
    assert null.shape == (10000,)
    expected = math.sqrt(2 / (math.pi * d))
    assert float(null.abs().mean()) == pytest.approx(expected, rel=0.10)
    assert float(null.std()) == pytest.approx(1 / math.sqrt(d), rel=0.10)
    assert abs(float(null.mean())) < 3 / math.sqrt(d * 10000)


def test_random_cosine_null_agrees_with_drawn_vectors():
    # The Beta shortcut against the definition: normalised Gaussian vectors.
    d, n = 32, 4000
    g = _gen(6)
    u = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    drawn = (u * v).sum(-1).abs()
    fast = random_cosine_null(d, n_samples=n, seed=1).abs()
    for q in (0.25, 0.5, 0.9):
        assert float(torch.quantile(fast, q)) == pytest.approx(float(torch.quantile(drawn, q)), rel=0.08)


def test_null_quantile_and_determinism():
    torch.testing.assert_close(random_cosine_null(128, 100, seed=3), random_cosine_null(128, 100, seed=3))
    assert not torch.equal(random_cosine_null(128, 100, seed=3), random_cosine_null(128, 100, seed=4))
    q95 = null_quantile(1024, 0.95)
    # |cos| ~ |N(0, 1/d)| for large d, whose 95% quantile is 1.96 / sqrt(d)
    assert q95 == pytest.approx(1.96 / math.sqrt(1024), rel=0.05)
    assert null_quantile(1024, 0.5) < q95
    assert set(random_cosine_null(1, 50).tolist()) <= {-1.0, 1.0}
    with pytest.raises(ValueError):
        null_quantile(64, 1.5)


def test_best_matches_skips_nan_entries():
    from xsteer.transfer.similarity import best_matches

    m = torch.tensor([[0.1, float("nan"), 0.3], [float("nan")] * 3, [0.9, 0.2, 0.1]])
    (r0, r1, r2) = best_matches(m)
    assert r0 == (0, 2, pytest.approx(0.3)) and r2 == (2, 0, pytest.approx(0.9))
    assert r1[:2] == (1, 0) and math.isnan(r1[2])  # nothing defined: reported as NaN, not as a match


def test_compare_vectors_counts_only_layers_both_sides_steer():
    from xsteer.core.vectors import SteeringVectors
    from xsteer.transfer.similarity import compare_vectors

    v = torch.randn(4, 64, generator=_gen(5))
    a = SteeringVectors(v, "m", "x", (0, 1, 2))
    b = SteeringVectors(v.clone(), "m", "x", (1, 2, 3))
    res = compare_vectors(a, b)
    assert res["layers"] == [1, 2] and res["above_null"] == 2
    assert math.isnan(res["cosine"][0]) and math.isnan(res["cosine"][3])
    assert res["cosine"][1] == pytest.approx(1.0) and res["null"] == pytest.approx(null_quantile(64, 0.95))
    with pytest.raises(ValueError, match="one space"):
        compare_vectors(a, SteeringVectors(torch.randn(4, 32), "c", "x", (0,)))
    with pytest.raises(ValueError, match="both sides"):
        compare_vectors(SteeringVectors(v, "m", "x", (0,)), SteeringVectors(v, "m", "x", (3,)))
