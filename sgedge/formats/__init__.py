"""File formats read and written on both sides of the house (exporters and runtime):
GGUF metadata, `.onnx_adapter` files, the ONNX base's sgedge metadata file name. Core:
imports nothing of sgedge but errors and file helpers."""

ONNX_BASE_META = "sgedge_base.json"  # an ONNX base's sgedge metadata (exporters.onnx_base writes it)
