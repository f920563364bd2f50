import pytest
import torch
from conftest import bad_shapes

from xsteer.transfer.widthmap import WIDTH_MAPS, WidthMap, fit_report, fit_width_map


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).min())


def _planted(n=400, d_p=48, d_c=32, noise=0.3, seed=0):
    """Y = X @ A + offset + noise, with anisotropic X as in real residual streams."""
    g = _gen(seed)
    X = torch.randn(n, d_p, generator=g, dtype=torch.float64) * torch.linspace(
        0.5, 2.0, d_p, dtype=torch.float64
    )
    X = X + 3.0  # a shared mean, which the fitted bias must absorb
    A = torch.randn(d_p, d_c, generator=g, dtype=torch.float64) / d_p**0.5
    offset = torch.randn(d_c, generator=g, dtype=torch.float64)
    Y = X @ A + offset + noise * torch.randn(n, d_c, generator=g, dtype=torch.float64)
    return X, Y, A, offset


def test_ridge_recovers_planted_map():
    X, Y, A, _ = _planted()
    wmap = fit_width_map("ridge", X[:300].float(), Y[:300].float(), d_parent=48, d_child=32)
    assert wmap.params["alpha_from"] == "5-fold CV" and wmap.params["alpha"] > 0
    assert not wmap.params["alpha_at_grid_edge"]
    u = torch.randn(5, 48, generator=_gen(9), dtype=torch.float64)  # planted parent directions
    assert _cos(wmap.map_directions(u), u @ A) > 0.95
    report = fit_report(wmap, X[300:], Y[300:])
    assert report["r2"] > 0.85
    assert report["cosine_centred"] > 0.9
    assert report["cosine"] >= report["cosine_centred"]  # the shared mean flatters raw cosine
    assert report["n"] == 100


@pytest.mark.parametrize("n", [400, 30])  # n > d_parent (primal) and n < d_parent (dual regime)
def test_ridge_matches_sklearn(n):
    sklearn_linear = pytest.importorskip("sklearn.linear_model")
    X, Y, _, _ = _planted(n=n)
    for alpha in (0.1, 10.0):
        ours = fit_width_map("ridge", X, Y, d_parent=48, d_child=32, alpha=alpha)
        ref = sklearn_linear.Ridge(alpha=alpha, fit_intercept=True).fit(X.numpy(), Y.numpy())
        torch.testing.assert_close(ours.weight, torch.from_numpy(ref.coef_.T), rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(ours.bias, torch.from_numpy(ref.intercept_), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("n", [400, 30])
def test_ridge_at_one_alpha_equals_the_svd_route(n):
    """The Cholesky solve of the smaller Gram matrix (dual when n < d) gives the SVD route's weight."""
    from xsteer.transfer.widthmap import _ridge_at, _ridge_solve

    X, Y, _, _ = _planted(n=n)
    xc, yc = X - X.mean(0), Y - Y.mean(0)
    for alpha in (1e-3, 1.0, 100.0):
        v, shrink, uty = _ridge_solve(xc, yc, [alpha])
        torch.testing.assert_close(_ridge_at(xc, yc, alpha), (v * shrink[0]) @ uty, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n", [400, 30])
def test_ridge_cv_errors_equal_the_svd_route(n):
    """Cross-validation reads every alpha off one eigen-decomposition of the smaller Gram per fold; its
    held-out errors are the SVD route's."""
    from xsteer.transfer.widthmap import _ridge_cv, _ridge_solve

    X, Y, _, _ = _planted(n=n)
    alphas = [10.0**e for e in range(-3, 4)]
    folds = torch.randperm(n, generator=torch.Generator().manual_seed(3)).chunk(5)
    sse = torch.zeros(len(alphas), dtype=torch.float64)
    for held in folds:
        train = torch.ones(n, dtype=torch.bool)
        train[held] = False
        mx, my = X[train].mean(0), Y[train].mean(0)
        v, shrink, uty = _ridge_solve(X[train] - mx, Y[train] - my, alphas)
        for i in range(len(alphas)):
            pred = ((X[held] - mx) @ v * shrink[i]) @ uty + my
            sse[i] += (pred - Y[held]).square().sum()
    got = torch.tensor(_ridge_cv(X, Y, alphas, 5, 3), dtype=torch.float64)
    torch.testing.assert_close(got, sse / n, rtol=1e-9, atol=0)


def test_ridge_small_n_cv_and_ols():
    X, Y, _, _ = _planted(n=30)
    wmap = fit_width_map("ridge", X, Y, d_parent=48, d_child=32)
    assert torch.isfinite(wmap.weight).all() and wmap.params["alpha"] > 0
    # alpha = 0 with n > d is ordinary least squares
    X, Y, _, _ = _planted(n=200)
    ols = fit_width_map("ridge", X, Y, d_parent=48, d_child=32, alpha=0.0)
    ones = torch.ones(200, 1, dtype=torch.float64)
    coef = torch.linalg.lstsq(torch.cat([X, ones], 1), Y).solution
    torch.testing.assert_close(ols.weight, coef[:-1], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(ols.bias, coef[-1], rtol=1e-6, atol=1e-6)


def test_procrustes_recovers_orthogonal_map():
    d, n = 24, 300
    g = _gen(1)
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    X = (
        torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3.0, d, dtype=torch.float64)
        + 1.0
    )
    Y = X @ Q + 2.0 + 0.01 * torch.randn(n, d, generator=g, dtype=torch.float64)
    wmap = fit_width_map("procrustes", X, Y, d_parent=d, d_child=d, k=d)
    assert torch.linalg.matrix_norm(wmap.weight - Q) / d**0.5 < 0.02
    u = torch.randn(10, d, generator=g, dtype=torch.float64)
    assert _cos(wmap.map_directions(u), u @ Q) > 0.99
    # an orthogonal weight: direction norms are preserved exactly
    torch.testing.assert_close(wmap.map_directions(u).norm(dim=-1), u.norm(dim=-1))
    assert fit_report(wmap, X, Y)["r2"] > 0.999


def test_procrustes_low_rank_and_scale():
    X, Y, _, _ = _planted(n=100)
    wmap = fit_width_map("procrustes", X, Y, d_parent=48, d_child=32)
    assert wmap.params == {"k": 32, "scale": 1.0}
    w = fit_width_map("procrustes", X, Y, d_parent=48, d_child=32, k=8)
    assert torch.linalg.matrix_rank(w.weight) == 8
    # P_x R P_y^T has singular values 1 (norm-preserving on the parent's top-k subspace)
    torch.testing.assert_close(torch.linalg.svdvals(w.weight)[:8], torch.ones(8, dtype=torch.float64))
    scaled = fit_width_map("procrustes", X, Y, d_parent=48, d_child=32, k=8, scale=True)
    s = scaled.params["scale"]
    assert 0 < s < 1  # A = randn / sqrt(d_p) shrinks variance, so the fitted scale is < 1
    torch.testing.assert_close(scaled.weight, s * w.weight)
    with pytest.raises(ValueError, match=r"k must be in 1\.\.32"):
        fit_width_map("procrustes", X, Y, d_parent=48, d_child=32, k=33)


def test_identity_and_its_width_error():
    wmap = fit_width_map("identity", d_parent=16, d_child=16)
    torch.testing.assert_close(wmap.weight, torch.eye(16, dtype=torch.float64))
    assert not wmap.bias.any()
    with pytest.raises(ValueError, match=r"d_parent=48, d_child=32.*'ridge' or 'procrustes'"):
        fit_width_map("identity", d_parent=48, d_child=32)


@pytest.mark.parametrize("d_p,d_c", [(48, 32), (32, 48)])
def test_truncate_pad(d_p, d_c):
    wmap = fit_width_map("truncate_pad", d_parent=d_p, d_child=d_c)
    v = torch.arange(1.0, d_p + 1)
    out = wmap.map_directions(v)
    m = min(d_p, d_c)
    assert out.shape == (d_c,) and out.dtype == torch.float32
    torch.testing.assert_close(out[:m], v[:m])
    assert not out[m:].any()


@pytest.mark.parametrize("d_p,d_c", [(32, 48), (48, 32), (24, 24)])
def test_random_orthogonal(d_p, d_c):
    wmap = fit_width_map("random_orthogonal", d_parent=d_p, d_child=d_c, seed=3)
    W = wmap.weight
    small = min(d_p, d_c)
    gram = W @ W.T if d_p <= d_c else W.T @ W
    torch.testing.assert_close(gram, torch.eye(small, dtype=torch.float64))
    if d_p <= d_c:
        v = torch.randn(7, d_p, generator=_gen(), dtype=torch.float64)
        torch.testing.assert_close(wmap.map_directions(v).norm(dim=-1), v.norm(dim=-1))
    assert torch.equal(W, fit_width_map("random_orthogonal", d_parent=d_p, d_child=d_c, seed=3).weight)
    assert not torch.equal(W, fit_width_map("random_orthogonal", d_parent=d_p, d_child=d_c, seed=4).weight)


def test_mapping_shapes_and_dtypes():
    X, Y, _, _ = _planted(n=100)
    wmap = fit_width_map("ridge", X, Y, d_parent=48, d_child=32, alpha=1.0)
    v = torch.randn(3, 5, 48, generator=_gen())  # [..., d_parent], float32
    out = wmap.map_directions(v)
    assert out.shape == (3, 5, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, (v.double() @ wmap.weight).float())
    torch.testing.assert_close(wmap.map_activations(X[:4]), X[:4] @ wmap.weight + wmap.bias)
    with pytest.raises(ValueError, match="d_parent=48"):
        wmap.map_directions(torch.randn(32))


def test_state_dict_round_trip(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    X, Y, _, _ = _planted(n=100)
    wmap = fit_width_map("procrustes", X, Y, d_parent=48, d_child=32, k=8)
    path = tmp_path / "wmap.safetensors"
    safetensors_torch.save_file(wmap.state_dict(), str(path))
    back = WidthMap.from_state_dict(wmap.name, safetensors_torch.load_file(str(path)), wmap.params)
    assert (back.name, back.params, back.d_parent, back.d_child) == ("procrustes", wmap.params, 48, 32)
    assert torch.equal(back.weight, wmap.weight) and torch.equal(back.bias, wmap.bias)
    with pytest.raises(ValueError, match="lacks"):
        WidthMap.from_state_dict("ridge", {"weight": wmap.weight}, {})


def test_fit_report_controls_score_worse():
    X, Y, _, _ = _planted(d_c=48)
    good = fit_width_map("ridge", X[:300], Y[:300], d_parent=48, d_child=48)
    control = fit_width_map("truncate_pad", d_parent=48, d_child=48)
    assert fit_report(good, X[300:], Y[300:])["r2"] > 0.8
    assert fit_report(control, X[300:], Y[300:])["r2"] < 0
    exact = WidthMap("exact", torch.eye(48, dtype=torch.float64), torch.zeros(48, dtype=torch.float64))
    report = fit_report(exact, Y[:50], Y[:50])
    assert report["r2"] == pytest.approx(1.0) and report["cosine_centred"] == pytest.approx(1.0)


def test_fit_errors():
    X, Y, _, _ = _planted(n=50)
    with pytest.raises(ValueError, match="options: " + ", ".join(WIDTH_MAPS)):
        fit_width_map("cca", X, Y, d_parent=48, d_child=32)
    for name in ("ridge", "procrustes"):
        with pytest.raises(ValueError, match="fitted on data"):
            fit_width_map(name, d_parent=48, d_child=32)
    with bad_shapes("same texts: got n=50 and n=49"):
        fit_width_map("ridge", X, Y[:49], d_parent=48, d_child=32)
    with pytest.raises(ValueError, match="d_parent=40, d_child=32"):
        fit_width_map("ridge", X, Y, d_parent=40, d_child=32)
    with pytest.raises(ValueError, match=r"unknown options \['k'\]; allowed: alpha, n_folds"):
        fit_width_map("ridge", X, Y, d_parent=48, d_child=32, k=3)
    with pytest.raises(ValueError, match="alpha must be finite"):
        fit_width_map("ridge", X, Y, d_parent=48, d_child=32, alpha=-1.0)
    with pytest.raises(ValueError, match="must be finite"):
        fit_width_map("ridge", X.clone().fill_(float("nan")), Y, d_parent=48, d_child=32)
