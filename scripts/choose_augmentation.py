"""Choose an augmentation among trained alternatives, on the validation split under the
perturbations of `scripts/robustness_report.py` (issue 15, item 3).

The rule, fixed before the alternatives were measured:

1. score = the mean FER+ macro-F1 over every condition of the report (clean, each perturbation
   and the composites): macro-F1, so a variant cannot win by answering "neutral", and every
   condition, so a variant cannot win on clean faces alone;
2. a variant whose clean FER+ accuracy is more than ``--max-clean-loss`` (default 0.01) below the
   best clean accuracy among the variants is not eligible (robustness must not be bought with
   the faces that are already fine);
3. the eligible variant with the highest score is chosen.

It refuses a report measured on any split but validation: the test split is never used to choose.

Usage:
    python scripts/robustness_report.py --split validation --model A --name a --model B --name b \\
        --data ../shared/data/fer2013 --labels ../shared/data/ferplus/labels.csv \\
        --yunet ../shared/models/face_detection_yunet_2023mar.onnx -o docs/reports/augment-choice
    python scripts/choose_augmentation.py docs/reports/augment-choice/robustness.json

Writes ``choice.json`` and ``choice.md`` beside the report (or into ``-o``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from emovit.errors import EmovitError
from emovit.fileio import write_report
from emovit.training.card import record_folder

LABELS = "ferplus"
NOT_FINISHED = 75  # EX_TEMPFAIL: a candidate is still training; run again once it has finished


class UnfinishedCandidateError(ValueError):
    """A candidate of the report is a training run that has not finished."""


def score(report: dict[str, Any]) -> dict[str, Any]:
    """The figures the rule uses for one model of a robustness report."""
    conditions = report["conditions"]
    if any(LABELS not in cond for cond in conditions.values()):
        raise ValueError(f"{report['model']} was measured without the FER+ labels (--labels) the rule scores")
    f1 = {name: float(cond[LABELS]["macro_f1"]) for name, cond in conditions.items()}
    acc = {name: float(cond[LABELS]["accuracy"]) for name, cond in conditions.items()}
    perturbed = [name for name in conditions if name != "clean"]
    worst = min(perturbed, key=lambda name: f1[name]) if perturbed else "clean"
    return {
        "model": report["model"],
        "path": report.get("path"),
        "clean_accuracy": acc["clean"],
        "clean_macro_f1": f1["clean"],
        "mean_macro_f1": sum(f1.values()) / len(f1),
        "mean_accuracy": sum(acc.values()) / len(acc),
        "worst_condition": worst,
        "worst_macro_f1": f1[worst],
    }


def choose(reports: list[dict[str, Any]], max_clean_loss: float = 0.01) -> dict[str, Any]:
    """Apply the rule of this module's docstring; returns every row and the chosen model."""
    from emovit.training.trainer import unfinished_run

    if not isinstance(reports, list) or not all(isinstance(r, dict) for r in reports):
        raise ValueError("not a robustness report (expected a list of models)")
    if not reports:
        raise ValueError("the report holds no models")
    unfinished = [r["model"] for r in reports if r.get("path") and unfinished_run(r["path"])]
    if unfinished:
        raise UnfinishedCandidateError(
            f"{', '.join(unfinished)}: training has not finished (measured part-way); "
            "resume it, measure again, then choose"
        )
    splits = {report.get("settings", {}).get("split") for report in reports}
    if splits != {"validation"}:
        raise ValueError(
            "augmentations are chosen on the validation split only; "
            f"this report was measured on {sorted(map(str, splits))}"
        )
    missing = [report["model"] for report in reports if "clean" not in report["conditions"]]
    if missing:
        raise ValueError(f"no clean condition for {missing}")
    rows = [score(report) for report in reports]
    for row in rows:  # what each alternative cost (a finished run's own record; a soup has none)
        state = record_folder(Path(str(row["path"]))) / "run_state.json"
        row["wall_time_h"] = (
            round(float(json.loads(state.read_text()).get("wall_time_s", 0)) / 3600, 2)
            if row["path"] and state.is_file()
            else None
        )
    best_clean = max(row["clean_accuracy"] for row in rows)
    for row in rows:
        row["eligible"] = row["clean_accuracy"] >= best_clean - max_clean_loss - 1e-12
    chosen = max((row for row in rows if row["eligible"]), key=lambda row: row["mean_macro_f1"])
    return {
        "rule": "\n\n".join(__doc__.split("\n\n")[1:3]),
        "max_clean_loss": max_clean_loss,
        "rows": rows,
        "chosen": chosen["model"],
        "chosen_path": chosen["path"],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Augmentation chosen on the validation split",
        "",
        "Rule (fixed before measuring): the highest mean FER+ macro-F1 over all conditions, "
        "among the variants whose clean FER+ validation accuracy is within "
        f"{result['max_clean_loss']:.2f} of the best.",
        "",
        "| variant | clean FER+ acc / F1 | mean over conditions acc / F1 | worst condition (F1) "
        "| training time | eligible | chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['model']} | {row['clean_accuracy']:.3f} / {row['clean_macro_f1']:.3f} | "
            f"{row['mean_accuracy']:.3f} / {row['mean_macro_f1']:.3f} | {row['worst_condition']} "
            f"({row['worst_macro_f1']:.3f}) | "
            f"{'-' if row.get('wall_time_h') is None else format(row['wall_time_h'], '.1f') + ' h'} | "
            f"{'yes' if row['eligible'] else 'no'} | "
            f"{'**yes**' if row['model'] == result['chosen'] else ''} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="robustness.json measured with --split validation")
    parser.add_argument("--max-clean-loss", type=float, default=0.01)
    parser.add_argument(
        "-o", "--output", type=Path, help="folder for choice.json/.md (default: the report's)"
    )
    args = parser.parse_args(argv)
    try:
        reports = json.loads(args.report.read_text())
        result = choose(reports, args.max_clean_loss)
    except UnfinishedCandidateError as error:
        print(f"choose_augmentation: {args.report}: {error}", file=sys.stderr)
        return NOT_FINISHED
    except (OSError, ValueError, EmovitError) as error:
        print(f"choose_augmentation: {args.report}: {error}", file=sys.stderr)
        return 2
    except (KeyError, TypeError) as error:
        print(
            f"choose_augmentation: {args.report}: not a robustness report (missing {error})", file=sys.stderr
        )
        return 2
    out = args.output or args.report.parent
    text = markdown(result)
    write_report(out, "choice", result, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    from emovit.errors import script_exit

    sys.exit(script_exit(main))
