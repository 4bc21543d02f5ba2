"""One round of the default model's training on a GPU lent for a few minutes (issue 15): CNN
teachers trained side by side on the FER+ votes, then the released student continued under their
ensemble, each schedule fitted to a wall-clock budget.

Every run is `emovit train` (the same trainer, data, preprocessing and augmentation as on the
CPU). A schedule is fitted without waste: each run first trains its warm-up epoch alone
(``--epochs 1``, one warm-up epoch), its epoch time is read from its metrics, and the run is
resumed with the epochs that fit before its stage's end (``--resume --epochs N``: the cosine
schedule is rebuilt for N epochs and continues from the warm-up's peak). ``--time-limit`` is the
backstop; a teacher it stops is unfinished and teaches nothing. ``round.json`` records the
epochs each run got. With ``--teacher`` (repeatable) the teacher stage is skipped.

    python scripts/gpu_bundle.py unpack .devdata -o /tmp/fer2013
    python scripts/gpu_round.py --data /tmp/fer2013 --labels /tmp/fer2013/labels.csv \\
        --work /tmp/round --out "$OUT" --budget 560

What comes back (``--out``: tar files split into parts of 15 MiB, ``cat NAME.tar.part* | tar x``):
``student.tar`` (the student run; with its checkpoint when the backstop stopped it, to be
resumed on a CPU), ``runs.tar`` (every run's configuration, metrics and log, ``round.json``) and
``teachers.tar`` (the teachers' weights in float16, best first, while the whole stays within
``--return-mib``).

Seen on an H200 (session 34): the ResNet teachers' epochs took 2.7-3.4 s with three runs side by
side, the student's 13-24 s: the photo degradations' per-face work (JPEG, down-sampling, noise
drawn on the CPU) bounds the student, not the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRAMING = ["--face-margin", "0.0", "--face-align", "--grey"]
VOTES = ["--label-smoothing", "0.05", "--balance", "none", "--logit-adjust", "0.5", *FRAMING]
R18 = ["--arch", "resnet-teacher-64", "--set", "hidden_sizes=[64,128,256,512]", "--set", "embedding_size=64"]
WIDE = ["--arch", "resnet-teacher-64", "--set", "hidden_sizes=[48,96,192,384]", "--set", "embedding_size=48"]


def _sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--augment-set", pair)]


MIX = _sets("mixup_alpha=1.0", "mix_p=0.5")
# the Makefile's STRONG: the photo degradations of the default model's last stages
STRONG = _sets(
    "downscale_p=0.5", "downscale_min=0.2", "blur_p=0.4", "blur_sigma=2.0", "jpeg_p=0.4",
    "jpeg_quality=20,90", "noise_p=0.3",
)  # fmt: skip
TEACHER = ["--batch-size", "256", "--lr", "2e-3", "--warmup-epochs", "1", "--patience", "1000", *VOTES]
TEACHERS = {
    "gpu-r18-mix": [*R18, *TEACHER, "--augment", "standard", *MIX, "--seed", "21"],
    "gpu-r18": [*R18, *TEACHER, "--augment", "standard", "--seed", "22"],
    "gpu-wide-robust": [*WIDE, *TEACHER, "--augment", "robust", "--seed", "23"],
}
STUDENT = [
    *("--batch-size", "256", "--lr", "2e-4", "--warmup-epochs", "1", "--patience", "1000", *VOTES),
    *("--augment", "robust", *STRONG, *MIX, "--teacher-tta", "flip", "--teacher-input", "clean"),
    *("--distill-alpha", "0.8", "--distill-temperature", "2", "--select", "robust-f1", "--seed", "24"),
]


def plan_epochs(epoch_s: float, left_s: float, slowdown: float, max_epochs: int) -> int:
    """The epochs of a run whose warm-up epoch took `epoch_s` and has `left_s` seconds after it:
    the warm-up counts as one, the rest at `slowdown` times its pace; at least 1, at most
    `max_epochs`."""
    return max(1, min(max_epochs, 1 + int(max(0.0, left_s) / (epoch_s * slowdown))))


class Round:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.start = time.monotonic()
        self.work: Path = args.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.record: dict = {"budget_s": args.budget, "runs": {}}

    def now(self) -> float:
        return time.monotonic() - self.start

    def log(self, text: str) -> None:
        line = f"[{self.now():6.1f}s] {text}"
        print(line, flush=True)
        with open(self.work / "round.log", "a") as f:
            f.write(line + "\n")

    def launch(self, name: str, extra: list[str], threads: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "emovit", "train", str(self.args.data), "-o", str(self.work / name)]
        cmd += ["--labels", str(self.args.labels), "--threads", str(threads), *extra]
        if self.args.max_train_samples:
            cmd += ["--max-train-samples", str(self.args.max_train_samples)]
        self.log(f"{name}: {' '.join(cmd[3:])}")
        logf = open(self.work / f"{name}.log", "a")  # noqa: SIM115 (closed with the process)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        proc.logf = logf  # type: ignore[attr-defined]
        return proc

    def wait(self, procs: dict[str, subprocess.Popen], until: float) -> None:
        for name, proc in procs.items():
            try:
                proc.wait(timeout=max(1.0, until - self.now()))
            except subprocess.TimeoutExpired:
                self.log(f"{name}: past its stage's end, stopped")
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            proc.logf.close()  # type: ignore[attr-defined]
            self.log(f"{name}: exit {proc.returncode}")

    def history(self, name: str) -> list[dict]:
        path = self.work / name / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def tail(self, name: str, lines: int = 25) -> None:
        path = self.work / f"{name}.log"
        if path.is_file():
            print(
                f"--- last lines of {name}.log", *path.read_text().splitlines()[-lines:], sep="\n", flush=True
            )

    def stage(
        self,
        runs: dict[str, list[str]],
        end: float,
        threads: int,
        preflight: tuple[str, list[str]] | None = None,
        hard_end: float | None = None,
    ) -> None:
        """Warm-up epoch of each run side by side, then each resumed with the epochs planned to
        end by `end` (the warm-up's epoch time times --slowdown: runs side by side slow each
        other down more once all of them train). `hard_end`: the --time-limit backstop (a run it
        stops is unfinished: no teacher; a student's checkpoint comes back to be resumed).
        `preflight`: a short run started beside the warm-ups; if it fails the round stops at once."""
        hard_end = end if hard_end is None else hard_end
        began = self.now()
        procs = {n: self.launch(n, [*a, "--epochs", "1"], threads) for n, a in runs.items()}
        if preflight is not None:
            name, extra = preflight
            check = self.launch(name, extra, threads)
            self.wait({name: check}, end)
            if check.returncode != 0:
                self.tail(name)
                for proc in procs.values():
                    proc.terminate()
                self.wait(procs, self.now() + 20)
                raise SystemExit(f"{name} failed: the round stops")
        self.wait(procs, end)
        took = self.now() - began
        procs = {}
        for name, extra in runs.items():
            hist = self.history(name)
            if not hist:
                self.log(f"{name}: no epoch finished; left out")
                self.tail(name)
                continue
            epoch_s = float(hist[-1]["epoch_time_s"])
            overhead = max(0.0, took - epoch_s)  # start-up, decoding, validation: paid again
            epochs = plan_epochs(
                epoch_s, end - self.now() - overhead, self.args.slowdown, self.args.max_epochs
            )
            self.record["runs"][name] = {
                "warmup_epoch_s": epoch_s,
                "overhead_s": round(overhead, 1),
                "epochs_planned": epochs,
                "args": extra,
            }
            self.log(f"{name}: epoch {epoch_s:.1f}s, overhead {overhead:.0f}s -> {epochs} epochs")
            if epochs > 1:
                limit = max(0.0, (hard_end - self.now() - overhead - 2 * epoch_s) / 60)
                procs[name] = self.launch(
                    name,
                    [*extra, "--epochs", str(epochs), "--resume", "--time-limit", f"{limit:.2f}"],
                    threads,
                )
        self.wait(procs, hard_end + 15)
        for name in runs:
            hist = self.history(name)
            if hist and name in self.record["runs"]:
                best = max(hist, key=lambda r: r.get("val_robust_f1", r.get("val_macro_f1", 0)))
                done = self.finished(name)
                self.record["runs"][name] |= {"epochs_done": len(hist), "complete": done, "best": best}
                self.log(
                    f"{name}: {len(hist)} epochs{'' if done else ' (unfinished)'}, best {json.dumps(best)}"
                )

    def trained_as_planned(self, name: str) -> bool:
        run = self.record["runs"].get(name, {})
        planned = run.get("epochs_planned", 0)
        return self.finished(name) and planned > 1 and run.get("epochs_done") == planned

    def finished(self, name: str) -> bool:
        state = self.work / name / "run_state.json"
        return state.is_file() and bool(json.loads(state.read_text()).get("complete"))

    def run(self) -> None:
        a = self.args
        student_end = a.budget - a.reserve
        teacher_end = a.teacher_share * student_end
        default = str(REPO / "src/emovit/models/default")
        try:
            if a.teacher:
                teachers = [str(Path(t).resolve()) for t in a.teacher]
            else:
                # the student's path (distillation, robust selection) tried on a subset beside the
                # teachers' warm-ups, the released model as its teacher: a failure there stops the
                # round in its first minute, not after the teachers' share of it
                check = [*("--init", default, *STUDENT, "--teacher", default, "--epochs", "1"),
                         *("--max-train-samples", "2048")]  # fmt: skip
                hard = teacher_end + 0.3 * (student_end - teacher_end)  # the student gives way
                self.stage(TEACHERS, teacher_end, 4, preflight=("preflight", check), hard_end=hard)
                # a teacher stopped by the backstop is unfinished (emovit train refuses it), and
                # one that got no epoch past its warm-up has not learned enough to teach
                teachers = [str(self.work / n) for n in TEACHERS if self.trained_as_planned(n)]
            self.record["teachers"] = teachers
            if teachers:
                taught = [x for t in teachers for x in ("--teacher", t)]
                self.stage({"gpu-taught": ["--init", a.init or default, *STUDENT, *taught]}, student_end, 8)
        finally:
            self.pack()

    def pack(self) -> None:
        """The round's results into --out as tar files split into parts of 15 MiB (the return's
        limit per file): the student (with its checkpoint when unfinished, to be resumed on a
        CPU), the runs' records, then the teachers' weights in float16, best first, while the
        whole stays within --return-mib."""
        out: Path = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        self.record["wall_s"] = round(self.now(), 1)
        (self.work / "round.json").write_text(json.dumps(self.record, indent=2) + "\n")
        packed = self.work / "packed"
        packed.mkdir(exist_ok=True)
        student = self.work / "gpu-taught"
        if student.is_dir():
            keep = not self.finished("gpu-taught")
            with tarfile.open(packed / "student.tar", "w") as tar:
                tar.add(
                    student,
                    arcname="gpu-taught",
                    filter=lambda t: t if keep or "/checkpoint" not in t.name else None,
                )
            self.split(packed / "student.tar", out)
        weights = ("model.safetensors", "optimizer.pt", "scheduler.pt")
        with tarfile.open(packed / "runs.tar", "w") as tar:
            for path in sorted(self.work.rglob("*")):
                rel = path.relative_to(self.work)
                if (
                    path.is_file()
                    and not path.resolve().is_relative_to(out.resolve())
                    and not {"checkpoint", "packed"} & set(rel.parts)
                    and path.name not in weights
                ):
                    tar.add(path, arcname=str(rel))
        self.split(packed / "runs.tar", out)
        self.pack_teachers(packed, out)
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in sorted(out.iterdir()))
        self.log(f"packed: {sizes}")

    @staticmethod
    def split(archive: Path, out: Path) -> None:
        data, part = archive.read_bytes(), 15 * 2**20
        for i in range(0, len(data), part):
            (out / f"{archive.name}.part{i // part:02d}").write_bytes(data[i : i + part])

    def pack_teachers(self, packed: Path, out: Path) -> None:
        import torch
        from safetensors.torch import load_file, save_file

        # the teachers this round trained (not ones given with --teacher: the caller has those)
        trained = [
            n
            for n in TEACHERS
            if str(self.work / n) in self.record.get("teachers", [])
            and "best" in self.record["runs"].get(n, {})
        ]
        if not trained:
            return
        room = self.args.return_mib * 2**20 - sum(p.stat().st_size for p in out.iterdir())
        ranked = sorted(trained, key=lambda n: -self.record["runs"][n]["best"].get("val_macro_f1", 0))
        with tarfile.open(packed / "teachers.tar", "w") as tar:
            for name in ranked:
                half = packed / f"{name}.safetensors"
                loaded = load_file(str(self.work / name / "model.safetensors"))
                save_file(
                    {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in loaded.items()},
                    str(half),
                )
                size = half.stat().st_size + 2048  # its tar header and padding
                if size > room:
                    self.log(
                        f"{name}: weights left out ({size / 2**20:.1f} MiB; {room / 2**20:.1f} MiB left)"
                    )
                    continue
                room -= size
                tar.add(half, arcname=f"{name}/model.safetensors")
        self.split(packed / "teachers.tar", out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--labels", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget", type=float, default=560, help="seconds, packing included")
    p.add_argument("--reserve", type=float, default=30, help="seconds kept for packing")
    p.add_argument("--teacher-share", type=float, default=0.5, help="share of the time for the teachers")
    p.add_argument("--max-epochs", type=int, default=250)
    p.add_argument("--return-mib", type=float, default=62, help="what comes back, at most (the limit is 64)")
    p.add_argument("--max-train-samples", type=int, help="a smoke test's subset")
    p.add_argument("--slowdown", type=float, default=1.25, help="planned epoch time / the warm-up's")
    p.add_argument("--teacher", action="append", help="teach with these trained runs (no teacher stage)")
    p.add_argument("--init", help="the student to continue (default: the released model)")
    Round(p.parse_args()).run()


if __name__ == "__main__":
    main()
