"""Where is the error of the video network on faces? Split (truth - video output) of every
validation crop by spatial frequency (FFT of the luma error, HR pixels) and report, per coding
band, the face-crop gain an oracle would get by removing the error of each band alone.

Bands (cycles per HR pixel, radial): below 0.125 (coarse: shading, shape), 0.125-0.25 (up to the
input's Nyquist: what the LR picture carries, unless the codec destroyed it), above 0.25 (beyond
the input's Nyquist: only a prior can supply it).
usage: python benchmarks/experiments/face_s4/band_bound.py POOL.pt [train|val]"""
import json, sys
import torch
from vsr_pipeline.colour import rgb_to_planes
from vsr_pipeline.train.face_train import DECODED
from vsr_pipeline.train.face_data import load_face_set
from vsr_pipeline.train.face_track_train import TrackPool, run_conditions

torch.set_num_threads(1)
saved = torch.load(sys.argv[1], weights_only=True); saved.pop("cond", None)
pool = TrackPool(**saved)
split = sys.argv[2] if len(sys.argv) > 2 else "val"
cond = run_conditions(load_face_set("data/faces", split))
y = lambda x: rgb_to_planes(x.float().clamp(0, 1), DECODED)[0][:, 0]  # (N, H, W) 8-bit code units
base, truth = y(pool.base), y(pool.truth)
err = truth - base
n, h, w = err.shape
fy = torch.fft.fftfreq(h)[:, None]; fx = torch.fft.fftfreq(w)[None, :]
r = torch.sqrt(fx**2 + fy**2)
bands = {"<0.125": r < 0.125, "0.125-0.25": (r >= 0.125) & (r < 0.25), ">=0.25": r >= 0.25}
E = torch.fft.fft2(err)
inner = slice(h // 6, h - h // 6)
def psnr(e):
    mse = (e[:, inner, inner] ** 2).mean(dim=(1, 2)); return 10 * torch.log10(255**2 / mse)
ref = psnr(err)
qp = cond[:, 0] * 51
groups = {"lossless": ~pool.lossy, "lossy, QP<24 (H.264)": pool.lossy & (cond[:, 1] > 0) & (qp < 24), "lossy, QP>=24 (H.264)": pool.lossy & (cond[:, 1] > 0) & (qp >= 24), "HEVC (QP unknown)": pool.lossy & (cond[:, 1] == 0)}
out = {}
for g, sel in groups.items():
    if not sel.any():
        continue
    row = {"runs": int(sel.sum()), "base_db": round(float(ref[sel].mean()), 2)}
    for name, b in bands.items():
        fixed = torch.fft.ifft2(E * (~b)).real  # error left after the band is removed
        row[f"oracle gain, band {name}"] = round(float((psnr(fixed) - ref)[sel].mean()), 2)
        row[f"error energy share {name}"] = round(float(((E.abs() ** 2) * b).sum(dim=(1, 2))[sel].sum() / (E.abs() ** 2).sum(dim=(1, 2))[sel].sum()), 3)
    out[g] = row
print(json.dumps(out, indent=1))
