"""Similarity of concepts across models (the paper's Fig. 2 and past it), from saved artifacts only.

* per-layer cosine, in the child's space, between the parent's mapped vectors and the child-native ones,
  against the random-direction null (|cos| of random unit vectors in d dims, 95% quantile);
* cosine and Pearson-correlation heatmaps (layer × layer) of two vector sets of equal width;
* linear CKA (layer × layer) between two models' activations on shared text (mapping-free), from the
  activation caches `analysis/transfer_fit.py` writes.

The analysis itself is `xsteer.transfer.similarity.compare_all`, rendered by `xsteer.app.report.similarity_report`
(both also behind `xsteer similarity`).

    python analysis/similarity_report.py --mapped runs/study/g2s.safetensors \
        --native runs/study/smol_native.safetensors \
        --acts runs/transfer_fit/gemma3-270m_to_smollm2-135m.acts.pt --out runs/similarity
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xsteer.app.report import similarity_report, similarity_table, vector_labels
from xsteer.core.vectors import SteeringVectors
from xsteer.transfer.acts_file import load_paired, paired_name
from xsteer.transfer.maps import TransferMap
from xsteer.transfer.similarity import compare_all


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--mapped", nargs="*", default=[], help="Vector files in the child's space (parents mapped in)."
    )
    ap.add_argument("--native", required=True, help="The child's own vectors.")
    ap.add_argument(
        "--maps",
        nargs="*",
        default=[],
        help="Transfer maps of the --mapped files (same order): adds the mapped-random null.",
    )
    ap.add_argument(
        "--acts", nargs="*", default=[], help="Activation caches (parent, child) from transfer_fit.py."
    )
    ap.add_argument("--out", default="runs/similarity")
    args = ap.parse_args()
    if len(args.maps) > len(args.mapped):
        ap.error("more --maps than --mapped files")
    native = SteeringVectors.load(args.native)
    mapped = [(Path(p).stem, SteeringVectors.load(p)) for p in args.mapped]
    maps = [TransferMap.load(p) for p in args.maps] + [None] * (len(mapped) - len(args.maps))
    names = vector_labels(mapped)
    acts = [(paired_name(p), *load_paired(p)) for p in args.acts]
    result = compare_all(
        reference=("native", native),
        vectors=[(n, sv, m) for n, (_, sv), m in zip(names, mapped, maps, strict=True)],
        activations=acts,
    )
    doc = similarity_report(args.out, result)
    print(similarity_table(doc))
    print(f"wrote {Path(args.out) / 'report.html'}")


if __name__ == "__main__":
    main()
