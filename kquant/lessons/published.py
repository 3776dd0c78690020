"""Figures llama.cpp published about its own formats, each with where it was published.

The workbook measures what it can on the bundled model; for claims about models this
machine cannot run (8B, 70B) it uses these numbers, quoted from llama.cpp's sources and
pull requests, never invented or rounded. Sizes are GiB (2**30 bytes), as llama.cpp
reports them; perplexity (PPL) is on wikitext-2.

Notebooks 06, 09 and 10 quote it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedTable:
    """Rows of published numbers, and the source a reader can open to check them."""

    source: str
    note: str
    rows: dict  # type name -> dict of column -> value

    def __getitem__(self, key):
        return self.rows[key]


# llama.cpp tools/quantize/README.md, in the copy vendored by llama-cpp-python 0.3.36 (0c1e57098).
LLAMA31_8B_SIZES = PublishedTable(
    source="llama.cpp tools/quantize/README.md (vendored in llama-cpp-python 0.3.36)",
    note="Llama-3.1-8B: bits per weight of the whole file, and its size in GiB",
    rows={
        "Q2_K_S": {"bpw": 2.9697, "GiB": 2.78},
        "Q2_K": {"bpw": 3.1593, "GiB": 2.95},
        "Q3_K_S": {"bpw": 3.6429, "GiB": 3.41},
        "Q3_K_M": {"bpw": 3.9960, "GiB": 3.74},
        "Q3_K_L": {"bpw": 4.2979, "GiB": 4.02},
        "Q4_K_S": {"bpw": 4.6672, "GiB": 4.36},
        "Q4_K_M": {"bpw": 4.8944, "GiB": 4.58},
        "Q5_K_S": {"bpw": 5.5704, "GiB": 5.21},
        "Q5_K_M": {"bpw": 5.7036, "GiB": 5.33},
        "Q6_K": {"bpw": 6.5633, "GiB": 6.14},
        "Q8_0": {"bpw": 8.5008, "GiB": 7.95},
        "F16": {"bpw": 16.0005, "GiB": 14.96},
    },
)

# llama.cpp tools/perplexity/README.md, "LLaMA 3 8b Scoreboard" (PR #6936), CUDA backend. Rows named
# "+imatrix" were quantized with the "WT 10m" importance matrix (10M wikitext tokens), the others without.
LLAMA3_8B_SCOREBOARD = PublishedTable(
    source="llama.cpp tools/perplexity/README.md, LLaMA 3 8b Scoreboard (PR #6936), vendored in llama-cpp-python "
    "0.3.36",
    note="Llama-3-8B: size (GiB), perplexity, its increase over F16 (dppl) and KL divergence vs F16 (kld)",
    rows={
        "F16": {"GiB": 14.97, "ppl": 6.233160},
        "Q8_0": {"GiB": 7.96, "ppl": 6.234284, "dppl": 0.002650, "kld": 0.001355},
        "Q6_K": {"GiB": 6.14, "ppl": 6.253382, "dppl": 0.021748, "kld": 0.005452},
        "Q5_K_M": {"GiB": 5.33, "ppl": 6.288607, "dppl": 0.056974, "kld": 0.010762},
        "Q4_K_M": {"GiB": 4.58, "ppl": 6.407115, "dppl": 0.175482, "kld": 0.031273},
        "Q4_K_M+imatrix": {"GiB": 4.58, "ppl": 6.382937, "dppl": 0.151303, "kld": 0.028152},
        "Q4_K_S": {"GiB": 4.37, "ppl": 6.500529, "dppl": 0.268895, "kld": 0.043136},
        "Q4_K_S+imatrix": {"GiB": 4.37, "ppl": 6.409697, "dppl": 0.178064, "kld": 0.031951},
        "IQ4_NL+imatrix": {"GiB": 4.35, "ppl": 6.455593, "dppl": 0.223959, "kld": 0.035742},
        "Q4_0": {"GiB": 4.34, "ppl": 6.700147, "dppl": 0.468514, "kld": 0.071940},
        "Q3_K_M": {"GiB": 3.74, "ppl": 6.888498, "dppl": 0.656864, "kld": 0.101913},
        "Q3_K_M+imatrix": {"GiB": 3.74, "ppl": 6.734255, "dppl": 0.502622, "kld": 0.084358},
        "Q2_K": {"GiB": 2.96, "ppl": 9.751568, "dppl": 3.519934, "kld": 0.445132},
        "Q2_K+imatrix": {"GiB": 2.96, "ppl": 8.647825, "dppl": 2.416191, "kld": 0.332223},
    },
)

# llama.cpp tools/perplexity/README.md, "Old Numbers": Llama 2 70B.
LLAMA2_70B = PublishedTable(
    source="llama.cpp tools/perplexity/README.md, Old Numbers (Llama 2 70B), vendored in llama-cpp-python 0.3.36",
    note="Llama-2-70B: file size (GiB), perplexity and its increase over fp16",
    rows={
        "F16": {"GiB": 128.5, "ppl": 3.4313},
        "Q6_K": {"GiB": 52.70, "ppl": 3.4367},
        "Q5_K_M": {"GiB": 45.41, "ppl": 3.4451},
        "Q4_K_M": {"GiB": 38.54, "ppl": 3.4725},
        "Q4_K_S": {"GiB": 36.39, "ppl": 3.4852},
        "Q4_0": {"GiB": 36.20, "ppl": 3.5550},
        "Q3_K_M": {"GiB": 30.83, "ppl": 3.5932},
        "Q2_K": {"GiB": 27.27, "ppl": 3.7339},
    },
)

# Layouts of three popular models, from each model's published config.json: nominal parameter
# count, layers (num_hidden_layers), KV heads (num_key_value_heads), head size (hidden / heads).
MODEL_LAYOUTS = {
    "Llama-3.1-8B": (8e9, 32, 8, 128),
    "Qwen2.5-14B": (14e9, 48, 8, 128),
    "Llama-2-70B": (70e9, 80, 8, 128),
}

# The longest context each model was trained for (max_position_embeddings in its config.json;
# Qwen2.5-14B: 32,768 natively, 131,072 only with YaRN rope scaling switched on).
MAX_CONTEXT = {"Llama-3.1-8B": 131072, "Qwen2.5-14B": 32768, "Llama-2-70B": 4096}

# The "k-quants" change: llama.cpp PR #1684 by ikawrakow (June 2023), which introduced Q2_K ... Q6_K.
K_QUANTS_PR = "https://github.com/ggml-org/llama.cpp/pull/1684"
# QLoRA: fine-tuning low-rank adapters on top of a frozen 4-bit model (Dettmers et al., 2023).
QLORA_PAPER = "https://arxiv.org/abs/2305.14314"

# Widths of small public models (hidden_size, intermediate_size in each model's config.json on the
# Hugging Face Hub), for notebook 17's "which model takes K-quants everywhere": a K-quant needs rows
# of whole 256-weight blocks, so both widths must be multiples of 256. Licences as published.
MODEL_WIDTHS = {
    "SmolLM2-135M (Apache-2.0)": (576, 1536),  # HuggingFaceTB/SmolLM2-135M-Instruct; also read from its GGUF
    "SmolLM2-360M (Apache-2.0)": (960, 2560),  # HuggingFaceTB/SmolLM2-360M-Instruct
    "Qwen2.5-0.5B (Apache-2.0)": (896, 4864),  # Qwen/Qwen2.5-0.5B-Instruct
    "TinyLlama-1.1B (Apache-2.0)": (2048, 5632),  # TinyLlama/TinyLlama-1.1B-Chat-v1.0
    "SmolLM2-1.7B (Apache-2.0)": (2048, 8192),  # HuggingFaceTB/SmolLM2-1.7B-Instruct
}
