"""Headless Chromium (selenium with the system's chromedriver) for the tests that open a report."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def chromium():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options)
    try:
        yield browser
    finally:
        browser.quit()


# every label's and marker's box as laid out by the browser, per plot: [{"text", "box": [x0, y0, x1, y1]}]
BOXES = """
return Array.from(document.querySelectorAll('figure.device-plot svg, svg.plot')).map(svg => ({
  labels: Array.from(svg.querySelectorAll('text.label')).map(t => {
    const r = t.getBoundingClientRect(); return {text: t.textContent, box: [r.left, r.top, r.right, r.bottom]}; }),
  markers: Array.from(svg.querySelectorAll('circle, path')).map(m => {
    const r = m.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })}));
"""


def overlapping(boxes: list[list[float]]) -> list[tuple[int, int]]:
    """Pairs of boxes that share area (touching edges do not count)."""
    return [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes[i + 1:], i + 1)
            if a[0] < b[2] - 0.5 and b[0] < a[2] - 0.5 and a[1] < b[3] - 0.5 and b[1] < a[3] - 0.5]
