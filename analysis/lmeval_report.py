"""The lm-evaluation-harness parity table, from the parity tests' own log committed in ``analysis/results/lmeval/``.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/test_interop.py -m slow -s -k lmeval_parity \
        | tee analysis/results/lmeval/parity.log
    python -m analysis.regenerate           # rewrites analysis/results/lmeval_parity.md from the log

Each parity test prints one JSON line per condition (``tests/test_interop.py::_report``): lm-eval's own
``steered`` model and ``xsteer evaluate --mode loglik`` on the same ARC-Challenge items, vector and λ, the largest
per-choice log-likelihood gap between them, both sides' acc and acc_norm, and how far steering moved the
log-likelihoods (so that parity is not vacuous).
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / "analysis" / "results" / "lmeval" / "parity.log"


def parse(text: str) -> list[dict]:
    """The JSON lines the parity tests printed (pytest's own output may share their line)."""
    out = []
    decoder = json.JSONDecoder()
    for line in text.splitlines():
        i = line.find('{"condition"')
        if i >= 0:
            out.append(decoder.raw_decode(line[i:])[0])
    if not out:
        raise ValueError("no parity line in the log")
    return out


def table(rows: list[dict]) -> str:
    head = (
        "| condition | steered layers | λ | lm-eval | choices | max \\|Δ log-likelihood\\|, lm-eval vs xsteer | "
        "acc, lm-eval / xsteer | acc_norm, lm-eval / xsteer | max \\|effect of steering\\| | max \\|Δ\\| vs lm-eval "
        "0.4.8's late binding |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        layers = ", ".join(map(str, r.get("layers", []))) or "-"
        late = r.get("max_abs_dloglik_vs_late_binding")
        effect = r.get("max_abs_effect_of_steering")
        lines.append(
            f"| {r['condition']} | {layers} | {r.get('lam', '-')} | {r.get('lm_eval_version', '-')} | "
            f"{r['n_choices']} | {r['max_abs_dloglik']:.1e} | "
            f"{r['lm_eval']['acc']:.4f} / {r['xsteer']['acc']:.4f} | "
            f"{r['lm_eval']['acc_norm']:.4f} / {r['xsteer']['acc_norm']:.4f} | "
            + ("-" if effect is None else f"{effect:.2f}")
            + " | "
            + ("-" if late is None else f"{late:.2f}")
            + " |"
        )
    return "\n".join(lines) + "\n"


def body(log: Path = LOG) -> str:
    """The generated part of ``lmeval_parity.md``."""
    if not log.exists():
        return "No parity log is committed yet.\n"
    rows = parse(log.read_text(encoding="utf-8"))
    return f"From `{log.relative_to(ROOT)}`:\n\n{table(rows)}"
