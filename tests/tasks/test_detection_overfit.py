"""Ladder steps (a) and (b) of ``benchmarks/detection_ladder.py`` as tests: the detector must be able to
overfit one synthetic sweep and the six real KITTI object frames of ../shared/data.

They check, end to end, targets, anchors, box coding, decoding, NMS, the metric and inference mode
(BatchNormalization moving statistics) on the network the task builds. Tiny settings: a few hundred
steps on one CPU core (about 10 s and 30 s).
"""

from pathlib import Path

import keras
import numpy as np
import pytest

from taskology_tf import detection_ladder as dl
from taskology_tf.tasks.detection import DetectionTask

KITTI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kitti_object"
needs_kitti = pytest.mark.skipif(
    not (KITTI / "training" / "velodyne").is_dir(),
    reason=f"real KITTI object frames not found at {KITTI} (../shared/data is absent on fresh clones)",
)


def _overfit(task, arrays, steps, lr, final_fraction, batch_size, seed=0):
    keras.utils.set_random_seed(seed)
    model = task.build_model()
    optimizer = dl.make_optimizer(lr, steps, final_fraction)
    losses = dl.fit(task, model, dl.batches(arrays, batch_size, seed), steps, optimizer)
    return losses, dl.evaluate(task, model, arrays)


def test_overfits_one_synthetic_sweep():
    """Step (a): 300 steps on one 3-frame window with 4 vehicles in the grid -> 3D AP ~ 1 in inference mode.

    With BatchNormalization momentum 0.99 the inference-mode statistics lag the training-mode ones (3D AP
    0.08, while the training-mode predictions score 1.0). Before boxes centred outside the grid were left
    out of the targets, the untrained boxes of ignored anchors next to them also scored above the true
    positives (3D AP 0.57 with momentum 0.9; 1.0 with ``regress_ignored``)."""
    from taskology_tf.data.synthetic.lidar import LidarConfig, lidar_example

    config = LidarConfig(beams=16, azimuths=256, max_range=12.0)
    example = lidar_example(13, seed=31, n_f=3, config=config, max_points=4096, max_boxes=16, label_seed=7)
    arrays = {k: np.asarray(v)[None] for k, v in example.items()}
    task = DetectionTask(preset="tiny", heads=("detection",), frames=3, max_pillars=768, max_points_per_pillar=8,
                         bn_momentum=0.9, regress_ignored=True)
    losses, metrics = _overfit(task, arrays, steps=300, lr=2e-3, final_fraction=1.0, batch_size=1)
    assert metrics["num_gt_l1"] == 4
    assert losses[-1] < 0.1 * losses[0]
    assert metrics["ap_3d_l1"] >= 0.9 and metrics["ap_bev_l1"] >= 0.9, metrics


@needs_kitti
def test_overfits_the_six_real_kitti_frames():
    """Step (b): BEV AP >= 0.9 on the five vehicles of the six KITTI frames it trained on (real 64-beam LiDAR:
    point features, pillar coordinates, anchor height and box coding). With the tiny preset's 8 pillar
    channels the class scores were not separated after 300 steps (BEV AP 0.80 / 0.20 / 0.02 for seeds 0-2);
    with 32 / (32, 64, 64) channels 1.00 for each."""
    task = DetectionTask(preset="tiny", heads=("detection",), frames=1, max_pillars=2048, max_points_per_pillar=8,
                         grid=dict(x_min=0.0, y_min=-20.48, cell_size=0.64, width=100, height=64, z_min=-3.0, z_max=1.0),
                         anchor_z=-1.0, bn_momentum=0.9, regress_ignored=True,
                         network={"pillar_channels": 32, "block_channels": (32, 64, 64), "up_channels": (32, 32, 32)})
    arrays = dl.kitti_arrays(KITTI, task.config.grid)
    assert arrays["points"].shape[:2] == (6, 1) and arrays["box_mask"].sum() == 5
    _, metrics = _overfit(task, arrays, steps=300, lr=4e-3, final_fraction=0.0, batch_size=6)
    assert metrics["num_gt_l1"] == 5
    assert metrics["ap_bev_l1"] >= 0.9, metrics
