"""Similarity of concepts across models (the paper's Fig. 2 and past it), from saved artifacts only.

* per-layer cosine, in the child's space, between the parent's mapped vectors and the child-native ones,
  against the random-direction null (|cos| of random unit vectors in d dims, 95% quantile);
* cosine and Pearson-correlation heatmaps (layer × layer) of two vector sets of equal width;
* linear CKA (layer × layer) between two models' activations on shared text (mapping-free), from the
  activation caches `analysis/transfer_fit.py` writes.

    python analysis/similarity_report.py --mapped runs/study/g2s.safetensors \
        --native runs/study/smol_native.safetensors \
        --acts runs/transfer_fit/gemma3-270m_to_smollm2-135m.acts.pt --out runs/similarity
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from xsteer.report import heatmap, layer_lines, write_report
from xsteer.similarity import cka_matrix, correlation_matrix, cosine_matrix, cosine_per_layer, null_quantile
from xsteer.vectors import SteeringVectors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mapped", nargs="*", default=[], help="Vector files in the child's space (parents mapped in).")
    ap.add_argument("--native", required=True, help="The child's own vectors.")
    ap.add_argument("--maps", nargs="*", default=[], help="Transfer maps of the --mapped files (same order): adds the mapped-random null.")
    ap.add_argument("--acts", nargs="*", default=[], help="Activation caches (parent, child) from transfer_fit.py.")
    ap.add_argument("--out", default="runs/similarity")
    args = ap.parse_args()
    out = Path(args.out)
    figs = out / "figures"
    native = SteeringVectors.load(args.native)
    null95 = null_quantile(native.d_model, 0.95)
    series, sections = {}, []
    for k, path in enumerate(args.mapped):
        v = SteeringVectors.load(path)
        name = v.extra.get("parent", Path(path).stem)
        cos = cosine_per_layer(v.vectors, native.vectors)
        series[f"{name} (mapped) vs native"] = [float(c) if layer in v.layers else float("nan") for layer, c in enumerate(cos)]
        heatmap(cosine_matrix(v.vectors, native.vectors), figs / f"cosine_{name}", xlabel="child-native layer",
                ylabel=f"{name} mapped layer", title=f"cosine: {name} (mapped) vs child-native", center=0, cmap="RdBu_r")
        heatmap(correlation_matrix(v.vectors, native.vectors), figs / f"corr_{name}", xlabel="child-native layer",
                ylabel=f"{name} mapped layer", title="Pearson correlation (paper Fig. 2 style)", center=0, cmap="RdBu_r")
        if k < len(args.maps):
            # The fair null for a mapped vector: random *parent* directions through the same map. A fitted
            # map concentrates every input on the child's high-variance subspace, so a plain random child
            # direction understates chance agreement.
            from xsteer.transfer import TransferMap

            tmap = TransferMap.load(args.maps[k])
            g = torch.Generator().manual_seed(0)
            q95 = []
            for layer in range(native.n_layers):
                if layer not in tmap.width_maps or layer not in native.layers:
                    q95.append(float("nan"))
                    continue
                r = torch.randn(500, tmap.parent_shape[1], generator=g, dtype=torch.float64)
                m = tmap.width_maps[layer].map_directions(r).float()
                c = torch.nn.functional.cosine_similarity(m, native.vectors[layer][None], dim=-1).abs()
                q95.append(float(c.quantile(0.95)))
            series[f"{name}: mapped-random null, 95% |cos|"] = q95
            beat = sum(abs(float(cos[layer])) > q for layer, q in enumerate(q95) if q == q and layer in v.layers)
            sections.append((f"{name} → child: against the mapped-random null",
                             f"<p>{beat} of {len(v.layers)} steered layers exceed the 95% |cos| of 500 random parent "
                             f"directions sent through the same map (median of that quantile over layers: "
                             f"{sorted(q for q in q95 if q == q)[len([q for q in q95 if q == q]) // 2]:.3f}).</p>"))
        above = sum(abs(c) > null95 for layer, c in enumerate(cos.tolist()) if layer in v.layers)
        sections.append((f"{name} → child: per-layer cosine with the child-native vectors",
                         f"<p>{above} of {len(v.layers)} steered layers exceed the random null's 95% |cos| "
                         f"quantile ({null95:.3f} in d = {native.d_model}). Max |cos| = {cos.abs().max():.3f}.</p>"))
    if series:
        layer_lines(series, figs / "cosine_per_layer", ylabel="cosine", title="mapped parent vs child-native, per layer",
                    bands={"random null 95%": null95})
    for path in args.acts:
        xp, yc = torch.load(path)
        tag = Path(path).name.removesuffix(".acts.pt")
        cka = cka_matrix(yc, xp)
        heatmap(cka, figs / f"cka_{tag}", xlabel="parent layer", ylabel="child layer", title=f"linear CKA, {tag}")
        best = cka.max(dim=1)
        sections.append((f"CKA {tag}", "<p>Per child layer, the best parent layer and its CKA: "
                         + ", ".join(f"{c}←{int(p)} ({float(s):.2f})" for c, (s, p) in enumerate(zip(best.values, best.indices, strict=True)))
                         + "</p>"))
    imgs = sorted(figs.glob("*.png"))
    import base64

    body = "".join(f'<h3>{p.stem}</h3><img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" style="max-width:100%">' for p in imgs)
    report = write_report(out, title="xsteer: similarity of concepts", sections=[*sections, ("Figures", body)])
    print(f"wrote {report}")


if __name__ == "__main__":
    main()
