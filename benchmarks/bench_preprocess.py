"""Preprocessing speed: emovit's `Preprocessor` against transformers' image processor, side by side.

Both turn the same decoded face crops into the model input of the default model (64x64,
bilinear, rescale, normalize) and of the reference ViT-B/16 (224x224); the outputs are checked
equal first (max |difference|: float32 rounding, about 1e-7; the tests hold it to 1e-5), then
each is timed in batches of 256, alternating, ``--repeats`` times; the report gives medians and
the ratio. Workloads: the
FER2013 test faces (48x48 grey, as `predict --detector none` gets them) and the same faces with
random colour (the RGB path).

Usage: python benchmarks/bench_preprocess.py [--faces 2048] [--repeats 5]
Writes benchmarks/results/bench_preprocess.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from emovit.bench import at_least_one, machine_info
from emovit.imageio import load_image
from emovit.preprocess import Preprocessor

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVIT_SHARED", REPO.parent / "shared"))
CONFIGS = {
    "default (64 px)": REPO / "src" / "emovit" / "models" / "default" / "preprocessor_config.json",
    "reference ViT-B/16 (224 px)": SHARED
    / "fixtures"
    / "dima806-facial-emotions"
    / "preprocessor_config.json",
}
BATCH = 256


def _per_second(run: object, images: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for i in range(0, len(images), BATCH):
        run(images[i : i + BATCH])  # type: ignore[operator]
    return len(images) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=at_least_one, default=2048)
    parser.add_argument("--repeats", type=at_least_one, default=5)
    parser.add_argument(
        "-o", "--output", type=Path, default=REPO / "benchmarks" / "results" / "bench_preprocess.json"
    )
    args = parser.parse_args(argv)
    test = SHARED / "data" / "fer2013" / "test"
    if not test.is_dir():
        print(f"skipped: {test} is missing (the FER2013 test faces)", file=sys.stderr)
        return 0
    from transformers import AutoImageProcessor

    paths = sorted(test.glob("*/*.jpg"))[: args.faces]
    grey = [load_image(p) for p in paths]
    rng = np.random.default_rng(0)
    tint = rng.uniform(0.6, 1.0, (len(grey), 1, 1, 3))
    colour = [(face * t).astype(np.uint8) for face, t in zip(grey, tint, strict=True)]
    results: dict[str, object] = {"machine": machine_info(), "faces": len(grey), "batch": BATCH, "runs": {}}
    for config_name, config_path in CONFIGS.items():
        if not config_path.is_file():
            print(f"skipped {config_name}: {config_path} is missing", file=sys.stderr)
            continue
        ours = Preprocessor.from_config(json.loads(config_path.read_text()))
        processor = AutoImageProcessor.from_pretrained(str(config_path.parent), backend="pil")

        def theirs(images: list[np.ndarray], processor: object = processor) -> np.ndarray:
            return np.asarray(processor(images=images, return_tensors="np")["pixel_values"])  # type: ignore[operator]

        for workload, images in (("grey faces", grey), ("colour faces", colour)):
            sample = images[:BATCH]
            difference = float(np.abs(ours(sample) - theirs(sample)).max())
            speeds: dict[str, list[float]] = {"emovit": [], "transformers": []}
            for _ in range(args.repeats):
                speeds["emovit"].append(_per_second(ours, images))
                speeds["transformers"].append(_per_second(theirs, images))
            medians = {name: statistics.median(values) for name, values in speeds.items()}
            key = f"{config_name}, {workload}"
            results["runs"][key] = {  # type: ignore[index]
                "max_abs_difference": difference,
                "images_per_s": medians,
                "runs": speeds,
                "emovit_vs_transformers": medians["emovit"] / medians["transformers"],
            }
            print(
                f"{key:45s} emovit {medians['emovit']:8.0f}/s  "
                f"transformers {medians['transformers']:8.0f}/s  "
                f"x{medians['emovit'] / medians['transformers']:.1f}  max|diff| {difference:.2g}"
            )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
