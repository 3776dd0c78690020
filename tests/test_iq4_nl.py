"""IQ4_NL (kquant.formats.iq4_nl) beyond the shared codec tests: ggml's best_index_int8 and its
ties, crafted blocks, the bundled model's tensors with and without importance, the file type.

test_codecs.py and test_imatrix_codecs.py already run IQ4_NL through every input family, row
shape, chunk boundary and generated array (it is in FORMATS); this file checks what is particular
to a lookup-table format.
"""

import numpy as np
import pytest
from test_codecs import assert_same_bytes

import kquant
from kquant import reference
from kquant.formats import iq4_nl
from kquant.gguf.summary import sha256
from kquant.model import hub
from kquant.model.forward import Llama
from kquant.quantize_file import plan_gguf, quantize_gguf

VALUES = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]


def _neighbours(points, ulps: int = 4) -> np.ndarray:
    """Every point and its ``ulps`` float32 neighbours on each side."""
    out = []
    for p in np.asarray(points, dtype=np.float32):
        up, down = p, p
        out.append(p)
        for _ in range(ulps):
            up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(-np.inf))
            out += [up, down]
    return np.array(out, dtype=np.float32)


def test_the_table_is_ggmls():
    assert iq4_nl.KVALUES.tolist() == VALUES
    import gguf

    assert list(gguf.quants.IQ4_NL.kvalues) == VALUES


def test_best_index_is_best_index_int8_at_every_midpoint_value_and_beyond():
    # The fast table lookup against the C transcription (bisection + float differences), where
    # they could differ: on and beside every midpoint and table value, at the ends, at specials.
    v = np.array(VALUES, dtype=np.float32)
    points = np.concatenate([(v[:-1] + v[1:]) / 2, v, [0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, 200, -200]])
    x = np.concatenate([_neighbours(points), [np.inf, -np.inf, np.nan]]).astype(np.float32)
    x = np.concatenate([x, np.random.default_rng(0).uniform(-140, 130, 100_000).astype(np.float32)])
    np.testing.assert_array_equal(iq4_nl.best_index(x), iq4_nl.best_index_c(x))


@pytest.mark.parametrize(
    "x, index",
    [
        (7.0, 9),
        (6.999999, 8),
        (-4.5, 8),
        (-4.500001, 7),
        (101.0, 15),
        (-115.5, 1),
        (-1000.0, 0),
        (1000.0, 15),
        (0.0, 8),
    ],
)
def test_best_index_sends_a_tie_up_and_clamps_at_the_ends(x, index):
    # 7 is halfway between 1 and 13: C's "x - val[mu-1] < val[mu] - x" is false on a tie -> the upper value.
    assert int(iq4_nl.best_index(np.float32(x))) == index == int(iq4_nl.best_index_c(np.float32(x)))
    assert int(iq4_nl.best_index(np.array([np.nan], np.float32))[0]) == 15  # as C's bisection


def _crafted_blocks() -> np.ndarray:
    """Blocks whose candidates land exactly on table values and midpoints (ties), and degenerate ones."""
    v = np.array(VALUES, dtype=np.float32)
    mid = (v[:-1] + v[1:]) / 2
    rows = [
        np.resize(v, 32),  # the table itself: max -127 -> d = 1 maps every weight onto a value
        np.resize(mid, 32) * np.float32(1.0),  # every weight a midpoint of the first candidate
        np.resize(np.concatenate([mid, [-127.0]]), 32),
        -np.resize(np.concatenate([mid, [127.0]]), 32),
        np.resize(v, 32) * np.float32(0.25),
        np.full(32, 0.5, np.float32),  # constant
        np.zeros(32, np.float32),
        np.full(32, -0.0, np.float32),
        np.where(np.arange(32) == 5, 1.0, 0.0).astype(np.float32),  # one spike
        np.where(np.arange(32) < 16, 1e-16, -1e-16).astype(np.float32),  # below GROUP_MAX_EPS
        np.where(np.arange(32) == 0, 1e-15, 0.0).astype(np.float32),  # at GROUP_MAX_EPS
        np.full(32, 1e-40, np.float32),  # subnormal: x*x underflows to 0, so does every weight
        np.where(np.arange(32) % 2, 127.0, -127.0).astype(np.float32),  # +max and -max: the first wins
        np.where(np.arange(32) % 2, -127.0, 127.0).astype(np.float32),
    ]
    return np.stack(rows).reshape(-1, 32 * 2)  # two blocks a row


def test_crafted_blocks_with_ties_zeros_and_signs_equal_ggml():
    x = _crafted_blocks()
    assert_same_bytes(kquant.quantize(x, "IQ4_NL"), reference.quantize(x, "IQ4_NL"), "IQ4_NL")
    for qw in (np.ones(64, np.float32), np.linspace(0, 3, 64, dtype=np.float32), np.zeros(64, np.float32)):
        assert_same_bytes(
            kquant.quantize(x, "IQ4_NL", imatrix=qw), reference.quantize(x, "IQ4_NL", imatrix=qw), "IQ4_NL"
        )


def test_an_all_zero_block_is_scale_zero_and_every_index_8():
    # C: scale 0, then best_index_int8(0 * x) = the value nearest 0, which is 1 (index 8).
    f = iq4_nl.encode(np.zeros((1, 32), np.float32))
    assert float(f.d[0]) == 0.0 and (f.q == 8).all()
    assert (kquant.quantize(np.zeros((1, 32), np.float32), "IQ4_NL")[0, 2:] == 0x88).all()


def test_the_search_may_flip_the_sign_of_d():
    # 1/d candidates are (itry - 127)/max: max lands near -127, the long end of the table; for a
    # positive max that is a negative d. The stored sign must be ggml's either way.
    x = np.random.default_rng(3).standard_normal((64, 256)).astype(np.float32)
    d = iq4_nl.unpack(kquant.quantize(x, "IQ4_NL").reshape(-1, 18)).d.astype(np.float32)
    mx = np.take_along_axis(x.reshape(-1, 32), np.abs(x.reshape(-1, 32)).argmax(1)[:, None], 1)[:, 0]
    assert ((d < 0) & (mx > 0)).any() and ((d > 0) & (mx > 0)).any()
    assert_same_bytes(kquant.quantize(x, "IQ4_NL"), reference.quantize(x, "IQ4_NL"), "IQ4_NL")


@pytest.fixture(scope="module")
def bundled_weights():
    w = Llama.load(hub.bundled()).weights
    return {n: a for n, a in w.items() if a.ndim == 2 and a.shape[-1] % 32 == 0}


def test_every_matrix_of_the_bundled_model_equals_ggml_with_and_without_importance(bundled_weights):
    rng = np.random.default_rng(4)
    for name, x in bundled_weights.items():
        x = np.ascontiguousarray(x, dtype=np.float32)
        assert_same_bytes(kquant.quantize(x, "IQ4_NL"), reference.quantize(x, "IQ4_NL"), name)
        qw = (rng.standard_normal(x.shape[-1]) ** 2 * np.exp(rng.standard_normal(x.shape[-1]))).astype(np.float32)
        assert_same_bytes(kquant.quantize(x, "IQ4_NL", imatrix=qw), reference.quantize(x, "IQ4_NL", imatrix=qw), name)
    assert len(bundled_weights) >= 10


def test_decode_equals_ggml_and_gguf_py_on_the_bundled_model(bundled_weights):
    import gguf

    x = np.ascontiguousarray(bundled_weights["blk.0.ffn_up.weight"], dtype=np.float32)
    q = reference.quantize(x, "IQ4_NL")
    ours = kquant.dequantize(q, "IQ4_NL")
    np.testing.assert_array_equal(ours.view(np.uint32), reference.dequantize(q, "IQ4_NL").view(np.uint32))
    gguf_py = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.IQ4_NL)
    np.testing.assert_array_equal(ours.view(np.uint32), gguf_py.view(np.uint32))


def test_the_iq4_nl_file_of_the_bundled_model_is_llama_quantizes(tmp_path):
    src = hub.bundled()
    ours = quantize_gguf(src, tmp_path / "k.gguf", "IQ4_NL", progress=False).path
    assert sha256(ours) == sha256(reference.model_quantize(src, tmp_path / "l.gguf", "IQ4_NL"))


def test_the_iq4_nl_rules_name_their_reasons(tmp_path):
    from tiny_llama import write_tiny_llama

    # GQA 4, 8 layers: attn_v gets Q5_K; ffn_down of layer 0 (the first eighth) Q5_K, but only without an imatrix.
    src = write_tiny_llama(tmp_path / "m.gguf", n_layer=8, n_head=4, n_head_kv=1, n_ff=256, rows=32)
    plain = {c.name: c for c in plan_gguf(src, "IQ4_NL")}
    with_im = {c.name: c for c in plan_gguf(src, "IQ4_NL", imatrix=True)}
    assert plain["blk.3.attn_v.weight"].type.name == "Q5_K" and "GQA" in plain["blk.3.attn_v.weight"].reason
    assert plain["blk.0.ffn_down.weight"].type.name == "Q5_K" and "without an importance matrix" in (
        plain["blk.0.ffn_down.weight"].reason
    )
    assert plain["blk.1.ffn_down.weight"].type.name == "IQ4_NL"
    assert with_im["blk.0.ffn_down.weight"].type.name == "IQ4_NL"
    assert plain["token_embd.weight"].type.name == "Q6_K" and plain["blk.2.attn_q.weight"].type.name == "IQ4_NL"
    changed = {n for n in plain if plain[n].type != with_im[n].type}
    assert changed == {"blk.0.ffn_down.weight"}
    # ... and the 2-GQA model keeps attn_v at IQ4_NL
    src2 = write_tiny_llama(tmp_path / "m2.gguf", n_layer=2, n_head=4, n_head_kv=2, n_ff=256, rows=32)
    assert {c.name: c.type.name for c in plan_gguf(src2, "IQ4_NL")}["blk.1.attn_v.weight"] == "IQ4_NL"


def test_the_search_laid_out_step_by_step_chooses_what_the_encoder_chooses():
    rng = np.random.default_rng(9)
    x = (rng.standard_t(4, (40, 32)) * 0.02).astype(np.float32)
    x[3, :] = np.resize(np.array(VALUES, np.float32), 32)  # exact table values: ties between candidates' scores
    for w in (x * x, iq4_nl.block_importance(x.T.copy(), np.ones((32, 40), np.float32)).T):
        d = iq4_nl.search(x.T.copy(), np.ascontiguousarray(w.T))
        for b in range(len(x)):
            steps = iq4_nl.search_steps(x[b], w[b])
            assert steps.d[steps.chosen] == d[b]
            assert steps.score[steps.chosen] >= steps.score.max() * (1 - 1e-6)
