"""Extraction cost vs a plain forward pass over the same texts in the same batches.

Phases (the texts are the pairs' positives then negatives, the order extract() streams them):

  extract  xsteer.extraction.extract.extract: keeps the last token of each hook_resid_post, stops after the last layer
  forward  model(input_ids, attention_mask=...) with full logits, under inference_mode
  cache    run_with_cache of every hook_resid_post: the naive full-sequence cache, for contrast

Each phase reports the median wall time of --repeats runs and its peak memory above the memory just
before it: host RSS (VmHWM, reset through /proc/self/clear_refs) on CPU, allocated memory on CUDA.
Target: extraction_peak_extra <= 1.2 * forward_peak_extra.

Full size (CPU):
  HF_HUB_OFFLINE=1 python benchmarks/extract.py --data-dir /work/shared/data
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _common import setup
from roofline import ModelShape, prefill, versus_floor
from roofline import measure as measure_peak

from xsteer.core.models import encode
from xsteer.core.models.backend import hf_config
from xsteer.extraction.extract import extract
from xsteer.extraction.pairs import build_pairs
from xsteer.tasks.data import load_examples

MiB = 2**20


def status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise KeyError(field)


def release_freed_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    else:
        # glibc keeps freed heap pages mapped; without this a phase reusing them would look free of cost.
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure(fn: Callable[[], object], repeats: int, device: str) -> tuple[float, float, int]:
    """Median wall and CPU time of `repeats` calls of fn, and the peak memory above the memory before them."""
    cuda = device.startswith("cuda")
    release_freed_memory(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = status_bytes("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if cuda:
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = torch.cuda.max_memory_allocated() if cuda else status_bytes("VmHWM")
    return statistics.median(wall), statistics.median(cpu), peak - base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n-pairs", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args, model = setup(ap)
    peak = measure_peak(args.device, next(model.parameters()).dtype)
    print(peak.describe())
    examples = load_examples("gsm8k", "train", data_dir=args.data_dir, limit=args.n_pairs)
    pairs = build_pairs("corrupted_answer", examples, model.tokenizer, task="gsm8k")
    texts = [p.positive for p in pairs] + [p.negative for p in pairs]
    bs = args.batch_size
    # Tokenized once up front for the two baselines; extract() tokenizes inside (milliseconds).
    batches = [encode(model.tokenizer, texts[i : i + bs]) for i in range(0, len(texts), bs)]

    def run_extract() -> None:
        extract(model, pairs, batch_size=bs, progress=False)

    def run_forward() -> None:
        with torch.inference_mode():
            for enc in batches:
                model(enc.input_ids.to(args.device), attention_mask=enc.attention_mask.to(args.device))

    def run_cache() -> None:
        with torch.inference_mode():
            for enc in batches:
                model.run_with_cache(
                    enc.input_ids.to(args.device),
                    attention_mask=enc.attention_mask.to(args.device),
                    names_filter=lambda n: n.endswith("hook_resid_post"),
                )

    # Warm-up: the weights are memory-mapped and only become resident (+1x weights of RSS) on first use,
    # which would otherwise be charged to whichever phase runs first.
    with torch.inference_mode():
        model(batches[0].input_ids.to(args.device), attention_mask=batches[0].attention_mask.to(args.device))
    release_freed_memory(args.device)
    baseline = torch.cuda.memory_allocated() if args.device.startswith("cuda") else status_bytes("VmRSS")
    results = {
        name: measure(fn, args.repeats, args.device)
        for name, fn in [("extract", run_extract), ("forward", run_forward), ("cache", run_cache)]
    }

    cfg = model.cfg
    n_texts = len(texts)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    seq_lens = [enc.input_ids.shape[1] for enc in batches]
    tokens = sum(enc.input_ids.numel() for enc in batches)  # padded, as the model sees them
    widest = max(batches, key=lambda enc: enc.input_ids.numel()).input_ids.shape
    f32 = 4  # activations are read out as float32

    print(
        f"\n{len(pairs)} pairs = {n_texts} texts in {len(batches)} batches of <= {bs}; "
        f"padded length {min(seq_lens)}..{max(seq_lens)}, {tokens} padded tokens"
    )
    # CPU seconds (all threads) as well as wall: on a shared machine wall time mostly measures the neighbours.
    # Floors (benchmarks/roofline.py): every padded token through every layer; extraction needs no logits,
    # the forward and the cache phases compute them at every position.
    shape = ModelShape.from_config(hf_config(model), next(model.parameters()).dtype)
    blocks = [(enc.input_ids.shape[1], 0) for enc in batches for _ in range(enc.input_ids.shape[0])]
    work = {
        name: prefill(shape, blocks, logits_rows=0 if name == "extract" else tokens, forwards=len(batches))
        for name in results
    }
    print(
        f"{'phase':<9}{'wall s':>9}{'cpu s':>9}{'texts/s':>9}{'pairs/s':>9}{'vs forward':>12}{'peak extra MiB':>16}"
        "   achieved ÷ roofline floor"
    )
    t_fwd, _, m_fwd = results["forward"]
    for name, (t, c, mem) in results.items():
        print(
            f"{name:<9}{t:>9.3f}{c:>9.3f}{n_texts / t:>9.2f}{len(pairs) / t:>9.2f}{t / t_fwd:>11.2f}x{mem / MiB:>16.1f}"
            f"   {versus_floor(t, work[name], peak)}"
        )

    m_ext = results["extract"][2]
    print(
        f"\nmodel weights (parameter bytes): {weights / MiB:.1f} MiB; post-load baseline (after warm-up): {baseline / MiB:.1f} MiB"
    )
    print(
        f"extraction / forward peak extra: {m_ext / MiB:.1f} / {m_fwd / MiB:.1f} MiB = {m_ext / max(m_fwd, 1):.2f}"
    )
    ok = m_ext <= 1.2 * m_fwd
    print(f"extraction_peak_extra <= 1.2 * forward_peak_extra: {'PASS' if ok else 'FAIL'}")

    b, s = widest
    print(f"\ntheoretical sizes (float32), widest batch {b} x {s}:")
    print(
        f"  full resid_post cache, one batch  b*seq*layers*d   {b * s * cfg.n_layers * cfg.d_model * f32 / MiB:10.1f} MiB"
    )
    print(
        f"  full resid_post cache, all texts                   {tokens * cfg.n_layers * cfg.d_model * f32 / MiB:10.1f} MiB"
    )
    print(f"  full logits, one batch            b*seq*vocab      {b * s * cfg.d_vocab * f32 / MiB:10.1f} MiB")
    print(
        f"  kept by extraction                n*layers*d       {n_texts * cfg.n_layers * cfg.d_model * f32 / MiB:10.1f} MiB"
    )


if __name__ == "__main__":
    main()
