"""What every benchmark script shares: the common options, a header naming machine and config, the model."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from xsteer.models import load_model


def setup(ap: argparse.ArgumentParser) -> tuple[argparse.Namespace, Any]:
    ap.add_argument("--data-dir", default=None, help="offline data tree (default: $XSTEER_DATA_DIR, else the hub)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(f"machine: torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print("config:", json.dumps(vars(args)))
    return args, load_model(args.model, device=args.device)
