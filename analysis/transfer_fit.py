"""How well can a parent's residual stream be mapped into a child's? (issue 3's real run)

Collects last-token activations of every layer of both models once, on shared plain texts, then fits
every layer map x width map combination and prints held-out R² and cosine per mapped child layer.
Writes a CSV (one row per pair, layer map, width map, child layer) and a markdown summary.

    python analysis/transfer_fit.py --parent gemma3-270m --child smollm2-135m --n-texts 384 \
        --data-dir ../shared/data --out runs/transfer_fit
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from xsteer.core.io import write_csv_atomic, write_text_atomic
from xsteer.core.models import load_model
from xsteer.tasks.data import load_examples
from xsteer.transfer.acts_file import SUFFIX, load_paired, save_paired
from xsteer.transfer.layermap import LAYER_MAPS
from xsteer.transfer.maps import fit_texts, fit_transfer_from_activations, paired_activations

WIDTHS = ("ridge", "procrustes", "truncate_pad")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parent", required=True)
    ap.add_argument("--child", required=True)
    ap.add_argument("--dataset", default="gsm8k")
    ap.add_argument("--split", default="train")
    ap.add_argument("--n-texts", type=int, default=384)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default="runs/transfer_fit")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.parent}_to_{args.child}"
    cache = out / f"{tag}{SUFFIX}"
    if cache.exists():  # activations are the slow part; fits are seconds
        xp, yc = load_paired(cache)
    else:
        texts = fit_texts(load_examples(args.dataset, args.split, data_dir=args.data_dir)[: args.n_texts])
        t0 = time.time()
        parent = load_model(args.parent, device="cpu")
        child = load_model(args.child, device="cpu")
        xp, yc = paired_activations(parent, child, texts, batch_size=args.batch_size, progress=True)
        save_paired(xp, yc, cache)
        print(f"activations: {len(texts)} texts through both models in {time.time() - t0:.0f} s")

    rows = []
    summary = [
        f"# {args.parent} -> {args.child}: held-out fit ({xp.shape[1]} texts, 20% held out)\n",
        "| layer map | width map | mapped child layers | mean R² | min R² | max R² | mean cos | mean cos (centred) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lmap in [m for m in LAYER_MAPS if m != "explicit"]:
        for wmap in WIDTHS:
            tm = fit_transfer_from_activations(
                xp, yc, parent_id=args.parent, child_id=args.child, layer_map=lmap, width_map=wmap
            )
            r2 = [r["r2"] for r in tm.report.values()]
            cos = [r["cosine"] for r in tm.report.values()]
            cosc = [r["cosine_centred"] for r in tm.report.values()]
            for c, r in sorted(tm.report.items()):
                rows.append(
                    {
                        "pair": tag,
                        "layer_map": lmap,
                        "width_map": wmap,
                        "child_layer": c,
                        "parent_layer": tm.layer_map[c],
                        **r,
                    }
                )
            summary.append(
                f"| {lmap} | {wmap} | {len(r2)} | {sum(r2) / len(r2):.3f} | {min(r2):.3f} | {max(r2):.3f} | "
                f"{sum(cos) / len(cos):.3f} | {sum(cosc) / len(cosc):.3f} |"
            )
            print(f"\n== {lmap} / {wmap}  (child <- parent: R2, cos, cos centred)")
            print(
                "  ".join(
                    f"{c}<-{tm.layer_map[c]}: {r['r2']:.2f},{r['cosine']:.2f},{r['cosine_centred']:.2f}"
                    for c, r in sorted(tm.report.items())
                )
            )
    write_csv_atomic(out / f"{tag}.csv", rows, fieldnames=list(rows[0]))
    write_text_atomic(out / f"{tag}.md", "\n".join(summary) + "\n")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
