"""The procedural street scene: a straight road, a camera driving along it, and oriented boxes.

World frame: the camera-frame axes (x right, y down, z forward) of an unrotated
camera at the start of the road; the camera centre is at ``y = 0`` and the
ground plane is ``y = +camera.height``. The road runs along ``+z`` and is
centred on ``x = 0``. Units are metres, seconds and radians.

Boxes: centre ``(x, y, z)`` (the geometric centre), size ``(length, width,
height)`` and ``yaw`` about the (downward) y axis. A box's local frame is
``world = R_y(yaw) @ local + centre`` with ``R_y(a) = [[cos a, 0, sin a],
[0, 1, 0], [-sin a, 0, cos a]]``; ``length`` lies along local x, ``height``
along local y and ``width`` along local z (the KITTI camera-frame convention:
``yaw = -pi/2`` points the length axis along ``+z``).

Only geometry lives here (no TensorFlow, no appearance beyond per-box random
numbers that a style turns into colours), so both styles share one sampler.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from taskology_tf.data.example import CLASS_NAMES

CLASS_IDS = {name: i for i, name in enumerate(CLASS_NAMES)}

# Materials: what a style paints on a surface. Ground materials are chosen per pixel.
ASPHALT, SIDEWALK, GRASS, FACADE, FOLIAGE, BARK, METAL, CAR_BODY, CAR_CABIN, PERSON = range(10)
MATERIAL_NAMES = (
    "asphalt", "sidewalk", "grass", "facade", "foliage", "bark", "metal", "car_body", "car_cabin", "person",
)

TIME_STEP = 0.1  # seconds between consecutive frames
HEADING_FORWARD = -np.pi / 2  # yaw whose length axis points along +z (down the road)


def rotation_y(yaw: float) -> np.ndarray:
    """[3, 3] rotation about the y axis: ``[[c, 0, s], [0, 1, 0], [-s, 0, c]]``."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def heading_direction(yaw: np.ndarray) -> np.ndarray:
    """World direction of a box's length axis: ``R_y(yaw) @ (1, 0, 0)`` -> [..., 3]."""
    yaw = np.asarray(yaw, dtype=np.float64)
    return np.stack([np.cos(yaw), np.zeros_like(yaw), -np.sin(yaw)], axis=-1)


@dataclasses.dataclass(frozen=True)
class Boxes:
    """Oriented boxes, one row each (struct of arrays), in the world frame at ``time``.

    center: [N, 3] metres; size: [N, 3] (length, width, height) metres; yaw: [N] radians;
    velocity: [N, 3] metres/second (world frame); class_id: [N] index into ``CLASS_NAMES``;
    material: [N] one of the material constants; instance_id: [N] > 0 for movable objects
    (a car's body and cabin share one), 0 for static stuff; tint: [N, 3] uniform numbers in
    [0, 1) a style turns into colours and texture seeds.
    """

    center: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    velocity: np.ndarray
    class_id: np.ndarray
    material: np.ndarray
    instance_id: np.ndarray
    tint: np.ndarray

    def __len__(self) -> int:
        return int(self.center.shape[0])

    def half_extents(self) -> np.ndarray:
        """[N, 3] half sizes along the local (x, y, z) axes = (length, height, width) / 2."""
        return 0.5 * self.size[:, [0, 2, 1]]

    def corners(self) -> np.ndarray:
        """[N, 8, 3] world-frame corners."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        local = signs[None] * self.half_extents()[:, None, :]  # [N, 8, 3]
        c, s = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        x = c * local[..., 0] + s * local[..., 2]
        z = -s * local[..., 0] + c * local[..., 2]
        return np.stack([x, local[..., 1], z], axis=-1) + self.center[:, None, :]


@dataclasses.dataclass(frozen=True)
class Camera:
    """A camera at ``height`` metres above the ground, driving along its heading at constant speed.

    x0: lateral position (metres) at time 0; yaw: heading about the y axis relative to the
    road at time 0 (radians, positive turns the optical axis towards +x); speed: metres/second;
    yaw_rate: radians/second (a gentle steer, so ego-motion has a rotation too).
    """

    height: float
    x0: float
    yaw: float
    speed: float
    yaw_rate: float = 0.0

    def yaw_at(self, time: float) -> float:
        """Heading (radians) at ``time`` seconds."""
        return self.yaw + self.yaw_rate * time

    def pose_at(self, time: float) -> np.ndarray:
        """[4, 4] float64 camera-to-world transform at ``time`` seconds (the heading integrated exactly)."""
        yaw = self.yaw_at(time)
        if abs(self.yaw_rate) > 1e-12:
            r = self.speed / self.yaw_rate
            dx, dz = r * (math.cos(self.yaw) - math.cos(yaw)), r * (math.sin(yaw) - math.sin(self.yaw))
        else:
            dx, dz = self.speed * time * math.sin(yaw), self.speed * time * math.cos(yaw)
        pose = np.eye(4)
        pose[:3, :3] = rotation_y(yaw)
        pose[:3, 3] = (self.x0 + dx, 0.0, dz)
        return pose


@dataclasses.dataclass(frozen=True)
class Road:
    """A straight road along +z centred on x = 0, sidewalks beside it, grass beyond.

    half_width: metres from the centre line to the kerb; lane_width: metres;
    lanes_per_direction: lanes on each side of the centre line (traffic keeps right:
    x > 0 drives towards +z); parking_width: parking strip inside each kerb (0 = none);
    sidewalk_width: metres beyond each kerb; dash_length / dash_gap: lane-divider dashes.
    """

    half_width: float
    lane_width: float
    lanes_per_direction: int
    parking_width: float
    sidewalk_width: float
    dash_length: float = 3.0
    dash_gap: float = 6.0


@dataclasses.dataclass(frozen=True)
class Scene:
    """One sampled world: camera trajectory, road layout, boxes (at time 0) and a texture seed."""

    camera: Camera
    road: Road
    boxes: Boxes
    seed: int = 0

    def objects_at(self, time: float) -> Boxes:
        """All boxes at ``time`` seconds (moving ones displaced by ``velocity * time``)."""
        return dataclasses.replace(self.boxes, center=self.boxes.center + self.boxes.velocity * float(time))

    @property
    def ground_y(self) -> float:
        """World y of the ground plane (the camera height)."""
        return self.camera.height


class _BoxList:
    """Accumulates boxes row by row while sampling."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.rows: list[tuple] = []
        self.next_instance = 1

    def add(self, center, size, yaw, cls, material, velocity=(0.0, 0.0, 0.0), instance=0, tint=None):
        tint = self.rng.random(3) if tint is None else tint
        self.rows.append((center, size, yaw, velocity, CLASS_IDS[cls], material, instance, tint))

    def new_instance(self) -> int:
        self.next_instance += 1
        return self.next_instance - 1

    def build(self) -> Boxes:
        cols = list(zip(*self.rows))
        return Boxes(
            center=np.asarray(cols[0], np.float64).reshape(-1, 3),
            size=np.asarray(cols[1], np.float64).reshape(-1, 3),
            yaw=np.asarray(cols[2], np.float64).reshape(-1),
            velocity=np.asarray(cols[3], np.float64).reshape(-1, 3),
            class_id=np.asarray(cols[4], np.int32).reshape(-1),
            material=np.asarray(cols[5], np.int32).reshape(-1),
            instance_id=np.asarray(cols[6], np.int32).reshape(-1),
            tint=np.asarray(cols[7], np.float64).reshape(-1, 3),
        )


def _heading(yaw: float) -> tuple[float, float, float]:
    """``heading_direction`` for one yaw, as a tuple (fast path for the sampler)."""
    return (math.cos(yaw), 0.0, -math.sin(yaw))


def _on_ground(ground_y: float, height: float, lift: float = 0.0) -> float:
    """World y of the centre of a box ``height`` tall whose bottom is ``lift`` above the ground."""
    return ground_y - lift - 0.5 * height


def _add_car(boxes: _BoxList, x: float, z: float, yaw: float, speed: float, ground_y: float) -> None:
    """A car (body + cabin, one instance) centred at ground position (x, z), driving at ``speed``."""
    rng = boxes.rng
    length, width = rng.uniform(3.8, 4.9), rng.uniform(1.65, 1.95)
    clearance, body_h, cabin_h = 0.18, rng.uniform(0.75, 0.95), rng.uniform(0.5, 0.65)
    forward = _heading(yaw)
    velocity = (speed * forward[0], 0.0, speed * forward[2])
    instance = boxes.new_instance()
    tint = rng.random(3)
    boxes.add((x, _on_ground(ground_y, body_h, clearance), z), (length, width, body_h), yaw, "car", CAR_BODY,
              velocity, instance, tint)
    cabin_len = length * rng.uniform(0.45, 0.6)
    back = -0.08 * length
    cabin_y = _on_ground(ground_y, cabin_h, clearance + body_h)
    boxes.add((x + back * forward[0], cabin_y, z + back * forward[2]), (cabin_len, width * 0.88, cabin_h), yaw,
              "car", CAR_CABIN, velocity, instance, tint)


def _sample_buildings(boxes: _BoxList, road: Road, side: int, ground_y: float) -> None:
    rng = boxes.rng
    inner = road.half_width + road.sidewalk_width
    z = rng.uniform(-45.0, -30.0)
    while z < 220.0:
        frontage = rng.uniform(8.0, 30.0)
        if rng.random() < 0.25:  # a gap between buildings
            z += rng.uniform(3.0, 15.0)
            continue
        depth, height = rng.uniform(8.0, 20.0), rng.uniform(6.0, 30.0)
        yaw = rng.uniform(-0.05, 0.05) if rng.random() < 0.4 else 0.0
        half_x = 0.5 * (depth * abs(np.cos(yaw)) + frontage * abs(np.sin(yaw)))
        x = side * (inner + rng.uniform(0.0, 3.0) + half_x)
        boxes.add((x, _on_ground(ground_y, height), z + 0.5 * frontage), (depth, frontage, height), yaw,
                  "building", FACADE)
        z += frontage + (rng.uniform(0.0, 1.5) if rng.random() < 0.5 else 0.0)
        if rng.random() < 0.2:  # a low wall in front of the next stretch
            wall_len = rng.uniform(4.0, 12.0)
            wall_h = rng.uniform(0.8, 2.0)
            wx = side * (inner + rng.uniform(0.0, 0.5) + 0.15)
            boxes.add((wx, _on_ground(ground_y, wall_h), z + 0.5 * wall_len), (0.3, wall_len, wall_h), 0.0,
                      "building", FACADE)


def _sample_street_furniture(boxes: _BoxList, road: Road, side: int, ground_y: float) -> None:
    """Trees (trunk + crown) and poles (with an arm) at the kerb."""
    rng = boxes.rng
    z = rng.uniform(-30.0, -20.0)
    while z < 160.0:
        z += rng.uniform(7.0, 20.0)
        x = side * (road.half_width + rng.uniform(0.45, 0.8))
        if rng.random() < 0.6:
            trunk_h, trunk_w = rng.uniform(2.2, 3.2), rng.uniform(0.25, 0.4)
            boxes.add((x, _on_ground(ground_y, trunk_h), z), (trunk_w, trunk_w, trunk_h), rng.uniform(0, np.pi / 2),
                      "vegetation", BARK)
            crown = rng.uniform(1.8, 3.6, size=3)
            boxes.add((x, _on_ground(ground_y, crown[2], trunk_h - 0.3), z), tuple(crown), rng.uniform(0, np.pi / 2),
                      "vegetation", FOLIAGE)
        else:
            pole_h = rng.uniform(4.0, 8.0)
            boxes.add((x, _on_ground(ground_y, pole_h), z), (0.16, 0.16, pole_h), 0.0, "pole", METAL)
            if rng.random() < 0.6:
                arm = rng.uniform(1.0, 2.5)
                boxes.add((x - side * 0.5 * arm, ground_y - pole_h + 0.1, z), (arm, 0.12, 0.12), 0.0, "pole", METAL)


def _sample_cars(boxes: _BoxList, road: Road, camera: Camera, ground_y: float) -> None:
    rng = boxes.rng
    if road.parking_width > 0:
        for side in (-1, 1):
            z = rng.uniform(-25.0, -15.0)
            while z < 150.0:
                z += rng.uniform(5.0, 10.0)
                if rng.random() < 0.65:
                    x = side * (road.half_width - 0.5 * road.parking_width) + rng.uniform(-0.15, 0.15)
                    yaw = HEADING_FORWARD * side + rng.uniform(-0.04, 0.04)
                    _add_car(boxes, x, z, yaw, 0.0, ground_y)
    for side in (-1, 1):
        for lane in range(road.lanes_per_direction):
            lane_x = side * (lane + 0.5) * road.lane_width
            ego_lane = side == 1 and abs(lane_x - camera.x0) < 0.5 * road.lane_width
            zs: list[float] = []
            for _ in range(rng.integers(0, 3)):
                z = rng.uniform(9.0, 80.0) if ego_lane else rng.uniform(-15.0, 80.0)
                if all(abs(z - other) > 9.0 for other in zs):
                    zs.append(z)
            for z in zs:
                yaw = HEADING_FORWARD * side + rng.uniform(-0.03, 0.03)
                _add_car(boxes, lane_x + rng.uniform(-0.3, 0.3), z, yaw, rng.uniform(5.0, 14.0), ground_y)


def _sample_pedestrians(boxes: _BoxList, road: Road, ground_y: float) -> None:
    rng = boxes.rng
    for _ in range(rng.integers(3, 11)):
        height = rng.uniform(1.55, 1.9)
        size = (rng.uniform(0.3, 0.45), rng.uniform(0.45, 0.6), height)
        instance = boxes.new_instance()
        if rng.random() < 0.12:  # crossing the road
            x, z = rng.uniform(-road.half_width, road.half_width), rng.uniform(10.0, 45.0)
            yaw = 0.0 if rng.random() < 0.5 else np.pi
            speed = rng.uniform(0.8, 1.6)
        else:
            side = rng.choice((-1, 1))
            x = side * (road.half_width + rng.uniform(1.2, max(1.3, road.sidewalk_width - 0.4)))
            z = rng.uniform(-5.0, 60.0)
            if rng.random() < 0.6:  # walking along the sidewalk, either way
                yaw = HEADING_FORWARD + (np.pi if rng.random() < 0.5 else 0.0)
                speed = rng.uniform(0.8, 1.8)
            else:
                yaw, speed = rng.uniform(-np.pi, np.pi), 0.0
        forward = _heading(yaw)
        boxes.add((x, _on_ground(ground_y, height), z), size, yaw, "pedestrian", PERSON,
                  (speed * forward[0], 0.0, speed * forward[2]), instance)


def _add_dense_traffic(boxes: _BoxList, road: Road, camera: Camera, ground_y: float) -> None:
    """More moving cars: a lead car 6-15 m ahead in the camera's lane at the camera's speed +- 1.5 m/s (nearly
    still in the image, so a static-world warp puts it at infinity: the failure segmentation's movable mask
    addresses in Table 1), and one more moving car per lane where it fits."""
    rng = boxes.rng
    car = CLASS_IDS["car"]
    taken = [(row[0][0], row[0][2]) for row in boxes.rows if row[4] == car]

    def place(x: float, z: float, yaw: float, speed: float) -> None:
        if all(abs(x - ox) > 1.5 or abs(z - oz) > 9.0 for ox, oz in taken):
            _add_car(boxes, x + rng.uniform(-0.3, 0.3), z, yaw, speed, ground_y)
            taken.append((x, z))

    ego_lane = min(int(camera.x0 // road.lane_width), road.lanes_per_direction - 1)
    for _ in range(3):  # a few tries: a sampled car may already stand there
        place((ego_lane + 0.5) * road.lane_width, rng.uniform(6.0, 15.0), HEADING_FORWARD + rng.uniform(-0.03, 0.03),
              max(camera.speed + rng.uniform(-1.5, 1.5), 0.0))
    for side in (-1, 1):
        for lane in range(road.lanes_per_direction):
            z = rng.uniform(9.0, 60.0) if side == 1 and lane == ego_lane else rng.uniform(-10.0, 60.0)
            place(side * (lane + 0.5) * road.lane_width, z, HEADING_FORWARD * side + rng.uniform(-0.03, 0.03),
                  rng.uniform(5.0, 14.0))


TRAFFIC = ("normal", "dense")


def sample_scene(rng: np.random.Generator, traffic: str = "normal") -> Scene:
    """Sample one street scene (geometry only; the same distribution for every style).

    traffic: "normal", or "dense": the same scene (same draws) with more moving cars added at the end
      (see ``_add_dense_traffic``).
    """
    if traffic not in TRAFFIC:
        raise ValueError(f"traffic must be one of {TRAFFIC}, got {traffic!r}.")
    lanes = int(rng.integers(1, 3))
    lane_width = rng.uniform(3.0, 3.6)
    parking = 2.2 if rng.random() < 0.6 else 0.0
    road = Road(
        half_width=lanes * lane_width + parking,
        lane_width=lane_width,
        lanes_per_direction=lanes,
        parking_width=parking,
        sidewalk_width=rng.uniform(2.0, 4.5),
        dash_length=rng.uniform(2.0, 4.0),
        dash_gap=rng.uniform(4.0, 8.0),
    )
    lane = int(rng.integers(0, lanes))
    camera = Camera(
        height=rng.uniform(1.4, 1.65),
        x0=(lane + 0.5) * lane_width + rng.uniform(-0.3, 0.3),
        yaw=np.deg2rad(rng.uniform(-4.0, 4.0)),
        speed=rng.uniform(5.0, 15.0),
        yaw_rate=np.deg2rad(rng.uniform(-3.0, 3.0)),
    )
    boxes = _BoxList(rng)
    for side in (-1, 1):
        _sample_buildings(boxes, road, side, camera.height)
        _sample_street_furniture(boxes, road, side, camera.height)
    _sample_cars(boxes, road, camera, camera.height)
    _sample_pedestrians(boxes, road, camera.height)
    texture_seed = int(rng.integers(0, 2**31))
    if traffic == "dense":  # drawn last, so that the rest of the scene is the "normal" one
        _add_dense_traffic(boxes, road, camera, camera.height)
    return Scene(camera=camera, road=road, boxes=boxes.build(), seed=texture_seed)
