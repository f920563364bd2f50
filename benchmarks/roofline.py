"""A roofline for this machine, and the floor it puts under a generation workload.

Measures what the hardware does at best (the best of --repeats, so background load inflates it least):
matmul FLOP/s (fp32, and bf16 where the device has it: on a CPU without AVX512-BF16/AMX it is emulated and
reported but not used) and memory bandwidth (a large copy, and a large sum: read-only).

Floors (seconds no implementation can beat on this machine):

* :func:`floor_seconds` = prefill FLOPs / peak FLOP/s + decode bytes / bandwidth: the classic roofline of
  generation, where prefill is compute-bound and every decode step must stream the weights and the KV
  cache it reads. It ignores decode FLOPs, so it is a loose floor when many rows decode together (on a
  2-core CPU, a 152-row decode step of SmolLM2-135M does ~40 GFLOP against ~0.6 GB of traffic).
* :func:`floor_seconds_full` = per phase, max(FLOPs / peak, bytes / bandwidth), decode FLOPs included: the
  tighter floor, and the one a batched sweep on a CPU is judged by.
* :func:`floor_seconds_attainable` = the full floor with FLOP/s measured on the model's own projections
  (:func:`gemm_rates`: Q, K, V, O, gate, up, down and the unembedding, at the row counts the sweep runs) in
  place of the n^3 peak. A 76-row decode step is a stack of skinny GEMMs that reach about half the peak on
  this CPU; this floor says how far an implementation is from what its matmul library can do at its shapes,
  the other two how far from the hardware.

:func:`sweep_work` estimates FLOPs and bytes from the model config: 2 x non-embedding parameters x tokens,
plus attention (QK and PV) over each token's context, plus the unembedding for the positions whose logits
are used; a decode step reads the weights once and the KV blocks it attends to once each (a prefix shared
by many rows counts once per step, as xsteer's static cache reads it).

  python benchmarks/roofline.py                     # print the machine's figures
  python benchmarks/roofline.py --model smollm2-135m --rows 152 --prompt 900 --shared 800 --new 128
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Peak:
    """What the machine does at best: FLOP/s of the model's dtype, and bytes/s from memory."""

    flops: float
    bandwidth: float
    dtype: str = "float32"
    device: str = "cpu"
    detail: dict[str, float] = field(default_factory=dict)
    gemm: dict[int, float] = field(default_factory=dict)  # rows -> FLOP/s of the model's projections

    def gemm_rate(self, rows: float) -> float:
        """FLOP/s of the model's projections at ``rows`` rows: log-linear between the measured row counts,
        the nearest one outside them."""
        if not self.gemm:
            raise ValueError("no GEMM rates measured: pass a ModelShape to measure()")
        xs = sorted(self.gemm)
        if rows <= xs[0]:
            return self.gemm[xs[0]]
        for lo, hi in zip(xs, xs[1:], strict=False):
            if rows <= hi:
                w = math.log(rows / lo) / math.log(hi / lo)
                return self.gemm[lo] * (self.gemm[hi] / self.gemm[lo]) ** w
        return self.gemm[xs[-1]]

    def describe(self) -> str:
        d = self.detail
        parts = [
            f"{k.removeprefix('matmul_').removesuffix('_flops')} matmul {v / 1e9:.1f} GFLOP/s"
            for k, v in d.items()
            if k.startswith("matmul_")
        ]
        parts += [
            f"{k.removesuffix('_bandwidth')} {v / 1e9:.1f} GB/s"
            for k, v in d.items()
            if k.endswith("_bandwidth")
        ]
        gemm = ", ".join(f"{r} rows {v / 1e9:.0f}" for r, v in sorted(self.gemm.items()))
        return (
            f"roofline ({self.device}): {', '.join(parts)}; floors use {self.dtype} "
            f"{self.flops / 1e9:.1f} GFLOP/s and {self.bandwidth / 1e9:.1f} GB/s"
            + (f"\n  the model's projections ({self.dtype}, GFLOP/s): {gemm}" if gemm else "")
        )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best(fn: Callable[[], Any], repeats: int, device: str) -> float:
    fn()  # warm-up: allocation, kernel selection, thread pool
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_flops(dtype: torch.dtype, *, n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """FLOP/s of an n x n x n matmul (2 n^3 FLOPs), best of ``repeats``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return 2 * n**3 / _best(lambda: a @ b, repeats, device)


def bandwidth(*, mib: int = 512, repeats: int = 5, device: str = "cpu") -> dict[str, float]:
    """Bytes/s of a large copy (read + write counted) and a large sum (read only), best of ``repeats``."""
    x = torch.ones(mib << 18, device=device)  # mib MiB of fp32
    y = torch.empty_like(x)
    nbytes = x.numel() * x.element_size()
    return {
        "copy_bandwidth": 2 * nbytes / _best(lambda: y.copy_(x), repeats, device),
        "sum_bandwidth": nbytes / _best(lambda: x.sum(), repeats, device),
    }


def bf16_is_fast(device: str) -> bool:
    """Whether bf16 matmuls run in hardware (CUDA, or a CPU with AVX512-BF16 / AMX); else they are emulated."""
    if device.startswith("cuda"):
        return True
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def gemm_rates(
    shape: ModelShape,
    rows: Sequence[int],
    dtype: torch.dtype = torch.float32,
    *,
    repeats: int = 5,
    device: str = "cpu",
) -> dict[int, float]:
    """FLOP/s of one layer's projections plus the unembedding, ``rows`` tokens at a time (``F.linear``, as
    the model runs them), best of ``repeats``; random weights of the model's shapes."""
    d, hd = shape.d_model, shape.head_dim
    outs_ins = [
        (shape.n_heads * hd, d),
        (shape.n_kv_heads * hd, d),
        (shape.n_kv_heads * hd, d),
        (d, shape.n_heads * hd),
        (shape.d_ff, d),
        (shape.d_ff, d),
        (d, shape.d_ff),
        (shape.vocab, d),
    ]
    weights = [torch.randn(o, i, device=device).to(dtype) for o, i in outs_ins]
    rates = {}
    for m in sorted(set(rows)):
        xs = [torch.randn(m, i, device=device).to(dtype) for _, i in outs_ins]

        def run(xs: list[torch.Tensor] = xs) -> None:
            for x, w in zip(xs, weights, strict=True):
                torch.nn.functional.linear(x, w)

        rates[m] = sum(2 * m * o * i for o, i in outs_ins) / _best(run, repeats, device)
    return rates


def measure(
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    repeats: int = 5,
    n: int = 2048,
    mib: int = 512,
    shape: ModelShape | None = None,
    rows: Sequence[int] = (),
) -> Peak:
    """The machine's peak FLOP/s (of ``dtype``) and bandwidth (the larger of copy and sum); with ``shape``,
    also the FLOP/s of that model's projections at ``rows`` rows (and at 1,024, the prefill's regime)."""
    detail = {"matmul_fp32_flops": matmul_flops(torch.float32, n=n, repeats=repeats, device=device)}
    if bf16_is_fast(device):
        detail["matmul_bf16_flops"] = matmul_flops(torch.bfloat16, n=n, repeats=repeats, device=device)
    else:  # emulated: a small size, just to show why it is not used
        detail["matmul_bf16(emulated)_flops"] = matmul_flops(torch.bfloat16, n=256, repeats=2, device=device)
    detail.update(bandwidth(mib=mib, repeats=repeats, device=device))
    key = (
        "matmul_bf16_flops"
        if dtype == torch.bfloat16 and "matmul_bf16_flops" in detail
        else "matmul_fp32_flops"
    )
    bw = max(detail["copy_bandwidth"], detail["sum_bandwidth"])
    gemm = gemm_rates(shape, [*rows, PREFILL_ROWS], dtype, repeats=repeats, device=device) if shape else {}
    return Peak(
        flops=detail[key],
        bandwidth=bw,
        dtype=str(dtype).removeprefix("torch."),
        device=device,
        detail=detail,
        gemm=gemm,
    )


PREFILL_ROWS = (
    1024  # a prefill forward runs hundreds to thousands of tokens: its GEMMs are measured at this size
)


def sweep_rows(items: int, lambdas: int) -> list[int]:
    """Row counts to measure the projections at for a sweep: powers of two below its rows, and its rows."""
    n = items * lambdas
    return sorted({*(2**k for k in range(n.bit_length()) if 2**k < n), n})


# ---------------------------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class ModelShape:
    """What the cost model needs of a decoder-only transformer."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab: int
    bytes_per_param: int = 4

    @classmethod
    def from_config(cls, cfg: Any, dtype: torch.dtype = torch.float32) -> ModelShape:
        cfg = getattr(cfg, "text_config", cfg)
        heads = cfg.num_attention_heads
        return cls(
            n_layers=cfg.num_hidden_layers,
            d_model=cfg.hidden_size,
            n_heads=heads,
            n_kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
            head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
            d_ff=getattr(cfg, "intermediate_size", 4 * cfg.hidden_size),
            vocab=cfg.vocab_size,
            bytes_per_param=torch.empty((), dtype=dtype).element_size(),
        )

    @property
    def non_embedding_params(self) -> int:
        """Per layer: Q and O (d x heads*hd each), K and V (d x kv*hd each), a gated MLP (3 x d x d_ff)."""
        attn = (
            2 * self.d_model * self.n_heads * self.head_dim
            + 2 * self.d_model * self.n_kv_heads * self.head_dim
        )
        return self.n_layers * (attn + 3 * self.d_model * self.d_ff)

    @property
    def unembed_params(self) -> int:
        return self.vocab * self.d_model

    @property
    def weight_bytes(self) -> int:
        """Weights a forward streams: the layers and the unembedding (the embedding is a gather)."""
        return (self.non_embedding_params + self.unembed_params) * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * self.bytes_per_param

    def attention_flops(self, queries: int, context_before: int) -> float:
        """QK and PV FLOPs of ``queries`` new tokens after ``context_before`` cached ones (causal among themselves)."""
        pairs = queries * context_before + queries * (queries + 1) / 2
        return 4 * self.n_layers * self.n_heads * self.head_dim * pairs


@dataclass
class Work:
    """FLOPs and bytes of a generation workload, by phase; decode is kept per step for the per-step max."""

    prefill_flops: float = 0.0
    prefill_bytes: float = 0.0
    decode_flops: list[float] = field(default_factory=list)
    decode_bytes: list[float] = field(default_factory=list)
    decode_rows: list[int] = field(default_factory=list)

    def __add__(self, other: Work) -> Work:
        return Work(
            self.prefill_flops + other.prefill_flops,
            self.prefill_bytes + other.prefill_bytes,
            self.decode_flops + other.decode_flops,
            self.decode_bytes + other.decode_bytes,
            self.decode_rows + other.decode_rows,
        )

    def add_step(self, flops: float, nbytes: float, rows: int) -> None:
        self.decode_flops.append(flops)
        self.decode_bytes.append(nbytes)
        self.decode_rows.append(rows)

    def summary(self) -> dict[str, float]:
        return {
            "prefill_TFLOP": self.prefill_flops / 1e12,
            "decode_TFLOP": sum(self.decode_flops) / 1e12,
            "decode_GB": sum(self.decode_bytes) / 1e9,
            "decode_steps": len(self.decode_flops),
        }


def prefill(
    shape: ModelShape, blocks: Sequence[tuple[int, int]], *, logits_rows: int, forwards: int = 1
) -> Work:
    """Prefill of ``blocks`` = [(new tokens, cached tokens before them)] in ``forwards`` forward passes,
    keeping ``logits_rows`` logits."""
    tokens = sum(n for n, _ in blocks)
    flops = 2 * shape.non_embedding_params * tokens + sum(shape.attention_flops(n, c) for n, c in blocks)
    flops += 2 * shape.unembed_params * logits_rows
    # weights once per forward, each block's KV written once
    nbytes = shape.weight_bytes * forwards + shape.kv_bytes_per_token * tokens
    return Work(prefill_flops=flops, prefill_bytes=nbytes)


def decode_step(shape: ModelShape, contexts: Sequence[int], kv_read_tokens: int) -> tuple[float, float]:
    """One decode step of rows whose contexts (tokens attended) are ``contexts``; ``kv_read_tokens`` is the KV
    the step must read (shared blocks once). Returns (FLOPs, bytes)."""
    rows = len(contexts)
    flops = 2 * (shape.non_embedding_params + shape.unembed_params) * rows
    flops += sum(shape.attention_flops(1, c) for c in contexts)
    return flops, shape.weight_bytes + shape.kv_bytes_per_token * (kv_read_tokens + rows)


def sweep_work(
    shape: ModelShape,
    *,
    prompt_tokens: Sequence[int],
    lambdas: int,
    new_tokens: Sequence[int],
    shared_prefix: int,
    positions: str,
    schedule: str = "shared",
) -> Work:
    """FLOPs and bytes of a λ sweep: every prompt (``prompt_tokens`` per item) generated at every λ.

    ``new_tokens``: the forwards each row runs after prefill (one per (item, λ) row, item-major within λ:
    row = λ_index * items + item). ``schedule``:

    * ``"shared"`` (the least work the sweep needs; xsteer's static cache): the few-shot prefix
      (``shared_prefix`` tokens) prefilled once per distinct λ at positions "all", once in all at "generated"
      (where each prompt's rest is also prefilled once per item, not per λ); decode reads each shared
      block once per step.
    * ``"per_lambda"`` (what a user of forward hooks runs: ``model.generate`` once per λ on the items, every
      row with its own full cache, no row leaving before its batch is done).
    """
    items = len(prompt_tokens)
    if len(new_tokens) != items * lambdas:
        raise ValueError(f"new_tokens must have {items * lambdas} values, got {len(new_tokens)}")
    work = Work()
    if schedule == "per_lambda":
        for j in range(lambdas):
            steps = max(new_tokens[j * items : (j + 1) * items])
            width = max(prompt_tokens)  # left-padded: every row runs the longest prompt
            work += prefill(shape, [(width, 0)] * items, logits_rows=items)  # one padded forward
            for s in range(steps):
                ctx = [width + s] * items
                f, b = decode_step(shape, ctx, kv_read_tokens=sum(ctx))
                work.add_step(f, b, items)
        return work
    if schedule != "shared":
        raise ValueError(f"unknown schedule {schedule!r}")
    rows = [(i, j) for j in range(lambdas) for i in range(items)]
    p = shared_prefix
    if positions == "generated":
        blocks = (
            [(p, 0)] + [(n - 1 - p, p) for n in prompt_tokens] + [(1, n - 1) for n in prompt_tokens] * lambdas
        )
        work += prefill(shape, blocks, logits_rows=len(rows), forwards=3)  # prefix, rests, last tokens
        shared_read = p + sum(n - 1 - p for n in prompt_tokens)
        own0 = {r: 1 for r in rows}
    else:
        blocks = [(p, 0)] * lambdas + [(prompt_tokens[i] - p, p) for i, _ in rows]
        work += prefill(shape, blocks, logits_rows=len(rows), forwards=2)  # prefixes, suffixes
        shared_read = p * lambdas
        own0 = {(i, j): prompt_tokens[i] - p for i, j in rows}
    steps = max(new_tokens)
    for s in range(steps):
        live = [r for k, r in enumerate(rows) if new_tokens[k] > s]
        if not live:
            break
        ctx = [prompt_tokens[i] + s for i, _ in live]
        f, b = decode_step(shape, ctx, kv_read_tokens=shared_read + sum(own0[r] + s for r in live))
        work.add_step(f, b, len(live))
    return work


def floor_seconds(prefill_flops: float, decode_bytes: float, peak: Peak) -> float:
    """The classic generation floor: prefill at peak FLOP/s, decode at full memory bandwidth."""
    return prefill_flops / peak.flops + decode_bytes / peak.bandwidth


def floor_seconds_full(work: Work, peak: Peak) -> float:
    """Per phase (and per decode step) the slower of compute and memory: decode FLOPs count too."""
    t = max(work.prefill_flops / peak.flops, work.prefill_bytes / peak.bandwidth)
    return t + sum(
        max(f / peak.flops, b / peak.bandwidth)
        for f, b in zip(work.decode_flops, work.decode_bytes, strict=True)
    )


def floor_seconds_attainable(work: Work, peak: Peak) -> float:
    """The full floor at the FLOP/s the model's own projections reach: prefill at :data:`PREFILL_ROWS` rows,
    each decode step at its live rows."""
    t = max(work.prefill_flops / peak.gemm_rate(PREFILL_ROWS), work.prefill_bytes / peak.bandwidth)
    return t + sum(
        max(f / peak.gemm_rate(r), b / peak.bandwidth)
        for f, b, r in zip(work.decode_flops, work.decode_bytes, work.decode_rows, strict=True)
    )


def floors(work: Work, peak: Peak) -> tuple[float, float]:
    """(floor_seconds, floor_seconds_full) of a workload."""
    return floor_seconds(work.prefill_flops, sum(work.decode_bytes), peak), floor_seconds_full(work, peak)


def versus_floor(wall: float, work: Work, peak: Peak) -> str:
    """'achieved / floor' figures to print beside a wall time."""
    f, full = floors(work, peak)
    out = f"{wall / f:.2f}x the floor ({f:.1f} s), {wall / full:.2f}x the full floor ({full:.1f} s)"
    if peak.gemm:
        att = floor_seconds_attainable(work, peak)
        out += f", {wall / att:.2f}x the attainable floor ({att:.1f} s)"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=2048, help="matmul n (n x n x n)")
    ap.add_argument("--mib", type=int, default=512, help="bandwidth buffer size")
    ap.add_argument(
        "--model", default=None, help="also print the floor of a sweep on this model (config only)"
    )
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--lambdas", type=int, default=19)
    ap.add_argument("--prompt", type=int, default=900, help="prompt tokens per item")
    ap.add_argument("--shared", type=int, default=800, help="few-shot prefix tokens shared by all prompts")
    ap.add_argument("--new", type=int, default=128, help="new tokens per row")
    args = ap.parse_args()
    print(f"machine: torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    dtype = getattr(torch, args.dtype)
    shape = None
    if args.model:
        from xsteer.core.models import load_hf

        hf, _, _ = load_hf(args.model)
        shape = ModelShape.from_config(hf.config, dtype)
        print(f"model {args.model}: {shape}; non-embedding params {shape.non_embedding_params / 1e6:.1f}M")
    rows = sweep_rows(args.items, args.lambdas)
    peak = measure(
        args.device, dtype, repeats=args.repeats, n=args.size, mib=args.mib, shape=shape, rows=rows
    )
    print(peak.describe())
    print(json.dumps(asdict(peak)))
    if shape is None:
        return
    for positions in ("generated", "all"):
        for schedule in ("shared", "per_lambda"):
            work = sweep_work(
                shape,
                prompt_tokens=[args.prompt] * args.items,
                lambdas=args.lambdas,
                new_tokens=[args.new] * (args.items * args.lambdas),
                shared_prefix=args.shared,
                positions=positions,
                schedule=schedule,
            )
            f, full = floors(work, peak)
            att = floor_seconds_attainable(work, peak)
            summ = ", ".join(f"{k} {v:.3g}" for k, v in work.summary().items())
            print(
                f"  positions={positions:<9} {schedule:<10} floor {f:7.1f} s   full floor {full:7.1f} s   "
                f"attainable {att:7.1f} s   ({summ})"
            )


if __name__ == "__main__":
    main()
