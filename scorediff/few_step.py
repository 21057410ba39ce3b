"""Few-step generation: progressive distillation, consistency distillation and consistency training.

Each method is an *objective*: an object with the role of a training loss (``objective(model, x0,
generator=None, **cond) -> (B,)`` per-example loss, ``model`` the student ``NetDenoiser``), so the one
training loop (``scorediff.training``) runs it with its progress bar, checkpoints and exact resume. What a
loss does not have, an objective adds through three optional methods the loop calls:
``after_step(net, step)`` after every optimizer step (EMA target, stage change), and ``state()`` /
``load_state(tensors, info)`` for the checkpoint (target weights, the current teacher, the step).

* ``ProgressiveDistillation`` (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion
  Models", Algorithm 2). On the student's grid of N steps (nested in the teacher's grid of 2N steps) a
  student step t -> s is trained to land where two teacher DDIM steps t -> m -> s land: with z'' the
  teacher's result, the student's target x0 is the x~ that one DDIM step maps onto z'',
      x~ = (z'' - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t)          # Alg. 2
  and the loss is w(t) ||x0_hat - x~||^2 with the paper's truncated-SNR weighting w = max(SNR, 1)
  ("snr_trunc", Sec. 4, for x0 / v students) or w = SNR + 1 ("snr_plus_one", the v loss). After each
  stage the student becomes the teacher and N halves, down to ``to_steps``. Two options beyond Algorithm 2:
  the first stage's z'' may come from two *Heun* steps of the trained teacher (``teacher_solver``: any
  z'' is reachable by one DDIM step, so the student then learns the teacher's ODE, not its 2N-step DDIM),
  and the learning rate may fall linearly to 0 within each stage (``lr_anneal``, the paper's Sec. 4).
* ``ConsistencyDistillation`` (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", Algorithm 2).
  On the discretisation t_1 = t_min < ... < t_N = t_max (Karras rho = 7 in sigma~ = sigma/alpha), draw
  n ~ U{1..N-1}, x_{t_{n+1}} = alpha x0 + sigma z, take one teacher ODE step to x^_{t_n} (the sampler's
  own step: ``heun``, ``ddim`` or ``dpm_solver_pp_2s`` on the grid [t_{n+1}, t_n]) and minimise
      d(f_theta(x_{t_{n+1}}, t_{n+1}), f_theta-(x^_{t_n}, t_n)),   theta- <- mu theta- + (1 - mu) theta  # eq. (8)
  with d the squared L2 (per dimension) or pseudo-Huber distance. N(k) follows the paper's curriculum
  (Appendix C, eq. (9)); with s0 = s1 it is the fixed N of the paper's CD runs.
* ``ConsistencyTraining`` (improved consistency training, Song & Dhariwal 2023, "Improved Techniques for
  Training Consistency Models"): no teacher and no EMA target (theta- = stopgrad(theta)), the same z for
  both points, x_{t_n} = alpha_n (x0 + sigma~_n z); pseudo-Huber d(x, y) = sqrt(||x - y||^2 + c^2) - c with
  c = 0.00054 sqrt(dim) (Sec. 3.3), weight lambda(sigma_n) = 1 / (sigma~_{n+1} - sigma~_n) (Sec. 3.2), n drawn
  from the discretised lognormal p(n) ~ erf((ln sigma~_{n+1} - P_mean) / (sqrt 2 P_std)) - erf((ln sigma~_n
  - P_mean) / (sqrt 2 P_std)) (Sec. 3.5, P_mean = -1.1, P_std = 2), and the doubling curriculum
  N(k) = min(s0 2^floor(k / K'), s1) + 1, K' = floor(K / (log2 floor(s1 / s0) + 1)) (Sec. 3.4).

The consistency function f_theta(x, t) is a ``NetDenoiser`` with the ``consistency`` parameterization
(c_skip(t_min) = 1, c_out(t_min) = 0, so f(x, t_min) = x / alpha(t_min) exactly, whatever the network);
it is sampled by the ``consistency`` sampler. Symbols: alpha, sigma are the process's, sigma~ = sigma / alpha.

Teacher steps use one time per group of examples: a sampler's step takes one grid for its batch, so the
batch is cut into ``time_groups`` contiguous groups, each with its own drawn step index (cheap, still
unbiased; the students' own evaluations are batched over all times).
"""

from __future__ import annotations

import bisect
import copy
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import schedules
from .losses.base import Loss
from .parameterizations import NetDenoiser, Parameterization
from .processes.base import Process
from .samplers import SAMPLERS
from .samplers._common import Grid, bind_cond
from .utils import ema_update_, mean_flat, unknown

TEACHER_SOLVERS = {"heun": "heun", "ddim": "ddim", "dpm_solver_pp": "dpm_solver_pp_2s"}
PD_WEIGHTINGS = ("snr_trunc", "snr_plus_one")
DISTANCES = ("l2", "pseudo_huber")


def teacher_step(teacher: Callable[..., Tensor], process: Process, x: Tensor, ts: list[float], solver: str,
                 **cond) -> Tensor:
    """Integrate the teacher's probability-flow ODE over the grid ``ts`` (one time for the whole batch)
    with the registered sampler's own step (``heun``, ``ddim`` or ``dpm_solver_pp``)."""
    if solver not in TEACHER_SOLVERS:
        raise unknown("teacher solver", solver, TEACHER_SOLVERS)
    with torch.no_grad():
        return SAMPLERS[TEACHER_SOLVERS[solver]](bind_cond(teacher, cond), process, x,
                                                 torch.tensor(ts, dtype=torch.float64))


def consistency_grid(process: Process, n: int) -> Tensor:
    """The discretisation t_1 = t_min < ... < t_n = t_max (Karras et al. rho = 7 in sigma~), ascending."""
    return schedules.make("karras", n - 1, process).flip(0)


def cd_curriculum(k: int, total: int, s0: int, s1: int) -> int:
    """N(k) = ceil(sqrt(k / K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1 (Song et al. 2023, Appendix C)."""
    return int(math.ceil(math.sqrt(k / max(total, 1) * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1)) + 1


def ict_curriculum(k: int, total: int, s0: int, s1: int) -> int:
    """N(k) = min(s0 2^floor(k / K'), s1) + 1, K' = floor(K / (log2 floor(s1 / s0) + 1)) (Song & Dhariwal 2023)."""
    k_prime = max(1, math.floor(total / (math.log2(math.floor(s1 / s0)) + 1)))
    return min(s0 * 2 ** (k // k_prime), s1) + 1


def pseudo_huber(a: Tensor, b: Tensor) -> Tensor:
    """sqrt(||a - b||^2 + c^2) - c per example, c = 0.00054 sqrt(dim) (Song & Dhariwal 2023, Sec. 3.3),
    divided by dim so that it is per dimension like the other losses."""
    d = a[0].numel()
    c = 0.00054 * math.sqrt(d)
    sq = (a - b).reshape(a.shape[0], -1).pow(2).sum(1)
    return (torch.sqrt(sq + c * c) - c) / d


def _distance(name: str, a: Tensor, b: Tensor) -> Tensor:
    return mean_flat((a - b) ** 2) if name == "l2" else pseudo_huber(a, b)


def _groups(batch: int, count: int) -> list[slice]:
    """``count`` contiguous, near-equal slices of range(batch)."""
    count = max(1, min(count, batch))
    edges = [round(i * batch / count) for i in range(count + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _slice_cond(cond: dict, sl: slice) -> dict:
    return {k: (v[sl] if torch.is_tensor(v) and v.ndim > 0 else v) for k, v in cond.items()}


def _unwrap(net: nn.Module) -> nn.Module:
    return getattr(net, "module", net)  # DistributedDataParallel


class Objective(Loss):
    """A loss with training state (see the module docstring): ``Loss``'s call and ``config()``, plus the step
    counter the curriculum and the stages read, ``after_step`` and the checkpoint hooks ``state`` / ``load_state``."""

    name = "objective"

    def __init__(self, process: Process, param: Parameterization):
        super().__init__(process, param)
        self.step = 0  # optimizer steps taken so far (the curriculum and the stages read it)

    def after_step(self, net: nn.Module, step: int) -> None:
        self.step = step

    def state(self) -> tuple[dict[str, Tensor], dict]:
        return {}, {"step": self.step}

    def load_state(self, tensors: dict[str, Tensor], info: dict | None) -> None:
        self.step = int((info or {}).get("step", 0))

    def _noised(self, x0: Tensor, t: Tensor, z: Tensor) -> Tensor:
        """x_t = alpha(t) x0 + sigma(t) z for per-example times t (drawn by the objective from its own grid)."""
        return self.process._marginal(x0, t.to(x0.dtype), z)


class ProgressiveDistillation(Objective):
    """Progressive distillation (Salimans & Ho 2022); see the module docstring.

    Args:
        teacher: the first stage's teacher Denoiser D(x, t, **cond) (a trained run's, or the exact oracle).
        student_net: the student's network; at the end of each stage a frozen copy of it (with ``param``)
            becomes the next stage's teacher.
        teacher_steps: the teacher's number of DDIM steps in the first stage (2N); a power-of-two multiple
            of ``to_steps``.
        to_steps: the student's steps at the end.
        steps_per_stage: optimizer steps per halving: one number, or one per stage (e.g. fewer in the easy
            first halvings, more in the last).
        schedule: the time grid (a ``scorediff.schedules`` name; grids of N and 2N steps must nest:
            "uniform", "karras", "logsnr" do).
        weighting: "snr_trunc" (max(SNR, 1)) or "snr_plus_one" on ||x0_hat - x~||^2.
        time_groups: groups of examples sharing one step index per batch.
        teacher_solver: the first stage's teacher step, "ddim" (the paper's) or "heun" / "dpm_solver_pp": the
            student then learns the teacher's ODE more accurately than its 2N-step DDIM (later stages' teachers
            are DDIM students, whose two DDIM steps are what the next student reproduces).
        lr_anneal: the learning rate falls linearly to 0 within each stage (Salimans & Ho, Sec. 4); the
            training loop reads ``lr_factor``.
    """

    name = "progressive"

    def __init__(self, process: Process, param: Parameterization, teacher: Callable[..., Tensor],
                 student_net: nn.Module, teacher_steps: int = 64, to_steps: int = 4,
                 steps_per_stage: int | Sequence[int] = 500, schedule: str = "karras", weighting: str = "snr_trunc",
                 time_groups: int = 4, teacher_solver: str = "ddim", lr_anneal: bool = False):
        super().__init__(process, param)
        ratio = teacher_steps / to_steps
        if to_steps < 1 or ratio < 2 or ratio != 2 ** round(math.log2(ratio)):
            raise ValueError(f"progressive: teacher_steps ({teacher_steps}) must be to_steps ({to_steps}) times a "
                             "power of two >= 2")
        if weighting not in PD_WEIGHTINGS:
            raise unknown("progressive weighting", weighting, PD_WEIGHTINGS)
        if teacher_solver not in TEACHER_SOLVERS:
            raise unknown("teacher solver", teacher_solver, TEACHER_SOLVERS)
        self.stages = round(math.log2(ratio))
        per_stage = [int(steps_per_stage)] * self.stages if isinstance(steps_per_stage, int) else list(steps_per_stage)
        if len(per_stage) != self.stages or min(per_stage) < 1:
            raise ValueError(f"progressive: steps_per_stage must be a positive number or {self.stages} positive numbers "
                             f"(one per halving {teacher_steps} -> {to_steps}), got {steps_per_stage}")
        self.teacher_steps, self.to_steps = int(teacher_steps), int(to_steps)
        self.steps_per_stage = per_stage[0] if len(set(per_stage)) == 1 else per_stage
        self.stage_ends = list(itertools.accumulate(per_stage))  # the optimizer step at which each stage ends
        self.schedule, self.weighting, self.time_groups = schedule, weighting, int(time_groups)
        self.teacher_solver, self.lr_anneal = teacher_solver, bool(lr_anneal)
        self.first_teacher = self.teacher = teacher
        # the later stages' teacher: a frozen copy of the student, refreshed at each stage's end
        self.teacher_net = copy.deepcopy(_unwrap(student_net)).eval().requires_grad_(False)
        self._grids: dict[int, tuple[list[float], list[float]]] = {}
        self.grids(self.student_steps(0))  # a bad or non-nesting schedule fails now, not at the first step

    @property
    def total_steps(self) -> int:
        return self.stage_ends[-1]

    def stage(self, step: int | None = None) -> int:
        """The stage (0 .. stages - 1) at a given optimizer step."""
        step = self.step if step is None else step
        return min(bisect.bisect_right(self.stage_ends, step), self.stages - 1)

    def student_steps(self, stage: int | None = None) -> int:
        return self.teacher_steps // 2 ** ((self.stage() if stage is None else stage) + 1)

    def lr_factor(self, step: int) -> float:
        """The learning rate's factor at optimizer step ``step`` (0, 1, ... counts the steps before it): with
        ``lr_anneal`` it falls linearly to 0 within each stage, as in Salimans & Ho (2022, Sec. 4), i.e.
        1 - j / L for the j-th step (from 0) of a stage of L steps; else 1."""
        if not self.lr_anneal:
            return 1.0
        k = self.stage(step)
        start = self.stage_ends[k - 1] if k > 0 else 0
        return max(0.0, 1.0 - (step - start) / (self.stage_ends[k] - start))

    def grids(self, n: int) -> tuple[list[float], list[float]]:
        """The student's grid of n steps and the teacher's of 2n steps (nested: node i = teacher node 2i)."""
        if n not in self._grids:
            s = schedules.make(self.schedule, n, self.process).tolist()
            t = schedules.make(self.schedule, 2 * n, self.process).tolist()
            if max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(s, t[::2])) > 1e-9:
                raise ValueError(f"progressive: schedule {self.schedule!r} grids of {n} and {2 * n} steps do not nest")
            self._grids[n] = (s, t)
        return self._grids[n]

    def target(self, x_t: Tensor, i: int, n: int, **cond) -> Tensor:
        """x~ for the student's step i of n from the state x_t at its node i: two teacher DDIM steps, inverted."""
        s_grid, t_grid = self.grids(n)
        # the trained teacher may take its two steps with a better solver; a student teacher is a DDIM model
        solver = self.teacher_solver if self.teacher is self.first_teacher else "ddim"
        z2 = teacher_step(self.teacher, self.process, x_t, t_grid[2 * i: 2 * i + 3], solver, **cond)
        g = Grid(self.process, [s_grid[i], s_grid[i + 1]], x_t)
        c = g.sigma[1] / g.sigma[0]
        return (z2 - c * x_t) / (g.alpha[1] - c * g.alpha[0])  # Algorithm 2, x~

    def __call__(self, model, x0: Tensor, generator: torch.Generator | None = None, **cond) -> Tensor:
        n = self.student_steps()
        s_grid, _ = self.grids(n)
        groups = _groups(x0.shape[0], self.time_groups)
        idx = torch.randint(0, n, (len(groups),), generator=generator, device=generator.device if generator else None)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        t = torch.empty(x0.shape[0], dtype=torch.float64, device=x0.device)
        for sl, i in zip(groups, idx.tolist()):
            t[sl] = s_grid[i]
        x_t = self._noised(x0, t, z)
        target = torch.cat([self.target(x_t[sl], i, n, **_slice_cond(cond, sl)) for sl, i in zip(groups, idx.tolist())])
        x0_hat = model(x_t, t.to(x0.dtype), **cond)
        c = self.process._coeffs(t)  # t from the objective's own grid: unchecked
        snr = (c.alpha / c.sigma) ** 2
        w = snr.clamp(min=1.0) if self.weighting == "snr_trunc" else snr + 1.0
        return w.to(x0.dtype) * mean_flat((x0_hat - target) ** 2)

    def after_step(self, net: nn.Module, step: int) -> None:
        super().after_step(net, step)
        if step in self.stage_ends[:-1]:
            # end of a stage: the student becomes the teacher of the next (Algorithm 2's outer loop)
            self.teacher_net.load_state_dict(_unwrap(net).state_dict())
            self._student_teacher()

    def _student_teacher(self) -> None:
        self.teacher = NetDenoiser(self.teacher_net, self.process, self.param)

    def state(self) -> tuple[dict[str, Tensor], dict]:
        tensors = {}
        if self.stage() > 0:
            tensors = {f"teacher.{k}": v.detach().clone() for k, v in self.teacher_net.state_dict().items()}
        return tensors, {"step": self.step, "stage": self.stage(), "student_steps": self.student_steps()}

    def load_state(self, tensors: dict[str, Tensor], info: dict | None) -> None:
        super().load_state(tensors, info)
        teacher = {k[len("teacher."):]: v for k, v in tensors.items() if k.startswith("teacher.")}
        if teacher:
            self.teacher_net.load_state_dict(teacher)
            self._student_teacher()
        else:
            self.teacher = self.first_teacher

    def options(self) -> dict:
        return {"teacher_steps": self.teacher_steps, "to_steps": self.to_steps, "steps_per_stage": self.steps_per_stage,
                "schedule": self.schedule, "weighting": self.weighting, "time_groups": self.time_groups,
                "teacher_solver": self.teacher_solver, "lr_anneal": self.lr_anneal}


class _Consistency(Objective):
    """What consistency distillation and consistency training share: the curriculum grid and the loss."""

    def __init__(self, process: Process, param: Parameterization, total_steps: int, s0: int, s1: int,
                 distance: str, time_groups: int):
        super().__init__(process, param)
        if distance not in DISTANCES:
            raise unknown("consistency distance", distance, DISTANCES)
        if not 1 <= s0 <= s1:
            raise ValueError(f"{self.name}: need 1 <= s0 <= s1, got s0={s0}, s1={s1}")
        self.total, self.s0, self.s1 = int(total_steps), int(s0), int(s1)
        self.distance, self.time_groups = distance, int(time_groups)
        self._grids: dict[int, Tensor] = {}

    def grid(self, n: int) -> Tensor:
        if n not in self._grids:
            self._grids[n] = consistency_grid(self.process, n)
        return self._grids[n]

    def discretisation(self) -> int:
        raise NotImplementedError


class ConsistencyDistillation(_Consistency):
    """Consistency distillation (Song et al. 2023, Algorithm 2); see the module docstring.

    Args:
        teacher: the teacher Denoiser D(x, t, **cond) (frozen).
        student_net: the student's network (its initial weights start the EMA target theta-).
        total_steps: K, the number of optimizer steps (for the curriculum).
        solver: the teacher's ODE step: "heun", "ddim" or "dpm_solver_pp".
        mu: the target's EMA decay (0.95 in the paper's CD runs).
        s0, s1: the curriculum's initial and final N - 1 (equal: a fixed N = s0 + 1; the paper's CD uses 18).
        distance: "l2" (squared, per dimension) or "pseudo_huber".
    """

    name = "consistency_distillation"

    def __init__(self, process: Process, param: Parameterization, teacher: Callable[..., Tensor],
                 student_net: nn.Module, total_steps: int = 10000, solver: str = "heun", mu: float = 0.95,
                 s0: int = 18, s1: int = 18, distance: str = "l2", time_groups: int = 4):
        super().__init__(process, param, total_steps, s0, s1, distance, time_groups)
        if solver not in TEACHER_SOLVERS:
            raise unknown("teacher solver", solver, TEACHER_SOLVERS)
        if not 0.0 <= mu < 1.0:
            raise ValueError(f"consistency_distillation: mu must lie in [0, 1), got {mu}")
        self.teacher, self.solver, self.mu = teacher, solver, float(mu)
        self.target_net = copy.deepcopy(_unwrap(student_net)).eval().requires_grad_(False)
        self.target = NetDenoiser(self.target_net, process, param)

    def discretisation(self) -> int:
        return cd_curriculum(self.step, self.total, self.s0, self.s1)

    def __call__(self, model, x0: Tensor, generator: torch.Generator | None = None, **cond) -> Tensor:
        ts = self.grid(self.discretisation())
        groups = _groups(x0.shape[0], self.time_groups)
        n = torch.randint(0, len(ts) - 1, (len(groups),), generator=generator,
                          device=generator.device if generator else None).tolist()
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        t_hi = torch.empty(x0.shape[0], dtype=torch.float64, device=x0.device)
        t_lo = torch.empty_like(t_hi)
        for sl, k in zip(groups, n):
            t_hi[sl], t_lo[sl] = ts[k + 1], ts[k]
        x_hi = self._noised(x0, t_hi, z)
        # one teacher ODE step t_{n+1} -> t_n per group (Algorithm 2, x^_{t_n})
        x_lo = torch.cat([teacher_step(self.teacher, self.process, x_hi[sl], [float(ts[k + 1]), float(ts[k])],
                                       self.solver, **_slice_cond(cond, sl)) for sl, k in zip(groups, n)])
        with torch.no_grad():
            f_target = self.target(x_lo, t_lo.to(x0.dtype), **cond)
        return _distance(self.distance, model(x_hi, t_hi.to(x0.dtype), **cond), f_target)

    @torch.no_grad()
    def after_step(self, net: nn.Module, step: int) -> None:
        super().after_step(net, step)
        ema_update_(self.target_net, _unwrap(net), self.mu)  # theta- <- mu theta- + (1 - mu) theta (eq. 8)

    def state(self) -> tuple[dict[str, Tensor], dict]:
        tensors = {f"target.{k}": v.detach().clone() for k, v in self.target_net.state_dict().items()}
        return tensors, {"step": self.step, "N": self.discretisation()}

    def load_state(self, tensors: dict[str, Tensor], info: dict | None) -> None:
        super().load_state(tensors, info)
        target = {k[len("target."):]: v for k, v in tensors.items() if k.startswith("target.")}
        if target:
            self.target_net.load_state_dict(target)

    def options(self) -> dict:
        return {"solver": self.solver, "mu": self.mu, "s0": self.s0, "s1": self.s1, "distance": self.distance,
                "time_groups": self.time_groups}


class ConsistencyTraining(_Consistency):
    """Improved consistency training (Song & Dhariwal 2023); see the module docstring.

    Args:
        total_steps: K, the number of optimizer steps (for the curriculum).
        s0, s1: initial and final N - 1 of the doubling curriculum (10 and 1280 in the paper).
        P_mean, P_std: the lognormal over sigma~ from which the step index is drawn (-1.1, 2.0).
        distance: "pseudo_huber" (the paper's) or "l2".
        weighting: "inverse_step" (1 / (sigma~_{n+1} - sigma~_n), the paper's) or "none".
    """

    name = "consistency_training"

    def __init__(self, process: Process, param: Parameterization, total_steps: int = 10000, s0: int = 10,
                 s1: int = 1280, P_mean: float = -1.1, P_std: float = 2.0, distance: str = "pseudo_huber",
                 weighting: str = "inverse_step"):
        super().__init__(process, param, total_steps, s0, s1, distance, 1)
        if weighting not in ("inverse_step", "none"):
            raise unknown("consistency_training weighting", weighting, ("inverse_step", "none"))
        if P_std <= 0:
            raise ValueError(f"consistency_training: P_std must be > 0, got {P_std}")
        self.P_mean, self.P_std, self.weighting = float(P_mean), float(P_std), weighting

    def discretisation(self) -> int:
        return ict_curriculum(self.step, self.total, self.s0, self.s1)

    def index_probs(self, ts: Tensor) -> Tensor:
        """p(n) over the N - 1 intervals: the lognormal mass of sigma~ between sigma~_n and sigma~_{n+1}."""
        st = self.process.coeffs(ts).sigma_tilde.clamp(max=1e30)
        cdf = torch.erf((torch.log(st) - self.P_mean) / (math.sqrt(2) * self.P_std))
        p = (cdf[1:] - cdf[:-1]).clamp(min=0)
        return p / p.sum()

    def __call__(self, model, x0: Tensor, generator: torch.Generator | None = None, **cond) -> Tensor:
        ts = self.grid(self.discretisation())
        n = torch.multinomial(self.index_probs(ts), x0.shape[0], replacement=True, generator=generator)
        z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        t_hi, t_lo = ts[n + 1].to(x0.device), ts[n].to(x0.device)
        with torch.no_grad():  # theta- = stopgrad(theta): the same network, same dropout stream order
            f_target = model(self._noised(x0, t_lo, z), t_lo.to(x0.dtype), **cond)
        d = _distance(self.distance, model(self._noised(x0, t_hi, z), t_hi.to(x0.dtype), **cond), f_target)
        if self.weighting == "inverse_step":
            st = self.process.coeffs(ts).sigma_tilde
            d = d * (1.0 / (st[n + 1] - st[n])).to(d.dtype).to(d.device)
        return d

    def options(self) -> dict:
        return {"s0": self.s0, "s1": self.s1, "P_mean": self.P_mean, "P_std": self.P_std, "distance": self.distance,
                "weighting": self.weighting}


# objectives a config can name (``loss.name``); the teacher-based ones are built by ``scorediff distill``
OBJECTIVES: dict[str, type[Objective]] = {
    "progressive": ProgressiveDistillation,
    "consistency_distillation": ConsistencyDistillation,
    "consistency_training": ConsistencyTraining,
}
NEEDS_TEACHER = ("progressive", "consistency_distillation")


def make(name: str, process: Process, param: Parameterization, total_steps: int, **options: Any) -> Objective:
    """The objective a training config names (only ``consistency_training`` needs no teacher)."""
    if name not in OBJECTIVES:
        raise unknown("objective", name, OBJECTIVES)
    if name in NEEDS_TEACHER:
        raise ValueError(f"loss {name!r} needs a teacher run: use `scorediff distill` (it resumes with --resume)")
    try:
        return OBJECTIVES[name](process, param, total_steps=total_steps, **options)
    except TypeError as e:
        raise ValueError(f"loss '{name}': bad option(s) {sorted(options)}: {e}") from None


__all__ = ["ConsistencyDistillation", "ConsistencyTraining", "OBJECTIVES", "Objective", "ProgressiveDistillation",
           "cd_curriculum", "consistency_grid", "ict_curriculum", "make", "pseudo_huber", "teacher_step"]
