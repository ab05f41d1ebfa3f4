"""The Keras 3 (TensorFlow backend) adapter: build, fit, predict, checkpoint, export with tf2onnx.

TensorFlow is imported only inside these methods, so a PyTorch recipe never loads it.
Export goes through `tf2onnx.convert.from_function` over a `tf.function` with an input signature:
`tf2onnx.convert.from_keras` fails on Keras 3 Sequential models (tf2onnx 1.17, Keras 3.15:
`KeyError: 'keras_tensor_N'`); this path converts
Sequential and Functional models alike.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from onnxforge.datasets import Splits
    from onnxforge.inputs import Features
    from onnxforge.recipe import ExportSpec, ModelSpec, Recipe, TrainSpec

PREDICT_BATCH = 256


def _tf() -> Any:
    if "tensorflow" not in sys.modules:
        from onnxforge.chatter import native_notes_to_debug, verbose

        if not verbose():
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ log: errors only
        # TensorFlow logs its oneDNN notice while it loads, before it reads TF_CPP_MIN_LOG_LEVEL.
        with native_notes_to_debug():
            import tensorflow  # noqa: F401
    import tensorflow as tf

    return tf


def _saved_model(folder: Path, sample_shape: tuple[int, ...]) -> Any:
    """A TensorFlow SavedModel's serving signature wrapped as a Keras model (inference only)."""
    import keras

    layer = keras.layers.TFSMLayer(str(folder), call_endpoint="serving_default")
    inputs = keras.Input(sample_shape, name="input")
    outputs = layer(inputs)
    if isinstance(outputs, dict):  # serving signatures return named outputs; take the first
        outputs = next(iter(outputs.values()))
    return keras.Model(inputs, outputs, name=folder.name)


class KerasAdapter:
    """Framework adapter for Keras 3 models on TensorFlow."""

    name = "keras"
    checkpoint_suffix = ".weights.h5"  # Keras 3 insists on this suffix for weights files
    baseline_name = (
        "keras-tf-function"  # the model called in a tf.function (graph mode, like predict)
    )
    keeps_file_shapes = False

    def seed(self, seed: int) -> None:
        """Seed Python, NumPy and TensorFlow."""
        _tf()
        import keras

        keras.utils.set_random_seed(seed)

    def check_source(self, model_spec: ModelSpec) -> None:
        """Named architectures need no check; a .keras file is checked when it is loaded."""

    def check_recipe(self, recipe: Recipe) -> None:
        """Every recipe section a Keras model can serve is checked by the schema."""

    def declared_opset(self, model_spec: ModelSpec) -> int | None:
        """Exported by the recipe's export.opset (a brought .keras file too)."""
        return None

    def build(self, model_spec: ModelSpec, sample_shape: tuple[int, ...], num_classes: int) -> Any:
        """A fresh model of the recipe's architecture."""
        _tf()
        if model_spec.file is not None:  # bring your own .keras file or SavedModel folder
            import keras

            if Path(model_spec.file).is_dir():
                return _saved_model(Path(model_spec.file), sample_shape)
            # safe_mode refuses Lambda layers' pickled bytecode: a model file is data, not code
            try:
                return keras.models.load_model(str(model_spec.file), compile=False, safe_mode=True)
            except ValueError as error:
                if "`Lambda` layer" not in str(error):
                    raise
                raise ValueError(
                    "it has a Lambda layer, whose Python code onnxforge does not run (model "
                    "files load in Keras safe mode: a model file is data, not code); save the "
                    "model without Lambda layers"
                ) from None
        from onnxforge.adapters.keras_models import ARCHITECTURES

        return ARCHITECTURES[model_spec.architecture](
            tuple(sample_shape), num_classes, **model_spec.kwargs
        )

    def fit(
        self,
        model: Any,
        splits: Splits,
        train_spec: TrainSpec,
        on_epoch: Callable[[int, dict[str, float]], None],
    ) -> None:
        """Adam + sparse cross-entropy on logits; reports loss and accuracy per epoch."""
        tf = _tf()
        import keras

        if train_spec.threads:
            tf.config.threading.set_intra_op_parallelism_threads(train_spec.threads)
        model.compile(
            optimizer=keras.optimizers.Adam(train_spec.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        report = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: on_epoch(
                epoch + 1,
                {
                    "loss": float(logs["loss"]),
                    "accuracy": float(logs["accuracy"]),
                    "val_accuracy": float(logs["val_accuracy"]),
                },
            )
        )
        model.fit(
            splits.x_train,
            splits.y_train,
            batch_size=train_spec.batch_size,
            epochs=train_spec.epochs,
            validation_data=(splits.x_val, splits.y_val),
            shuffle=True,
            verbose=0,
            callbacks=[report],
        )

    def predict(self, model: Any, features: Features) -> list[np.ndarray]:
        """Every output, in inference mode."""
        _tf()
        outputs = model.predict(features, batch_size=PREDICT_BATCH, verbose=0)
        if isinstance(outputs, dict):
            return [np.asarray(value) for value in outputs.values()]
        if isinstance(outputs, (list, tuple)):
            return [np.asarray(value) for value in outputs]
        return [np.asarray(outputs)]

    def save_checkpoint(self, model: Any, path: Path) -> None:
        """Save the weights (HDF5, no code)."""
        model.save_weights(str(path))

    def load_checkpoint(self, model: Any, path: Path) -> None:
        """Load weights into `model`; a layer or shape mismatch raises."""
        model.load_weights(str(path))

    def export(self, model: Any, example: Features, export_spec: ExportSpec, out_path: Path) -> str:
        """tf2onnx.convert.from_function over a tf.function with the declared dynamic axes.

        Named inputs (a dict) become one signature entry each, passed to the model as a dict.
        """
        tf = _tf()
        import keras
        import onnx
        import tf2onnx

        arrays = example if isinstance(example, dict) else {"input": example}
        signature = tuple(
            tf.TensorSpec(
                [
                    None if dim in export_spec.axes_for(name) else size
                    for dim, size in enumerate(array.shape)
                ],
                tf.as_dtype(array.dtype),
                name=name,
            )
            for name, array in arrays.items()
        )
        names = list(arrays)

        @tf.function(input_signature=signature)
        def serve(*tensors: Any) -> dict[str, Any]:
            inputs = (
                dict(zip(names, tensors, strict=True)) if isinstance(example, dict) else tensors[0]
            )
            return {"logits": model(inputs, training=False)}

        proto, _ = tf2onnx.convert.from_function(
            serve, input_signature=signature, opset=export_spec.opset
        )
        onnx.save(proto, str(out_path))
        return (
            f"tf2onnx.convert.from_function tf2onnx {tf2onnx.__version__} "
            f"(tensorflow {tf.__version__}, keras {keras.__version__})"
        )

    def set_threads(self, threads: int | None) -> None:
        """Intra-op threads for inference; must run before TensorFlow initialises its runtime."""
        if threads:
            tf = _tf()
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)

    def latency_callable(self, model: Any, batch: Features) -> Callable[[], object]:
        """One graph-mode forward pass (what Keras's predict runs)."""
        tf = _tf()
        tensor = (
            {k: tf.constant(v) for k, v in batch.items()}
            if isinstance(batch, dict)
            else tf.constant(batch)
        )
        forward = tf.function(lambda x: model(x, training=False))
        return lambda: forward(tensor).numpy()


ADAPTER = KerasAdapter()
