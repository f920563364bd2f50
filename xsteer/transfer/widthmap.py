"""Width maps: carry vectors from the parent's residual space (d_parent) to the child's (d_child).

Row-vector convention throughout. Activations map affinely, ``X @ weight + bias``;
steering *directions* map linearly, ``v @ weight``: a direction is a difference of
activations, so the offset cancels.

Fitted maps learn from paired activations of the same texts: ``X`` (parent,
``[n, d_parent]``) and ``Y`` (child, ``[n, d_child]``). See the field survey,
section 2, for where each method comes from. ``truncate_pad`` and
``random_orthogonal`` are controls, not transfers: residual bases of unrelated models
are arbitrary, so copying coordinates has no geometric meaning.

The methods form a registry (:data:`WIDTH_MAPS`); :func:`register_width_map` adds a
user's fitting function under a name, so the CLI and configs accept it too.

Fits run in float64 and the stored weight and bias are float64; the ``map_*``
methods return the dtype of their input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from xsteer.errors import InputError

# Ridge penalties tried by cross-validation, relative to trace(Xc^T Xc) / d_parent
# (the mean eigenvalue of the scatter matrix), so the grid is invariant to activation scale.
RIDGE_GRID = tuple(10.0**e for e in range(-6, 4))


# eq=False: field-wise == on tensors is ambiguous, and identity hashing is what we want.
@dataclass(frozen=True, eq=False)
class WidthMap:
    """A fitted map from parent to child residual space: ``X @ weight + bias``."""

    name: str
    weight: Float[Tensor, "d_parent d_child"]
    bias: Float[Tensor, " d_child"]
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.weight.ndim != 2 or self.bias.ndim != 1 or self.bias.shape[0] != self.weight.shape[1]:
            raise InputError(
                f"WidthMap needs weight [d_parent, d_child] and bias [d_child], "
                f"got {tuple(self.weight.shape)} and {tuple(self.bias.shape)}"
            )

    @property
    def d_parent(self) -> int:
        return self.weight.shape[0]

    @property
    def d_child(self) -> int:
        return self.weight.shape[1]

    def _check_input(self, v: Tensor) -> None:
        if v.shape[-1] != self.d_parent:
            raise InputError(
                f"width map {self.name!r} takes d_parent={self.d_parent} inputs, got {v.shape[-1]}"
            )

    def map_directions(self, v: Float[Tensor, "... d_parent"]) -> Float[Tensor, "... d_child"]:
        """Map steering directions: ``v @ weight`` (no bias)."""
        self._check_input(v)
        return (v.to(self.weight.dtype) @ self.weight).to(v.dtype)

    def map_activations(self, X: Float[Tensor, "... d_parent"]) -> Float[Tensor, "... d_child"]:
        """Map activations: ``X @ weight + bias``."""
        self._check_input(X)
        return (X.to(self.weight.dtype) @ self.weight + self.bias).to(X.dtype)

    def state_dict(self) -> dict[str, Tensor]:
        """``{"weight", "bias"}`` as contiguous tensors, ready for ``safetensors.torch.save_file``.

        ``name`` and ``params`` are not tensors; store them alongside (e.g. as JSON metadata).
        """
        return {"weight": self.weight.contiguous(), "bias": self.bias.contiguous()}

    @classmethod
    def from_state_dict(
        cls, name: str, tensors: dict[str, Tensor], params: dict[str, Any] | None = None
    ) -> WidthMap:
        """Rebuild a map from :meth:`state_dict` output plus its name and params."""
        missing = {"weight", "bias"} - tensors.keys()
        if missing:
            raise InputError(f"width-map state dict lacks {sorted(missing)}")
        return cls(name, tensors["weight"], tensors["bias"], dict(params or {}))


# --------------------------------------------------------------------------- fitting


def _check_data(
    name: str, X: Tensor | None, Y: Tensor | None, d_parent: int, d_child: int
) -> tuple[Tensor, Tensor]:
    if X is None or Y is None:
        raise InputError(f"width map {name!r} is fitted on data: pass X [n, d_parent] and Y [n, d_child]")
    if X.ndim != 2 or Y.ndim != 2:
        raise InputError(f"X and Y must be [n, d] matrices, got {tuple(X.shape)} and {tuple(Y.shape)}")
    if X.shape[1] != d_parent or Y.shape[1] != d_child:
        raise InputError(
            f"X is [n, {X.shape[1]}] and Y is [n, {Y.shape[1]}] but d_parent={d_parent}, d_child={d_child}"
        )
    if X.shape[0] != Y.shape[0]:
        raise InputError(f"X and Y must pair the same texts: got n={X.shape[0]} and n={Y.shape[0]}")
    if X.shape[0] < 2:
        raise InputError(f"width map {name!r} needs at least 2 paired examples, got {X.shape[0]}")
    if not (torch.isfinite(X).all() and torch.isfinite(Y).all()):
        raise InputError("X and Y must be finite (found NaN or inf)")
    return X.to(torch.float64), Y.to(torch.float64)


def _identity(d_parent: int, d_child: int) -> Tensor:
    if d_parent != d_child:
        raise InputError(
            f"width map 'identity' needs equal widths, got d_parent={d_parent}, d_child={d_child}; "
            "use 'ridge' or 'procrustes' (fitted), or 'truncate_pad' as a control"
        )
    return torch.eye(d_parent, dtype=torch.float64)


def _truncate_pad(d_parent: int, d_child: int) -> Tensor:
    # A control: keeps the first min(d) coordinates, as if the bases were shared.
    return torch.eye(d_parent, d_child, dtype=torch.float64)


def _random_orthogonal(d_parent: int, d_child: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    big, small = max(d_parent, d_child), min(d_parent, d_child)
    q, r = torch.linalg.qr(torch.randn(big, small, generator=gen, dtype=torch.float64))
    # Fixing the column signs by diag(R) makes Q Haar-distributed, not biased by QR's convention.
    q = q * torch.sign(torch.diagonal(r))
    # Orthonormal rows when d_parent <= d_child (an isometry into the child space);
    # orthonormal columns otherwise (a random projection, which cannot preserve norms).
    return q.T if d_parent <= d_child else q


def _ridge_solve(x: Tensor, y: Tensor, alphas: list[float]) -> tuple[Tensor, Tensor, Tensor]:
    """SVD of centred x; returns (V, the shrunk singular factors per alpha, U^T y)."""
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    # Thin SVD is the min(n, d)-sized problem, so n < d costs like the dual/kernel form.
    # Singular values at round-off level are dropped so alpha = 0 gives min-norm OLS.
    keep = s > s.max() * max(x.shape) * torch.finfo(s.dtype).eps
    a = torch.tensor(alphas, dtype=s.dtype)[:, None]
    shrink = torch.where(keep, s / (s.square() + a).clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
    return vh.T, shrink, u.T @ y


def _ridge_cv(x: Tensor, y: Tensor, alphas: list[float], n_folds: int, seed: int) -> list[float]:
    """Mean held-out squared error for each alpha, K-fold, centring on the training folds.

    Each fold eigen-decomposes the smaller Gram matrix once (n x n when n < d: kernel ridge's form) and reads
    every alpha off it: the SVD of the data gives the same errors but costs several times more on the
    wide (n < d) fit sets of a transfer map."""
    n = x.shape[0]
    folds = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).chunk(min(n_folds, n))
    sse = torch.zeros(len(alphas), dtype=torch.float64)
    for held in folds:
        train = torch.ones(n, dtype=torch.bool)
        train[held] = False
        mx, my = x[train].mean(0), y[train].mean(0)
        xt, yt, xh = x[train] - mx, y[train] - my, x[held] - mx
        if xt.shape[0] < xt.shape[1]:  # W = xt^T (xt xt^T + a)^-1 yt
            lam, q = torch.linalg.eigh(xt @ xt.T)
            left, right = (xh @ xt.T) @ q, q.T @ yt
        else:  # W = (xt^T xt + a)^-1 xt^T yt
            lam, q = torch.linalg.eigh(xt.T @ xt)
            left, right = xh @ q, q.T @ (xt.T @ yt)
        lam = lam.clamp_min(0.0)  # a PSD Gram's round-off negatives
        for i, a in enumerate(alphas):
            pred = (left / (lam + a).clamp_min(torch.finfo(lam.dtype).tiny)) @ right + my
            sse[i] += (pred - y[held]).square().sum()
    return (sse / n).tolist()


def _ridge(
    x: Tensor, y: Tensor, seed: int, alpha: float | None = None, n_folds: int = 5
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    scale = float(xc.square().sum()) / x.shape[1]
    if alpha is None:
        if n_folds < 2 or x.shape[0] < 4:
            raise InputError("choosing ridge alpha by CV needs n_folds >= 2 and n >= 4; pass alpha= instead")
        grid = [scale * r for r in RIDGE_GRID]
        errors = _ridge_cv(x, y, grid, n_folds, seed)
        best = min(range(len(grid)), key=errors.__getitem__)
        alpha = grid[best]
        params = {
            "alpha": alpha,
            "alpha_relative": RIDGE_GRID[best],
            "alpha_from": f"{n_folds}-fold CV",
            # An optimum on the grid's edge means the grid, not the data, chose alpha.
            "alpha_at_grid_edge": best in (0, len(grid) - 1),
        }
    else:
        if not (alpha >= 0 and math.isfinite(alpha)):
            raise InputError(f"ridge alpha must be finite and >= 0, got {alpha}")
        relative = float(alpha) / scale if scale else math.nan
        params = {"alpha": float(alpha), "alpha_relative": relative, "alpha_from": "given"}
    weight = _ridge_at(xc, yc, alpha)
    return weight, my - mx @ weight, params


def _ridge_at(xc: Tensor, yc: Tensor, alpha: float) -> Tensor:
    """The ridge weight at one alpha for centred data: a Cholesky solve of the smaller Gram matrix (n x n when
    n < d, the dual form X^T (X X^T + alpha I)^-1 Y; else the primal). The SVD route gives the same weight to
    round-off but costs ~50x more, and a fidelity measurement fits one map per layer and bootstrap replicate.
    alpha = 0 (min-norm OLS) and a Gram too ill-conditioned to factor keep the SVD."""
    n, d = xc.shape
    if alpha > 0:
        gram = xc @ xc.T if n < d else xc.T @ xc
        gram.diagonal().add_(alpha)
        chol, info = torch.linalg.cholesky_ex(gram)
        if int(info) == 0:
            if n < d:
                return xc.T @ torch.cholesky_solve(yc, chol)
            return torch.cholesky_solve(xc.T @ yc, chol)
    v, shrink, uty = _ridge_solve(xc, yc, [alpha])
    return (v * shrink[0]) @ uty


def _top_pcs(z: Tensor, k: int) -> Tensor:
    return torch.linalg.svd(z, full_matrices=False)[2][:k].T


def _procrustes(
    x: Tensor, y: Tensor, k: int | None = None, scale: bool = False
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    k_max = min(x.shape[1], y.shape[1], x.shape[0] - 1)
    k = k_max if k is None else k
    if not 1 <= k <= k_max:
        raise InputError(f"procrustes k must be in 1..{k_max} (= min(d_parent, d_child, n - 1)), got {k}")
    px, py = _top_pcs(xc, k), _top_pcs(yc, k)
    zx, zy = xc @ px, yc @ py
    u, sv, vh = torch.linalg.svd(zx.T @ zy)
    rot = u @ vh
    # Least-squares isotropic scale for zx @ rot ~ zy; off by default so that
    # directions keep their norm inside the shared subspace.
    s = float(sv.sum() / zx.square().sum()) if scale else 1.0
    weight = s * (px @ rot @ py.T)
    return weight, my - mx @ weight, {"k": k, "scale": s}


def _anchor(
    x: Tensor, y: Tensor, n_anchors: int | None = None, eps: float = 1e-3
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Anchor projection (relative representations; Kim & Han 2026's anchor coordinate space).

    Both models see the same anchor texts. A parent vector is expressed by its cosines with the parent's
    centred, unit-norm anchor activations; the child vector is the smallest one with the same coordinates
    against the child's anchors (a ridge-regularised pseudo-inverse, ``eps`` relative to the Gram's mean
    eigenvalue). Nothing is fitted to a loss: the anchors alone define the map. Activations are rescaled by
    the ratio of the two models' mean centred norms, so the held-out fit report is comparable to the others.
    """
    k = x.shape[0] if n_anchors is None else n_anchors
    if not 2 <= k <= x.shape[0]:
        raise InputError(f"anchor n_anchors must be in 2..{x.shape[0]} (the paired texts), got {k}")
    mx, my = x.mean(0), y.mean(0)
    ax, ay = x[:k] - mx, y[:k] - my
    ax_hat = ax / ax.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    ay_hat = ay / ay.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    gram = ay_hat @ ay_hat.T
    reg = eps * float(torch.diagonal(gram).mean())
    rebuild = torch.linalg.solve(gram + reg * torch.eye(k, dtype=gram.dtype), ay_hat)  # [k, d_child]
    # Coordinates against unit anchors keep the parent's scale; the ratio of mean centred norms puts the
    # child's back, so mapped activations are comparable with true ones in the fit report.
    scale = float((y - my).norm(dim=-1).mean() / (x - mx).norm(dim=-1).mean().clamp_min(1e-30))
    weight = scale * (ax_hat.T @ rebuild)
    return weight, my - mx @ weight, {"n_anchors": k, "eps": eps, "scale": scale}


@dataclass(frozen=True)
class WidthMapKind:
    """A width-map method: ``fit(x, y, d_parent, d_child, seed, **options) -> (weight, bias, params)``."""

    name: str
    fit: Callable[..., tuple[Tensor, Tensor, dict[str, Any]]]
    options: frozenset[str] = frozenset()
    needs_data: bool = True  # fitted on paired activations (else built from the widths alone)
    control: bool = False  # a null control, not a transfer method
    description: str = ""


def _no_bias(
    weight_fn: Callable[[int, int, int], Tensor],
) -> Callable[..., tuple[Tensor, Tensor, dict[str, Any]]]:
    def fit(
        x: Tensor | None, y: Tensor | None, d_parent: int, d_child: int, seed: int
    ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        return weight_fn(d_parent, d_child, seed), torch.zeros(d_child, dtype=torch.float64), {}

    return fit


def _ridge_fit(
    x: Tensor, y: Tensor, d_parent: int, d_child: int, seed: int, **options: Any
) -> tuple[Tensor, Tensor, dict[str, Any]]:
    weight, bias, params = _ridge(x, y, seed, **options)
    return weight, bias, {**params, "seed": seed}


WIDTH_MAPS: dict[str, WidthMapKind] = {
    k.name: k
    for k in (
        WidthMapKind(
            "identity",
            _no_bias(lambda dp, dc, s: _identity(dp, dc)),
            needs_data=False,
            description="d_parent == d_child only",
        ),
        WidthMapKind(
            "truncate_pad",
            _no_bias(lambda dp, dc, s: _truncate_pad(dp, dc)),
            needs_data=False,
            control=True,
            description="first min(d) coordinates (a literal reading of the paper; a control)",
        ),
        WidthMapKind(
            "random_orthogonal",
            lambda x, y, dp, dc, s: (
                _random_orthogonal(dp, dc, s),
                torch.zeros(dc, dtype=torch.float64),
                {"seed": s},
            ),
            needs_data=False,
            control=True,
            description="seeded random semi-orthogonal map (a null control)",
        ),
        WidthMapKind(
            "ridge",
            _ridge_fit,
            frozenset({"alpha", "n_folds"}),
            description="affine least squares, penalty chosen by cross-validation",
        ),
        WidthMapKind(
            "procrustes",
            lambda x, y, dp, dc, s, **o: _procrustes(x, y, **o),
            frozenset({"k", "scale"}),
            description="orthogonal map between the top-k principal subspaces",
        ),
        WidthMapKind(
            "anchor",
            lambda x, y, dp, dc, s, **o: _anchor(x, y, **o),
            frozenset({"n_anchors", "eps"}),
            description="anchor projection: relative coordinates on shared anchor texts (training-free)",
        ),
    )
}


def register_width_map(
    name: str,
    fit: Callable[..., tuple[Tensor, Tensor, dict[str, Any]]],
    *,
    options: set[str] | frozenset[str] = frozenset(),
    needs_data: bool = True,
    description: str = "",
) -> WidthMapKind:
    """Add a width-map method: ``fit(x, y, d_parent, d_child, seed, **options) -> (weight, bias, params)``
    with ``x`` [n, d_parent] and ``y`` [n, d_child] float64 paired activations (None if not ``needs_data``)."""
    if not callable(fit):
        raise InputError(f"a width-map fit must be callable, got {type(fit).__name__}")
    WIDTH_MAPS[name] = WidthMapKind(name, fit, frozenset(options), needs_data, False, description)
    return WIDTH_MAPS[name]


def fit_width_map(
    name: str,
    X: Float[Tensor, "n d_parent"] | None = None,
    Y: Float[Tensor, "n d_child"] | None = None,
    *,
    d_parent: int,
    d_child: int,
    seed: int = 0,
    **options: Any,
) -> WidthMap:
    """Build the width map called ``name`` (a key of :data:`WIDTH_MAPS`).

    - ``identity``: d_parent == d_child only.
    - ``truncate_pad``: copy the first min(d) coordinates, zero the rest. CONTROL: no
      geometric meaning across models; kept because it is a literal reading of the paper.
    - ``random_orthogonal``: seeded random semi-orthogonal map. Null CONTROL;
      norm-preserving when d_parent <= d_child.
    - ``ridge``: affine least squares with penalty ``alpha * ||W||^2`` on centred X, Y;
      bias = mean_Y - mean_X @ W. ``alpha=None`` (default) picks it by ``n_folds``-fold
      CV (default 5) over ``RIDGE_GRID * trace(Xc^T Xc) / d_parent``. ``alpha=0`` is
      min-norm OLS. Works for n < d_parent (solved through the thin SVD of Xc).
    - ``anchor``: anchor projection (training-free): a parent vector's dot products with the
      parent's centred unit anchor activations (the first ``n_anchors`` texts, default all) are
      reproduced against the child's anchors by the minimum-norm child vector (see :func:`_anchor`).
    - ``procrustes``: PCA both sides to ``k`` dims (default min(d_parent, d_child, n-1)),
      orthogonal Procrustes between the coordinates; weight = P_x R P_y^T,
      bias = mean_Y - mean_X @ weight. ``scale=True`` adds a least-squares isotropic scale.

    ``X``/``Y`` are needed by ridge and procrustes and checked if given to the others.
    Unknown ``options`` for the chosen method are an error.
    """
    if name not in WIDTH_MAPS:
        raise InputError(f"unknown width map {name!r}; options: {', '.join(WIDTH_MAPS)}")
    kind = WIDTH_MAPS[name]
    for label, d in (("d_parent", d_parent), ("d_child", d_child)):
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise InputError(f"{label} must be a positive int, got {d!r}")
    unknown = set(options) - kind.options
    if unknown:
        allowed = ", ".join(sorted(kind.options)) or "none"
        raise InputError(f"width map {name!r} got unknown options {sorted(unknown)}; allowed: {allowed}")
    x = y = None
    if kind.needs_data or X is not None or Y is not None:
        x, y = _check_data(name, X, Y, d_parent, d_child)
    weight, bias, params = kind.fit(x, y, d_parent, d_child, seed, **options)
    return WidthMap(name, weight, bias, params)


def fit_report(
    wmap: WidthMap, X_heldout: Float[Tensor, "n d_parent"], Y_heldout: Float[Tensor, "n d_child"]
) -> dict[str, float | int]:
    """How well ``wmap`` predicts held-out child activations from parent ones.

    - ``r2``: 1 - SSE / SST summed over all child dims (variance-weighted R^2), with SST
      around the held-out child mean. 1 is perfect; 0 is no better than that mean;
      negative is worse (controls usually are).
    - ``cosine``: mean over examples of cos(mapped x, true y) on raw activations. Residual
      streams carry a large shared mean, so this is high even for poor maps.
    - ``cosine_centred``: the same after subtracting the held-out child mean from both
      the mapped and the true activations; whether the map gets each example's deviation
      from the average in the right direction.
    - ``mse``: mean squared error per child coordinate; ``n``: held-out examples.
    """
    x, y = _check_data(wmap.name, X_heldout, Y_heldout, wmap.d_parent, wmap.d_child)
    pred = wmap.map_activations(x)
    mean = y.mean(0)
    sse = (pred - y).square().sum()
    sst = (y - mean).square().sum()

    def mean_cos(a: Tensor, b: Tensor) -> float:
        return float(torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-300).mean())

    return {
        "r2": float(1 - sse / sst),
        "cosine": mean_cos(pred, y),
        "cosine_centred": mean_cos(pred - mean, y - mean),
        "mse": float(sse / y.numel()),
        "n": y.shape[0],
    }
