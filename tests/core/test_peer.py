"""GroundTruthPeer: the true predictions of depth, motion and segmentation from the mediator's labels."""

import numpy as np
import pytest
import tensorflow as tf

from taskology_tf.core.peer import GroundTruthPeer
from taskology_tf.core.task import Task
from taskology_tf.data.synthetic.dataset import synthetic_arrays
from taskology_tf.relations.depth_motion import depth_motion_terms
from taskology_tf.relations.photometric import transform_from_motion
from taskology_tf.tasks.depth import DepthTask
from taskology_tf.tasks.motion import MotionTask
from taskology_tf.tasks.segmentation import SegmentationTask


@pytest.fixture(scope="module")
def video():
    return synthetic_arrays("sim", 4, seed=5, height=32, width=64, with_next=True, next_labels=True, num_workers=1)


def test_motion_peer_answers_the_true_camera_motion_both_ways(video):
    peer = GroundTruthPeer(MotionTask(object_motion=True))
    assert peer.input_keys == ("ego_motion", "object_motion", "object_motion_backward")
    out = peer.predict({k: video[k] for k in peer.input_keys})
    forward = transform_from_motion(out["rotation"], out["translation"]).numpy()
    backward = transform_from_motion(out["rotation_backward"], out["translation_backward"]).numpy()
    np.testing.assert_allclose(forward, video["ego_motion"], atol=1e-5)
    np.testing.assert_allclose(forward @ backward, np.broadcast_to(np.eye(4), forward.shape), atol=1e-5)
    np.testing.assert_array_equal(out["residual_translation"].numpy(), video["object_motion"])
    assert set(out) == set(MotionTask(object_motion=True).output_keys)


def test_true_depth_and_motion_reconstruct_the_static_world(video):
    """The photometric error with both true partners is far below the error with a wrong motion."""
    depth = GroundTruthPeer(DepthTask(frames=2)).predict({k: video[k] for k in ("depth", "depth_next")})
    assert float(tf.reduce_min(depth["depth"])) > 0  # sky answered at far_depth, not 0
    motion = GroundTruthPeer(MotionTask()).predict({"ego_motion": video["ego_motion"]})
    inputs = {k: video[k] for k in ("image", "image_next", "intrinsics")}
    true = depth_motion_terms(inputs, {"depth": depth, "motion": motion}, backward="inverse")["photometric"]
    wrong = dict(motion, translation=motion["translation"] * 0.0)
    still = depth_motion_terms(inputs, {"depth": depth, "motion": wrong}, backward="inverse")["photometric"]
    assert float(tf.reduce_mean(true)) < 0.5 * float(tf.reduce_mean(still))


def test_segmentation_peer_gives_confident_logits_of_the_labels(video):
    task = SegmentationTask(frames=2, backbone="tiny")
    peer = GroundTruthPeer(task)
    out = peer.predict({k: video[k] for k in peer.input_keys})
    labels = video["segmentation"][..., 0]
    pred = np.argmax(out["segmentation_logits"].numpy(), axis=-1)
    valid = labels < task.num_classes
    np.testing.assert_array_equal(pred[valid], labels[valid])
    assert out["segmentation_logits_next"].shape == out["segmentation_logits"].shape


def test_missing_labels_and_tasks_without_ground_truth_are_clear_errors(video):
    peer = GroundTruthPeer(DepthTask())
    with pytest.raises(KeyError, match="needs the labels \\['depth'\\]"):
        peer.predict({"image": video["image"]})
    with pytest.raises(ValueError, match="no ground_truth_keys"):
        GroundTruthPeer(Task("plain"))


def test_true_partners_give_eq2_the_true_object_motion_on_every_moving_pixel():
    """Through the movable mask of the true segmentation, the relation of Eq. (2)-(5) warps with exactly the
    true object motion (every moving pixel is of a movable class), and that explains the frames better than
    a static world. 64x128: at 32x64 the few moving pixels are mostly object edges, where no warp fits."""
    from taskology_tf.relations.depth_motion_segmentation import video_consistency_terms

    video = synthetic_arrays("sim", 6, seed=5, height=64, width=128, with_next=True, next_labels=True, num_workers=1)
    assert np.abs(video["object_motion"]).max() > 0.01  # the clips have moving objects
    depth = GroundTruthPeer(DepthTask(frames=2)).predict({k: video[k] for k in ("depth", "depth_next")})
    motion_task = MotionTask(object_motion=True)
    motion = GroundTruthPeer(motion_task).predict({k: video[k] for k in motion_task.ground_truth_keys})
    seg_task = SegmentationTask(frames=2, backbone="tiny")
    seg = GroundTruthPeer(seg_task).predict({k: video[k] for k in seg_task.ground_truth_keys})
    inputs = {k: video[k] for k in ("image", "image_next", "intrinsics")}
    kwargs = dict(backward="inverse", occlusion_tolerance=None)
    relation = video_consistency_terms(inputs, {"depth": depth, "motion": motion, "segmentation": seg}, **kwargs)
    fields = (video["object_motion"], video["object_motion_backward"])
    direct = depth_motion_terms(inputs, {"depth": depth, "motion": motion}, translation_fields=fields, **kwargs)
    np.testing.assert_allclose(relation["photometric"].numpy(), direct["photometric"].numpy(), rtol=1e-6)
    static = depth_motion_terms(inputs, {"depth": depth, "motion": motion}, **kwargs)
    assert float(tf.reduce_mean(direct["photometric"])) < float(tf.reduce_mean(static["photometric"]))
