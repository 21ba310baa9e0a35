"""Plot the "VSR pipeline" dashboard's queries from a Prometheus, as a PNG laid out like the dashboard.

    python3 deploy/grafana/plot_dashboard.py --prometheus http://127.0.0.1:9090 --minutes 10 --out dashboard.png

Every panel of deploy/grafana/dashboards/vsr.json is drawn where Grafana would put it: time series
panels from ``/api/v1/query_range``, stat and gauge panels as their last value from
``/api/v1/query``, with the dashboard's variables set to "All". No Grafana is needed (none installs
here from Debian or npm); the picture shows the same queries' results. deploy/dashboard.png was
made with deploy/grafana/demo_run.py, which runs a real channel for it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent / "dashboards" / "vsr.json"
_VARS = {r"\$\{?channel\}?": ".*", r"\$\{?instance\}?": ".*", r"\$\{?__rate_interval\}?": "1m", r"\$\{?__interval\}?": "15s"}


def _get(base: str, path: str, params: dict) -> list[dict]:
    url = f"{base}{path}?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.loads(r.read().decode())
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]["result"]


def _expr(expr: str) -> str:
    for pattern, value in _VARS.items():
        expr = re.sub(pattern, value, expr)
    return expr


def _legend(fmt: str, labels: dict) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt or "")
    return text.strip() or json.dumps(labels)


def _unit(value: float, unit: str) -> str:
    if value is None or math.isnan(value):
        return "–"
    if unit == "percentunit":
        return f"{100 * value:.1f} %"
    if unit == "bps":
        for scale, name in ((1e9, "Gb/s"), (1e6, "Mb/s"), (1e3, "kb/s")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {name}"
        return f"{value:.3g} b/s"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if abs(value) < 1 else f"{value:.3g} s"
    if unit.startswith("suffix:"):
        return f"{value:.3g}{unit.split(':', 1)[1]}"
    if abs(value) >= 1e6:
        return f"{value:.3g}"
    return f"{value:.4g}"


def plot(base: str, out: Path, *, minutes: float = 10, step: float = 2, end: float | None = None, title: str | None = None) -> dict[str, int]:
    """Draw every panel of the dashboard from the Prometheus at ``base`` over the last ``minutes``
    (until ``end``, a Unix time; default now); write ``out`` (PNG). Return, per panel title, how
    many series (or values) had data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    end = end if end is not None else time.time()
    start = end - 60 * minutes
    panels = board["panels"]
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_h = 0.34  # inches per grid unit of height
    fig_w, fig_h = 24.0, bottom * unit_h + 0.8
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=72)
    fig.patch.set_facecolor("#111217")
    head = title or f"{board['title']} — last {minutes:g} min, queries of deploy/grafana/dashboards/vsr.json via {base}"
    fig.text(0.01, 1 - 0.35 / fig_h, head, color="white", fontsize=14, va="center")
    counts: dict[str, int] = {}

    def box(g: dict, *, axes: bool) -> list[float]:
        """The panel's rectangle in figure fractions, inside margins (inches) for its title and,
        for a chart, its tick labels."""
        left, right, top, bottom = (0.75, 0.12, 0.42, 0.5) if axes else (0.08, 0.08, 0.42, 0.08)
        x0 = g["x"] / 24 * fig_w + left
        w = g["w"] / 24 * fig_w - left - right
        y_top = 0.7 + g["y"] * unit_h + top
        h = g["h"] * unit_h - top - bottom
        return [x0 / fig_w, 1 - (y_top + h) / fig_h, w / fig_w, h / fig_h]

    for panel in panels:
        g = panel["gridPos"]
        if panel["type"] == "row":
            fig.text(0.005, 1 - (0.7 + (g["y"] + 0.5) * unit_h) / fig_h, panel["title"], color="#9fa7b3", fontsize=13, fontweight="bold", va="center")
            continue
        ax = fig.add_axes(box(g, axes=panel["type"] == "timeseries"))
        ax.set_facecolor("#181b1f")
        for side in ax.spines.values():
            side.set_color("#2c3235")
        ax.set_title(panel["title"], color="white", fontsize=10, loc="left")
        ax.tick_params(colors="#c7d0d9", labelsize=9)
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        unit = defaults.get("unit", "short")
        if panel["type"] == "timeseries":
            counts[panel["title"]] = _timeseries(ax, panel, base, start, end, step, unit)
        else:
            counts[panel["title"]] = _single(ax, panel, base, end, unit, defaults)
    fig.savefig(out, facecolor=fig.get_facecolor())
    plt.close(fig)
    return counts


def _timeseries(ax, panel: dict, base: str, start: float, end: float, step: float, unit: str) -> int:
    stacked = panel["fieldConfig"]["defaults"].get("custom", {}).get("stacking", {}).get("mode") == "normal"
    dashed = [o["matcher"]["options"] for o in panel["fieldConfig"].get("overrides", []) if any(p["id"] == "custom.lineStyle" for p in o["properties"])]
    n = 0
    stack_x, stack_ys, stack_labels = None, [], []
    for t in panel["targets"]:
        for series in _get(base, "/api/v1/query_range", {"query": _expr(t["expr"]), "start": start, "end": end, "step": step}):
            xs = [(float(ts) - end) / 60 for ts, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            if not xs:
                continue
            n += 1
            label = _legend(t.get("legendFormat", ""), series["metric"])
            if stacked:
                # align on the query's time grid (index of each step) so the areas stack
                count = int((end - start) / step) + 1
                row = [float("nan")] * count
                for (ts, _), y in zip(series["values"], ys):
                    i = round((float(ts) - start) / step)
                    if 0 <= i < count:
                        row[i] = y
                stack_x = [(start - end) / 60 + i * step / 60 for i in range(count)]
                stack_ys.append(row)
                stack_labels.append(label)
                continue
            style = "--" if any(label == d or re.fullmatch(d, label) for d in dashed) else "-"
            ax.plot(xs, ys, style, linewidth=1.2, label=label, drawstyle="steps-post" if "state" in panel["title"].lower() else "default")
    if stacked and stack_ys:
        colours = {"upscaled": "#73bf69", "classical": "#ff9830", "repeated": "#f2495c"}
        ys = [[0.0 if math.isnan(v) else v for v in row] for row in stack_ys]
        ax.stackplot(stack_x, *ys, labels=stack_labels, colors=[colours.get(lbl, None) for lbl in stack_labels] if all(lbl in colours for lbl in stack_labels) else None, alpha=0.8)
    ax.set_xlim((start - end) / 60, 0)
    if ax.get_ylim()[0] >= 0 or n == 0:
        ax.set_ylim(bottom=0)
    ax.set_xlabel("minutes before the end", color="#9fa7b3", fontsize=9)
    ax.grid(color="#2c3235", linewidth=0.5)
    if unit == "percentunit":
        ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    elif unit not in ("short", ""):
        ax.yaxis.set_major_formatter(lambda v, _: _unit(v, unit))
    if n:
        ax.legend(fontsize=8, loc="upper left", facecolor="#181b1f", edgecolor="#2c3235", labelcolor="white", ncol=2, framealpha=0.7)
    else:
        ax.text(0.5, 0.5, "No data", color="#9fa7b3", ha="center", va="center", transform=ax.transAxes, fontsize=11)
    return n


def _single(ax, panel: dict, base: str, end: float, unit: str, defaults: dict) -> int:
    ax.set_xticks([])
    ax.set_yticks([])
    mappings = {}
    for m in defaults.get("mappings", []):
        for value, shown in m.get("options", {}).items():
            mappings[value] = shown
    lines = []
    for t in panel["targets"]:
        for series in _get(base, "/api/v1/query", {"query": _expr(t["expr"]), "time": end}):
            value = float(series["value"][1])
            label = _legend(t.get("legendFormat", ""), series["metric"])
            key = f"{value:g}"
            shown = mappings[key]["text"] if key in mappings else _unit(value, unit)
            colour = mappings[key].get("color", "white") if key in mappings else "white"
            name_only = panel.get("options", {}).get("textMode") == "name"
            lines.append((label if name_only else f"{label}: {shown}", colour))
    if not lines:
        ax.text(0.5, 0.45, defaults.get("noValue", "No data"), color="#9fa7b3", ha="center", va="center", transform=ax.transAxes, fontsize=13)
        return 0
    size = 16 if len(lines) == 1 else 11
    for i, (text, colour) in enumerate(lines[:4]):
        ax.text(0.5, 0.45 - (i - (min(len(lines), 4) - 1) / 2) * 0.28, text, color={"green": "#73bf69", "red": "#f2495c"}.get(colour, colour),
                ha="center", va="center", transform=ax.transAxes, fontsize=size, fontweight="bold")
    return len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL (default http://127.0.0.1:9090)")
    parser.add_argument("--minutes", type=float, default=10, help="time range, minutes back from now (default 10)")
    parser.add_argument("--step", type=float, default=2, help="query_range step, seconds (default 2)")
    parser.add_argument("--out", type=Path, default=Path("dashboard.png"), help="PNG to write (default dashboard.png)")
    args = parser.parse_args()
    counts = plot(args.prometheus, args.out, minutes=args.minutes, step=args.step)
    empty = [t for t, n in counts.items() if not n]
    print(f"wrote {args.out}: {len(counts) - len(empty)} of {len(counts)} panels with data" + (f" (no data: {', '.join(empty)})" if empty else ""))


if __name__ == "__main__":
    main()
