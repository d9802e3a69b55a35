"""``python -m pipeline.synth --count N --seed S --out DIR [--width W --height H]
[--variant V]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence

from pipeline.synth.coco import write_coco
from pipeline.synth.scene import VARIANTS, generate_scene
from pipeline.synth.types import Scene


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.synth",
        description="Write synthetic nursery scenes (JPEG) and COCO annotations.",
    )
    parser.add_argument("--count", type=int, required=True, help="number of scenes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first scene")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--width", type=int, default=2000)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument(
        "--quality", type=int, default=None, help="JPEG quality (default: the scene's own, else 92)"
    )
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="classic",
        help="scene generator: classic, wide, or a condition (pipeline/synth/conditions.py)",
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be >= 1")

    def scenes() -> Iterator[Scene]:
        for i in range(args.count):
            scene = generate_scene(args.seed + i, args.width, args.height, variant=args.variant)
            print(
                f"seed {scene.seed}: {len(scene.containers)} containers, "
                f"{len(scene.plants)} plants",
                file=sys.stderr,
            )
            yield scene

    path = write_coco(scenes(), args.out, quality=args.quality)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
