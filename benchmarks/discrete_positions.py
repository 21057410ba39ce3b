"""Does the masked-diffusion denoiser use context? Short MDLM runs on the built-in text with each position encoding.

The diagnosis behind the token transformer's default positions (docs/results/discrete.md): ``tokens-small`` on
``pydoc-text`` (character level, length 64), the absorbing process with MDLM's loss, AdamW with warm-up and cosine
decay, no EMA; bits/token of the ELBO on 256 held-out sequences (8 times each) after ``--steps`` steps. A model that
ignores the other positions cannot go below the character unigram entropy (~4.5 bits/token on this corpus).

    python benchmarks/discrete_positions.py --steps 300 --positions learned
    python benchmarks/discrete_positions.py --steps 300 --positions rotary+learned
    python benchmarks/discrete_positions.py --steps 300 --positions rotary+learned --random-learned

Prints the training loss (bits/token) every 50 steps, then the held-out bound and the CPU seconds (one thread).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from scorediff import data, discrete, nets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--preset", default="tokens-small")
    ap.add_argument("--positions", default="rotary+learned", choices=["rotary+learned", "rotary", "learned"])
    ap.add_argument("--random-learned", action="store_true",
                    help="with rotary+learned: start the learned positions at N(0, 0.02^2) instead of 0")
    args = ap.parse_args()
    torch.set_num_threads(1)
    train_x = data.make("pydoc-text", split="train", length=64).x
    test = data.make("pydoc-text", split="test", length=64)
    test_x = test.x[torch.randperm(len(test.x), generator=torch.Generator().manual_seed(0))[:256]]
    V, L = int(test.info.vocab), 64
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    net = nets.make(args.preset, vocab=V, length=L, positions=args.positions)
    if args.random_learned:
        torch.nn.init.normal_(net.pos, std=0.02)
    process = discrete.make("absorbing", vocab=V)
    model, loss_fn = discrete.NetModel(net, process), discrete.DiscreteLoss("mdlm", process)
    opt = torch.optim.AdamW(net.parameters(), args.lr, weight_decay=0.0)
    lr = lambda s: min(1.0, (s + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * s / args.steps))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr)
    c0, window = time.process_time(), []
    for step in range(args.steps):
        batch = train_x[torch.randint(0, len(train_x), (args.batch,), generator=g)]
        opt.zero_grad()
        loss = loss_fn(model, batch, g).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        window.append(float(loss.detach()))
        if (step + 1) % 50 == 0:
            print(f"step {step + 1}: train {sum(window) / len(window) / math.log(2):.3f} bits/token", flush=True)
            window = []
    train_cpu = time.process_time() - c0
    net.eval()
    bound = discrete.elbo(model, process, test_x, objective="mdlm", samples=8)
    print(f"positions {args.positions}{' (learned at random)' if args.random_learned else ''}, {args.steps} steps "
          f"of {args.batch}, lr {args.lr}: held-out <= {float(bound.mean()) / (L * math.log(2)):.3f} bits/token; "
          f"train CPU {train_cpu:.0f} s")


if __name__ == "__main__":
    main()
