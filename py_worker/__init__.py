"""hf_bridge's Python side: HuggingFace datasets served as Arrow batches over gRPC."""

__version__ = "0.1.0"
