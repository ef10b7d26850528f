"""``facewire bench plot``: where the time goes, as a picture (SVG, no extra packages).

Reads what ``facewire bench e2e`` and ``facewire bench edge`` write (the
``bench/results/<name>.json`` document, or the ``--json`` lines they print) and draws
one horizontal bar per row, split into the median of each stage, with the row's
measured p50 at its end. Several files (e.g. before and after a change) go into one
picture, labelled by ``--label``::

    facewire bench e2e --json > after.jsonl
    facewire bench plot before.jsonl after.jsonl --label before --label after \\
        --target 30 --out latency.svg

The stage medians do not add up exactly to the median total (medians don't add);
the bar shows the stages, the number at its end the measured total.
"""

from __future__ import annotations

import argparse
import json
import sys
from html import escape
from pathlib import Path
from typing import Any

#: bench → (stage keys drawn in order, key of the measured total p50)
LAYOUTS: dict[str, tuple[list[str], str]] = {
    "e2e": (
        ["capture", "detect", "mesh", "align", "embed", "encode", "classifier", "wire"],
        "p50_ms",
    ),
    "edge": (["capture", "detect", "mesh", "align", "embed", "publish"], "total_p50_ms"),
}
COLOURS = {
    "capture": "#8da0cb",
    "detect": "#66c2a5",
    "mesh": "#a6d854",
    "align": "#ffd92f",
    "embed": "#fc8d62",
    "encode": "#e5c494",
    "publish": "#e5c494",
    "classifier": "#e78ac3",
    "wire": "#b3b3b3",
}


class PlotError(ValueError):
    """A file that is not a result of a bench this tool can draw; the message says why."""


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a bench result file: the saved document or JSON lines."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise PlotError(f"{path}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text)
        rows = doc["rows"] if isinstance(doc, dict) and "rows" in doc else [doc]
    except json.JSONDecodeError:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise PlotError(f"{path}: neither a bench result document nor JSON lines") from exc
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise PlotError(f"{path}: no result rows")
    benches = {r.get("bench") for r in rows}
    if len(benches) != 1 or not benches <= set(LAYOUTS):
        raise PlotError(
            f"{path}: rows of {sorted(map(str, benches))}; this draws {', '.join(LAYOUTS)}"
        )
    return rows


def row_label(prefix: str, row: dict[str, Any]) -> str:
    parts = [str(row.get("model", "?"))]
    if row.get("bench") == "edge":
        faces = row.get("faces")
        parts.append(f"{faces} face" + ("s" if faces != 1 else ""))
    mesh = row.get("mesh_runtime")
    if mesh and mesh != "config":
        parts.append(str(mesh))
    text = ", ".join(parts)
    return f"{prefix}: {text}" if prefix else text


def svg(
    groups: list[tuple[str, list[dict[str, Any]]]], title: str = "", target: float | None = None
) -> str:
    """The picture: one bar per row, rows grouped by file in the given order."""
    bench = groups[0][1][0]["bench"]
    stages, total_key = LAYOUTS[bench]
    bars = [(row_label(label, r), r) for label, rows in groups for r in rows]
    right, bar_h, gap, top = 90, 20, 8, 80
    # room for the longest label (~7 px a character at the default font size)
    left = max(300, 16 + 7 * max(len(label) for label, _ in bars))
    width = left + 570 + right
    span = max([float(r.get(total_key) or 0) for _, r in bars] + [target or 0, 1.0])
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000) if span / s <= 12)
    span = step * (int(span // step) + 1)
    scale = (width - left - right) / span
    height = top + len(bars) * (bar_h + gap) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    x = left
    for stage in stages:  # legend
        out.append(f'<rect x="{x}" y="32" width="12" height="12" fill="{COLOURS[stage]}"/>')
        out.append(f'<text x="{x + 16}" y="43">{stage}</text>')
        x += 16 + 8 * len(stage) + 14
    axis_y = top + len(bars) * (bar_h + gap)
    for i in range(int(span // step) + 1):  # grid and axis labels, ms
        gx = left + i * step * scale
        out.append(
            f'<line x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" y2="{axis_y}" stroke="#e6e6e6"/>'
        )
        out.append(f'<text x="{gx:.1f}" y="{axis_y + 16}" text-anchor="middle">{i * step}</text>')
    out.append(f'<text x="{left + span * scale + 18:.1f}" y="{axis_y + 16}">ms</text>')
    for i, (label, row) in enumerate(bars):
        y = top + i * (bar_h + gap)
        out.append(
            f'<text x="{left - 8}" y="{y + bar_h - 6}" text-anchor="end">{escape(label)}</text>'
        )
        x = float(left)
        for stage in stages:
            ms = float(row.get(f"{stage}_p50_ms") or 0.0)
            w = ms * scale
            if w > 0:
                out.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                    f'fill="{COLOURS[stage]}"><title>{stage} {ms:.2f} ms</title></rect>'
                )
            x += w
        total = row.get(total_key)
        if total is not None:
            out.append(f'<text x="{x + 6:.1f}" y="{y + bar_h - 6}">p50 {float(total):.1f}</text>')
    if target is not None:
        tx = left + target * scale
        out.append(
            f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{axis_y}" stroke="#c00" '
            'stroke-dasharray="5,4"/>'
        )
        out.append(f'<text x="{tx + 4:.1f}" y="{top - 10}" fill="#c00">target {target:g} ms</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire bench plot",
        description="Draw e2e or edge bench results as stacked bars of their stages (SVG).",
    )
    p.add_argument("files", nargs="+", type=Path, help="bench result files (.json or --json lines)")
    p.add_argument(
        "--label",
        action="append",
        default=[],
        help="a name for each file's rows, in order (default: the file name)",
    )
    p.add_argument("--title", default="", help="title above the bars")
    p.add_argument("--target", type=float, default=None, help="draw a target line at this ms")
    p.add_argument("--out", type=Path, required=True, help="SVG file to write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.label and len(args.label) != len(args.files):
        print(
            f"facewire bench plot: {len(args.label)} --label for {len(args.files)} files",
            file=sys.stderr,
        )
        return 2
    labels = args.label or [f.stem for f in args.files]
    try:
        groups = [(label, read_rows(f)) for label, f in zip(labels, args.files, strict=True)]
        kinds = {rows[0]["bench"] for _, rows in groups}
        if len(kinds) > 1:
            raise PlotError(f"files of different benches ({', '.join(sorted(kinds))})")
    except PlotError as exc:
        print(f"facewire bench plot: {exc}", file=sys.stderr)
        return 2
    title = args.title or f"facewire bench {groups[0][1][0]['bench']}: median ms per stage"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(svg(groups, title, args.target))
    print(f"wrote {args.out} ({sum(len(r) for _, r in groups)} bars)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
