"""What benchmark scripts share: the common options, a header naming machine and config, the model, prompts."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from xsteer.core.models import load_model
from xsteer.tasks import Example, get_task
from xsteer.tasks.prompts import render


def setup(ap: argparse.ArgumentParser) -> tuple[argparse.Namespace, Any]:
    ap.add_argument(
        "--data-dir", default=None, help="offline data tree (default: $XSTEER_DATA_DIR, else the hub)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's). On a shared CPU, 1 thread per free core: an OpenMP "
        "team that loses a core to another process waits at every barrier (2-3x slower here)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print("config:", json.dumps(vars(args)))
    # A script may offer --dtype; otherwise xsteer's default for the device (fp32 on CPU, bf16 on CUDA).
    dtype = getattr(torch, args.dtype) if getattr(args, "dtype", None) else None
    return args, load_model(args.model, device=args.device, dtype=dtype)


def gsm8k_prompts(
    tokenizer: Any, data_dir: str | None, n_items: int, shots: int = 5
) -> tuple[list[Example], list[str]]:
    """The first ``n_items`` GSM8K test items and their few-shot prompts, rendered for ``tokenizer`` as the
    evaluator renders them (``Evaluator.prompt``: system prompt, exemplars, the item)."""
    task = get_task("gsm8k")
    items = task.load("test", data_dir=data_dir, limit=n_items)
    exemplars = task.shots(shots, data_dir=data_dir)
    return items, [render(tokenizer, task.messages(ex, exemplars, system=True)) for ex in items]
