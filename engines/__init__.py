"""Inference backends for the distilled generator (torch, ONNX Runtime, TensorRT)."""
