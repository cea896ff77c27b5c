"""Tests of NAS-FPN: cell structure, pyramid shapes, the segmentation model, custom layers, paper size."""

import numpy as np
import pytest

import keras

from taskology_tf.models.nasfpn import (
    LEVELS,
    NASFPN_CELLS,
    BilinearUpsample,
    CropToReference,
    GlobalPoolingMerge,
    ImagePreprocess,
    PadToMultiple,
    build_segmentation_model,
    check_image_size,
    nasfpn,
)


def _images(batch, height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8)


def _backbone_inputs(channels=(12, 20, 28)):
    return {level: keras.Input(shape=(None, None, c), name=f"c{level}") for level, c in zip((3, 4, 5), channels)}


def test_published_cell_structure():
    # Seven cells; the last five output P3, P4, P5, P7, P6; each cell reads only earlier nodes.
    assert len(NASFPN_CELLS) == 7
    assert [c.level for c in NASFPN_CELLS[2:]] == [3, 4, 5, 7, 6]
    assert all(c.is_output for c in NASFPN_CELLS[2:]) and not any(c.is_output for c in NASFPN_CELLS[:2])
    for k, cell in enumerate(NASFPN_CELLS):
        assert max(cell.inputs) < 5 + k
    assert {c.op for c in NASFPN_CELLS} == {"sum", "global_pool"}


def test_pyramid_shapes_and_cells_per_module():
    inputs = _backbone_inputs()
    pyramid = nasfpn(inputs, num_filters=8, num_repeats=2, name="fpn")
    model = keras.Model([inputs[level] for level in (3, 4, 5)], {str(level): pyramid[level] for level in LEVELS})
    height, width = 128, 256
    feats = [
        np.random.default_rng(level).normal(size=(2, height >> level, width >> level, c)).astype("float32")
        for level, c in zip((3, 4, 5), (12, 20, 28))
    ]
    out = model(feats)
    for level in LEVELS:
        assert tuple(out[str(level)].shape) == (2, height >> level, width >> level, 8)
        assert np.all(np.isfinite(np.asarray(out[str(level)])))
    convs = [layer.name for layer in model.layers if layer.name.endswith("_conv") and "_c" in layer.name]
    assert len(convs) == 2 * len(NASFPN_CELLS)  # every cell of both modules reaches some output level
    # Lateral 1x1 projections for C3..C5 only (P6, P7 are pooled).
    assert sorted(layer.name for layer in model.layers if "lateral" in layer.name and "norm" not in layer.name) == [
        "fpn_lateral3", "fpn_lateral4", "fpn_lateral5"
    ]
    # The original P5 and P7 are never read by a cell; the output cells add them in.
    assert {layer.name for layer in model.layers if layer.name.endswith("_unused_sum")} == {
        "fpn_m0_c4_unused_sum", "fpn_m0_c5_unused_sum", "fpn_m1_c4_unused_sum", "fpn_m1_c5_unused_sum"
    }


def test_global_pooling_merge_values_and_config():
    coarse = np.array([[[[0.0, 2.0]], [[-1.0, -3.0]]]], np.float32)  # [1, 2, 1, 2]; spatial max (0, 2)
    fine = np.ones_like(coarse)
    layer = GlobalPoolingMerge(name="gp")
    out = np.asarray(layer([coarse, fine]))
    sig = 1.0 / (1.0 + np.exp(-np.array([0.0, 2.0])))
    np.testing.assert_allclose(out, coarse + sig, rtol=1e-6)
    clone = GlobalPoolingMerge.from_config(layer.get_config())
    assert clone.name == "gp"
    np.testing.assert_allclose(np.asarray(clone([coarse, fine])), out)


def test_image_preprocess_modes_and_config():
    image = _images(1, 128, 128)
    unit = ImagePreprocess("unit", 128)
    np.testing.assert_allclose(np.asarray(unit(image)), image / 255.0, rtol=1e-6)
    caffe = ImagePreprocess("caffe", 128, name="pre")
    expected = keras.applications.resnet50.preprocess_input(image.astype("float32"))
    np.testing.assert_allclose(np.asarray(caffe(image)), expected, atol=1e-4)
    clone = ImagePreprocess.from_config(caffe.get_config())
    assert (clone.mode, clone.size_multiple, clone.name) == ("caffe", 128, "pre")
    with pytest.raises(ValueError, match="'unit' or 'caffe'"):
        ImagePreprocess("torch")


@pytest.mark.parametrize("factor, height, width", [(2, 3, 5), (8, 4, 2), (4, 1, 3), (1, 2, 2)])
def test_bilinear_upsample_matches_keras_resize(factor, height, width):
    import tensorflow as tf

    x = np.random.default_rng(factor).normal(size=(2, height, width, 3)).astype("float32")
    layer = BilinearUpsample(factor, name="up")
    expected = np.asarray(keras.layers.UpSampling2D(factor, interpolation="bilinear")(x))
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)
    # Also when the spatial size is unknown until run time.
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    np.testing.assert_allclose(fn(tf.constant(x)).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert BilinearUpsample.from_config(layer.get_config()).factor == factor


def test_pad_and_crop_layers_and_config():
    x = np.ones((1, 5, 130, 2), np.float32)
    pad = PadToMultiple(128, name="pad")
    y = np.asarray(pad(x))
    assert y.shape == (1, 128, 256, 2)
    assert y[:, :5, :130].min() == 1.0 and y.sum() == x.sum()
    assert pad.compute_output_shape((None, 5, None, 2)) == (None, 128, None, 2)
    assert PadToMultiple.from_config(pad.get_config()).multiple == 128
    crop = CropToReference(name="crop")
    np.testing.assert_array_equal(np.asarray(crop([y, np.zeros((1, 5, 130, 3), np.uint8)])), x)
    assert CropToReference.from_config(crop.get_config()).name == "crop"


def test_tiny_segmentation_model_shapes_dtypes_and_gradients():
    model = build_segmentation_model("seg", num_classes=5, backbone="tiny", num_filters=8, num_repeats=2)
    assert [inp.name for inp in model.inputs] == ["image"] and model.inputs[0].dtype == "uint8"
    out = model({"image": _images(2, 128, 256)})
    assert set(out) == {"segmentation_logits"}
    logits = out["segmentation_logits"]
    assert tuple(logits.shape) == (2, 128, 256, 5) and logits.dtype == "float32"
    assert np.all(np.isfinite(np.asarray(logits)))
    # Every trainable weight of the tiny model receives a gradient.
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model({"image": _images(1, 128, 128)}, training=True)["segmentation_logits"]))
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None for g in grads)
    print(f"tiny NAS-FPN segmentation model (8 filters, 2 repeats): {model.count_params():,} parameters")


def test_fuse_levels_and_head_options():
    model = build_segmentation_model(
        "segf", num_classes=3, backbone="tiny", num_filters=8, num_repeats=1, head_convs=1, head_filters=4,
        fuse_levels=(4, 5, 6, 7),
    )
    out = model({"image": _images(1, 128, 128)})["segmentation_logits"]
    assert tuple(out.shape) == (1, 128, 128, 3)
    names = {layer.name for layer in model.layers}
    assert {"segf_head_up4", "segf_head_up7", "segf_head_fuse"} <= names
    # With all levels fused every cell of the (single) module reaches the output.
    assert sum(1 for n in names if n.startswith("segf_nasfpn_m0_c") and n.endswith("_conv")) == 7
    with pytest.raises(ValueError, match="fuse_levels"):
        build_segmentation_model("bad", 3, backbone="tiny", num_filters=8, num_repeats=1, fuse_levels=(3,))


def test_image_size_checks_without_padding():
    with pytest.raises(ValueError, match="multiples of 128.*height=100"):
        check_image_size(100, 128)
    check_image_size(None, 256)
    with pytest.raises(ValueError, match="multiples of 128"):
        build_segmentation_model("s", 3, backbone="tiny", height=96, width=128, pad_to_multiple=False)
    model = build_segmentation_model("dyn", 3, backbone="tiny", num_filters=8, num_repeats=1, pad_to_multiple=False)
    with pytest.raises(ValueError, match="multiples of 128.*width=160"):
        model({"image": _images(1, 128, 160)})


def test_padding_to_multiples_of_128_is_cropped_back():
    import tensorflow as tf

    model = build_segmentation_model("padm", 3, backbone="tiny", num_filters=8, num_repeats=1)
    assert {"padm_pad", "padm_crop"} <= {layer.name for layer in model.layers}
    image = _images(1, 64, 160)
    out = np.asarray(model({"image": image})["segmentation_logits"])
    assert out.shape == (1, 64, 160, 3)
    # Same as running the zero-padded image (0 stays 0 in "unit" preprocessing) and cropping.
    padded = np.zeros((1, 128, 256, 3), np.uint8)
    padded[:, :64, :160] = image
    out_padded = np.asarray(model({"image": padded})["segmentation_logits"])
    np.testing.assert_allclose(out, out_padded[:, :64, :160], rtol=1e-4, atol=1e-5)
    # Sizes unknown until run time (dynamic padding inside a graph).
    fn = tf.function(lambda x: model({"image": x})["segmentation_logits"],
                     input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8)])
    np.testing.assert_allclose(fn(tf.constant(image)).numpy(), out, rtol=1e-4, atol=1e-5)


def test_bad_backbone_arguments():
    with pytest.raises(ValueError, match="Unknown NAS-FPN backbone"):
        build_segmentation_model("s", 3, backbone="vgg16")
    with pytest.raises(ValueError, match="only supported for the 'resnet50'"):
        build_segmentation_model("s", 3, backbone="tiny", backbone_weights="imagenet")


def test_paper_size_parameter_count():
    """ResNet-50 (keras.applications, random init) + NAS-FPN 5 @ 256 + 2-conv head, 8 classes."""
    model = build_segmentation_model("paper", num_classes=8, backbone="resnet50", height=128, width=128)
    total = model.count_params()
    print(f"paper-size NAS-FPN segmentation model: {total:,} parameters")
    filters, classes = 256, 8
    resnet50_no_top = 23_587_712  # keras.applications.ResNet50(include_top=False)
    lateral = (512 + 1024 + 2048) * filters + 3 * 4 * filters  # 1x1 convs + BN (gamma, beta, mean, var)
    cell = 9 * filters * filters + 4 * filters  # 3x3 conv (no bias) + BN
    # 4 full modules + cells 0..2 of the last one (cells 3..6 feed only P4..P7, which the P3 head does not read).
    cells = (4 * 7 + 3) * cell
    head = 2 * cell + filters * classes + classes
    assert total == resnet50_no_top + lateral + cells + head
    assert 40e6 < total < 50e6
    out = model({"image": np.zeros((1, 128, 128, 3), np.uint8)})["segmentation_logits"]
    assert tuple(out.shape) == (1, 128, 128, 8) and out.dtype == "float32"


def test_tiny_model_save_load_round_trip(tmp_path):
    model = build_segmentation_model("segs", num_classes=4, backbone="tiny", num_filters=8, num_repeats=1)
    image = _images(1, 128, 128)
    before = np.asarray(model({"image": image})["segmentation_logits"])
    path = tmp_path / "seg.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded({"image": image})["segmentation_logits"]), before, rtol=1e-5, atol=1e-5)


def test_mixed_precision_outputs_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_segmentation_model("segmp", 3, backbone="tiny", num_filters=8, num_repeats=1, fuse_levels=(4,))
        out = model({"image": _images(1, 64, 128)})["segmentation_logits"]
    finally:
        keras.config.set_dtype_policy("float32")
    assert out.dtype == "float32" and tuple(out.shape) == (1, 64, 128, 3)
    assert np.all(np.isfinite(np.asarray(out)))
