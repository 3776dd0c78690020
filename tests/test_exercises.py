"""Specification of the exercise machinery and of every exercise's check.

A check must: pass the published solution on any fresh random inputs; say "not
attempted yet" for the shipped stub; reject wrong answers with a message that says
what is wrong; and never raise, whatever it is given (except, by design, under
nbgrader, where a failed check must raise so the autograder gives 0 points).
"""

import importlib
import math
import struct

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from notebook_tools import NOTEBOOKS, import_namespace, notebook_of, solution_function

import kquant
from kquant import mixes
from kquant.exercises import core
from kquant.exercises.core import CORRECT, INCORRECT, NOT_ATTEMPTED, Exercise, Wrong, call
from kquant.formats import q4_k
from kquant.gguf import anatomy
from kquant.lessons import kfamily, scale_zero_point
from kquant.model import scores

NOTEBOOK_IDS = ["nb" + p.name[:2] for p in NOTEBOOKS]
EXERCISES = [ex for nb in NOTEBOOK_IDS for ex in core.exercises_in(importlib.import_module(f"kquant.exercises.{nb}"))]
IDS = [ex.grade_id for ex in EXERCISES]


def _solution(ex):
    return solution_function(ex, import_namespace(notebook_of(ex.notebook)))


# --- the machinery, on a toy exercise --------------------------------------------------


def _double_checker(fn, rng):
    x = rng.normal(size=5)
    got = core.as_array(call(fn, x), x.shape, "double(x)")
    if not np.allclose(got, 2 * x):
        raise Wrong("double(x) should be 2 * x")
    return "doubles"


TOY = Exercise("nb99", "q1", "double(x)", _double_checker, hints=["multiply", "by two"], solution="return 2 * x")


def stub(x):
    # YOUR CODE HERE
    raise NotImplementedError()


def test_the_shipped_stub_is_reported_as_not_attempted():
    result = TOY.evaluate(stub)
    assert result.status == NOT_ATTEMPTED and not result
    assert "not attempted yet" in repr(result)


def test_no_answer_at_all_is_not_attempted():
    assert TOY.evaluate(None).status == NOT_ATTEMPTED


def test_a_correct_function_passes_and_is_truthy():
    result = TOY.evaluate(lambda x: 2 * x)
    assert result.status == CORRECT and result
    assert repr(result).startswith("✔ nb99 q1: ")


@pytest.mark.parametrize(
    "answer, fragment",
    [
        (42, "expected the function `double` itself, got an int"),
        ("double", "got a str"),
        (lambda x: None, "did the function forget to `return`"),
        (lambda x: x[:2], "has shape (2,), expected (5,)"),
        (lambda x: "twice", "should be an array of numbers"),
        (lambda x: 3 * x, "should be 2 * x"),
        (lambda x: 1 / 0, "raised ZeroDivisionError: division by zero"),
        (lambda x, y: 2 * x, "should take 1 argument(s)"),
        (lambda x: x * np.nan, "contains NaN or inf"),
        (lambda x: 10**400, "far too large"),
    ],
)
def test_wrong_answers_get_one_line_messages_not_tracebacks(answer, fragment):
    result = TOY.evaluate(answer)
    assert result.status == INCORRECT
    assert fragment in result.message
    assert "\n" not in repr(result)


def test_the_readers_inputs_are_copies():
    def vandal(x):
        x[:] = 0
        return 2 * x

    assert TOY.evaluate(vandal).status == INCORRECT  # it saw zeros: its own copy, not the checker's x


def test_check_never_raises_outside_grading(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert TOY.check(lambda x: 1 / 0).status == INCORRECT
    assert TOY.check(stub).status == NOT_ATTEMPTED


@pytest.mark.parametrize("mode", ["autograde", "validate"])
def test_under_nbgrader_a_failed_check_raises_so_it_scores_zero(monkeypatch, capsys, mode):
    monkeypatch.setenv("NBGRADER_EXECUTION", mode)
    with pytest.raises(AssertionError, match="not attempted yet"):
        TOY.check(stub)
    with pytest.raises(AssertionError, match="should be 2"):
        TOY.check(lambda x: 3 * x)
    # a pass is printed, not returned: nbgrader would read a returned value as a partial-credit score
    assert TOY.check(lambda x: 2 * x) is None
    assert capsys.readouterr().out.startswith("✔ nb99 q1: ")


def test_hints_come_one_after_another_and_cycle():
    ex = Exercise("nb99", "q2", "f(x)", _double_checker, hints=["first", "second"], solution="return x")
    assert [repr(ex.hint()) for _ in range(3)] == ["Hint 1 of 2: first", "Hint 2 of 2: second", "Hint 1 of 2: first"]


def test_the_solution_is_shown_as_a_whole_function():
    assert repr(TOY.solution()) == "def double(x):\n    return 2 * x"


def test_byte_answers_are_compared_by_digest_and_the_message_does_not_leak_them():
    want = bytes(range(10, 30))
    core.same_bytes(want, want)
    with pytest.raises(Wrong) as info:
        core.same_bytes(bytes(range(10, 29)) + b"\x00", want)
    assert "first difference at byte 19" in str(info.value)
    assert "29" not in str(info.value).replace("byte 19 of 20", "")  # the expected byte value is not shown


@pytest.mark.parametrize(
    "value, fragment",
    [
        (None, "forget to `return`"),
        ([1, 2], "expected 3"),
        ("abc", "should be bytes"),
        (np.array([1.5, 2, 3]), "should be bytes"),
        (np.array([1, 2, 300]), "should be bytes"),
    ],
)
def test_as_bytes_explains_what_is_wrong(value, fragment):
    with pytest.raises(Wrong, match=fragment.replace("(", r"\(")):
        core.as_bytes(value, 3, "the block")


def test_as_bytes_accepts_bytes_arrays_and_lists():
    for value in (b"\x01\x02\x03", bytearray(b"\x01\x02\x03"), np.array([1, 2, 3], np.uint8), [1, 2, 3]):
        assert core.as_bytes(value, 3, "x") == b"\x01\x02\x03"


# --- every exercise of every notebook --------------------------------------------------


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_the_published_solution_passes_on_fresh_random_inputs(ex):
    fn = _solution(ex)
    for seed in range(3):
        result = ex.evaluate(fn, seed=seed)
        assert result.status == CORRECT, repr(result)
    assert ex.evaluate(fn).status == CORRECT  # and on unseeded inputs, as the reader gets them


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_the_shipped_stub_is_not_attempted(ex):
    assert ex.evaluate(stub_with_arity(ex)).status == NOT_ATTEMPTED


def stub_with_arity(ex):
    ns = {}
    exec(f"def {ex.signature}:\n    raise NotImplementedError()", ns)
    return ns[ex.function_name]


def _generic_wrong_answers(ex):
    """Answers any check must reject, whatever its exercise: a value instead of a function, crashes, junk."""
    n_args = len(ex.signature.split("(", 1)[1].rstrip(")").split(","))
    args = ", ".join(f"a{i}" for i in range(n_args))
    ns = {}
    exec(
        f"def returns_none({args}): return None\n"
        f"def returns_text({args}): return 'forty-two'\n"
        f"def crashes({args}): raise ValueError('my bug')\n"
        f"def returns_nan({args}): return float('nan')\n"
        f"def too_many(x, {args}): return None\n",
        ns,
    )
    return [ns["returns_none"], ns["returns_text"], ns["crashes"], ns["returns_nan"], ns["too_many"], 3.14, "answer"]


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_odd_answers_are_rejected_with_a_message_never_a_crash(ex):
    for answer in _generic_wrong_answers(ex):
        result = ex.evaluate(answer, seed=0)
        assert result.status == INCORRECT, (answer, result)
        assert result.message and "\n" not in result.message
        assert "could not check" not in result.message, f"the checker itself failed on {answer!r}: {result.message}"


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_every_exercise_has_hints_and_a_solution(ex):
    assert ex.hints and all(h.strip() for h in ex.hints)
    assert repr(ex.solution()).startswith(f"def {ex.signature}:\n")


def _mistakes():
    """Plausible wrong answers, per exercise, and what the check must say about each."""
    return {
        "nb00-q1": [
            (lambda b: 2 * b, "each extra bit *doubles*"),
            (lambda b: 2**b - 1, "one level more"),
            (lambda b: b**2, "bits²"),
            (lambda b: 3**b, "distinct patterns"),
        ],
        "nb00-q2": [
            (lambda n: math.log2(n), "round *up*"),
            (lambda n: math.floor(math.log2(n)), "one too few"),
            (lambda n: int(math.log2(n)) + 1, "one too many"),
            (lambda n: n + 5, "the fewest bits b"),
        ],
        "nb00-q3": [
            (lambda lo, hi, b: np.linspace(lo, hi, b), "returned"),
            (lambda lo, hi, b: np.arange(2**b) * (hi - lo) / 2**b + lo, "the last level should be hi itself"),
            (lambda lo, hi, b: np.linspace(lo, hi, 2**b + 1), "has shape"),
            (lambda lo, hi, b: np.linspace(hi, lo, 2**b), "evenly spaced levels from lo to hi"),
        ],
        "nb01-q1": [
            (lambda x, f: np.rint(np.asarray(x) * 2.0**f), "integer codes"),
            (lambda x, f: np.trunc(np.asarray(x) * 2.0**f) / 2.0**f, "truncated toward zero"),
            (lambda x, f: np.floor(np.asarray(x) * 2.0**f) / 2.0**f, "rounded down"),
            (lambda x, f: np.round(np.asarray(x), f), "not the nearest multiple"),
        ],
        "nb01-q2": [
            (lambda v: np.round(v), "ties go to the even integer"),
            (lambda v: np.floor(np.asarray(v) + 0.5), "negative ties go up"),
            (lambda v: np.trunc(v), "truncates toward zero"),
            (lambda v: list(np.round(v)), "ties go to the even integer"),
        ],
        "nb01-q3": [
            (lambda x: int(np.float16(x).view(np.uint16)), "not an integer"),
            (lambda x: format(int(np.float32(x).view(np.uint32)), "032b"), "expected exactly 16 characters"),
            (lambda x: format(int(np.float32(x).view(np.uint32)) >> 16, "016b"), "top 16 bits of the float32"),
            (lambda x: format(int(np.float16(x).view(np.uint16)), "016b")[::-1], "not how float16 stores it"),
        ],
        "nb01-q4": [
            (lambda n, b: n * b / 8 / 1e9, "that is GB"),
            (lambda n, b: n * b / 2**30, "counts bits, not bytes"),
            (lambda n, b: n * b / 8, "that is bytes"),
            (lambda n, b: n * b / 8 / 2**20, "that is MiB"),
        ],
        "nb02-q1": [
            (
                lambda w, b: (np.rint(w / (np.abs(w).max() / 2 ** (b - 1))), np.abs(w).max() / 2 ** (b - 1)),
                "divide by 2**(bits-1) - 1",
            ),
            (
                lambda w, b: (np.rint(w / (np.abs(w).max() / (2**b - 1))), np.abs(w).max() / (2**b - 1)),
                "asymmetric range",
            ),
            (
                lambda w, b: (np.rint(w / (w.max() / (2 ** (b - 1) - 1))), w.max() / (2 ** (b - 1) - 1)),
                "largest *magnitude*",
            ),
            (lambda w, b: np.rint(w / (np.abs(w).max() / (2 ** (b - 1) - 1))), "should return a tuple (q, scale)"),
            (
                lambda w, b: (w / (np.abs(w).max() / (2 ** (b - 1) - 1)), np.abs(w).max() / (2 ** (b - 1) - 1)),
                "not whole numbers",
            ),
        ],
        "nb02-q2": [
            (_zero_point(widen=False), "widen [min, max] to include 0"),
            (_zero_point(steps=lambda b: 2**b), "divide the range by 2**bits - 1"),
            (_zero_point(round_zero=False), "not a whole number"),
            (lambda w, b: _zero_point()(w, b)[:2], "should return a tuple (q, scale, zero)"),
        ],
        "nb02-q3": [
            (lambda w, h: 20 * np.log10(np.sum(w**2) / np.sum((w - h) ** 2)), "twice the SQNR"),
            (lambda w, h: 10 * np.log10(np.sqrt(np.sum(w**2) / np.sum((w - h) ** 2))), "half the SQNR"),
            (lambda w, h: 10 * np.log10(np.sum((w - h) ** 2) / np.sum(w**2)), "upside down"),
            (lambda w, h: 10 * np.log(np.sum(w**2) / np.sum((w - h) ** 2)), "natural log"),
        ],
        "nb03-q1": [
            (lambda w, b, B: scale_zero_point.fake_quantize(w, b), "one scale for the whole tensor"),
            (
                lambda w, b, B: scale_zero_point.fake_quantize(np.ascontiguousarray(w.T), b, "absmax", B).T,
                "blocks run down the columns",
            ),
            (lambda w, b, B: scale_zero_point.absmax_quantize(w, b, B).q.reshape(w.shape), "integer levels"),
            (
                lambda w, b, B: scale_zero_point.fake_quantize(w, b, "zero point", B),
                "not the nearest level of its block",
            ),
        ],
        "nb03-q2": [
            (
                lambda x: (
                    np.minimum(15, np.trunc(x / (np.abs(x).max() / np.float32(8)) + np.float32(8.5)))
                    if np.abs(x).max()
                    else np.full(32, 8)
                ),
                "*signed*",
            ),
            (lambda x: np.clip(np.rint(x * _inv(x)) + 8, 0, 15), "rounds halves *up*"),
            (lambda x: np.minimum(15, np.trunc(x * _inv(x) + np.float32(8.5))) - 8, "must lie in 0..15"),
            (lambda x: np.zeros(32), "ggml stores a different one"),
        ],
        "nb03-q3": [
            (lambda d, q: np.array([d], ">f2").tobytes() + bytes(q[:16] | (q[16:] << 4)), "little-endian"),
            (lambda d, q: np.array([d], "<f2").tobytes() + bytes(q[0::2] | (q[1::2] << 4)), "not neighbours"),
            (lambda d, q: np.array([d], "<f2").tobytes() + bytes(q[16:] | (q[:16] << 4)), "halves are swapped"),
            (lambda d, q: np.array([d], "<f2").tobytes() + bytes(q), "is 34 bytes long, expected 18"),
        ],
        "nb03-q4": [
            (lambda b: (8 - _nibbles(b)) * _d(b), "sign is flipped"),
            (lambda b: _nibbles(b) * _d(b), "subtract 8"),
            (
                lambda b: (
                    (
                        np.concatenate([np.frombuffer(b[2:], np.uint8) >> 4, np.frombuffer(b[2:], np.uint8) & 15])
                        - np.float32(8)
                    )
                    * _d(b)
                ),
                "low nibbles are weights 0-15",
            ),
            (lambda b: _nibbles(b) - 8, "decodes it differently"),
        ],
        "nb04-q1": [
            (lambda j, s: tuple(int(v[0, j]) for v in q4_k.unpack_scales(s[None])[::-1]), "swapped"),
            (
                lambda j, s: (
                    (int(s[j]), int(s[j + 4])) if j < 4 else tuple(int(v[0, j]) for v in q4_k.unpack_scales(s[None]))
                ),
                "mask with & 63",
            ),
            (
                lambda j, s: (
                    (int(s[j] & 63), int(s[j + 4] & 63)) if j < 4 else (int(s[j + 4] & 15), int(s[j + 4] >> 4))
                ),
                "only the low 4 bits",
            ),
            (lambda j, s: (0, 0), "not the 6-bit scale and min"),
        ],
        "nb04-q2": [
            (lambda sc, m: q4_k.pack_scales(m[None], sc[None])[0].tobytes(), "bytes 0-3 hold the scales"),
            (
                lambda sc, m: (
                    q4_k.pack_scales(sc[None], m[None])[0, :4].tobytes()
                    + q4_k.pack_scales(sc[None], m[None])[0, 4:8].tobytes()
                    + bytes(((sc[4:] >> 4) | ((m[4:] & 15) << 4)).astype(np.uint8))
                ),
                "the *low* 4 bits",
            ),
            (lambda sc, m: bytes(sc) + bytes(m[:4]), "differ from llama.cpp's"),
            (lambda sc, m: list(sc) + list(m), "is 16 bytes long, expected 12"),
        ],
        "nb04-q3": [
            (lambda b: _q4k_decode(b, sign=+1), "the min is subtracted"),
            (lambda b: _q4k_decode(b, neighbours=True), "not neighbours"),
            (lambda b: _q4k_decode(b, low_bits_only=True), "lose the top 2 bits"),
            (lambda b: _q4k_decode(b)[::-1], "decodes it differently"),
        ],
        "nb04-q4": [
            (lambda x: kquant.quantize(x[None], "Q4_1")[0, :144].tobytes(), "differ from llama.cpp's"),
            (lambda x: kquant.quantize(x[None], "Q5_K")[0, :144].tobytes(), "differ from llama.cpp's"),
            (lambda x: kquant.quantize(x[None], "Q4_K")[0, ::-1].tobytes(), "differ from llama.cpp's"),
            (lambda x: kquant.quantize(x[None], "Q4_K")[0, :128].tobytes(), "is 128 bytes long, expected 144"),
        ],
        "nb05-q1": [
            (lambda lb, g, gb, f: 256 * lb + 256 // g * gb + 16 * f, "that is bits"),
            (lambda lb, g, gb, f: (256 * lb + 256 // g * gb) / 8, "float16 super-scale"),
            (lambda lb, g, gb, f: (256 * lb + g * gb + 16 * f) / 8, "256 / group groups"),
            (lambda lb, g, gb, f: 256 * lb / 8, "only the levels"),
        ],
        "nb05-q2": [
            (lambda b: _q5k_decode(b, fifth_bit=False), "the fifth bit is missing"),
            (lambda b: _q5k_decode(b, bit_order="big"), "wrong end"),
            (lambda b: _q5k_decode(b)[::-1], "decodes it differently"),
            (lambda b: _q5k_decode(b)[:128], "has shape (128,), expected (256,)"),
        ],
        "nb05-q3": [
            (lambda w, t: "Q6_K", "a format with fewer bits per weight"),
            (lambda w, t: "Q2_K", "below the target"),
            (lambda w, t: "Q4_0", "answer with one of"),
            (lambda w, t: 4, "should return a format name"),
        ],
        "nb06-q1": [
            (lambda i, n: i < n // 8 or (i - n // 8) % 3 == 2, "the last eighth"),
            (
                lambda i, n: i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 0,
                "counts from the end of the first eighth",
            ),
            (lambda i, n: "yes", "should return True or False"),
            (lambda i, n: i % 2 == 0, "llama.cpp says"),
        ],
        "nb06-q2": [
            (
                lambda k, i, n: "Q6_K" if k.startswith("attn") and mixes.use_more_bits(i, n) else "Q4_K",
                "leaves attn_q at the default Q4_K",
            ),
            (
                lambda k, i, n: (
                    "Q6_K" if (k == "attn_v" or k.startswith("ffn")) and mixes.use_more_bits(i, n) else "Q4_K"
                ),
                "only ffn_down gets more bits",
            ),
            (lambda k, i, n: "Q4_K", "use_more_bits decides"),
            (lambda k, i, n: 4, "should return a type name"),
        ],
        "nb06-q3": [
            (lambda rows: sum(8 * _nbytes(s, t) / math.prod(s) for s, t in rows) / len(rows), "the mean over tensors"),
            (lambda rows: sum(_nbytes(s, t) for s, t in rows) / sum(math.prod(s) for s, _ in rows), "bytes per weight"),
            (lambda rows: 4.5, "a different average"),
            (lambda rows: None, "forget to `return`"),
        ],
        "nb07-q1": [
            (lambda b: struct.unpack(">IQQ", b[4:24]), "little-endian"),
            (lambda b: struct.unpack("<III", b[4:16]), "64-bit"),
            (lambda b: struct.unpack("<4sIQQ", b), "leave the magic out"),
            (lambda b: struct.unpack("<IQQ", b[4:24])[::-1], "the header says otherwise"),
        ],
        "nb07-q2": [
            (lambda end, a, off: end + off, "the next multiple"),
            (lambda end, a, off: end - end % a + off, "rounds down"),
            (lambda end, a, off: end + a - end % a + off, "already a multiple"),
            (lambda end, a, off: end + (-end) % a, "add the tensor's own offset"),
        ],
        "nb07-q3": [
            (lambda ne, t: 8 * _nbytes(ne, t), "that is bits"),
            (lambda ne, t: math.prod(ne) * GGML_QUANT_SIZES[GGMLQuantizationType[t]][1], "not per weight"),
            (lambda ne, t: math.prod(ne) // GGML_QUANT_SIZES[GGMLQuantizationType[t]][0], "the number of blocks"),
            (lambda ne, t: 2 * math.prod(ne), "a different number of bytes"),
        ],
        "nb07-q4": [
            (lambda n, ne, t, off: anatomy.encode_tensor_info(n, ne[::-1], t, off), "not reversed"),
            (
                lambda n, ne, t, off: struct.pack(">Q", len(n)) + anatomy.encode_tensor_info(n, ne, t, off)[8:],
                "little-endian uint64",
            ),
            (lambda n, ne, t, off: anatomy.encode_tensor_info(n, ne, t, off + 32), "first difference at byte"),
            (
                lambda n, ne, t, off: struct.pack("<I", len(n)) + anatomy.encode_tensor_info(n, ne, t, off)[8:],
                "bytes long, expected",
            ),
        ],
        "nb08-q1": [
            (
                lambda lg, t: float(np.exp(-scores.log_softmax(lg)[np.arange(len(t)), t].mean())),
                "predicts the NEXT token",
            ),
            (lambda lg, t: float(scores.nll(lg, t).mean()), "perplexity is exp of it"),
            (lambda lg, t: float(2 ** scores.nll(lg, t).mean()), "take exp, not 2 **"),
            (lambda lg, t: float(np.exp(scores.nll(lg, t).sum())), "do not sum them"),
        ],
        "nb08-q2": [
            (lambda r, lg: scores.kl_divergence(lg, r), "KL(file ‖ reference)"),
            (lambda r, lg: float(scores.kl_per_position(r, lg).sum()), "the sum over positions"),
            (lambda r, lg: float(np.mean((r - lg) ** 2)), "softmax both"),
            (lambda r, lg: 0.0, "expected about"),
        ],
        "nb08-q3": [
            (lambda r, lg: int((r.argmax(-1) == lg.argmax(-1)).sum()), "a count of positions"),
            (lambda r, lg: float(np.mean(r.argmax(0) == lg.argmax(0))), "over the vocabulary (axis=-1)"),
            (lambda r, lg: 1.0, "expected"),
        ],
        "nb10-q1": [
            (lambda x: (x.astype(np.float64) ** 2).sum(axis=0), "the sum over tokens"),
            (lambda x: np.abs(x).mean(axis=0), "mean absolute value"),
            (lambda x: x.mean(axis=0) ** 2, "square first, then average"),
            (lambda x: (x**2).mean(axis=1), "one value per token"),
        ],
        "nb10-q2": [
            (lambda s, c: (s / c[:, None]).reshape(-1), "a row whose count is 0"),
            (lambda s, c: np.where(c[:, None] > 0, s / np.maximum(c, 1)[:, None], 1.0), "one flat vector"),
            (lambda s, c: (s / max(c.sum(), 1)).reshape(-1), "divide row m by counts[m]"),
        ],
        "nb10-q3": [
            (lambda w, wh, imp: float(np.sum((w - wh) ** 2)), "the plain squared error"),
            (lambda w, wh, imp: float(np.mean(imp * (w - wh) ** 2)), "not a mean"),
            (lambda w, wh, imp: float(np.sum(imp * np.abs(w - wh))), "square the errors"),
        ],
        "nb09-q1": [
            (
                lambda v, n: (
                    bool(np.allclose(np.diff(np.unique(v)), np.diff(np.unique(v))[0], rtol=1e-3))
                    if len(np.unique(v)) > 1
                    else True
                ),
                "some points unused",
            ),
            (lambda v, n: kfamily.on_even_grid(v, 10**6), "do not fit in"),
            (lambda v, n: len(np.unique(v)) > 1 and kfamily.on_even_grid(v, n), "all equal"),
            (lambda v, n: 1, "should return True or False"),
        ],
        "nb09-q2": [
            (lambda n, bpw: n * bpw / 1e9, "counts bits as bytes"),
            (lambda n, bpw: n * bpw / 8 / 2**30, "that is GiB"),
            (lambda n, bpw: n * bpw / 8, "that is bytes"),
            (lambda n, bpw: n * 4 / 8 / 1e9, "not n_params"),
        ],
        "nb09-q3": [
            (lambda L, h, d, c, b: L * h * d * c * b, "keys AND values"),
            (lambda L, h, d, c, b: 2 * L * h * d * c, "multiply by bytes_per_value"),
            (lambda L, h, d, c, b: 2 * L * h * d * b, "expected 2 (K and V)"),
        ],
    }


def _q5k_decode(block, fifth_bit=True, bit_order="little"):
    """A Q5_K decoder with one deliberate mistake switched on."""
    b = np.frombuffer(block, np.uint8)
    d, dmin = b[0:4].view("<f2").astype(np.float32)
    sc, m = (v[0] for v in q4_k.unpack_scales(b[None, 4:16]))
    low = q4_k.unpack_nibbles(b[None, 48:176])[0]
    high = np.unpackbits(b[16:48][:, None], axis=1, bitorder=bit_order).T.reshape(256)
    q = (low + 16 * high * fifth_bit).reshape(8, 32)
    return (q * (d * sc)[:, None] - (dmin * m)[:, None]).reshape(256)


def _nbytes(shape, t):
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[t]]
    return math.prod(shape) // block * type_size


def _q4k_decode(block, sign=-1, neighbours=False, low_bits_only=False):
    """A Q4_K decoder with one deliberate mistake switched on."""
    b = np.frombuffer(block, np.uint8)
    d, dmin = b[0:4].view("<f2").astype(np.float32)
    if low_bits_only:
        sc = np.concatenate([b[4:8] & 63, b[12:16] & 15])
        m = np.concatenate([b[8:12] & 63, b[12:16] >> 4])
    else:
        sc, m = (v[0] for v in q4_k.unpack_scales(b[None, 4:16]))
    qs = b[16:144]
    q = (
        np.stack([qs & 15, qs >> 4], axis=1).ravel()
        if neighbours
        else np.concatenate([qs.reshape(4, 1, 32) & 15, qs.reshape(4, 1, 32) >> 4], axis=1).ravel()
    )
    return (q.reshape(8, 32) * (d * sc)[:, None] + sign * (dmin * m)[:, None]).ravel()


def _inv(x):
    d = x[np.argmax(np.abs(x))] / np.float32(-8)
    return np.float32(1) / d if d else np.float32(0)


def _nibbles(block):
    b = np.frombuffer(block[2:18], np.uint8)
    return np.concatenate([b & 15, b >> 4]).astype(np.float32)


def _d(block):
    return np.frombuffer(block[:2], "<f2")[0].astype(np.float32)


def _zero_point(widen=True, steps=lambda b: 2**b - 1, round_zero=True):
    """A zero-point quantizer with one deliberate mistake switched on."""

    def quantize(w, bits):
        lo, hi = (min(w.min(), 0), max(w.max(), 0)) if widen else (w.min(), w.max())
        scale = (hi - lo) / steps(bits)
        zero = np.rint(-lo / scale) if round_zero else -lo / scale
        return np.clip(np.rint(w / scale) + np.rint(zero), 0, 2**bits - 1), scale, zero

    return quantize


@pytest.mark.parametrize("grade_id", sorted(_mistakes()))
def test_plausible_mistakes_are_rejected_with_a_helpful_message(grade_id):
    ex = next(e for e in EXERCISES if e.grade_id == grade_id)
    for answer, fragment in _mistakes()[grade_id]:
        result = ex.evaluate(answer, seed=1)
        assert result.status == INCORRECT, result
        assert fragment in result.message, result.message


def test_every_exercise_has_a_list_of_plausible_mistakes():
    assert sorted(_mistakes()) == sorted(IDS)
