"""onnxforge core: recipe schema, framework adapters, stage logic and records (no Prefect here)."""

__version__ = "0.1.0"
