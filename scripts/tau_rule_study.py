"""Which rule should pick the post-hoc logit adjustment's tau? A study on the validation split
alone (issue 15: the test split never chooses).

`emovit.training.adjust.score_taus` picks tau by one of its rules: ``none`` (tau 0), ``best``
(the single validation macro-F1), ``resampled`` (the mean macro-F1 over bootstrap resamples of
validation) or ``confident`` (as ``resampled``, among the taus that beat tau 0 on 90 % of the
resamples). On 3,372 validation faces with 31 disgust faces, one face moves the single figure by
about 0.005, and steps of 1/8 in tau flip several rare-class faces, so a rule may follow noise.
This script measures it: for every model, many random halves of the validation split
(stratified by class): each rule picks tau on one half, and the other half scores that tau. The
rule whose pick holds up better on the unseen halves is the one to release with.

The decision, fixed before this study was run: the release rule (``build_default_model.py
--tau-rule``) is the rule with the highest mean held-out macro-F1 over the models (ties: the
simpler, in the order none, best, resampled, confident). A first study, with ``none``, ``best``
and ``resampled`` only and the decision "``resampled`` if at least as good as ``best``", chose
``resampled`` (+0.0001) but found ``none`` ahead of both (0.7228 against 0.7206 / 0.7207 on 14
models); ``confident`` was added then, and this decision fixed, before measuring it.

Usage:
    python scripts/tau_rule_study.py ../shared/data/fer2013 --labels ../shared/data/ferplus/labels.csv \\
        --choice docs/reports/augment-choice/choice.json -o docs/reports/tau-rule

Writes ``tau_rule.json`` and ``tau_rule.md`` into ``-o``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from emovit.errors import EmovitError
from emovit.evaluation import macro_f1
from emovit.fileio import write_report
from emovit.training.adjust import (
    TAU_RULES,
    ValidationScores,
    prior_labels_of,
    score_taus,
    validation_scores,
)

RULES = TAU_RULES


def halves(y_true: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random split of the items into two halves, each class split evenly (stratified)."""
    first: list[np.ndarray] = []
    for k in np.unique(y_true):
        items = rng.permutation(np.flatnonzero(y_true == k))
        first.append(items[: len(items) // 2 + rng.integers(0, 2) * (len(items) % 2)])
    chosen = np.zeros(len(y_true), dtype=bool)
    chosen[np.concatenate(first)] = True
    return np.flatnonzero(chosen), np.flatnonzero(~chosen)


def subset(scores: ValidationScores, items: np.ndarray) -> ValidationScores:
    return ValidationScores(scores.classes, scores.probs[items], scores.y_true[items], scores.prior)


def study(scores: ValidationScores, splits: int, resamples: int, seed: int) -> dict[str, Any]:
    """Per rule: the tau it picks on each half and the macro-F1 that tau scores on the other."""
    rng = np.random.default_rng(seed)
    log_p, log_prior = np.log(np.maximum(scores.probs, 1e-12)), np.log(scores.prior)
    picked: dict[str, list[float]] = {rule: [] for rule in RULES}
    held_out: dict[str, list[float]] = {rule: [] for rule in RULES}
    for _ in range(splits):
        tune, check = halves(scores.y_true, rng)
        for rule in RULES:
            tau = score_taus(subset(scores, tune), rule=rule, resamples=resamples).tau  # type: ignore[arg-type]
            y_pred = (log_p[check] - tau * log_prior).argmax(axis=1)
            picked[rule].append(tau)
            held_out[rule].append(macro_f1(scores.y_true[check], y_pred))
    whole = {rule: score_taus(scores, rule=rule, resamples=resamples).tau for rule in RULES}  # type: ignore[arg-type]
    return {
        rule: {
            "held_out_macro_f1": float(np.mean(held_out[rule])),
            "held_out_macro_f1_sd": float(np.std(held_out[rule])),
            "tau_mean": float(np.mean(picked[rule])),
            "tau_sd": float(np.std(picked[rule])),
            "tau_on_whole_validation": whole[rule],
        }
        for rule in RULES
    }


def decide(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The fixed decision (module docstring) from the per-model results."""
    held = [{rule: r["rules"][rule]["held_out_macro_f1"] for rule in RULES} for r in results]
    mean = {rule: float(np.mean([h[rule] for h in held])) for rule in RULES}
    top = max(mean.values())
    return {
        "mean_held_out_macro_f1": mean,
        "models_where_best_of_all": {
            rule: int(sum(h[rule] >= max(h.values()) for h in held)) for rule in RULES
        },
        "models": len(results),
        "rule": next(rule for rule in RULES if mean[rule] >= top),
    }


def markdown(report: dict[str, Any]) -> str:
    rows = []
    for r in report["models"]:
        cells = [f"`{r['path']}`"]
        for rule in RULES:
            got = r["rules"][rule]
            cells.append(f"{got['held_out_macro_f1']:.4f}")
            if rule != "none":
                whole = got["tau_on_whole_validation"]
                cells.append(f"{got['tau_mean']:+.3f} ± {got['tau_sd']:.3f} ({whole:+.3f})")
        rows.append("| " + " | ".join(cells) + " |")
    decision = report["decision"]
    mean, wins = decision["mean_held_out_macro_f1"], decision["models_where_best_of_all"]
    columns = ["model"]
    for rule in RULES:
        columns.append(f"{rule}: held-out F1")
        if rule != "none":
            columns.append(f"{rule}: tau picked (whole val)")
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
    summary = ", ".join(f"{rule} {mean[rule]:.4f} (top on {wins[rule]})" for rule in RULES)
    return (
        "# Which rule picks tau (validation split only)\n\n"
        f"{report['splits']} random stratified halves of the validation split ({report['faces']} faces, FER+ "
        "majority labels) per model: each rule picks tau on one half, the other half scores it "
        f"(macro-F1). `resampled` and `confident` use {report['resamples']} bootstrap resamples of the "
        "half they tune on. Tau picked: mean ± sd over the halves, and (in brackets) what the rule "
        "picks on the whole validation split.\n\n"
        + head
        + "\n"
        + "\n".join(rows)
        + "\n\n"
        + f"Mean held-out macro-F1 over {decision['models']} models (and on how many models each "
        f"rule is top): {summary}.\n\n"
        f"**Decision** (fixed before the study): the release rule is `{decision['rule']}`.\n"
        + "".join(f"\nNot scored: `{f['path']}`: {f['error']}\n" for f in report.get("failed", []))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="the ImageFolder root (train/validation)")
    parser.add_argument("--labels", type=Path, help="FER+ vote file: validation scores its majority labels")
    parser.add_argument("--model", type=Path, action="append", default=[], help="an unadjusted run (repeat)")
    parser.add_argument("--choice", type=Path, help="choice.json: study its candidates")
    parser.add_argument("--splits", type=int, default=200, help="random halves per model (default 200)")
    parser.add_argument("--resamples", type=int, default=200, help="resamples of a half (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    models = list(args.model)
    if args.choice:
        models += [Path(row["path"]) for row in json.loads(args.choice.read_text())["rows"]]
    if not models:
        parser.error("name the models: --model RUN (repeat) or --choice choice.json")
    from rich.progress import track

    results, failed = [], []
    for path in track(models, description="tau rules"):
        try:  # a model that cannot be scored is reported and left out; the others still count
            scores = validation_scores(
                path, args.data, labels=args.labels, prior_labels=prior_labels_of(path, args.labels)
            )
        except (EmovitError, OSError, KeyError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            failed.append({"path": str(path), "error": str(exc)})
            continue
        results.append({"path": str(path), "rules": study(scores, args.splits, args.resamples, args.seed)})
    if not results:
        print("error: no model could be scored", file=sys.stderr)
        return 1
    report = {
        "splits": args.splits,
        "resamples": args.resamples,
        "seed": args.seed,
        "faces": len(scores.y_true),
        "models": results,
        "failed": failed,
        "decision": decide(results),
    }
    text = markdown(report)
    write_report(args.output, "tau_rule", report, text)
    print(text)
    return 0


if __name__ == "__main__":
    from emovit.errors import script_exit

    sys.exit(script_exit(main))
