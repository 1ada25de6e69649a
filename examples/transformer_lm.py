"""Train a small character-level transformer language model with the learned optimizer, or with AdamW.

    python examples/transformer_lm.py                     # LearnedOptimizer, warm-up then cosine on its lr
    python examples/transformer_lm.py --optimizer adam    # AdamW at 3e-4 with the same schedule

The text is the licence texts every Debian machine has (/usr/share/common-licenses), or any files you name with
--text. Embeddings, causal self-attention, LayerNorm and GELU: the layers of a GPT, at toy size.
"""

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from learned_optim import LearnedOptimizer

DEFAULT_TEXT = Path("/usr/share/common-licenses")


def load_text(paths) -> str:
    files = [p for path in paths for p in (sorted(Path(path).iterdir()) if Path(path).is_dir() else [Path(path)])]
    text = "".join(f.read_text(errors="ignore") for f in files if f.is_file())
    if not text:  # no licence folder: this package's own sources stand in
        text = "".join(p.read_text() for p in sorted(Path(__file__).resolve().parent.parent.glob("learned_optim/*.py")))
    return text


class TinyGPT(nn.Module):
    def __init__(self, vocab: int, context: int, width: int = 64, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(context, width)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        n = idx.shape[1]
        h = self.tokens(idx) + self.positions(torch.arange(n, device=idx.device))
        causal = nn.Transformer.generate_square_subsequent_mask(n, device=idx.device)
        return self.head(self.norm(self.blocks(h, mask=causal, is_causal=True)))


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", choices=("learned", "adam"), default="learned")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--text", nargs="*", default=[str(DEFAULT_TEXT)])
    args = parser.parse_args(argv)
    text = load_text(args.text)
    text = text[:400_000]
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text], dtype=torch.long)
    split = int(0.9 * len(data))
    train, held_out = data[:split], data[split:]
    torch.manual_seed(0)

    def batch(source: torch.Tensor):
        start = torch.randint(0, len(source) - args.context - 1, (args.batch_size,))
        rows = torch.stack([source[s : s + args.context + 1] for s in start.tolist()])
        return rows[:, :-1], rows[:, 1:]

    model = TinyGPT(len(chars), args.context)
    if args.optimizer == "learned":
        opt = LearnedOptimizer(model.parameters())
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    warmup = max(1, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(t, args.steps) / args.steps)))

    for step in range(args.steps):
        inputs, targets = batch(train)
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  training loss {loss.item():.4f} (nats per character)")

    with torch.no_grad():
        inputs, targets = batch(held_out)
        held = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten()).item()
    print(f"{len(chars)} characters, {args.optimizer}: held-out loss {held:.4f} nats per character")
    return loss.item()


if __name__ == "__main__":
    main()
