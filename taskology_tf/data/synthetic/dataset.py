"""Synthetic examples following the example contract, one by one or as an in-memory ``tf.data.Dataset``.

Example ``index`` of ``(style, seed)`` is a pure function of those three numbers: the scene
comes from ``SeedSequence([seed, crc32(style), index])``, so every style and seed (use one seed
per split, e.g. via ``split_seed``) sees its own stream of scenes, and the same arguments always
give the same arrays. TensorFlow is imported only inside ``synthetic_dataset``, so worker
processes that render examples never load it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import os
import sys
import threading
import warnings
import zlib
from typing import Iterable, Iterator, Sequence

import numpy as np

from taskology_tf.data import example as example_lib
from taskology_tf.data.synthetic import render as render_lib
from taskology_tf.data.synthetic import scene as scene_lib
from taskology_tf.data.synthetic import style as style_lib

STYLES = tuple(style_lib.STYLES)
FRAME_KEYS = ("id", "image", "intrinsics", "depth", "normals", "segmentation", "instance_ids", "pose")
NEXT_KEYS = ("image_next", "pose_next", "ego_motion")
# Ground truth of frame t+1 and of object motion, rendered only when asked for (``next_labels``).
NEXT_LABEL_KEYS = ("depth_next", "segmentation_next", "object_motion", "object_motion_backward")
# Value a masked ("unlabelled") label key holds; see taskology_tf.data.example.
MASK_VALUES = {"depth": 0.0, "normals": 0.0, "segmentation": example_lib.IGNORE_LABEL, "instance_ids": 0,
               "depth_next": 0.0, "segmentation_next": example_lib.IGNORE_LABEL}

_PROGRESS_MIN_EXAMPLES = 200  # show a progress bar (stderr) for more examples than this
_CHUNK = 8  # examples per task sent to a worker process
_PARALLEL_MIN_PIXELS = 300 * 64 * 128  # about 2.5 s of single-process rendering


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {list(STYLES)}.")


def _check_traffic(traffic: str) -> None:
    if traffic not in scene_lib.TRAFFIC:
        raise ValueError(f"unknown traffic {traffic!r}; choose one of {list(scene_lib.TRAFFIC)}.")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) != value or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_seed(seed: int) -> None:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")


def _style_code(style: str) -> int:
    return zlib.crc32(style.encode("utf-8"))


def example_id(index: int, *, style: str = "sim", seed: int = 0, traffic: str = "normal") -> int:
    """Stable int64 id of example ``index`` of ``(style, seed, traffic)``: a 31-bit hash of the stream, then the
    index.

    Distinct across styles, seeds and traffic (up to hash collisions, ~1 in 2**31 per pair); needs index < 2**32.
    """
    if not 0 <= index < 2**32:
        raise ValueError(f"index must be in [0, 2**32), got {index}.")
    name = f"{style}/{int(seed)}" + ("" if traffic == "normal" else f"/{traffic}")
    stream = zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF
    return (stream << 32) | int(index)


def split_seed(seed: int, split: str) -> int:
    """The seed whose stream of scenes is split ``split`` of base seed ``seed`` (seed < 2**32).

    ``write_synthetic(..., split, seed)`` writes the examples of ``synthetic_dataset(seed=split_seed(seed, split))``.
    """
    _check_seed(seed)
    if not split or not isinstance(split, str):
        raise ValueError(f"split must be a non-empty string such as 'train', got {split!r}.")
    if seed >= 2**32:
        raise ValueError(f"seed must be < 2**32 to combine with a split, got {seed}.")
    return ((zlib.crc32(split.encode("utf-8")) & 0x7FFFFFFF) << 32) | int(seed)


def render_example(
    index: int,
    *,
    style: str = "sim",
    seed: int = 0,
    height: int = 64,
    width: int = 128,
    with_next: bool = False,
    max_depth: float = 60.0,
    next_labels: bool = False,
    traffic: str = "normal",
) -> dict[str, np.ndarray]:
    """Render example ``index`` of the ``(style, seed)`` stream as a dict of contract keys.

    traffic: "normal", or "dense" (the same scenes with more moving cars, see ``scene.sample_scene``).

    Keys: id () int64, image [H, W, 3] uint8, intrinsics [3, 3] float32, depth [H, W, 1] float32
    (metres, 0 = sky or beyond ``max_depth``), normals [H, W, 3] float32, segmentation [H, W, 1] int32,
    instance_ids [H, W, 1] int32, pose [4, 4] float32 camera-to-world; with ``with_next`` also
    image_next [H, W, 3] uint8 (0.1 s later), pose_next [4, 4] and ego_motion [4, 4] float32
    (``inv(pose_next) @ pose``: camera-t points -> camera-(t+1) points); with ``next_labels`` (needs
    ``with_next``) also the ``NEXT_LABEL_KEYS``: depth_next [H, W, 1], segmentation_next [H, W, 1] and the
    object motion of both frames' points, object_motion / object_motion_backward [H, W, 3] float32 (see
    ``object_motion``).
    """
    if next_labels and not with_next:
        raise ValueError("next_labels=True needs with_next=True (they are labels of the next frame).")
    _check_style(style)
    _check_traffic(traffic)
    _check_seed(seed)
    _check_positive(height=height, width=width)
    if int(index) != index or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}.")
    scene_seq, noise_seq = np.random.SeedSequence([int(seed), _style_code(style), int(index)]).spawn(2)
    scene = scene_lib.sample_scene(np.random.default_rng(scene_seq), traffic)
    noise = np.random.default_rng(noise_seq)
    frame = render_lib.render(scene, 0.0, height, width, style, rng=noise, max_depth=max_depth)
    out = {"id": np.asarray(example_id(index, style=style, seed=seed, traffic=traffic), np.int64)}
    out.update({key: frame[key] for key in FRAME_KEYS if key != "id"})
    if with_next:
        nxt = render_lib.render(scene, scene_lib.TIME_STEP, height, width, style, rng=noise, max_depth=max_depth)
        pose = scene.camera.pose_at(0.0)
        pose_next = scene.camera.pose_at(scene_lib.TIME_STEP)
        out["image_next"] = nxt["image"]
        out["pose_next"] = pose_next.astype(np.float32)
        out["ego_motion"] = (np.linalg.inv(pose_next) @ pose).astype(np.float32)
        if next_labels:
            out["depth_next"] = nxt["depth"]
            out["segmentation_next"] = nxt["segmentation"]
            out["object_motion"] = object_motion(scene, frame["instance_ids"], pose_next, scene_lib.TIME_STEP)
            out["object_motion_backward"] = object_motion(scene, nxt["instance_ids"], pose, -scene_lib.TIME_STEP)
    return out


def object_motion(scene: scene_lib.Scene, instance_ids: np.ndarray, pose_to: np.ndarray, dt: float) -> np.ndarray:
    """Displacement of each pixel's surface point over ``dt`` seconds by its object's own motion: [H, W, 3]
    float32 metres in the axes of the camera at ``pose_to`` (camera-to-world); 0 on static surfaces.

    Objects translate at constant velocity, so this is the per-pixel ``delta_t`` of Eq. (2) of Taskology
    (``z' p' = K R K^-1 z p + K (delta_t + T)``) for the warp from the frame of ``instance_ids`` to the
    frame at ``pose_to``.
    """
    boxes = scene.boxes
    velocity = np.zeros((max(int(boxes.instance_id.max(initial=0)), int(instance_ids.max(initial=0))) + 1, 3))
    velocity[boxes.instance_id] = boxes.velocity
    velocity[0] = 0.0  # static stuff
    world = velocity[instance_ids[..., 0]] * dt
    return (world @ pose_to[:3, :3]).astype(np.float32)  # world -> camera axes: R^T d


def _render_chunk(args) -> list[dict[str, np.ndarray]]:
    indices, kwargs = args
    return [render_example(i, **kwargs) for i in indices]


def _default_workers(num_examples: int, height: int, width: int, with_next: bool) -> int:
    """One process per core when the work outweighs starting processes (~0.5 s each), else 1."""
    frames = num_examples * (2 if with_next else 1)
    if frames * height * width < _PARALLEL_MIN_PIXELS:
        return 1
    return max(1, min(os.cpu_count() or 1, 8, num_examples // _CHUNK))


def render_examples(
    indices: Iterable[int],
    *,
    style: str = "sim",
    seed: int = 0,
    height: int = 64,
    width: int = 128,
    with_next: bool = False,
    max_depth: float = 60.0,
    num_workers: int | None = None,
    progress: bool | None = None,
    next_labels: bool = False,
    traffic: str = "normal",
) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``render_example(i, ...)`` for each index, in order, rendered by ``num_workers`` processes.

    num_workers: None = one per CPU core (at most 8) when there is enough work, else 1; 1 renders
      in this process.
    Worker processes are spawned (they import NumPy and this package, never TensorFlow), so a script
    that renders with more than one worker needs the usual ``if __name__ == "__main__":`` guard
    (without it the workers fail and rendering falls back to this process, with a warning).
    progress: show a tqdm bar on stderr (None = only for more than 200 examples).
    """
    _check_style(style)
    _check_traffic(traffic)
    _check_seed(seed)
    _check_positive(height=height, width=width)
    indices = list(indices)
    kwargs = dict(style=style, seed=seed, height=height, width=width, with_next=with_next, max_depth=max_depth,
                  next_labels=next_labels, traffic=traffic)
    if num_workers is None:
        num_workers = _default_workers(len(indices), height, width, with_next)
    if int(num_workers) != num_workers or num_workers < 1:
        raise ValueError(f"num_workers must be a positive integer or None, got {num_workers!r}.")
    if progress is None:
        progress = len(indices) > _PROGRESS_MIN_EXAMPLES
    return _render_stream(indices, kwargs, int(num_workers), bool(progress))


def _render_stream(indices: list[int], kwargs: dict, num_workers: int, progress: bool) -> Iterator[dict]:
    bar = None
    if progress:
        from tqdm.auto import tqdm

        desc = f"rendering {kwargs['style']} {kwargs['height']}x{kwargs['width']}"
        bar = tqdm(total=len(indices), desc=desc, unit="ex", file=sys.stderr)
    done = 0
    try:
        if num_workers > 1 and len(indices) > _CHUNK:
            chunks = [(indices[s:s + _CHUNK], kwargs) for s in range(0, len(indices), _CHUNK)]
            try:
                with concurrent.futures.ProcessPoolExecutor(
                    num_workers, mp_context=multiprocessing.get_context("spawn")
                ) as pool:
                    for batch in pool.map(_render_chunk, chunks):
                        yield from batch
                        done += len(batch)
                        if bar is not None:
                            bar.update(len(batch))
            except concurrent.futures.process.BrokenProcessPool as err:
                warnings.warn(
                    f"rendering worker processes failed ({err}); rendering the remaining examples in this process. "
                    "Scripts that render with num_workers > 1 need an `if __name__ == '__main__':` guard.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        for i in indices[done:]:
            yield render_example(i, **kwargs)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def _render_all(style, num_examples, seed, height, width, with_next, max_depth, next_labels, traffic,
                num_workers) -> dict[str, np.ndarray]:
    """All examples stacked into arrays [num_examples, ...] (read-only)."""
    stacked: dict[str, np.ndarray] = {}
    stream = render_examples(range(num_examples), style=style, seed=seed, height=height, width=width,
                             with_next=with_next, max_depth=max_depth, num_workers=num_workers,
                             next_labels=next_labels, traffic=traffic)
    for n, ex in enumerate(stream):
        if not stacked:
            stacked = {k: np.empty((num_examples,) + np.shape(v), np.asarray(v).dtype) for k, v in ex.items()}
        for k, v in ex.items():
            stacked[k][n] = v
    for v in stacked.values():
        v.setflags(write=False)
    return stacked


_CACHE_SIZE = 4
_cache: "collections.OrderedDict[tuple, dict[str, np.ndarray]]" = collections.OrderedDict()
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget the datasets rendered so far in this process."""
    with _cache_lock:
        _cache.clear()


def synthetic_arrays(
    style: str = "sim",
    num_examples: int = 256,
    *,
    seed: int = 0,
    height: int = 64,
    width: int = 128,
    with_next: bool = False,
    max_depth: float = 60.0,
    num_workers: int | None = None,
    next_labels: bool = False,
    traffic: str = "normal",
) -> dict[str, np.ndarray]:
    """All keys of examples ``0 .. num_examples - 1`` stacked as read-only arrays [num_examples, ...].

    Rendered once per process and argument set (an LRU cache of the last 4 sets). ``next_labels``: also the
    ``NEXT_LABEL_KEYS`` (see ``render_example``).
    """
    _check_style(style)
    _check_seed(seed)
    _check_positive(num_examples=num_examples, height=height, width=width)
    if next_labels and not with_next:
        raise ValueError("next_labels=True needs with_next=True (they are labels of the next frame).")
    _check_traffic(traffic)
    key = (style, int(num_examples), int(seed), int(height), int(width), bool(with_next), float(max_depth),
           bool(next_labels), traffic)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    arrays = _render_all(*key, num_workers)
    with _cache_lock:
        _cache[key] = arrays
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return arrays


def _select_keys(keys: Sequence[str] | None, unlabelled: Sequence[str], with_next: bool) -> list[str]:
    """The keys a dataset keeps (``id`` first); the ``NEXT_LABEL_KEYS`` only when asked for by name."""
    available = list(FRAME_KEYS) + (list(NEXT_KEYS) + list(NEXT_LABEL_KEYS) if with_next else [])
    if isinstance(keys, str) or isinstance(unlabelled, str):
        raise ValueError("keys and unlabelled must be sequences of key names, e.g. ('image', 'depth'), not a string.")
    if keys is None:
        selected = [k for k in available if k not in NEXT_LABEL_KEYS]
    else:
        for key in keys:
            if key in NEXT_KEYS + NEXT_LABEL_KEYS and not with_next:
                raise ValueError(f"key {key!r} needs the next frame; pass with_next=True.")
            if key not in available:
                raise ValueError(f"unknown key {key!r}; the synthetic dataset provides {available}.")
        selected = ["id"] + [k for k in available if k in keys and k != "id"]
    for key in unlabelled:
        if key not in MASK_VALUES:
            raise ValueError(f"cannot mask key {key!r}; unlabelled keys must be among {sorted(MASK_VALUES)}.")
        if key not in selected:
            raise ValueError(f"unlabelled key {key!r} is not among the selected keys {selected}; add it to keys.")
    return selected


def synthetic_dataset(
    style: str = "sim",
    num_examples: int = 256,
    *,
    seed: int = 0,
    height: int = 64,
    width: int = 128,
    with_next: bool = False,
    keys: Sequence[str] | None = None,
    unlabelled: Sequence[str] = (),
    num_workers: int | None = None,
    traffic: str = "normal",
):
    """An in-memory ``tf.data.Dataset`` of unbatched example dicts (rendered once per process).

    Args:
      style: one of STYLES ("sim", "city", "real", "coco").
      num_examples: examples ``0 .. num_examples - 1`` of the ``(style, seed)`` stream.
      seed: selects the stream (use different seeds, or ``split_seed``, for different splits).
      height, width: image size in pixels (networks may require multiples of 32; not checked here).
      with_next: also provide image_next, pose_next and ego_motion.
      keys: keys to keep (default: every per-frame key, plus the next-frame keys when with_next; the
        ``NEXT_LABEL_KEYS`` (depth_next, segmentation_next, object motion) only when named here);
        ``id`` is always kept.
      unlabelled: label keys to mask rather than drop (depth -> 0, normals -> 0, segmentation -> 255,
        instance_ids -> 0), so that labelled and unlabelled datasets share one structure.
      num_workers: rendering processes (see ``render_examples``).
      traffic: "normal", or "dense": the same scenes with more moving cars (a lead car at about the camera's
        speed, one more per lane), for experiments about moving objects (Table 1).
    """
    _check_style(style)
    _check_traffic(traffic)
    _check_positive(num_examples=num_examples, height=height, width=width)
    selected = _select_keys(keys, unlabelled, with_next)
    arrays = synthetic_arrays(style, num_examples, seed=seed, height=height, width=width, with_next=with_next,
                              num_workers=num_workers, next_labels=any(k in NEXT_LABEL_KEYS for k in selected),
                              traffic=traffic)
    tensors = {}
    for key in selected:
        if key in unlabelled:
            tensors[key] = np.full(arrays[key].shape, MASK_VALUES[key], arrays[key].dtype)
        else:
            tensors[key] = arrays[key]

    import tensorflow as tf  # only here: rendering never needs TensorFlow

    return tf.data.Dataset.from_tensor_slices(tensors)
