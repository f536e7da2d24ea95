"""Latency against agreement as an inline SVG, with labels that never sit on each other.

The run report's plot was a matplotlib PNG whose labels were placed at a fixed offset, so two
artifacts at the same spot (onnx fp32 and tflite fp32 often are) printed one label over the other. Here
each label takes the first free place on rings around its point (a leader line joins it when it had
to move away); a label with no free place anywhere goes to a numbered list under the plot. Text is
monospace, so its width is known before a browser lays it out (DejaVu Sans Mono: 0.602 em per
character); the browser test checks the laid-out boxes.
"""

from __future__ import annotations

import html
import math

WIDTH, HEIGHT = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 62, 18, 34, 46
FONT_PX = 11
CHAR_EM = 0.62  # a little over DejaVu Sans Mono's 0.602: boxes estimated here never undershoot
LINE_PX = FONT_PX + 3
MARKER_PX = 5
RINGS = (9, 18, 30, 44, 60, 80)  # distances tried, nearest first
ANGLES = 16


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    span = high - low
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + k * step for k in range(int((high - first) / step + 1e-9) + 1)]


def _range(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.1 or 1.0
    return low - pad, high + pad


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_box(x: float, y: float, text: str) -> tuple[float, float, float, float]:
    """The box (x0, y0, x1, y1) of `text` written with its left end at x and its baseline at y."""
    return (x, y - FONT_PX, x + CHAR_EM * FONT_PX * len(text), y + 3)


def place_labels(points: list[tuple[float, float, str]], area: tuple, placed: list[tuple] | None = None,
                 markers: list[tuple] | None = None) -> list[tuple[float, float] | None]:
    """Where each label's left end and baseline go: the nearest place on the rings around its point
    whose box stays in `area` and meets no label in `placed` (which it joins) and no marker; None
    when there is none."""
    if markers is None:
        markers = [(px - MARKER_PX, py - MARKER_PX, px + MARKER_PX, py + MARKER_PX) for px, py, _ in points]
    placed = [] if placed is None else placed
    spots: list[tuple[float, float] | None] = []
    for px, py, text in points:
        width = CHAR_EM * FONT_PX * len(text)
        spot = None
        for radius in RINGS:
            for step in range(ANGLES):
                angle = 2 * math.pi * step / ANGLES
                cx, cy = px + radius * math.cos(angle), py - radius * math.sin(angle)
                x = cx if math.cos(angle) > 0.3 else cx - width if math.cos(angle) < -0.3 else cx - width / 2
                y = cy + FONT_PX / 2 - 2
                box = label_box(x, y, text)
                inside = area[0] <= box[0] and box[2] <= area[2] and area[1] <= box[1] and box[3] <= area[3]
                if inside and not any(_overlaps(box, other) for other in placed + markers):
                    spot = (x, y)
                    placed.append(box)
                    break
            if spot:
                break
        spots.append(spot)
    return spots


def scatter_svg(points: list[dict], *, title: str, x_label: str, y_label: str) -> str:
    """`points`: {"x", "y", "label", "ok" (a circle; else a cross), "front" (on the Pareto front)}."""
    xs, ys = [p["x"] for p in points], [p["y"] for p in points]
    (x0, x1), (y0, y1) = _range(xs), _range(ys)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(v: float) -> float:
        return LEFT + (v - x0) / (x1 - x0) * inner_w

    def sy(v: float) -> float:
        return TOP + (y1 - v) / (y1 - y0) * inner_h

    screen = [(sx(p["x"]), sy(p["y"]), p["label"]) for p in points]
    area, placed = (LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM), []
    markers = [(px - MARKER_PX, py - MARKER_PX, px + MARKER_PX, py + MARKER_PX) for px, py, _ in screen]
    spots = place_labels(screen, area, placed, markers)
    unplaced = [index for index, spot in enumerate(spots) if spot is None]  # numbered, listed under the plot
    numbers = place_labels([(screen[i][0], screen[i][1], str(n + 1)) for n, i in enumerate(unplaced)], area,
                           placed, markers)
    texts = [text for _, _, text in screen]
    for n, (index, spot) in enumerate(zip(unplaced, numbers)):
        px, py, _ = screen[index]
        spots[index], texts[index] = spot or (px + 6, py - 6), str(n + 1)
    parts = [f"<rect x='{LEFT}' y='{TOP}' width='{inner_w}' height='{inner_h}' fill='none' stroke='#999'/>"]
    for tick in _nice_ticks(x0, x1):
        parts.append(f"<line x1='{sx(tick):.1f}' y1='{TOP + inner_h}' x2='{sx(tick):.1f}' y2='{TOP + inner_h + 4}' "
                     f"stroke='#999'/><text class='tick' x='{sx(tick):.1f}' y='{TOP + inner_h + 16}' "
                     f"text-anchor='middle'>{tick:g}</text>")
    for tick in _nice_ticks(y0, y1):
        parts.append(f"<line x1='{LEFT - 4}' y1='{sy(tick):.1f}' x2='{LEFT}' y2='{sy(tick):.1f}' stroke='#999'/>"
                     f"<text class='tick' x='{LEFT - 7}' y='{sy(tick) + 4:.1f}' text-anchor='end'>{tick:g}</text>")
    front = sorted((p for p in points if p.get("front")), key=lambda p: p["x"])
    if len(front) > 1:
        path = " ".join(f"{sx(p['x']):.1f},{sy(p['y']):.1f}" for p in front)
        parts.append(f"<polyline class='front' points='{path}' fill='none' stroke='#dd8452' stroke-width='1.5'/>")
    for (px, py, _), text, spot, point in zip(screen, texts, spots, points):
        if point.get("ok", True):
            parts.append(f"<circle cx='{px:.1f}' cy='{py:.1f}' r='4' fill='#4c72b0'/>")
        else:
            parts.append(f"<path d='M{px - 4:.1f},{py - 4:.1f}L{px + 4:.1f},{py + 4:.1f}M{px - 4:.1f},{py + 4:.1f}"
                         f"L{px + 4:.1f},{py - 4:.1f}' stroke='#c44e52' stroke-width='2'/>")
        x, y = spot
        box = label_box(x, y, text)
        near = (min(max(px, box[0]), box[2]), min(max(py, box[1]), box[3]))
        if math.dist((px, py), near) > 12:
            parts.append(f"<line class='leader' x1='{px:.1f}' y1='{py:.1f}' x2='{near[0]:.1f}' y2='{near[1]:.1f}' "
                         f"stroke='#bbb'/>")
        parts.append(f"<text class='label' x='{x:.1f}' y='{y:.1f}'>{html.escape(text)}</text>")
    parts.append(f"<text class='axis' x='{LEFT + inner_w / 2}' y='{HEIGHT - 8}' text-anchor='middle'>"
                 f"{html.escape(x_label)}</text>")
    parts.append(f"<text class='axis' transform='translate(14 {TOP + inner_h / 2}) rotate(-90)' text-anchor='middle'>"
                 f"{html.escape(y_label)}</text>")
    parts.append(f"<text class='title' x='{LEFT}' y='{TOP - 12}'>{html.escape(title)}</text>")
    svg = (f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' viewBox='0 0 {WIDTH} {HEIGHT}' "
           f"font-family='DejaVu Sans Mono, monospace' font-size='{FONT_PX}' role='img' "
           f"aria-label='{html.escape(title)}'>{''.join(parts)}</svg>")
    if unplaced:
        svg += "<ol class='unplaced-labels'>" + "".join(f"<li>{html.escape(screen[i][2])}</li>" for i in unplaced) + "</ol>"
    return svg
