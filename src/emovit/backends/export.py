"""`emovit export`: write an ONNX model folder (fp32 or int8) and verify it against torch.

Recipe: export with an eager attention written the way onnxruntime's transformer optimizer
recognises it (``model_type="vit"``: scores divided by sqrt(head size), the pattern of
transformers 4; transformers 5's eager attention multiplies by the scale instead, which
the optimizer does not match, so nothing would be fused), then optionally
``quantize_dynamic`` (QInt8 weights, per channel, MatMul and the fused Attention ops). For a
``ViTForImageClassification`` the last layer is exported for the [CLS] token alone (same
logits, less work; see `emovit.backends._vit`). The folder holds ``model.onnx`` beside
``config.json``, ``preprocessor_config.json`` and the model's framing (``emovit.json``, when it
has one), so ``emovit predict --model DIR`` loads it like any other and crops faces the same
way; ``export_info.json`` records the verification figures. The folder appears only once the
check has passed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emovit.backends._vit import cls_only_last_layer
from emovit.backends.onnx_backend import EXPORT_INFO, ONNX_FILE, OnnxBackend
from emovit.errors import ExportError, OptionError, check_count, first_line

__all__ = ["ExportError", "ExportResult", "export_onnx"]

#: the attention implementation the export registers with transformers (see the module doc)
EXPORT_ATTENTION = "emovit_onnx_export"

_FUSABLE = ("vit", "deit")
FP32_TOLERANCE = 1e-3
INT8_TOLERANCE = 0.15  # max |Δprob| on the check images


@dataclass
class ExportResult:
    output: Path
    quantize: str | None
    max_abs_logit_diff: float
    max_abs_prob_diff: float
    top1_agreement: float
    check_images: int
    fused_attention: int = 0


def _fusable_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """transformers' eager attention (same numbers), traced as MatMul -> Div -> Softmax ->
    MatMul: the shape onnxruntime's optimizer fuses into one Attention op."""
    import math

    import torch

    # a python number, not a traced one: the divisor becomes a constant of the graph
    divisor = math.sqrt(int(query.shape[-1])) if scaling is None else 1.0 / float(scaling)
    scores = torch.matmul(query, key.transpose(2, 3)) / divisor
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(EXPORT_ATTENTION, _fusable_attention)


def _check_images(folder: Path, count: int, seed: int = 0) -> np.ndarray:
    """Pixel values for the verification: smooth random images through the model's own
    preprocessing (so they look like real inputs, not uniform noise)."""
    from emovit.preprocess import create_preprocessor

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        h, w = rng.integers(32, 160, 2)
        y, x = np.mgrid[0:h, 0:w]
        base = 127 + 90 * np.sin(x / rng.uniform(3, 20)) * np.cos(y / rng.uniform(3, 20))
        grey = np.clip(base + rng.normal(0, 20, (h, w)), 0, 255).astype(np.uint8)
        images.append(np.repeat(grey[..., None], 3, axis=2))
    pre = create_preprocessor(folder)
    return np.concatenate([pre([im]) for im in images])


@contextlib.contextmanager
def _without_preprocess_advice() -> Iterator[None]:
    """onnxruntime's quantizer logs, on the root logger, a warning that the model was not
    pre-processed (shape inference), on every export: dropped for the call (the export's own
    check against torch says whether the int8 model answers as it should)."""
    import logging

    def advice(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def export_onnx(
    model: str,
    output: str | Path,
    *,
    quantize: Literal["int8"] | None = None,
    opset: int = 17,
    check_images: int = 32,
    tolerance: float | None = None,
    optimize: bool = True,
) -> ExportResult:
    """Export `model` (Hub id, folder, registry name) to an ONNX model folder and verify it."""

    from emovit.models import load_torch_model, read_framing, read_model_config, resolve_model

    check_count(opset, "opset", 13)
    source = resolve_model(model)
    read_framing(source)  # a damaged emovit.json is refused here: copied, the export would not load
    out = Path(output)
    _check_output(out, source)
    created = not out.exists()
    try:  # a folder that cannot be made: said before the model loads
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionError(
            f"{out}: the model folder cannot be created ({exc.strerror or exc})", option="output"
        ) from None
    try:
        fusable = optimize and read_model_config(source).get("model_type", "") in _FUSABLE
        _register_attention()
        loaded = load_torch_model(
            source, attn_implementation=EXPORT_ATTENTION if fusable else "eager", float32=True
        )
        net = loaded.model
        assert net is not None  # load_torch_model always loads the weights
        return _export_into(
            out, source, loaded, net, model, quantize, opset, check_images, tolerance, optimize
        )
    except RuntimeError as exc:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        if "opset" in str(exc).lower():  # one the exporter does not know (the help gives the lower bound)
            raise OptionError(f"opset {opset}: {first_line(exc)}", option="opset") from None
        raise
    except BaseException:
        if created:  # a failed check leaves no folder that `--backend auto` would pick up
            shutil.rmtree(out, ignore_errors=True)
        raise


def _check_output(out: Path, source: Path) -> None:
    """Refuse an output that is a file, or a folder holding another model or a training run:
    the export's config and ONNX file would sit beside weights they do not belong to (the
    model's own folder, where its ONNX file goes beside its weights, is fine)."""
    if out.exists() and not out.is_dir():
        raise OptionError(f"{out}: a file, not a folder to write the model into", option="output")
    if not out.is_dir() or out.resolve() == source.resolve():
        return
    other = sorted(p.name for p in out.iterdir() if p.suffix == ".safetensors" or p.name in _RUN_FILES)
    if not other:  # an earlier export: this model's (again, or int8) or another's, silently replaced
        from emovit.models import export_matches_weights

        other = [name for name in ("model.onnx", "config.json") if (out / name).exists()]
        if other and export_matches_weights(out, weights=source):
            other = []
    if other:
        raise OptionError(
            f"{out} holds another model or training run ({', '.join(other)}): export into the "
            f"model's own folder ({source}) or a new one",
            option="output",
        )
    exported = any((out / name).exists() for name in ("model.onnx", "config.json", "export_info.json"))
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if files and not exported:  # a folder of photos or papers: the model's files went in among them
        shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
        raise OptionError(
            f"{out} is not empty ({shown}) and holds no model: export into a new folder or the "
            f"model's own ({source})",
            option="output",
        )


#: What a training run folder holds besides its model (`emovit.training`).
_RUN_FILES = frozenset({"training_config.json", "run_state.json", "checkpoint", "metrics.jsonl"})


def _export_into(
    out: Path,
    source: Path,
    loaded: Any,
    net: Any,
    model: str,
    quantize: Literal["int8"] | None,
    opset: int,
    check_images: int,
    tolerance: float | None,
    optimize: bool,
) -> ExportResult:
    """`export_onnx`'s work: everything is written and checked in a hidden folder inside `out`
    (the same file system), then moved in, ``model.onnx`` last."""
    import torch

    from emovit.models import FRAMING_FILE, read_model_config, weights_digest
    from emovit.postprocess import softmax

    fusable = optimize and read_model_config(source).get("model_type", "") in _FUSABLE
    with tempfile.TemporaryDirectory(dir=out, prefix=".export.") as staged:
        staging = Path(staged)
        pixels = _check_images(source, check_images)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.onnx"
            # The TorchScript exporter (deprecated in favour of torch.export) is used on purpose:
            # onnxruntime's transformer optimizer fuses attention in the graphs it writes.
            pruned = cls_only_last_layer(net) if optimize else None
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
                torch.onnx.export(
                    pruned or net,
                    (torch.from_numpy(pixels[:2]),),
                    str(raw),
                    input_names=["pixel_values"],
                    output_names=["logits"],
                    dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                    opset_version=opset,
                    dynamo=False,
                )
            current = raw
            fused_attention = 0
            if fusable:
                from onnxruntime.transformers import optimizer

                fused = optimizer.optimize_model(
                    str(raw),
                    model_type="vit",
                    num_heads=loaded.config.num_attention_heads,
                    hidden_size=loaded.config.hidden_size,
                )
                current = Path(tmp) / "fused.onnx"
                fused.save_model_to_file(str(current))
                fused_attention = sum(node.op_type == "Attention" for node in fused.model.graph.node)
            if quantize == "int8":
                import onnx
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantized = Path(tmp) / "int8.onnx"
                with _without_preprocess_advice():
                    quantize_dynamic(
                        str(current),
                        str(quantized),
                        weight_type=QuantType.QInt8,
                        per_channel=True,
                        op_types_to_quantize=["MatMul", "Attention"],
                        # fused attention ops live in onnxruntime's own domain, beyond shape inference
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                    )
                current = quantized
            elif quantize is not None:
                raise ExportError(f"unknown quantization {quantize!r}; use int8")
            shutil.copy(current, staging / ONNX_FILE)
        for name in ("config.json", "preprocessor_config.json"):
            shutil.copy(source / name, staging / name)
        if (source / FRAMING_FILE).is_file():  # the crop the model was trained on
            shutil.copy(source / FRAMING_FILE, staging / FRAMING_FILE)
        with torch.inference_mode():
            reference = net(pixel_values=torch.from_numpy(pixels)).logits.float().numpy()
        got = OnnxBackend(staging)(pixels)
        logit_diff = float(np.abs(got - reference).max())
        prob_diff = float(np.abs(softmax(got) - softmax(reference)).max())
        agreement = float((got.argmax(1) == reference.argmax(1)).mean())
        result = ExportResult(out, quantize, logit_diff, prob_diff, agreement, len(pixels), fused_attention)
        info: dict[str, Any] = {
            "source": str(model),
            "format": "onnx",
            "quantize": quantize,
            "opset": opset,
            "fused_attention_ops": fused_attention,
            "cls_only_last_layer": pruned is not None,
            "check_images": len(pixels),
            "max_abs_logit_diff": logit_diff,
            "max_abs_prob_diff": prob_diff,
            "top1_agreement": agreement,
            "weights_sha256": weights_digest(source),  # the weights this ONNX file answers as
        }
        (staging / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        fp32_tolerance = FP32_TOLERANCE if tolerance is None else tolerance
        int8_tolerance = INT8_TOLERANCE if tolerance is None else tolerance
        if quantize is None and logit_diff > fp32_tolerance:
            raise ExportError(
                f"onnxruntime differs from torch by {logit_diff:.2e} in the logits (tolerance "
                f"{fp32_tolerance:.0e}); the export is not trustworthy, so nothing was "
                f"written to {out}"
            )
        if quantize == "int8" and prob_diff > int8_tolerance:
            raise ExportError(
                f"the int8 model differs from torch by {prob_diff:.3g} in probability (tolerance "
                f"{int8_tolerance:g}); keep fp32 for this model (nothing was written to "
                f"{out})"
            )
        if not (source / FRAMING_FILE).is_file():  # a previous export's framing is not this model's
            (out / FRAMING_FILE).unlink(missing_ok=True)
        for path in sorted(staging.iterdir(), key=lambda p: p.name == ONNX_FILE):
            os.replace(path, out / path.name)
    return result
