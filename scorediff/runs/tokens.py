"""Token runs (discrete diffusion and its autoregressive baseline) in the one training loop and run folders.

A config whose ``process.name`` is a discrete process (``absorbing``, ``uniform``) or ``autoregressive`` trains a
``TokenTransformer`` on token data (``data.info.kind == "tokens"``: ``text``, ``pydoc-text``, ``digits-tokens``):
* ``build`` makes the components (``Components.task`` "discrete" | "autoregressive"; ``Components.model`` wraps the
  network into the callable the loss takes); ``parameterization.name`` "mean" (default) or "ratio" (SEDD);
  ``loss.name`` "score_entropy", "mdlm" or "autoregressive";
* the loop calls ``check_forward``, ``sample`` and ``save_samples`` here (text files and, for pixel tokens, grids);
* ``token_run`` makes such a run folder (read by ``run.load_run``) (a reader: no lock, the last committed checkpoint), and
  ``likelihood`` gives its bound (diffusion) or exact value (autoregressive) on a data split.

Everything else (run folder, lock, exact resume, EMA, DDP, budget) is the loop's, unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from .. import data, discrete, nets, plotting
from ..data.text import tokenizer_from_record
from ..discrete import autoregressive
from ..discrete.samplers import options_of
from ..utils import check_options
from . import checkpoint as ckpt
from .components import Components, info_dict

TASKS = ("discrete", "autoregressive")
PROCESS_NAMES = (*discrete.PROCESSES, "autoregressive")
LOSSES = (*discrete.OBJECTIVES, "autoregressive")


def is_token_config(cfg: dict) -> bool:
    return cfg["process"]["name"] in PROCESS_NAMES


def _process(cfg: dict, vocab: int):
    if cfg["process"]["name"] == "autoregressive":
        return None
    return discrete.make(cfg["process"]["name"], vocab=vocab, **cfg["process"]["options"])


def build_net(cfg: dict, info: dict) -> nn.Module:
    """The token network of a config for data ``info`` (vocab and length from the data)."""

    ncfg = cfg["net"]
    spec = ncfg["config"] if ncfg["config"] is not None else ncfg["preset"]
    base = spec if isinstance(spec, dict) else nets.PRESETS.get(spec, {})
    if base.get("type") != "token_transformer" and ncfg["overrides"].get("type") != "token_transformer":
        raise ValueError(f"a token run needs a token_transformer network (net.preset tokens-tiny, tokens-small, ...), "
                         f"got {spec!r}")
    ar = cfg["process"]["name"] == "autoregressive"
    # the ratio network scores every state (S = V + 1 with the absorbing mask, V for uniform)
    ratio = cfg["parameterization"]["name"] == "ratio" and not ar
    out = info["vocab"] + (cfg["process"]["name"] == "absorbing") if ratio else info["vocab"]
    opts = {"vocab": int(info["vocab"]), "length": int(info["shape"][0]), "out": out, "causal": ar,
            **ncfg["overrides"]}
    block = cfg["process"]["options"].get("block")
    if block:  # block diffusion: the network attends block-causally over the process's blocks
        opts["block"] = block
    if ncfg["class_conditional"]:
        if not info.get("num_classes"):
            raise ValueError(f"net.class_conditional is set but data {cfg['data']['name']!r} has no classes")
        opts.setdefault("num_classes", int(info["num_classes"]))
    return nets.make(spec, **opts)


def model_of(cfg: dict, process, net: nn.Module):
    """The callable a token loss takes: ``NetModel`` (diffusion) or ``ARModel`` (autoregressive)."""
    if process is None:
        return autoregressive.ARModel(net)
    return discrete.NetModel(net, process, cfg["parameterization"]["name"])


def check_config(cfg: dict) -> None:
    """Names and options of a token config, before any data is read."""
    ar = cfg["process"]["name"] == "autoregressive"
    loss = cfg["loss"]["name"]
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r} unknown for a token run; one of: {', '.join(LOSSES)}")
    if ar != (loss == "autoregressive"):
        raise ValueError("process 'autoregressive' goes with loss 'autoregressive' and no other "
                         f"(got process {cfg['process']['name']!r}, loss {loss!r})")
    allowed = {"mdlm": ("weighting", "t_range"), "score_entropy": ("t_range",)}.get(loss, ())
    check_options(f"loss {loss!r}", cfg["loss"]["options"], allowed)
    if cfg["parameterization"]["name"] not in discrete.NetModel.PARAMETERIZATIONS:
        raise ValueError(f"parameterization {cfg['parameterization']['name']!r} unknown for a token run; "
                         "one of: mean, ratio")
    if cfg["process"]["options"].get("block") and cfg["parameterization"]["name"] != "mean":
        raise ValueError("block diffusion (process.options.block) takes parameterization 'mean', not "
                         f"{cfg['parameterization']['name']!r}")
    s = cfg["sample"]
    if not ar:
        name = s["sampler"]
        if name not in discrete.SAMPLERS:
            raise ValueError(f"discrete sampler {name!r} unknown; one of: {', '.join(discrete.SAMPLERS)}")

        check_options(f"discrete sampler {name!r}", s["options"], options_of(name))


def build(cfg: dict):
    """The components of a token config (``Components`` with task "discrete" or "autoregressive")."""

    check_config(cfg)
    try:
        dataset = data.make(cfg["data"]["name"], **cfg["data"]["options"])
    except TypeError as e:
        raise ValueError(f"data {cfg['data']['name']!r}: {e}; set it with --set data.options.KEY=VALUE") from None
    info = info_dict(dataset.info)
    if info.get("kind") != "tokens":
        raise ValueError(f"process {cfg['process']['name']!r} needs token data (text, pydoc-text, digits-tokens), "
                         f"got data {cfg['data']['name']!r} of kind {info.get('kind')!r}")
    process = _process(cfg, int(info["vocab"]))
    if process is not None:
        process.check_tokens(dataset.x, f"data {cfg['data']['name']!r}")
        if process.name == "uniform" and cfg["loss"]["name"] == "mdlm":
            raise ValueError("loss 'mdlm' needs the absorbing process, got 'uniform'")
    net = build_net(cfg, info)
    loss = (autoregressive.ARLoss() if process is None
            else discrete.DiscreteLoss(cfg["loss"]["name"], process, **cfg["loss"]["options"]))
    task = "autoregressive" if process is None else "discrete"
    return Components(dataset, info, net, process, None, loss, task, model=lambda module: model_of(cfg, process, module))


def check_forward(trainer) -> None:
    """One tiny forward pass: a network that does not fit the data fails now, in one line."""
    L, V = int(trainer.info["shape"][0]), int(trainer.info["vocab"])
    x = torch.zeros((2, L), dtype=torch.long, device=trainer.device)
    cond = trainer._cond(torch.zeros(2, dtype=torch.long, device=trainer.device))
    try:
        with torch.no_grad():
            model = trainer.components.model(trainer.net)
            out = model(x, torch.full((2,), 0.5, device=trainer.device), **cond)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"network does not fit token data of length {L}, vocabulary {V}: {e}") from None
    if out.shape != (2, L, V):
        raise ValueError(f"network output shape {tuple(out.shape[1:])} differs from (length, vocab) = {(L, V)}")


def sample_tokens(model, process, num: int, length: int, sampler: str | None, steps: int | None, seed: int,
                  device, cond: dict | None = None, **options) -> Tensor:
    """(num, length) token ids from a token model (diffusion: ``discrete.sample``; autoregressive: left to right)."""
    from functools import partial

    cond = cond or {}
    if process is None:  # the baseline takes the decoding options only
        extra = set(options) - set(discrete.samplers.COMMON_OPTIONS)
        if extra:
            raise ValueError(f"an autoregressive run takes the options {', '.join(discrete.samplers.COMMON_OPTIONS)}, "
                             f"not {', '.join(sorted(extra))}")
        return autoregressive.sample(model, (num, length), seed=seed, device=device, **options, **cond)
    fn = partial(model, **cond) if cond else model
    return discrete.sample(fn, process, (num, length), sampler=sampler, steps=steps, seed=seed, device=device,
                           **options)


@torch.no_grad()
def sample(trainer, num: int | None = None) -> Tensor:
    """Samples of the EMA model with the run's sampler (the loop's sample grid)."""
    s = trainer.settings.sample
    num = num or s.num
    model = trainer.components.model(trainer.ema.model.eval())
    cond = {}
    if trainer.settings.class_conditional:
        cond = {"y": torch.arange(num, device=trainer.device) % int(trainer.info["num_classes"])}
    return sample_tokens(model, trainer.process, num, int(trainer.info["shape"][0]), s.sampler, s.steps, s.seed,
                         trainer.device, cond, **s.options)


def decode(info: dict, x: Tensor) -> list[str]:
    """Token sequences as text (one string per sequence); pixel tokens as rows of level digits."""

    if info.get("image"):
        return [" ".join(f"{int(v):2d}" for v in row) for row in x.cpu()]
    tok = tokenizer_from_record(info["tokenizer"])
    return [tok.decode(row.tolist()) for row in x.cpu()]


def save_samples(trainer, x: Tensor) -> Path:
    """``samples/step_N.txt`` (the decoded samples) and ``samples/step_N.png`` (a grid for pixel tokens, the
    text rendered otherwise), so that the report shows them."""
    out = trainer.out / "samples"
    out.mkdir(parents=True, exist_ok=True)
    txt = out / f"step_{trainer.step:06d}.txt"
    texts = decode(trainer.info, x)
    txt.write_text("\n\n".join(f"--- sample {i}\n{t}" for i, t in enumerate(texts)) + "\n", encoding="utf-8")
    path = out / f"step_{trainer.step:06d}.png"
    save_picture(trainer.info, x, path, title=f"step {trainer.step}")
    return path


def save_picture(info: dict, x: Tensor, path: Path, title: str = "") -> Path:
    """A PNG of token samples: the image grid of pixel tokens, else the first samples' text."""

    if info.get("image"):
        H, W = info["image"]
        levels = int(info.get("levels", info["vocab"]))
        img = x.cpu().float().reshape(-1, 1, H, W) / (levels - 1) * 2 - 1  # levels -> [-1, 1]
        return plotting.save_samples(img, "images", path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    texts = [t.replace("\n", "\u21b5") for t in decode(info, x[:8])]
    width = 100
    lines = []
    for t in texts:
        lines += [t[i: i + width] for i in range(0, len(t), width)] + [""]
    fig = plt.figure(figsize=(10, 0.18 * len(lines) + 0.6))
    fig.text(0.01, 0.99, (title + "\n\n" if title else "") + "\n".join(lines), family="monospace", fontsize=7,
             va="top")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- reading a token run --------------------------------------------------------------------------------------


@dataclass
class TokenRun:
    """A trained token model: ``model(x_t, t, **cond) -> log p(x0 | x_t)`` (diffusion) or ``ARModel``."""

    model: Any
    process: Any  # a discrete process, or None (autoregressive)
    config: dict
    info: dict
    path: Path
    step: int
    ema: bool

    task = property(lambda self: "autoregressive" if self.process is None else "discrete")
    net = property(lambda self: self.model.net)
    shape = property(lambda self: tuple(self.info["shape"]))
    kind = property(lambda self: "tokens")
    class_conditional = property(lambda self: bool(self.config["net"]["class_conditional"]))

    @property
    def param(self):
        return SimpleNamespace(name=self.config["parameterization"]["name"] if self.process is not None else "-")

    def decode(self, x: Tensor) -> list[str]:
        return decode(self.info, x)

    def require_task(self, task: str, command: str) -> None:
        raise ValueError(f"{command}: run {str(self.path)!r} is a token model ({self.task}); "
                         "use scorediff sample / likelihood / report")


def token_run(net: nn.Module, cfg: dict, info: dict, path: Path, step: int, ema: bool, device) -> TokenRun:
    """A token run from its network with loaded weights (``run.load_run`` reads the files)."""
    process = _process(cfg, int(info["vocab"]))
    model = model_of(cfg, process, net.to(device).eval().requires_grad_(False))
    return TokenRun(model, process, cfg, info, path, step, ema)


def check_data(run: TokenRun, info: dict, what_data: str) -> None:
    """One line when data do not fit a run: another vocabulary, tokenizer or sequence length."""
    for key in ("vocab", "tokenizer", "shape"):
        if info.get(key) != run.info.get(key):
            what = {"vocab": "vocabulary size", "tokenizer": "vocabulary", "shape": "sequence length"}[key]
            a, b = run.info.get(key), info.get(key)
            if key == "tokenizer":
                a, b = _vocab_summary(a), _vocab_summary(b)
            raise ValueError(f"{what_data} does not match run {str(run.path)!r}: {what} {b} in the data, "
                             f"{a} in the run")


def check_resume(out: Path, info: dict) -> None:
    """Resuming a token run on data whose vocabulary, tokenizer or length differ from the run's: one line, before
    anything is written (the config may be unchanged while a text file under it changed)."""

    path = Path(out) / "info.json"
    stored = ckpt.read_json(path).get("data", {}) if path.exists() else {}
    run = TokenRun(None, None, {}, stored, Path(out), 0, True)
    check_data(run, info, "the data of this session (a changed file?)")


def _vocab_summary(record: dict | None) -> str:
    record = record or {}
    if record.get("kind") == "char":
        return f"of {len(record['chars'])} characters {record['chars'][:20]!r}..."
    return repr(record)


@torch.no_grad()
def likelihood(run: TokenRun, x: Tensor, *, samples: int = 16, seed: int = 0, batch: int = 64,
               objective: str | None = None) -> dict:
    """-log p(x) of token data under a run: the ELBO bound (diffusion; ``samples`` times per sequence) or the exact
    value (autoregressive). Returns nats/sequence, its standard error, bits per token and perplexity."""
    if x.ndim != 2 or x.shape[1] != run.shape[0]:
        raise ValueError(f"data of shape {tuple(x.shape)} do not fit the run's sequences of length {run.shape[0]}")
    V = int(run.info["vocab"])
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= V):
        raise ValueError(f"token ids from {int(x.min())} to {int(x.max())}; the run's vocabulary is 0..{V - 1}")
    device = next(run.net.parameters()).device
    nats, var = [], []
    g = torch.Generator(device).manual_seed(seed)
    for i in range(0, len(x), batch):
        xb = x[i: i + batch].to(device)
        if run.process is None:
            nll = autoregressive.nll(run.model, xb)
            nats.append(nll)
            var.append(torch.zeros_like(nll))
        else:
            obj = objective or ("mdlm" if run.process.mask_index is not None else "score_entropy")
            terms = discrete.elbo_terms(run.model, run.process, xb, objective=obj, samples=samples, generator=g)
            nats.append(terms.mean(0))
            var.append(terms.var(0) / samples if samples > 1 else torch.zeros_like(terms[0]))
    nats_all, var_all = torch.cat(nats).double(), torch.cat(var).double()
    L = x.shape[1]
    mean = float(nats_all.mean())
    # standard error of the mean over sequences: spread across sequences plus each one's Monte Carlo error
    se = float((nats_all.var() / len(nats_all) + var_all.mean() / len(nats_all)).sqrt()) if len(nats_all) > 1 else 0.0
    out = {"sequences": len(nats_all), "length": L, "nats_per_sequence": mean, "se": se,
           "bits_per_token": mean / (L * math.log(2)), "bits_per_token_se": se / (L * math.log(2)),
           "perplexity": math.exp(mean / L), "bound": run.process is not None}
    if run.info.get("tokenizer", {}).get("kind") in ("bpe", "file"):  # subwords: also per character of text
        chars = sum(len(t) for t in decode(run.info, x)) / len(x)
        out.update(characters_per_sequence=chars, bits_per_character=mean / (chars * math.log(2)),
                   bits_per_character_se=se / (chars * math.log(2)))
    return out
