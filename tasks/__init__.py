"""Prefect tasks: one module per stage, each a thin wrapper over a core function in onnxforge."""
