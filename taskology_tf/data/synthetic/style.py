"""Appearance of the synthetic world: procedural textures, lighting and camera effects.

Four styles share the geometry and differ only here: ``sim`` (clean saturated
palette, checkers and bricks, light from the front-left, no camera effects),
``city`` (the driving video of the depth and motion experiments: ``sim``'s palette
and light with aperiodic value-noise textures and coarse patches on the ground, so
that the road keeps a texture the photometric loss can match at 64x128),
``real`` (muted palette with a warm cast, fine value-noise textures, light
from behind-right, more ambient light, gamma, vignetting and sensor noise) and
``coco`` (the stand-in for the COCO photographs that are the segmentation
task's dedicated data: a third palette of pastel facades, red pavers, dark
blue-grey asphalt, autumn foliage and a pale blue sky; value-noise textures;
hard light from the right, nearly overhead; a cool cast, boosted saturation,
a darkening tone curve (gamma 0.9), slight vignetting and strong grain).

Textures are functions of a surface point in its object's own frame, so they
move with objects and agree between frames. They are *prefiltered*: every
pattern is box-filtered over the pixel footprint (metres along each texture
axis), which removes aliasing so that warping one frame into the next by depth
and ego-motion reproduces it (the photometric consistency the depth and motion
tasks rely on). Colours are linear RGB in [0, 1] until ``finish``.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from taskology_tf.data.synthetic import scene as scene_lib


@dataclasses.dataclass(frozen=True, eq=False)
class Style:
    """Appearance parameters (lighting is view-independent so warps stay consistent).

    texture: "procedural" (checkers, bricks) or "noise" (value noise);
    light_dir: world direction towards the light (y down, so "up" is -y);
    ambient / diffuse: Lambertian shading ``ambient + diffuse * max(0, n . l)``;
    color_cast: per-channel gain; saturation: 1 = unchanged; gamma: output ``x ** (1 / gamma)``;
    vignette: darkening at the image corners (0 = none); noise_std: sensor noise in [0, 1] units;
    clouds: cloud cover of the sky (0 = clear); palettes: colour lists by name, see ``_SIM_PALETTES``;
    ground_patches: amplitude of coarse aperiodic brightness patches (about 1 m) on road, sidewalk and grass,
      so that the ground keeps a texture the photometric loss can match at low resolution (0 = none).
    """

    name: str
    texture: str
    palettes: dict  # name -> [k, 3] colours (stored as arrays)
    light_dir: tuple[float, float, float]
    ambient: float
    diffuse: float
    color_cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    saturation: float = 1.0
    gamma: float = 1.0
    vignette: float = 0.0
    noise_std: float = 0.0
    clouds: float = 0.0
    ground_patches: float = 0.0

    def __post_init__(self):
        if self.texture not in ("procedural", "noise"):
            raise ValueError(f"Style.texture must be 'procedural' or 'noise', got {self.texture!r}.")
        if not self.ground_patches >= 0:
            raise ValueError(f"Style.ground_patches must be >= 0 (0 = none), got {self.ground_patches!r}.")
        arrays = {name: np.asarray(colors, dtype=np.float64).reshape(-1, 3) for name, colors in self.palettes.items()}
        object.__setattr__(self, "palettes", arrays)


_SIM_PALETTES = {
    "asphalt": [(0.30, 0.30, 0.34)],
    "marking": [(0.95, 0.95, 0.92)],
    "centre_line": [(0.95, 0.80, 0.10)],
    "sidewalk": [(0.78, 0.66, 0.52), (0.70, 0.70, 0.74)],
    "grass": [(0.20, 0.70, 0.20)],
    "facade": [(0.78, 0.28, 0.20), (0.92, 0.80, 0.40), (0.30, 0.50, 0.85), (0.88, 0.56, 0.20), (0.62, 0.62, 0.68)],
    "window": [(0.12, 0.22, 0.42)],
    "roof": [(0.35, 0.33, 0.33)],
    "foliage": [(0.10, 0.62, 0.16), (0.30, 0.72, 0.10)],
    "bark": [(0.48, 0.30, 0.14)],
    "metal": [(0.62, 0.62, 0.68)],
    "car": [(0.90, 0.10, 0.10), (0.10, 0.30, 0.90), (0.95, 0.85, 0.10), (0.10, 0.70, 0.30), (0.95, 0.95, 0.95),
            (0.12, 0.12, 0.14), (0.95, 0.45, 0.05)],
    "glass": [(0.10, 0.14, 0.22)],
    "shirt": [(0.90, 0.15, 0.15), (0.15, 0.35, 0.90), (0.95, 0.90, 0.15), (0.15, 0.75, 0.35), (0.85, 0.30, 0.85)],
    "trousers": [(0.10, 0.15, 0.45), (0.15, 0.15, 0.15), (0.45, 0.35, 0.20)],
    "skin": [(0.95, 0.75, 0.60), (0.70, 0.48, 0.33), (0.45, 0.30, 0.20)],
    "sky": [(0.72, 0.86, 1.00), (0.22, 0.48, 0.95)],  # horizon, zenith
}

_REAL_PALETTES = {
    "asphalt": [(0.24, 0.24, 0.23)],
    "marking": [(0.78, 0.78, 0.74)],
    "centre_line": [(0.80, 0.78, 0.70)],
    "sidewalk": [(0.58, 0.57, 0.54), (0.50, 0.48, 0.46)],
    "grass": [(0.36, 0.44, 0.20)],
    "facade": [(0.56, 0.46, 0.40), (0.72, 0.69, 0.61), (0.46, 0.46, 0.50), (0.63, 0.51, 0.38), (0.82, 0.79, 0.72)],
    "window": [(0.22, 0.27, 0.31)],
    "roof": [(0.30, 0.28, 0.27)],
    "foliage": [(0.22, 0.36, 0.12), (0.30, 0.38, 0.16)],
    "bark": [(0.32, 0.26, 0.21)],
    "metal": [(0.44, 0.46, 0.49)],
    "car": [(0.50, 0.10, 0.10), (0.20, 0.24, 0.38), (0.70, 0.70, 0.72), (0.14, 0.14, 0.16), (0.84, 0.84, 0.84),
            (0.40, 0.40, 0.35), (0.30, 0.32, 0.30)],
    "glass": [(0.16, 0.19, 0.22)],
    "shirt": [(0.45, 0.20, 0.20), (0.25, 0.30, 0.42), (0.60, 0.58, 0.52), (0.30, 0.36, 0.28), (0.20, 0.20, 0.22)],
    "trousers": [(0.16, 0.18, 0.26), (0.12, 0.12, 0.12), (0.38, 0.34, 0.28)],
    "skin": [(0.86, 0.68, 0.56), (0.62, 0.44, 0.32), (0.40, 0.28, 0.20)],
    "sky": [(0.80, 0.84, 0.88), (0.50, 0.62, 0.78)],
}

_COCO_PALETTES = {
    "asphalt": [(0.16, 0.17, 0.21)],
    "marking": [(0.92, 0.90, 0.80)],
    "centre_line": [(0.98, 0.62, 0.08)],
    "sidewalk": [(0.62, 0.30, 0.24), (0.74, 0.44, 0.34)],
    "grass": [(0.55, 0.62, 0.18)],
    "facade": [(0.93, 0.70, 0.74), (0.45, 0.78, 0.76), (0.96, 0.93, 0.84), (0.70, 0.62, 0.88), (0.98, 0.80, 0.52)],
    "window": [(0.30, 0.42, 0.48)],
    "roof": [(0.52, 0.22, 0.16)],
    "foliage": [(0.72, 0.40, 0.08), (0.12, 0.34, 0.20)],
    "bark": [(0.22, 0.18, 0.17)],
    "metal": [(0.20, 0.36, 0.26)],
    "car": [(0.10, 0.55, 0.60), (0.60, 0.08, 0.40), (0.98, 0.98, 0.96), (0.85, 0.70, 0.30), (0.06, 0.06, 0.08),
            (0.35, 0.45, 0.20), (0.55, 0.58, 0.65)],
    "glass": [(0.05, 0.08, 0.10)],
    "shirt": [(0.98, 0.55, 0.10), (0.10, 0.60, 0.55), (0.96, 0.96, 0.94), (0.55, 0.10, 0.60), (0.75, 0.85, 0.20)],
    "trousers": [(0.30, 0.30, 0.55), (0.55, 0.50, 0.40), (0.08, 0.08, 0.10)],
    "skin": [(0.92, 0.72, 0.58), (0.66, 0.46, 0.34), (0.36, 0.24, 0.17)],
    "sky": [(0.90, 0.92, 0.94), (0.62, 0.76, 0.90)],
}

STYLES: dict[str, Style] = {
    "sim": Style(
        name="sim", texture="procedural", palettes=_SIM_PALETTES,
        light_dir=(-0.45, -1.0, 0.35), ambient=0.35, diffuse=0.75,
    ),
    # The driving-video stand-in of the depth/motion experiments (Cityscapes, KITTI): 'sim' palettes and light,
    # aperiodic value noise instead of checkers (a checker period near the metre the camera moves per frame
    # matches itself one period on) and coarse ground patches (the road's fine noise is filtered away at
    # 64x128, leaving a flat band the photometric loss cannot place). benchmarks/README.md, "Depth ladder".
    "city": Style(
        name="city", texture="noise", palettes=_SIM_PALETTES,
        light_dir=(-0.45, -1.0, 0.35), ambient=0.35, diffuse=0.75, ground_patches=1.2,
    ),
    "real": Style(
        name="real", texture="noise", palettes=_REAL_PALETTES,
        light_dir=(0.6, -0.8, -0.7), ambient=0.5, diffuse=0.55,
        color_cast=(1.07, 1.0, 0.88), saturation=0.85, gamma=1.25, vignette=0.35, noise_std=0.015, clouds=0.5,
    ),
    "coco": Style(
        name="coco", texture="noise", palettes=_COCO_PALETTES,
        light_dir=(1.0, -1.6, 0.2), ambient=0.38, diffuse=0.85,
        color_cast=(0.92, 1.0, 1.1), saturation=1.3, gamma=0.9, vignette=0.1, noise_std=0.03, clouds=0.25,
    ),
}


def get_style(style: "str | Style") -> Style:
    """The ``Style`` named ``style`` ("sim", "city", "real" or "coco"); a ``Style`` passes through."""
    if isinstance(style, Style):
        return style
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {sorted(STYLES)}.")
    return STYLES[style]


# ----------------------------------------------------------------------------------------------
# Prefiltered pattern primitives. ``width`` is the box-filter size (pixel footprint) in the same
# units as ``x``; as it grows the patterns fade to their mean, which removes aliasing.

_MIN_WIDTH = 1e-3


def _clip01(x):
    """Clamp to [0, 1] (cheaper than np.clip on small arrays)."""
    return np.minimum(np.maximum(x, 0.0), 1.0)


def _pulse_integral(x, period, duty):
    """Integral over [0, x] of the periodic pulse that is 1 on the first ``duty`` of each period."""
    q = np.floor(x / period)
    return q * (duty * period) + np.minimum(x - q * period, duty * period)


def filtered_pulse(x, period, duty, width):
    """Box-filtered periodic pulse train (1 on ``[k p, k p + duty p)``), values in [0, 1]."""
    w = np.maximum(width, _MIN_WIDTH)
    return (_pulse_integral(x + 0.5 * w, period, duty) - _pulse_integral(x - 0.5 * w, period, duty)) / w


def filtered_band(x, lo, hi, width):
    """Box-filtered indicator of ``lo <= x < hi``, values in [0, 1]."""
    w = np.maximum(width, _MIN_WIDTH)
    overlap = np.minimum(x + 0.5 * w, hi) - np.maximum(x - 0.5 * w, lo)
    return _clip01(overlap / w)


def filtered_checker(u, v, size, fu, fv):
    """Box-filtered checkerboard of ``size``-metre squares, values in [0, 1]."""
    a = filtered_pulse(u, 2.0 * size, 0.5, fu)
    b = filtered_pulse(v, 2.0 * size, 0.5, fv)
    return a + b - 2.0 * a * b


_TABLE_SIZE = 512
# Lattice values of the value noise: a fixed random table (padded by one row/column so that the
# +1 neighbours need no wrap-around). The noise repeats every 512 cells.
_TABLE = np.random.default_rng(20240601).random((_TABLE_SIZE + 1, _TABLE_SIZE + 1))
_TABLE[_TABLE_SIZE, :] = _TABLE[0, :]
_TABLE[:, _TABLE_SIZE] = _TABLE[:, 0]
_TABLE = _TABLE.ravel()


def value_noise(u, v):
    """Smooth 2D value noise with unit lattice spacing, values in [0, 1); repeats every 512 cells."""
    fi, fj = np.floor(u), np.floor(v)
    a, b = u - fi, v - fj
    mask = _TABLE_SIZE - 1
    idx = (fi.astype(np.int64) & mask) * (_TABLE_SIZE + 1) + (fj.astype(np.int64) & mask)
    n00, n01 = _TABLE[idx], _TABLE[idx + 1]
    n10, n11 = _TABLE[idx + (_TABLE_SIZE + 1)], _TABLE[idx + (_TABLE_SIZE + 2)]
    a = a * a * (3.0 - 2.0 * a)
    b = b * b * (3.0 - 2.0 * b)
    return (n00 + a * (n10 - n00)) * (1.0 - b) + (n01 + a * (n11 - n01)) * b


def _seed_offsets(seed):
    """Lattice offsets (in cells) that move each seed to its own part of the noise table."""
    seed = np.asarray(seed, dtype=np.int64)
    return ((seed * 97) & 511).astype(np.float64), (((seed >> 9) * 89 + seed * 13) & 511).astype(np.float64)


def fbm(u, v, footprint, seed, freq, octaves, gain=0.5):
    """Band-limited fractal value noise, zero-mean values in about [-0.5, 0.5].

    freq: lattice cells per metre of the first octave (each octave doubles it); octaves whose
    cells are not larger than the pixel ``footprint`` (metres) fade out. seed: uint32 per point.
    """
    total = np.zeros_like(u)
    off_u, off_v = _seed_offsets(seed)
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        f = freq * 2.0**k
        fade = _clip01(1.25 - footprint * f)
        norm += amp
        if fade.max(initial=0.0) > 0:
            noise = value_noise(u * f + (off_u + 17.0 * k), v * f + (off_v - 31.0 * k))
            total += (amp * fade) * (noise - 0.5)
        amp *= gain
    return total / norm


# ----------------------------------------------------------------------------------------------
# Materials.


@dataclasses.dataclass
class Surface:
    """Texture inputs for n surface points of one material (all arrays [n] unless noted).

    u, v: texture coordinates in metres (on vertical faces v = height above the object's bottom);
    fu, fv: pixel footprint along u and v in metres; horizontal: whether the face is horizontal;
    extent_u, extent_v: face size in metres (inf for the ground); tint: [n, 3] per-object random
    numbers in [0, 1); seed: uint32 per object and face.
    """

    u: np.ndarray
    v: np.ndarray
    fu: np.ndarray
    fv: np.ndarray
    horizontal: np.ndarray
    extent_u: np.ndarray
    extent_v: np.ndarray
    tint: np.ndarray
    seed: np.ndarray

    @property
    def footprint(self) -> np.ndarray:
        return np.maximum(self.fu, self.fv)


def _pick(style: Style, name: str, t) -> np.ndarray:
    """[n, 3] palette colours chosen by numbers ``t`` in [0, 1)."""
    palette = style.palettes[name]
    if len(palette) == 1:
        return np.broadcast_to(palette[0], (len(t), 3))
    index = np.minimum((np.asarray(t) * len(palette)).astype(np.int64), len(palette) - 1)
    return palette[index]


def _mix(a, b, t):
    """Blend colours [n, 3] (or [3]) by weights t [n]: t = 0 -> a, t = 1 -> b."""
    t = np.asarray(t)[:, None]
    return a * (1.0 - t) + b * t


def _modulate(color, amount):
    """Brighten/darken colours [n, 3] by relative amounts [n] (0 = unchanged)."""
    return color * np.maximum(1.0 + amount, 0.0)[:, None]


def _ground_patches(style, s, salt):
    """Coarse aperiodic brightness modulation [n] of a ground material (see ``Style.ground_patches``)."""
    if not style.ground_patches:
        return 0.0
    return style.ground_patches * fbm(s.u, s.v, s.footprint, s.seed + salt, 1.0, 3, 0.6)


def _asphalt(style, s, road):
    n = len(s.u)
    base = _pick(style, "asphalt", np.zeros(n))
    if style.texture == "procedural":
        mod = 0.22 * (filtered_checker(s.u, s.v, 0.5, s.fu, s.fv) - 0.5)
        mod += 0.14 * (filtered_checker(s.u + 0.05, s.v, 0.12, s.fu, s.fv) - 0.5)
    else:
        fine = fbm(s.u, s.v, s.footprint, s.seed, 6.0, 4, 0.7)
        patches = fbm(s.u, s.v, s.footprint, s.seed + 9, 0.4, 2)
        mod = 0.5 * fine + 0.3 * patches
    color = _modulate(base, mod + _ground_patches(style, s, 101))
    # Markings: solid edge lines, a solid centre line and dashed lane dividers.
    x, fx, fz = s.u, s.fu, s.fv
    edge = road.lanes_per_direction * road.lane_width
    line = 0.15
    paint = filtered_band(np.abs(x), edge - line, edge, fx)
    period = road.dash_length + road.dash_gap
    dash = filtered_pulse(s.v, period, road.dash_length / period, fz)
    for k in range(1, road.lanes_per_direction):
        paint = np.maximum(paint, filtered_band(np.abs(x), k * road.lane_width - 0.5 * line,
                                                k * road.lane_width + 0.5 * line, fx) * dash)
    centre = filtered_band(x, -0.5 * line, 0.5 * line, fx)
    if style.texture == "noise":  # worn paint
        wear = _clip01(0.75 + 1.5 * fbm(s.u, s.v, s.footprint, s.seed + 5, 3.0, 2))
        paint, centre = paint * wear, centre * wear
    color = _mix(color, _pick(style, "marking", np.zeros(n)), paint)
    return _mix(color, _pick(style, "centre_line", np.zeros(n)), centre)


def _sidewalk(style, s, road):
    base = _pick(style, "sidewalk", np.zeros(len(s.u)))
    if style.texture == "procedural":
        mod = 0.3 * (filtered_checker(s.u, s.v, 0.6, s.fu, s.fv) - 0.5)
    else:
        slab_u = filtered_pulse(s.u + 0.01, 1.5, 0.985, s.fu)  # 1.5 m slabs with 2 cm joints
        slab_v = filtered_pulse(s.v + 0.01, 1.5, 0.985, s.fv)
        joints = 1.0 - slab_u * slab_v
        mod = 0.5 * fbm(s.u, s.v, s.footprint, s.seed, 5.0, 4, 0.65) - 0.4 * joints
    return _modulate(base, mod + _ground_patches(style, s, 102))


def _grass(style, s, road):
    base = _pick(style, "grass", np.zeros(len(s.u)))
    if style.texture == "procedural":
        mod = 0.4 * (filtered_checker(s.u, s.v, 0.4, s.fu, s.fv) - 0.5)
    else:
        mod = 0.9 * fbm(s.u, s.v, s.footprint, s.seed, 4.0, 5, 0.7)
    return _modulate(base, mod + _ground_patches(style, s, 103))


def _facade(style, s):
    base = _modulate(_pick(style, "facade", s.tint[:, 0]), 0.3 * (s.tint[:, 1] - 0.5))
    if style.texture == "procedural":
        row = np.floor(s.v / 0.3)
        brick_v = filtered_pulse(s.v + 0.02, 0.3, 0.9, s.fv)  # 0.6 x 0.3 m bricks, staggered rows
        brick_u = filtered_pulse(s.u + 0.3 * (row % 2) + 0.02, 0.6, 0.95, s.fu)
        mortar = 1.0 - brick_v * brick_u
        mod = -0.35 * mortar + 0.15 * (filtered_checker(s.u, s.v, 1.5, s.fu, s.fv) - 0.5)
    else:
        mod = 0.35 * fbm(s.u, s.v, s.footprint, s.seed, 0.8, 3) + 0.3 * fbm(s.u, s.v, s.footprint, s.seed + 3, 10.0, 3)
    color = _modulate(base, mod)
    # Windows: a grid of panes on vertical faces, floors every 3 m, columns every 2.5-4 m.
    spacing = 2.5 + 1.5 * s.tint[:, 2]
    win_w = 0.45 * spacing
    cols = filtered_pulse(s.u - 0.5 * (spacing - win_w), spacing, win_w / spacing, s.fu)
    rows = filtered_pulse(s.v - 1.0, 3.0, 0.5, s.fv) * filtered_band(s.v, 1.0, s.extent_v - 0.8, s.fv)
    inside = filtered_band(s.u, 0.6, s.extent_u - 0.6, s.fu)
    glass = cols * rows * inside * (~s.horizontal)
    win = _pick(style, "window", np.zeros(len(s.u)))
    if style.texture == "noise":
        win = _modulate(win, 0.8 * fbm(s.u, s.v, s.footprint, s.seed + 7, 0.7, 2))
    color = _mix(color, win, glass)
    roof_tiles = filtered_checker(s.u, s.v, 1.0, s.fu, s.fv)
    roof = _modulate(_pick(style, "roof", np.zeros(len(s.u))), 0.3 * (roof_tiles - 0.5))
    return np.where(s.horizontal[:, None], roof, color)


def _foliage(style, s):
    base = _pick(style, "foliage", s.tint[:, 0])
    if style.texture == "procedural":
        mod = 0.5 * (filtered_checker(s.u, s.v, 0.3, s.fu, s.fv) - 0.5)
    else:
        mod = 1.1 * fbm(s.u, s.v, s.footprint, s.seed, 5.0, 5, 0.75)
    return _modulate(base, mod)


def _bark(style, s):
    base = _pick(style, "bark", s.tint[:, 0])
    if style.texture == "procedural":
        mod = 0.4 * (filtered_pulse(s.u, 0.12, 0.5, s.fu) - 0.5)
    else:
        mod = 0.8 * fbm(s.u * 4.0, s.v * 0.5, s.footprint * 4.0, s.seed, 3.0, 4)
    return _modulate(base, mod)


def _metal(style, s):
    base = _pick(style, "metal", s.tint[:, 0])
    if style.texture == "procedural":
        mod = 0.3 * (filtered_pulse(s.v, 0.5, 0.5, s.fv) - 0.5)
    else:
        mod = 0.3 * fbm(s.u, s.v, s.footprint, s.seed, 4.0, 3)
    return _modulate(base, mod)


def _car_body(style, s):
    base = _pick(style, "car", s.tint[:, 0])
    if style.texture == "procedural":
        mod = 0.12 * (filtered_checker(s.u, s.v, 0.25, s.fu, s.fv) - 0.5)
        stripe = filtered_band(s.v, 0.45 * s.extent_v, 0.55 * s.extent_v, s.fv) * (~s.horizontal)
        mod -= 0.35 * stripe
    else:
        mod = 0.15 * fbm(s.u, s.v, s.footprint, s.seed, 6.0, 3)
        mod -= 0.3 * filtered_band(s.v, 0.0, 0.25 * s.extent_v, s.fv) * (~s.horizontal)
    return _modulate(base, mod)


def _car_cabin(style, s):
    body = _car_body(style, s)
    glass = _pick(style, "glass", np.zeros(len(s.u)))
    if style.texture == "noise":
        glass = _modulate(glass, 0.6 * fbm(s.u, s.v, s.footprint, s.seed + 2, 1.5, 3))
    pane = filtered_band(s.u, 0.12, s.extent_u - 0.12, s.fu) * filtered_band(s.v, 0.06, s.extent_v - 0.06, s.fv)
    return _mix(body, glass, pane * (~s.horizontal))


def _person(style, s):
    height = s.extent_v
    shirt = _pick(style, "shirt", s.tint[:, 0])
    if style.texture == "procedural":
        shirt = _modulate(shirt, 0.35 * (filtered_pulse(s.v, 0.12, 0.5, s.fv) - 0.5))
    else:
        shirt = _modulate(shirt, 0.4 * fbm(s.u, s.v, s.footprint, s.seed, 12.0, 3))
    trousers = _pick(style, "trousers", s.tint[:, 1])
    skin = _pick(style, "skin", s.tint[:, 2])
    color = _mix(trousers, shirt, filtered_band(s.v, 0.47 * height, np.inf, s.fv))
    color = _mix(color, skin, filtered_band(s.v, 0.86 * height, np.inf, s.fv))
    hair = 0.7 * _pick(style, "trousers", np.full(len(s.u), 0.5))
    return _mix(color, hair, filtered_band(s.v, height - 0.06, np.inf, s.fv))


_GROUND_MATERIALS = {scene_lib.ASPHALT: _asphalt, scene_lib.SIDEWALK: _sidewalk, scene_lib.GRASS: _grass}
_BOX_MATERIALS = {
    scene_lib.FACADE: _facade, scene_lib.FOLIAGE: _foliage, scene_lib.BARK: _bark, scene_lib.METAL: _metal,
    scene_lib.CAR_BODY: _car_body, scene_lib.CAR_CABIN: _car_cabin, scene_lib.PERSON: _person,
}


def albedo(style: Style, material: int, surface: Surface, road: scene_lib.Road) -> np.ndarray:
    """[n, 3] linear albedo of ``surface`` points made of ``material``."""
    if material in _GROUND_MATERIALS:
        color = _GROUND_MATERIALS[material](style, surface, road)
    else:
        color = _BOX_MATERIALS[material](style, surface)
    return _clip01(color)


def sky(style: Style, directions: np.ndarray) -> np.ndarray:
    """[n, 3] sky colour for world ray directions [n, 3] (depends on direction only)."""
    horizon, zenith = style.palettes["sky"]
    d = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    up = _clip01(-d[:, 1])
    color = _mix(horizon, zenith, _clip01(2.5 * up))
    if style.clouds > 0:
        k = 1.0 / np.maximum(up, 0.05)  # project onto a cloud plane above the camera
        c = fbm(d[:, 0] * k, d[:, 2] * k, np.zeros(len(d)), np.full(len(d), 99, np.uint32), 0.8, 4, 0.6)
        cover = _clip01(style.clouds * (1.2 + 4.0 * c) - 0.4) * _clip01(4.0 * up)
        color = _mix(color, np.array([0.93, 0.93, 0.94]), cover)
    return color


def shade(style: Style, normals: np.ndarray) -> np.ndarray:
    """[n] Lambertian shading factor for world-frame unit normals [n, 3]."""
    light = np.asarray(style.light_dir, dtype=np.float64)
    light = light / np.linalg.norm(light)
    return style.ambient + style.diffuse * np.maximum(normals @ light, 0.0)


@functools.lru_cache(maxsize=16)
def _vignette_gain(height: int, width: int, strength: float) -> np.ndarray:
    """[H, W, 1] multiplicative darkening towards the corners (1 at the centre)."""
    y = (np.arange(height) - 0.5 * (height - 1)) / (0.5 * height)
    x = (np.arange(width) - 0.5 * (width - 1)) / (0.5 * width)
    r2 = 0.5 * (x[None, :] ** 2 + y[:, None] ** 2)
    return (1.0 - strength * r2)[..., None]


@functools.lru_cache(maxsize=8)
def _tone_curve(gamma: float) -> np.ndarray:
    """[4097] lookup table of ``x ** (1 / gamma)`` on a uniform grid over [0, 1]."""
    return np.linspace(0.0, 1.0, 4097) ** (1.0 / gamma)


def finish(style: Style, linear: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Camera effects and quantisation: linear [H, W, 3] in [0, 1] -> uint8 [H, W, 3].

    Applies colour cast, saturation, gamma and vignetting; adds sensor noise only when
    ``rng`` is given (so ``rng=None`` gives the noise-free image of the same frame).
    """
    # Cast and saturation as one colour matrix: out = gray + s (c - gray), c = cast * linear.
    s = style.saturation
    if s != 1.0 or style.color_cast != (1.0, 1.0, 1.0):
        mix = s * np.eye(3) + (1.0 - s) / 3.0
        linear = linear @ (np.asarray(style.color_cast)[:, None] * mix)
    color = _clip01(linear)
    if style.gamma != 1.0:
        color = _tone_curve(style.gamma)[(color * 4096.0 + 0.5).astype(np.int64)]
    if style.vignette > 0:
        color = color * _vignette_gain(color.shape[0], color.shape[1], style.vignette)
    if rng is not None and style.noise_std > 0:
        color = color + style.noise_std * rng.standard_normal(size=color.shape, dtype=np.float32)
    return (_clip01(color) * 255.0 + 0.5).astype(np.uint8)
