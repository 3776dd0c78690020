"""Measured bit allocation (kquant.methods.budget) and VRAM arithmetic (kquant.lessons.offload), as specifications."""

import itertools
import math

import numpy as np
import pytest

from kquant.errors import KQuantError
from kquant.lessons import offload
from kquant.methods import budget
from kquant.model import hub
from kquant.quantize_file import plan_gguf


def brute_force(bits, cost, limit):
    """The optimum by trying every combination (small cases only)."""
    best, arg = np.inf, None
    for combo in itertools.product(*[range(len(b)) for b in bits]):
        b = sum(bits[i][j] for i, j in enumerate(combo))
        c = sum(cost[i][j] for i, j in enumerate(combo))
        if b <= limit and c < best:
            best, arg = c, combo
    return best, arg


def total(bits, cost, choice):
    idx = np.arange(len(bits))
    return int(np.asarray(bits)[idx, choice].sum()), float(np.asarray(cost)[idx, choice].sum())


# Three matrices, four options each; the second has a type off its convex hull (index 1).
BITS = [[2, 3, 4, 8], [2, 3, 4, 8], [4, 6, 8, 16]]
COST = [[9.0, 5.0, 3.0, 1.0], [6.0, 5.9, 2.0, 1.5], [20.0, 8.0, 4.0, 0.5]]


def test_exact_is_the_brute_force_optimum_at_every_budget():
    for limit in range(8, 33):
        c_opt, _ = brute_force(BITS, COST, limit)
        used, c = total(BITS, COST, budget.exact(BITS, COST, limit))
        assert used <= limit and c == pytest.approx(c_opt)


def test_exact_sets_an_odd_sized_matrix_aside_and_stays_exact():
    # Three matrices sized in multiples of 8, one (like a 958-row embedding) of odd sizes: the table runs in
    # units of 8 and the odd one is tried option by option.
    bits = [[8, 16, 24], [16, 24, 40], [8, 24, 32], [7, 13, 19]]
    cost = [[9.0, 4.0, 1.0], [7.0, 3.0, 0.5], [8.0, 2.0, 1.5], [6.0, 2.5, 0.2]]
    for limit in range(39, 120, 3):
        used, c = total(bits, cost, budget.exact(bits, cost, limit))
        assert used <= limit and c == pytest.approx(brute_force(bits, cost, limit)[0]), limit


def test_greedy_never_exceeds_the_budget_and_never_beats_the_optimum():
    rng = np.random.default_rng(0)
    for _ in range(200):
        bits = np.sort(rng.integers(1, 20, size=(4, 4)), axis=1)
        cost = -np.sort(-rng.random((4, 4)), axis=1)
        limit = int(rng.integers(bits.min(1).sum(), bits.max(1).sum() + 1))
        used, c = total(bits, cost, budget.greedy(bits, cost, limit))
        assert used <= limit
        assert c >= brute_force(bits, cost, limit)[0] - 1e-12


def test_greedy_is_optimal_when_it_lands_on_the_budget():
    # Convex costs with these sizes: every greedy stop uses the whole budget, so the Lagrangian bound is met.
    bits = [[2, 4, 6, 8]] * 3
    cost = [[16.0, 8.0, 4.0, 2.0], [12.0, 4.0, 2.0, 1.0], [9.0, 6.0, 3.0, 0.0]]
    for limit in range(6, 25, 2):
        choice = budget.greedy(bits, cost, limit)
        used, c = total(bits, cost, choice)
        assert used == limit
        assert c == pytest.approx(brute_force(bits, cost, limit)[0])


def test_greedy_can_miss_the_optimum_when_an_upgrade_does_not_fit():
    # The best buy per bit (10 saved for 3 bits) uses the room that two worse buys (6 each for 2 bits) needed.
    bits, cost = [[1, 4], [1, 3], [1, 3]], [[10.0, 0.0], [6.0, 0.0], [6.0, 0.0]]
    assert total(bits, cost, budget.greedy(bits, cost, 7)) == (6, 12.0)
    assert total(bits, cost, budget.exact(bits, cost, 7)) == (7, 10.0) == (7, brute_force(bits, cost, 7)[0])


def test_hull_drops_dominated_and_non_convex_types():
    assert budget.lower_hull(np.array([2, 3, 4, 8]), np.array([6.0, 5.9, 2.0, 1.5])) == [0, 2, 3]
    assert budget.lower_hull(np.array([2, 3, 4]), np.array([5.0, 6.0, 1.0])) == [0, 2]  # 3 bits cost more than 2


def test_too_small_a_budget_is_one_clear_error():
    with pytest.raises(KQuantError, match="smallest type"):
        budget.greedy(BITS, COST, 7)
    with pytest.raises(KQuantError, match="smallest type"):
        budget.exact(BITS, COST, 7)
    with pytest.raises(KQuantError, match="same shape"):
        budget.greedy([[1, 2]], [[1.0]], 5)


def test_tensor_bits_are_ggml_sizes():
    assert budget.tensor_bits((256, 768), "Q4_K") == 256 * 3 * 144 * 8  # 4.5 bpw
    assert budget.tensor_bits((128, 256), "Q8_0") == 128 * 8 * 34 * 8  # 8.5 bpw
    with pytest.raises(KQuantError, match="multiple"):
        budget.tensor_bits((4, 100), "Q4_K")


@pytest.fixture(scope="module")
def measured():
    return budget.measure(hub.bundled())


def test_measurement_covers_every_matrix_at_every_type(measured):
    m = measured
    assert len(m.names) == 57 and "token_embd.weight" in m.names  # 8 layers × 7 matrices + the tied embedding
    assert m.kl.shape == m.output_error.shape == m.bits.shape == (57, len(budget.TYPES))
    assert (np.diff(m.bits, axis=1) > 0).all()  # more bits for every step up the list
    # more bits, less error, for the matrix's own output (on average over matrices)
    assert (np.diff(m.output_error.mean(0)) < 0).all()
    assert (np.diff(m.kl.mean(0)) < 0).all()
    assert m.total_weights == sum(math.prod(c.shape) for c in plan_gguf(hub.bundled(), "Q8_0"))


@pytest.mark.parametrize("bpw", [3.0, 4.65, 5.5])
@pytest.mark.parametrize("cost", ["kl", "output_error"])
def test_budget_is_never_exceeded_and_the_overrides_give_the_chosen_types(measured, bpw, cost):
    a = budget.allocate(measured, bpw, cost)
    assert a.bpw <= bpw
    plan = {c.name: c.type.name for c in plan_gguf(hub.bundled(), "Q4_K_M", overrides=a.overrides())}
    assert {n: plan[n] for n in a.types} == a.types


def test_greedy_is_close_to_exact_on_the_real_measurement(measured):
    for bpw in (3.5, 4.65):
        g, e = budget.allocate(measured, bpw, "kl"), budget.allocate(measured, bpw, "kl", method="exact")
        assert e.predicted() <= g.predicted() + 1e-15
        assert e.bpw <= bpw and g.bpw <= bpw


def test_written_file_measures_within_budget(tmp_path, measured):
    from kquant.gguf.summary import inspect_gguf

    a = budget.allocate(measured, 4.65, "kl")
    path = budget.write(hub.bundled(), tmp_path / "b.gguf", a)
    s = inspect_gguf(path)
    assert s.bpw <= 4.65
    assert s.bpw == pytest.approx(a.bpw)
    assert {t.name: t.type.name for t in s.rows if t.name in a.types} == a.types


def test_unknown_cost_or_method_is_one_clear_error(measured):
    with pytest.raises(KQuantError, match="cost"):
        budget.allocate(measured, 4.0, "mse")
    with pytest.raises(KQuantError, match="method"):
        budget.allocate(measured, 4.0, method="anneal")
    for bad in (float("nan"), -1.0, "4.65"):
        with pytest.raises(KQuantError, match="bits per weight"):
            budget.allocate(measured, bad)
    with pytest.raises(KQuantError, match="smallest type"):
        budget.allocate(measured, 2.0)  # below Q2_K everywhere


# --- VRAM arithmetic ---------------------------------------------------------------------


def test_bpw_for_vram_is_the_bits_left_after_cache_and_overhead():
    assert offload.bpw_for_vram(24e9, 70e9) == pytest.approx(8 * 24 / 70)
    assert offload.bpw_for_vram(24e9, 8e9, kv_bytes=2e9, overhead_bytes=1e9) == pytest.approx(8 * 21 / 8)
    with pytest.raises(KQuantError, match="no room"):
        offload.bpw_for_vram(8e9, 8e9, kv_bytes=7e9, overhead_bytes=1e9)


def test_gpu_layers_follow_llama_cpp_placement():
    assert offload.gpu_layers(8, 0) == []
    assert offload.gpu_layers(8, 1) == [8]  # the output layer first
    assert offload.gpu_layers(8, 3) == [6, 7, 8]
    assert offload.gpu_layers(8, 99) == list(range(9))


def test_layers_that_fit_counts_from_the_output_backwards():
    layers, out = [10.0] * 8, 5.0
    assert offload.layers_that_fit(layers, out, 4.0) == 0
    assert offload.layers_that_fit(layers, out, 5.0) == 1
    assert offload.layers_that_fit(layers, out, 34.9) == 3
    assert offload.layers_that_fit(layers, out, 1000.0) == 9
    assert offload.layers_that_fit(layers, out, 40.0, reserved_bytes=10.0) == 3


def test_seconds_per_token_adds_the_devices():
    assert offload.seconds_per_token([1e9, 2e9], [1e12, 50e9]) == pytest.approx(1e-3 + 4e-2)
    with pytest.raises(KQuantError):
        offload.seconds_per_token([1e9], [0.0])


def test_summed_single_matrix_kls_predict_a_whole_allocation(measured):
    # The additivity assumption, checked: all chosen types at once against the sum of their KLs alone.
    predicted, measured_kl = budget.additivity(hub.bundled(), budget.allocate(measured, 4.0, "kl"))
    assert predicted == pytest.approx(budget.allocate(measured, 4.0, "kl").predicted("kl"))
    assert 0.5 < measured_kl / predicted < 2.0
