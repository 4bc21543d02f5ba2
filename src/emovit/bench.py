"""`emovit bench`: emovit's backends side by side with the plain transformers pipeline.

For one model, in one run: torch fp32, onnxruntime fp32 and onnxruntime int8 (exported on
the fly) against ``transformers.pipeline("image-classification")`` on the same images,
interleaved (A B C D, A B C D, …) so that machine noise hits all alike; the median of the
repetitions is reported, as images/s batched and as single-image latency p50/p95 (and, when
asked, faces/s on decoded face crops in memory at a large batch). Then the
answers of each backend are compared with torch fp32 (top-1 agreement, max |Δprob|), and
accuracy when the images are labelled.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BENCH_BACKENDS", "BenchConfig", "at_least_one", "machine_info", "run_bench"]

#: What `run_bench` times: torch (fp32, or bf16 where native), and ONNX exports of the model.
BENCH_BACKENDS = ("torch", "torch-bf16", "onnx-fp32", "onnx-int8")

#: The CPU flags that decide inference speed (AVX2-only EPYCs vs Xeons with AVX-512/AMX).
SPEED_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def at_least_one(text: str) -> int:
    """An ``argparse`` type for the benchmarks' counts (repeats, images, faces, rounds): a whole
    number of at least 1 (0 repeats ended in a statistics error or a division by zero)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def machine_info() -> dict[str, Any]:
    """The machine a benchmark ran on: CPU model name, the speed-relevant flags it has, the
    cores this process may use, Python and torch versions (every benchmark result records it)."""
    import os
    import platform

    info: dict[str, Any] = {
        "model": platform.processor() or platform.machine(),
        "flags": [],
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["model"] = value.strip()
        elif key.strip() == "flags":
            present = set(value.split())
            info["flags"] = [flag for flag in SPEED_FLAGS if flag in present]
            break
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


@dataclass
class BenchConfig:
    model: str
    images: list[str]
    labels: list[str] | None = None
    agreement_images: list[str] = field(default_factory=list)
    agreement_labels: list[str] | None = None
    batch_size: int = 8
    repeats: int = 5
    latency_images: int = 8
    backends: Sequence[str] = ("torch", "onnx-fp32", "onnx-int8")
    pipeline: bool = True
    threads: int | None = None
    #: > 0: also time classification of decoded face crops held in memory (faces/s at this
    #: batch size), the classifier's share of a detector-fed pipeline
    crops_batch_size: int = 0
    crops: int = 2048


def _pipeline_runner(
    folder: Path, batch_size: int
) -> tuple[Callable[[list[str]], Any], Callable[[str], Any]]:
    from transformers import pipeline

    from emovit.models import no_weight_loading_bar

    with no_weight_loading_bar():  # the baseline's loading bar broke into emovit's output
        classifier = pipeline("image-classification", model=str(folder), device="cpu")
    return (lambda paths: classifier(paths, batch_size=batch_size, top_k=1)), (
        lambda p: classifier(p, top_k=1)
    )


def _emovit_runner(rec: Any, batch_size: int) -> tuple[Callable[[list[str]], Any], Callable[[str], Any]]:
    return (lambda paths: rec.predict(paths, batch_size=batch_size)), (
        lambda p: rec.predict([p], batch_size=1)
    )


def time_face_crops(
    recognizers: dict[str, Any],
    crops: list[np.ndarray],
    batch_size: int,
    repeats: int,
    *,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, list[float]]:
    """Faces/s of each recognizer classifying decoded `crops` in batches (no detection): a
    warm-up at the timed batch size, then `repeats` rounds with the recognizers interleaved, so
    that a slower moment of the machine falls on all of them alike."""
    for rec in recognizers.values():
        rec.classify_arrays(crops[:batch_size])
    runs: dict[str, list[float]] = {name: [] for name in recognizers}
    for rep in range(repeats):
        progress(f"face crops, repetition {rep + 1}/{repeats}")
        for name, rec in recognizers.items():
            start = time.perf_counter()
            for i in range(0, len(crops), batch_size):
                rec.classify_arrays(crops[i : i + batch_size])
            runs[name].append(len(crops) / (time.perf_counter() - start))
    return runs


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-ready report."""
    from emovit.backends import physical_cores
    from emovit.backends.export import export_onnx
    from emovit.models import resolve_model
    from emovit.predictor import EmotionRecognizer

    folder = resolve_model(cfg.model)
    threads = cfg.threads or physical_cores()
    import torch

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        recognizers: dict[str, Any] = {}
        for name in cfg.backends:
            if name == "torch":
                recognizers[name] = EmotionRecognizer.from_pretrained(
                    folder, detector="none", backend="torch"
                )
            elif name == "torch-bf16":  # opt-in: a GPU or a CPU with native bf16, else a clear error
                recognizers[name] = EmotionRecognizer.from_pretrained(
                    folder, detector="none", backend="torch", precision="bf16"
                )
            elif name in ("onnx-fp32", "onnx-int8"):
                progress(f"exporting {name}")
                out = Path(tmp) / name
                export_onnx(str(folder), out, quantize="int8" if name == "onnx-int8" else None)
                recognizers[name] = EmotionRecognizer.from_pretrained(out, detector="none", backend="onnx")
            else:
                raise ValueError(f"unknown backend {name!r}")
        runners = {name: _emovit_runner(rec, cfg.batch_size) for name, rec in recognizers.items()}
        if cfg.pipeline:
            runners["hf-pipeline"] = _pipeline_runner(folder, cfg.batch_size)
        for batch_run, single_run in runners.values():  # warm-up
            batch_run(cfg.images[: cfg.batch_size])
            single_run(cfg.images[0])

        throughput: dict[str, list[float]] = {name: [] for name in runners}
        latency: dict[str, list[float]] = {name: [] for name in runners}
        for rep in range(cfg.repeats):
            progress(f"repetition {rep + 1}/{cfg.repeats}")
            for name, (batch_run, single_run) in runners.items():
                start = time.perf_counter()
                batch_run(cfg.images)
                throughput[name].append(len(cfg.images) / (time.perf_counter() - start))
                for path in cfg.images[: cfg.latency_images]:
                    start = time.perf_counter()
                    single_run(path)
                    latency[name].append((time.perf_counter() - start) * 1e3)

        faces_per_s: dict[str, list[float]] = {name: [] for name in recognizers}
        if cfg.crops_batch_size > 0:
            from emovit.imageio import load_image

            pool = cfg.agreement_images or cfg.images
            crops = [load_image(pool[i % len(pool)]) for i in range(cfg.crops)]
            faces_per_s = time_face_crops(
                recognizers, crops, cfg.crops_batch_size, cfg.repeats, progress=progress
            )

        agreement: dict[str, Any] = {}
        if cfg.agreement_images:
            progress(f"agreement on {len(cfg.agreement_images)} images")
            probs = {}
            for name, rec in recognizers.items():
                results = rec.predict(cfg.agreement_images, batch_size=32)
                probs[name] = np.array([[r.probs[k] for k in rec.labels] for r in results])
            reference = probs.get("torch")
            labels = list(next(iter(recognizers.values())).labels)
            for name, p in probs.items():
                row: dict[str, Any] = {"images": len(p)}
                if reference is not None:
                    row["top1_agreement_vs_torch"] = float((p.argmax(1) == reference.argmax(1)).mean())
                    row["max_abs_prob_diff_vs_torch"] = float(np.abs(p - reference).max())
                if cfg.agreement_labels:
                    truth = np.array(
                        [labels.index(lab) if lab in labels else -1 for lab in cfg.agreement_labels]
                    )
                    row["accuracy"] = float((p.argmax(1) == truth).mean())
                agreement[name] = row
            if reference is not None and cfg.agreement_labels and "torch" in agreement:
                for row in agreement.values():
                    row["accuracy_change_vs_torch"] = row["accuracy"] - agreement["torch"]["accuracy"]

    base_tp = statistics.median(throughput["hf-pipeline"]) if cfg.pipeline else None
    base_lat = statistics.median(latency["hf-pipeline"]) if cfg.pipeline else None
    rows = {}
    for name in runners:
        tp = statistics.median(throughput[name])
        lat = latency[name]
        rows[name] = {
            "images_per_s": tp,
            "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p95": float(np.percentile(lat, 95)),
            "throughput_vs_pipeline": tp / base_tp if base_tp else None,
            "latency_p50_vs_pipeline": float(np.percentile(lat, 50)) / base_lat if base_lat else None,
            "throughput_runs": throughput[name],
        }
        if faces_per_s.get(name):
            rows[name]["faces_per_s"] = statistics.median(faces_per_s[name])
            rows[name]["faces_per_s_runs"] = faces_per_s[name]
    return {
        "model": cfg.model,
        "images": len(cfg.images),
        "batch_size": cfg.batch_size,
        "crops": cfg.crops if cfg.crops_batch_size > 0 else 0,
        "crops_batch_size": cfg.crops_batch_size,
        "repeats": cfg.repeats,
        "threads": threads,
        "backends": rows,
        "agreement": agreement,
        "machine": machine_info(),
    }


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of a `run_bench` report."""
    machine = report.get("machine") or {}
    cpu = (
        [f"cpu {machine.get('model', '?')} ({', '.join(machine.get('flags', [])) or 'no AVX flags'}), "
         f"{machine.get('cores', '?')} cores"]
        if machine
        else []
    )  # fmt: skip
    lines = [
        f"model {report['model']}: {report['images']} images, batch {report['batch_size']}, "
        f"median of {report['repeats']}, {report['threads']} threads",
        *cpu,
        f"{'backend':12s} {'img/s':>8s} {'x pipe':>7s} {'p50 ms':>8s} {'p95 ms':>8s} {'p50/pipe':>9s} "
        f"{'agree':>6s} {'max|dp|':>8s} {'acc':>6s} {'faces/s':>8s}",
    ]
    for name, row in report["backends"].items():
        agree = report["agreement"].get(name, {})

        def fmt(value: Any, spec: str) -> str:
            # a missing figure's "-" takes its column's width (the columns after it slid left)
            return format(value, spec) if isinstance(value, float) else format("-", f">{spec.split('.')[0]}")

        cells = [
            f"{name:12s}",
            f"{row['images_per_s']:8.2f}",
            fmt(row["throughput_vs_pipeline"], "7.2f"),
            f"{row['latency_ms_p50']:8.1f}",
            f"{row['latency_ms_p95']:8.1f}",
            fmt(row["latency_p50_vs_pipeline"], "9.2f"),
            fmt(agree.get("top1_agreement_vs_torch"), "6.3f"),
            fmt(agree.get("max_abs_prob_diff_vs_torch"), "8.4f"),
            fmt(agree.get("accuracy"), "6.3f"),
            fmt(row.get("faces_per_s"), "8.0f"),
        ]
        lines.append(" ".join(cells))
    return "\n".join(lines)
