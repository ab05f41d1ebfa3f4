"""fp32: the framework's ONNX export as it is (made by the export stage)."""

from onnxforge.variants import EXACT, VariantSettings, VariantSpec, register


class Fp32Settings(VariantSettings):
    """fp32 has no settings of its own: the `export` section shapes it."""


register(VariantSpec("fp32", None, Fp32Settings, None, EXACT, "any", "the framework's ONNX export"))
