"""What benchmark scripts share: the common options, a header naming machine and config, the model, prompts."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from xsteer.core.models import load_model
from xsteer.tasks.data import Example, load_examples
from xsteer.tasks.prompts import build_messages, few_shot_examples, render


def setup(ap: argparse.ArgumentParser) -> tuple[argparse.Namespace, Any]:
    ap.add_argument("--data-dir", default=None, help="offline data tree (default: $XSTEER_DATA_DIR, else the hub)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(f"machine: torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print("config:", json.dumps(vars(args)))
    # A script may offer --dtype; otherwise xsteer's default for the device (fp32 on CPU, bf16 on CUDA).
    dtype = getattr(torch, args.dtype) if getattr(args, "dtype", None) else None
    return args, load_model(args.model, device=args.device, dtype=dtype)


def gsm8k_prompts(tokenizer: Any, data_dir: str | None, n_items: int, shots: int = 5) -> tuple[list[Example], list[str]]:
    """The first ``n_items`` GSM8K test items and their few-shot prompts, rendered for ``tokenizer``."""
    items = load_examples("gsm8k", "test", data_dir=data_dir, limit=n_items)
    exemplars = few_shot_examples("gsm8k", shots)
    return items, [render(tokenizer, build_messages("gsm8k", ex, exemplars)) for ex in items]
