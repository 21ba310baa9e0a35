"""Validation gain of a face network split by where the run came from (real video motion vs a
photograph under a virtual camera) and by coding. usage: python benchmarks/experiments/face_s4/split_gain.py WEIGHTS"""
import json, sys
import torch
from vsr_pipeline.faces.engine import load_face_net
from vsr_pipeline.train.face_data import load_face_set
from vsr_pipeline.train.face_track_train import TrackPool, run_conditions, validate
torch.set_num_threads(1)
net = load_face_net(sys.argv[1])
out = {}
for split, key in (("val", "450bf5f07d6d6162"), ("train", "c218200b9a0fc7ce")):
    saved = torch.load(f"runs/facesr_s4/flat_cond/pool_{split}_{key}.pt", weights_only=True)
    pool = TrackPool(**saved); fs = load_face_set("data/faces", split); pool.cond = run_conditions(fs)
    kinds = {"real video": [i for i, s in enumerate(fs.samples) if s["motion"] == "real"], "photograph, virtual camera": [i for i, s in enumerate(fs.samples) if s["motion"] != "real"]}
    for kind, idx in kinds.items():
        if split == "train":
            idx = idx[:: max(1, len(idx) // 96)]
        r = validate(net, pool.subset(torch.tensor(idx)))
        out[f"{split}: {kind} ({len(idx)} runs)"] = {k: r[k] for k in ("base_db", "gain_db", "gain_lossless_db", "gain_lossy_db")}
print(json.dumps(out, indent=1))
