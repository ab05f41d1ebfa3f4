"""One spec per ONNX Runtime execution provider: its name, options, availability and variants."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProviderSpec:
    """An execution provider as the pipeline sees it."""

    name: str  # ONNX Runtime's name, as written in recipes
    short: str  # used in metric names: bench.<variant>.<short>.bs<N>.p50_ms
    default_options: dict[str, str] = field(default_factory=dict)
    runs_gpu_variants: bool = False  # fp16 variants only make sense where fp16 kernels exist
    install_hint: str = ""

    def unavailable_reason(self) -> str | None:
        """None when this onnxruntime build offers the provider, else why it cannot run here."""
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self.name in available:
            return None
        return (
            f"{self.name} is not in this onnxruntime {ort.__version__} build "
            f"(it offers {', '.join(available)}){'; ' + self.install_hint if self.install_hint else ''}"
        )

    def can_run(self, variant_device: str) -> bool:
        """Whether a variant meant for `variant_device` ('any' or 'gpu') belongs on this provider."""
        return variant_device == "any" or self.runs_gpu_variants


PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec("CPUExecutionProvider", "cpu"),
        ProviderSpec(
            "CUDAExecutionProvider",
            "cuda",
            {"cudnn_conv_algo_search": "HEURISTIC"},
            runs_gpu_variants=True,
            install_hint="install onnxruntime-gpu on a worker with an NVIDIA GPU",
        ),
        ProviderSpec(
            "TensorrtExecutionProvider",
            "tensorrt",
            {"trt_fp16_enable": "False"},
            runs_gpu_variants=True,
            install_hint="install onnxruntime-gpu with TensorRT libraries on an NVIDIA worker",
        ),
        ProviderSpec(
            "OpenVINOExecutionProvider",
            "openvino",
            {"device_type": "CPU"},
            install_hint="install onnxruntime-openvino",
        ),
        ProviderSpec(
            "DmlExecutionProvider",
            "directml",
            runs_gpu_variants=True,
            install_hint="install onnxruntime-directml on Windows",
        ),
        ProviderSpec(
            "CoreMLExecutionProvider",
            "coreml",
            runs_gpu_variants=True,
            install_hint="use the onnxruntime macOS wheel",
        ),
    )
}


def provider_names() -> list[str]:
    """Every provider name a recipe may ask for."""
    return list(PROVIDERS)
