"""Average the weights of finished runs fine-tuned from one model ("model soup",
`emovit.training.soup`); ``--data`` measures BatchNorm statistics again on the training split.

Usage:
    python scripts/make_soup.py RUN RUN [RUN ...] -o DEST [--data ../shared/data/fer2013]

Whether the soup is better than its ingredients is decided on the validation split
(`scripts/robustness_report.py --split validation`, `scripts/choose_augmentation.py`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emovit.errors import EmovitError

NOT_FINISHED = 75  # EX_TEMPFAIL, as scripts/build_default_model.py


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="finished runs (or model folders) to average")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the model folder to write")
    parser.add_argument(
        "--data",
        type=Path,
        help="a dataset with a train split: measure BatchNorm again on its clean images (default: "
        "average the runs' statistics, better for runs trained on degraded batches)",
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    from emovit.training.trainer import unfinished_run

    try:
        for run in args.runs:  # an unfinished run: try again later (make stops here, like the release)
            if unfinished_run(run):
                print(
                    f"{run}: training is not finished; resume it (make runs it again) and make the soup then"
                )
                return NOT_FINISHED
    except EmovitError as error:
        print(f"make_soup: {error}", file=sys.stderr)
        return 2
    from emovit.training.soup import SOUP_FILE, make_soup, soup_is_current

    if soup_is_current(args.runs, args.output, args.data):
        print(f"{args.output / SOUP_FILE}: up to date (the same ingredients, weights and --data)")
        return 0

    try:
        out = make_soup(args.runs, args.output, data=args.data, threads=args.threads)
    except EmovitError as error:
        print(f"make_soup: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from emovit.errors import script_exit

    sys.exit(script_exit(main))
