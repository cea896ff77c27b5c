"""Render a preview grid of the synthetic world: image | normals | depth | semantics, per style.

    .venv/bin/python tools/preview_synthetic.py --out synthetic_preview.png --rows 3 --height 128 --width 416
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from taskology_tf.data.example import CLASS_NAMES
from taskology_tf.data.synthetic.dataset import render_example

_PALETTE = np.array(
    [[128, 64, 128], [244, 35, 232], [70, 70, 70], [107, 142, 35], [153, 153, 153], [70, 130, 180], [0, 0, 142], [220, 20, 60]],
    np.uint8,
)


def panels(example: dict) -> np.ndarray:
    """[H, 4W, 3] uint8: image, normals ((n+1)/2), inverse depth, semantic colours."""
    depth = example["depth"][..., 0]
    inv = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-3), 0.0)
    inv = (255 * np.clip(inv / max(np.percentile(inv, 95), 1e-6), 0, 1)).astype(np.uint8)
    normals = ((example["normals"] + 1.0) * 127.5).astype(np.uint8)
    semantics = _PALETTE[np.clip(example["segmentation"][..., 0], 0, len(CLASS_NAMES) - 1)]
    return np.concatenate([example["image"], normals, np.repeat(inv[..., None], 3, -1), semantics], axis=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="synthetic_preview.png")
    p.add_argument("--rows", type=int, default=3)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=416)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows = [panels(render_example(i, style=style, seed=args.seed, height=args.height, width=args.width))
            for style in ("sim", "real") for i in range(args.rows)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
