"""Specification of the modules the first notebooks teach from: rounding, linear, metrics, memory,
samples, scale_search, selftest, and the notebook conversions of kquant.exercises."""

import json
import pathlib
import subprocess
import sys

import gguf
import numpy as np
import pytest

from kquant import KQuantError, colab, selftest
from kquant.exercises import notebook
from kquant.formats import q4_k
from kquant.lessons import memory, metrics, rounding, samples, scale_search, scale_zero_point

ROOT = pathlib.Path(__file__).resolve().parents[1]


# --- rounding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("half_even", [-2, -2, -0, 0, 2, 2, 2, 3]),
        ("half_away", [-3, -2, -1, 1, 2, 3, 2, 3]),
        ("half_up", [-2, -1, 0, 1, 2, 3, 2, 3]),
        ("truncate", [-2, -1, -0, 0, 1, 2, 2, 2]),
    ],
)
def test_each_rounding_mode_settles_ties_its_own_way(mode, expected):
    v = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 2.4, 2.6])
    assert rounding.round_to_int(v, mode).tolist() == expected


def test_an_unknown_rounding_mode_is_refused_with_the_known_ones_named():
    with pytest.raises(KQuantError, match="half_even, half_away, half_up, truncate"):
        rounding.round_to_int([1.5], "bankers")


def test_fixed_point_error_is_at_most_half_a_step():
    x = np.random.default_rng(0).uniform(-4, 4, 10_000)
    for f in range(0, 24, 3):
        fp = rounding.fixed_point(x, f)
        assert np.all(np.abs(fp.value - x) <= 2.0**-f / 2)
        assert np.array_equal(fp.value, fp.code * 2.0**-f)


def test_pi_with_three_fractional_bits_is_25_eighths():
    fp = rounding.fixed_point(np.pi, 3)
    assert (int(fp.code), float(fp.value), rounding.bit_string(fp.code, 5)) == (25, 3.125, "11001")


@pytest.mark.parametrize("bad", [-1, 53, 2.5, "8"])
def test_fixed_point_refuses_impossible_bit_counts(bad):
    with pytest.raises(KQuantError):
        rounding.fixed_point(1.0, bad)


@pytest.mark.parametrize("fmt, dtype, utype", [("float32", np.float32, np.uint32), ("float16", np.float16, np.uint16)])
def test_float_fields_are_the_bits_numpy_stores(fmt, dtype, utype):
    rng = np.random.default_rng(1)
    values = np.concatenate(
        [rng.standard_normal(200) * 10.0 ** rng.integers(-6, 5, 200), [0.0, -0.0, 1e-7, 65504, 1e6]]
    )
    for x in values:
        fb = rounding.float_bits(x, fmt)
        with np.errstate(over="ignore"):  # 1e6 overflows float16 to inf, which float_bits must show too
            stored = dtype(x)
        assert fb.bits == format(int(stored.view(utype)), f"0{8 * stored.itemsize}b")
        assert fb.value == float(stored) or (np.isinf(fb.value) and np.isinf(stored))
        if np.isfinite(stored):
            assert fb.from_fields() == float(stored)


def test_bfloat16_rounds_to_nearest_even_as_ggml_and_gguf_do():
    x = np.random.default_rng(2).standard_normal(500).astype(np.float32) * 1e3
    theirs = gguf.quants.quantize(x, gguf.GGMLQuantizationType.BF16).view(np.uint16)
    ours = [int(rounding.float_bits(v, "bfloat16").bits, 2) for v in x]
    assert ours == theirs.tolist()


def test_float_limits_are_the_known_ones():
    assert rounding.float_max("float16") == 65504 == float(np.finfo(np.float16).max)
    assert rounding.float_max("float32") == float(np.finfo(np.float32).max)
    assert rounding.relative_step("float16") == float(np.finfo(np.float16).eps)


# --- linear, metrics, memory ------------------------------------------------------------


@pytest.mark.parametrize("scheme", list(scale_zero_point.SCHEMES))
@pytest.mark.parametrize("block_size", [None, 8, 32, 128])
def test_every_weight_inside_the_grid_is_within_half_a_step(scheme, block_size):
    w = samples.synthetic_weights(16, 128, seed=3)
    qz = scale_zero_point.SCHEMES[scheme](w, 4, block_size)
    err = np.abs(w.astype(np.float64) - qz.dequantize()).reshape(qz.q.shape)
    assert np.all(err <= qz.scale / 2 + 1e-12)


def test_absmax_levels_are_symmetric_and_the_largest_weight_is_exact():
    w = np.array([[-0.7, 0.1, 0.35, 0.0]])
    qz = scale_zero_point.absmax_quantize(w, 4)
    assert qz.q.tolist() == [[-7, 1, 4, 0]] and qz.dequantize()[0, 0] == -0.7


def test_zero_point_stores_zero_exactly_and_uses_the_whole_range():
    w = np.abs(samples.synthetic_weights(8, 64, seed=4)) + 0.01  # all positive: the range widens down to 0
    qz = scale_zero_point.zero_point_quantize(np.concatenate([w, np.zeros((8, 64))], axis=1), 4)
    assert np.all(qz.dequantize()[:, 64:] == 0)
    assert qz.q.min() == 0 and qz.q.max() == 15


def test_an_all_zero_block_stays_zero():
    for scheme in scale_zero_point.SCHEMES:
        assert np.all(scale_zero_point.fake_quantize(np.zeros((2, 32)), 4, scheme, 32) == 0)


@pytest.mark.parametrize(
    "args, fragment",
    [
        ((np.zeros((2, 30)), 4, "absmax", 32), "do not split into blocks of 32"),
        ((np.zeros(4), 1, "absmax"), "from 2 to 16"),
        ((np.zeros(4), 4, "log"), "unknown scheme"),
        ((np.zeros(0), 4), "empty"),
    ],
)
def test_linear_refuses_bad_input_in_one_line(args, fragment):
    with pytest.raises(KQuantError, match=fragment):
        scale_zero_point.fake_quantize(*args)


def test_scale_overhead_makes_q4_0_four_and_a_half_bits():
    assert scale_zero_point.bits_per_weight(4, 32) == 4.5 and scale_zero_point.bits_per_weight(8, 32) == 8.5


def test_one_outlier_is_scaled_and_masked_out():
    w = samples.synthetic_weights(4, 32, seed=5)
    w2, others = scale_zero_point.scale_largest(w, 10)
    i = np.argmax(np.abs(w))
    assert w2.flat[i] == pytest.approx(10 * w.flat[i]) and not others.flat[i] and others.sum() == w.size - 1
    assert np.array_equal(w2[others], w[others].astype(np.float64))


def test_sqnr_gains_six_decibels_per_bit_on_uniform_data():
    x = np.random.default_rng(6).uniform(-1, 1, 200_000)
    db = [metrics.sqnr_db(x, rounding.fixed_point(x, f).value) for f in range(4, 12)]
    assert np.polyfit(range(4, 12), db, 1)[0] == pytest.approx(20 * np.log10(2), abs=0.05)
    assert metrics.sqnr_db(x, x) == float("inf")


def test_memory_arithmetic():
    assert memory.weight_bytes(7e9, 4.5) == 7e9 * 4.5 / 8
    assert memory.gib(2**30) == 1 and memory.gb(1e9) == 1
    with pytest.raises(KQuantError):
        memory.weight_bytes(1e9, 0)


# --- samples ----------------------------------------------------------------------------


def test_example_weights_are_the_bundled_models_and_say_so():
    sample = samples.example_weights()
    assert sample.weights.dtype == np.float32 and sample.weights.shape == (256, 768)
    assert "kquant-tiny-f16.gguf" in sample.source and "ffn_down" in sample.source


def test_example_weights_fall_back_to_the_synthetic_stand_in_without_the_model(monkeypatch, tmp_path):
    from kquant.model import hub

    monkeypatch.setattr(hub, "BUNDLED", tmp_path / "missing.gguf")
    sample = samples.example_weights()
    assert np.array_equal(sample.weights, samples.synthetic_example().weights) and "synthetic" in sample.source


def test_the_synthetic_stand_in_is_seeded_shaped_like_a_layer_and_says_it_is_synthetic():
    a, b = samples.synthetic_example(), samples.synthetic_example()
    assert np.array_equal(a.weights, b.weights) and a.weights.dtype == np.float32 and a.weights.shape == (256, 1024)
    assert "synthetic" in a.source
    col_rms = np.sqrt(np.mean(a.weights.astype(np.float64) ** 2, axis=0))
    assert np.sum(col_rms > 3 * np.median(col_rms)) == 4  # the four outlier input columns
    assert 0.015 < np.median(col_rms) < 0.025


# --- scale_search -----------------------------------------------------------------------


def test_the_traced_search_with_q4_k_weights_picks_exactly_what_the_encoder_picks():
    rng = np.random.default_rng(7)
    blocks = [
        rng.standard_t(3, 256) * 0.05,
        np.abs(rng.standard_normal(256)),
        np.where(np.arange(256) < 32, 0.0, rng.standard_normal(256)),
        np.full(256, 0.25),
        rng.integers(-3, 4, 256).astype(float),
    ]
    for x in blocks:
        x = x.astype(np.float32)
        scales, mins, L = q4_k.subblock_fit(np.ascontiguousarray(x.reshape(8, 32).T), 15, -1.0, 0.1, 20)
        for j in range(8):
            sub = x[32 * j : 32 * j + 32]
            t = scale_search.qkx2_trace(sub, scale_search.q4_k_weights(sub))
            assert np.float32(t.scale) == scales[j] and np.float32(t.the_min) == mins[j]
            assert np.array_equal(t.levels, L[:, j])


def test_the_trace_records_every_candidate_and_the_winner_has_the_least_error():
    x = samples.example_weights().weights[0, :32]
    t = scale_search.qkx2_trace(x, scale_search.q4_k_weights(x))
    assert len(t.candidates) == 21
    kept = [c for c in t.candidates if c.best_so_far]
    best = min([t.initial, *t.candidates], key=lambda c: c.error)
    assert (kept[-1] if kept else t.initial).error == best.error


# --- selftest ---------------------------------------------------------------------------


def test_selftest_pins_are_the_ones_pyproject_promises():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the test extra installs tomli on 3.10
        import tomli as tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["llama"]
    pins = {}
    for dep in deps:
        name = dep.split(">")[0].split("<")[0].split("=")[0].strip()
        pins[name] = dep[len(name) :].replace(" ", "")
    installed = colab.requirements()  # what the self-test checks against: kquant's installed metadata
    for name in selftest.MODULES:
        assert sorted(installed[name].split(",")) == sorted(pins[name].split(",")), name


def test_selftest_passes_in_this_environment():
    report = selftest.report()
    assert report, repr(report)


def test_a_missing_or_wrong_package_is_reported_with_a_one_line_fix():
    check = selftest.check_package("no-such-package-kq", ">=1")
    assert check.status == selftest.MISSING and 'pip install "no-such-package-kq>=1"' in repr(check)
    assert "the workbook needs >=99" in repr(selftest.check_package("numpy", ">=99"))
    assert not selftest.Report([check]) and "fix the lines marked" in repr(selftest.Report([check]))


def test_a_missing_model_is_marked_with_its_fix(tmp_path):
    (tmp_path / ".partial.gguf").write_bytes(b"GGUF")  # a file being written is not a model
    check = selftest.check_model(tmp_path)
    assert check.status == selftest.MISSING and repr(check).startswith("✘ bundled model: no .gguf file")
    assert "fix: pip install --force-reinstall kquant" in repr(check)
    assert not selftest.Report([check])
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    assert selftest.check_model(tmp_path).status == selftest.OK


@pytest.mark.parametrize(
    "version, spec, ok",
    [
        ("8.1.9", ">=7.7,<9", True),
        ("9.0.0", ">=7.7,<9", False),
        ("7.6", ">=7.7,<9", False),
        ("0.19", "==0.19.0", True),
        ("1.26rc1", ">=1.24", True),
    ],
)
def test_version_specifiers(version, spec, ok):
    assert selftest.satisfies(version, spec) is ok


# --- notebook conversions ---------------------------------------------------------------


def test_solution_regions_keep_their_indentation_and_markers():
    src = (
        "def f(x):\n    ### BEGIN SOLUTION\n    # YOUR CODE HERE\n    raise NotImplementedError()\n    ### END SOLUTION"
    )
    out = notebook.replace_regions(src, "y = x\nreturn y")
    assert out == "def f(x):\n    ### BEGIN SOLUTION\n    y = x\n    return y\n    ### END SOLUTION"


@pytest.mark.parametrize(
    "src", ["### BEGIN SOLUTION\nx", "### END SOLUTION", "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"]
)
def test_unbalanced_solution_markers_are_refused(src):
    with pytest.raises(KQuantError):
        notebook.replace_regions(src, "pass")


def test_an_nbgrader_id_that_names_no_exercise_is_refused():
    with pytest.raises(KQuantError, match="names no exercise"):
        notebook.exercise_for("nb01-q99-answer")


def test_instructor_and_student_versions_round_trip_through_the_command_line(tmp_path):
    src = ROOT / "notebooks" / "01_rounding_pi.ipynb"

    def run(*a):
        return subprocess.run([sys.executable, "-m", "kquant.exercises", *a], cwd=ROOT, capture_output=True, text=True)

    r = run("instructor", str(src), "--out", str(tmp_path / "source"))
    assert r.returncode == 0, r.stderr
    instructor = json.loads((tmp_path / "source" / src.name).read_text())
    assert "np.rint(np.asarray(x) / step) * step" in "".join(c["source"] for c in instructor["cells"])
    r = run("student", str(tmp_path / "source" / src.name), "--out", str(tmp_path / "release"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "release" / src.name).read_text()) == json.loads(src.read_text())
    r = run("student", str(src), "--out", str(src.parent))
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr
