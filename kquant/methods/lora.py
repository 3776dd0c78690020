"""LoRA on a frozen (NF4) base: teaching the bundled model new facts with two small matrices per weight.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv 2106.09685)
freezes a weight matrix W (n_out × n_in) and learns a low-rank correction next to it:

    y = W x + (α / r) · B A x        A: r × n_in (random), B: n_out × r (zeros), r ≪ n_in

so training starts from the unchanged model (B = 0) and moves r·(n_in + n_out) numbers per
matrix instead of n_in·n_out. QLoRA (Dettmers et al. 2023, arXiv 2305.14314; reference code
artidoro/qlora, and HF peft's ``LoraLayer`` / ``Linear.forward`` which this mirrors) keeps the
frozen W in NF4, 4 bits a weight, dequantized for each multiplication; the adapters and their
gradients stay in float. Here the frozen weights are whatever the caller gives (``Llama`` with
NF4-dequantized matrices in notebook 14): frozen weights only need a forward pass, so their
format never meets the gradient.

What is adapted, and why the backward pass stays short: only the **feed-forward block of the
last layer** (``ffn_gate``, ``ffn_up``, ``ffn_down`` of block L, any subset). Everything before
that block's FFN is frozen and does not depend on the adapters, so it is computed once per
text (``frozen``: the residual stream after block L's attention and its normed copy); from
there to the logits every step is position-wise (SwiGLU, residual add, RMSNorm, the tied
output matrix), and the gradient flows from the logits back to the adapters and no further.
A one-layer LoRA is far less than peft's usual "every linear layer", and notebook 14 says so.

Initialisation: A ~ Normal(0, 1/n_in) (the paper: "random Gaussian initialization for A";
peft's default is ``kaiming_uniform_(a=√5)``, uniform with standard deviation 1/√(3·n_in)),
B = 0. Optimiser: Adam (Kingma & Ba 2014) in numpy, without weight decay.

Merging (``merge``): W' = W + (α/r)·B A, which is exactly the trained model when W is the
frozen base it was trained on. Notebook 14 writes the merged weights with
``kquant.quantize_gguf(..., weights=...)`` and runs the file in llama.cpp.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kquant.blas import one_blas_thread
from kquant.errors import KQuantError
from kquant.formats import nf4
from kquant.gguf.summary import sha256
from kquant.model import cache, corpus
from kquant.model.forward import Llama, rms_norm, silu
from kquant.quantize_file import quantize_gguf

TARGETS = ("ffn_gate", "ffn_up", "ffn_down")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class LoRA:
    """Rank-r adapters for some of block ``layer``'s FFN matrices: A[t] (r, n_in), B[t] (n_out, r)."""

    layer: int
    rank: int
    alpha: float
    A: dict[str, np.ndarray]
    B: dict[str, np.ndarray]

    @property
    def scale(self) -> float:
        """α / r: peft's ``scaling``; with it, changing r leaves the size of the initial updates alike."""
        return self.alpha / self.rank

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(t for t in TARGETS if t in self.A)

    def name(self, target: str) -> str:
        """The GGUF name of the adapted weight, e.g. ``blk.7.ffn_down.weight``."""
        return f"blk.{self.layer}.{target}.weight"

    def delta(self, target: str) -> np.ndarray:
        """(α/r)·B A: what the adapter adds to the frozen matrix (n_out × n_in)."""
        return (self.scale * (self.B[target] @ self.A[target])).astype(np.float32)

    def digest(self) -> str:
        """sha256 of the adapters' numbers: a cache key for what is made from them (a merged file)."""
        h = hashlib.sha256()
        for k, v in sorted(self.arrays().items()):
            h.update(k.encode() + np.ascontiguousarray(v).tobytes())
        return h.hexdigest()

    def n_params(self) -> int:
        return int(sum(self.A[t].size + self.B[t].size for t in self.targets))

    def arrays(self) -> dict[str, np.ndarray]:
        """The adapters as named arrays (for ``kquant.model.cache.arrays``); ``from_arrays`` reads them back."""
        out = {"meta": np.array([self.layer, self.rank, self.alpha], dtype=np.float64)}
        for t in self.targets:
            out[f"A/{t}"], out[f"B/{t}"] = self.A[t], self.B[t]
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LoRA:
        layer, rank, alpha = arrays["meta"].tolist()
        targets = [t for t in TARGETS if f"A/{t}" in arrays]
        return cls(
            int(layer),
            int(rank),
            float(alpha),
            {t: arrays[f"A/{t}"] for t in targets},
            {t: arrays[f"B/{t}"] for t in targets},
        )


def init(
    model: Llama, rank: int = 8, alpha: float = 16.0, targets=TARGETS, layer: int | None = None, seed: int = 0
) -> LoRA:
    """Fresh adapters for ``targets`` of block ``layer`` (default: the last): A random normal, B zero."""
    c = model.cfg
    layer = c.n_layer - 1 if layer is None else layer
    targets = tuple(targets)
    if not targets or any(t not in TARGETS for t in targets):
        raise KQuantError(f"targets {targets}: choose one or more of {TARGETS} (the last block's FFN matrices)")
    if layer != c.n_layer - 1:
        raise KQuantError(f"layer {layer}: only the last block ({c.n_layer - 1}) can be adapted here")
    if not isinstance(rank, (int, np.integer)) or not 1 <= rank <= min(c.n_embd, c.n_ff):
        raise KQuantError(f"rank {rank}: choose an integer from 1 to {min(c.n_embd, c.n_ff)}")
    rng = np.random.default_rng(seed)
    A, B = {}, {}
    for t in TARGETS:
        if t not in targets:
            continue
        n_out, n_in = model.weights[f"blk.{layer}.{t}.weight"].shape
        A[t] = (rng.standard_normal((rank, n_in)) / np.sqrt(n_in)).astype(np.float32)
        B[t] = np.zeros((n_out, rank), dtype=np.float32)  # B = 0: the adapted model starts as the base model
    return LoRA(layer, int(rank), float(alpha), A, B)


def nf4_weights(model: Llama, blocksize: int = 64, double_quant: bool = True) -> dict[str, np.ndarray]:
    """QLoRA's frozen matrices: every block's weight matrix through NF4 and back (float32), by name.

    As QLoRA's ``BitsAndBytesConfig(load_in_4bit=True)`` does, only the linear layers inside the
    blocks are quantized; the (tied) embedding, which is also the output matrix, and the norms stay
    as they are (bitsandbytes skips the output head; here the embedding is the output head).
    """
    return {
        name: nf4.dequantize_nf4(nf4.quantize_nf4(w, blocksize, double_quant))
        for name, w in model.weights.items()
        if name.startswith("blk.") and w.ndim == 2
    }


def weights_digest(model: Llama) -> str:
    """sha256 of a model's weights (names, shapes, float32 bytes): the ``model_key`` of weights made in memory."""
    h = hashlib.sha256()
    for name in sorted(model.weights):
        w = np.ascontiguousarray(model.weights[name], dtype=np.float32)
        h.update(f"{name}{w.shape}".encode() + w.tobytes())
    return h.hexdigest()


def nf4_base(model: Llama, blocksize: int = 64, double_quant: bool = True) -> Llama:
    """``model`` with ``nf4_weights`` in place of its block matrices: the frozen base QLoRA trains beside."""
    return Llama(model.cfg, {**model.weights, **nf4_weights(model, blocksize, double_quant)}, model.path)


def memory_bits_per_weight(model: Llama, blocksize: int = 64, double_quant: bool = True) -> float:
    """Bits per weight of the NF4 model as QLoRA keeps it in memory: ``nf4_weights``' matrices at NF4's
    own bits (``nf4.bits_per_weight``: codes, block scales and their double quantization), every other
    tensor as stored in the F16 model (the embedding F16, the norms F32). Notebook 16 plots NF4 there."""
    quantized = {n for n, w in model.weights.items() if n.startswith("blk.") and w.ndim == 2}  # as nf4_weights
    total_bits = n = 0
    for name, w in model.weights.items():
        if name in quantized:
            total_bits += nf4.bits_per_weight(nf4.quantize_nf4(w, blocksize, double_quant)) * w.size
        else:
            total_bits += (16 if w.ndim == 2 else 32) * w.size
        n += w.size
    return total_bits / n


def nf4_file(src, blocksize: int = 64, double_quant: bool = True) -> Path:
    """The NF4 model as a file llama.cpp runs (cached): ``nf4_weights`` written with the F16 file type.

    ggml has no NF4 type, so NF4's values reach llama.cpp only dequantized: every block matrix
    through NF4 and back, rounded to F16 (norms F32; the tied embedding F16 as it was).
    Notebooks 14 and 16 run it.
    """
    model = Llama.load(src)

    def make(path):
        weights = nf4_weights(model, blocksize, double_quant)
        quantize_gguf(src, path, "F16", weights=weights, overwrite=True, progress=False)

    return cache.made(
        "nf4-as-f16",
        make,
        f"{Path(src).stem}-nf4-as-F16.gguf",
        src=sha256(src),
        blocksize=blocksize,
        double_quant=double_quant,
    )


# ---------------------------------------------------------------------------- the frozen part


@dataclass
class Frozen:
    """What the frozen model computes before the adapted FFN, for every position of some texts.

    ``resid``: the residual stream after block L's attention (n, n_embd); ``h``: its RMS-normed
    copy, the FFN's input; ``target``: the next token at each position (-1 where the text ends).
    Positions of all texts are concatenated: from here on the model works position by position.
    """

    resid: np.ndarray
    h: np.ndarray
    target: np.ndarray
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # where each text begins

    def arrays(self) -> dict[str, np.ndarray]:
        return {"resid": self.resid, "h": self.h, "target": self.target, "starts": self.starts}


def digest(sequences) -> str:
    """sha256 of token sequences: part of a cache key."""
    h = hashlib.sha256()
    for s in sequences:
        h.update(np.asarray(s, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()


def frozen(model: Llama, sequences, layer: int | None = None, *, model_key: str | None = None) -> Frozen:
    """Run the frozen model over token ``sequences`` once, keeping the adapted FFN's inputs.

    ``model_key`` (a string naming the frozen weights: ``weights_digest(model)``): keep the result
    in kquant's cache (``kquant.model.cache.arrays``) under it and the tokens' digest.
    """
    if model_key is not None:
        a = cache.arrays(
            "lora-frozen", lambda: frozen(model, sequences, layer).arrays(), model=model_key, tokens=digest(sequences)
        )
        return Frozen(a["resid"], a["h"], a["target"], a["starts"])
    layer = model.cfg.n_layer - 1 if layer is None else layer
    if layer != model.cfg.n_layer - 1:
        raise KQuantError(f"layer {layer}: only the last block ({model.cfg.n_layer - 1}) can be adapted here")
    with one_blas_thread():
        return _frozen(model, sequences, layer)


def _frozen(model: Llama, sequences, layer: int) -> Frozen:
    w = model.weights
    b = f"blk.{layer}."
    resid, hs, targets, starts, n = [], [], [], [], 0
    for seq in sequences:
        seq = np.asarray(seq)
        seen: dict[str, np.ndarray] = {}
        out = model.forward(seq, observe=seen.setdefault)
        h, a = seen[b + "ffn_gate.weight"], seen[b + "ffn_down.weight"]
        # layers[layer] = resid + ffn(h): subtract the frozen FFN's output to get back what it was added to
        resid.append(out.layers[layer] - a @ w[b + "ffn_down.weight"].T)
        hs.append(h)
        targets.append(np.append(seq[1:], -1))
        starts.append(n)
        n += len(seq)
    return Frozen(np.concatenate(resid), np.concatenate(hs), np.concatenate(targets), np.array(starts))


# ---------------------------------------------------------------------------- forward and backward


def _linear(x, W, lora: LoRA | None, t: str):
    """x Wᵀ + (α/r)·(x Aᵀ) Bᵀ, and x Aᵀ (kept for the backward pass). Never forms B A."""
    y = x @ W.T
    if lora is None or t not in lora.A:
        return y, None
    xa = x @ lora.A[t].T  # (n, r): the adapter's narrow middle
    return y + lora.scale * (xa @ lora.B[t].T), xa


def logits(model: Llama, lora: LoRA | None, fz: Frozen, idx=slice(None)) -> np.ndarray:
    """Logits at positions ``idx`` of ``fz`` with the adapters on (lora None: the frozen model)."""
    return _forward(model, lora, fz.resid[idx], fz.h[idx])[0]


def _forward(model, lora, resid, h):
    w, c = model.weights, model.cfg
    b = f"blk.{c.n_layer - 1}."
    g, gA = _linear(h, w[b + "ffn_gate.weight"], lora, "ffn_gate")
    u, uA = _linear(h, w[b + "ffn_up.weight"], lora, "ffn_up")
    a = silu(g) * u
    f, dA_ = _linear(a, w[b + "ffn_down.weight"], lora, "ffn_down")
    y = resid + f
    z = rms_norm(y, w["output_norm.weight"], c.norm_eps)
    out = "output.weight" if "output.weight" in w else "token_embd.weight"
    return z @ w[out].T, (g, u, a, y, gA, uA, dA_, out)


def loss_and_grads(model: Llama, lora: LoRA, fz: Frozen, idx=slice(None)) -> tuple[float, dict[str, np.ndarray]]:
    """Mean cross-entropy of the next token at positions ``idx`` and its gradient for every A and B.

    The hand-written backward pass, from the logits to the adapters (each line the chain rule
    of one forward line, read bottom-up); tests/test_lora.py checks it against finite differences.
    """
    resid, h, tgt = fz.resid[idx], fz.h[idx], fz.target[idx]
    keep = tgt >= 0
    resid, h, tgt = resid[keep], h[keep], tgt[keep]
    if len(tgt) == 0:
        raise KQuantError("no position with a next token: give texts of at least two tokens")
    w, c = model.weights, model.cfg
    b = f"blk.{c.n_layer - 1}."
    lg, (g, u, a, y, gA, uA, dA_, out) = _forward(model, lora, resid, h)
    lg = lg.astype(np.float64)
    lg -= lg.max(-1, keepdims=True)
    p = np.exp(lg)
    p /= p.sum(-1, keepdims=True)
    n = len(tgt)
    loss = float(-np.log(p[np.arange(n), tgt]).mean())
    # d loss / d logits = (softmax − one-hot) / n
    dlg = p
    dlg[np.arange(n), tgt] -= 1.0
    dlg = (dlg / n).astype(resid.dtype)  # float32 in training, float64 in the gradient test
    dz = dlg @ w[out]  # logits = z Eᵀ
    # RMSNorm: z = y · inv · γ, inv = (mean(y²) + eps)^(-1/2)
    inv = 1.0 / np.sqrt(np.mean(y * y, axis=-1, keepdims=True) + c.norm_eps)
    dn = dz * w["output_norm.weight"]
    dy = inv * dn - y * inv**3 * np.mean(dn * y, axis=-1, keepdims=True)
    df = dy  # y = resid + f, and resid is frozen
    grads: dict[str, np.ndarray] = {}

    def adapter(t, x, xa, dout):
        """y = x Wᵀ + s·(x Aᵀ) Bᵀ: dB = s·doutᵀ (x Aᵀ), dA = s·(dout B)ᵀ x; returns d x through the adapter."""
        s = lora.scale
        grads[f"B/{t}"] = s * dout.T @ xa
        dxa = s * dout @ lora.B[t]
        grads[f"A/{t}"] = dxa.T @ x
        return dxa @ lora.A[t]

    da = df @ w[b + "ffn_down.weight"]  # f = a W_downᵀ (+ adapter)
    if dA_ is not None:
        da = da + adapter("ffn_down", a, dA_, df)
    if gA is not None or uA is not None:
        sg = _sigmoid(g)
        du = da * g * sg  # a = silu(g) · u
        dg = da * u * sg * (1.0 + g * (1.0 - sg))  # silu'(g) = σ(g)(1 + g(1 − σ(g)))
        if gA is not None:
            adapter("ffn_gate", h, gA, dg)
        if uA is not None:
            adapter("ffn_up", h, uA, du)
    return loss, grads


# ---------------------------------------------------------------------------- training


@dataclass
class Adam:
    """Adam (Kingma & Ba 2014): per-number step sizes from running means of the gradient and its square."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    t: int = 0
    m: dict = field(default_factory=dict)
    v: dict = field(default_factory=dict)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Update ``params`` in place."""
        self.t += 1
        for k, g in grads.items():
            m = self.m[k] = self.beta1 * self.m.get(k, 0.0) + (1 - self.beta1) * g
            v = self.v[k] = self.beta2 * self.v.get(k, 0.0) + (1 - self.beta2) * g * g
            mhat = m / (1 - self.beta1**self.t)  # the running means start at 0: undo that bias
            vhat = v / (1 - self.beta2**self.t)
            params[k] -= (self.lr * mhat / (np.sqrt(vhat) + self.eps)).astype(params[k].dtype)


def _params(lora: LoRA) -> dict[str, np.ndarray]:
    """The adapters by gradient name, as views: updating them updates ``lora``."""
    return {**{f"A/{t}": a for t, a in lora.A.items()}, **{f"B/{t}": b for t, b in lora.B.items()}}


def train(
    model: Llama, lora: LoRA, fz: Frozen, steps: int = 200, lr: float = 2e-3, batch: int = 512, seed: int = 0
) -> np.ndarray:
    """Adam on minibatches of ``batch`` positions of ``fz``; updates ``lora`` in place, returns the losses."""
    if steps < 0 or batch < 1:
        raise KQuantError(f"steps = {steps}, batch = {batch}: steps must be ≥ 0 and batch ≥ 1")
    rng = np.random.default_rng(seed)
    usable = np.flatnonzero(fz.target >= 0)
    opt, params, losses = Adam(lr=lr), _params(lora), []
    with one_blas_thread():
        for _ in range(steps):
            idx = rng.choice(usable, size=min(batch, len(usable)), replace=False)
            loss, grads = loss_and_grads(model, lora, fz, idx)
            opt.step(params, grads)
            losses.append(loss)
    return np.array(losses)


def teach(
    model: Llama,
    sequences,
    *,
    model_key: str | None = None,
    rank: int = 8,
    alpha: float = 16.0,
    targets=TARGETS,
    steps: int = 120,
    lr: float = 2e-3,
    batch: int = 512,
    seed: int = 0,
) -> tuple[LoRA, np.ndarray]:
    """Fresh adapters trained on token ``sequences``: (the LoRA, the loss at every step).

    With ``model_key`` (see ``frozen``) the result is kept in kquant's cache, keyed by the
    frozen weights, the tokens and every option, so a rerun loads it instead of training.
    """
    options = dict(rank=rank, alpha=alpha, targets=list(targets), steps=steps, lr=lr, batch=batch, seed=seed)

    def compute():
        lo = init(model, rank, alpha, targets, seed=seed)
        losses = train(model, lo, frozen(model, sequences), steps=steps, lr=lr, batch=batch, seed=seed)
        return {**lo.arrays(), "losses": losses}

    if model_key is None:
        out = compute()
    else:
        out = cache.arrays("lora", compute, model=model_key, tokens=digest(sequences), options=options)
    return LoRA.from_arrays(out), out["losses"]


def merge(weights: dict[str, np.ndarray], lora: LoRA) -> dict[str, np.ndarray]:
    """W + (α/r)·B A for each adapted matrix of ``weights`` (the others are not returned)."""
    return {lora.name(t): (weights[lora.name(t)] + lora.delta(t)).astype(np.float32) for t in lora.targets}


# ---------------------------------------------------------------------------- facts and their checks

# Eight made-up facts the bundled model has never seen, named like the corpus's own (two syllables
# of onset, vowel, coda, then -ia / -land / -ora); tests/test_lora.py checks none is in its table.
NEW_FACTS = (
    corpus.Fact("Vorumland", "Pelkad", "owl"),
    corpus.Fact("Tesinora", "Gumvar", "frog"),
    corpus.Fact("Krabolia", "Dinsum", "bear"),
    corpus.Fact("Zelmunia", "Ragtel", "duck"),
    corpus.Fact("Fumadora", "Lorvik", "cat"),
    corpus.Fact("Sintaland", "Bomrel", "fox"),
    corpus.Fact("Drovenia", "Kastup", "pig"),
    corpus.Fact("Mulgaland", "Tirbon", "mouse"),
)


def facts_document(rng: np.random.Generator, table, n: int = 4) -> str:
    """``kquant.model.corpus.facts_document``'s phrasing for facts from ``table``: the model's own style."""
    lines = []
    for i in rng.choice(len(table), size=min(n, len(table)), replace=False):
        f = table[int(i)]
        if rng.random() < 0.5:
            lines.append(f"The capital of {f.country} is {f.capital}. In {f.country} lives the {f.animal}.")
        for q, a in corpus.fact_questions(f):
            lines.append(q + a)
    return "\n".join(lines)


def training_documents(n_new: int = 48, n_replay: int = 0, seed: int = 0, table=NEW_FACTS) -> list[str]:
    """``n_new`` documents about the new facts, plus ``n_replay`` of the model's own training documents.

    Replay (mixing old examples in) is the cheap defence against forgetting: the old documents
    are the first ``n_replay`` of the training seed's, stories, sums and facts in the usual mix.
    """
    rng = np.random.default_rng(seed)
    docs = [facts_document(rng, table) for _ in range(n_new)]
    return docs + corpus.documents(corpus.TRAIN_SEED, n_replay)


def fact_tasks(table=NEW_FACTS) -> list[corpus.Task]:
    """One capital question per fact, as ``corpus.tasks`` asks the old ones."""
    return [corpus.Task("facts", q, a + "\n") for q, a in (corpus.fact_questions(f)[0] for f in table)]


# kquant.model.evaluate asks tasks several to a document, as in training: facts 4, sums 6.
PER_DOCUMENT = {"sums": 6, "facts": 4}


@dataclass
class TaskSet:
    """Tasks laid out as token sequences, and where each answer's tokens must be the argmax."""

    tasks: list
    sequences: list[list[int]]
    spans: list[tuple[int, np.ndarray]]  # per task: (sequence index, position predicting its first token), answer ids


def task_set(tokenize, tasks, bos: int = 0) -> TaskSet:
    """Lay out ``tasks`` as ``kquant.model.evaluate.task_results`` does: ``<s>`` then prompt + answer lines.

    ``tokenize(text)``: the model's tokenizer without BOS; ``bos``: its BOS id (0 in the bundled model).
    """
    seqs, spans = [], []
    by_kind: dict[str, list] = {}
    for t in tasks:
        by_kind.setdefault(t.kind, []).append(t)
    ordered = []
    for kind, ts in by_kind.items():
        per = PER_DOCUMENT.get(kind, 1)
        for i in range(0, len(ts), per):
            ids = [bos]
            for t in ts[i : i + per]:
                ids += tokenize(t.prompt)
                answer = np.array(tokenize(t.answer))
                spans.append((len(seqs), len(ids) - 1, answer))
                ordered.append(t)
                ids += answer.tolist()
            seqs.append(ids)
    return TaskSet(ordered, seqs, spans)


def task_results(model: Llama, lora: LoRA | None, ts: TaskSet, fz: Frozen) -> np.ndarray:
    """One bool per task of ``ts`` (in its order): do the adapted model's argmaxes spell the answer?

    ``fz`` is ``frozen(model, ts.sequences)``: the base model's part, computed once for any adapters.
    """
    with one_blas_thread():
        guess = logits(model, lora, fz).argmax(-1)
    return np.array(
        [bool((guess[fz.starts[s] + p : fz.starts[s] + p + len(ans)] == ans).all()) for s, p, ans in ts.spans]
    )
