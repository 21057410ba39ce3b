"""Evaluation during training: the ``eval`` section of a config, run at the trainer's checkpoints.

``eval`` keys: ``every`` (steps; 0 = never), ``num`` samples, ``features`` (``raw`` | ``inception:PATH`` |
``classifier:PATH``), ``sampler`` / ``steps`` (null: the config's ``sample`` settings), ``split`` of the training
data set to score against (``test``; train on ``data.options.split=train`` so that it is held out), ``cache``
(folder of the reference features; null: the user cache). The scoring itself is ``scorediff.eval.evaluate``.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import data
from ..distributed import World
from ..eval import evaluate, make_features
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

    def reference(self):
        """(reference data, features): the ``eval.split`` of the training data set, built once."""
        if self._reference is None:
            cfg, opts = self.cfg, self.cfg["eval"]
            ds = data.make(cfg["data"]["name"], **{**cfg["data"]["options"], "split": opts["split"]})
            x = ds.x if hasattr(ds, "x") else torch.stack([ds[i][0] for i in range(len(ds))])
            self._reference = (x, make_features(opts["features"], self.device))
        return self._reference

    def __call__(self, ema_model: nn.Module) -> dict[str, float]:
        cfg, opts, c = self.cfg, self.cfg["eval"], self.components
        reference, features = self.reference()
        den = NetDenoiser(ema_model, c.process, c.param).eval()
        info = c.info
        num_classes = int(info["num_classes"]) if cfg["net"]["class_conditional"] else 0
        kind = info.get("kind", "images" if len(info.get("shape", ())) == 3 else "points")
        decode = getattr(c.dataset, "decode", None) if kind == "latents" else None
        res = evaluate(den, c.process, tuple(info["shape"]), reference, features, num=int(opts["num"]),
                       sampler=opts["sampler"] or cfg["sample"]["sampler"],
                       steps=int(opts["steps"] or cfg["sample"]["steps"]), num_classes=num_classes,
                       device=self.device, cache_dir=opts["cache"], decode=decode,
                       world=World(),  # rank 0 alone, while the other ranks wait for the next step
                       **(cfg["sample"]["options"] if not opts["sampler"] else {}))
        return {f"eval/{k}": res[k] for k in METRICS}


__all__ = ["METRICS", "CheckpointEvaluation"]
