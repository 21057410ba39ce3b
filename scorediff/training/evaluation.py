"""Evaluation during training: the ``eval`` section of a config, run at the trainer's checkpoints.

``eval`` keys: ``every`` (steps; 0 = never), ``num`` samples, ``features`` (``raw`` | ``inception:PATH`` |
``classifier:PATH``), ``sampler`` / ``steps`` (null: the config's ``sample`` settings), ``split`` of the training
data set to score against (``test``; train on ``data.options.split=train`` so that it is held out), ``cache``
(folder of the reference features; null: the user cache), ``guidance`` (a text-conditioned run: its samples are
drawn for ``num`` captions of the ``split``, seeded, at this classifier-free scale; null: the conditional model).
The scoring itself is ``scorediff.eval.evaluate``.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import data, text_encoders
from ..data.captions import eval_prompts
from ..distributed import World
from ..eval import evaluate, make_features, prompted
from ..parameterizations import NetDenoiser
from ..runs.build import Components

METRICS = ("fid", "kid", "kid_std", "precision", "recall", "sliced_w2")


class CheckpointEvaluation:
    """The ``eval`` section of ``cfg`` for the components being trained: ``self(ema_model)`` gives the EMA model's
    metrics as ``{"eval/fid": ..., ...}`` for the metrics log. The reference data and its features are built at the
    first call and kept for the run."""

    def __init__(self, cfg: dict, components: Components, device: torch.device | str):
        if components.task != "diffusion" or components.cascade_factor:
            raise ValueError("eval.every: training-time evaluation samples the model unconditionally; it is not "
                             "available for an autoencoder or a super-resolution stage (set eval.every = 0)")
        self.cfg, self.components, self.device = cfg, components, device
        self._reference = None
        self._text = None  # the text encoder of a prompted run (a frozen pretrained one is kept)

    def reference(self):
        """(reference data, features, prompts): the ``eval.split`` of the training data set, its features, and
        for a text-conditioned run ``eval.num`` of its captions (``data.captions.eval_prompts``), built once."""
        if self._reference is None:
            cfg, opts = self.cfg, self.cfg["eval"]
            split = {**cfg["data"]["options"], "split": opts["split"]}
            ds = data.make(cfg["data"]["name"], **split)
            x = ds.x if hasattr(ds, "x") else torch.stack([ds[i][0] for i in range(len(ds))])
            prompts = None
            if cfg["text"]["encoder"] is not None:
                prompts = eval_prompts(ds, int(opts["num"]), 0, f"data set {cfg['data']['name']!r} (split "
                                                               f"{opts['split']!r})")
            self._reference = (x, make_features(opts["features"], self.device), prompts)
        return self._reference

    def __call__(self, ema_model: nn.Module) -> dict[str, float]:
        cfg, opts, c = self.cfg, self.cfg["eval"], self.components
        reference, features, prompts = self.reference()
        den = NetDenoiser(ema_model, c.process, c.param).eval()
        prompting = {}
        if prompts is not None:  # through the EMA model's own encoder (a frozen one is loaded once)
            self._text = text_encoders.from_config(cfg["text"], ema_model, self.device, pretrained=self._text)
            den, encode = prompted(den, self._text, opts["guidance"])
            prompting = {"prompts": prompts, "encode": encode}
        info = c.info
        num_classes = int(info["num_classes"]) if cfg["net"]["class_conditional"] else 0
        kind = info.get("kind", "images" if len(info.get("shape", ())) == 3 else "points")
        decode = getattr(c.dataset, "decode", None) if kind == "latents" else None
        res = evaluate(den, c.process, tuple(info["shape"]), reference, features, num=int(opts["num"]),
                       sampler=opts["sampler"] or cfg["sample"]["sampler"],
                       steps=int(opts["steps"] or cfg["sample"]["steps"]), num_classes=num_classes,
                       device=self.device, cache_dir=opts["cache"], decode=decode,
                       world=World(),  # rank 0 alone, while the other ranks wait for the next step
                       **prompting, **(cfg["sample"]["options"] if not opts["sampler"] else {}))
        return {f"eval/{k}": res[k] for k in METRICS}


__all__ = ["METRICS", "CheckpointEvaluation"]
