"""Benchmark: few-step generation on the default digits run — quality and CPU cost per method and step count.

Rows: steps (model evaluations) 1, 2, 4, 8; columns: the teacher with its best sampler at that NFE (chosen by
the same FID among ddim, euler, heun, dpm_solver_pp_2m, dpm_solver_pp_3m, unipc_bh2: a selection that favours
the teacher), the progressive student (by default the teacher's Heun steps on a 16-step grid distilled to
8 -> 4 -> 2 -> 1 DDIM steps, 1000 optimizer steps per halving, lr annealed within each; each stage's EMA
student evaluated at its own step count; ``--teacher-steps 64 --teacher-solver ddim --no-lr-anneal`` is the
paper's recipe), consistency distillation (Heun teacher, fixed N = 18) and improved consistency
training (the packaged ``digits-ict`` config, no teacher). Quality is the classifier-feature FID of
benchmarks/train_default.py (same judge, same reference, 1000 samples, seed 0). Cost is the CPU time of each
method's training (process time, one thread; the teacher's own training is reported apart).

    python benchmarks/distill.py --teacher /tmp/digits-teacher --work /tmp/distill-bench
    python benchmarks/distill.py ... --only progressive --pd-key VARIANT --teacher-steps 32 --pd-stages 3 \
        --steps-per-stage 300,500,1000          # one progressive variant, kept under its own key

The teacher folder is trained with ``python -m scorediff train`` if it holds no run. Prints a Markdown table
and a JSON summary; ``--figure`` writes docs/img/distill_digits.png (samples per method at 1 and 4 steps).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_default import digit_classifier, features  # noqa: E402

from scorediff.eval import frechet_distance as frechet  # noqa: E402

TEACHER_SAMPLERS = ("ddim", "euler", "heun", "dpm_solver_pp_2m", "dpm_solver_pp_3m", "unipc_bh2")
NFES = (1, 2, 4, 8)


class Judge:
    def __init__(self):
        self.clf, real, _, train_idx, _ = digit_classifier()
        self.ref = features(self.clf, real[train_idx])

    def fid(self, x) -> float:
        from scorediff.data import from_unit

        gen = from_unit(x).numpy().reshape(len(x), -1) / 255.0
        return frechet(features(self.clf, gen), self.ref)


class Counter:
    """Counts model evaluations (examples / batch) of a denoiser."""

    def __init__(self, d):
        self.d, self.nfe = d, 0

    def __call__(self, x, t, **cond):
        self.nfe += 1
        return self.d(x, t, **cond)


def draw(denoiser, process, shape, num, **kw):
    import torch

    from scorediff import sample

    c = Counter(denoiser)
    with torch.no_grad():
        x = sample(c, process, (num, *shape), seed=0, **kw)
    return x, c.nfe


def teacher_rows(run, judge, num):
    """Best FID of the teacher's samplers at exactly each NFE (steps searched so the count matches)."""
    best = {}
    for nfe in NFES:
        for name in TEACHER_SAMPLERS:
            for steps in range(1, nfe + 1):
                try:
                    x, used = draw(run.denoiser, run.process, run.shape, num, sampler=name, steps=steps)
                except ValueError:
                    continue
                if used == nfe:
                    f = judge.fid(x)
                    if nfe not in best or f < best[nfe][0]:
                        best[nfe] = (f, f"{name} x{steps}")
                if used >= nfe:
                    break
    return best


def cpu_run(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="/tmp/scorediff-digits-teacher")
    ap.add_argument("--work", default="/tmp/scorediff-distill-bench")
    ap.add_argument("--num", type=int, default=1000)
    ap.add_argument("--steps-per-stage", default="1000", help="progressive: per halving, one number or one per halving")
    ap.add_argument("--cd-steps", type=int, default=1000)
    ap.add_argument("--ict-steps", type=int, default=2000)
    ap.add_argument("--pd-stages", type=int, default=4, help="progressive halvings from --teacher-steps (4: 16 -> 1)")
    ap.add_argument("--teacher-steps", type=int, default=16, help="progressive: the first stage's teacher steps")
    ap.add_argument("--teacher-solver", default="heun", help="progressive: the first stage's teacher step")
    ap.add_argument("--lr-anneal", action=argparse.BooleanOptionalAction, default=True,
                    help="progressive: lr linearly to 0 within each stage")
    ap.add_argument("--weighting", default="snr_trunc")
    ap.add_argument("--schedule", default="karras")
    ap.add_argument("--pd-lr", type=float, default=None, help="progressive: lr (default a quarter of the teacher's)")
    ap.add_argument("--pd-set", action="append", default=[], metavar="KEY=VALUE", help="progressive: config override")
    ap.add_argument("--pd-key", default="progressive", help="progressive: the summary key / work subfolder")
    ap.add_argument("--only", default="teacher,progressive,consistency,ict")
    ap.add_argument("--figure", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from scorediff.training import config, load_run, train
    from scorediff.training.distillation import distill

    teacher, work = Path(args.teacher), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    summary_path = work / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if not (teacher / "ema.safetensors").exists():
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        c0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "scorediff", "train", "--out", str(teacher), "--set", "log.progress=false"],
                       env=env, cwd=ROOT, check=True)
        summary["teacher_train_wall_s"] = time.perf_counter() - c0
    judge = Judge()
    t_run = load_run(teacher)
    samples = {}

    def save():
        summary_path.write_text(json.dumps(summary, indent=2))

    if "teacher" in only:
        x, nfe = draw(t_run.denoiser, t_run.process, t_run.shape, args.num, sampler="heun", steps=18)
        summary["teacher_heun18"] = {"nfe": nfe, "fid": judge.fid(x)}
        summary["teacher"] = {str(k): v for k, v in teacher_rows(t_run, judge, args.num).items()}
        save()
        print("teacher", summary["teacher_heun18"], summary["teacher"], file=sys.stderr)

    if "progressive" in only:
        out = work / args.pd_key
        shutil.rmtree(out, ignore_errors=True)
        stages = args.pd_stages  # from 64: 6 is 64 -> 32 -> 16 -> 8 -> 4 -> 2 -> 1
        per_stage = [int(v) for v in str(args.steps_per_stage).split(",")]
        per_stage = per_stage * stages if len(per_stage) == 1 else per_stage
        options = dict(to_steps=args.teacher_steps // 2**stages, teacher_steps=args.teacher_steps,
                       steps_per_stage=per_stage if len(set(per_stage)) > 1 else per_stage[0],
                       teacher_solver=args.teacher_solver, lr_anneal=args.lr_anneal, weighting=args.weighting,
                       schedule=args.schedule, lr=args.pd_lr,
                       overrides=["log.progress=false", f"sample.every={min(per_stage)}", *args.pd_set])
        rows, cpu, wall, done = {}, 0.0, 0.0, 0
        for k in range(1, stages + 1):
            done += per_stage[k - 1]
            _, c, w = cpu_run(lambda k=k, done=done: distill(teacher, "progressive", out, resume=k > 1, stop_after=done,
                                                             **options))
            cpu, wall = cpu + c, wall + w
            n = args.teacher_steps // 2**k
            if n in NFES:
                r = load_run(out)
                x, nfe = draw(r.denoiser, r.process, r.shape, args.num, sampler="ddim", steps=n, schedule=args.schedule)
                rows[str(n)] = {"fid": judge.fid(x), "cpu_s": cpu, "wall_s": wall, "nfe": nfe}
                samples[("progressive", n)] = x
                print(args.pd_key, n, rows[str(n)], file=sys.stderr)
        rows["options"] = {k: v for k, v in options.items() if k != "overrides"} | {"set": args.pd_set}
        summary[args.pd_key] = rows
        save()

    for method, key in (("consistency", "consistency"), ("ict", "ict")):
        if method not in only:
            continue
        out = work / method
        shutil.rmtree(out, ignore_errors=True)
        if method == "consistency":
            _, c, w = cpu_run(lambda out=out: distill(teacher, "consistency", out, steps=args.cd_steps,
                                                      overrides=["log.progress=false"]))
        else:
            cfg = config.load("digits-ict", [f"optim.steps={args.ict_steps}", "log.progress=false"])
            _, c, w = cpu_run(lambda cfg=cfg, out=out: train(cfg, out))
        r = load_run(out)
        rows = {}
        for n in NFES:
            x, nfe = draw(r.denoiser, r.process, r.shape, args.num, sampler="consistency", steps=n)
            rows[str(n)] = {"fid": judge.fid(x), "cpu_s": c, "wall_s": w, "nfe": nfe}
            samples[(key, n)] = x
        summary[key] = rows
        save()
        print(key, rows, file=sys.stderr)

    # the table
    t = summary.get("teacher", {})
    head = "| steps (NFE) | teacher, best sampler | progressive | consistency distillation | consistency training |"
    lines = [head, "|---|---|---|---|---|"]
    for n in NFES:
        cells = [f"{t[str(n)][0]:.2f} ({t[str(n)][1]})" if str(n) in t else "-"]
        for key in (args.pd_key, "consistency", "ict"):
            v = summary.get(key, {}).get(str(n))
            cells.append(f"{v['fid']:.2f}" if v else "-")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    costs = [f"{k}: {summary[k][next(iter(summary[k]))]['cpu_s']:.0f} s CPU" for k in ("consistency", "ict")
             if k in summary]
    if args.pd_key in summary:
        costs.insert(0, "progressive: " + ", ".join(f"{n} steps after {v['cpu_s']:.0f} s CPU"
                                                   for n, v in summary[args.pd_key].items() if n in map(str, NFES)))
    print("\n".join(lines))
    print("\ncost: " + "; ".join(costs))
    if "teacher_heun18" in summary:
        print(f"teacher heun x18 ({summary['teacher_heun18']['nfe']} NFE): FID {summary['teacher_heun18']['fid']:.2f}")
    print(json.dumps(summary, indent=2))
    if args.figure and samples:
        from scorediff import plotting
        from scorediff.data import from_unit

        rows_img = [samples[k][:10] for k in sorted(samples, key=lambda k: (k[0], k[1])) if k[1] in (1, 4)]
        grid = torch.cat(rows_img)
        plotting.save_image_grid(from_unit(grid).float() / 255.0, ROOT / "docs" / "img" / "distill_digits.png", nrow=10)


if __name__ == "__main__":
    main()
