"""The closeness figures every comparison reports (bbdeploy.fidelity), against numbers worked by hand,
and the rule that they are computed there alone."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from bbdeploy.fidelity import cosine_per_sample, sqnr_db


def test_cosine_per_sample_by_hand():
    reference = np.array([[1.0, 0.0], [3.0, 4.0]])
    candidate = np.array([[1.0, 1.0], [-3.0, -4.0]])
    # (1, 0).(1, 1) / (1 * sqrt 2) = 1/sqrt(2); (3, 4) against its negative: -1
    assert np.allclose(cosine_per_sample(reference, candidate), [1 / math.sqrt(2), -1.0])
    # a feature map is one vector per sample: (2, 1, 2, 1) holds the same two samples
    assert np.allclose(cosine_per_sample(reference.reshape(2, 1, 2, 1), candidate.reshape(2, 1, 2, 1)),
                       [1 / math.sqrt(2), -1.0])


def test_sqnr_by_hand():
    assert sqnr_db(100.0, 1.0) == 20.0  # 10 log10(100)
    assert math.isclose(sqnr_db(2.0, 1.0), 3.0103, abs_tol=1e-4)  # 10 log10(2)
    assert sqnr_db(5.0, 0.0) is None  # identical outputs: no finite SQNR ("exact")


def test_no_other_module_computes_them():
    """Cosine and SQNR in one place: no module of the package takes a norm product or a decibel ratio
    (10 log10 of powers); a log10 for a plot's tick step is not one."""
    root = Path(__file__).resolve().parent.parent
    decibels = re.compile(r"10\s*\*\s*(math|np|numpy)\.log10\(")
    offenders = [str(path.relative_to(root)) for folder in ("pipeline", "quantization", "exporters", "targets")
                 for path in (root / folder).rglob("*.py") if path.name != "fidelity.py"
                 and ("np.linalg.norm(" in path.read_text() or decibels.search(path.read_text()))]
    assert offenders == []
