"""Throughput of the data-engine converters and the scrubber, on inputs made here (no downloads).

    python benchmarks/convert_scrub_throughput.py [--refs 20000] [--lines 20000]

Prints records per CPU-second (one core) for a RefCOCO-layout conversion (annotations only: media absent, counted as missing),
a Charades-STA conversion with a --durations table, text scrubbing (lines/s and MB/s), and face
blurring (frames/s at 512x512 and 256x256). CPU time, not wall time, so that a busy shared machine does
not halve the figures; everything here runs on one core.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import tempfile
import time
from pathlib import Path

import numpy as np


def refcoco_release(folder: Path, n_refs: int) -> None:
    rng = random.Random(0)
    images = [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "width": 640, "height": 480}
              for i in range(n_refs // 4 + 1)]
    anns, refs = [], []
    for r in range(n_refs):
        x, y = rng.uniform(0, 500), rng.uniform(0, 380)
        anns.append({"id": r, "image_id": r // 4, "bbox": [x, y, rng.uniform(10, 140), rng.uniform(10, 100)],
                     "category_id": 1})
        refs.append({"ref_id": r, "ann_id": r, "image_id": r // 4, "split": "train", "category_id": 1,
                     "sentences": [{"sent_id": 2 * r + k, "sent": f"the person number {r} seen from view {k}"}
                                   for k in range(2)]})
    (folder / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))
    with open(folder / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f)


def charades_release(folder: Path, n_lines: int) -> tuple[Path, Path]:
    rng = random.Random(0)
    vids = [f"V{i:05d}" for i in range(n_lines // 4 + 1)]
    txt, csv = folder / "charades_sta_test.txt", folder / "Charades_v1_test.csv"
    txt.write_text("".join(f"{vids[i // 4]} {s:.1f} {s + rng.uniform(2, 10):.1f}##person does thing {i}.\n"
                           for i in range(n_lines) for s in [rng.uniform(0, 20)]))
    csv.write_text("id,length\n" + "".join(f"{v},32.0\n" for v in vids))
    return txt, csv


def time_it(fn) -> float:
    """CPU seconds of this process: on a shared machine wall time measures the neighbours too."""
    t = time.process_time()
    fn()
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refs", type=int, default=20000)
    ap.add_argument("--lines", type=int, default=20000)
    args = ap.parse_args()

    from omniground.data.formats import convert
    from omniground.data.scrub import TextScrubber, blur_faces

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        refcoco_release(tmp, args.refs)
        dt = time_it(lambda: convert("refcoco", [tmp], tmp / "images", tmp / "refcoco.jsonl"))
        print(f"convert refcoco:      {2 * args.refs / dt:9.0f} samples/s  ({2 * args.refs} sentences, {dt:.1f} s)")
        txt, csv = charades_release(tmp, args.lines)
        dt = time_it(lambda: convert("charades_sta", [txt], tmp / "videos", tmp / "ch.jsonl", durations=csv))
        print(f"convert charades_sta: {args.lines / dt:9.0f} samples/s  ({args.lines} queries, {dt:.1f} s)")

    rng = random.Random(0)
    lines = [
        rng.choice([
            "the man on the left[0.100,0.200,0.300,0.400] waves while the dog runs {0.16,0.36}.",
            "Contact jane.doe@example.org or +44 20 7946 0958 about order 4111 1111 1111 1111.",
            "see https://x.org/a?token=Zk8sP2mQ9vT4rY7wL1nB6cX3&page=2 from host 10.0.0.12",
            "A person is putting a book on a shelf, then opens the door and leaves the room.",
        ]) for _ in range(args.lines)
    ]
    scrub = TextScrubber(phone_region="GB")
    dt = time_it(lambda: [scrub(t) for t in lines])
    mb = sum(len(t) for t in lines) / 1e6
    print(f"scrub text:           {len(lines) / dt:9.0f} lines/s    ({mb / dt:.2f} MB/s; {dict(scrub.counts)})")

    from PIL import Image
    from skimage import data as skdata

    face = skdata.astronaut()
    for side in (512, 256):
        frame = np.asarray(Image.fromarray(face).resize((side, side)))
        n = 20
        dt = time_it(lambda: [blur_faces(frame) for _ in range(n)])
        print(f"blur faces {side}x{side}:  {n / dt:9.1f} frames/s")


if __name__ == "__main__":
    main()
