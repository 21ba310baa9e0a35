"""Cost of the face network per face and per frame: MACs per input pixel (formula, checked by the
tests against the convolutions), and one loaded CPU thread's time for a 96x96 crop (the crop side
the face sets use). usage: python benchmarks/experiments/face_s4/cost.py WEIGHTS..."""
import sys, time, json
import torch
from vsr_pipeline.faces.engine import load_face_net
from vsr_pipeline.faces.face_sr import macs_per_pixel
torch.set_num_threads(1)
for path in sys.argv[1:]:
    net = load_face_net(path)
    lr, base = torch.rand(1, 3, 96, 96), torch.rand(1, 3, 192, 192)
    cond = torch.rand(1, 2) if net.config.cond else None
    with torch.inference_mode():
        for _ in range(2): net(lr, base, cond) if cond is not None else net(lr, base)
        t = time.perf_counter(); n = 10
        for _ in range(n): net(lr, base, cond) if cond is not None else net(lr, base)
        ms = (time.perf_counter() - t) / n * 1e3
    k = macs_per_pixel(net.config)
    print(json.dumps({"weights": path, "config": net.config.to_dict(), "params": sum(p.numel() for p in net.parameters()), "kmac_per_input_pixel": round(k / 1e3, 1), "gmac_per_96px_face": round(k * 96 * 96 / 1e9, 2), "ms_per_96px_face_one_thread": round(ms, 1), "gmac_faces_covering_5pct_of_1080p_input": round(k * 0.05 * 1920 * 1080 / 1e9, 1)}))
