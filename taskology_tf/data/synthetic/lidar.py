"""LiDAR sweeps of a synthetic street: a rotating multi-beam sensor on a moving ego vehicle.

World frame: z up, the ground is the plane z = 0, the road runs along +x centred
on y = 0 (traffic keeps right: lanes with y < 0 drive towards +x). Sensor frame:
x forward, y left, z up, origin at the sensor (``height`` metres above the
ground). Metres, seconds, radians.

The scene has the ground (asphalt with painted lines, kerbside strips), static
structures (buildings, garden walls, poles) and vehicles (cars, vans), each an
upright box ``(x, y, z, length, width, height, heading)`` (z = box centre). Parked
vehicles stand still; moving ones drive with constant speed and yaw rate (the arc
integrated exactly), as does the ego vehicle. Every vehicle has a track id.

A sweep casts one ray per (beam, azimuth) from the sensor (an instantaneous scan:
no rolling shutter) against the ground and all boxes (vectorised slab tests, each
box only against the azimuth columns it can cover). The first hit within range
becomes a point ``(x, y, z, intensity)`` in the sensor frame; intensity is the
surface's reflectivity times an incidence-angle term (plus noise), in [0, 1].

``render_lidar_sequence`` gives n_f frames (``frame_interval`` apart) in the
per-frame form of ``taskology_tf.data.lidar_sequence``; ``synthetic_lidar_dataset``
(gin name ``synthetic_lidar``) stacks them into fixed-size multi-frame examples
with ``stack_sequence``. NumPy only; TensorFlow loads when a dataset is made.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading

import gin
import numpy as np

from taskology_tf.data import lidar_sequence

# Reflectivities (before the incidence term).
ASPHALT, PAINT, KERBSIDE, FACADE, WALL, POLE = 0.12, 0.75, 0.3, 0.35, 0.45, 0.6


@dataclasses.dataclass(frozen=True)
class LidarConfig:
    """A rotating LiDAR: ``beams`` rows spread uniformly over [elevation_min, elevation_max] (radians),
    ``azimuths`` columns over the full turn; returns between ``min_range`` and ``max_range`` metres.

    height: sensor height above the ground (metres); range_noise: std of Gaussian range noise
    (metres); dropout: fraction of returns lost at random; intensity_noise: std added to intensity.
    """

    beams: int = 32
    azimuths: int = 1024
    elevation_min: float = -0.42
    elevation_max: float = 0.04
    max_range: float = 60.0
    min_range: float = 1.0
    height: float = 1.8
    range_noise: float = 0.01
    dropout: float = 0.02
    intensity_noise: float = 0.02

    def __post_init__(self):
        for name in ("beams", "azimuths"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"LidarConfig.{name} must be a positive integer, got {value!r}.")
        if not -math.pi / 2 < self.elevation_min < self.elevation_max < math.pi / 2:
            raise ValueError(
                "LidarConfig needs -pi/2 < elevation_min < elevation_max < pi/2 (radians), got "
                f"{self.elevation_min!r}, {self.elevation_max!r}."
            )
        if not 0.0 <= self.min_range < self.max_range:
            raise ValueError(f"LidarConfig needs 0 <= min_range < max_range, got {self.min_range}, {self.max_range}.")
        if self.height <= 0 or self.range_noise < 0 or self.intensity_noise < 0 or not 0 <= self.dropout < 1:
            raise ValueError(
                "LidarConfig needs height > 0, range_noise >= 0, intensity_noise >= 0 and 0 <= dropout < 1; got "
                f"{self.height}, {self.range_noise}, {self.intensity_noise}, {self.dropout}."
            )

    def elevations(self) -> np.ndarray:
        """[beams] beam elevations (radians), lowest first."""
        if self.beams == 1:
            return np.array([0.5 * (self.elevation_min + self.elevation_max)])
        return np.linspace(self.elevation_min, self.elevation_max, self.beams)

    def azimuth_angles(self) -> np.ndarray:
        """[azimuths] column azimuths (radians, from +x towards +y), column j at 2 pi j / azimuths."""
        return 2.0 * np.pi * np.arange(self.azimuths) / self.azimuths

    def directions(self) -> np.ndarray:
        """[beams, azimuths, 3] unit ray directions in the sensor frame."""
        el = self.elevations()[:, None]
        az = self.azimuth_angles()[None, :]
        return np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), -1)


TINY = LidarConfig(beams=16, azimuths=256, max_range=40.0)


def integrate_motion(xy, heading, speed, yaw_rate, time: float):
    """Planar motion at constant speed and yaw rate after ``time`` seconds, integrated exactly.

    xy: [N, 2] metres; heading: [N] radians; speed: [N] m/s along the heading; yaw_rate: [N] rad/s.
    Returns (xy [N, 2], heading [N]) at ``time``; headings wrapped to [-pi, pi).
    """
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    h0, v, w = (np.asarray(a, np.float64).reshape(-1) for a in (heading, speed, yaw_rate))
    h1 = h0 + w * time
    turning = np.abs(w) > 1e-9
    w_safe = np.where(turning, w, 1.0)
    dx = np.where(turning, v / w_safe * (np.sin(h1) - np.sin(h0)), v * time * np.cos(h0))
    dy = np.where(turning, -v / w_safe * (np.cos(h1) - np.cos(h0)), v * time * np.sin(h0))
    return xy + np.stack([dx, dy], axis=1), lidar_sequence.wrap_angle(h1)


@dataclasses.dataclass(frozen=True)
class LidarScene:
    """One sampled street.

    ego: (x, y, heading, speed, yaw_rate) of the ego vehicle at time 0 (world frame).
    static_boxes: [S, 7] world boxes that never move; static_reflectivity: [S].
    vehicles: [V, 7] world boxes at time 0; vehicle_speed, vehicle_yaw_rate: [V];
    vehicle_reflectivity: [V]; track_ids: [V] int64 (> 0).
    road: (half_width of the carriageway, lane_width, lanes_per_direction, kerbside_width) metres.
    """

    ego: tuple[float, float, float, float, float]
    static_boxes: np.ndarray
    static_reflectivity: np.ndarray
    vehicles: np.ndarray
    vehicle_speed: np.ndarray
    vehicle_yaw_rate: np.ndarray
    vehicle_reflectivity: np.ndarray
    track_ids: np.ndarray
    road: tuple[float, float, int, float]

    def vehicles_at(self, time: float) -> np.ndarray:
        """[V, 7] world boxes of the vehicles at ``time`` seconds."""
        boxes = np.array(self.vehicles, np.float64, copy=True)
        if len(boxes):
            xy, heading = integrate_motion(boxes[:, :2], boxes[:, 6], self.vehicle_speed, self.vehicle_yaw_rate, time)
            boxes[:, :2], boxes[:, 6] = xy, heading
        return boxes

    def ego_pose(self, time: float, height: float) -> np.ndarray:
        """[4, 4] float64 sensor-to-world transform at ``time`` for a sensor ``height`` above the ground."""
        x, y, heading, speed, yaw_rate = self.ego
        xy, h = integrate_motion([[x, y]], [heading], [speed], [yaw_rate], time)
        return lidar_sequence.yaw_transform(float(h[0]), (xy[0, 0], xy[0, 1], height))


def _box(x, y, length, width, height, heading, lift=0.0):
    """An upright box standing on the ground (or ``lift`` above it): centre z = lift + height / 2."""
    return (x, y, lift + 0.5 * height, length, width, height, heading)


def _vehicle_size(rng: np.random.Generator) -> tuple[float, float, float]:
    if rng.random() < 0.2:  # a van or small truck
        return rng.uniform(5.2, 7.5), rng.uniform(2.0, 2.4), rng.uniform(2.1, 3.0)
    return rng.uniform(3.8, 4.9), rng.uniform(1.7, 1.95), rng.uniform(1.4, 1.75)


def sample_lidar_scene(rng: np.random.Generator, duration: float = 1.0) -> LidarScene:
    """Sample a street for sweeps over ``duration`` seconds (vehicles are spaced not to collide in that time)."""
    lanes = int(rng.integers(1, 3))
    lane_width = rng.uniform(3.2, 3.7)
    kerbside = 2.4 if rng.random() < 0.6 else 0.0  # a parking strip inside each kerb
    half = lanes * lane_width + kerbside
    sidewalk = rng.uniform(2.0, 4.0)
    ego_lane = int(rng.integers(0, lanes))
    ego_speed = 0.0 if rng.random() < 0.1 else rng.uniform(4.0, 15.0)
    ego = (0.0, -(ego_lane + 0.5) * lane_width + rng.uniform(-0.3, 0.3), np.deg2rad(rng.uniform(-3, 3)),
           ego_speed, np.deg2rad(rng.uniform(-3, 3)))
    x_min, x_max = -70.0, 70.0 + ego_speed * duration

    static, reflect = [], []
    for side in (-1, 1):
        x = x_min + rng.uniform(-10.0, 0.0)
        while x < x_max:  # buildings with gaps, some behind a garden wall
            frontage = rng.uniform(8.0, 30.0)
            if rng.random() < 0.2:
                x += rng.uniform(4.0, 15.0)
                continue
            depth, height = rng.uniform(8.0, 20.0), rng.uniform(4.0, 25.0)
            setback = rng.uniform(0.0, 6.0)
            y = side * (half + sidewalk + setback + 0.5 * depth)
            static.append(_box(x + 0.5 * frontage, y, frontage, depth, height, rng.uniform(-0.03, 0.03)))
            reflect.append(FACADE * rng.uniform(0.7, 1.3))
            if setback > 2.0 and rng.random() < 0.5:
                wall_h = rng.uniform(0.6, 1.8)
                wall_y = side * (half + sidewalk + 0.2)
                static.append(_box(x + 0.5 * frontage, wall_y, frontage * 0.9, 0.25, wall_h, 0.0))
                reflect.append(WALL)
            x += frontage + rng.uniform(0.0, 2.0)
        x = x_min + rng.uniform(0.0, 20.0)
        while x < x_max:  # poles at the kerb
            static.append(_box(x, side * (half + 0.4), 0.2, 0.2, rng.uniform(4.0, 8.0), 0.0))
            reflect.append(POLE)
            x += rng.uniform(15.0, 35.0)

    vehicles, speeds, yaw_rates = [], [], []
    if kerbside > 0:
        for side in (-1, 1):
            x = x_min + rng.uniform(0.0, 8.0)
            while x < x_max:
                length, width, height = _vehicle_size(rng)
                if rng.random() < 0.6:
                    heading = (0.0 if side < 0 else np.pi) + rng.uniform(-0.05, 0.05)
                    y = side * (half - 0.5 * kerbside) + rng.uniform(-0.2, 0.2)
                    vehicles.append(_box(x + 0.5 * length, y, length, width, height, heading, lift=0.0))
                    speeds.append(0.0)
                    yaw_rates.append(0.0)
                x += length + rng.uniform(1.0, 6.0)
    for side in (-1, 1):  # side -1 drives towards +x (as the ego), side +1 towards -x
        for lane in range(lanes):
            y = side * (lane + 0.5) * lane_width
            in_ego_lane = side < 0 and lane == ego_lane
            base = ego_speed if in_ego_lane else rng.uniform(5.0, 14.0)
            x = x_min + rng.uniform(0.0, 20.0)
            while x < x_max:
                length, width, height = _vehicle_size(rng)
                speed = max(0.0, base + rng.uniform(-1.0, 1.0))
                centre = x + 0.5 * length
                clear = 0.5 * length + 3.0 + 2.0 * duration  # keep off the ego vehicle (about 5 m long)
                if rng.random() < 0.5 and not (in_ego_lane and abs(centre) < clear + 2.5):
                    heading = (0.0 if side < 0 else np.pi) + rng.uniform(-0.04, 0.04)
                    vehicles.append(_box(centre, y + rng.uniform(-0.3, 0.3), length, width, height, heading))
                    speeds.append(speed)
                    yaw_rates.append(rng.uniform(-0.05, 0.05))
                x += length + 6.0 + 2.5 * duration + rng.uniform(0.0, 25.0)

    vehicles_arr = np.asarray(vehicles, np.float64).reshape(-1, 7)
    return LidarScene(
        ego=tuple(float(v) for v in ego),
        static_boxes=np.asarray(static, np.float64).reshape(-1, 7),
        static_reflectivity=np.asarray(reflect, np.float64),
        vehicles=vehicles_arr,
        vehicle_speed=np.asarray(speeds, np.float64),
        vehicle_yaw_rate=np.asarray(yaw_rates, np.float64),
        vehicle_reflectivity=rng.uniform(0.15, 0.9, size=len(vehicles_arr)),
        track_ids=np.arange(1, len(vehicles_arr) + 1, dtype=np.int64),
        road=(float(half), float(lane_width), lanes, float(kerbside)),
    )


def _ground_reflectivity(world_xy: np.ndarray, road: tuple[float, float, int, float]) -> np.ndarray:
    """[P] reflectivity of the ground at world (x, y): asphalt, painted lines, kerbside strips."""
    half, lane_width, lanes, kerbside = road
    x, y = world_xy[:, 0], world_xy[:, 1]
    out = np.full(x.shape, ASPHALT)
    out[np.abs(y) > half] = KERBSIDE
    lines = np.arange(-lanes, lanes + 1) * lane_width  # centre line and lane dividers
    near_line = np.min(np.abs(y[:, None] - lines[None, :]), axis=1) < 0.08
    dashed = (np.mod(x, 9.0) < 3.0) | (np.abs(y) < 0.08)  # the centre line is solid
    out[near_line & dashed & (np.abs(y) <= half)] = PAINT
    edge = np.abs(np.abs(y) - (half - kerbside)) < 0.08
    out[edge & (kerbside > 0)] = PAINT
    return out


def _azimuth_columns(boxes: np.ndarray, azimuths: int, max_range: float) -> list[np.ndarray]:
    """Per box (sensor frame), the azimuth columns whose rays may hit it (all if the sensor is beside it)."""
    dist = np.hypot(boxes[:, 0], boxes[:, 1])
    radius = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4])
    centre = np.arctan2(boxes[:, 1], boxes[:, 0])
    step = 2.0 * np.pi / azimuths
    cols = []
    for d, r, c in zip(dist, radius, centre):
        if d - r > max_range:
            cols.append(np.zeros(0, np.int64))
        elif d <= r * 1.0001:
            cols.append(np.arange(azimuths))
        else:
            half = math.asin(min(1.0, r / d)) + step
            lo = math.floor((c - half) / step)
            hi = math.ceil((c + half) / step)
            cols.append(np.mod(np.arange(lo, hi + 1), azimuths)[:azimuths])
    return cols


def cast_rays(directions: np.ndarray, boxes: np.ndarray, ground_z: float | None, columns=None):
    """First hits of rays from the origin against upright boxes and a ground plane.

    directions: [R, A, 3] unit rays (R beams x A azimuth columns), sensor frame.
    boxes: [B, 7] upright boxes in the same frame; ground_z: height of the plane z = ground_z
    (None = no ground); columns: per box the azimuth columns to test (default all).
    Returns (range [R, A] metres, inf where nothing is hit; hit [R, A] int64: box index, -1 = ground,
    -2 = nothing; cos_incidence [R, A] |cos| of the angle between ray and surface normal).
    """
    beams, azimuths, _ = directions.shape
    rays = directions.reshape(-1, 3)
    best = np.full(rays.shape[0], np.inf)
    hit = np.full(rays.shape[0], -2, np.int64)
    cos_inc = np.zeros(rays.shape[0])
    if ground_z is not None and ground_z < 0:
        down = rays[:, 2] < -1e-9
        best[down] = ground_z / rays[down, 2]
        hit[down] = -1
        cos_inc[down] = -rays[down, 2]
    if len(boxes):
        if columns is None:
            columns = [np.arange(azimuths)] * len(boxes)
        ray_idx, box_idx = [], []
        beam_offsets = (np.arange(beams) * azimuths)[:, None]
        for b, cols in enumerate(columns):
            if len(cols):
                idx = (beam_offsets + cols[None, :]).reshape(-1)
                ray_idx.append(idx)
                box_idx.append(np.full(idx.shape, b, np.int64))
        if ray_idx:
            ray_idx = np.concatenate(ray_idx)
            box_idx = np.concatenate(box_idx)
            b = boxes[box_idx]
            c, s = np.cos(b[:, 6]), np.sin(b[:, 6])
            d = rays[ray_idx]
            # Ray in the box's local frame: origin -R^T centre, direction R^T d.
            ox = -(c * b[:, 0] + s * b[:, 1])
            oy = -(-s * b[:, 0] + c * b[:, 1])
            oz = -b[:, 2]
            dx = c * d[:, 0] + s * d[:, 1]
            dy = -s * d[:, 0] + c * d[:, 1]
            dz = d[:, 2]
            origin = np.stack([ox, oy, oz], 1)
            direction = np.stack([dx, dy, dz], 1)
            half = 0.5 * b[:, 3:6]
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = 1.0 / np.where(np.abs(direction) < 1e-12, 1e-12, direction)
                t1 = (-half - origin) * inv
                t2 = (half - origin) * inv
            t_near_axes = np.minimum(t1, t2)
            t_near = t_near_axes.max(axis=1)
            t_far = np.maximum(t1, t2).min(axis=1)
            ok = (t_near <= t_far) & (t_near > 1e-6)
            ray_idx, box_idx, t_near = ray_idx[ok], box_idx[ok], t_near[ok]
            axis = np.argmax(t_near_axes[ok], axis=1)
            local_dir = direction[ok]
            cos_box = np.abs(local_dir[np.arange(len(axis)), axis])
            np.minimum.at(best, ray_idx, t_near)
            win = t_near <= best[ray_idx]
            hit[ray_idx[win]] = box_idx[win]
            cos_inc[ray_idx[win]] = cos_box[win]
    best = best.reshape(beams, azimuths)
    return best, hit.reshape(beams, azimuths), cos_inc.reshape(beams, azimuths)


def render_sweep(
    scene: LidarScene,
    time: float,
    config: LidarConfig = LidarConfig(),
    *,
    rng: np.random.Generator | None = None,
    min_points: int = 5,
) -> dict[str, np.ndarray]:
    """One sweep at ``time`` seconds as a per-frame dict (see ``taskology_tf.data.lidar_sequence``).

    Keys: points [P, 4] float32 (sensor frame, intensity in [0, 1]); boxes [N, 7] float32 (sensor frame)
    of the vehicles hit by at least ``min_points`` rays (and centred within ``max_range``); track_ids [N]
    int64; num_points_in_box [N] int32 (returns on the vehicle); pose [4, 4] float64 sensor-to-world;
    timestamp () float64 seconds. ``rng`` drives the noise (None = no noise, no dropout).
    """
    pose = scene.ego_pose(time, config.height)
    to_sensor = lidar_sequence.invert_transform(pose)
    vehicles = lidar_sequence.transform_boxes(scene.vehicles_at(time), to_sensor)
    statics = lidar_sequence.transform_boxes(scene.static_boxes, to_sensor)
    boxes = np.concatenate([vehicles, statics], axis=0)
    reflect = np.concatenate([scene.vehicle_reflectivity, scene.static_reflectivity])
    directions = config.directions()
    columns = _azimuth_columns(boxes, config.azimuths, config.max_range)
    rng_range, hit, cos_inc = cast_rays(directions, boxes, -config.height, columns)
    rng_range, hit, cos_inc = rng_range.reshape(-1), hit.reshape(-1), cos_inc.reshape(-1)
    rays = directions.reshape(-1, 3)
    if rng is not None and config.range_noise > 0:
        rng_range = rng_range + rng.normal(0.0, config.range_noise, rng_range.shape)
    keep = (rng_range >= config.min_range) & (rng_range <= config.max_range) & (hit >= -1)
    if rng is not None and config.dropout > 0:
        keep &= rng.random(keep.shape) >= config.dropout
    xyz = rays[keep] * rng_range[keep, None]
    hit, cos_inc = hit[keep], cos_inc[keep]
    reflectivity = np.empty(len(hit))
    on_ground = hit == -1
    reflectivity[~on_ground] = reflect[hit[~on_ground]]
    world_xy = xyz[on_ground, :2] @ pose[:2, :2].T + pose[:2, 3]
    reflectivity[on_ground] = _ground_reflectivity(world_xy, scene.road)
    intensity = reflectivity * (0.25 + 0.75 * cos_inc)
    if rng is not None and config.intensity_noise > 0:
        intensity = intensity + rng.normal(0.0, config.intensity_noise, intensity.shape)
    points = np.concatenate([xyz, np.clip(intensity, 0.0, 1.0)[:, None]], axis=1).astype(np.float32)
    counts = np.bincount(hit[hit >= 0], minlength=len(boxes))[:len(vehicles)]
    visible = (counts >= min_points) & (np.hypot(vehicles[:, 0], vehicles[:, 1]) <= config.max_range)
    return {
        "points": points,
        "boxes": vehicles[visible].astype(np.float32),
        "track_ids": scene.track_ids[visible].astype(np.int64),
        "num_points_in_box": counts[visible].astype(np.int32),
        "pose": pose,
        "timestamp": np.float64(time),
    }


def example_id(index: int, seed: int) -> int:
    """Stable int64 id of example ``index`` of the stream ``seed``."""
    from taskology_tf.data.kitti import stable_id

    return stable_id(f"synthetic_lidar/{int(seed)}/{int(index)}")


def render_lidar_sequence(
    index: int,
    *,
    seed: int = 0,
    n_f: int = 3,
    frame_interval: float = 0.5,
    config: LidarConfig = LidarConfig(),
    min_points: int = 5,
    label_fraction: float = 1.0,
    label_seed: int = 0,
    noise: bool = True,
) -> list[dict[str, np.ndarray]]:
    """The ``n_f`` frames (oldest first, ``frame_interval`` seconds apart) of example ``index`` of stream ``seed``.

    Each frame is a ``render_sweep`` dict plus ``id`` (stable per frame) and ``labelled`` (0/1: a fixed,
    seeded choice per frame keeping ``label_fraction`` of the frames' labels, see
    ``lidar_sequence.frame_labelled``). Deterministic in (index, seed, arguments).
    """
    if int(index) != index or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}.")
    if int(n_f) != n_f or n_f < 1:
        raise ValueError(f"n_f must be a positive integer, got {n_f!r}.")
    if frame_interval <= 0:
        raise ValueError(f"frame_interval must be positive (seconds), got {frame_interval!r}.")
    scene_seq, noise_seq = np.random.SeedSequence([int(seed), 0x11DA2, int(index)]).spawn(2)
    duration = (n_f - 1) * frame_interval
    scene = sample_lidar_scene(np.random.default_rng(scene_seq), duration=duration)
    noise_rng = np.random.default_rng(noise_seq) if noise else None
    from taskology_tf.data.kitti import stable_id

    frames = []
    for k in range(n_f):
        frame = render_sweep(scene, k * frame_interval, config, rng=noise_rng, min_points=min_points)
        key = f"synthetic_lidar/{int(seed)}/{int(index)}/{k}"
        frame["id"] = np.int64(stable_id(key))
        frame["labelled"] = np.float32(lidar_sequence.frame_labelled(key, label_fraction, label_seed))
        frames.append(frame)
    return frames


def lidar_example(
    index: int,
    *,
    seed: int = 0,
    n_f: int = 3,
    frame_interval: float = 0.5,
    config: LidarConfig = LidarConfig(),
    max_points: int | None = None,
    max_boxes: int = 64,
    min_points: int = 5,
    label_fraction: float = 1.0,
    label_seed: int = 0,
) -> dict[str, np.ndarray]:
    """Example ``index`` as one padded multi-frame dict (``lidar_sequence.stack_sequence``), id per example.

    max_points: points kept per frame (None = beams * azimuths, every possible return).
    """
    frames = render_lidar_sequence(index, seed=seed, n_f=n_f, frame_interval=frame_interval, config=config,
                                   min_points=min_points, label_fraction=label_fraction, label_seed=label_seed)
    max_points = config.beams * config.azimuths if max_points is None else max_points
    out = lidar_sequence.stack_sequence(frames, n_f, max_points, max_boxes)
    out["id"] = np.asarray(example_id(index, seed), np.int64)
    return out


_cache: "collections.OrderedDict[tuple, dict[str, np.ndarray]]" = collections.OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 4


def lidar_arrays(num_examples: int, **kwargs) -> dict[str, np.ndarray]:
    """Examples ``0 .. num_examples - 1`` (``lidar_example(i, **kwargs)``) stacked as read-only arrays.

    Rendered once per process and argument set (an LRU cache of the last 4 sets).
    """
    if int(num_examples) != num_examples or num_examples < 1:
        raise ValueError(f"num_examples must be a positive integer, got {num_examples!r}.")
    key = (int(num_examples),) + tuple(sorted(kwargs.items()))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    stacked: dict[str, np.ndarray] = {}
    for i in range(num_examples):
        ex = lidar_example(i, **kwargs)
        if not stacked:
            stacked = {k: np.empty((num_examples,) + np.shape(v), np.asarray(v).dtype) for k, v in ex.items()}
        for k, v in ex.items():
            stacked[k][i] = v
    for v in stacked.values():
        v.setflags(write=False)
    with _cache_lock:
        _cache[key] = stacked
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return stacked


@gin.configurable("synthetic_lidar")
def synthetic_lidar_dataset(
    num_examples: int = 64,
    *,
    seed: int = 0,
    n_f: int = 3,
    frame_interval: float = 0.5,
    beams: int = 32,
    azimuths: int = 1024,
    elevation_min: float = -0.42,
    elevation_max: float = 0.04,
    max_range: float = 60.0,
    sensor_height: float = 1.8,
    max_points: int | None = None,
    max_boxes: int = 64,
    min_points: int = 5,
    label_fraction: float = 1.0,
    label_seed: int = 0,
):
    """An in-memory ``tf.data.Dataset`` of unbatched multi-frame LiDAR examples (rendered once per process).

    Keys, shapes and dtypes: ``lidar_sequence.SEQUENCE_KEYS`` with n_f frames (oldest first, the last is
    the current frame, ``frame_interval`` seconds apart), all in the current frame's sensor frame.
    label_fraction: fraction of frames whose boxes are kept (chosen per frame with ``label_seed``);
      the others have ``labelled`` 0 and masked boxes but keep their points.
    max_points: points per frame (None = beams * azimuths, never subsampled).
    Sensor: ``beams`` x ``azimuths`` rays, elevations in [elevation_min, elevation_max] (radians),
    returns up to ``max_range`` metres, mounted ``sensor_height`` metres above the ground.
    """
    config = LidarConfig(beams=beams, azimuths=azimuths, elevation_min=elevation_min, elevation_max=elevation_max,
                         max_range=max_range, height=sensor_height)
    arrays = lidar_arrays(num_examples, seed=int(seed), n_f=int(n_f), frame_interval=float(frame_interval),
                          config=config, max_points=max_points, max_boxes=int(max_boxes), min_points=int(min_points),
                          label_fraction=float(label_fraction), label_seed=int(label_seed))
    import tensorflow as tf  # only here: rendering never needs TensorFlow

    return tf.data.Dataset.from_tensor_slices(dict(arrays))
