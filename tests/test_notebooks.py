"""Specification of the workbook's notebooks: they run, their exercises are gradable, they are up to date.

Every notebook is executed headless twice: as shipped (it runs clean and every
exercise says "not attempted yet") and with the solutions filled in from
kquant.exercises (every check passes). How long they take is printed, never asserted:
a busy machine must not fail a test (the time budgets live in benchmarks/).
"""

import ast
import re
import subprocess
import sys

import nbformat
import pytest
from notebook_tools import (
    NOTEBOOKS,
    ROOT,
    check_cells,
    execute,
    numbers_after,
    printed_number,
    printed_text,
    slowest_cell,
    widget_outputs,
)

from kquant.exercises.notebook import BEGIN, END, STUB, as_shipped, exercises_of, load, source_of, with_solutions

NAMES = [p.stem for p in NOTEBOOKS]


def _nbgrader(cell):
    return cell.get("metadata", {}).get("nbgrader")


def test_the_notebooks_are_numbered_from_00_without_gaps_and_the_real_model_comes_last():
    assert [n[:2] for n in NAMES] == [f"{i:02d}" for i in range(len(NAMES))]
    assert NAMES[-1].endswith("a_real_model")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_runs_as_shipped_with_every_exercise_not_attempted(path):
    nb, seconds = execute(load(path))
    checks = check_cells(nb)
    assert checks and all("not attempted yet" in text for text in checks.values()), checks
    _assert_widgets_drew(nb)
    CLAIMS_06_10.get(path.name[:2], lambda _text: None)(printed_text(nb))
    print(f"{path.name} as shipped: {seconds:.1f} s, the slowest cell {slowest_cell(nb)}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_runs_with_solutions_and_every_check_passes(path):
    nb, seconds = execute(with_solutions(load(path)))
    checks = check_cells(nb)
    failed = {k: v for k, v in checks.items() if not v.startswith("✔")}
    assert checks and not failed, failed
    print(f"{path.name} with solutions: {seconds:.1f} s, the slowest cell {slowest_cell(nb)}")


def _assert_widgets_drew(nb):
    """Every interactive view drew a figure when the notebook ran, and none raised."""
    widget_cells = [c for c in nb.cells if c.cell_type == "code" and re.search(r"\binteract(ive_output)?\(", c.source)]
    assert widget_cells, "a notebook needs at least one interactive widget"
    outputs = widget_outputs(nb)
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= len(widget_cells), f"{len(widget_cells)} widgets drew only {len(figures)} figures"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_has_at_least_three_exercises_each_with_nbgrader_answer_and_check_cells(path):
    nb = load(path)
    notebook_id = "nb" + path.name[:2]
    exercises = exercises_of(notebook_id)
    assert len(exercises) >= 3
    cells = {_nbgrader(c)["grade_id"]: c for c in nb["cells"] if _nbgrader(c)}
    for ex in exercises:
        answer, check = cells[f"{ex.grade_id}-answer"], cells[f"{ex.grade_id}-check"]
        assert _nbgrader(answer) == {
            "grade": False,
            "grade_id": f"{ex.grade_id}-answer",
            "locked": False,
            "schema_version": 3,
            "solution": True,
            "task": False,
        }
        assert _nbgrader(check) == {
            "grade": True,
            "grade_id": f"{ex.grade_id}-check",
            "locked": True,
            "points": ex.points,
            "schema_version": 3,
            "solution": False,
            "task": False,
        }
        src = source_of(answer)
        assert f"def {ex.signature}:" in src and f"{BEGIN}\n" in src and src.rstrip().endswith(END)
        assert source_of(check) == f"ex.{ex.name}.check({ex.function_name})"
    assert len(cells) == 2 * len(exercises)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_is_a_valid_nbformat_4_notebook(path):
    nbformat.validate(nbformat.from_dict(load(path)))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_shipped_regions_hold_nbgrader_default_stub_and_solutions_fill_and_clear_cleanly(path):
    nb = load(path)
    for cell in nb["cells"]:
        if (_nbgrader(cell) or {}).get("solution"):
            inside = source_of(cell).split(BEGIN + "\n", 1)[1].split(END, 1)[0]
            assert [line.strip() for line in inside.strip().split("\n")] == STUB.split("\n")
    assert as_shipped(with_solutions(nb)) == nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebooks_open_with_goals_end_with_a_summary_and_have_no_outputs(path):
    nb = load(path)
    first, last = source_of(nb["cells"][0]), source_of(nb["cells"][-1])
    assert first.startswith(f"# {path.name[:2]} · ") and "you will be able to" in first
    assert last.startswith("## Summary")
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), "ship notebooks without outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_first_code_cell_installs_what_colab_lacks_only_on_colab(path):
    code = [source_of(c) for c in load(path)["cells"] if c["cell_type"] == "code"]
    assert (
        '"google.colab" in sys.modules' in code[0] and "kquant/colab.py" in code[0]
    )  # tests/test_colab.py: what it does
    assert len(code[0].splitlines()) <= 8, "keep the Colab cell small"


def test_notebooks_are_built_from_their_sources():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_notebooks.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# The public names of ipywidgets 7.7.0 (its ipywidgets/widgets/__init__.py), the oldest version the
# workbook supports and the one Colab ships. A name outside this set is ipywidgets-8-only API.
IPYWIDGETS_7_7 = set(
    "Widget CallbackDispatcher register widget_serialization DOMWidget ValueWidget Color Datetime NumberFormat "
    "CoreWidget "
    "Checkbox ToggleButton Valid Button ButtonStyle Box HBox VBox GridBox FloatText BoundedFloatText FloatSlider "
    "FloatProgress FloatRangeSlider FloatLogSlider IntText BoundedIntText IntSlider IntProgress IntRangeSlider Play "
    "SliderStyle ColorPicker DatePicker Output RadioButtons ToggleButtons ToggleButtonsStyle Dropdown Select "
    "SelectionSlider SelectMultiple SelectionRangeSlider Tab Accordion HTML HTMLMath Label Text Textarea Password "
    "Combobox Controller interact interactive fixed interact_manual interactive_output jslink jsdlink Layout Image "
    "Video Audio Style TwoByTwoLayout AppLayout GridspecLayout FileUpload link dlink".split()
)


def test_only_ipywidgets_7_api_is_used():
    sources = [source_of(c) for p in NOTEBOOKS for c in load(p)["cells"] if c["cell_type"] == "code"]
    sources += [p.read_text() for p in (ROOT / "kquant").rglob("*.py")]
    used = set()
    for src in sources:
        for names in re.findall(r"from ipywidgets import ([\w, ()]+)", src):
            used |= {n.strip(" ()") for n in names.split(",") if n.strip(" ()")}
        used |= set(
            re.findall(r"\bwidgets\.([A-Z]\w*|interact\w*|fixed)\b", src)
        )  # widgets.IntSlider, widgets.interact
    assert used, "the notebooks use ipywidgets"
    assert used <= IPYWIDGETS_7_7, sorted(used - IPYWIDGETS_7_7)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_no_cell_uses_the_readers_answers(path):
    """Later cells call kquant, never the reader's functions, so a wrong answer cannot break the notebook."""
    nb = load(path)
    for ex in exercises_of("nb" + path.name[:2]):
        own = {f"{ex.grade_id}-answer", f"{ex.grade_id}-check"}
        pattern = re.compile(rf"(?<![.\w]){re.escape(ex.function_name)}\b")
        for cell in nb["cells"]:
            if cell["cell_type"] == "code" and cell["id"] not in own:
                assert not pattern.search(source_of(cell)), f"cell {cell['id']} uses the reader's `{ex.function_name}`"


# --- Claims against output, notebooks 00-05 (issue 12, section 2) ---------------------------------
# Every sentence of notebooks 00-05 that states a measured number or a comparison is either printed
# by code from the computed value, or checked here against what the executed notebook printed. If a
# changed model, seed or rule makes a sentence false, the test of that notebook fails and says which.


def _claims_00(out):
    import numpy as np

    n = printed_number(out, r"kquant-tiny-f16\.gguf: ([\d,]+) weights")
    assert 1e6 < n < 1e8, "00 calls the bundled model a toy of a few million weights"
    assert printed_number(out, r"Llama-2-7B's 6.74 billion weights are ([\d,]+) times") > 100
    assert re.search(r"\b8 layers, 4 attention heads", out), "the README and 00 describe 8 layers, 4 heads"
    for bits in range(1, 9):  # "no level sits at 0": 2**b evenly spaced levels on [-1, 1] never include 0
        assert not np.any(np.linspace(-1, 1, 2**bits) == 0)


def _claims_01(out):
    import numpy as np

    from kquant.lessons import rounding

    assert re.search(r"π · 2\^3 = 25\.13\d* → code 25 .* value 3\.125", out), "section 1's worked example"
    slope = printed_number(out, r"fitted slope: ([\d.]+) dB per bit")
    assert abs(slope - 10 * np.log10(4)) < 0.05, "'each bit adds 6.02 dB (measured above)'"
    rms = printed_number(out, r"RMS error ([\d.e+-]+), step/√12")
    theory = printed_number(out, r"step/√12 = ([\d.e+-]+)")
    assert abs(rms / theory - 1) < 0.01, "'its root mean square is step/√12'"
    assert printed_number(out, r"half_even: +(\d+) of 32 levels differ") == 16, "'changed 16 of 32 bytes'"
    assert "rules that reproduce llama.cpp's Q8_0 block: ['half_away']" in out, (
        "'Only half away from zero reproduces Q8_0'"
    )
    assert len(rounding.RULES) == 3, "'ggml uses three' tie rules"
    assert "float16: largest finite 65504" in out
    assert "KQuantError" in out and "fits in float16" in out, "huge Q4_0 refused, Q8_0's scale fits"
    # the widget prompt: 1e-6 is a float16 subnormal about 1.3 % off with 5 significant bits; 70000 is inf
    fb = rounding.float_bits(1e-6, "float16")
    assert fb.exponent == 0 and fb.mantissa.bit_length() == 5 and abs(fb.value / 1e-6 - 1.013) < 0.001
    assert 1e-6 < 2.0**-14 < 6.2e-5 and rounding.float_bits(70000, "float16").value == float("inf")
    assert "1 GiB = 2^30 bytes = 1.0737 GB: 7.4% more than a GB" in out
    assert "70B at 16 bits: 140 GB;  at 32 bits: 280 GB" in out, "'the first claim is right'"
    assert "3.76x smaller, so 40 GB becomes 10.6 GB" in out, "'3.76 times smaller, not 4'"
    gb4 = printed_number(out, r"70B at 4\.0 bits/weight: ([\d.]+) GB")
    assert gb4 == 35.0 and gb4 > 24, "'even at exactly 4 bits, 70 billion weights take 35 GB'"


def _claims_02(out):
    rows = dict(
        ((m.group(1).strip(), m.group(2)), (int(m.group(3)), int(m.group(4)), float(m.group(5))))
        for m in re.finditer(r"(.+?), +(absmax|zero point): +(\d+) of (\d+) levels in use, SQNR +([\d.-]+) dB", out)
    )
    assert rows[("W (centred)", "absmax")][1] == 15 and rows[("W (centred)", "zero point")][1] == 16, "15 and 16 levels"
    pa, pz = rows[("|W| (all positive)", "absmax")], rows[("|W| (all positive)", "zero point")]
    assert 1.5 <= pz[0] / pa[0] <= 2.5 and pz[2] > pa[2], "'about twice the levels in use, and a higher SQNR'"
    ca, cz = rows[("W (centred)", "absmax")], rows[("W (centred)", "zero point")]
    assert abs(ca[2] - cz[2]) < 1.0, "'on the centred tensor both schemes are close'"
    table = {
        int(m.group(1)): (float(m.group(2)), float(m.group(3)), int(m.group(4)))
        for m in re.finditer(r"^ +(\d) +([\d.-]+) dB +([\d.-]+) dB +(\d+)%$", out, re.M)
    }
    assert sorted(table) == list(range(2, 9))
    for b in range(5, 8):
        assert 5.5 < table[b + 1][0] - table[b][0] < 6.6, "'about 6 dB per bit once the grid is fine enough'"
    assert all(table[b][2] > 50 for b in (2, 3, 4)), "'at 2-4 bits ... most weights round to 0' (summary: at 4 bits)"
    assert "<= s/2" in out and re.search(r"<= s/2 = [\d.e+-]+: True", out)
    for m in re.finditer(r"down +([\d.]+) dB;  20·log10\([\d.]+\) = +([\d.]+) dB", out):
        assert abs(float(m.group(1)) - float(m.group(2))) < 0.3, "'costs everyone else 20·log10(g) dB'"


def _claims_03(out):
    sqnr = [float(m.group(1)) for m in re.finditer(r"^ +(?:\d+|tensor) +[\d.]+ +([\d.-]+) dB +\d+%$", out, re.M)]
    assert len(sqnr) == 8 and sqnr == sorted(sqnr, reverse=True), "'smaller blocks, better SQNR'"
    need = printed_number(out, r"a per-tensor code needs (\d+) bits/weight")
    assert need - 4.5 >= 1, "'blocks win by a wide margin'"
    tensor = printed_number(out, r"per tensor: SQNR of the other weights +([\d.-]+) dB")
    block = printed_number(out, r"per block of 32: SQNR of the other weights +([\d.-]+) dB")
    assert block > tensor + 10
    m = re.search(r"in blocks \[(\d+)\]; the outlier is in block (\d+)", out)
    assert m and m.group(1) == m.group(2), "'an outlier only coarsens its own block'"
    for name, bpw in [("Q4_0", "4.5"), ("Q4_1", "5.0"), ("Q8_0", "8.5")]:
        assert re.search(rf"^ *{name} +32 +\d+ +{re.escape(bpw)} ", out, re.M), f"'{name} takes {bpw} bits per weight'"
    gain = printed_number(out, r"both 4\.5 bits/weight: ([+-][\d.]+) dB")
    predicted = printed_number(out, r"20·log10\(8/7\) = ([+-][\d.]+) dB")
    assert gain > 0 and abs(gain - predicted) < 0.5, "'Q4_0 beats absmax blocks of 32 ... errors shrink by 7/8'"
    assert "identical: True" in out and "byte for byte: True" in out


def _claims_04(out):
    assert "llama.cpp's block_q4_K: 144 bytes for 256 weights = 4.5 bits per weight" in out
    assert re.search(r"the origin first moves at candidate \d+", out), "the trace shows the origin moving"
    fitted = [float(m.group(1)) for m in re.finditer(r"^ +\d+ +-?[\d.]+ +[\d.]+ +[\d.]+ +(-[\d.]+) ", out, re.M)]
    assert fitted and all(v < 0 for v in fitted), "'the fitted min is printed negative'"
    assert printed_number(out, r"traced search: scale [\d.e-]+  m = -min ([\d.e-]+)") > 0, "'stored as m = -min >= 0'"
    assert re.search(r"origin moving \(as ggml\): 0 of \d+ super-blocks differ", out), "the transcription is exact"
    frozen = printed_number(out, r"frozen at the data min: \d+ of \d+ super-blocks differ from llama.cpp's \((\d+)%\)")
    assert frozen > 50, "'most super-blocks get other bytes' (about 92 % on this ffn_down)"
    s_move = printed_number(out, r"origin moving.*SQNR ([\d.]+) dB")
    s_frozen = printed_number(out, r"origin frozen.*SQNR ([\d.]+) dB")
    assert abs(s_move - s_frozen) < 0.5, "'its SQNR is close'"
    some = printed_number(out, r"search changes: \d+ of \d+ \((\d+)%\)")
    at_least_one = printed_number(out, r"super-blocks with at least one of them: (\d+)%")
    assert some < 100 and at_least_one >= frozen, "'only some sub-blocks' and 'fewer differ in bytes than contain one'"
    assert "identical: True" in out and "our block equals llama.cpp's: True" in out
    assert re.search(r"Q4_K: 4\.5 bits/weight, equals llama.cpp's bytes: True", out)


def _claims_05(out):
    layout = re.findall(r"^(Q\d_K) +\d +\d+ +\d+\+\d+ +\d +(\d+) +(\d+) +([\d.]+) +d", out, re.M)
    bpw = {name: b for name, _, _, b in layout}
    assert bpw == {"Q2_K": "2.625", "Q3_K": "3.4375", "Q4_K": "4.5", "Q5_K": "5.5", "Q6_K": "6.5625"}, bpw
    assert all(added == written for _, added, written, _ in layout), "the bytes added up are the bytes written"
    assert "ggml's C encoder gives the same bytes (Q2_K, Q6_K, Q4_0): True" in out
    slope = printed_number(out, r"k-quants: ([\d.]+) dB per bit per weight")
    assert 5.4 < slope < 6.6, "'SQNR rises by about the 6 dB per bit notebook 01 predicts'"
    for k, legacy in [("Q4_K", "Q4_0"), ("Q5_K", "Q5_0")]:
        assert printed_number(out, rf"{k} vs {legacy}: .* \(([+-][\d.]+) dB for the K\)") > 0
    assert printed_number(out, r"Q4_1 spends ([\d.]+) bit/weight more than Q4_K") > 0, "'Q4_K, which costs less'"
    checked = re.findall(
        r"(Q\d_K): all (\d+) super-blocks x \d+ groups checked; "
        r"levels evenly spaced: (\w+); every weight on its grid: (\w+)",
        out,
    )
    assert [c[0] for c in checked] == ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"], "every group of every super-block"
    assert all(c[2] == c[3] == "True" for c in checked), "'no clustering: evenly spaced levels'"


CLAIMS_00_05 = {
    "00": _claims_00,
    "01": _claims_01,
    "02": _claims_02,
    "03": _claims_03,
    "04": _claims_04,
    "05": _claims_05,
}


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name[:2] in CLAIMS_00_05], ids=lambda p: p.stem)
def test_the_prose_of_notebooks_00_to_05_agrees_with_what_they_print(path):
    nb, _ = execute(load(path))
    CLAIMS_00_05[path.name[:2]](printed_text(nb))


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name[:2] in CLAIMS_00_05], ids=lambda p: p.stem)
def test_notebooks_00_to_05_link_the_glossary(path):
    text = "".join(source_of(c) for c in load(path)["cells"] if c["cell_type"] == "markdown")
    assert "(../docs/glossary.md)" in text
    assert (ROOT / "docs" / "glossary.md").is_file()


# --- notebooks 06-10: every sentence that states a measured comparison, against the output -----
#
# Each function receives everything the executed notebook printed and asserts what its prose says
# about those numbers, so a changed model, seed or rule breaks the test, not the prose.


def _claims_06(text):
    # §3: on a 70B-class model attn_v is Q5_K or Q6_K in every layer; attn_q/k/output stay Q4_K.
    assert "Q4_K" not in text.split("70B attn_v", 1)[1].splitlines()[0]
    for kind in ("attn_q", "attn_k", "attn_output"):
        assert "{'Q4_K': 80}" in text.split(f"70B {kind} ", 1)[1].splitlines()[0]
    # "Why these two matrices": ffn_down's inputs are far more uneven than any other kind's.
    kinds = ("attn_k", "attn_output", "attn_q", "ffn_gate")
    shares = {k: numbers_after(text, f"{k:<12} the loudest")[1:3] for k in kinds}
    ffn_down = numbers_after(text, "ffn_down     the loudest")[1:3]
    assert ffn_down[0] > max(hi for _lo, hi in shares.values()), (ffn_down, shares)
    assert numbers_after(text, "attn_v    one layer:")[-1] < 1.0  # attn_v smaller than attn_q (GQA)
    # §5: the embedding's share is larger on Llama-3.1-8B than here; C3 "just under 70-75 %" for both.
    share_8b, share_8b_untied, share_here = numbers_after(text, "Llama-3.1-8B: token_embd")
    assert share_here < share_8b < share_8b_untied
    assert text.count("outside the claimed 70-75 %") == 2
    for m in ("bundled model", "Llama-3.1-8B"):  # "just under the claimed range, about 70 %"
        assert 69 <= float(re.search(rf"{m}: ([\d.]+)% smaller than F16:", text)[1]) < 70


def _claims_07(text):
    # §4: ggml's ne is numpy's shape reversed; §6: llama-quantize moves output_norm to the front.
    ne, shape = re.search(r"ne (\(.*?\)) in ggml order is numpy shape (\(.*?\))", text).groups()
    assert tuple(reversed(ast.literal_eval(ne))) == ast.literal_eval(shape)
    assert text.split("F16     ['", 1)[1].split("'")[0] == "token_embd.weight"
    assert text.split("Q4_K_M  ['", 1)[1].split("'")[0] == "output_norm.weight"
    assert "the same file: True" in text


def _verdict(text, label) -> bool:
    """Whether the printed paired difference after ``label`` excludes 0 (evaluate.verdict's words)."""
    line = next(line for line in text.splitlines() if line.startswith(label))
    assert "excludes 0" in line or "includes 0" in line, line
    return "excludes 0" in line


def _paired(text, label) -> float:
    """The value of the paired difference printed after ``label`` ("… the difference is V …")."""
    line = next(line for line in text.splitlines() if line.startswith(label))
    return float(re.search(r"the difference is (-?[\d.e+-]+)", line)[1])


def _claims_08(text):
    # §3: "this small model gets fewer than half of the held-out sums right".
    sums = numbers_after(text, "sums right: F16")
    assert sums[0] < 50
    # §5: perplexity barely moves, even at Q2_K; KL separates Q2_K from Q4_K_M; answers change.
    assert abs(float(re.search(r"→ Q2_K [\d.]+, ([+-][\d.]+)% at", text)[1])) < 2  # perplexity: under 2 %
    assert _verdict(text, "ppl Q2_K − F16:") and not _verdict(text, "ppl Q8_0 − F16:")
    assert _paired(text, "top-1 Q4_0 − Q6_K:") > 0 and _paired(text, "top-1 Q4_0 − Q4_K_M:") > 0  # Q4_0 agrees more
    assert _paired(text, "   KL Q4_0 − Q6_K:") > 0 and _paired(text, "   KL Q4_0 − Q4_K_M:") > 0  # "its KL is higher"
    changed = re.search(r"answers changed vs F16: Q4_K_M ([\d.]+)%, Q2_K ([\d.]+)%", text)
    assert float(changed[1]) < float(changed[2])


def _claims_09(text):
    # C10: a GiB is 7.4 % larger than a GB; Llama-2-70B's F16 file holds 69.0 B weights.
    assert "is 7.4% larger than a GB" in text and "hold 69.0 B weights" in text
    # C3 (same verdict as 06): just outside 70-75 %. C7: "true, to within 6 %".
    assert "C3 against F16: just outside the claimed 70-75 %" in text
    assert float(re.search(r"\(([\d.]+)% short of 4×\)", text)[1]) < 6
    # C9: Q4_K_M and Q2_K 70B files exceed 24 GB; IQ2_XS weights plus a 4,096-position cache do not.
    gb = re.search(r"Q4_K_M file [\d.]+ GiB = ([\d.]+) GB, Q2_K [\d.]+ GiB = ([\d.]+) GB", text)
    assert float(gb[1]) > 24 and float(gb[2]) > 24
    iq2 = re.search(r"IQ2_XS's 2.31 bpw: ([\d.]+) GB of weights, \+ F16 KV cache for 4,096 positions ([\d.]+) GB", text)
    assert float(iq2[1]) + float(iq2[2]) < 24 and 19 < float(iq2[1]) < 21  # "about 20 GB"
    # C14: at 4.5 bits IQ4_NL beats Q4_0 and loses to Q4_K.
    sqnr = dict(re.findall(r"^(Q4_0|IQ4_NL|Q4_K) +4.5 bits per weight, SQNR ([\d.]+) dB", text, re.M))
    assert float(sqnr["Q4_0"]) < float(sqnr["IQ4_NL"]) < float(sqnr["Q4_K"]), sqnr
    # C5: Q8_0 has the smallest KL of the bundled mixes; it is 53 % of F16's size on both models.
    kls = {m: float(v) for m, v in re.findall(r"^(\w+) +[+-][\d.]+% +([\d.]+e-?\d+) ±", text, re.M) if m != "F16"}
    assert min(kls, key=kls.get) == "Q8_0", kls
    assert re.search(r"Q8_0 size relative to F16: bundled 53\.\d%, Llama-3.1-8B 53\.\d%", text)
    # C12: Q4_K_M is 5-6 % larger than Q4_0 (bundled bpw and Llama-3-8B GiB).
    b = re.search(r"bundled \(bpw\): Q4_K_M ([\d.]+) bpw .* Q4_0 ([\d.]+) bpw", text)
    g = re.search(r"Llama-3-8B \(GiB\): Q4_K_M ([\d.]+) .* Q4_0 ([\d.]+) ppl", text)
    for m in (b, g):
        assert 1.05 <= float(m[1]) / float(m[2]) <= 1.065, m[0]


def _claims_10(text):
    # §4: with the imatrix the weighted and the output error fall, for every type in the table.
    rows = re.findall(r"^(Q\d_K) +(no|yes) +([\d.e+-]+) +([\d.e+-]+) +([\d.]+)$", text, re.M)
    table = {(t, use): tuple(map(float, v)) for t, use, *v in rows}
    assert len(table) == 6
    for t in ("Q2_K", "Q3_K", "Q4_K"):
        assert table[t, "yes"][1] < table[t, "no"][1] and table[t, "yes"][2] < table[t, "no"][2]
    assert "same bytes as ggml_quantize_chunk with this imatrix: False" not in text
    assert "= llama.cpp's (llama_model_quantize with the same imatrix file): True" in text
    # §5: "the whole-model evidence is mixed": some change is more than noise, and some is within it.
    verdicts = dict(re.findall(r"^(better|worse|within the noise): (.*)$", text, re.M))
    assert verdicts["better"] != "none" and verdicts["within the noise"] != "none"
    assert sum(len(v.split(", ")) for v in verdicts.values() if v != "none") == 9
    # §6: each matrix's own output error falls; the residual stream's rises at nearly every block, on
    # three texts, and neither position 0 nor the 5 loudest channels account for it.
    lower, total = map(int, re.search(r"output error is lower for (\d+) of the (\d+) matrices", text).groups())
    assert lower >= 0.9 * total
    counts = [int(n) for n in re.findall(r"residual error is higher in (\d+) of 24", text)]
    assert len(counts) == 3 and min(counts) >= 20 and max(counts) - min(counts) <= 2


def _claims_11(text):
    # §1: the output error is tr(E H Eᵀ)·n/2, to the digits printed.
    a, b = map(float, re.search(r"‖E Xᵀ‖² = ([\d.]+), tr\(E H Eᵀ\)·n/2 = ([\d.]+)", text).groups())
    assert a == b
    # §2: round-to-nearest gives [0, 0], GPTQ [0, 1], with a much smaller output error.
    rtn = re.search(r"round to nearest +q = \[0\. 0\.\], output error per token ([\d.]+)", text)
    got = re.search(r"GPTQ +q = \[0\. 1\.\], output error per token ([\d.]+)", text)
    assert rtn and got and float(got[1]) < float(rtn[1]) / 3
    # §3: H = I gives round-to-nearest's bytes; on the real H the weight error rises and the output error falls.
    assert text.count("GPTQ with H = I gives kquant.quantize's bytes: True") == 4
    assert "gives kquant.quantize's bytes: False" not in text
    rows = re.findall(r"^(Q4_0|Q4_K) +(blk\.\S+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+)$", text, re.M)
    assert len(rows) == 4
    for _, _, out_rtn, out_gptq, w_rtn, w_gptq in rows:
        assert float(out_gptq) < float(out_rtn) and float(w_gptq) > float(w_rtn)
    # §4: the three files have the same size; GPTQ's KL is below both, beyond the noise; every matrix improved.
    bpw = re.findall(r"^Q4_0 (?:RTN|imatrix|GPTQ) +([\d.]+) bpw", text, re.M)
    assert len(bpw) == 3 and len(set(bpw)) == 1 and bpw[0] == "4.52"
    for other in ("RTN", "imatrix"):
        line = re.search(rf"^GPTQ +− {other} +kl +the difference is (-[\d.e-]+) .*excludes 0", text, re.M)
        assert line, f"GPTQ − {other} KL is not a negative difference beyond the noise"
    lower, total = map(int, re.search(r"below round-to-nearest's for (\d+) of the (\d+) matrices", text).groups())
    assert lower == total == 56


def _claims_14(text):
    # §1: bitsandbytes' table is normal quantiles, 8 above 0, 7 below and 0 itself.
    assert "normal_levels() == bitsandbytes' table: True" in text
    assert "8 levels above 0, 7 below, and 0 itself" in text
    # §3: double quantization: 4.127 bits per weight instead of 4.5.
    assert "NF4, float32 absmax     : 4.5000 bits per weight" in text
    assert "NF4, double-quantized   : 4.1271 bits per weight" in text
    # §4: NF4 beats evenly spaced levels with the same blocks, not Q4_0 (even with blocks of 32), not Q4_K.
    err = {
        k: (float(b), float(e))
        for k, b, e in re.findall(
            r"^(NF4, blocks of \d+|evenly spaced, blocks of 64|Q4_0|Q4_K) +([\d.]+) +([\d.]+)$", text, re.M
        )
    }
    assert len(err) == 5, err
    assert err["NF4, blocks of 64"][1] < err["evenly spaced, blocks of 64"][1]
    assert err["Q4_K"][1] < err["Q4_0"][1] < err["NF4, blocks of 32"][1] < err["NF4, blocks of 64"][1]
    # ... and blocks of 32 close most of NF4's gap to Q4_0.
    assert err["NF4, blocks of 64"][1] - err["NF4, blocks of 32"][1] > err["NF4, blocks of 32"][1] - err["Q4_0"][1]
    assert "an NF4 type in ggml: none" in text
    # §7: the base knows no new fact and every old one; alone, the new facts (all 8) erase most old
    # capitals; with replay all 8 are learned and most, not all, old ones kept; sums rise with replay.
    table = {
        k: tuple(map(int, v))
        for k, *v in re.findall(r"^(NF4 base|new facts only|with replay) +(\d+)/8 +(\d+)/128 +(\d+)/200$", text, re.M)
    }
    assert table["NF4 base"][:2] == (0, 128), table
    assert table["new facts only"][0] == 8 and table["new facts only"][1] < 64, table
    assert table["with replay"][0] == 8 and 64 < table["with replay"][1] < 128, table
    assert table["with replay"][2] > table["NF4 base"][2], table
    for pair in ["new facts only − NF4 base", "with replay − NF4 base", "with replay − new facts only"]:
        assert re.search(rf"^facts {pair}: .*excludes 0: more than noise$", text, re.M), pair
    # §8: llama.cpp answers the new facts from the merged Q4_K_M files; the two merges differ by at most
    # two answers; merged into F16, only the three adapted tensors differ from the plain Q4_K_M.
    files = {
        k: tuple(map(int, v))
        for k, *v in re.findall(
            r"^Q4_K_M, (no fine-tuning|merged into F16|merged into NF4) +[\d.]+ +(\d+)/8 +(\d+)/128 +(\d+)/200$",
            text,
            re.M,
        )
    }
    assert files["no fine-tuning"][:2] == (0, 128), files
    a, b = files["merged into F16"], files["merged into NF4"]
    assert min(a[0], b[0]) >= 6 and abs(a[0] - b[0]) <= 2 and abs(a[1] - b[1]) <= 2, files
    assert "the others: ['blk.7.ffn_down.weight', 'blk.7.ffn_gate.weight', 'blk.7.ffn_up.weight']" in text


def _claims_15(text):
    # §1: the gaps, 11-13 in the middle and 20-24 at the ends; -127 on one side, 113 on the other.
    gaps = ast.literal_eval(re.search(r"^gaps: +(\[.*\])$", text, re.M)[1])
    assert min(gaps[5:10]) == 11 and max(gaps[5:10]) == 13 and min(gaps[:2] + gaps[-2:]) == 20 and max(gaps) == 24
    assert "kvalues_iq4nl: [-127," in text and ", 113]" in text and "gguf-py's copy is the same: True" in text
    # ... the weights crowd the middle (more than an even spread's 25 %), where IQ4_NL has more levels,
    # and its table rounds them with less error than the even grid.
    assert float(re.search(r"blocks: (\d+)% of the weights lie within ±0.25 of 0", text)[1]) > 25
    n_levels = dict(re.findall(r"^(IQ4_NL|Q4_0) +levels within ±0.25: (\d+) of 16", text, re.M))
    assert int(n_levels["IQ4_NL"]) > int(n_levels["Q4_0"]), n_levels
    mse = dict(re.findall(r"^(IQ4_NL|Q4_0) +mean squared rounding error ([\d.e+-]+)", text, re.M))
    assert float(mse["IQ4_NL"]) < float(mse["Q4_0"]), mse
    # §3, §5, §6: kquant's bytes are ggml's, with and without the importance, and the whole file is llama.cpp's.
    assert "same bytes as ggml (ggml_quantize_chunk) for the whole matrix: True" in text
    assert "with its importance: same bytes as ggml: True" in text
    assert "kquant's pure IQ4_NL file = llama.cpp's (sha256): True" in text
    # §4: the slider's block is one whose winner is not the first candidate; its stored d is the winner's in fp16;
    # most blocks put their largest weight on the long end.
    chosen = re.findall(r"← chosen", text)
    assert len(chosen) == 1 and not re.search(r"^0 .*← chosen$", text, re.M)
    stored = re.search(r"= ([-\d.e]+); the block's bytes \(kquant's = ggml's\) say ([-\d.e]+)", text)
    assert stored[1] == stored[2]
    long_end = float(re.search(r"^(\d+)% of the [\d,]+ blocks store a d whose sign is opposite", text, re.M)[1])
    assert long_end > 50
    # §5: "nearly every matrix": the importance lowers the weighted error of at least 90 % of them.
    lower, total = map(int, re.search(r"weighted error is lower for (\d+) of (\d+) matrices", text).groups())
    assert lower >= 0.9 * total
    # §6 and the summary: at 4.5 bits the weight error orders Q4_0 < IQ4_NL < Q4_K (SQNR, higher is better).
    sqnr = dict(re.findall(r"^(Q4_0|IQ4_NL|Q4_K) +4.5 bits per weight, SQNR ([\d.]+) dB", text, re.M))
    assert float(sqnr["Q4_0"]) < float(sqnr["IQ4_NL"]) < float(sqnr["Q4_K"]), sqnr
    assert len(re.findall(r"^KL .* − .*: the difference is", text, re.M)) == 3


def _claims_12(text):
    # §1: the RMSNorm outputs are nearly flat; the SwiGLU product has channels an order of magnitude louder.
    spread = {
        k: (float(a), float(b)) for k, a, b in re.findall(r"input of (\w+) .*channel +([\d.]+) … +([\d.]+)×", text)
    }
    assert spread["attn_q"][1] < 2 and spread["ffn_gate"][1] < 2 and spread["ffn_down"][1] >= 10, spread
    # §1: kept exact by activation beats by weight (paired interval excludes 0); the gain is a few percent.
    rows = re.findall(
        r"^(blk\.\d\.ffn_down\.weight) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) .*excludes 0: (\w+)", text, re.M
    )
    assert len(rows) == 2
    for _, rtn, act, weight, _rnd, excl in rows:
        assert float(act) < float(weight) and excl == "True" and 0.85 < float(act) / float(rtn) < 0.95  # "a tenth"
    # §2: the scale trick and the fold preserve the function, in numpy and in llama.cpp.
    assert float(re.search(r"x @ W.T\| = ([\d.e+-]+)", text)[1]) < 1e-4
    numpy_diff = re.search(r"numpy: max \|logit difference\| ([\d.e+-]+) .* same next token at ([\d.]+)%", text)
    assert float(numpy_diff[1]) < 1e-3 and float(numpy_diff[2]) == 100.0
    cpp = re.search(
        r"llama.cpp: max \|logit difference\| ([\d.e+-]+), KL ([\d.e+-]+), same next token at ([\d.]+)%", text
    )
    assert float(cpp[2]) < 1e-6 and float(cpp[3]) >= 99.0
    # §3: the search lowers every group's calibration error, most for ffn_down, least behind the RMSNorms.
    gains = re.findall(r"after (\w+) *: [\d. ]+ mean error at the best α: ([\d.]+)×", text)
    assert len(gains) == 6
    for i in (0, 3):
        g = {k: float(v) for k, v in gains[i : i + 3]}
        assert all(v <= 1 for v in g.values()) and g["ffn_up"] < min(g["attn_norm"], g["ffn_norm"]), g
    # §4: KL and top-1 within the noise for both formats; perplexity differs by less than 0.01.
    verdicts = re.findall(r"^  (kl|top1|ppl) +AWQ − RTN: (\S+) .*→ (.*)$", text, re.M)
    assert len(verdicts) == 6
    for metric, value, verdict in verdicts:
        assert metric == "ppl" or verdict == "within the noise", (metric, verdict)
        assert metric != "ppl" or abs(float(value)) < 0.01
    # §4: on held-out text the search's gain carries over, most for ffn_down; ffn_down's own error falls.
    held = re.findall(
        r"^(Q4_0|Q4_K_M) +(.+?) *: AWQ's held-out error lower in (\d) of 8 blocks, .* ([\d.]+)$", text, re.M
    )
    assert len(held) == 6
    for mix in ("Q4_0", "Q4_K_M"):
        r = {what: (int(n), float(g)) for m, what, n, g in held if m == mix}
        assert r["ffn_down"][0] >= 6 and r["ffn_down"][1] < min(v[1] for k, v in r.items() if k != "ffn_down") < 1, r
        before, after = re.search(mix + r" +ffn_down : .* mean ([\d.]+) → ([\d.]+)", text).groups()
        assert float(after) < float(before)
    # §4: on blk.2.ffn_down the mean square falls and the typical token's relative error rises.
    # §3: "the curve has its minimum in the middle" (the same search as the slider's: blk.2.ffn_down, Q4_0).
    assert 0.2 <= float(re.search(r"; α chosen ([\d.]+)", text)[1]) <= 0.7
    largest = re.search(r"held-out output norms: median ([\d.]+), largest ([\d.]+)", text)
    assert float(largest[2]) > 10 * float(largest[1])
    (mse_r, rel_r), (mse_a, rel_a) = re.findall(
        r"^(?:RTN|AWQ): mean squared output error ([\d.e+-]+), mean per-token relative error ([\d.]+)", text, re.M
    )
    assert float(mse_a) < float(mse_r) and float(rel_a) > float(rel_r)
    # §5: without outliers the gain is about 1 %; with channels 20-100× larger AWQ's error is far below RTN's.
    runs = re.findall(r"outliers ×(\d+) +α [\d.]+: .* AWQ / RTN ([\d.]+), paired difference (.*)$", text, re.M)
    ratios = {int(f): float(r) for f, r, _ in runs}
    assert 0.97 <= ratios[1] <= 1.0 and all(ratios[f] < 0.6 for f in (20, 50, 100)), ratios
    assert ratios[20] > ratios[50] > ratios[100]


def _claims_13(text):
    # §1 and the summary: Q4_K 4.5, Q6_K 6.5625, Q8_0 8.5 bits per weight.
    for t, bpw in [("Q4_K", "4.5000"), ("Q6_K", "6.5625"), ("Q8_0", "8.5000")]:
        assert re.search(rf"^{t} .* = {bpw} bits per weight$", text, re.M), t
    assert "57 matrices × 6 types measured" in text
    # §3 and the summary: the greedy is never better than the exact optimum, and within a fraction of a percent.
    ratios = [float(r) for r in re.findall(r"^ +[\d.]+ +[\d.e+-]+ +[\d.e+-]+ +([\d.]+)$", text, re.M)]
    assert len(ratios) == 6 and all(1 - 1e-9 <= r < 1.01 for r in ratios), ratios
    # §4 and the summary: summed single-matrix KLs predict whole allocations within about 10 %.
    additive = [float(r) for r in re.findall(r"measured/predicted ([\d.]+)", text)]
    assert len(additive) == 2 and all(0.85 <= r <= 1.15 for r in additive), additive
    # §5: both files within Q4_K_M's budget (the notebook asserts it); by KL never worse beyond the noise and
    # better somewhere; by own output error worse on KL, more than noise.
    by = dict(re.findall(r"^allocated by (\w+), against Q4_K_M: (.*)$", text, re.M))
    assert "worse" not in by["kl"] and "better" in by["kl"], by
    assert "kl worse" in by["output_error"], by
    # §6 and the summary: at Q4_K the KL spans more than 10^4, the own output error about one order.
    span = {c: float(v) for c, v in re.findall(r"^at Q4_K, (\w+) +spans +([\d.]+)×", text, re.M)}
    assert span["kl"] > 1e4 and span["output_error"] < 30, span
    # §6: the KL allocation gives the embedding (the output layer) more bits than the output-error one.
    emb = re.search(r"^token_embd.weight +by KL (\w+), by output error (\w+)", text, re.M)
    order = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0"]
    assert order.index(emb[1]) > order.index(emb[2]), emb[0]


def _claims_17(text):
    # §3: Q4_1 is 5 bpw and the Q8_0 embedding and F32 norms bring the average up; only ffn_down fits.
    assert float(re.search(r"M weights, ([\d.]+) bits per weight on average", text)[1]) > 5.0
    assert "fit: ['ffn_down']," in text
    # §4: Q5_0 stands in for Q4_K and Q8_0 for Q6_K; the F32 copy is about 540 MB; the Q4_K_M is larger than
    # the Q4_1 download and the Q2_K "only a little smaller"; kquant's Q4_K_M is llama.cpp's.
    fallbacks = ast.literal_eval(re.search(r"tensors fall back; what they get: (\{.*\})", text)[1])
    assert set(fallbacks) == {"Q5_0", "Q8_0"}, fallbacks
    assert 535 < numbers_after(text, "F32 copy")[0] < 545
    mb = {
        m: numbers_after(text, label)[-2]
        for m, label in [("Q4_1", "Q4_1 (the download)"), ("Q4_K_M", "Q4_K_M  "), ("Q2_K", "Q2_K  ")]
    }
    assert mb["Q4_K_M"] > mb["Q4_1"] > mb["Q2_K"] > 0.8 * mb["Q4_1"], mb
    assert "kquant's Q4_K_M = llama.cpp's (sha256): True" in text
    # §5: Q4_1 again is byte for byte; Q4_K flatters several times, Q5_K about 2×, Q5_1 looks worse,
    # Q6_K and Q8_0 hardly care.
    n_same, n_all = map(int, re.search(r"(\d+) of (\d+) tensors come back byte for byte", text).groups())
    assert n_same == n_all == 210
    trap = {m: tuple(map(float, v)) for m, *v in re.findall(r"^(Q\w+) +([\d.]+) +([\d.]+) +([\d.inf]+)×$", text, re.M)}
    assert trap["Q4_1"][0] == 0 and trap["Q4_1"][1] > 0
    assert trap["Q4_K"][2] > 3 and 1.5 < trap["Q5_K"][2] < 2.5 and trap["Q5_1"][2] < 1
    assert all(0.9 < trap[m][2] < 1.1 for m in ("Q6_K", "Q8_0")), trap
    # §6: on the F32 copy llama.cpp agrees with numpy to float32's rounding; on the Q4_1 file it does not.
    kl_f32 = float(re.search(r"F32 copy +KL\(numpy ‖ llama.cpp\) ([\d.e+-]+) nats", text)[1])
    kl_q41 = float(re.search(r"Q4_1 file +KL\(numpy ‖ llama.cpp\) ([\d.e+-]+) nats", text)[1])
    assert kl_f32 < 1e-9 and kl_q41 > 1e-4, (kl_f32, kl_q41)
    # §6: the Q4_K_M spends more bytes than the download and scores a higher perplexity on real text.
    grow, worse = re.search(
        r"the Q4_K_M: ([+-][\d.]+)% bytes against the download, perplexity ([+-][\d.]+)%", text
    ).groups()
    assert float(grow) > 0 and float(worse) > 0, (grow, worse)
    # §7: the numpy model, generating with its KV cache, answers as llama.cpp did in §2.
    assert "'1. Red\\n2. Blue\\n3. Green'" in text


def _claims_16(text):
    # §1: eleven files; the NF4 point is at NF4's own bits (under 5), the --pure 4-bit files at 4.52.
    sizes = dict(re.findall(r"^(.+?) +([\d.]+) bits per weight +\S+\.gguf$", text, re.M))
    assert len(sizes) == 11 and float(sizes["F16"]) > 16 and 4.1 < float(sizes["NF4 (run as F16)"]) < 5
    assert all(sizes[k] == "4.518" for k in ["Q4_0", "Q4_0 GPTQ", "Q4_0 AWQ", "IQ4_NL", "Q4_K"])
    # ... the size of the model and of an NF4 block matrix; the tied output matrix's type in Q4_K_M.
    m = re.search(r"the bundled model: ([\d.]+) M weights, (\d+) wide; an NF4 block matrix holds ([\d.]+) bits", text)
    assert m and m[2] == "256" and m[3] == "4.127"
    assert "the tied token_embd / output matrix: Q6_K in Q4_K_M" in text
    assert re.search(r"^calibration tokens: GPTQ \d+, the importance matrix \d+, AWQ \d+, the budget's", text, re.M)
    # §3 and §5: the front printed twice, the same; the budget file spends no more than Q4_K_M.
    front = re.search(r"^on the KL front, smallest first: (.+)$", text, re.M)[1]
    assert re.search(r"^on the KL Pareto front: +(.+)$", text, re.M)[1] == front
    assert float(sizes["Q4_K_M-size budget"]) <= float(sizes["Q4_K_M"])
    # §4: eight paired verdicts; the paired interval is narrower than the unpaired one.
    assert len(re.findall(r"^KL .+ − .+\]  (better|worse|within noise)$", text, re.M)) == 8
    assert float(re.search(r"\(([\d.]+)× narrower\)", text)[1]) > 1
    # §5's three lines gather exactly the eight verdicts.
    gathered = re.findall(
        r"^(lower KL, beyond the noise|within the noise|higher KL, beyond the noise): +(.+)$", text, re.M
    )
    assert sum(0 if v == "none" else v.count("(vs ") for _, v in gathered) == 8


CLAIMS_06_10 = {
    "06": _claims_06,
    "07": _claims_07,
    "08": _claims_08,
    "09": _claims_09,
    "10": _claims_10,
    "11": _claims_11,
    "12": _claims_12,
    "14": _claims_14,
    "13": _claims_13,
    "15": _claims_15,
    "16": _claims_16,
    "17": _claims_17,
}
