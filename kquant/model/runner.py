"""Run GGUF models with llama.cpp (through llama-cpp-python): load, tokenize, logits, generate.

    >>> from kquant.model import runner
    >>> m = runner.load("kquant/data/kquant-tiny-f16.gguf")
    >>> m.generate("Once upon a time", seed=1)

One thread is the default. On a shared 2-core machine llama.cpp's worker threads spin
while they wait for each other, and with another process on the cores a 2-thread run was
measured 10 to 70 times slower than a 1-thread run (0.48 s against 0.10 s for 100 tokens).

All logits come from llama.cpp with an **F32 KV cache**: its default F16 cache rounds keys
and values, and that noise (max logit difference 6e-3 in tiny-model-notes.md) would blur
the comparison of weight formats, which is the point here. Notebooks 08-10 use it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kquant import llamacpp
from kquant.errors import KQuantError
from kquant.gguf.llama_keys import check_llama
from kquant.gguf.reader import open_gguf

GGML_TYPE_F32 = 0


@dataclass
class LlamaCppModel:
    """A GGUF model loaded in llama.cpp, with the few calls the workbook needs."""

    path: Path
    llm: object  # llama_cpp.Llama; imported lazily, it is slow to import

    @property
    def n_ctx(self) -> int:
        return self.llm.n_ctx()

    def tokenize(self, text: str, bos: bool = False) -> list[int]:
        """Token ids; ``<s>`` and ``</s>`` in the text are read as the special tokens."""
        ids = self.llm.tokenize(text.encode(), add_bos=False, special=True)
        return ([self.llm.token_bos()] if bos else []) + ids

    def detokenize(self, ids) -> str:
        return self.llm.detokenize(list(ids)).decode(errors="replace")

    def logits(self, ids) -> np.ndarray:
        """Logits (len(ids), n_vocab) of one sequence, from a fresh context."""
        ids = list(ids)
        if not 0 < len(ids) <= self.n_ctx:
            raise KQuantError(f"{len(ids)} tokens: a sequence must have 1 to {self.n_ctx} (the context size)")
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def generate(self, prompt: str, max_tokens: int = 80, temperature: float = 0.8, seed: int = 0) -> str:
        """Continue ``prompt``; temperature 0 is greedy. Seeded, so a rerun gives the same text.

        On this corpus greedy decoding repeats the likeliest name at every free choice
        (tiny-model-notes.md §2), so the default samples at 0.8.
        """
        self.llm.set_seed(seed)
        out = self.llm.create_completion(
            prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            min_p=0.0,
            repeat_penalty=1.0,
            seed=seed,
        )
        return out["choices"][0]["text"]

    def chat_prompt(self, messages: list[dict]) -> str:
        """The text ``chat`` feeds the model: ``messages`` through the chat template in the file's metadata.

        llama-cpp-python renders ``tokenizer.chat_template`` (a Jinja template) with the file's own
        BOS and EOS token texts, as its ``create_chat_completion`` does when the file has a template.
        """
        template = self.llm.metadata.get("tokenizer.chat_template")
        if template is None:
            raise KQuantError(f"{self.path.name} has no tokenizer.chat_template: it is not a chat model")
        special = [self.llm.detokenize([t], special=True).decode(errors="replace") for t in self._bos_eos()]
        formatter = llamacpp.load().llama_chat_format.Jinja2ChatFormatter(
            template=template, bos_token=special[0], eos_token=special[1]
        )
        return formatter(messages=messages).prompt

    def chat(self, messages: list[dict] | str, max_tokens: int = 80, temperature: float = 0.0, seed: int = 0) -> str:
        """The model's reply to ``messages`` ([{"role": "user", "content": ...}, ...], or one user message).

        ``create_chat_completion`` applies the file's chat template (``chat_prompt`` shows the text) and
        stops at the template's end-of-turn token. Greedy by default, so a rerun gives the same reply.
        """
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        self.llm.set_seed(seed)
        out = self.llm.create_chat_completion(
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=0 if temperature else 1,
            top_p=1.0,
            min_p=0.0,
            repeat_penalty=1.0,
            seed=seed,
        )
        return out["choices"][0]["message"]["content"]

    def close(self) -> None:
        """Free the model and its context now (a 135 M-weight F32 model holds 540 MB), not when Python gets to it."""
        self.llm.close()

    def _bos_eos(self) -> tuple[int, int]:
        return self.llm.token_bos(), self.llm.token_eos()

    def tokens_per_second(self, n: int = 64, prompt: str = "Once upon a time") -> float:
        """Generation speed: ``n`` greedy tokens, one at a time, after ``prompt`` (its few tokens included)."""
        self.llm.reset()
        start = time.perf_counter()
        made = 0
        for _ in self.llm.generate(self.tokenize(prompt, bos=True), temp=0.0, reset=True):
            made += 1
            if made == n:
                break
        return made / (time.perf_counter() - start)


def load(path, n_ctx: int | None = None, n_threads: int = 1) -> LlamaCppModel:
    """Load a GGUF file in llama.cpp (CPU, F32 KV cache, every position's logits kept)."""
    path = Path(path)
    # llama.cpp aborts, hangs or runs out of memory on some files it should refuse: check first.
    with open_gguf(path) as f:
        if f.get("general.architecture") == "llama":
            check_llama(f)
    llama_cpp = llamacpp.load()
    try:
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx or 0,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            logits_all=True,
            type_k=GGML_TYPE_F32,
            type_v=GGML_TYPE_F32,
            verbose=False,
        )
    except ValueError as e:  # llama-cpp-python's wording for "llama.cpp refused the file"
        raise KQuantError(f"llama.cpp could not load {path}: {e}") from None
    return LlamaCppModel(path, llm)


def next_token_logits(model: LlamaCppModel, prompt: str) -> np.ndarray:
    """The model's logits for the token after ``prompt`` (which follows ``<s>``), shape (1, n_vocab)."""
    return model.logits(model.tokenize(prompt, bos=True))[-1:]
