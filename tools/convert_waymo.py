"""Convert Waymo Open Dataset segment files (TFRecords of ``Frame`` protos) into the project's TFRecords.

    .venv/bin/python tools/convert_waymo.py --input '/data/waymo/training/segment-*.tfrecord' \\
        --output /data/waymo_frames

Each input file becomes ``<output>/<same name>`` with one record per frame (keys:
``taskology_tf.data.waymo.FRAME_KEYS``); read them as multi-frame examples with the
gin source ``waymo_lidar`` (``waymo_lidar.paths = '/data/waymo_frames/*.tfrecord'``).
The same conversion runs as ``taskology data convert-waymo --input ... --output ...``.
The ``waymo_open_dataset`` package is not needed.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", action="append", required=True,
                        help="a Waymo segment file or glob pattern (repeat for more)")
    parser.add_argument("--output", required=True, help="folder for the converted files")
    parser.add_argument("--second_return", action="store_true", help="also convert the second LiDAR returns")
    parser.add_argument("--compression", default=None, choices=["GZIP", "ZLIB"], help="compress the written records")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from taskology_tf.data.waymo import convert_files

    try:
        paths = convert_files(args.input, args.output, returns=(1, 2) if args.second_return else (1,),
                              compression=args.compression)
    except (FileNotFoundError, ValueError) as err:
        print(f"convert_waymo: error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
