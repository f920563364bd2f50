"""The speed tables of issue #33, from the benchmarks' own logs committed in ``analysis/results/perf/``.

    python benchmarks/lambda_sweep.py --data-dir ../shared/data --positions generated --items 4 \
        --max-new-tokens 64 --repeats 3 --profile | tee analysis/results/perf/sweep_generated.log
    python benchmarks/fidelity_cell.py --child smollm2-135m --vectors 16 --repeats 3 \
        | tee analysis/results/perf/cell_smollm2-135m.log
    python benchmarks/fidelity_cell.py --concept corrupted_answer --vectors 4 --probes 16 --repeats 3 \
        --skip-one-at-a-time | tee analysis/results/perf/cell_answer_smollm2-135m.log
    python -m analysis.regenerate           # rewrites analysis/results/perf_sweep.md from the logs

A log is the benchmark's whole output: its configuration, the machine, every repeat's wall time per side and
the summary lines. The tables are read from those lines (``sweep_*.log``: the λ sweep; ``cell_*.log``: the
fidelity instrument's readouts), so a reader can check each figure against the run that printed it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "analysis" / "results" / "perf"
#: The issue's targets: the speed-up over the prefix-cached alternative, and achieved ÷ full floor (at most).
TARGETS = {"generated": 3.0, "all": 2.0}
FLOOR_TARGET = 2.0

_SIDE = re.compile(
    r"^(xsteer|alternative)\s+(?P<wall>[\d.]+)\s+[\d.]+\s+\d+\s+[\d.]+\s+"
    r"(?P<floor>[\d.]+)x the floor .*?(?P<full>[\d.]+)x the full floor \((?P<full_s>[\d.]+) s\)"
    r"(?:, (?P<att>[\d.]+)x the attainable floor \((?P<att_s>[\d.]+) s\))?\s+(?P<runs>[\d.]+(?:, [\d.]+)*)\s*$"
)
_CACHED = re.compile(
    r"^prefix-cached alternative: (?P<wall>[\d.]+) s \((?P<runs>[^)]*)\); completions identical to "
    r"xsteer's: (?P<same>\d+/\d+)"
)
_ANSWERS = re.compile(r"^answers: (?P<answers>\d+/\d+) identical, (?P<texts>\d+/\d+) completions identical")
_ROOF = re.compile(r"^roofline \((?P<device>\w+)\): fp32 matmul (?P<gflops>[\d.]+) GFLOP/s")
_PROFILE = re.compile(
    r"^profile: (?P<wall>[\d.]+) s wall with the profiler on \((?P<timed>[\d.]+) s timed without\); aten ops "
    r"(?P<ops_s>[\d.]+) s \((?P<ops>[\d.]+)% of the wall\): GEMM (?P<gemm>[\d.]+)%, attention (?P<attn>[\d.]+)%, other ops "
    r"(?P<other>[\d.]+)%; outside any op .*? (?P<outside>[\d.]+)%$"
)
_WORK = re.compile(
    r"^\s*work \(xsteer\): prefill_TFLOP (?P<prefill>[\d.]+), decode_TFLOP (?P<decode>[\d.]+),"
)
_PROFILE_OP = re.compile(r"^profile op: (?P<op>\S+) (?P<s>[\d.]+) s (?P<share>[\d.]+)% (?P<calls>\d+) calls$")


def parse(text: str) -> dict:
    """One benchmark log's figures: configuration, machine, and per side the median wall time and its runs."""
    out: dict = {"sides": {}}
    for line in text.splitlines():
        if line.startswith("config: "):
            out["config"] = json.loads(line[len("config: ") :])
        elif line.startswith("machine: "):
            out["machine"] = line[len("machine: ") :]
        elif m := _ROOF.match(line):
            out["gflops"] = float(m["gflops"])
        elif line.strip().startswith("the model's projections"):
            out["projections"] = line.strip().split(": ", 1)[1]
        elif m := _SIDE.match(line):
            out["sides"][m[1]] = {
                "wall": float(m["wall"]),
                "runs": m["runs"],
                "full": float(m["full"]),
                "full_s": float(m["full_s"]),
                "att": float(m["att"]) if m["att"] else None,
                "att_s": float(m["att_s"]) if m["att_s"] else None,
            }
        elif m := _CACHED.match(line):
            out["sides"]["prefix-cached"] = {"wall": float(m["wall"]), "runs": m["runs"], "same": m["same"]}
        elif m := _ANSWERS.match(line):
            out["answers"], out["texts"] = m["answers"], m["texts"]
        elif m := _WORK.match(line):
            out["work"] = m.groupdict()
        elif m := _PROFILE.match(line):
            out["profile"] = {**m.groupdict(), "ops_top": []}
        elif (m := _PROFILE_OP.match(line)) and "profile" in out:
            out["profile"]["ops_top"].append(m.groupdict())
    missing = {"config", "machine", "gflops", "answers"} - set(out) or {"xsteer", "alternative"} - set(
        out["sides"]
    )
    if missing:
        raise ValueError(f"not a complete lambda_sweep log (no {', '.join(sorted(missing))})")
    return out


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def table(logs: list[tuple[str, dict]]) -> str:
    """The speed table: one row per log, ratios computed from the medians the log printed."""
    head = (
        "| log | positions | xsteer, s (runs) | hook alternative, s (runs) | prefix-cached alternative, s (runs) "
        "| speed-up vs hook | speed-up vs prefix-cached (target) | ÷ full floor (target ≤ 2x) "
        "| ÷ attainable floor | identical completions |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for name, d in logs:
        pos = d["config"]["positions"]
        x, alt = d["sides"]["xsteer"], d["sides"]["alternative"]
        cached = d["sides"].get("prefix-cached")
        # At positions=all every prompt token is steered: no prefill can be shared, the hook baseline is it.
        best = cached or alt
        vs_cached = best["wall"] / x["wall"]
        att = f"{x['att']:.2f}x" if x["att"] is not None else "-"
        rows.append(
            f"| {name} | {pos} | {x['wall']:.1f} ({x['runs']}) | {alt['wall']:.1f} ({alt['runs']}) | "
            + (f"{cached['wall']:.1f} ({cached['runs']})" if cached else "- (nothing to share)")
            + f" | {alt['wall'] / x['wall']:.2f}x | {vs_cached:.2f}x (≥ {TARGETS[pos]:g}x: {_met(vs_cached >= TARGETS[pos])})"
            + f" | {x['full']:.2f}x ({x['full_s']:.1f} s; {_met(x['full'] <= FLOOR_TARGET)}) | {att} | "
            + f"{d['texts']}"
            + (f"; prefix-cached {cached['same']}" if cached else "")
            + " |"
        )
    machines = sorted(
        {
            f"{d['machine']}, fp32 matmul {d['gflops']:.0f} GFLOP/s, the model's projections at each row count "
            f"(GFLOP/s): {d.get('projections', 'not logged')} ({n})"
            for n, d in logs
        }
    )
    sizes = sorted(
        {
            f"{d['config']['model']}, {d['config']['items']} GSM8K items x {d['config']['lambdas']} λ, "
            f"{d['config']['max_new_tokens']} new tokens, median of {d['config']['repeats']} interleaved runs"
            for _, d in logs
        }
    )
    return (
        "\n".join([head, *rows])
        + "\n\nSize: "
        + "; ".join(sizes)
        + ".\n\nMachine (as each log measured it): "
        + "; ".join(machines)
        + ".\n"
    )


def profile_table(logs: list[tuple[str, dict]]) -> str:
    """Where one profiled xsteer sweep spends its wall time: the groups, then the heaviest aten ops."""
    parts = []
    for name, d in logs:
        if "profile" not in d:
            continue
        pr, x = d["profile"], d["sides"]["xsteer"]
        gemm_s = float(pr["gemm"]) / 100 * float(pr["wall"])  # the logged group, not a re-sum of the top ops
        work = d.get("work", {})
        parts.append(
            f"`{name}` (positions={d['config']['positions']}): {pr['wall']} s wall under the profiler, "
            f"{pr['timed']} s timed without it; the aten ops' self time {pr['ops_s']} s, "
            f"the GEMMs' (`mm`, `addmm`, `bmm`, `baddbmm`) {gemm_s:.1f} s. xsteer's work: {work.get('prefill', '?')} TFLOP of "
            f"prefill and {work.get('decode', '?')} of decode; its full floor {x['full_s']} s, its attainable floor "
            + (
                f"{x['att_s']} s ({x['att_s'] / x['full_s']:.2f}x the full one)"
                if x["att_s"]
                else "not logged"
            )
            + ".\n\n"
            "| where | share of the profiled wall |\n|---|---|\n"
            + "".join(
                f"| {what} | {pr[k]}% |\n"
                for what, k in (
                    ("projections (GEMM: `mm`, `addmm`, `bmm`, `baddbmm`)", "gemm"),
                    ("attention", "attn"),
                    (
                        "every other aten op (norms, RoPE, SwiGLU, the steering add, cache writes, sampling)",
                        "other",
                    ),
                    ("outside any aten op (Python: the generation loop, the bridge's hooks)", "outside"),
                )
            )
            + "\n| aten op | self time, s | share | calls |\n|---|---|---|---|\n"
            + "".join(f"| `{o['op']}` | {o['s']} | {o['share']}% | {o['calls']} |\n" for o in pr["ops_top"])
        )
    return "\n".join(parts)


_CELL_HEAD = re.compile(
    r"^(?P<child>\S+): (?P<vectors>\d+) vectors x (?P<lams>\d+) λ x (?P<probes>\d+) probes, (?P<rest>.*)$"
)
_CELL_WAY = re.compile(
    r"^(?P<way>shared|stacked|one at a time): (?P<med>[\d.]+) s for \d+ vectors \((?P<rate>\d+) rows/s; runs \[(?P<runs>[^]]*)\]\)"
)
_CELL_PROJ = re.compile(
    r"^one measurement's target readout \((?P<n>\d+) vectors\) projected: (?P<min>[\d.]+) min"
)
_CELL_SPEED = re.compile(r"^speed-up of (?P<what>sharing|many vectors|both)[^:]*: (?P<x>[\d.]+)x")
_CELL_DIFF = re.compile(r"^max \|difference\| shared vs (?P<other>.+): (?P<diff>\S+) nats")


def parse_cell(text: str) -> dict:
    """One ``fidelity_cell.py`` log: the set-up line, each way's median and runs, the projection, the differences."""
    out: dict = {"ways": {}, "diff": {}, "speed": {}}
    for line in text.splitlines():
        if m := _CELL_SPEED.match(line):  # as the benchmark printed them, from its unrounded medians
            out["speed"][m["what"]] = m["x"]
        elif m := _CELL_HEAD.match(line):
            out.update(child=m["child"], vectors=int(m["vectors"]), setup=m["rest"])
        elif m := _CELL_WAY.match(line):
            out["ways"][m["way"]] = {"med": float(m["med"]), "rate": int(m["rate"]), "runs": m["runs"]}
        elif m := _CELL_PROJ.match(line):
            out["projected"] = (int(m["n"]), float(m["min"]))
        elif m := _CELL_DIFF.match(line):
            out["diff"][m["other"]] = m["diff"]
    if "child" not in out or not {"shared", "stacked"} <= set(out["ways"]) or "projected" not in out:
        raise ValueError("not a complete fidelity_cell log")
    return out


def cell_table(logs: list[tuple[str, dict]]) -> str:
    """The instrument's readout speed: one row per child, each way's median (runs) and the ratios."""
    head = (
        "| log | child | vectors | set-up | shared, s (runs; rows/s) | stacked, s (runs) "
        "| one at a time, s (runs) | speed-up of sharing (stacked ÷ shared) | of many vectors per pass (one at a "
        "time ÷ stacked) | of both | projected target readout of one measurement | max difference, nats |"
        "\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for name, d in logs:
        w = d["ways"]
        one = w.get("one at a time")
        if "sharing" not in d["speed"]:
            raise ValueError(f"{name}: no speed-up line")
        n, minutes = d["projected"]
        rows.append(
            f"| {name} | {d['child']} | {d['vectors']} | {d['setup']} | {w['shared']['med']:.1f} ({w['shared']['runs']}; "
            f"{w['shared']['rate']}) | {w['stacked']['med']:.1f} ({w['stacked']['runs']}) | "
            + (f"{one['med']:.1f} ({one['runs']})" if one else "-")
            + " | "
            + " | ".join(
                f"{d['speed'][k]}x" if k in d["speed"] else "-" for k in ("sharing", "many vectors", "both")
            )
            + f" | {minutes:.1f} min ({n} vectors) | "
            + ", ".join(f"{v} vs {k}" for k, v in d["diff"].items())
            + " |"
        )
    return "\n".join([head, *rows]) + "\n"


def body(folder: Path = FOLDER) -> str:
    """The generated part of ``perf_sweep.md``: the tables from every log in ``folder``."""
    sweeps = [(p.name, parse(p.read_text(encoding="utf-8"))) for p in sorted(folder.glob("sweep_*.log"))]
    cells = [(p.name, parse_cell(p.read_text(encoding="utf-8"))) for p in sorted(folder.glob("cell_*.log"))]
    parts = []
    if sweeps:
        parts.append("## The λ sweep (`benchmarks/lambda_sweep.py`)\n\n" + table(sweeps))
    if any("profile" in d for _, d in sweeps):
        parts.append("## Where the sweep's time goes (`--profile`)\n\n" + profile_table(sweeps))
    if cells:
        parts.append(
            "## The fidelity instrument's readouts (`benchmarks/fidelity_cell.py`)\n\n" + cell_table(cells)
        )
    return "\n".join(parts) if parts else "No benchmark log is committed yet.\n"
