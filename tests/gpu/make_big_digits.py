"""Grow a `make-dataset digits` tree for GPU throughput runs: N-1 variants of each train image.

`python tests/gpu/make_big_digits.py DIR COPIES`: next to every DIR/train/<class>/*.png it
writes COPIES-1 JPEGs, each the image rotated (up to 12 degrees) and shifted (up to 8% of
the side) by a seeded random amount. val/ is left alone, so no val image has a variant in
train. Offline, seeded, all cores.
"""

from __future__ import annotations

import os
import random
import sys
from multiprocessing import Pool
from pathlib import Path

from PIL import Image


def _variants(job: tuple[Path, int]) -> int:
    path, copies = job
    rng = random.Random(f"{path.name}-{copies}")
    with Image.open(path) as img:
        img = img.convert("RGB")
        side = img.size[0]
        for j in range(1, copies):
            shift = (rng.uniform(-0.08, 0.08) * side, rng.uniform(-0.08, 0.08) * side)
            out = img.rotate(
                rng.uniform(-12, 12), resample=Image.Resampling.BILINEAR, translate=shift
            )
            out.save(path.with_name(f"{path.stem}-v{j}.jpg"), quality=90)
    return copies - 1


def main() -> int:
    root, copies = Path(sys.argv[1]), int(sys.argv[2])
    originals = sorted((root / "train").glob("*/*.png"))
    with Pool(os.cpu_count() or 1) as pool:
        made = sum(pool.map(_variants, [(p, copies) for p in originals], chunksize=16))
    val = len(list((root / "val").glob("*/*")))
    print(f"{root}: {len(originals) + made} train images ({made} variants), {val} val images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
