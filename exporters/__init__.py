"""sgedge.exporters: Hugging Face base models and PEFT adapters to GGUF (and ONNX).

Heavy dependencies (torch, transformers, peft, gguf) are imported inside the modules
that need them; importing this package itself is cheap.
"""
