"""Tests of XTasC-Net and its baselines: outputs per variant, paper parameter count, TTNet freezing/loading."""

import numpy as np
import pytest

import keras

from taskology_tf.models.xtasc import (
    build_xtasc_model,
    load_ttnet_weights,
    ttnets,
    variant_outputs,
)


def _trainable(weights):
    return sum(int(np.prod(v.shape)) for v in weights)


def _images(batch=2, h=64, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "variant, single_task, expected",
    [
        ("st", "segmentation", {"segmentation"}),
        ("st", "depth", {"depth"}),
        ("mt", "segmentation", {"segmentation", "depth"}),
        ("xtasc", "segmentation", {"segmentation", "depth", "depth_from_segmentation", "segmentation_from_depth"}),
    ],
)
def test_outputs_per_variant(variant, single_task, expected):
    model = build_xtasc_model(5, variant, "tiny", single_task=single_task, initial_depth=0.05,
                              name=f"x_{variant}_{single_task}")
    out = model({"image": _images(2, 32, 64)})
    assert set(out) == expected == set(variant_outputs(variant, single_task))
    shapes = {"segmentation": (2, 32, 64, 5), "segmentation_from_depth": (2, 32, 64, 5),
              "depth": (2, 32, 64, 1), "depth_from_segmentation": (2, 32, 64, 1)}
    for key, value in out.items():
        assert tuple(value.shape) == shapes[key] and value.dtype == "float32"
        if key.startswith("depth"):
            assert np.all(np.asarray(value) > 0), key  # softplus
    assert (len(ttnets(model)) == 2) == (variant == "xtasc")
    # Depth outputs start at initial_depth: softplus(bias) = 0.05 (zero features give exactly that).
    biases = [model.get_layer(f"x_{variant}_{single_task}_depth_conv").bias] if "depth" in out else []
    if variant == "xtasc":
        biases.append(ttnets(model)["depth_from_segmentation"].get_layer(
            f"x_{variant}_{single_task}_ttnet_segmentation_to_depth_out_conv").bias)
    for bias in biases:
        np.testing.assert_allclose(np.log1p(np.exp(np.asarray(bias))), 0.05, rtol=1e-5)
    decoders = {l.name.split("_decoder")[0] for l in model.layers if "_decoder_" in l.name}
    assert len(decoders) == (1 if variant == "st" else 2)


def test_align_has_the_xtasc_architecture():
    assert variant_outputs("align") == variant_outputs("xtasc")


def _decoder_params(enc_channels, width=128, convs=3, out=1):
    """Paper decoder: conv3x3 without bias + batch norm (gamma, beta), 5 blocks; 1x1 head with bias."""
    skips = [0] + list(enc_channels[-2::-1])
    total = 0
    for block, skip in enumerate(skips):
        c_in = enc_channels[-1] if block == 0 else width + skip
        total += 9 * c_in * width + 2 * width
        total += (convs - 1) * (9 * width * width + 2 * width)
    return total + width * out + out


def _ttnet_params(c_in, c_out, w=(64, 128, 256)):
    def conv(i, o, k=3):
        return k * k * i * o + o
    return (conv(c_in, w[0]) + conv(w[0], w[0]) + conv(w[0], w[1]) + conv(w[1], w[1]) + conv(w[1], w[2])
            + conv(w[2], w[2]) + conv(w[2], w[1]) + conv(w[1], w[1]) + conv(2 * w[1], w[0]) + conv(w[0], w[0])
            + conv(2 * w[0], w[0]) + conv(w[0], w[0]) + conv(w[0], c_out, 1))


def test_paper_size_parameter_count_resnet34():
    classes = 7  # Cityscapes 7-class setting of Table II
    model = build_xtasc_model(classes, "xtasc", "resnet34", name="paper")
    encoder = _trainable([v for v in model.trainable_weights if "paper_encoder" in v.path])
    enc_channels = (64, 64, 128, 256, 512)
    expected = (encoder + _decoder_params(enc_channels, out=classes) + _decoder_params(enc_channels, out=1)
                + _ttnet_params(classes, 1) + _ttnet_params(1, classes))
    total = _trainable(model.trainable_weights)
    print(f"XTasC-Net ResNet-34: encoder {encoder}, total trainable {total} (paper: 3.15e7)")
    assert encoder == 21_284_672  # torchvision ResNet-34 without its classifier
    assert total == expected
    assert round(total / 1e7, 2) == 3.15


def test_frozen_ttnets_weight_loading_and_config_round_trip(tmp_path):
    source = build_xtasc_model(3, "xtasc", "tiny", train_ttnets=False, name="frozen")
    nets = ttnets(source)
    assert set(nets) == {"depth_from_segmentation", "segmentation_from_depth"}
    trainable = {id(v) for v in source.trainable_weights}
    assert all(id(v) not in trainable for net in nets.values() for v in net.weights)
    assert len(source.trainable_weights) > 0

    paths = {}
    for key, net in nets.items():
        paths[key] = str(tmp_path / f"{key}.weights.h5")
        net.save_weights(paths[key])
    clone = keras.Model.from_config(source.get_config())  # fresh random weights
    load_ttnet_weights(clone, paths, freeze=True)
    for key in paths:
        for a, b in zip(nets[key].get_weights(), ttnets(clone)[key].get_weights()):
            np.testing.assert_array_equal(a, b)
        assert not ttnets(clone)[key].trainable
    clone.set_weights(source.get_weights())
    images = _images(1, 32, 32)
    a, b = source({"image": images}), clone({"image": images})
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=1e-4, atol=1e-5)

    with pytest.raises(ValueError, match="cannot load weights"):
        load_ttnet_weights(_no_ttnet_model(), paths)


def _no_ttnet_model():
    x = keras.Input((8, 8, 3), name="image")
    return keras.Model({"image": x}, {"depth": keras.layers.Conv2D(1, 1)(x)}, name="no_ttnets")


def test_errors():
    with pytest.raises(ValueError, match="variant"):
        build_xtasc_model(3, "cross")
    with pytest.raises(ValueError, match="single_task"):
        build_xtasc_model(3, "st", single_task="normals")
    with pytest.raises(ValueError, match="multiple of 32"):
        build_xtasc_model(3, "mt", height=48, width=64)
    with pytest.raises(ValueError, match="depth_activation"):
        build_xtasc_model(3, "mt", depth_activation="relu")
