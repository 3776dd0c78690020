"""Specification of the workbook's notebooks: they run, their exercises are gradable, they are up to date.

Every notebook is executed headless twice: as shipped (it runs clean and every
exercise says "not attempted yet") and with the solutions filled in from
kquant.exercises (every check passes). How long they take is printed, never asserted:
a busy machine must not fail a test (the time budgets live in benchmarks/).
"""

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
    printed_number,
    printed_text,
    slowest_cell,
    widget_outputs,
)

from kquant.exercises.notebook import BEGIN, END, STUB, as_shipped, exercises_of, load, source_of, with_solutions

NAMES = [p.stem for p in NOTEBOOKS]


def _nbgrader(cell):
    return cell.get("metadata", {}).get("nbgrader")


def test_notebooks_00_to_10_are_there_in_order():
    assert [n[:2] for n in NAMES] == [f"{i:02d}" for i in range(11)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_runs_as_shipped_with_every_exercise_not_attempted(path):
    nb, seconds = execute(load(path))
    checks = check_cells(nb)
    assert checks and all("not attempted yet" in text for text in checks.values()), checks
    _assert_widgets_drew(nb)
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
