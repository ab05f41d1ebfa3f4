"""Prefect flows: orchestration only, numeric logic lives in onnxforge."""
