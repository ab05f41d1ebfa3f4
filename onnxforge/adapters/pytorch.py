"""The PyTorch adapter: build, fit, predict, checkpoint and export with torch.onnx."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxforge.adapters.import_paths import import_object
from onnxforge.inputs import Features, take

if TYPE_CHECKING:
    from onnxforge.datasets import Splits
    from onnxforge.recipe import ExportSpec, ModelSpec, Recipe, TrainSpec


class PyTorchAdapter:
    """Framework adapter for torch.nn.Module models."""

    name = "pytorch"
    checkpoint_suffix = ".pt"
    baseline_name = "pytorch-eager"  # the module's forward, eager, under torch.inference_mode
    keeps_file_shapes = False

    def seed(self, seed: int) -> None:
        """Seed torch's generators (Python's and NumPy's are seeded by the caller)."""
        import torch

        torch.manual_seed(seed)

    def build(self, model_spec: ModelSpec, sample_shape: tuple[int, ...], num_classes: int) -> Any:
        """A fresh model of the recipe's architecture, in eval mode."""
        from onnxforge.adapters.torch_models import ARCHITECTURES

        if model_spec.architecture in ARCHITECTURES:
            builder = ARCHITECTURES[model_spec.architecture]
            return builder(tuple(sample_shape), num_classes, **model_spec.kwargs).eval()
        # Bring your own: `package.module:ClassOrFactory`, called with the recipe's kwargs.
        return import_object(model_spec.architecture)(**model_spec.kwargs).eval()

    def check_source(self, model_spec: ModelSpec) -> None:
        """The architecture's own check: an import path must resolve to something callable; a
        `transformers` one needs the extra and a config or a local safetensors folder."""
        from onnxforge.adapters import architecture_of

        architecture_of(model_spec).check_source(model_spec)

    def check_recipe(self, recipe: Recipe) -> None:
        """Every recipe section a PyTorch module can serve is checked by the schema."""

    def declared_opset(self, model_spec: ModelSpec) -> int | None:
        """Exported by the recipe's export.opset."""
        return None

    def fit(
        self,
        model: Any,
        splits: Splits,
        train_spec: TrainSpec,
        on_epoch: Callable[[int, dict[str, float]], None],
    ) -> None:
        """Adam on the first output, seeded shuffles: cross-entropy with loss and accuracy per
        epoch for class ids, mean squared error with loss and RMSE for regression targets."""
        import torch

        if train_spec.threads:
            torch.set_num_threads(train_spec.threads)
        generator = torch.Generator().manual_seed(train_spec.seed)
        labels = torch.from_numpy(splits.y_train)
        regression = splits.task == "regression"
        optimizer = torch.optim.Adam(model.parameters(), lr=train_spec.learning_rate)
        loss_fn = torch.nn.MSELoss() if regression else torch.nn.CrossEntropyLoss()
        for epoch in range(1, train_spec.epochs + 1):
            model.train()
            order = torch.randperm(len(labels), generator=generator).numpy()
            total_loss, correct = 0.0, 0
            for start in range(0, len(order), train_spec.batch_size):
                index = order[start : start + train_spec.batch_size]
                optimizer.zero_grad()
                logits = _outputs(_call(model, take(splits.x_train, index)))[0]
                target = labels[index]
                # a (N, 1) head against (N,) targets: compare value for value, never broadcast
                loss = loss_fn(logits.reshape(target.shape) if regression else logits, target)
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * len(index)
                if not regression:
                    correct += int((logits.argmax(1) == target).sum())
            model.eval()
            val_outputs = self.predict(model, splits.x_val)[0]
            on_epoch(epoch, _epoch_metrics(total_loss / len(order), correct, val_outputs, splits))

    def predict(self, model: Any, features: Features) -> list[np.ndarray]:
        """Every output, under inference mode."""
        import torch

        with torch.inference_mode():
            return [out.numpy() for out in _outputs(_call(model, features))]

    def save_checkpoint(self, model: Any, path: Path) -> None:
        """Save the state_dict (weights only, no pickled code)."""
        import torch

        torch.save(model.state_dict(), path)

    def load_checkpoint(self, model: Any, path: Path) -> None:
        """Load a state_dict with weights_only=True; a shape or key mismatch raises."""
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        model.eval()

    def export(self, model: Any, example: Features, export_spec: ExportSpec, out_path: Path) -> str:
        """torch.onnx.export with the preferred exporter, falling back to the other one."""
        import torch

        order = [export_spec.exporter or "dynamo"]
        if export_spec.fallback:
            order.append("torchscript" if order[0] == "dynamo" else "dynamo")
        errors = []
        for exporter in order:
            try:
                self._export_with(exporter, model, example, export_spec, out_path)
                return f"torch.onnx.export[{exporter}] torch {torch.__version__}"
            except Exception as error:  # noqa: BLE001 - every exporter error is a reason to fall back
                errors.append(f"{exporter}: {type(error).__name__}: {str(error).splitlines()[0]}")
        raise RuntimeError("; ".join(errors))

    @staticmethod
    def _export_with(
        exporter: str, model: Any, example: Features, spec: ExportSpec, out_path: Path
    ) -> None:
        import torch

        tensors = _tensors(example)
        names = list(tensors) if isinstance(tensors, dict) else ["input"]
        with torch.inference_mode():
            output_count = len(_outputs(_call(model, example)))
        outputs = ["logits"] if output_count == 1 else [f"output_{i}" for i in range(output_count)]
        # Named inputs go in as keyword arguments (forward's parameter names), one array as the
        # single positional argument.
        args, kwargs = ((), tensors) if isinstance(tensors, dict) else ((tensors,), {})
        # verbose=False: the dynamo exporter's "[torch.onnx] ..." progress lines are print()s
        common = {
            "input_names": names,
            "output_names": outputs,
            "opset_version": spec.opset,
            "verbose": False,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                # Dim.DYNAMIC lets torch.export derive bounds (e.g. sequence <= positions table);
                # export.py renames the symbolic dims to the recipe's names afterwards.
                shapes = {n: {d: torch.export.Dim.DYNAMIC for d in spec.axes_for(n)} for n in names}
                dynamic = shapes if kwargs else (shapes["input"],)
                options = {"dynamic_shapes": dynamic, "kwargs": kwargs, "external_data": False}
            else:
                dynamic_axes = {n: dict(spec.axes_for(n)) for n in names}
                batch = spec.axes_for(names[0]).get(0)
                dynamic_axes |= {o: {0: batch} for o in outputs if batch}
                args = args or tuple(kwargs.values())
                options = {"dynamic_axes": dynamic_axes}
            torch.onnx.export(
                model, args, str(out_path), dynamo=exporter == "dynamo", **common, **options
            )

    def set_threads(self, threads: int | None) -> None:
        """Intra-op threads for inference."""
        import torch

        if threads:
            torch.set_num_threads(threads)

    def latency_callable(self, model: Any, batch: Features) -> Callable[[], object]:
        """One eager forward pass under inference mode."""
        import torch

        tensors = _tensors(batch)

        def run() -> Any:
            with torch.inference_mode():
                return model(**tensors) if isinstance(tensors, dict) else model(tensors)

        return run


def _epoch_metrics(
    loss: float, correct: int, val_outputs: np.ndarray, splits: Splits
) -> dict[str, float]:
    """loss and accuracy / val_accuracy for class ids; loss, rmse and val_rmse for regression."""
    if splits.task == "regression":
        val_error = val_outputs.reshape(splits.y_val.shape) - splits.y_val
        return {
            "loss": loss,
            "rmse": float(np.sqrt(loss)),  # the mean squared error over the epoch's batches
            "val_rmse": float(np.sqrt((val_error.astype(np.float64) ** 2).mean())),
        }
    return {
        "loss": loss,
        "accuracy": correct / len(splits.y_train),
        "val_accuracy": float((val_outputs.argmax(1) == splits.y_val).mean()),
    }


def _tensors(features: Features) -> Any:
    import torch

    if isinstance(features, dict):
        return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in features.items()}
    return torch.from_numpy(np.ascontiguousarray(features))


def _call(model: Any, features: Features) -> Any:
    """Named inputs as keyword arguments, one array as the positional argument."""
    tensors = _tensors(features)
    return model(**tensors) if isinstance(tensors, dict) else model(tensors)


def _outputs(result: Any) -> list[Any]:
    """A model's outputs as a list: a tensor, a tuple/list, or a dict (in its order)."""
    if isinstance(result, dict):
        return list(result.values())
    if isinstance(result, (tuple, list)):
        return list(result)
    return [result]


ADAPTER = PyTorchAdapter()
