"""Rendering throughput of the synthetic world (frames per second, single process by default).

For each style and image size, renders ``--frames`` frames of distinct scenes (scene sampling
excluded: ``render`` only) and ``--frames / 2`` examples with their next frame through
``render_example`` (scene sampling included). With ``--workers N`` it also times
``render_examples`` with N worker processes, the path ``synthetic_dataset`` takes.

    python benchmarks/synthetic_fps.py --frames 200
    python benchmarks/synthetic_fps.py --frames 1500 --sizes 64x128 --workers 2
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from taskology_tf.data.synthetic import dataset, render, scene


def _sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        h, w = item.lower().split("x")
        out.append((int(h), int(w)))
    return out


def _time_render(style: str, height: int, width: int, frames: int) -> float:
    scenes = [scene.sample_scene(np.random.default_rng(i)) for i in range(frames)]
    render.render(scenes[0], 0.0, height, width, style)  # warm caches
    start = time.perf_counter()
    for i, s in enumerate(scenes):
        render.render(s, 0.0, height, width, style, rng=np.random.default_rng(i))
    return frames / (time.perf_counter() - start)


def _time_examples(style: str, height: int, width: int, frames: int, workers: int) -> float:
    examples = max(1, frames // 2)
    start = time.perf_counter()
    n = sum(1 for _ in dataset.render_examples(range(examples), style=style, height=height, width=width,
                                               with_next=True, num_workers=workers, progress=False))
    return 2 * n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200, help="frames per style and size")
    parser.add_argument("--sizes", default="128x416,64x128", help="comma-separated HxW")
    parser.add_argument("--styles", default="sim,real")
    parser.add_argument("--workers", type=int, default=0, help="also time N worker processes (0 = skip)")
    args = parser.parse_args()
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, numpy {np.__version__}, "
          f"{args.frames} frames per row, {time.strftime('%Y-%m-%d')}")
    print("| style | size | render() fps | render_example(with_next) fps, 1 process |"
          + (f" {args.workers} workers fps |" if args.workers else ""))
    print("|---|---|---|---|" + ("---|" if args.workers else ""))
    for style in args.styles.split(","):
        for height, width in _sizes(args.sizes):
            row = [style, f"{height}x{width}", f"{_time_render(style, height, width, args.frames):.0f}",
                   f"{_time_examples(style, height, width, args.frames, 1):.0f}"]
            if args.workers:
                row.append(f"{_time_examples(style, height, width, args.frames, args.workers):.0f}")
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
