"""PointPillars (Lang et al. 2019) on sequences of point clouds, with the box-flow head of Taskology Sec. 3.2.2.

Pipeline, per frame (frames share all weights; they are folded into the batch):

1. ``Pillarize``: points -> up to ``max_pillars`` non-empty pillars (grid cells in x-y) of up to
   ``max_points_per_pillar`` points, each point decorated to 9 values (x, y, z, intensity, offsets
   xc, yc, zc to the mean of the pillar's points, offsets xp, yp to the pillar's x-y centre). Pure
   ``keras.ops`` with static shapes (sort by cell, segment ops, scatter), so it runs inside the model
   and inside ``tf.function``/XLA. When a frame has more non-empty pillars than ``max_pillars``, the
   pillars kept are those first in a fixed pseudo-random permutation of the cells (spatially uniform,
   deterministic); extra points of a full pillar are dropped.
2. Pillar feature net (a PointNet): Dense (no bias) -> BatchNorm -> ReLU on every point, max over the
   pillar's points -> one ``pillar_channels`` vector per pillar. As in the reference implementations,
   empty point slots (zeros) take part in the BatchNorm statistics; they are masked out of the max.
3. ``ScatterToBEV``: pillar vectors -> pseudo-image [H, W, C] (zeros in empty cells).
4. 2D backbone: 3 blocks of ``block_depths`` 3x3 conv-BN-ReLU (the first conv of each block strided by
   ``block_strides``), each block's output upsampled (transposed conv) to the first block's stride and
   concatenated (the SECOND/PointPillars "FPN" neck).
5. Heads (1x1 convs) per output grid cell and anchor.

Frames and heads:

* ``detection`` heads are single-frame (Sec. 4.2: "use our single-frame detection model"): the same
  detector runs on each of the ``n_f`` frames, giving ``class_logits`` [B, H, W, n_a, n_f],
  ``residuals`` [B, H, W, n_a, n_f, 7] and ``direction_logits`` [B, H, W, n_a, n_f].
* ``flow`` with ``detection``: attached "at the shared feature layer preceding the detector prediction
  head": the per-frame neck features of all frames are concatenated along channels (oldest first),
  fused by ``flow_fusion_convs`` 3x3 conv-BN-ReLU, and a 1x1 conv gives ``box_flow``
  [B, H, W, n_a, n_f - 1, 3] = (flow_x, flow_y metres, flow_theta radians) of a box of the *current*
  (last) frame to each previous frame (index k - 1 = k frames back).
* ``flow`` alone (a separate flow model, a peer task of a detection-only model; "through an equivalent
  backbone"): the per-frame pseudo-images are concatenated along channels (early fusion, the backbone
  sees the whole sequence) and one backbone of the same type predicts ``box_flow``.

Grid convention (``BevGrid``): columns run along x, rows along y; cell (row r, col c) spans
x in [x_min + c s, x_min + (c+1) s), y in [y_min + r s, y_min + (r+1) s). The output grid is the pillar
grid coarsened by ``block_strides[0]``. Paper size (``PRESETS["paper"]``): 468 x 468 cells of 0.32 m
(x, y in [-74.88, 74.88) m, z in [-2, 4] m), strides (1, 2, 2), so the heads predict at every 0.32 m cell
as the paper's "for each grid point"; channels 64/128/256, 4/6/6 convs, 3 x 128 upsampled channels.

This module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import keras
from keras import layers, ops

NUM_POINT_FEATURES = 4  # x, y, z, intensity
NUM_DECORATED_FEATURES = 9  # x, y, z, intensity, xc, yc, zc, xp, yp
BOX_CODE_SIZE = 7  # residuals of (x, y, z, length, width, height, heading)
HEADS = ("detection", "flow")


@dataclasses.dataclass(frozen=True)
class BevGrid:
    """A bird's-eye-view grid in the (latest frame's) vehicle frame: metres, x forward, y left, z up.

    ``width`` cells of ``cell_size`` along x from ``x_min``, ``height`` cells along y from ``y_min``;
    points with z outside [z_min, z_max] are ignored.
    """

    x_min: float = -74.88
    y_min: float = -74.88
    cell_size: float = 0.32
    width: int = 468
    height: int = 468
    z_min: float = -2.0
    z_max: float = 4.0

    def __post_init__(self):
        if self.cell_size <= 0 or self.width <= 0 or self.height <= 0:
            raise ValueError(f"BevGrid needs cell_size > 0 and positive width/height, got {self}.")
        if self.z_max <= self.z_min:
            raise ValueError(f"BevGrid needs z_max > z_min, got z_min={self.z_min}, z_max={self.z_max}.")

    @property
    def x_max(self) -> float:
        return self.x_min + self.width * self.cell_size

    @property
    def y_max(self) -> float:
        return self.y_min + self.height * self.cell_size

    def coarsen(self, stride: int) -> "BevGrid":
        """The grid of a feature map at ``stride`` (cells ``stride`` times larger, same extent)."""
        if self.width % stride or self.height % stride:
            raise ValueError(f"Grid {self.height}x{self.width} is not divisible by stride {stride}.")
        return dataclasses.replace(
            self, cell_size=self.cell_size * stride, width=self.width // stride, height=self.height // stride
        )

    def cell_centres(self):
        """(x [width], y [height]) of the cell centres, python lists of metres."""
        s = self.cell_size
        return ([self.x_min + (c + 0.5) * s for c in range(self.width)], [self.y_min + (r + 0.5) * s for r in range(self.height)])


@dataclasses.dataclass(frozen=True)
class PointPillarsConfig:
    """Sizes of the network. See the module docstring for what each part is."""

    grid: BevGrid = BevGrid()
    frames: int = 3
    num_anchors: int = 2
    max_pillars: int = 32000
    max_points_per_pillar: int = 20
    pillar_channels: int = 64
    block_channels: tuple[int, ...] = (64, 128, 256)
    block_depths: tuple[int, ...] = (4, 6, 6)
    block_strides: tuple[int, ...] = (1, 2, 2)
    up_channels: tuple[int, ...] = (128, 128, 128)
    flow_fusion_channels: int = 128
    flow_fusion_convs: int = 2
    direction_head: bool = True
    # Keras BatchNormalization momentum of the moving statistics used at inference. 0.99 (PointPillars)
    # averages over ~100 steps: while the weights still move fast (high learning rate, short runs) the
    # inference-time statistics lag the training-time ones and the eval predictions differ.
    bn_momentum: float = 0.99

    def __post_init__(self):
        n = len(self.block_channels)
        if not (len(self.block_depths) == len(self.block_strides) == len(self.up_channels) == n) or n == 0:
            raise ValueError(
                "block_channels, block_depths, block_strides and up_channels need one entry per backbone block, got "
                f"{self.block_channels}, {self.block_depths}, {self.block_strides}, {self.up_channels}."
            )
        if min(self.block_depths) < 1:
            raise ValueError(f"every backbone block needs at least 1 conv, got block_depths={self.block_depths}.")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}.")
        if self.frames < 1 or self.num_anchors < 1 or self.max_pillars < 1 or self.max_points_per_pillar < 1:
            raise ValueError(f"frames, num_anchors, max_pillars and max_points_per_pillar must be >= 1, got {self}.")
        total = math.prod(self.block_strides)
        if self.grid.width % total or self.grid.height % total:
            raise ValueError(
                f"The grid ({self.grid.height}x{self.grid.width}) must be divisible by the backbone's total stride {total}."
            )

    @property
    def output_stride(self) -> int:
        return self.block_strides[0]

    @property
    def output_grid(self) -> BevGrid:
        """The grid of the heads' predictions (and of the anchors)."""
        return self.grid.coarsen(self.output_stride)


PRESETS: dict[str, PointPillarsConfig] = {
    # Taskology Sec. 3.2.2 / 4.2 on Waymo: 468 x 468 cells of 0.32 m, n_f = 3, n_a = 2 (0 and 90 deg).
    "paper": PointPillarsConfig(),
    # Synthetic-world training: a 51.2 m square of 0.4 m cells, z in [-3, 3] m (points in a sensor frame
    # 1.8 m above the ground, or in a vehicle frame), narrower and shallower.
    "small": PointPillarsConfig(
        grid=BevGrid(x_min=-25.6, y_min=-25.6, cell_size=0.4, width=128, height=128, z_min=-3.0, z_max=3.0),
        max_pillars=6000, max_points_per_pillar=16, pillar_channels=32, block_channels=(32, 64, 128),
        block_depths=(2, 3, 3), up_channels=(64, 64, 64), flow_fusion_channels=64, flow_fusion_convs=1,
    ),
    # Tests: a 16 m square of 0.5 m cells.
    "tiny": PointPillarsConfig(
        grid=BevGrid(x_min=-8.0, y_min=-8.0, cell_size=0.5, width=32, height=32, z_min=-3.0, z_max=3.0),
        max_pillars=256, max_points_per_pillar=8, pillar_channels=8, block_channels=(8, 16, 16),
        block_depths=(1, 2, 2), up_channels=(8, 8, 8), flow_fusion_channels=8, flow_fusion_convs=1,
    ),
}


def get_config(preset: str | PointPillarsConfig, **overrides) -> PointPillarsConfig:
    """A preset by name (``PRESETS``) or a config, with fields replaced by ``overrides``."""
    if isinstance(preset, PointPillarsConfig):
        config = preset
    elif preset in PRESETS:
        config = PRESETS[preset]
    else:
        raise ValueError(f"Unknown PointPillars preset {preset!r}; known: {sorted(PRESETS)} (or pass a PointPillarsConfig).")
    return dataclasses.replace(config, **overrides) if overrides else config


def _grid_to_dict(grid: BevGrid) -> dict:
    return dataclasses.asdict(grid)


def _coprime_multiplier(n: int) -> int:
    """A multiplier m with gcd(m, n) == 1 near 0.618 n: c -> (c m) mod n permutes the n cells, scattering neighbours."""
    m = max(1, int(0.6180339887 * n)) | 1
    while math.gcd(m, n) != 1:
        m += 2
    return m % n if n > 1 else 1


# --- layers ---------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="taskology_tf")
class Pillarize(layers.Layer):
    """Points -> pillars of decorated points (no weights).

    Inputs: ``points`` [N, P, 4] (x, y, z metres, intensity) and ``points_mask`` [N, P] (1 = real point, 0 = padding; bool or float).
    Returns:
      features: [N, max_pillars, max_points, 9] float32 (x, y, z, intensity, xc, yc, zc, xp, yp), zeros in
        empty slots;
      point_mask: [N, max_pillars, max_points] float32, 1 for a real point;
      cells: [N, max_pillars] int32, the pillar's flat cell ``row * width + col`` or -1 for an unused slot.
    """

    def __init__(self, grid: BevGrid | dict, max_pillars: int, max_points: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.grid = grid if isinstance(grid, BevGrid) else BevGrid(**grid)
        self.max_pillars = int(max_pillars)
        self.max_points = int(max_points)

    def call(self, points, points_mask):
        g = self.grid
        num_cells = g.width * g.height
        points = ops.cast(points, "float32")
        shape = ops.shape(points)
        n, p = shape[0], shape[1]
        m, k = self.max_pillars, self.max_points
        x, y, z = points[..., 0], points[..., 1], points[..., 2]
        col = ops.cast(ops.floor((x - g.x_min) / g.cell_size), "int32")
        row = ops.cast(ops.floor((y - g.y_min) / g.cell_size), "int32")
        valid = ops.logical_and(ops.cast(points_mask, "float32") > 0.5, ops.logical_and(z >= g.z_min, z <= g.z_max))
        valid = ops.logical_and(valid, ops.logical_and(ops.logical_and(col >= 0, col < g.width), ops.logical_and(row >= 0, row < g.height)))
        cell = ops.where(valid, row * g.width + col, 0)
        # Sort points by a permuted cell id (invalid points last): points of a pillar become contiguous,
        # and the pillars kept when there are more than max_pillars are spread over the grid.
        mult = _coprime_multiplier(num_cells)
        key = ops.where(valid, ops.mod(ops.cast(cell, "int64") * mult, num_cells), num_cells)
        order = ops.argsort(key, axis=-1)
        skey = ops.take_along_axis(key, order, axis=-1)
        scell = ops.take_along_axis(cell, order, axis=-1)
        spoints = ops.take_along_axis(points, ops.expand_dims(order, -1), axis=1)
        svalid = skey < num_cells
        previous = ops.concatenate([ops.full_like(skey[:, :1], -1), skey[:, :-1]], axis=1)
        start = ops.not_equal(skey, previous)
        pillar = ops.cumsum(ops.cast(start, "int32"), axis=1) - 1  # [N, P] pillar slot of each sorted point
        position = ops.broadcast_to(ops.arange(p, dtype="int32")[None, :], ops.shape(pillar))
        example = ops.broadcast_to(ops.arange(n, dtype="int32")[:, None], ops.shape(pillar))
        segment = ops.reshape(example * p + pillar, (-1,))
        first = ops.segment_max(ops.reshape(ops.where(start, position, -1), (-1,)), segment, num_segments=n * p)
        rank = position - ops.reshape(ops.take(first, segment, axis=0), ops.shape(position))
        keep = ops.logical_and(svalid, ops.logical_and(pillar < m, rank < k))
        slot = ops.where(keep, (example * m + pillar) * k + rank, n * m * k)  # n*m*k: a dump slot
        slot = ops.reshape(slot, (-1, 1))
        dense = ops.scatter(slot, ops.reshape(spoints, (-1, NUM_POINT_FEATURES)), (n * m * k + 1, NUM_POINT_FEATURES))
        dense = ops.reshape(dense[:-1], (n, m, k, NUM_POINT_FEATURES))
        point_mask = ops.scatter(slot, ops.ones((n * p,), "float32"), (n * m * k + 1,))
        point_mask = ops.reshape(point_mask[:-1], (n, m, k))
        first_slot = ops.where(ops.logical_and(keep, start), example * m + pillar, n * m)
        cells = ops.scatter(ops.reshape(first_slot, (-1, 1)), ops.reshape(scell + 1, (-1,)), (n * m + 1,))
        cells = ops.reshape(cells[:-1], (n, m)) - 1

        # Decoration.
        count = ops.maximum(ops.sum(point_mask, axis=-1, keepdims=True), 1.0)  # [N, M, 1]
        mean = ops.sum(dense[..., :3] * point_mask[..., None], axis=2) / count  # [N, M, 3]
        safe_cells = ops.maximum(cells, 0)
        centre_x = g.x_min + (ops.cast(safe_cells % g.width, "float32") + 0.5) * g.cell_size
        centre_y = g.y_min + (ops.cast(safe_cells // g.width, "float32") + 0.5) * g.cell_size
        centre = ops.stack([centre_x, centre_y], axis=-1)  # [N, M, 2]
        features = ops.concatenate(
            [dense, dense[..., :3] - mean[:, :, None, :], dense[..., :2] - centre[:, :, None, :]], axis=-1
        )
        features = features * point_mask[..., None]
        return features, point_mask, cells

    def compute_output_shape(self, points_shape, points_mask_shape):
        n = points_shape[0]
        return (
            (n, self.max_pillars, self.max_points, NUM_DECORATED_FEATURES),
            (n, self.max_pillars, self.max_points),
            (n, self.max_pillars),
        )

    def compute_output_spec(self, points, points_mask):
        shapes = self.compute_output_shape(points.shape, points_mask.shape)
        return (
            keras.KerasTensor(shapes[0], "float32"),
            keras.KerasTensor(shapes[1], "float32"),
            keras.KerasTensor(shapes[2], "int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(grid=_grid_to_dict(self.grid), max_pillars=self.max_pillars, max_points=self.max_points)
        return config


@keras.saving.register_keras_serializable(package="taskology_tf")
class MaskedMax(layers.Layer):
    """Max over the points of a pillar: features [N, M, K, C] (>= 0, e.g. after ReLU), point_mask [N, M, K] -> [N, M, C].

    Empty slots count as 0, so a pillar without points gives zeros.
    """

    def call(self, features, point_mask):
        return ops.max(features * ops.cast(point_mask, features.dtype)[..., None], axis=2)

    def compute_output_shape(self, features_shape, point_mask_shape):
        return tuple(features_shape[:2]) + (features_shape[3],)


@keras.saving.register_keras_serializable(package="taskology_tf")
class ScatterToBEV(layers.Layer):
    """Pillar vectors [N, M, C] at flat cells [N, M] (-1 = none) -> pseudo-image [N, height, width, C]."""

    def __init__(self, height: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.height = int(height)
        self.width = int(width)

    def call(self, features, cells):
        shape = ops.shape(features)
        n, m = shape[0], shape[1]
        c = features.shape[-1]
        hw = self.height * self.width
        example = ops.broadcast_to(ops.arange(n, dtype="int32")[:, None], (n, m))
        cells = ops.cast(cells, "int32")
        index = ops.where(cells >= 0, example * hw + cells, n * hw)
        canvas = ops.scatter(ops.reshape(index, (-1, 1)), ops.reshape(features, (-1, c)), (n * hw + 1, c))
        return ops.reshape(canvas[:-1], (n, self.height, self.width, c))

    def compute_output_shape(self, features_shape, cells_shape):
        return (features_shape[0], self.height, self.width, features_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(height=self.height, width=self.width)
        return config


@keras.saving.register_keras_serializable(package="taskology_tf")
class MergeFrames(layers.Layer):
    """[B, n_f, ...] -> [B * n_f, ...] (frames become batch entries, frame-major within each example)."""

    def call(self, x):
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0] * shape[1],) + tuple(shape[2:]))

    def compute_output_shape(self, input_shape):
        return (None,) + tuple(input_shape[2:])


@keras.saving.register_keras_serializable(package="taskology_tf")
class FramesToChannels(layers.Layer):
    """[B * n_f, H, W, C] -> [B, H, W, n_f * C] (channels of the oldest frame first)."""

    def __init__(self, frames: int, **kwargs):
        super().__init__(**kwargs)
        self.frames = int(frames)

    def call(self, x):
        _, h, w, c = x.shape
        x = ops.reshape(x, (-1, self.frames, h, w, c))
        x = ops.transpose(x, (0, 2, 3, 1, 4))
        return ops.reshape(x, (-1, h, w, self.frames * c))

    def compute_output_shape(self, input_shape):
        _, h, w, c = input_shape
        return (None, h, w, self.frames * c)

    def get_config(self):
        config = super().get_config()
        config.update(frames=self.frames)
        return config


@keras.saving.register_keras_serializable(package="taskology_tf")
class PerAnchorFrames(layers.Layer):
    """Per-frame head output [B * n_f, H, W, n_a * code] -> [B, H, W, n_a, n_f, code] float32
    (``code == 1``: -> [B, H, W, n_a, n_f])."""

    def __init__(self, frames: int, num_anchors: int, code: int, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.frames = int(frames)
        self.num_anchors = int(num_anchors)
        self.code = int(code)

    def call(self, x):
        _, h, w, _ = x.shape
        x = ops.cast(x, "float32")
        x = ops.reshape(x, (-1, self.frames, h, w, self.num_anchors, self.code))
        x = ops.transpose(x, (0, 2, 3, 4, 1, 5))
        return x[..., 0] if self.code == 1 else x

    def compute_output_shape(self, input_shape):
        _, h, w, _ = input_shape
        shape = (None, h, w, self.num_anchors, self.frames)
        return shape if self.code == 1 else shape + (self.code,)

    def get_config(self):
        config = super().get_config()
        config.update(frames=self.frames, num_anchors=self.num_anchors, code=self.code)
        return config


# --- network pieces -------------------------------------------------------------------------------


def _conv_bn_relu(x, filters: int, stride: int, name: str, momentum: float = 0.99):
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=1e-3, momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def pillar_feature_net(points, mask, config: PointPillarsConfig, name: str):
    """Points [N, P, 4] + mask [N, P] -> pseudo-image [N, H, W, pillar_channels] of the pillar grid."""
    features, point_mask, cells = Pillarize(
        config.grid, config.max_pillars, config.max_points_per_pillar, name=f"{name}_pillarize"
    )(points, mask)
    x = layers.Dense(config.pillar_channels, use_bias=False, name=f"{name}_pfn_dense")(features)
    x = layers.BatchNormalization(epsilon=1e-3, momentum=config.bn_momentum, name=f"{name}_pfn_bn")(x)
    x = layers.ReLU(name=f"{name}_pfn_relu")(x)
    x = MaskedMax(name=f"{name}_pfn_max")(x, point_mask)
    return ScatterToBEV(config.grid.height, config.grid.width, name=f"{name}_scatter")(x, cells)


def pointpillars_backbone(x, config: PointPillarsConfig, name: str):
    """Pseudo-image [N, H, W, C] -> neck features [N, H / s0, W / s0, sum(up_channels)] (s0 = block_strides[0])."""
    outputs = []
    cumulative = 1
    for i, (filters, depth, stride, up) in enumerate(
        zip(config.block_channels, config.block_depths, config.block_strides, config.up_channels)
    ):
        cumulative *= stride
        for j in range(depth):
            x = _conv_bn_relu(x, filters, stride if j == 0 else 1, f"{name}_block{i + 1}_{j}", config.bn_momentum)
        factor = cumulative // config.output_stride
        y = layers.Conv2DTranspose(up, factor, strides=factor, use_bias=False, name=f"{name}_up{i + 1}_deconv")(x)
        y = layers.BatchNormalization(epsilon=1e-3, momentum=config.bn_momentum, name=f"{name}_up{i + 1}_bn")(y)
        outputs.append(layers.ReLU(name=f"{name}_up{i + 1}_relu")(y))
    if len(outputs) == 1:
        return outputs[0]
    return layers.Concatenate(axis=-1, name=f"{name}_neck_concat")(outputs)


def _flow_head(x, config: PointPillarsConfig, name: str):
    """Fused multi-frame features [B, H, W, C] -> box_flow [B, H, W, n_a, n_f - 1, 3] float32."""
    h, w = config.output_grid.height, config.output_grid.width
    pairs = config.frames - 1
    y = layers.Conv2D(config.num_anchors * pairs * 3, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3),
                      name=f"{name}_flow_conv")(x)
    y = layers.Activation("linear", dtype="float32", name=f"{name}_flow_float32")(y)
    return layers.Reshape((h, w, config.num_anchors, pairs, 3), dtype="float32", name="box_flow")(y)


def build_pointpillars(
    name: str = "pointpillars",
    config: str | PointPillarsConfig = "tiny",
    heads: Sequence[str] = HEADS,
    prior_probability: float = 0.01,
) -> keras.Model:
    """PointPillars with detection and/or box-flow heads on ``config.frames`` frames.

    Args:
      name: model name and layer-name prefix.
      config: a ``PRESETS`` name or a ``PointPillarsConfig``.
      heads: a non-empty subset of ("detection", "flow").
      prior_probability: initial object probability of the class logits (focal-loss initialisation).

    Returns:
      ``keras.Model`` with inputs ``{"points": float32 [B, n_f, P, 4], "points_mask": float32 [B, n_f, P]}``
      (1 = real point, 0 = padding; P any size; frames oldest first) and outputs, on the output grid [H, W] = ``config.output_grid``:
      ``class_logits`` [B, H, W, n_a, n_f], ``residuals`` [B, H, W, n_a, n_f, 7], ``direction_logits``
      [B, H, W, n_a, n_f] (when ``config.direction_head``) for "detection"; ``box_flow``
      [B, H, W, n_a, n_f - 1, 3] for "flow". All float32.
    """
    config = get_config(config)
    heads = tuple(heads)
    if not heads or any(h not in HEADS for h in heads) or len(set(heads)) != len(heads):
        raise ValueError(f"heads must be a non-empty subset of {HEADS}, got {heads!r}.")
    if "flow" in heads and config.frames < 2:
        raise ValueError(f"The flow head needs at least 2 frames, got config.frames={config.frames}.")
    nf, na = config.frames, config.num_anchors
    points = keras.Input(shape=(nf, None, NUM_POINT_FEATURES), dtype="float32", name="points")
    points_mask = keras.Input(shape=(nf, None), dtype="float32", name="points_mask")
    flat_points = MergeFrames(name=f"{name}_points_frames_as_batch")(points)
    flat_mask = MergeFrames(name=f"{name}_mask_frames_as_batch")(points_mask)
    pseudo = pillar_feature_net(flat_points, flat_mask, config, name)  # [B * n_f, H, W, C]

    outputs = {}
    if "detection" in heads:
        features = pointpillars_backbone(pseudo, config, f"{name}_backbone")
        bias = -math.log((1.0 - prior_probability) / prior_probability)
        logits = layers.Conv2D(na, 1, bias_initializer=keras.initializers.Constant(bias), name=f"{name}_class_conv")(features)
        outputs["class_logits"] = PerAnchorFrames(nf, na, 1, name="class_logits")(logits)
        res = layers.Conv2D(na * BOX_CODE_SIZE, 1, name=f"{name}_residual_conv")(features)
        outputs["residuals"] = PerAnchorFrames(nf, na, BOX_CODE_SIZE, name="residuals")(res)
        if config.direction_head:
            direction = layers.Conv2D(na, 1, name=f"{name}_direction_conv")(features)
            outputs["direction_logits"] = PerAnchorFrames(nf, na, 1, name="direction_logits")(direction)
        if "flow" in heads:
            fused = FramesToChannels(nf, name=f"{name}_flow_frames_to_channels")(features)
            for i in range(config.flow_fusion_convs):
                fused = _conv_bn_relu(fused, config.flow_fusion_channels, 1, f"{name}_flow_fusion{i}", config.bn_momentum)
            outputs["box_flow"] = _flow_head(fused, config, name)
    else:  # a separate flow model: early fusion of the frames' pseudo-images, one backbone
        stacked = FramesToChannels(nf, name=f"{name}_frames_to_channels")(pseudo)
        features = pointpillars_backbone(stacked, config, f"{name}_backbone")
        outputs["box_flow"] = _flow_head(features, config, name)
    return keras.Model({"points": points, "points_mask": points_mask}, outputs, name=name)
