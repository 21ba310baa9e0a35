"""Score weights files on the validation clips of prepared data folders (not the hold-out).

The validation clips come from validation photographs that neither training nor the hold-out
uses, so they check a choice made on the hold-out (such as which model soup to ship) on other
pictures::

    OMP_NUM_THREADS=1 python benchmarks/experiments/validate_weights.py --data data/vsr_comp data/vsr_mixed \\
        --weights compressed heavy runs/soup/s3.safetensors

Prints, per data folder and weights, the mean Y-PSNR gain over bicubic (dB) of the middle
window of every validation clip, as ``vsr train`` logs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vsr_pipeline.models.weights import load_network, weights_argument
from vsr_pipeline.train.dataset import ClipArrays
from vsr_pipeline.train.trainer import validate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, nargs="+", default=[Path("data/vsr_comp")], help="'vsr data prepare' folders (their val.npz)")
    ap.add_argument("--weights", type=weights_argument, nargs="+", default=[weights_argument("compressed"), weights_argument("heavy")])
    ap.add_argument("--window", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for data in args.data:
        val = ClipArrays(data / "val.npz")
        for weights in args.weights:
            with torch.no_grad():
                result = validate(load_network(weights), val, args.window)
            print(f"{str(data):20s} {Path(weights).name:45s} gain over bicubic {result['val_gain_db']:+.3f} dB ({val.count} clips)", flush=True)


if __name__ == "__main__":
    main()
