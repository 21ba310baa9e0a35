"""Face detector choice: recall and speed on the hold-out face footage, at the resolution the
engine sees (the low-resolution input) and at full resolution.

    python benchmarks/bench_face_detectors.py --data data/vsr_mixed

Candidates that carry their weights in a package: MTCNN (facenet-pytorch's weights, our port),
OpenCV's Haar cascade (opencv-python-headless, if installed), dlib's HOG detector (if dlib is
installed). Recall: frames in which the detector finds a face overlapping the face MTCNN finds at
full resolution (IoU >= 0.3) over all frames; every clip shows one face in every frame.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vsr_pipeline.classical import picture_to_rgb8  # noqa: E402
from vsr_pipeline.faces.mtcnn import MTCNN, DetectorConfig  # noqa: E402
from vsr_pipeline.faces.track import iou  # noqa: E402
from vsr_pipeline.train.evaluate import degrade_clip, ground_truth  # noqa: E402


def detectors() -> dict:
    found = {"mtcnn": lambda img, m=MTCNN(DetectorConfig(min_face=20)): [f.box for f in m.detect(img)]}
    try:
        import cv2

        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

        def haar(img):
            grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            return [(x, y, x + w, y + h) for x, y, w, h in cascade.detectMultiScale(grey, 1.1, 4, minSize=(20, 20))]

        found["opencv-haar"] = haar
    except ImportError:
        pass
    try:
        import dlib

        hog = dlib.get_frontal_face_detector()
        found["dlib-hog"] = lambda img: [(r.left(), r.top(), r.right(), r.bottom()) for r in hog(img, 1)]
    except ImportError:
        pass
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data/vsr"))
    p.add_argument("--frames", type=int, default=24)
    args = p.parse_args()
    manifest = json.loads((args.data / "manifest.json").read_text())
    clips = [args.data / e["copied_as"] for e in manifest["files"] if e.get("kind") == "faces" and e.get("copied_as")]
    reference = MTCNN(DetectorConfig(min_face=20))
    cands = detectors()
    stats = {(name, res): [0, 0, 0.0] for name in cands for res in ("full", "low")}
    for clip in clips:
        truth = ground_truth(clip, args.frames)
        low = degrade_clip(truth, "clean")
        for hr, lr in zip(truth, low):
            hr_img, lr_img = picture_to_rgb8(hr), picture_to_rgb8(lr)
            ref = reference.detect(hr_img)
            if not ref:
                continue
            ref_box = max((f.box for f in ref), key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            for name, detect in cands.items():
                for res, img, scale in (("full", hr_img, 1.0), ("low", lr_img, 2.0)):
                    started = time.perf_counter()
                    boxes = detect(np.ascontiguousarray(img))
                    s = stats[(name, res)]
                    s[2] += time.perf_counter() - started
                    s[1] += 1
                    s[0] += any(iou(tuple(v * scale for v in b), ref_box) >= 0.3 for b in boxes)
    print(f"{platform.processor() or 'cpu'}; clips: {', '.join(c.name for c in clips)}")
    print("| detector | input | recall | ms per frame |")
    print("|---|---|---|---|")
    for (name, res), (hits, total, seconds) in stats.items():
        size = "256x256" if res == "full" else "128x128"
        print(f"| {name} | {size} | {hits}/{total} ({hits / max(total, 1):.0%}) | {1000 * seconds / max(total, 1):.1f} |")


if __name__ == "__main__":
    main()
