"""``scorediff sample`` and ``scorediff likelihood`` for token runs (discrete diffusion, autoregressive baseline).

Not a command of its own: ``sample`` and ``likelihood`` hand a token run (``TokenRun``) to these two functions.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..utils import parse_key_values


def sample_run(args: argparse.Namespace, r) -> int:
    """Print the decoded samples (and write them as .txt, plus a PNG grid for pixel tokens)."""
    import torch

    from ..runs.tokens import sample_tokens, save_picture

    sampler = args.sampler or r.config["sample"]["sampler"]
    steps = args.steps or int(r.config["sample"]["steps"])
    options = dict(r.config["sample"]["options"]) if sampler == r.config["sample"]["sampler"] else {}
    options.update(parse_key_values(args.options))
    cond = {}
    if r.class_conditional:
        labels = torch.arange(args.num) % int(r.info["num_classes"]) if args.label is None else \
            torch.full((args.num,), int(args.label))
        cond = {"y": labels.to(args.device)}
    if args.prefix is not None:  # infilling: the prefix's tokens are fixed, the rest sampled from the conditional
        if r.process is None or r.info.get("image"):
            raise ValueError("--prefix needs a discrete diffusion run on text")
        from ..data.text import tokenizer_from_record

        ids = tokenizer_from_record(r.info["tokenizer"]).encode(args.prefix)
        if not 0 < len(ids) < r.shape[0]:
            raise ValueError(f"--prefix must hold 1 to {r.shape[0] - 1} tokens, got {len(ids)}")
        values = torch.zeros(r.shape[0], dtype=torch.long)
        values[: len(ids)] = torch.tensor(ids)
        options.update(fixed=torch.arange(r.shape[0]) < len(ids), values=values)
    x = sample_tokens(r.model, r.process, args.num, r.shape[0], sampler, steps, args.seed, args.device, cond,
                      **options)
    texts = r.decode(x)
    from ._outputs import png_output_path

    out = png_output_path(args.out, r.path, f"sample_{sampler if r.process else 'ar'}_{steps}.png")  # never the run
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    save_picture(r.info, x, out)
    what = "autoregressive" if r.process is None else f"{sampler}, {steps} steps"
    for i, t in enumerate(texts):
        print(f"--- sample {i} ({what})")
        print(t)
    print(f"wrote {out.with_suffix('.txt')} and {out}", file=sys.stderr)
    return 0


def likelihood_run(args: argparse.Namespace, r, data_options: dict, samples: int) -> int:
    """Bits per token and perplexity of the run's test split (or --data) under the run."""
    import torch

    from .. import data
    from ..runs.components import info_dict
    from ..runs.tokens import check_data, likelihood

    if args.data is None:  # the run's data, the side of its split it did not train on
        name, opts = r.config["data"]["name"], dict(r.config["data"]["options"])
        if opts.get("split") is None:
            print(f"note: the run trained on all of data {name!r} (no data.options.split), so its test split is "
                  "not held out; train with --set data.options.split=train to score unseen text", file=sys.stderr)
        opts["split"] = "test"
    else:
        name, opts = args.data, {}
    opts.update(data_options)
    ds = data.make(name, **opts)
    info = info_dict(ds.info)
    if info.get("kind") != "tokens":
        raise ValueError(f"data {name!r} is not token data (kind {info.get('kind')!r}); the run models tokens")
    check_data(r, info, f"data {name!r}")
    g = torch.Generator().manual_seed(args.seed)
    x = ds.x[torch.randperm(len(ds), generator=g)[: args.num]]
    res = likelihood(r, x, samples=samples, seed=args.seed, batch=args.batch)
    kind = "upper bound (ELBO)" if res["bound"] else "exact (autoregressive)"
    split = opts.get("split", "all")
    print(f"{res['sequences']} sequences of {res['length']} tokens from {name!r} (split {split}); -log p: {kind}")
    print(f"nats/sequence   {res['nats_per_sequence']:.4f}  (standard error {res['se']:.4f})")
    print(f"bits/token      {res['bits_per_token']:.4f}  (standard error {res['bits_per_token_se']:.4f})")
    print(f"perplexity      {res['perplexity']:.4f}")
    if "bits_per_character" in res:
        print(f"bits/character  {res['bits_per_character']:.4f}  (standard error {res['bits_per_character_se']:.4f}; "
              f"{res['characters_per_sequence']:.1f} characters per sequence)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"data": name, "split": split, **res}, f, indent=1)
    return 0
