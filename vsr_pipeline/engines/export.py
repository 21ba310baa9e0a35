"""Export of the network's two halves to ONNX, cached by everything that changes the graph.

``encode.onnx``: ``rgb (N,3+K,H,W)`` (K: the network's ``cond_channels``) -> ``feat (N,C,H,W)``, ``flow_feat (N,Cf,H/4,W/4)``.
``reconstruct.onnx``: ``rgb_centre, feat_centre, flow_feat_centre, feats (N,T,C,H,W),
flow_feats (N,T,Cf,H/4,W/4)`` -> ``rgb_hr (N,3,2H,2W)``. Batch, height, width and window
length are dynamic. Opset 17 (GridSample needs 16; TensorRT misreads opset 20's renamed mode).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._files import file_sha256, writing
from ..models.vsrnet import VSRNet
from ..models.weights import default_weights_path, engines_dir, load_network

OPSET = 17

#: Operators TensorRT's ONNX parser imports (the subset this network may use).
TENSORRT_OPS = frozenset(
    {
        "Add", "Cast", "Concat", "Constant", "ConstantOfShape", "Conv", "DepthToSpace", "Div", "Equal",
        "Expand", "Gather", "GridSample", "LeakyRelu", "Mul", "Range", "ReduceSum", "Reshape", "Resize",
        "Shape", "Sigmoid", "Slice", "Sub", "Unsqueeze", "Where", "Relu", "Pad", "Sqrt", "Pow",
        "Squeeze", "Transpose", "Identity", "Clip", "Max", "Min", "Sin", "Cos",
    }
)

ENCODE_INPUTS = ("rgb",)
ENCODE_OUTPUTS = ("feat", "flow_feat")
RECONSTRUCT_INPUTS = ("rgb_centre", "feat_centre", "flow_feat_centre", "feats", "flow_feats")
RECONSTRUCT_OUTPUTS = ("rgb_hr",)


@dataclass(frozen=True)
class OnnxModels:
    """Paths of the two exported graphs and the key they were cached under."""

    encode: Path
    reconstruct: Path
    key: str


class _Half(nn.Module):
    """One half of the network, ``encode`` or ``reconstruct``, as a module to export."""

    def __init__(self, net: VSRNet, half: str) -> None:
        super().__init__()
        self.net, self.half = net, half

    def forward(self, *inputs):
        return getattr(self.net, self.half)(*inputs)


def export_key(weights: Path) -> str:
    """Cache key: weights content, opset, exporter version."""
    parts = {"weights": file_sha256(weights), "opset": OPSET, "torch": torch.__version__.split("+")[0], "format": 1}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def export_onnx(net: VSRNet, folder: Path, *, height: int = 32, width: int = 48) -> tuple[Path, Path]:
    """Export ``net``'s two halves into ``folder`` (written atomically) and return their paths."""
    net = net.eval().float()
    rgb = torch.rand(1, 3 + net.config.cond_channels, height, width)
    feat, flow_feat = net.encode(rgb)
    t = net.config.window
    window_args = (rgb[:, :3], feat, flow_feat, feat.unsqueeze(1).repeat(1, t, 1, 1, 1), flow_feat.unsqueeze(1).repeat(1, t, 1, 1, 1))
    full = {0: "n", 2: "h", 3: "w"}
    quarter = {0: "n", 2: "hq", 3: "wq"}
    with writing(folder, folder=True) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Half(net, "encode"), (rgb,), str(tmp / "encode.onnx"), input_names=list(ENCODE_INPUTS), output_names=list(ENCODE_OUTPUTS),
            dynamic_axes={"rgb": full, "feat": full, "flow_feat": quarter}, opset_version=OPSET, dynamo=False,
        )
        torch.onnx.export(
            _Half(net, "reconstruct"), window_args, str(tmp / "reconstruct.onnx"), input_names=list(RECONSTRUCT_INPUTS),
            output_names=list(RECONSTRUCT_OUTPUTS),
            dynamic_axes={
                "rgb_centre": full, "feat_centre": full, "flow_feat_centre": quarter,
                "feats": {0: "n", 1: "t", 3: "h", 4: "w"}, "flow_feats": {0: "n", 1: "t", 3: "hq", 4: "wq"},
                "rgb_hr": {0: "n", 2: "h2", 3: "w2"},
            },
            opset_version=OPSET, dynamo=False,
        )
    return folder / "encode.onnx", folder / "reconstruct.onnx"


def cached_onnx(weights: Path | None = None, *, cache: Path | None = None) -> OnnxModels:
    """The ONNX export of ``weights``, exported on first use into the engines cache."""
    weights = Path(weights) if weights is not None else default_weights_path()
    key = export_key(weights)
    folder = (cache or engines_dir() / "cache") / f"onnx-{key}"
    enc, rec = folder / "encode.onnx", folder / "reconstruct.onnx"
    if not (enc.is_file() and rec.is_file()):
        export_onnx(load_network(weights), folder)
    return OnnxModels(enc, rec, key)


def graph_operators(path: Path) -> set[str]:
    """Operator types used in an ONNX file."""
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}
