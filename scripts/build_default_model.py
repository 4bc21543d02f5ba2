"""Build the embedded default model from a finished training run: evaluate it honestly on the
test split (plain, flip-TTA and leak-free), copy its files and framing into the package and
write its model card (`emovit.training.release.release_model`). Run by ``make train-default``.

Usage:
    python scripts/build_default_model.py RUN_DIR DEST_DIR --data DATA [--speed SPEED.json]
        [--compare OTHER_RUN ...] [--onnx] [--labels VOTES.csv] [--robustness REPORT_DIR]
        [--adjust-prior [--tau-rule RULE]] [--augment-choice CHOICE_DIR] [--card-only]

``--compare`` names runs of other architectures, for the card's "why this architecture" table;
``--labels`` also scores the test split on a FER+ vote file's majority labels; ``--robustness``
puts the table of ``scripts/robustness_report.py`` into the card; ``--adjust-prior`` folds a
post-hoc logit adjustment chosen on the validation split into the released weights
(`emovit.training.adjust`; ``--tau-rule`` says how tau is picked, see
``scripts/tau_rule_study.py``); ``--augment-choice`` puts the table of
``scripts/choose_augmentation.py`` into the card. RUN_DIR may be that script's ``choice.json``:
the run it chose is released. ``--card-only`` rewrites the card of an already built folder from its
``metrics.json`` (after the robustness report or the speed benchmark of the released model).
A run that has not finished (``run_state.json`` not complete) is left alone, with a message and
exit status 75 (EX_TEMPFAIL: run ``make train-default`` again later), so that ``make`` stops
before the steps that measure the released model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emovit.training.adjust import DEFAULT_TAU_RULE, TAU_RULES

# defaults are found from the repository, wherever the script is started
REPO = Path(__file__).resolve().parents[1]

NOT_FINISHED = 75


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run", type=Path, help="the last training stage's output folder, or a choice.json naming it"
    )
    parser.add_argument("dest", type=Path, help="the folder to write (src/emovit/models/default)")
    parser.add_argument("--data", type=Path, required=True, help="the dataset with a test split")
    parser.add_argument("--speed", type=Path, default=REPO / "benchmarks/results/default_speed.json")
    parser.add_argument("--compare", type=Path, nargs="*", default=[], help="other runs for the card")
    parser.add_argument("--onnx", action="store_true", help="also ship an fp32 model.onnx")
    parser.add_argument("--labels", type=Path, default=None, help="a FER+ vote file: also score its labels")
    parser.add_argument("--robustness", type=Path, default=None, help="the robustness report folder")
    parser.add_argument("--adjust-prior", action="store_true", help="tune a logit adjustment on validation")
    parser.add_argument(
        "--tau-rule",
        choices=TAU_RULES,
        default=DEFAULT_TAU_RULE,
        help=f"how --adjust-prior picks tau (scripts/tau_rule_study.py; default {DEFAULT_TAU_RULE})",
    )
    parser.add_argument("--augment-choice", type=Path, default=None, help="the augmentation choice folder")
    parser.add_argument("--card-only", action="store_true", help="only rewrite the card of DEST")
    args = parser.parse_args(argv)
    if args.run.is_file():  # scripts/choose_augmentation.py's choice.json
        try:
            choice = json.loads(args.run.read_text())
        except ValueError as error:
            print(f"{args.run}: not a choice.json ({error})", file=sys.stderr)
            return 2
        if not isinstance(choice, dict) or not choice.get("chosen_path"):
            print(f"{args.run}: not a choice.json (no chosen_path)", file=sys.stderr)
            return 2
        print(f"releasing {choice['chosen_path']} (chosen in {args.run})")
        args.run = Path(choice["chosen_path"])

    if not args.run.is_dir():  # a typo is not a run still training (exit 75 would tell make to wait)
        print(f"{args.run}: no such training run folder", file=sys.stderr)
        return 2
    state_path = args.run / "run_state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    # a weight average (soup.json) is made only from finished runs (emovit.training.soup)
    if not state.get("complete") and not (args.run / "soup.json").is_file():
        done, total = state.get("epochs_run", 0), state.get("epochs", "?")
        print(
            f"{args.run}: training is not finished ({done} of {total} epochs); run `make train-default` again"
        )
        return NOT_FINISHED
    from emovit.training.release import refresh_card, release_model

    shared = {
        "speed": args.speed,
        "compare": args.compare,
        "labels": args.labels,
        "robustness": args.robustness,
        "augment_choice": args.augment_choice,
    }
    if args.card_only:
        print(f"wrote {refresh_card(args.run, args.dest, **shared)}")
        return 0
    metrics = release_model(
        args.run,
        args.dest,
        args.data,
        onnx=args.onnx,
        adjust_prior=args.adjust_prior,
        tau_rule=args.tau_rule,
        **shared,
    )
    print(
        json.dumps(
            {
                k: {m: v[m] for m in ("accuracy", "macro_f1", "images")}
                for k, v in metrics.items()
                if isinstance(v, dict) and "accuracy" in v
            }
        )
    )
    return 0


if __name__ == "__main__":
    from emovit.errors import script_exit

    sys.exit(script_exit(main))
