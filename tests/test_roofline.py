"""The roofline's cost model (benchmarks/roofline.py): exact work counts and the floors' ordering."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from roofline import (  # noqa: E402
    ModelShape,
    Peak,
    floor_seconds_attainable,
    floors,
    gemm_rates,
    sweep_rows,
    sweep_work,
)

SHAPE = ModelShape(n_layers=2, d_model=8, n_heads=2, n_kv_heads=1, head_dim=4, d_ff=16, vocab=32)


def test_sweep_rows_are_powers_of_two_and_the_sweeps_rows():
    assert sweep_rows(4, 19) == [1, 2, 4, 8, 16, 32, 64, 76]
    assert sweep_rows(1, 1) == [1]


def test_decode_steps_count_the_rows_still_live():
    # 2 items x 2 λ; rows (item-major within λ) generate 3, 1, 2, 1 tokens
    work = sweep_work(
        SHAPE, prompt_tokens=[20, 20], lambdas=2, new_tokens=[3, 1, 2, 1], shared_prefix=16, positions="all"
    )
    assert work.decode_rows == [4, 2, 1]
    per_lambda = sweep_work(
        SHAPE,
        prompt_tokens=[20, 20],
        lambdas=2,
        new_tokens=[3, 1, 2, 1],
        shared_prefix=16,
        positions="all",
        schedule="per_lambda",
    )
    assert per_lambda.decode_rows == [2, 2, 2, 2, 2]  # no row leaves before its λ's batch is done


def test_gemm_rate_interpolates_log_linearly_and_clamps():
    peak = Peak(flops=100.0, bandwidth=1.0, gemm={1: 10.0, 4: 40.0})
    assert peak.gemm_rate(2) == pytest.approx(20.0)  # halfway in log(rows): geometric mean
    assert peak.gemm_rate(0.5) == 10.0 and peak.gemm_rate(64) == 40.0
    with pytest.raises(ValueError, match="no GEMM rates"):
        Peak(flops=1.0, bandwidth=1.0).gemm_rate(1)


def test_attainable_floor_is_the_full_floor_when_gemms_reach_the_peak_and_longer_below_it():
    work = sweep_work(
        SHAPE, prompt_tokens=[20, 24], lambdas=3, new_tokens=[5] * 6, shared_prefix=16, positions="generated"
    )
    at_peak = Peak(flops=1e9, bandwidth=1e12, gemm={1: 1e9, 1024: 1e9})
    _, full = floors(work, at_peak)
    assert floor_seconds_attainable(work, at_peak) == pytest.approx(full)
    half = Peak(flops=1e9, bandwidth=1e12, gemm={1: 5e8, 1024: 5e8})
    assert floor_seconds_attainable(work, half) == pytest.approx(2 * full)  # compute-bound everywhere here


def test_gemm_rates_measures_every_row_count():
    rates = gemm_rates(SHAPE, [1, 3], torch.float32, repeats=1)
    assert set(rates) == {1, 3} and all(r > 0 for r in rates.values())
