"""Build the embedded default model from a finished training run: evaluate it honestly on the
test split (plain, flip-TTA and leak-free), copy its files and framing into the package and
write its model card (`emovit.training.release.release_model`). Run by ``make train-default``.

Usage:
    python scripts/build_default_model.py RUN_DIR DEST_DIR --data DATA [--speed SPEED.json]
        [--compare OTHER_RUN ...] [--onnx]

``--compare`` names runs of other architectures, for the card's "why this architecture" table.
A run that has not finished (``run_state.json`` not complete) is left alone, with a message.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="the last training stage's output folder")
    parser.add_argument("dest", type=Path, help="the folder to write (src/emovit/models/default)")
    parser.add_argument("--data", type=Path, required=True, help="the dataset with a test split")
    parser.add_argument("--speed", type=Path, default=Path("benchmarks/results/default_speed.json"))
    parser.add_argument("--compare", type=Path, nargs="*", default=[], help="other runs for the card")
    parser.add_argument("--onnx", action="store_true", help="also ship an fp32 model.onnx")
    args = parser.parse_args(argv)
    state_path = args.run / "run_state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if not state.get("complete"):
        done, total = state.get("epochs_run", 0), state.get("epochs", "?")
        print(
            f"{args.run}: training is not finished ({done} of {total} epochs); run `make train-default` again"
        )
        return 0
    from emovit.training.release import release_model

    metrics = release_model(
        args.run, args.dest, args.data, speed=args.speed, compare=args.compare, onnx=args.onnx
    )
    print(json.dumps({k: {m: v[m] for m in ("accuracy", "macro_f1", "images")} for k, v in metrics.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
