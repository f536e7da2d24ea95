"""The run report's plot as a browser lays it out (issue 30): labels of points that sit on each other
(onnx fp32 and tflite fp32 often do) never overlap, nor cover a marker; the width estimated for a
label before layout is never less than the browser's."""

from __future__ import annotations

from bbdeploy.run.scatter_svg import FONT_PX, label_box, scatter_svg
from tests.browser import BOXES, chromium, overlapping

# a crowded plot: two exact ties, a cluster of five within a pixel or two, a point at each corner
POINTS = [(1.20, 91.1, "onnx fp32"), (1.20, 91.1, "tflite fp32"), (1.21, 91.1, "executorch fp32"),
          (1.22, 91.0, "mnn fp32"), (1.19, 91.2, "openvino fp32"), (0.60, 88.4, "onnx int8"),
          (0.60, 88.4, "tflite int8"), (0.61, 88.5, "executorch int8"), (0.30, 99.9, "mnn int8"),
          (2.50, 80.0, "openvino int8"), (0.30, 80.0, "model-b onnx int8"), (2.50, 99.9, "model-b onnx fp32")]


def test_crowded_labels_do_not_overlap_in_chromium(tmp_path):
    points = [{"x": x, "y": y, "label": label, "ok": True, "front": index in (8, 5)}
              for index, (x, y, label) in enumerate(POINTS)]
    page = tmp_path / "plot.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'></head><body style='margin:0'><figure "
                    f"class='device-plot' style='margin:0'>{scatter_svg(points, title='local', x_label='ms', y_label='%')}"
                    "</figure></body></html>", encoding="utf-8")
    with chromium() as browser:
        browser.get(page.as_uri())
        (plot,) = browser.execute_script(BOXES)
        browser_leaders = browser.execute_script("return document.querySelectorAll('line.leader').length")
    labels = plot["labels"]
    assert sorted(label["text"] for label in labels) == sorted(p[2] for p in POINTS)  # each found a free place
    assert browser_leaders > 0  # the ties forced some labels away from their points, joined by a leader line
    boxes = [label["box"] for label in labels]
    assert overlapping(boxes) == []
    markers = plot["markers"]
    assert [(i, j) for i, box in enumerate(boxes) for j, marker in enumerate(markers) if overlapping([box, marker])] == []
    # the estimate the placement used holds the laid-out text: DejaVu Sans Mono is 0.602 em a character
    for label in labels:
        x0, y0, x1, y1 = label["box"]
        estimated = label_box(x0, y1, label["text"])
        assert x1 - x0 <= estimated[2] - estimated[0] + 0.5 and y1 - y0 <= FONT_PX + 6, label
