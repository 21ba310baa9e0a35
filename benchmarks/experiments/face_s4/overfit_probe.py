"""Can the refinement fit at all? Train the flat 32x4 network on N validation runs (full 96-pixel
crops, every step the same runs, flips) and report their own gain: a bug or a dead optimiser shows
as no gain even here. usage: python benchmarks/experiments/face_s4/overfit_probe.py N STEPS LR"""
import json, sys, time
import torch
from vsr_pipeline.faces.align import feather_mask
from vsr_pipeline.faces.face_sr import FaceSRConfig, FaceSRNet
from vsr_pipeline.train.face_data import CROP
from vsr_pipeline.train.face_track_train import TrackPool, blended, validate
from vsr_pipeline.train.face_train import plane_loss

torch.set_num_threads(1); torch.manual_seed(0)
n, steps, lr = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
saved = torch.load("runs/facesr_s4/unet_cond/pool_val_450bf5f07d6d6162.pt", weights_only=True)
pool = TrackPool(**saved)
idx = torch.arange(0, len(pool.labels), len(pool.labels) // n)[:n]
sub = pool.subset(idx)
net = FaceSRNet(FaceSRConfig(32, 4))
opt = torch.optim.Adam(net.parameters(), lr=lr)
mask = feather_mask(2 * CROP)
crops, base, truth = sub.crops[:, -1].float(), sub.base.float(), sub.truth.float()
t = time.time()
for s in range(1, steps + 1):
    b = torch.randint(n, (8,))
    loss = plane_loss(blended(net, crops[b], base[b], mask), truth[b])
    opt.zero_grad(); loss.backward(); opt.step()
    if s % (steps // 5) == 0:
        net.eval(); print(json.dumps({"step": s, "loss": round(float(loss), 5), "own_gain_db": validate(net, sub)["gain_db"], "s": round(time.time() - t)}), flush=True); net.train()
