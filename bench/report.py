"""Summaries of worker results: tok/s (median and best of the repeats), ratios to llama.cpp, table, JSON, chart."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path

from common.io import atomic_path

REFERENCE = "llama.cpp"


def machine() -> dict:
    """CPU model, core count, OS and the package versions a result depends on."""
    import importlib.metadata

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("torch", "executorch", "torchao", "transformers", "llama-cpp-python"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "os": platform.platform(),
            "python": platform.python_version(), "packages": versions}


def rate(tokens: int, seconds: list[float]) -> dict:
    """tok/s at the median and at the best (minimum) time of the repeats."""
    return {"median": tokens / statistics.median(seconds), "best": tokens / min(seconds), "runs_s": seconds}


def summarize(row: dict, prompt_lens: list[int], decode_tokens: int) -> dict:
    """Add tok/s, load time and perplexity to a row that carries a worker result under 'raw'."""
    raw = row.get("raw")
    if not raw:
        return row
    row["load_s"] = {"median": statistics.median(raw["load_s"]), "best": min(raw["load_s"])}
    row["prefill_tps"] = {str(n): rate(n, raw["prefill_s"][str(n)]) for n in prompt_lens}
    row["decode_tps"] = rate(decode_tokens, raw["decode_s"])
    if raw.get("decode_depth_s"):  # decode after a prompt of each depth (bench --depths)
        row["decode_depth_tps"] = {d: rate(decode_tokens, secs) for d, secs in raw["decode_depth_s"].items()}
    row["peak_rss_mib"] = raw["peak_rss_mib"]
    if "nll" in raw:
        row["perplexity"] = math.exp(raw["nll"])
    for key in ("kl", "top1"):  # against the unquantized model on the same token ids
        if key in raw:
            row[key] = raw[key]
    return row


def _cell(value, fmt: str = "{:.1f}") -> str:
    return "—" if value is None else fmt.format(value)


def metric(row: dict, key: str) -> dict | None:
    """A row's rate: key 'decode', 'depth D' (decode at depth D) or a prompt length (prefill); None if not run."""
    if key == "decode":
        return row.get("decode_tps")
    if key.startswith("depth "):
        return row.get("decode_depth_tps", {}).get(key.removeprefix("depth "))
    return row.get("prefill_tps", {}).get(key)


def references(row: dict, group: list[dict]) -> list[dict]:
    """The llama.cpp rows a row's speeds are compared with. Our builds: llama.cpp's formats of equal or better
    perplexity (a C++ row takes its build's Python perplexity; none as good: the best one). Other rows: the GGUF as
    shipped (the first llama.cpp row)."""
    ran = [r for r in group if r["engine"] == REFERENCE and "raw" in r]
    if row["engine"] not in ("ours", "cpp") or not ran:
        return ran[:1]
    ppl = row.get("perplexity") or next((r["perplexity"] for r in group if r.get("build") == row.get("build")
                                         and r.get("perplexity")), None)
    scored = [r for r in ran if r.get("perplexity")]
    if ppl is None or not scored:
        return ran[:1]
    return [r for r in scored if r["perplexity"] <= ppl] or [min(scored, key=lambda r: r["perplexity"])]


def _speed(row: dict, key: str, refs: list[dict]) -> str:
    """'median (best)' tok/s, with the ratio to the fastest reference row's median (named when there are several
    llama.cpp formats)."""
    mine = metric(row, key)
    if mine is None:
        return "—"
    s = f"{mine['median']:.1f} ({mine['best']:.1f})"
    refs = [r for r in refs if r is not row and metric(r, key)]
    if refs:
        ref = max(refs, key=lambda r: metric(r, key)["median"])
        s += f" ×{mine['median'] / metric(ref, key)['median']:.2f}"
        if row["engine"] in ("ours", "cpp"):
            s += f" {ref['label'].removeprefix(REFERENCE + ' ').split(' ')[0]}"
    return s


def _export(row: dict) -> str:
    """The export's wall seconds and peak RSS when the row's artefact was made here (not for a cached one made
    before exports were measured, nor for other engines' files)."""
    e = row.get("export")
    return f"{e['seconds']:.0f} ({e['peak_rss_mib']:.0f})" if e else "—"


def _linears(row: dict, group: list[dict]) -> str:
    """The export's block linear weight bytes (common.quant.footprint) and their share of the 8da4w build's."""
    mine = (row.get("export") or {}).get("block_linear_bytes")
    if mine is None:
        return "—"
    ref = next((r["export"]["block_linear_bytes"] for r in group if r.get("build") == "8da4w"
                and (r.get("export") or {}).get("block_linear_bytes")), None)
    return f"{mine / 1e6:.1f} MB" + (f" ({mine / ref:.0%} of 8da4w)" if ref and row.get("build") != "8da4w" else "")


def _fraction(row: dict, key: str) -> str:
    value = row.get("limits", {}).get(key)
    return "—" if value is None else f"{value:.0%}"


def markdown(rows: list[dict], prompt_lens: list[int], decode_tokens: int, limits: dict | None = None) -> str:
    """One table per model; speeds are 'median (best) ×ratio-to-llama.cpp' (see references); with the machine's
    `limits` (bench.limits), decode as a share of bandwidth / bytes per token and prefill of the int8 peak."""
    head = ["engine", "artefact", "block linear weights", "load s", *[f"prefill {n} tok/s" for n in prompt_lens],
            f"decode {decode_tokens} tok/s", "peak RSS MiB", "perplexity", "KL vs fp32", "top-1 vs fp32",
            "export s (peak RSS MiB)", "decode of BW limit", f"prefill {max(prompt_lens)} of int8 peak"]
    out = []
    if limits:
        out += [f"Machine limits, measured in this run: read bandwidth {limits['read_bytes_per_s'] / 1e9:.1f} GB/s, "
                f"int8 GEMM {limits['int8_ops_per_s'] / 1e9:.0f} GOPS (bench/limits.py).", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        group = [r for r in rows if r["model"] == model]
        out += [f"### {model}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in group:
            size = f"{r['size_bytes'] / 1e6:.1f} MB" if r.get("size_bytes") else "—"
            if "raw" not in r:
                out.append(f"| {r['label']} | {size} | " + " | ".join(["—"] * (len(head) - 3)) + f" | {r.get('error', '')} |")
                continue
            refs = references(r, group)
            speeds = [_speed(r, str(n), refs) for n in prompt_lens]
            out.append(f"| {r['label']} | {size} | {_linears(r, group)} | {r['load_s']['median']:.2f} | " + " | ".join(speeds)
                       + f" | {_speed(r, 'decode', refs)} | {r['peak_rss_mib']:.0f} | {_cell(r.get('perplexity'), '{:.3f}')}"
                       + f" | {_cell(r.get('kl'), '{:.4f}')} | {_cell(r.get('top1'), '{:.3f}')} | {_export(r)}"
                       + f" | {_fraction(r, 'decode_of_bandwidth')} | {_fraction(r, 'prefill_of_int8_peak')} |")
        out.append("")
        peer = next((r for r in group if r["engine"] == "export_llm" and "raw" in r), None)
        if peer:  # the other peer: ExecuTorch's own pipeline on the same weights
            keys = [*map(str, prompt_lens), "decode", *(f"depth {d}" for d in peer.get("decode_depth_tps", {}))]
            for r in group:
                if r["engine"] in ("ours", "cpp") and "raw" in r:
                    ratios = [f"{k if k[0].isalpha() else 'prefill ' + k} ×{metric(r, k)['median'] / metric(peer, k)['median']:.2f}"
                              for k in keys if metric(r, k) and metric(peer, k)]
                    out.append(f"- {r['label']} against {peer['label']}: " + ", ".join(ratios))
            out.append("")
        depths = list(dict.fromkeys(d for r in group for d in r.get("decode_depth_tps", {})))
        if depths:  # the cost as the context fills: decode after a prompt of each depth
            out += [f"decode {decode_tokens} tok/s after a prompt of depth:", "",
                    "| engine | " + " | ".join(f"depth {d}" for d in depths) + " |", "|" + "---|" * (len(depths) + 1)]
            for r in group:
                if r.get("decode_depth_tps"):
                    refs = references(r, group)
                    out.append(f"| {r['label']} | " + " | ".join(_speed(r, f"depth {d}", refs) for d in depths) + " |")
            out.append("")
    return "\n".join(out)


def write_json(path: Path, rows: list[dict], settings: dict) -> Path:
    doc = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
           "settings": settings, "rows": rows}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def write_chart(path: Path, rows: list[dict], prompt_lens: list[int], decode_tokens: int, title: str) -> Path:
    """Per model: grouped bars of prefill and decode tok/s (median) per engine and, where depths were run, beside
    them decode tok/s against context depth, one line per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    metrics = [*(f"prefill {n}" for n in prompt_lens), f"decode {decode_tokens}"]
    swept = any(r.get("decode_depth_tps") for r in rows)
    fig, axes = plt.subplots(len(models), 2 if swept else 1, figsize=(17 if swept else 10, 4.5 * len(models)),
                             squeeze=False)
    for ax, model in zip(axes[:, 0], models, strict=True):
        group = [r for r in rows if r["model"] == model and "raw" in r]
        width = 0.8 / max(len(group), 1)
        for i, r in enumerate(group):
            values = [r["prefill_tps"][str(n)]["median"] for n in prompt_lens] + [r["decode_tps"]["median"]]
            xs = [j + i * width for j in range(len(metrics))]
            bars = ax.bar(xs, values, width, label=r["label"])
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks([j + width * (len(group) - 1) / 2 for j in range(len(metrics))], metrics)
        ax.set_ylabel("tokens / s (median)")
        ax.set_title(f"{model} — {title}")
        ax.legend(fontsize=8)
        if swept:
            depth_ax = axes[models.index(model), 1]
            for r in group:
                if r.get("decode_depth_tps"):
                    ds = sorted(r["decode_depth_tps"], key=int)
                    depth_ax.plot([int(d) for d in ds], [r["decode_depth_tps"][d]["median"] for d in ds], marker="o",
                                  label=r["label"])
            depth_ax.set_xlabel("context depth (tokens before the decode)")
            depth_ax.set_ylabel(f"decode {decode_tokens} tok/s (median)")
            depth_ax.set_title(f"{model} — decode against depth")
            depth_ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
