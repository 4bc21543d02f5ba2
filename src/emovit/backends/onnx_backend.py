"""ONNX Runtime backend (fp32 or int8 model files written by `emovit export`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from emovit.errors import DependencyError, ModelLoadError

__all__ = ["EXPORT_INFO", "ONNX_FILE", "OnnxBackend", "physical_cores"]

ONNX_FILE = "model.onnx"
#: What `emovit export` writes beside it: its check's figures and the weights' digest.
EXPORT_INFO = "export_info.json"


def physical_cores() -> int:
    """Physical CPU cores available to this process (logical ones when unknown)."""
    try:
        import psutil

        count = psutil.cpu_count(logical=False)
        if count:
            return int(count)
    except ImportError:
        pass
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class OnnxBackend:
    """Runs ``model.onnx`` of a model folder with onnxruntime on the CPU."""

    name = "onnx"

    def __init__(self, folder: str | os.PathLike[str], *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise DependencyError("onnxruntime", "onnx", "the onnx backend") from None
        path = Path(folder) / ONNX_FILE
        if not path.is_file():
            raise ModelLoadError(
                f"{folder}: no {ONNX_FILE}; create one with `emovit export MODEL --format onnx`"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or physical_cores()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # emovit runs the model beside its decoding / detection threads (prefetch, video): idle
        # onnxruntime workers that spin take those threads' cores (video on 2 cores: 27 -> 41 frames/s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelLoadError(f"{path}: onnxruntime cannot load it ({exc})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        (logits,) = self.session.run(
            None, {self.input_name: np.ascontiguousarray(pixel_values, dtype=np.float32)}
        )
        return np.asarray(logits, dtype=np.float32)
