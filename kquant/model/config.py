"""The hyper-parameters of a llama model and the tensors they imply: what export writes and forward reads.

The bundled model's values are the defaults; ``scripts/train_model.py`` records them in the
file (the ``kquant.training`` key). Notebooks 00 and 07 show them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kquant.errors import KQuantError

# The tensors of one llama block, after "blk.N.", in llama.cpp's order (llm_build_llama).
BLOCK_TENSORS = (
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
)


@dataclass(frozen=True)
class Config:
    """The hyper-parameters of a llama model, as llama.cpp names them."""

    n_vocab: int
    n_ctx: int = 256
    n_embd: int = 256
    n_layer: int = 8
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 768
    rope_base: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def check(self) -> None:
        """Refuse shapes llama.cpp would reject or mis-read."""
        if self.n_embd % self.n_head:
            raise KQuantError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if self.n_head % self.n_head_kv:
            raise KQuantError(
                f"n_head {self.n_head} is not a multiple of n_head_kv {self.n_head_kv} (grouped-query attention)"
            )
        if self.head_dim % 2:
            raise KQuantError(f"head_dim {self.head_dim} is odd: RoPE rotates pairs of values")


def tensor_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Every tensor's numpy shape, under llama.cpp's names (output tied to token_embd)."""
    kv = cfg.n_head_kv * cfg.head_dim
    shapes = {"token_embd.weight": (cfg.n_vocab, cfg.n_embd)}
    for i in range(cfg.n_layer):
        b = f"blk.{i}."
        shapes |= {
            b + "attn_norm.weight": (cfg.n_embd,),
            b + "attn_q.weight": (cfg.n_embd, cfg.n_embd),
            b + "attn_k.weight": (kv, cfg.n_embd),
            b + "attn_v.weight": (kv, cfg.n_embd),
            b + "attn_output.weight": (cfg.n_embd, cfg.n_embd),
            b + "ffn_norm.weight": (cfg.n_embd,),
            b + "ffn_gate.weight": (cfg.n_ff, cfg.n_embd),
            b + "ffn_up.weight": (cfg.n_ff, cfg.n_embd),
            b + "ffn_down.weight": (cfg.n_embd, cfg.n_ff),
        }
    shapes["output_norm.weight"] = (cfg.n_embd,)
    return shapes


def config_dict(cfg: Config) -> dict:
    return asdict(cfg)
