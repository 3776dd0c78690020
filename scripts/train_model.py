"""Train the workbook's own small language model and write it to kquant/data/ (package data) as an F16 GGUF.

    pip install torch==2.13.0          # the optional 'train' extra; CPU is enough
    python scripts/train_model.py      # ~40 min on 2 cores; same seed, same model

Every step is seeded: the corpus (kquant.model.corpus, seed 1), the tokenizer (learned from that
text), the initial weights and the order of training windows (``--seed``). Two runs with
the same arguments and thread count give the same file. The config, seed and final losses
go into the GGUF's metadata (key ``kquant.training``), so the file says how it was made.

The model is llama.cpp's ``llama`` architecture, written out here in PyTorch so each line
matches one of kquant/forward.py: RMSNorm, RoPE on consecutive pairs (llama.cpp's
ROPE_TYPE_NORM, so the export needs no row permutation), grouped-query attention, SwiGLU,
and an output matrix tied to the token embeddings. Every matrix row holds 256 or 768
weights, a multiple of 256, so every K-quant applies; 8 layers, so Q4_K_M's
``use_more_bits`` rule gives the attn_v and ffn_down of layers 0, 3, 6 and 7 Q6_K.

``--minutes`` is only a guard: training stops early if it would overrun, and the file
records how many steps were taken (a stopped run is not the reproducible one).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kquant.llamacpp import Tokenizer  # noqa: E402
from kquant.model import bpe, corpus  # noqa: E402
from kquant.model.config import Config, config_dict, tensor_shapes  # noqa: E402
from kquant.model.export import write_gguf  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    sys.exit("training needs PyTorch, an optional extra: pip install torch==2.13.0 (a CPU build is enough)")


class Llama(torch.nn.Module):
    """The llama architecture; parameter names are llama.cpp's tensor names (dots → '__')."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.w = torch.nn.ParameterDict()
        for name, shape in tensor_shapes(cfg).items():
            self.w[name.replace(".", "__")] = torch.nn.Parameter(
                torch.ones(shape) if len(shape) == 1 else torch.empty(shape)
            )
        hd = cfg.head_dim
        freq = cfg.rope_base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        angle = torch.arange(cfg.n_ctx, dtype=torch.float64)[:, None] * freq[None, :]
        self.register_buffer("cos", torch.cos(angle).float(), persistent=False)
        self.register_buffer("sin", torch.sin(angle).float(), persistent=False)

    def init(self, gen: torch.Generator) -> None:
        # GPT-2's scheme: N(0, 0.02), the matrices that write into the residual stream
        # scaled down by sqrt(2 * n_layer) so the stream does not grow with depth.
        for name, p in self.w.items():
            if p.ndim == 2:
                std = (
                    0.02 / math.sqrt(2 * self.cfg.n_layer)
                    if name.endswith(("attn_output__weight", "ffn_down__weight"))
                    else 0.02
                )
                with torch.no_grad():
                    p.normal_(0.0, std, generator=gen)

    def p(self, name: str) -> torch.Tensor:
        return self.w[name.replace(".", "__")]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        B, T = idx.shape
        x = F.embedding(idx, self.p("token_embd.weight"))
        for i in range(c.n_layer):
            b = f"blk.{i}."
            h = rms_norm(x, self.p(b + "attn_norm.weight"), c.norm_eps)
            q = self.rope((h @ self.p(b + "attn_q.weight").T).view(B, T, c.n_head, c.head_dim))
            k = self.rope((h @ self.p(b + "attn_k.weight").T).view(B, T, c.n_head_kv, c.head_dim))
            v = (h @ self.p(b + "attn_v.weight").T).view(B, T, c.n_head_kv, c.head_dim)
            g = c.n_head // c.n_head_kv  # query head h reads kv head h // g, as in llama.cpp
            k, v = k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2)
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
            x = x + a.transpose(1, 2).reshape(B, T, c.n_embd) @ self.p(b + "attn_output.weight").T
            h = rms_norm(x, self.p(b + "ffn_norm.weight"), c.norm_eps)
            x = (
                x
                + (F.silu(h @ self.p(b + "ffn_gate.weight").T) * (h @ self.p(b + "ffn_up.weight").T))
                @ self.p(b + "ffn_down.weight").T
            )
        x = rms_norm(x, self.p("output_norm.weight"), c.norm_eps)
        return x @ self.p("token_embd.weight").T

    def rope(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate consecutive pairs (x[2i], x[2i+1]): llama.cpp's ROPE_TYPE_NORM."""
        T = x.shape[1]
        cos, sin = self.cos[:T, None, :], self.sin[:T, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)

    def numpy_weights(self) -> dict[str, np.ndarray]:
        return {k.replace("__", "."): v.detach().cpu().numpy().astype(np.float32) for k, v in self.w.items()}


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def tokenize(path: Path, text: str) -> np.ndarray:
    """Token ids from llama.cpp's own tokenizer, so training and inference ids agree exactly."""
    out = []
    step = 1 << 20
    # Cut only just after "</s>", so no word is split; parse_special reads "<s>"/"</s>" as control tokens.
    start = 0
    with Tokenizer(path) as tok:
        while start < len(text):
            end = text.find(corpus.EOS, start + step)
            end = len(text) if end < 0 else end + len(corpus.EOS)
            out.extend(tok.tokenize(text[start:end], add_special=False, parse_special=True))
            start = end
    return np.array(out, dtype=np.int32)


def batches(tokens: np.ndarray, rng: np.random.Generator, B: int, T: int):
    starts = rng.integers(0, len(tokens) - T - 1, size=B)
    x = np.stack([tokens[s : s + T + 1] for s in starts]).astype(np.int64)
    return torch.from_numpy(x[:, :-1]), torch.from_numpy(x[:, 1:])


@torch.no_grad()
def task_accuracy(model: Llama, llm_tok, tasks) -> dict[str, float]:
    """Share of tasks whose answer greedy decoding would produce (every answer token is the argmax)."""
    right: dict[str, list[bool]] = {}
    for t in tasks:
        p = [0] + llm_tok(t.prompt)
        a = llm_tok(t.answer)
        logits = model(torch.tensor([p + a]))[0]
        ok = bool((logits[len(p) - 1 : len(p) + len(a) - 1].argmax(-1) == torch.tensor(a)).all())
        right.setdefault(t.kind, []).append(ok)
    return {k: float(np.mean(v)) for k, v in right.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "kquant" / "data" / "kquant-tiny-f16.gguf"))
    ap.add_argument("--seed", type=int, default=0, help="initial weights and training-window order")
    ap.add_argument("--corpus-seed", type=int, default=corpus.TRAIN_SEED)
    ap.add_argument("--docs", type=int, default=40000, help="training documents (~15 MB of text)")
    ap.add_argument("--merges", type=int, default=700)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=55.0, help="stop early (and say so) past this")
    ap.add_argument("--layers", type=int, default=8)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    log = lambda *a: print(f"[{time.time() - t0:7.1f}s]", *a, flush=True)  # noqa: E731

    docs = corpus.documents(args.corpus_seed, args.docs)
    text = corpus.text(docs)
    tokens_list, merges = bpe.learn(text[:3_000_000], args.merges)
    cfg = Config(n_vocab=len(tokens_list), n_layer=args.layers)
    log(f"corpus {len(text) / 1e6:.1f} MB, vocab {cfg.n_vocab}")

    # A throwaway file with the real tokenizer lets llama.cpp tokenize the corpus.
    out = Path(args.out)
    vocab_file = out.with_name(".vocab-" + out.name)
    model = Llama(cfg)
    write_gguf(
        vocab_file,
        cfg,
        {k: np.zeros(s, np.float32) for k, s in tensor_shapes(cfg).items()},
        tokens_list,
        merges,
        dtype="F16",
    )
    train = tokenize(vocab_file, text)
    tokenizer = Tokenizer(vocab_file)

    def llm_tok(s, tok=tokenizer):
        return tok.tokenize(s, add_special=False, parse_special=True)

    val = tokenize(vocab_file, corpus.text(corpus.documents(corpus.HELD_OUT_SEED, 2000, held_out=True)))
    tasks = corpus.tasks(seed=corpus.TASK_CHECK_SEED, n_sums=100)
    log(f"train {len(train):,} tokens, val {len(val):,} tokens")

    gen = torch.Generator().manual_seed(args.seed)
    model.init(gen)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.ndim == 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    rng = np.random.default_rng(args.seed)
    val_rng = np.random.default_rng(12345)
    val_batches = [batches(val, val_rng, 16, cfg.n_ctx) for _ in range(4)]
    warmup, lr_min = 50, args.lr / 10
    log(f"{n_params:,} parameters, {args.steps} steps of {args.batch}x{cfg.n_ctx} tokens")
    history = []
    step = 0
    for step in range(1, args.steps + 1):
        lr = (
            args.lr * step / warmup
            if step <= warmup
            else lr_min + 0.5 * (args.lr - lr_min) * (1 + math.cos(math.pi * (step - warmup) / (args.steps - warmup)))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batches(train, rng, args.batch, cfg.n_ctx)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps:
            with torch.no_grad():
                v = float(
                    np.mean([F.cross_entropy(model(a).flatten(0, 1), b.flatten()).item() for a, b in val_batches])
                )
            acc = task_accuracy(model, llm_tok, tasks)
            history.append(
                {
                    "step": step,
                    "train": round(loss.item(), 4),
                    "val": round(v, 4),
                    **{k: round(a, 3) for k, a in acc.items()},
                }
            )
            log(json.dumps(history[-1]), f"{step * args.batch * cfg.n_ctx / (time.time() - t0):.0f} tok/s overall")
        if time.time() - t0 > args.minutes * 60:
            log(f"stopping early at step {step}: past --minutes {args.minutes}")
            break
    tokenizer.close()
    vocab_file.unlink(missing_ok=True)

    extra = {
        "config": config_dict(cfg),
        "seed": args.seed,
        "corpus_seed": args.corpus_seed,
        "docs": args.docs,
        "merges": args.merges,
        "steps": step,
        "planned_steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "threads": args.threads,
        "tokens_seen": step * args.batch * cfg.n_ctx,
        "final": history[-1] if history else None,
        "minutes": round((time.time() - t0) / 60, 1),
        "torch": torch.__version__,
        "script": "scripts/train_model.py",
    }
    write_gguf(out, cfg, model.numpy_weights(), tokens_list, merges, dtype="F16", extra=extra)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
