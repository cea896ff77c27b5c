"""Networks as Keras 3 layers/models (no TensorFlow import): ResNet encoders, U-Net decoders, dense heads."""

from taskology_tf.models.resnet import (
    ENCODER_PRESETS,
    FEATURE_STRIDES,
    EncoderConfig,
    build_encoder,
    get_encoder_config,
    resnet_encoder,
)
from taskology_tf.models.unet import (
    DECODER_PRESETS,
    ImageToFloat,
    L2Normalize,
    build_dense_model,
    check_image_size,
    conv_head,
    normals_head,
    unet_decoder,
)

__all__ = [
    "DECODER_PRESETS",
    "ENCODER_PRESETS",
    "FEATURE_STRIDES",
    "EncoderConfig",
    "ImageToFloat",
    "L2Normalize",
    "build_dense_model",
    "build_encoder",
    "check_image_size",
    "conv_head",
    "get_encoder_config",
    "normals_head",
    "resnet_encoder",
    "unet_decoder",
]
