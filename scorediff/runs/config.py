"""Training configuration: one nested, JSON-able dict with defaults; data, never code.

A config is read from JSON, TOML (``tomllib``) or YAML (only if PyYAML is installed), or named
after a packaged ready config (``toy2d``, ``digits``, ``mnist28``, ``cifar10-ddpm``), merged over
``DEFAULTS`` and then patched by ``key.sub=value`` overrides (values parsed as JSON where possible).
Every key is checked: an unknown one raises ``ValueError`` naming it and the allowed keys. The
sub-trees marked ``FREE`` below (``options``, ``overrides``, ``net.config``) are passed through to
the component they configure, which checks them itself when it is built.
"""

from __future__ import annotations

import copy
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from ..data import DATASETS
from ..utils import parse_key_value


class _Free(dict):
    """Marks a sub-tree whose keys are the configured component's own options (checked when built)."""


FREE = _Free

# The learning-rate decays ``optim.schedule`` may name (their formulas: scorediff.training.lr_schedule).
LR_SCHEDULES = ("constant", "cosine", "inv_sqrt")

# The schema *is* the default config: every allowed key appears here with its default value.
DEFAULTS: dict[str, Any] = {
    "description": "",  # free text, for people
    "seed": 0,  # seeds every generator: data order, time t, noise, augmentation, dropout
    "device": "auto",  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    "precision": "fp32",  # "fp32" | "bf16" | "fp16" (autocast; fp16 uses a GradScaler)
    "threads": None,  # CPU intra-op threads (torch.set_num_threads); null: torch's default
    "data": {
        "name": "digits",  # scorediff.data.make(name, **options)
        "options": FREE(),
        "hflip": False,  # random horizontal flip of image batches (DDPM's CIFAR-10 augmentation)
        "workers": 0,  # streamed data (shards, hf): loader processes per rank, each reading its own shards
    },
    "process": {"name": "vp", "options": FREE()},  # scorediff.processes.make
    "parameterization": {"name": "eps", "options": FREE()},  # scorediff.parameterizations.make
    "loss": {"name": "dsm", "options": FREE()},  # scorediff.losses.make(name, process, param, **options)
    "net": {
        "preset": "unet-digits",  # scorediff.nets.make(preset or config, **overrides)
        "config": None,  # a full network config instead of a preset
        "overrides": FREE(),
        "class_conditional": False,  # feed the data's labels y to the network
        "label_dropout": 0.0,  # probability of training on the null label instead (classifier-free guidance)
    },
    # prompts (text-conditioned generation, scorediff.text_encoders): encoder null = none; "bytes": the built-in
    # byte-level Transformer trained jointly (options: width, depth, heads, max_length, mlp_ratio);
    # "pretrained": a frozen CLIP / T5 text encoder from the local folder `path` (the optional transformers
    # package). dropout: probability of training on the null prompt "" instead (classifier-free guidance).
    "text": {"encoder": None, "path": None, "options": FREE(), "dropout": 0.1},
    "optim": {  # AdamW with linear warm-up, then a decay over the planned run (training/lr_schedule.py)
        "lr": 2e-4,
        "weight_decay": 0.0,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "warmup_steps": 0,
        "warmup_fraction": None,  # warm-up as a fraction of the planned run instead of warmup_steps
        "schedule": "constant",  # decay after the warm-up: "constant" | "cosine" | "inv_sqrt"
        "grad_clip": 1.0,  # max global gradient norm; 0 or null switches clipping off
        "batch_size": 128,  # global batch (split over DDP ranks)
        "grad_accum": 1,  # micro-batches per optimizer step
        "steps": 10000,  # optimizer steps
        "max_minutes": None,  # a time budget: stop (checkpoint + sample grid) after this many minutes of training
    },
    # give one: decay per step, or its half-life in steps; rampup_ratio caps the half-life at that fraction
    # of the steps so far (EDM's EMA warm-up; null: off)
    "ema": {"decay": None, "half_life_steps": 500.0, "rampup_ratio": 0.05},
    "sample": {"sampler": "heun", "steps": 18, "num": 64, "every": 1000, "seed": 0, "options": FREE()},
    "log": {"every": 50, "progress": True, "tensorboard": True},
    "ckpt": {"every": 1000},
    # scale-out under torchrun (training/parallel.py): "ddp" | "fsdp" (FSDP2, sharded checkpoints), and
    # recomputing each block's activations in backward
    "dist": {"strategy": "ddp", "activation_checkpointing": False},
    # accelerator efficiency options (training/performance.py), off until benchmarks/gpu.py shows a win;
    # compile: null (off) or a torch.compile mode
    "perf": {"channels_last": False, "compile": None, "fused_adamw": False, "tf32": False},
    # latent diffusion: the data are s * E(x) of this frozen autoencoder (a scorediff autoencoder run or a
    # diffusers AutoencoderKL folder); scale: a number, "measure" (1 / std of the latents) or "config" (diffusers')
    "autoencoder": {"path": None, "scale": "measure"},
    # a super-resolution stage of a cascade: trained on (x, augmented downsample(x, factor)); 0: not a stage.
    # aug_max: the largest noise-conditioning augmentation std in training; aug_level: the one used to sample
    "cascade": {"factor": 0, "aug_max": 0.2, "aug_level": 0.0},
    # sequences / video: CSDI-style conditional training (scorediff.masking): task "forecast" | "impute" |
    # "interpolate" | "mixed" (null: unconditional); the network sees the known entries and their mask; fill:
    # what it sees where nothing is known, "zeros" (CSDI) or "previous" (the last known step before, nets.masked)
    "conditioning": {"task": None, "p_uncond": 0.1, "context": [0.25, 0.75], "known": [0.1, 0.9], "fill": "zeros"},
    # scorediff.training.evaluation: FID / KID / precision-recall of the EMA model every `every` steps (0: never)
    "eval": {"every": 0, "num": 500, "features": "raw", "sampler": None, "steps": None, "split": "test",
             "cache": None,
             # text-conditioned runs sample eval.split's captions; guidance: their classifier-free scale (null: 1)
             "guidance": None},
}

PRECISIONS = ("fp32", "bf16", "fp16")


def _check(tree: dict, schema: dict, prefix: str = "") -> None:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if key not in schema:
            raise ValueError(f"unknown config key {path!r}; allowed: {', '.join(schema)}")
        sub = schema[key]
        if isinstance(sub, _Free):
            if not isinstance(value, dict):
                raise ValueError(f"config key {path!r} must be a mapping of options, got {value!r}")
        elif isinstance(sub, dict):
            if not isinstance(value, dict):
                raise ValueError(f"config key {path!r} must be a mapping with keys {', '.join(sub)}, got {value!r}")
            _check(value, sub, path + ".")


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not isinstance(out.get(key), _Free):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _plain(tree: Any) -> Any:
    """Strip the FREE markers: a resolved config is plain JSON."""
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_plain(v) for v in tree]
    return tree


def _validate_values(cfg: dict) -> None:
    """Check scalar values whose error would otherwise surface deep inside training."""
    o = cfg["optim"]

    def positive(path: str, value: Any, integer: bool = False, allow_zero: bool = False) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value >= 0 if allow_zero else value > 0) and (not integer or float(value).is_integer())
        if not ok:
            kind = "integer" if integer else "number"
            raise ValueError(f"config {path} must be a {'non-negative' if allow_zero else 'positive'} {kind}, got {value!r}")

    positive("optim.lr", o["lr"])
    if o["lr"] > 1:  # AdamW moves each weight by about lr per step: above 1 the weights blow up at once
        raise ValueError(f"config optim.lr must be a positive number at most 1 (AdamW's step size), got {o['lr']!r}")
    positive("optim.weight_decay", o["weight_decay"], allow_zero=True)
    positive("optim.warmup_steps", o["warmup_steps"], integer=True, allow_zero=True)
    positive("optim.batch_size", o["batch_size"], integer=True)
    positive("optim.grad_accum", o["grad_accum"], integer=True)
    positive("optim.steps", o["steps"], integer=True)
    if o["grad_clip"] is not None:
        positive("optim.grad_clip", o["grad_clip"], allow_zero=True)
    if o["warmup_fraction"] is not None:
        wf = o["warmup_fraction"]
        if not (isinstance(wf, (int, float)) and not isinstance(wf, bool) and 0 <= wf < 1):
            raise ValueError(f"config optim.warmup_fraction must be a number in [0, 1) or null, got {wf!r}")
    if o["schedule"] not in LR_SCHEDULES:
        raise ValueError(f"config optim.schedule {o['schedule']!r} unknown; one of: {', '.join(LR_SCHEDULES)}")
    if o["max_minutes"] is not None:
        positive("optim.max_minutes", o["max_minutes"])
    if not (isinstance(o["betas"], (list, tuple)) and len(o["betas"]) == 2 and all(0 <= b < 1 for b in o["betas"])):
        raise ValueError(f"config optim.betas must be two numbers in [0, 1), got {o['betas']!r}")
    p_drop = cfg["net"]["label_dropout"]
    if not (isinstance(p_drop, (int, float)) and 0 <= p_drop < 1):
        raise ValueError(f"config net.label_dropout must be a probability in [0, 1), got {p_drop!r}")
    if p_drop > 0 and not cfg["net"]["class_conditional"]:
        raise ValueError("config net.label_dropout > 0 needs net.class_conditional = true (there are no labels to drop)")
    t = cfg["text"]
    if t["encoder"] not in (None, "bytes", "pretrained"):
        raise ValueError(f"config text.encoder {t['encoder']!r} unknown; one of: bytes, pretrained (or null)")
    if t["encoder"] == "pretrained" and not isinstance(t["path"], str):
        raise ValueError("config text.encoder 'pretrained' needs text.path, a local folder with the text encoder")
    if not (isinstance(t["dropout"], (int, float)) and 0 <= t["dropout"] < 1):
        raise ValueError(f"config text.dropout must be a probability in [0, 1), got {t['dropout']!r}")
    if cfg["threads"] is not None and (not isinstance(cfg["threads"], int) or cfg["threads"] < 1):
        raise ValueError(f"threads must be a positive integer or null, got {cfg['threads']!r}")
    if cfg["precision"] not in PRECISIONS:
        raise ValueError(f"config precision {cfg['precision']!r} unknown; one of: {', '.join(PRECISIONS)}")
    e = cfg["ema"]
    if e["decay"] is not None:
        if not (isinstance(e["decay"], (int, float)) and 0 <= e["decay"] < 1):
            raise ValueError(f"config ema.decay must lie in [0, 1), got {e['decay']!r}")
    elif e["half_life_steps"] is not None:
        positive("ema.half_life_steps", e["half_life_steps"])
    if e["rampup_ratio"] is not None:
        positive("ema.rampup_ratio", e["rampup_ratio"])
    for path, value in (("sample.every", cfg["sample"]["every"]), ("log.every", cfg["log"]["every"]),
                        ("ckpt.every", cfg["ckpt"]["every"]), ("eval.every", cfg["eval"]["every"])):
        positive(path, value, integer=True, allow_zero=True)
    positive("sample.num", cfg["sample"]["num"], integer=True)
    if cfg["eval"]["guidance"] is not None:
        positive("eval.guidance", cfg["eval"]["guidance"], allow_zero=True)
        if cfg["text"]["encoder"] is None or not cfg["text"]["dropout"] > 0:
            raise ValueError("config eval.guidance guides a text-conditioned run's prompts: it needs text.encoder and "
                             "text.dropout > 0 (the null prompt's branch)")
    positive("data.workers", cfg["data"]["workers"], integer=True, allow_zero=True)
    positive("sample.steps", cfg["sample"]["steps"], integer=True)
    c = cfg["cascade"]
    positive("cascade.factor", c["factor"], integer=True, allow_zero=True)
    if c["factor"] == 1:
        raise ValueError("config cascade.factor must be 0 (not a stage) or a resolution ratio >= 2, got 1")
    positive("cascade.aug_max", c["aug_max"], allow_zero=True)
    positive("cascade.aug_level", c["aug_level"], allow_zero=True)
    a = cfg["autoencoder"]
    if a["path"] is not None and not isinstance(a["path"], str):
        raise ValueError(f"config autoencoder.path must be a folder (string) or null, got {a['path']!r}")
    if not (a["scale"] in ("measure", "config") or (isinstance(a["scale"], (int, float)) and a["scale"] > 0)):
        raise ValueError(f"config autoencoder.scale must be a positive number, 'measure' or 'config', got {a['scale']!r}")
    _validate_dist(cfg)
    _validate_perf(cfg)
    _validate_streaming(cfg)
    if not isinstance(cfg["device"], str):
        raise ValueError(f"config device must be a string (auto, cpu, cuda, cuda:N, mps), got {cfg['device']!r}")
    for path, seed in (("seed", cfg["seed"]), ("sample.seed", cfg["sample"]["seed"])):
        # torch.Generator.manual_seed takes a signed 64-bit integer: name a larger one here, not as an overflow
        if not isinstance(seed, int) or isinstance(seed, bool) or not -2**63 <= seed < 2**63:
            raise ValueError(f"config {path} must be an integer in -2^63..2^63-1, got {seed!r}")


STRATEGIES = ("ddp", "fsdp")  # dist.strategy: DistributedDataParallel or FSDP2 (training/parallel.py)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # perf.compile


def _validate_dist(cfg: dict) -> None:
    d = cfg["dist"]
    if d["strategy"] not in STRATEGIES:
        raise ValueError(f"config dist.strategy {d['strategy']!r} unknown; one of: {', '.join(STRATEGIES)}")
    if not isinstance(d["activation_checkpointing"], bool):
        raise ValueError(f"config dist.activation_checkpointing must be true or false, got {d['activation_checkpointing']!r}")
    if d["strategy"] == "fsdp" and cfg["eval"]["every"]:
        raise ValueError("config eval.every > 0 needs dist.strategy \"ddp\": the evaluation during training runs on "
                         "rank 0 alone, which a sharded network cannot; evaluate the run afterwards with scorediff eval")


def _validate_perf(cfg: dict) -> None:
    p = cfg["perf"]
    for key in ("channels_last", "fused_adamw", "tf32"):
        if not isinstance(p[key], bool):
            raise ValueError(f"config perf.{key} must be true or false, got {p[key]!r}")
    if p["compile"] is not None and p["compile"] not in COMPILE_MODES:
        raise ValueError(f"config perf.compile {p['compile']!r} unknown; null (off) or one of: {', '.join(COMPILE_MODES)}")


def _validate_streaming(cfg: dict) -> None:
    """What a streamed data set cannot do, named before the run starts."""

    name = cfg["data"]["name"]
    if getattr(DATASETS.get(name), "streaming", False) and cfg["eval"]["every"]:
        raise ValueError(f"config eval.every > 0 needs a data set with random access; data {name!r} is streamed "
                         "shard by shard (evaluate the run afterwards: scorediff eval RUN --ref ...)")


def resolve(config: dict | None = None, overrides: list[str] | dict | None = None) -> dict:
    """The whole config: ``DEFAULTS`` <- ``config`` <- ``overrides``, every key checked."""
    config = config or {}
    _check(config, DEFAULTS)
    cfg = _merge(DEFAULTS, config)
    if overrides:
        items = overrides.items() if isinstance(overrides, dict) else (parse_override(s) for s in overrides)
        for key, value in items:
            set_key(cfg, key, value)
    _check(cfg, DEFAULTS)
    _validate_values(cfg)
    return _plain(cfg)


# Fixed for the life of a run: a checkpoint's weights, data order and noise streams only mean something with
# these. Everything else (optimizer, EMA, sampling, logging, checkpoints, device, precision) may change on resume.
FIXED_ON_RESUME = ("seed", "data", "process", "parameterization", "loss", "net", "autoencoder", "cascade", "text")


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):  # an empty mapping adds no key: {} and "absent" are the same options
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resume_changes(stored: dict, new: dict) -> dict[str, list]:
    """``{key: [old, new]}`` for every value a resumed session changes; ValueError for a fixed key."""
    a, b = flatten(stored), flatten(new)
    changes = {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
    fixed = [k for k in changes if k.split(".")[0] in FIXED_ON_RESUME]
    if fixed:
        k = fixed[0]
        old, new = ("unset" if v is None else repr(v) for v in changes[k])
        raise ValueError(
            f"cannot change {k} on resume (the run has {old}, asked {new}): "
            f"{', '.join(FIXED_ON_RESUME)} are fixed for a run; start a new run with another --out to change them"
        )
    return changes


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-3"`` -> ("optim.lr", 0.001); the value is JSON where it parses, else a string."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key.sub=value")
    return parse_key_value(text, "--set")


def set_key(cfg: dict, dotted: str, value: Any) -> None:
    """Set ``cfg[a][b][c] = value`` for ``dotted = "a.b.c"``, checking each key against the schema."""
    parts = dotted.split(".")
    node, schema = cfg, DEFAULTS
    for i, part in enumerate(parts):
        path = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if schema is not None and part not in schema:
            raise ValueError(f"unknown config key {path!r}; allowed: {', '.join(schema)}")
        sub = schema[part] if schema is not None else None
        if last:
            node[part] = value
            return
        if schema is not None and not isinstance(sub, dict):
            raise ValueError(f"config key {'.'.join(parts[:i + 1])!r} is a value, not a mapping; cannot set {dotted!r}")
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
        # below a FREE node (component options) any key is allowed here; the component checks it
        schema = None if (sub is None or isinstance(sub, _Free)) else sub


# -- files and packaged configs ---------------------------------------------------------------------


def packaged_configs() -> list[str]:
    """Names of the ready configs shipped in ``scorediff/configs``."""
    root = resources.files("scorediff") / "configs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json"))


def read(path_or_name: str | Path) -> dict:
    """Read a config from a .json / .toml / .yaml file, or a packaged config by name."""
    path = Path(path_or_name)
    if not path.exists():
        name = str(path_or_name)
        if name in packaged_configs():
            return json.loads((resources.files("scorediff") / "configs" / f"{name}.json").read_text())
        raise FileNotFoundError(
            f"config {name!r} is neither a file nor a packaged config; packaged: {', '.join(packaged_configs())}"
        )
    if path.is_dir():
        if (path / "config.json").exists():  # a run folder
            path = path / "config.json"
        else:
            raise FileNotFoundError(f"config {str(path)!r} is a folder without config.json")
    suffix = path.suffix.lower()
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"config {str(path)!r} is not a text file") from None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config {str(path)!r} is not valid JSON ({e})") from None
    elif suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config {str(path)!r} is not valid TOML ({e})") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ModuleNotFoundError:
            raise ValueError(f"config {str(path)!r} is YAML but PyYAML is not installed; use JSON or TOML") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"config {str(path)!r} is not valid YAML ({' '.join(str(e).split())})") from None
    else:
        raise ValueError(f"config {str(path)!r}: unknown format {suffix!r}; expected .json, .toml, .yaml")
    if not isinstance(data, dict):
        raise ValueError(f"config {str(path)!r} must hold a mapping at the top level")
    return data


def load(path_or_name: str | Path | None = None, overrides: list[str] | dict | None = None) -> dict:
    """Read (or take the default when None) and resolve a config."""
    return resolve(read(path_or_name) if path_or_name is not None else {}, overrides)
