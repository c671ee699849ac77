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
    row["peak_rss_mib"] = raw["peak_rss_mib"]
    if "nll" in raw:
        row["perplexity"] = math.exp(raw["nll"])
    for key in ("kl", "top1"):  # against the unquantized model on the same token ids
        if key in raw:
            row[key] = raw[key]
    return row


def _cell(value, fmt: str = "{:.1f}") -> str:
    return "—" if value is None else fmt.format(value)


def _speed(row: dict, key: str, ref: dict | None) -> str:
    """'median (best)' tok/s, with the ratio to the reference row's median."""
    metric = row["prefill_tps"][key] if key != "decode" else row["decode_tps"]
    s = f"{metric['median']:.1f} ({metric['best']:.1f})"
    if ref and ref is not row and "raw" in ref:
        ref_metric = ref["prefill_tps"][key] if key != "decode" else ref["decode_tps"]
        s += f" ×{metric['median'] / ref_metric['median']:.2f}"
    return s


def _export(row: dict) -> str:
    """The export's wall seconds and peak RSS when the row's artefact was made here (not for a cached one made
    before exports were measured, nor for other engines' files)."""
    e = row.get("export")
    return f"{e['seconds']:.0f} ({e['peak_rss_mib']:.0f})" if e else "—"


def markdown(rows: list[dict], prompt_lens: list[int], decode_tokens: int) -> str:
    """One table per model; speeds are 'median (best) ×ratio-to-llama.cpp'."""
    head = ["engine", "artefact", "load s", *[f"prefill {n} tok/s" for n in prompt_lens],
            f"decode {decode_tokens} tok/s", "peak RSS MiB", "perplexity", "KL vs fp32", "top-1 vs fp32",
            "export s (peak RSS MiB)"]
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        group = [r for r in rows if r["model"] == model]
        ref = next((r for r in group if r["engine"] == REFERENCE and "raw" in r), None)
        out += [f"### {model}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in group:
            size = f"{r['size_bytes'] / 1e6:.1f} MB" if r.get("size_bytes") else "—"
            if "raw" not in r:
                out.append(f"| {r['label']} | {size} | " + " | ".join(["—"] * (len(head) - 3)) + f" | {r.get('error', '')} |")
                continue
            speeds = [_speed(r, str(n), ref) for n in prompt_lens]
            out.append(f"| {r['label']} | {size} | {r['load_s']['median']:.2f} | " + " | ".join(speeds)
                       + f" | {_speed(r, 'decode', ref)} | {r['peak_rss_mib']:.0f} | {_cell(r.get('perplexity'), '{:.3f}')}"
                       + f" | {_cell(r.get('kl'), '{:.4f}')} | {_cell(r.get('top1'), '{:.3f}')} | {_export(r)} |")
        out.append("")
    return "\n".join(out)


def write_json(path: Path, rows: list[dict], settings: dict) -> Path:
    doc = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
           "settings": settings, "rows": rows}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def write_chart(path: Path, rows: list[dict], prompt_lens: list[int], decode_tokens: int, title: str) -> Path:
    """Grouped bars: prefill and decode tok/s (median) per engine, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    metrics = [*(f"prefill {n}" for n in prompt_lens), f"decode {decode_tokens}"]
    fig, axes = plt.subplots(len(models), 1, figsize=(10, 4.5 * len(models)), squeeze=False)
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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
