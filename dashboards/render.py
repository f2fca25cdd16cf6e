# mypy: disable-error-code="import-not-found"
# (Pillow is not a project dependency: without it installed, PIL's types are just unknown.)
"""Draw the Grafana dashboard as a PNG: the panel grid of dashboard.json, with real data.

Grafana itself is not needed: this reads the generated JSON (titles, grid positions, units,
thresholds, color overrides, legends) and draws each panel's queries from a Prometheus, as
lines (timeseries) or a big number with a sparkline (stat), in Grafana's dark colors. It needs
Pillow, which is not a project dependency:

    # record a run (the observability tests' Prometheus), then draw it
    LYNX_DASHBOARD_SNAPSHOT=/tmp/snapshot.json LYNX_DASHBOARD_SNAPSHOT_SECONDS=90 \\
        uv run pytest tests/observability/test_live_run.py
    uv run --with pillow python dashboards/render.py --snapshot /tmp/snapshot.json

    # or draw from any Prometheus that scrapes a relay as job lynx-relay
    uv run --with pillow python dashboards/render.py --prometheus http://127.0.0.1:9090

The picture goes to docs/dashboard.png unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from dashboards.promql import DASHBOARD, PrometheusAPI, substitute

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "dashboard.png"

COLUMN = 75  # pixels per grid column (24 columns)
ROW_UNIT = 30  # pixels per grid row unit
GAP = 6
HEADER = 64
WIDTH = 24 * COLUMN

# Grafana's dark theme.
BACKGROUND = (17, 18, 23)
PANEL = (24, 27, 31)
BORDER = (44, 50, 53)
TEXT = (204, 204, 220)
DIM = (142, 142, 160)
GRID = (40, 44, 48)
NAMED = {
    "red": (242, 73, 92),
    "orange": (255, 152, 48),
    "green": (115, 191, 105),
    "blue": (87, 148, 242),
    "text": (204, 204, 220),
}
PALETTE = [
    (115, 191, 105),
    (242, 204, 12),
    (138, 184, 255),
    (255, 120, 10),
    (242, 73, 92),
    (87, 148, 242),
    (184, 119, 217),
    (112, 93, 160),
    (55, 135, 45),
    (250, 222, 42),
]

RGB = tuple[int, int, int]
Point = tuple[float, float]


@dataclass
class Series:
    name: str
    points: list[Point]  # (unix time, value); NaN where Prometheus had none
    color: RGB
    width: int = 2
    dashed: bool = False


# What a query returned: one list of {"metric": labels, "values": [[t, "v"], ...]} per target.
Fetch = Callable[[Mapping[str, Any]], list[tuple[str, list[dict[str, Any]]]]]


def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans where Debian has it (fonts-dejavu-core), else Pillow's own font."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    path = Path("/usr/share/fonts/truetype/dejavu") / name
    if path.exists():
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def format_value(value: float, unit: str, decimals: int | None = None) -> str:
    """The value as Grafana would label it for the units this dashboard uses."""
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.{1 if decimals is None else decimals}f}%"
    if unit == "currencyUSD":
        if abs(value) >= 1e6:
            return f"${value / 1e6:.3g}M"
        if abs(value) >= 1e4:
            return f"${value / 1e3:.3g}K"
        return f"${value:,.{2 if decimals is None else decimals}f}"
    if unit == "s":
        return _seconds(value)
    if unit == "bytes":
        return _bytes(value)
    suffix = {"reqps": " req/s", "ops": " ops/s"}.get(unit, "")
    if decimals is not None:
        return f"{value:,.{decimals}f}{suffix}"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g} M{suffix}"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.3g} K{suffix}"
    return f"{value:.3g}{suffix}"


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.3g} ms"
    return f"{value:.3g} s" if value < 120 else f"{value / 60:.3g} min"


def _bytes(value: float) -> str:
    for size, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= size:
            return f"{value / size:.3g} {suffix}"
    return f"{value:.0f} B"


def legend_name(template: str, labels: Mapping[str, str]) -> str:
    if not template:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def style_series(panel: Mapping[str, Any], named: list[tuple[str, list[Point]]]) -> list[Series]:
    """Colors and line styles: the palette in order, then the panel's overrides (later ones
    win, as in Grafana; a regexp matches anywhere in the name, like JavaScript's test())."""
    out = []
    for i, (name, points) in enumerate(named):
        series = Series(name, points, PALETTE[i % len(PALETTE)])
        for override in panel["fieldConfig"].get("overrides", []):
            matcher = override["matcher"]
            hit = (
                matcher["options"] == name
                if matcher["id"] == "byName"
                else re.search(matcher["options"], name) is not None
            )
            if not hit:
                continue
            for prop in override["properties"]:
                if prop["id"] == "color":
                    series.color = NAMED.get(prop["value"]["fixedColor"], series.color)
                elif prop["id"] == "custom.lineWidth":
                    series.width = int(prop["value"])
                elif prop["id"] == "custom.lineStyle":
                    series.dashed = prop["value"].get("fill") == "dash"
        out.append(series)
    return out


def to_points(values: Sequence[Sequence[Any]]) -> list[Point]:
    return [(float(t), float(v)) for t, v in values]


def stacked(series: list[Series]) -> list[Series]:
    """Cumulative sums in series order, at the timestamps each series has."""
    totals: dict[float, float] = {}
    for s in series:
        points = []
        for t, v in s.points:
            base = totals.get(t, 0.0)
            total = base + (0.0 if math.isnan(v) else v)
            totals[t] = total
            points.append((t, total))
        s.points = points
    return series


def dashed_line(draw: ImageDraw.ImageDraw, points: list[Point], fill: RGB, width: int) -> None:
    """A dashed polyline; the dash pattern runs on across points (a series has one point per
    pixel or two, far shorter than a dash)."""
    dash, gap = 8.0, 6.0
    phase = 0.0  # distance into the current dash+gap period
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        length = math.hypot(x1 - x0, y1 - y0)
        pos = 0.0
        while pos < length:
            if phase < dash:
                end = min(length, pos + dash - phase)
                a, b = pos / length, end / length
                draw.line(
                    [
                        (x0 + (x1 - x0) * a, y0 + (y1 - y0) * a),
                        (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b),
                    ],
                    fill=fill,
                    width=width,
                )
            else:
                end = min(length, pos + dash + gap - phase)
            phase = (phase + end - pos) % (dash + gap)
            pos = end


class Renderer:
    def __init__(self, dashboard: Mapping[str, Any], fetch: Fetch, start: float, end: float):
        self.dashboard = dashboard
        self.fetch = fetch
        self.start = start
        self.end = end
        bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
        self.image = Image.new("RGB", (WIDTH, HEADER + bottom * ROW_UNIT + GAP), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self.title_font = font(14, bold=True)
        self.small = font(11)
        self.big = font(34, bold=True)

    def box(self, panel: Mapping[str, Any]) -> tuple[int, int, int, int]:
        g = panel["gridPos"]
        x0 = g["x"] * COLUMN + GAP // 2
        y0 = HEADER + g["y"] * ROW_UNIT + GAP // 2
        return x0, y0, x0 + g["w"] * COLUMN - GAP, y0 + g["h"] * ROW_UNIT - GAP

    def render(self) -> Image.Image:
        self.header()
        for panel in self.dashboard["panels"]:
            if panel["type"] == "row":
                x0, y0, x1, _ = self.box(panel)
                self.draw.text(
                    (x0 + 2, y0 + 4), panel["title"], font=font(16, bold=True), fill=TEXT
                )
                continue
            x0, y0, x1, y1 = self.box(panel)
            self.draw.rounded_rectangle((x0, y0, x1, y1), 3, fill=PANEL, outline=BORDER)
            self.draw.text((x0 + 8, y0 + 6), panel["title"], font=self.title_font, fill=TEXT)
            results = self.fetch(panel)
            named = [
                (legend_name(legend, s["metric"]), to_points(s["values"]))
                for legend, answer in results
                for s in answer
            ]
            series = style_series(panel, named)
            if panel["type"] == "stat":
                self.stat(panel, series, (x0, y0 + 24, x1, y1))
            else:
                if panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal":
                    series = stacked(series)
                self.timeseries(panel, series, (x0, y0 + 26, x1, y1))
        return self.image

    def header(self) -> None:
        self.draw.text((10, 8), self.dashboard["title"], font=font(20, bold=True), fill=TEXT)
        span = f"{_clock(self.start)} to {_clock(self.end)} UTC"
        variables = "Data source: Prometheus    Namespace: All    Job: lynx-relay    " + span
        self.draw.text((10, 38), variables, font=self.small, fill=DIM)

    def stat(self, panel: Mapping[str, Any], series: list[Series], area: tuple[int, ...]) -> None:
        x0, y0, x1, y1 = area
        defaults = panel["fieldConfig"]["defaults"]
        values = [v for s in series for _, v in s.points if not math.isnan(v)]
        last = series[0].points[-1][1] if series and series[0].points else math.nan
        steps = defaults["thresholds"]["steps"]
        tint = NAMED["green"]
        for step in steps:
            if step["value"] is None or (not math.isnan(last) and last >= step["value"]):
                tint = NAMED.get(step["color"], tint)
        if series and len(series[0].points) > 1 and values:
            top = max(values) or 1.0
            points = [
                (self._x(t, x0, x1), y1 - 4 - (v / top) * (y1 - y0) * 0.55)
                for t, v in series[0].points
                if not math.isnan(v)
            ]
            if len(points) > 1:
                overlay = Image.new("RGBA", self.image.size, (0, 0, 0, 0))
                layer = ImageDraw.Draw(overlay)
                layer.polygon(
                    [(points[0][0], y1 - 4), *points, (points[-1][0], y1 - 4)], fill=(*tint, 40)
                )
                layer.line(points, fill=(*tint, 150), width=2)
                self.image.paste(Image.alpha_composite(self.image.convert("RGBA"), overlay))
                self.draw = ImageDraw.Draw(self.image)
        text = format_value(last, defaults.get("unit", "short"), defaults.get("decimals"))
        box = self.draw.textbbox((0, 0), text, font=self.big)
        self.draw.text(
            ((x0 + x1 - (box[2] - box[0])) / 2, y0 + (y1 - y0) / 2 - 30),
            text,
            font=self.big,
            fill=tint,
        )

    def timeseries(
        self, panel: Mapping[str, Any], series: list[Series], area: tuple[int, ...]
    ) -> None:
        x0, y0, x1, y1 = area
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        legend_rows = self.legend_layout(series, x1 - x0 - 16)
        plot = (x0 + 62, y0 + 4, x1 - 12, y1 - 22 - 15 * len(legend_rows))
        px0, py0, px1, py1 = plot
        values = [v for s in series for _, v in s.points if not math.isnan(v)]
        top = max(values, default=0.0)
        top = _nice(top * 1.1) if top > 0 else 1.0
        for i in range(5):
            y = py1 - (py1 - py0) * i / 4
            self.draw.line((px0, y, px1, y), fill=GRID)
            label = format_value(top * i / 4, unit)
            width = self.draw.textlength(label, font=self.small)
            self.draw.text((px0 - 6 - width, y - 7), label, font=self.small, fill=DIM)
        for i in range(5):
            t = self.start + (self.end - self.start) * i / 4
            label = _clock(t)
            width = self.draw.textlength(label, font=self.small)
            x = min(self._x(t, px0, px1) - width / 2, x1 - 4 - width)  # keep the last inside
            self.draw.text((x, py1 + 4), label, font=self.small, fill=DIM)
        overlay = Image.new("RGBA", self.image.size, (0, 0, 0, 0))
        layer = ImageDraw.Draw(overlay)
        lines: list[tuple[Series, list[Point]]] = []
        for s in series:
            segment: list[Point] = []
            for t, v in [*s.points, (math.nan, math.nan)]:
                if math.isnan(v):
                    if len(segment) > 1:
                        layer.polygon(
                            [(segment[0][0], py1), *segment, (segment[-1][0], py1)],
                            fill=(*s.color, 22),
                        )
                        lines.append((s, segment))
                    segment = []
                    continue
                y = py1 - min(v / top, 1.0) * (py1 - py0)
                segment.append((self._x(t, px0, px1), y))
        self.image.paste(Image.alpha_composite(self.image.convert("RGBA"), overlay))
        self.draw = ImageDraw.Draw(self.image)
        for s, segment in lines:
            if s.dashed:
                dashed_line(self.draw, segment, s.color, s.width)
            else:
                self.draw.line(segment, fill=s.color, width=s.width, joint="curve")
        y = py1 + 20
        for row in legend_rows:
            x = float(x0 + 10)
            for s in row:
                self.draw.rectangle((x, y + 4, x + 12, y + 7), fill=s.color)
                self.draw.text((x + 16, y - 1), s.name, font=self.small, fill=TEXT)
                x += 28 + self.draw.textlength(s.name, font=self.small)
            y += 15

    def legend_layout(self, series: list[Series], width: int) -> list[list[Series]]:
        rows: list[list[Series]] = [[]]
        used = 0.0
        for s in series:
            need = 28 + self.draw.textlength(s.name, font=self.small)
            if rows[-1] and used + need > width:
                rows.append([])
                used = 0.0
            rows[-1].append(s)
            used += need
        return [row for row in rows if row][:3]

    def _x(self, t: float, x0: float, x1: float) -> float:
        return x0 + (x1 - x0) * (t - self.start) / max(self.end - self.start, 1e-9)


def _nice(value: float) -> float:
    """The next "round" axis maximum (1, 2, 2.5, 5 x 10^n) at or above ``value``."""
    scale = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * scale >= value:
            return step * scale
    return 10.0 * scale


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%H:%M:%S")


def snapshot_fetch(path: Path) -> tuple[Fetch, float, float]:
    """Data a run recorded (tests/observability/test_live_run.py, LYNX_DASHBOARD_SNAPSHOT)."""
    snapshot = json.loads(path.read_text())
    panels: dict[str, list[dict[str, Any]]] = snapshot["panels"]

    def fetch(panel: Mapping[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
        # Legends come from the dashboard, so a renamed series needs no new recording.
        recorded = {t["refId"]: t["series"] for t in panels.get(str(panel["id"]), [])}
        return [(t.get("legendFormat", ""), recorded.get(t["refId"], [])) for t in panel["targets"]]

    return fetch, float(snapshot["start"]), float(snapshot["end"])


def prometheus_fetch(url: str, minutes: float) -> tuple[Fetch, float, float]:
    """Data from a live Prometheus over the last ``minutes``."""
    api = PrometheusAPI(url)
    end = time.time()
    start = end - minutes * 60
    step = max(1.0, (end - start) / 300)
    variables = {
        "job": "lynx-relay",
        "namespace": ".*",
        "__rate_interval": f"{max(60, int(step * 4))}s",
        "__range": f"{int(minutes * 60)}s",
    }

    def fetch(panel: Mapping[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
        return [
            (
                t.get("legendFormat", ""),
                api.query_range(substitute(t["expr"], variables), start, end, step),
            )
            for t in panel["targets"]
        ]

    return fetch, start, end


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--snapshot", type=Path, help="a run recorded by the observability test")
    source.add_argument("--prometheus", help="a Prometheus base URL")
    parser.add_argument("--minutes", type=float, default=30, help="with --prometheus")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    if args.snapshot:
        fetch, start, end = snapshot_fetch(args.snapshot)
    else:
        fetch, start, end = prometheus_fetch(args.prometheus, args.minutes)
    dashboard = json.loads(args.dashboard.read_text())
    image = Renderer(dashboard, fetch, start, end).render()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, optimize=True)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
