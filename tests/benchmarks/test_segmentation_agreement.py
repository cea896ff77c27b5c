"""benchmarks/segmentation_agreement.py: the gate of Eq. (4) measured against the synthetic world's true answers."""

from taskology_tf.testing import load_script

agreement = load_script("benchmarks/segmentation_agreement.py")


def test_parse_tolerances():
    assert agreement.parse_tolerances("0.05, none,0.1") == [0.05, None, 0.1]


def test_the_gate_compares_fewer_pixels_and_fewer_wrong_targets():
    (_, gated, gated_wrong), (_, all_visible, wrong) = agreement.agreement_table(clips=4, tolerances=(0.05, None))
    assert 0.5 < gated <= all_visible <= 1.0
    assert 0.0 <= gated_wrong < wrong  # true warps still carry wrong labels at disocclusions; the gate drops most
