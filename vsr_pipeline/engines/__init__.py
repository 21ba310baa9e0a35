"""Inference backends (one interface: :class:`~.base.Backend`) and ONNX/TensorRT export."""
