"""benchmarks/segmentation_agreement.py: the gate of Eq. (4) measured against the synthetic world's true answers."""

import importlib.util
import pathlib
import sys

PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "segmentation_agreement.py"
spec = importlib.util.spec_from_file_location("bench_segmentation_agreement", PATH)
agreement = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = agreement
spec.loader.exec_module(agreement)


def test_parse_tolerances():
    assert agreement.parse_tolerances("0.05, none,0.1") == [0.05, None, 0.1]


def test_the_gate_compares_fewer_pixels_and_fewer_wrong_targets():
    (_, gated, gated_wrong), (_, all_visible, wrong) = agreement.agreement_table(clips=4, tolerances=(0.05, None))
    assert 0.5 < gated <= all_visible <= 1.0
    assert 0.0 <= gated_wrong < wrong  # true warps still carry wrong labels at disocclusions; the gate drops most
