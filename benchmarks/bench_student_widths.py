"""Where a bigger student costs least: MobileViT widths side by side (issue 15).

The student of round 5 (MobileViT-XXS at 64x64, `xxs` below) fitted the training set no better
than validation (FER+ majority accuracy 0.83 on clean train images, 0.81 on validation): it
lacked capacity. (The model shipped since is `wide-last`, the winner of this comparison.)
Its time goes to the early, high-resolution stages (32x32 and 16x16 maps), its parameters sit
in the late ones (4x4 and 2x2 maps). This benchmark measures what widening each stage costs
in faces/s, on the path `emovit predict` takes (onnx-fp32, decoded 48x48 face crops,
batch 256), every variant in the same run, repetitions interleaved, as ratios to `xxs`.
Weights are random (the speed of a graph does not depend on them); trained
folders can be added with ``--model NAME=FOLDER``.

Writes benchmarks/results/bench_student_widths.json (or --out FILE) and prints the table.
Usage: python benchmarks/bench_student_widths.py [--repeats 5] [--model wide=runs/augment-choice/wide]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from emovit.bench import at_least_one

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVIT_SHARED", REPO.parent / "shared"))
RESULTS = REPO / "benchmarks" / "results"

#: name -> (what is widened, config overrides of the mobilevit-xxs-64 preset)
VARIANTS: dict[str, tuple[str, dict[str, list[int]]]] = {
    "xxs": ("round 5's architecture (MobileViT-XXS)", {}),
    "wide-last": (
        "last stage (2x2 map) and the final 1x1 expansion",
        {"neck_hidden_sizes": [16, 16, 24, 48, 64, 128, 512], "hidden_sizes": [64, 80, 192]},
    ),
    "wide-last-two": (
        "last two stages (4x4 and 2x2 maps)",
        {"neck_hidden_sizes": [16, 16, 24, 48, 80, 96, 384], "hidden_sizes": [64, 120, 144]},
    ),
    "wide-late-three": (
        "last three stages (8x8, 4x4 and 2x2 maps)",
        {"neck_hidden_sizes": [16, 16, 24, 64, 96, 128, 512], "hidden_sizes": [96, 144, 192]},
    ),
    "xs": (
        "every stage (MobileViT-XS widths)",
        {"neck_hidden_sizes": [16, 32, 48, 64, 80, 96, 384], "hidden_sizes": [96, 120, 144]},
    ),
}


def build(folder: Path, overrides: dict[str, list[int]]) -> None:
    import torch

    from emovit.models import arch_preset

    preset = arch_preset("mobilevit-xxs-64")
    torch.manual_seed(0)
    preset.build_model(None, **overrides).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(preset.processor_config(64)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=at_least_one, default=5)
    parser.add_argument("--crops", type=at_least_one, default=2048)
    parser.add_argument(
        "--model", action="append", default=[], metavar="NAME=FOLDER", help="a trained folder too"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_student_widths.json")
    args = parser.parse_args()
    for given in args.model:  # before five variants are built and exported
        folder = given.partition("=")[2]
        if not Path(folder).is_dir():
            parser.error(f"--model {given}: no such model folder")
    test_dir = SHARED / "data" / "fer2013" / "test"
    if not test_dir.is_dir():
        sys.exit(f"skipped: {test_dir} is missing")

    from emovit.backends import physical_cores
    from emovit.backends.export import export_onnx
    from emovit.bench import machine_info, time_face_crops
    from emovit.data import read_samples
    from emovit.imageio import load_image
    from emovit.models import count_parameters
    from emovit.predictor import EmotionRecognizer

    samples = read_samples(test_dir)
    crops = [load_image(samples[i % len(samples)].source) for i in range(0, args.crops * 7, 7)]
    rows: dict[str, dict] = {}
    recognizers = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = {name: (what, None) for name, (what, _) in VARIANTS.items()}
        for pair in args.model:
            name, _, folder = pair.partition("=")
            if name in VARIANTS or not folder:
                sys.exit(f"--model {pair}: give NAME=FOLDER with a NAME other than {', '.join(VARIANTS)}")
            sources[name] = (f"trained folder {folder}", Path(folder))
        for name, (what, folder) in sources.items():
            if folder is None:
                folder = Path(tmp) / name
                build(folder, VARIANTS[name][1])
            out = Path(tmp) / f"{name}-onnx"
            export_onnx(str(folder), out, check_images=4)
            params = count_parameters(folder) or 0
            rows[name] = {
                "widened": what,
                "overrides": VARIANTS[name][1] if name in VARIANTS else None,
                "parameters_m": round(params / 1e6, 2),
                "safetensors_mb": round((folder / "model.safetensors").stat().st_size / 1e6, 1),
            }
            recognizers[name] = EmotionRecognizer.from_pretrained(out, detector="none", backend="onnx")
            print(f"exported {name}", file=sys.stderr, flush=True)
        step = 256
        runs = time_face_crops(
            recognizers,
            crops,
            step,
            args.repeats,
            progress=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
    base = statistics.median(runs["xxs"])
    for name, row in rows.items():
        row["faces_per_s"] = round(statistics.median(runs[name]), 1)
        row["ratio_vs_xxs"] = round(statistics.median(runs[name]) / base, 3)
        row["faces_per_s_runs"] = [round(v, 1) for v in runs[name]]
    report = {
        "benchmark": "MobileViT student widths, onnx-fp32, decoded face crops",
        "batch_size": step,
        "crops": len(crops),
        "repeats": args.repeats,
        "threads": physical_cores(),
        "variants": rows,
        "command": "python " + " ".join(["benchmarks/bench_student_widths.py", *sys.argv[1:]]),
        "machine": machine_info(),
    }
    from emovit.fileio import write_text_atomic

    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(f"{'variant':<16} {'params (M)':>10} {'MB':>6} {'faces/s':>9} {'ratio':>6}  widened")
    for name, row in rows.items():
        print(
            f"{name:<16} {row['parameters_m']:>10} {row['safetensors_mb']:>6} {row['faces_per_s']:>9} "
            f"{row['ratio_vs_xxs']:>6}  {row['widened']}"
        )


if __name__ == "__main__":
    main()
