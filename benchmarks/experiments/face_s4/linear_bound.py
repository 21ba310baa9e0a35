"""How much of the video network's face error is predictable by a linear filter of its own output?
Least squares, per coding group and per HR sub-pixel phase: the luma correction at an HR pixel as
a linear function of the KxK luma of the video output around it (plus bias), fitted on the
training runs (and, as an optimistic bound, on the validation runs themselves), scored as face-
crop luma PSNR gain on the validation runs (region where the blend weight is over one half).
usage: python benchmarks/experiments/face_s4/linear_bound.py [K]"""
import json, sys
import torch
import torch.nn.functional as F
from vsr_pipeline.colour import rgb_to_planes
from vsr_pipeline.faces.align import feather_mask
from vsr_pipeline.train.face_data import CROP, load_face_set
from vsr_pipeline.train.face_track_train import TrackPool, run_conditions
from vsr_pipeline.train.face_train import DECODED

torch.set_num_threads(1)
K = int(sys.argv[1]) if len(sys.argv) > 1 else 7
def load(split, key):
    saved = torch.load(f"runs/facesr_s4/unet_cond/pool_{split}_{key}.pt", weights_only=True)
    pool = TrackPool(**saved); pool.cond = run_conditions(load_face_set("data/faces", split)); return pool
train, val = load("train", "c218200b9a0fc7ce"), load("val", "450bf5f07d6d6162")
y = lambda x: rgb_to_planes(x.float().clamp(0, 1), DECODED)[0]  # (N, 1, H, W), 8-bit code units
region = (feather_mask(2 * CROP) > 0.5)[0, 0]
def group(pool):
    qp = pool.cond[:, 0] * 51
    return torch.where(~pool.lossy, 0, torch.where((pool.cond[:, 1] > 0) & (qp < 24), 1, 2))
def feats(pool):
    b = y(pool.base); t = y(pool.truth)
    patches = F.unfold(F.pad(b, (K // 2,) * 4, mode="replicate"), K)  # (N, K*K, H*W)
    return patches.view(len(b), K * K, *b.shape[-2:]), (t - b)[:, 0], b[:, 0]
def fit(pool, every=3, chunk=32):
    g = group(pool); A, B = {}, {}
    for s0 in range(0, len(g), chunk):
        P, R, _ = feats(pool.subset(torch.arange(s0, min(len(g), s0 + chunk)))); gc = g[s0 : s0 + chunk]
        for gi in range(3):
            sel = gc == gi
            if not sel.any(): continue
            for py in range(2):
                for px in range(2):
                    m = torch.zeros_like(region); m[py::2 * every, px::2 * every] = True; m &= region
                    X = P[sel][:, :, m].permute(0, 2, 1).reshape(-1, K * K).double()
                    X = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
                    r = R[sel][:, m].reshape(-1).double()
                    key = (gi, py, px)
                    A[key] = A.get(key, 0) + X.T @ X; B[key] = B.get(key, 0) + X.T @ r
    return {k: torch.linalg.solve(A[k] + 1e-2 * torch.eye(K * K + 1, dtype=torch.float64), B[k]) for k in A}
def score(pool, W, chunk=32):
    g = group(pool); gains = []
    for s0 in range(0, len(g), chunk):
        gains.append(_score(pool.subset(torch.arange(s0, min(len(g), s0 + chunk))), W, g[s0 : s0 + chunk]))
    gain = torch.cat(gains)
    return {name: round(float(gain[g == gi].mean()), 3) for gi, name in enumerate(("lossless", "lossy QP<24", "lossy QP>=24 or HEVC")) if (g == gi).any()} | {"all": round(float(gain.mean()), 3)}
def _score(pool, W, g):
    P, R, b = feats(pool); corr = torch.zeros_like(R)
    for (gi, py, px), w in W.items():
        sel = (g == gi).nonzero()[:, 0]
        X = P[sel][:, :, py::2, px::2].double()
        corr[sel, py::2, px::2] = (torch.einsum("nkhw,k->nhw", X, w[:-1]) + w[-1]).float()
    q = lambda v: v.round().clamp(0, 255)
    t = b + R
    def psnr(out):
        mse = ((q(out) - q(t)) ** 2)[:, region].mean(1); return 10 * torch.log10(255**2 / mse)
    return psnr(b + corr) - psnr(b)
Wt = fit(train)
print(json.dumps({"K": K, "fit on training runs, scored on validation": score(val, Wt), "fit on training runs, scored on training runs": score(train, Wt), "fit on validation runs themselves (optimistic)": score(val, fit(val, every=1))}, indent=1))
