"""Vectorised ray casting of a synthetic scene into one frame's arrays (NumPy only).

One ray per pixel centre. Rays are scaled so that the ray parameter equals the
camera-frame depth z. Each box is tested only against the pixels inside its
screen-space bounding rectangle (boxes clipped at the near plane), all
(box, pixel) pairs at once with the slab test; a z-buffer over the pairs and
the ground plane picks the visible surface. Textures are evaluated in each
surface's own frame and box-filtered over the pixel footprint (see ``style``).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from taskology_tf.data.example import CLASS_NAMES
from taskology_tf.data.synthetic import scene as scene_lib
from taskology_tf.data.synthetic import style as style_lib

NEAR = 0.05  # metres; surfaces closer than this are not rendered
GROUND_FAR = 3000.0  # metres; the ground beyond this reads as sky (the horizon)
FOCAL_PER_WIDTH = 0.58  # fx = fy = 0.58 * width, a KITTI-like field of view
FOOTPRINT_SCALE = 1.5  # texture filter width in pixel footprints (> 1 keeps warps of frame t+1 onto t exact)

_SKY = CLASS_NAMES.index("sky")
_ROAD = CLASS_NAMES.index("road")
_SIDEWALK = CLASS_NAMES.index("sidewalk")
_VEGETATION = CLASS_NAMES.index("vegetation")
# Ground zones by |x|: road, sidewalk, then grass (labelled vegetation).
_GROUND_MATERIALS = np.array([scene_lib.ASPHALT, scene_lib.SIDEWALK, scene_lib.GRASS], np.int32)
_GROUND_CLASSES = np.array([_ROAD, _SIDEWALK, _VEGETATION], np.int32)

# Box corner i has local signs (x, y, z) from the bits (4, 2, 1) of i; edges join corners one bit apart.
_EDGES = np.array([(a, a | bit) for bit in (1, 2, 4) for a in range(8) if not a & bit])


def intrinsics(height: int, width: int) -> np.ndarray:
    """[3, 3] float64 pinhole matrix: fx = fy = 0.58 * width, principal point at the image centre.

    Pixel centres are at integer coordinates, so cx = (width - 1) / 2 and cy = (height - 1) / 2.
    """
    f = FOCAL_PER_WIDTH * width
    return np.array([[f, 0.0, 0.5 * (width - 1)], [0.0, f, 0.5 * (height - 1)], [0.0, 0.0, 1.0]])


@functools.lru_cache(maxsize=16)
def _camera_rays(height: int, width: int) -> np.ndarray:
    """[H * W, 3] camera-frame rays (x/z, y/z, 1) through the pixel centres (read-only)."""
    k = intrinsics(height, width)
    uu, vv = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays = np.stack([(uu.ravel() - k[0, 2]) / k[0, 0], (vv.ravel() - k[1, 2]) / k[1, 1],
                     np.ones(height * width)], axis=1)
    rays.setflags(write=False)
    return rays


def _screen_rects(cam: np.ndarray, k: np.ndarray, height: int, width: int):
    """Pixel rectangles (inclusive, one pixel of margin) covering boxes with camera-frame corners [N, 8, 3].

    The box is clipped at the near plane first, so boxes beside or around the camera get the exact
    bounds of their visible part. Returns (i0, i1, j0, j1) as float arrays and a keep mask.
    """
    z = cam[..., 2]
    a, b = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]
    za, zb = a[..., 2], b[..., 2]
    cross = (za - NEAR) * (zb - NEAR) < 0
    s = (NEAR - za) / np.where(cross, zb - za, 1.0)
    points = np.concatenate([cam, a + s[..., None] * (b - a)], axis=1)  # [N, 20, 3]
    valid = np.concatenate([z >= NEAR, cross], axis=1)
    depth = np.where(valid, np.maximum(points[..., 2], NEAR), 1.0)
    u = k[0, 0] * points[..., 0] / depth + k[0, 2]
    v = k[1, 1] * points[..., 1] / depth + k[1, 2]
    i0 = np.maximum(np.ceil(np.where(valid, u, np.inf).min(axis=1)) - 1, 0)
    i1 = np.minimum(np.floor(np.where(valid, u, -np.inf).max(axis=1)) + 1, width - 1)
    j0 = np.maximum(np.ceil(np.where(valid, v, np.inf).min(axis=1)) - 1, 0)
    j1 = np.minimum(np.floor(np.where(valid, v, -np.inf).max(axis=1)) + 1, height - 1)
    keep = valid.any(axis=1) & (i0 <= i1) & (j0 <= j1)
    return i0, i1, j0, j1, keep


def _cast_boxes(boxes: scene_lib.Boxes, origin, rot, dirs, k, height, width, zbuf):
    """Intersect pixel rays with boxes; lowers ``zbuf`` [P] in place where a box is nearer.

    Returns, for each pixel won by a box (unique pixels): pixel index, box index, hit face axis
    (0, 1, 2 = local x, y, z), and the local-frame ray origin and direction [n, 3].
    """
    empty = np.zeros(0, np.int64)
    if len(boxes) == 0:
        return empty, empty, empty, np.zeros((0, 3)), np.zeros((0, 3))
    cam = (boxes.corners() - origin) @ rot  # world -> camera: R^T (p - c)
    i0, i1, j0, j1, keep = _screen_rects(cam, k, height, width)
    idx = np.nonzero(keep)[0]
    if idx.size == 0:
        return empty, empty, empty, np.zeros((0, 3)), np.zeros((0, 3))
    i0, i1, j0, j1 = (a[idx].astype(np.int64) for a in (i0, i1, j0, j1))
    cols = i1 - i0 + 1
    counts = cols * (j1 - j0 + 1)
    owner = np.repeat(np.arange(idx.size), counts)  # which kept box each (box, pixel) pair belongs to
    offset = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    pix = (j0[owner] + offset // cols[owner]) * width + i0[owner] + offset % cols[owner]

    cos, sin = np.cos(boxes.yaw[idx]), np.sin(boxes.yaw[idx])
    rel = origin[None] - boxes.center[idx]
    o_local = np.stack([cos * rel[:, 0] - sin * rel[:, 2], rel[:, 1], sin * rel[:, 0] + cos * rel[:, 2]], axis=1)
    half = boxes.half_extents()[idx]
    d = dirs[pix]
    c, s = cos[owner], sin[owner]
    d_local = (c * d[:, 0] - s * d[:, 2], d[:, 1], s * d[:, 0] + c * d[:, 2])

    t_near = np.full(owner.size, -np.inf)
    t_far = np.full(owner.size, np.inf)
    axis = np.zeros(owner.size, np.int64)
    for a in range(3):
        da = d_local[a]
        inv = 1.0 / np.where(np.abs(da) < 1e-12, 1e-12, da)
        oa, ha = o_local[owner, a], half[owner, a]
        ta, tb = (-ha - oa) * inv, (ha - oa) * inv
        lo = np.minimum(ta, tb)
        better = lo > t_near
        t_near = np.where(better, lo, t_near)
        axis = np.where(better, a, axis)
        t_far = np.minimum(t_far, np.maximum(ta, tb))
    hit = np.nonzero((t_near <= t_far) & (t_near > NEAR))[0]
    pix, t = pix[hit], t_near[hit]
    np.minimum.at(zbuf, pix, t)
    win = hit[t <= zbuf[pix]]
    pix_w, first = np.unique(pix[t <= zbuf[pix]], return_index=True)
    win = win[first]
    owner_w = owner[win]
    d_w = np.stack([comp[win] for comp in d_local], axis=1)
    return pix_w, idx[owner_w], axis[win], o_local[owner_w], d_w


def instance_boxes(boxes: scene_lib.Boxes) -> dict[str, np.ndarray]:
    """One world-frame box per instance (the union of its parts, which share a yaw).

    Returns center [K, 3], size [K, 3] (length, width, height), yaw [K], velocity [K, 3],
    class_id [K], instance_id [K], sorted by instance id.
    """
    sel = np.nonzero(boxes.instance_id > 0)[0]
    sel = sel[np.argsort(boxes.instance_id[sel], kind="stable")]
    ids = boxes.instance_id[sel]
    if ids.size == 0:
        return {"center": np.zeros((0, 3)), "size": np.zeros((0, 3)), "yaw": np.zeros(0),
                "velocity": np.zeros((0, 3)), "class_id": np.zeros(0, np.int32), "instance_id": np.zeros(0, np.int32)}
    corners = boxes.corners()[sel]
    yaw = boxes.yaw[sel]
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    local = np.stack([c * corners[..., 0] - s * corners[..., 2], corners[..., 1],
                      s * corners[..., 0] + c * corners[..., 2]], axis=-1)  # R_y(yaw)^T p
    uniq, starts = np.unique(ids, return_index=True)
    lo = np.minimum.reduceat(local.min(axis=1), starts, axis=0)
    hi = np.maximum.reduceat(local.max(axis=1), starts, axis=0)
    mid, ext = 0.5 * (lo + hi), hi - lo
    c, s = np.cos(yaw[starts]), np.sin(yaw[starts])
    center = np.stack([c * mid[:, 0] + s * mid[:, 2], mid[:, 1], -s * mid[:, 0] + c * mid[:, 2]], axis=1)
    return {
        "center": center,
        "size": ext[:, [0, 2, 1]],
        "yaw": yaw[starts],
        "velocity": boxes.velocity[sel][starts],
        "class_id": boxes.class_id[sel][starts],
        "instance_id": uniq.astype(np.int32),
    }


def _wrap_angle(a):
    return (a + np.pi) % (2.0 * np.pi) - np.pi


def _surface_axes(axis, sign, yaw, local, half):
    """Per hit on a box face: world normal, texture axes (world), texture coords and face extents."""
    c, s = np.cos(yaw), np.sin(yaw)
    zero = np.zeros_like(c)
    x_dir = np.stack([c, zero, -s], axis=1)  # local x in world
    z_dir = np.stack([s, zero, c], axis=1)  # local z in world
    up = np.broadcast_to(np.array([0.0, -1.0, 0.0]), x_dir.shape)
    y_dir = -up
    ax = axis[:, None]
    normal = sign[:, None] * np.where(ax == 0, x_dir, np.where(ax == 1, y_dir, z_dir))
    a_u = np.where(ax == 0, z_dir, x_dir)
    a_v = np.where(ax == 1, z_dir, up)
    lx, ly, lz = local[:, 0] + half[:, 0], half[:, 1] - local[:, 1], local[:, 2] + half[:, 2]
    u = np.where(axis == 0, lz, lx)
    v = np.where(axis == 1, lz, ly)
    ext_u = np.where(axis == 0, 2 * half[:, 2], 2 * half[:, 0])
    ext_v = np.where(axis == 1, 2 * half[:, 2], 2 * half[:, 1])
    return normal, a_u, a_v, u, v, ext_u, ext_v


def render(
    scene: scene_lib.Scene,
    time: float,
    height: int,
    width: int,
    style: "str | style_lib.Style",
    rng: np.random.Generator | None = None,
    max_depth: float = 60.0,
) -> dict:
    """Render ``scene`` at ``time`` seconds from its camera.

    Args:
      scene: a ``Scene`` from ``sample_scene``.
      time: seconds (frames are ``scene.TIME_STEP`` = 0.1 s apart).
      height, width: image size in pixels (any positive size).
      style: a name in ``style.STYLES`` ("sim", "city", "real", "coco") or a ``Style``.
      rng: source of sensor noise; ``None`` renders without noise.
      max_depth: metres; farther surfaces are drawn but get depth 0 and normals 0.
    Returns a dict of
      image [H, W, 3] uint8; depth [H, W, 1] float32 (camera z in metres, 0 = sky/too far);
      normals [H, W, 3] float32 (unit, camera frame, 0 where depth is 0);
      segmentation [H, W, 1] int32 (ids into ``CLASS_NAMES``, sky included);
      instance_ids [H, W, 1] int32 (0 = background/static stuff, else the object's track id);
      intrinsics [3, 3] float32; pose [4, 4] float32 camera-to-world;
      objects: dict of boxes [N, 7] float32 (x, y, z, length, width, height, yaw in this frame's
        camera frame; centre of the box; yaw about the camera y axis, KITTI convention: the length
        axis points along (cos yaw, 0, -sin yaw)), velocities [N, 3] float32 (m/s, world motion in
        this frame's camera axes), track_ids [N] int64, classes [N] int32, num_pixels [N] int64,
        for every movable object with at least one visible pixel.
    """
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}.")
    if max_depth <= 0:
        raise ValueError(f"max_depth must be positive metres, got {max_depth}.")
    height, width = int(height), int(width)
    style = style_lib.get_style(style)
    k = intrinsics(height, width)
    pose = scene.camera.pose_at(time)
    rot = pose[:3, :3]
    boxes = scene.objects_at(time)
    dirs = _camera_rays(height, width) @ rot.T  # world directions; the ray parameter is camera depth
    hits = _trace(scene, boxes, pose, dirs, k, height, width)

    num_pix = height * width
    linear = np.empty((num_pix, 3))
    linear[hits.pix] = _surface_colors(style, scene.road, hits, _footprints(hits, rot, k))
    sky = np.ones(num_pix, bool)
    sky[hits.pix] = False
    linear[sky] = style_lib.sky(style, dirs[sky])
    image = style_lib.finish(style, linear.reshape(height, width, 3), rng)

    valid = hits.t <= max_depth
    depth = np.zeros(num_pix, np.float32)
    depth[hits.pix[valid]] = hits.t[valid]
    normals = np.zeros((num_pix, 3), np.float32)
    normals[hits.pix[valid]] = hits.normal[valid] @ rot  # world -> camera: R^T n
    segmentation = np.full(num_pix, _SKY, np.int32)
    segmentation[hits.pix] = hits.class_id
    instance = np.zeros(num_pix, np.int32)
    instance[hits.pix] = hits.instance_id
    return {
        "image": image,
        "depth": depth.reshape(height, width, 1),
        "normals": normals.reshape(height, width, 3),
        "segmentation": segmentation.reshape(height, width, 1),
        "instance_ids": instance.reshape(height, width, 1),
        "intrinsics": k.astype(np.float32),
        "pose": pose.astype(np.float32),
        "objects": _objects_in_frame(boxes, pose, scene.camera.yaw_at(time), instance),
    }


@dataclasses.dataclass
class _Hits:
    """The visible surface point of every pixel that is not sky (arrays over those pixels, [n] or [n, 3]).

    pix: flat pixel index; t: camera depth (metres); d: ray direction (world, z-normalised);
    normal: world unit normal; a_u, a_v: world directions of the texture axes; u, v: texture
    coordinates (metres); extent_u, extent_v: face size (inf on the ground); horizontal: face is
    horizontal; material, class_id, instance_id; tint [n, 3]; seed: uint32 texture seed.
    """

    pix: np.ndarray
    t: np.ndarray
    d: np.ndarray
    normal: np.ndarray
    a_u: np.ndarray
    a_v: np.ndarray
    u: np.ndarray
    v: np.ndarray
    extent_u: np.ndarray
    extent_v: np.ndarray
    horizontal: np.ndarray
    material: np.ndarray
    class_id: np.ndarray
    instance_id: np.ndarray
    tint: np.ndarray
    seed: np.ndarray


def _trace(scene, boxes, pose, dirs, k, height, width) -> _Hits:
    """Nearest surface (ground plane or box face) along every pixel ray."""
    rot, origin = pose[:3, :3], pose[:3, 3]
    zbuf = np.full(height * width, np.inf)
    down = dirs[:, 1] > 1e-9
    zbuf[down] = (scene.ground_y - origin[1]) / dirs[down, 1]
    zbuf[zbuf > GROUND_FAR] = np.inf
    pix_b, box_b, axis_b, o_b, d_b = _cast_boxes(boxes, origin, rot, dirs, k, height, width, zbuf)
    ground = np.isfinite(zbuf)
    ground[pix_b] = False
    pix_g = np.nonzero(ground)[0]
    n_g, n_b = pix_g.size, pix_b.size

    # Ground: world (x, z) are the texture coordinates; the class follows the road layout.
    road = scene.road
    t_g = zbuf[pix_g]
    hit_g = origin + t_g[:, None] * dirs[pix_g]
    zone = np.searchsorted([road.half_width, road.half_width + road.sidewalk_width], np.abs(hit_g[:, 0]),
                           side="right")
    ones, zeros = np.ones(n_g), np.zeros(n_g)

    # Boxes: the hit point in the box frame gives the face's texture coordinates.
    half = boxes.half_extents()[box_b]
    t_b = zbuf[pix_b]
    sign = -np.sign(d_b[np.arange(n_b), axis_b])
    normal_b, au_b, av_b, u_b, v_b, eu_b, ev_b = _surface_axes(
        axis_b, sign, boxes.yaw[box_b], o_b + t_b[:, None] * d_b, half
    )
    face = (axis_b * 2 + (sign > 0)).astype(np.uint32)
    box_seed = (boxes.tint[box_b, 0] * 4294967295.0).astype(np.uint32) + face * np.uint32(7919)

    pix = np.concatenate([pix_g, pix_b])
    return _Hits(
        pix=pix,
        t=np.concatenate([t_g, t_b]),
        d=dirs[pix],
        normal=np.concatenate([np.stack([zeros, -ones, zeros], axis=1), normal_b]),
        a_u=np.concatenate([np.stack([ones, zeros, zeros], axis=1), au_b]),
        a_v=np.concatenate([np.stack([zeros, zeros, ones], axis=1), av_b]),
        u=np.concatenate([hit_g[:, 0], u_b]),
        v=np.concatenate([hit_g[:, 2], v_b]),
        extent_u=np.concatenate([np.full(n_g, np.inf), eu_b]),
        extent_v=np.concatenate([np.full(n_g, np.inf), ev_b]),
        horizontal=np.concatenate([np.ones(n_g, bool), axis_b == 1]),
        material=np.concatenate([_GROUND_MATERIALS[zone], boxes.material[box_b]]),
        class_id=np.concatenate([_GROUND_CLASSES[zone], boxes.class_id[box_b]]),
        instance_id=np.concatenate([np.zeros(n_g, np.int32), boxes.instance_id[box_b]]),
        tint=np.concatenate([np.full((n_g, 3), 0.5), boxes.tint[box_b]]),
        seed=np.concatenate([np.full(n_g, scene.seed, np.uint32), box_seed]),
    )


def _footprints(hits: _Hits, rot: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texture filter widths (metres along u and v): the pixel's footprint on the surface plane.

    The hit point P(pixel) = c + t d on a plane with normal n moves by
    dP = t (dd - d (n . dd) / (n . d)) per pixel step, with dd = R K^-1 e_u (or e_v).
    """
    n_dot_d = np.minimum(np.einsum("ij,ij->i", hits.normal, hits.d), -1e-4)  # visible faces: n . d < 0
    fu = np.zeros(len(hits.t))
    fv = np.zeros(len(hits.t))
    for col in (0, 1):
        step = rot[:, col] / k[col, col]
        dp = hits.t[:, None] * (step[None] - hits.d * ((hits.normal @ step) / n_dot_d)[:, None])
        fu += np.abs(np.einsum("ij,ij->i", dp, hits.a_u))
        fv += np.abs(np.einsum("ij,ij->i", dp, hits.a_v))
    return np.minimum(FOOTPRINT_SCALE * fu, 1e3), np.minimum(FOOTPRINT_SCALE * fv, 1e3)


def _surface_colors(style, road, hits: _Hits, footprints) -> np.ndarray:
    """[n, 3] shaded linear colour of every hit: albedo per material times Lambertian shading."""
    fu, fv = footprints
    order = np.argsort(hits.material, kind="stable")
    materials, starts = np.unique(hits.material[order], return_index=True)
    bounds = list(starts) + [order.size]
    color = np.empty((order.size, 3))
    for i, m in enumerate(materials):
        sel = order[bounds[i]:bounds[i + 1]]
        surf = style_lib.Surface(u=hits.u[sel], v=hits.v[sel], fu=fu[sel], fv=fv[sel],
                                 horizontal=hits.horizontal[sel], extent_u=hits.extent_u[sel],
                                 extent_v=hits.extent_v[sel], tint=hits.tint[sel], seed=hits.seed[sel])
        color[sel] = style_lib.albedo(style, int(m), surf, road)
    return color * style_lib.shade(style, hits.normal)[:, None]


def _objects_in_frame(boxes: scene_lib.Boxes, pose: np.ndarray, camera_yaw: float, instance: np.ndarray) -> dict:
    """Visible movable objects as camera-frame boxes (see ``render``)."""
    inst = instance_boxes(boxes)
    rot, origin = pose[:3, :3], pose[:3, 3]
    ids = inst["instance_id"]
    counts = np.bincount(instance, minlength=int(ids.max(initial=0)) + 1)
    num_pixels = counts[ids].astype(np.int64)
    keep = num_pixels > 0
    center = (inst["center"][keep] - origin) @ rot
    yaw = _wrap_angle(inst["yaw"][keep] - camera_yaw)
    return {
        "boxes": np.concatenate([center, inst["size"][keep], yaw[:, None]], axis=1).astype(np.float32),
        "velocities": (inst["velocity"][keep] @ rot).astype(np.float32),
        "track_ids": ids[keep].astype(np.int64),
        "classes": inst["class_id"][keep].astype(np.int32),
        "num_pixels": num_pixels[keep],
    }
