"""Regenerate the tables and the overview figure of the fidelity study's write-up from a study folder.

    python analysis/fidelity_report.py runs/fidelity --out analysis/results/fidelity.md

Everything above the marker line is the reading, written by hand, and is kept; everything below it (the plain
reading computed from the results, the pairs x concepts overview, the map scoreboard, whether held-out fit predicts
fidelity, every (measurement, map) cell) is rewritten from ``RUN/results/*.json``. The overview figure is written
beside ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xsteer.app.fidelity import load_results
from xsteer.app.fidelity_report import overview_figure, study_markdown
from xsteer.core.io import write_text_atomic

MARKER = "<!-- generated below by analysis/fidelity_report.py; write the reading above this line -->"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="study folder of `xsteer fidelity` / analysis/fidelity_study.sh")
    ap.add_argument("--out", type=Path, default=Path("analysis/results/fidelity.md"))
    args = ap.parse_args(argv)
    results = load_results(args.run)
    old = args.out.read_text(encoding="utf-8") if args.out.exists() else "# Transfer fidelity\n\n"
    head = old.split(MARKER)[0].rstrip("\n")
    figure = overview_figure(results, args.out.with_name(f"{args.out.stem}_overview"))
    body = f"![pairs x concepts overview]({figure.name})\n\n{study_markdown(results)}\n"
    write_text_atomic(args.out, f"{head}\n\n{MARKER}\n\n## Tables (from {args.run})\n\n{body}")
    print(f"wrote {args.out} and {figure} from {len(results)} measurements")


if __name__ == "__main__":
    main()
