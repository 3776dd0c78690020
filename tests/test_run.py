"""kquant.model.runner and kquant.model.evaluate: load, generate and score GGUF files with llama.cpp; and the demo."""

from __future__ import annotations

import numpy as np
import pytest

from kquant.demo import main as demo_main
from kquant.errors import KQuantError
from kquant.model import corpus, evaluate, hub, runner, scores
from kquant.quantize_file import quantize_gguf

MIXES = ("Q8_0", "Q4_K_M", "Q2_K")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """The bundled model and three quantizations of it (made by kquant), scored once."""
    d = tmp_path_factory.mktemp("mixes")
    files = [hub.bundled()]
    for mix in MIXES:
        files.append(quantize_gguf(hub.bundled(), d / f"tiny-{mix}.gguf", mix, progress=False).path)
    return evaluate.compare(files)


def _row(table, name):
    return next(r for r in table.rows if name in r.path.name)


def test_the_reference_compared_with_itself_has_zero_kl_and_full_agreement(table):
    ref = table.rows[0]
    assert ref.kl == 0.0 and ref.top1 == 1.0
    again = evaluate.evaluate(ref.path, ref)
    assert again.kl < 1e-12 and again.top1 == 1.0 and again.perplexity == ref.perplexity


def test_fewer_bits_move_the_logits_further(table):
    q8, q4, q2 = (_row(table, m) for m in MIXES)
    assert q8.bpw > q4.bpw > q2.bpw
    assert 0 < q8.kl < q4.kl < q2.kl
    assert q8.top1 > q2.top1


def test_bits_per_weight_count_the_block_scales(table):
    # Q8_0 stores 32 int8 weights and one fp16 scale per block: 34 bytes for 32 weights.
    # Only the 1-D norms (F32) are not Q8_0, so the file averages just over 8.5.
    assert 8.5 < _row(table, "Q8_0").bpw < 8.6
    assert 16.0 < table.rows[0].bpw < 16.1  # F16 matrices, F32 norms


def test_f16_answers_the_tasks_and_q2_k_visibly_loses_some(table):
    f16, q8, q2 = table.rows[0], _row(table, "Q8_0"), _row(table, "Q2_K")
    # Measured on the bundled model (400 held-out sums, 128 facts): F16 sums 0.393, Q8_0
    # 0.385, Q2_K 0.320; Q8_0 changes 0.9% of the 528 verdicts, Q2_K 9.3%.
    assert f16.accuracy["facts"] >= 0.95 and f16.accuracy["sums"] >= 0.3
    assert q2.accuracy["sums"] <= f16.accuracy["sums"] - 0.04
    assert f16.changed == 0.0 and q2.changed >= 0.05 and q2.changed > 3 * q8.changed


def test_a_task_counts_as_right_exactly_when_greedy_decoding_writes_the_answer():
    m = runner.load(hub.bundled())
    checked = {True: 0, False: 0}
    for t in evaluate.held_out_tasks(n_sums=40)[:40] + evaluate.held_out_tasks()[-10:]:
        greedy = m.generate(t.prompt, max_tokens=8, temperature=0.0)
        right = evaluate.task_accuracy(m, [t])[t.kind] == 1.0
        assert right == greedy.startswith(t.answer), (t, greedy)
        checked[right] += 1
    assert checked[True] and checked[False]  # both outcomes were exercised


def test_a_wrong_answer_is_never_counted_right():
    m = runner.load(hub.bundled())
    tasks = [corpus.Task("sums", t.prompt, " 99999\n") for t in evaluate.held_out_tasks(n_sums=12) if t.kind == "sums"]
    assert evaluate.task_accuracy(m, tasks) == {"sums": 0.0}


def test_generation_is_reproducible_from_its_seed():
    m = runner.load(hub.bundled())
    a, b = m.generate("Once upon a time", max_tokens=30, seed=7), m.generate("Once upon a time", max_tokens=30, seed=7)
    assert a == b and len(a) > 40


def test_the_table_shows_every_file_and_every_measure(table):
    text = str(table)
    for word in ("MB", "bpw", "ppl", "KL", "top-1", "sums acc", "facts acc", "tok/s", "tiny-Q2_K.gguf"):
        assert word in text
    assert len(text.splitlines()) == 3 + len(table.rows)  # header, rule, rows, the note on ±
    assert text.count("±") >= 6 * len(table.rows) and "95 % interval" in text


def test_loading_a_missing_or_foreign_file_is_a_clear_error(tmp_path):
    with pytest.raises(KQuantError, match="no such file"):
        runner.load(tmp_path / "missing.gguf")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(KQuantError, match="not a GGUF file"):
        runner.load(tmp_path / "notes.txt")
    with pytest.raises(KQuantError, match="at least one"):
        evaluate.compare([])


def test_the_demo_quantizes_checks_the_bytes_runs_and_prints_the_table(capsys, tmp_path):
    assert demo_main(["--mixes", "Q4_K_M", "Q2_K", "--keep", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("same bytes as llama.cpp: yes") == 2
    assert "Q4_K_M" in out and "KL" in out and "Once upon a time" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kquant-tiny-f16-Q2_K.gguf", "kquant-tiny-f16-Q4_K_M.gguf"]


def test_the_demo_reports_a_missing_model_in_one_line(capsys, tmp_path):
    assert demo_main(["--model", str(tmp_path / "none.gguf")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.gguf" in err[0]


def test_kl_refuses_to_compare_different_models(tmp_path):
    """KL and top-1 need the same tokens at the same positions: one model, two encodings."""
    from test_model import _random_model  # pytest puts tests/ on sys.path

    other, _ = _random_model(tmp_path)
    ref = evaluate.evaluate(hub.bundled(), n_docs=2, n_sums=6, speed_tokens=4)
    with pytest.raises(KQuantError, match="tokenizes the held-out text differently"):
        evaluate.evaluate(other, ref, n_docs=2, n_sums=6, speed_tokens=4)


# --- 95 % intervals (kquant.model.scores, used by evaluate) ----------------------------------


def test_a_95_percent_interval_covers_the_true_mean_in_most_seeded_trials():
    """Draw 40 'documents' from a known skewed distribution (true mean 1.0), 200 times."""
    covered = 0
    for trial in range(200):
        x = np.random.default_rng(1000 + trial).exponential(1.0, 40)
        i = scores.mean_interval(x, n_boot=500, seed=trial)
        covered += i.low <= 1.0 <= i.high
    assert 0.88 <= covered / 200 <= 0.99  # nominal 95 %; the percentile bootstrap runs a little short at n = 40


def test_a_ratio_over_documents_is_resampled_as_whole_documents():
    """Perplexity is exp(total NLL / total positions): long documents weigh more, as in evaluate."""
    nll, n = np.array([1.0, 30.0]), np.array([10.0, 100.0])
    i = scores.bootstrap({"nll": nll, "n": n}, lambda t: np.exp(t["nll"] / t["n"]))
    assert i.value == pytest.approx(np.exp(31 / 110))
    assert i.low >= np.exp(0.1) - 1e-12 and i.high <= np.exp(0.3) + 1e-12  # between the two documents' own values


def test_a_paired_interval_is_narrower_than_an_unpaired_one_on_correlated_data():
    rng = np.random.default_rng(0)
    difficulty = rng.exponential(1.0, 48)  # what both files share: some documents are hard for both
    a = difficulty + rng.normal(0, 0.05, 48)
    b = difficulty + 0.05 + rng.normal(0, 0.05, 48)
    paired, unpaired = scores.paired_difference(a, b), scores.unpaired_difference(a, b)
    assert paired.value == pytest.approx(unpaired.value)
    assert paired.half_width < unpaired.half_width / 5
    assert paired.excludes(0) and not unpaired.excludes(0)  # only the paired test sees the real 0.05


def test_identical_measurements_differ_by_exactly_zero():
    x = np.random.default_rng(0).random(30)
    d = scores.paired_difference(x, x)
    assert (d.value, d.low, d.high) == (0.0, 0.0, 0.0) and not d.excludes(0)


def test_intervals_are_reproducible_from_their_fixed_seed():
    x = np.random.default_rng(0).random(30)
    assert scores.mean_interval(x) == scores.mean_interval(x)
    assert scores.mean_interval(x, seed=1) != scores.mean_interval(x, seed=2)


def test_every_score_lies_inside_its_own_interval(table):
    for r in table.rows:
        for metric, value in [("ppl", r.perplexity), ("kl", r.kl), ("top1", r.top1), ("changed", r.changed)]:
            i = r.interval(metric)
            assert i.low - 1e-9 <= value <= i.high + 1e-9, (r.path.name, metric, i, value)
        for kind, acc in r.accuracy.items():
            assert r.interval(kind).value == pytest.approx(acc)


def test_a_file_compared_with_itself_differs_by_exactly_zero(table):
    for metric in ("ppl", "kl", "top1", "sums"):
        d = evaluate.difference(table.rows[1], table.rows[1], metric)
        assert d.value == d.low == d.high == 0.0


def test_q2_k_moves_the_logits_further_than_q4_k_m_by_more_than_the_noise(table):
    d = evaluate.difference(_row(table, "Q2_K"), _row(table, "Q4_K_M"), "kl")
    assert d.value > 0 and d.excludes(0)
    assert "excludes 0" in evaluate.verdict(d) and "includes 0" in evaluate.verdict(scores.Interval(0.1, -0.1, 0.2))


def test_a_paired_perplexity_difference_is_far_tighter_than_perplexity_itself(table):
    """Documents differ a lot in perplexity; two files on the same documents differ little."""
    f16, q8 = table.rows[0], _row(table, "Q8_0")
    assert evaluate.difference(q8, f16, "ppl").half_width < f16.interval("ppl").half_width / 10
