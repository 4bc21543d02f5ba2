"""The Ray engine against the local engine, side by side, and the per-core stage costs behind
the sizing model of docs/scaling.md.

1. ``emovit predict`` on the 3,589 FER2013 test images (the embedded default model,
   ``--detector none``) as a user runs it: the local engine (JSONL), then ``--engine ray`` with
   1 and 2 workers (Parquet; a local Ray started and stopped by the command). Each run's wall
   time, rows/s, and for Ray where the time goes: startup (Python, ``ray.init``, the driver's
   model check, shutdown), actor start and scheduling, and the actors' busy time (the steady
   rate). The rows of both engines are compared (labels, max |Δprob|).
2. Per-core costs of each stage, single-threaded, in CPU time (what an idle core would take;
   the wall time beside it includes waiting for the shared cores): decode (a 48x48 FER2013 JPEG,
   a 1920x1080 JPEG), YuNet detection on 1080p, preprocessing and the model per face (default
   MobileViT on onnxruntime, the reference ViT-B/16-224 on torch), Parquet bytes per row, and
   the memory of one actor (peak RSS of a process that loads the model and runs a batch).

The cores may be shared with training runs and tests: the JSON records the load average
around each run and says whether the cores were otherwise idle.

Usage: python benchmarks/bench_ray.py [--repeats 2] [--out benchmarks/results/bench_ray.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from emovit.bench import at_least_one, machine_info

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVIT_SHARED", REPO.parent / "shared"))
TEST = SHARED / "data" / "fer2013" / "test"
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"
LINE = re.compile(
    r"ray: ([\d,]+) rows \(([\d,]+) errors\) from ([\d,]+) inputs in ([\d.]+) s: "
    r"([\d,.]+) rows/s on (\d+) workers"
)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def emovit(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    cmd = [sys.executable, "-m", "emovit.cli", "predict", str(TEST), "--detector", "none", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc


def local_run(tmp: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    before = load()
    wall, _ = emovit("--format", "jsonl", "--quiet", "-o", str(tmp / "local.jsonl"))
    rows = {r["source"]: r for r in map(json.loads, (tmp / "local.jsonl").read_text().splitlines())}
    run = {"engine": "local", "threads": os.cpu_count(), "rows": len(rows), "wall_s": round(wall, 2)}
    run |= {"rows_per_s": round(len(rows) / wall, 1), "load_avg_before": before, "load_avg_after": load()}
    return run, rows


def ray_run(tmp: Path, workers: int, repeat: int, local: dict[str, dict[str, Any]]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    out = tmp / f"ray{workers}-{repeat}"
    before = load()
    wall, proc = emovit("--engine", "ray", "--workers", str(workers), "-o", str(out))
    found = LINE.search(proc.stderr)
    if not found:
        sys.exit(f"no final line from the ray engine:\n{proc.stderr[-3000:]}")
    rows, errors, _, job_s, _, used = found.groups()
    rows_n, job = int(rows.replace(",", "")), float(job_s)
    entries = [json.loads(p.read_text()) for p in (out / "_manifest").glob("part-*.json")]  # not _settings
    busy = sum(entry["seconds"] for entry in entries)
    table = pq.read_table(out)
    worst, same = 0.0, 0
    for row in table.to_pylist():
        mine = local[row["source"]]
        same += row["label"] == mine["label"]
        if row["probs"]:
            worst = max(worst, max(abs(p - mine["probs"][k]) for k, p in row["probs"]))
    parquet_bytes = sum(p.stat().st_size for p in out.glob("part-*.parquet"))
    shutil.rmtree(out)
    steady = rows_n / (busy / workers) if busy else 0.0
    return {
        "engine": "ray",
        "workers": int(used),
        "threads_per_worker": 1,
        "rows": rows_n,
        "errors": int(errors.replace(",", "")),
        "wall_s": round(wall, 2),
        "rows_per_s": round(rows_n / wall, 1),
        "job_s": job,
        "startup_and_shutdown_s": round(wall - job, 2),
        "actor_busy_s": round(busy, 2),
        "actor_start_and_scheduling_s": round(job - busy / workers, 2),
        "steady_rows_per_s": round(steady, 1),
        "labels_equal_to_local": same == rows_n == len(local),
        "max_abs_prob_diff_vs_local": worst,
        "parquet_bytes_per_row": round(parquet_bytes / rows_n, 1),
        "load_avg_before": before,
        "load_avg_after": load(),
    }


def _per_item(fn: Any, items: list[Any]) -> dict[str, float]:
    """CPU and wall milliseconds per item of `fn` over `items` (single-threaded: the CPU time is
    what one idle core would take; the wall time includes waiting for the shared cores)."""
    cpu, wall = time.process_time(), time.perf_counter()
    for item in items:
        fn(item)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_ms": round(cpu * 1e3 / len(items), 3), "wall_ms": round(wall * 1e3 / len(items), 3)}


def stage_costs(tmp: Path) -> dict[str, Any]:
    """Milliseconds per stage on one thread, through the stages the predictor composes (its
    decoder, its detector, the model's preprocessor and backend)."""
    import cv2
    from PIL import Image

    from emovit import EmotionRecognizer
    from emovit.faces import FaceOptions
    from emovit.imageio import load_image

    cv2.setNumThreads(1)
    fer = [str(p) for p in sorted(TEST.glob("*/*.jpg"))[::7][:512]]
    big = Image.open(REPO / "examples" / "astronaut.jpg").convert("RGB").resize((1920, 1080))
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=90)
    photo = buffer.getvalue()
    crops = [load_image(path) for path in fer[:256]]
    out: dict[str, Any] = {
        "decode_fer2013_48px_jpeg": _per_item(load_image, fer),
        "decode_1920x1080_jpeg": {"jpeg_bytes": len(photo), **_per_item(load_image, [photo] * 24)},
    }
    single = {"threads": 1, "prefetch": 0, "decode_threads": 1}

    def model_stage(rec: EmotionRecognizer, batch: int, batches: int) -> dict[str, Any]:
        groups = [crops[i * batch : (i + 1) * batch] for i in range(batches)]
        pixels = [rec.model.preprocessor(group) for group in groups]
        rec.probabilities(pixels[0])  # warm up
        pre = _per_item(rec.model.preprocessor, groups)
        run = _per_item(rec.probabilities, pixels)
        return {
            "backend": type(rec.backend).__name__,
            "batch": batch,
            "preprocess_ms_per_face": {k: round(v / batch, 3) for k, v in pre.items()},
            "model_ms_per_face": {k: round(v / batch, 3) for k, v in run.items()},
        }

    rec = EmotionRecognizer.from_pretrained("default", detector="none", **single)
    out["default_model_mobilevit_64px"] = model_stage(rec, 16, 16)
    if YUNET.exists():
        faces = FaceOptions(detector="yunet", detector_model=YUNET)
        rec = EmotionRecognizer.from_pretrained("default", faces=faces, **single)
        image = load_image(photo)
        rec.detector.detect(image)
        found = len(rec.detector.detect(image))
        out["detect_yunet_1080p"] = {"faces": found, **_per_item(rec.detector.detect, [image] * 24)}
    fixture = SHARED / "fixtures" / "dima806-facial-emotions"
    if (fixture / "config.json").exists():
        import torch
        from transformers import ViTConfig, ViTForImageClassification

        reference = tmp / "reference"
        torch.manual_seed(0)
        ViTForImageClassification(ViTConfig.from_pretrained(fixture)).save_pretrained(reference)
        shutil.copy(fixture / "preprocessor_config.json", reference)
        rec = EmotionRecognizer.from_pretrained(reference, detector="none", **single)
        out["reference_vit_b16_224"] = model_stage(rec, 4, 6)
        out["reference_dir"] = str(reference)
    return out


def actor_memory(model: str) -> float:
    """Peak resident memory (MiB, VmHWM) of a process that loads `model` (1 thread) and
    classifies a batch of 64: what one actor holds."""
    code = (
        "import sys, glob; from emovit import EmotionRecognizer;"
        "rec = EmotionRecognizer.from_pretrained(sys.argv[1], detector='none', threads=1);"
        f"rec.predict(sorted(glob.glob({str(TEST)!r} + '/*/*.jpg'))[:64]);"
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
    )
    proc = subprocess.run([sys.executable, "-c", code, model], capture_output=True, text=True, check=True)
    return round(int(proc.stdout.split()[-1]) / 1024, 1)


def local_in_process() -> dict[str, Any]:
    """The local engine's rate once the model is loaded (no process start, no model load)."""
    from emovit import EmotionRecognizer

    rec = EmotionRecognizer.from_pretrained("default", detector="none")
    paths = [str(p) for p in sorted(TEST.glob("*/*.jpg"))]
    before, start = load(), time.perf_counter()
    rows = sum(1 for _ in rec.stream(paths))
    wall = time.perf_counter() - start
    return {"engine": "local (in-process, model loaded)", "threads": os.cpu_count(), "rows": rows,
            "wall_s": round(wall, 2), "rows_per_s": round(rows / wall, 1), "load_avg_before": before,
            "load_avg_after": load()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeats", type=at_least_one, default=2, help="runs of each engine (the best is compared)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_ray.json")
    args = parser.parse_args()
    if not TEST.is_dir():
        sys.exit(f"skipped: {TEST} is missing")
    import ray

    report: dict[str, Any] = {
        "benchmark": "bench_ray",
        "command": "python benchmarks/bench_ray.py " + " ".join(sys.argv[1:]),
        "images": sum(1 for _ in TEST.glob("*/*.jpg")),
        "model": "default (the embedded MobileViT, 64x64 input, onnxruntime on CPU); --detector none, "
        "--batch-size 16",
        "machine": machine_info() | {"ray": ray.__version__, "niceness": os.nice(0)},
        "measured": time.strftime("%Y-%m-%d"),
    }
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        local_rows: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeats):
            run, local_rows = local_run(tmp)
            runs.append(run)
            print(run, flush=True)
        runs.append(local_in_process())
        print(runs[-1], flush=True)
        for workers in (1, 2):
            for repeat in range(args.repeats):
                runs.append(ray_run(tmp, workers, repeat, local_rows))
                print(runs[-1], flush=True)
        stages = stage_costs(tmp)
        reference = stages.pop("reference_dir", None)
        memory = {"default": actor_memory("default")}
        if reference:
            memory["reference_vit_b16_224"] = actor_memory(reference)
    best = {}
    for run in runs:
        key = {"local": "local", "ray": f"ray_{run.get('workers')}_workers"}.get(
            run["engine"], "local_in_process"
        )
        if key not in best or run["wall_s"] < best[key]["wall_s"]:
            best[key] = run
    local = best["local"]["rows_per_s"]
    report["runs"] = runs
    loads = [run[key] for run in runs for key in ("load_avg_before", "load_avg_after")]
    cores = report["machine"]["cores"]
    report["contention"] = (
        f"load average {min(loads):.2f} to {max(loads):.2f} around the runs on {cores} cores "
        "(load_avg_* per run; the benchmark itself keeps up to two cores busy): "
        + ("other work shared the cores, so the figures are lower than on an idle machine"
           if max(loads) > cores + 1 else "the cores were otherwise idle")
    )  # fmt: skip
    report["side_by_side_rows_per_s"] = {key: run["rows_per_s"] for key, run in best.items()}
    report["ratio_to_local"] = {key: round(run["rows_per_s"] / local, 3) for key, run in best.items()}
    report["steady_rows_per_s"] = {  # once started: model loaded, actors up
        key: run.get("steady_rows_per_s", run["rows_per_s"]) for key, run in best.items() if key != "local"
    }
    report["ray_overhead_s"] = {
        key: {
            "startup_and_shutdown": run["startup_and_shutdown_s"],
            "actor_start_and_scheduling": run["actor_start_and_scheduling_s"],
            "total": round(run["wall_s"] - run["actor_busy_s"] / run["workers"], 2),
        }
        for key, run in best.items()
        if run["engine"] == "ray"
    }
    report["stages_single_thread"] = stages
    report["actor_peak_rss_mib"] = memory
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("side_by_side_rows_per_s", "ratio_to_local", "ray_overhead_s")}))


if __name__ == "__main__":
    main()
