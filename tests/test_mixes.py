"""kquant.mixes: the type llama.cpp gives each tensor of a model, and the reason.

The first tests state the rules on hand-made tensor lists; the last ones check the plans
against the types llama.cpp itself chose, on small GGUF models, for every mix.
"""

from __future__ import annotations

import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from tiny_llama import write_tiny_llama

from kquant.errors import KQuantError
from kquant.mixes import MIXES, ModelParams, TensorSpec, category, get_mix, llama_order, plan, use_more_bits
from kquant.quantize_file import plan_gguf
from kquant.reference import model_quantize as llama_quantize


def llama_tensors(n_layer, n_embd=256, n_ff=512, n_head=4, n_head_kv=4, tied=True, n_vocab=300):
    """The tensors of a dense llama model, as (name, numpy shape, F32) specs."""
    hd = n_embd // n_head
    specs = [("token_embd.weight", (n_vocab, n_embd)), ("output_norm.weight", (n_embd,))]
    if not tied:
        specs.append(("output.weight", (n_vocab, n_embd)))
    for i in range(n_layer):
        specs += [
            (f"blk.{i}.attn_norm.weight", (n_embd,)),
            (f"blk.{i}.attn_q.weight", (n_head * hd, n_embd)),
            (f"blk.{i}.attn_k.weight", (n_head_kv * hd, n_embd)),
            (f"blk.{i}.attn_v.weight", (n_head_kv * hd, n_embd)),
            (f"blk.{i}.attn_output.weight", (n_embd, n_head * hd)),
            (f"blk.{i}.ffn_norm.weight", (n_embd,)),
            (f"blk.{i}.ffn_gate.weight", (n_ff, n_embd)),
            (f"blk.{i}.ffn_up.weight", (n_ff, n_embd)),
            (f"blk.{i}.ffn_down.weight", (n_embd, n_ff)),
        ]
    return [TensorSpec(name, shape, T.F32) for name, shape in specs]


def types(choices) -> dict[str, str]:
    return {c.name: c.type.name for c in choices}


def reasons(choices) -> dict[str, str]:
    return {c.name: c.reason for c in choices}


# --- the building blocks -------------------------------------------------------------------


def test_more_bits_go_to_the_first_eighth_the_last_eighth_and_every_third_layer_between():
    assert [i for i in range(16) if use_more_bits(i, 16)] == [0, 1, 4, 7, 10, 13, 14, 15]
    assert [i for i in range(32) if use_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    assert [i for i in range(4) if use_more_bits(i, 4)] == [2, 3]


def test_categories_are_found_by_substring_in_llama_cpps_order():
    assert category("output.weight") == "output"
    assert category("token_embd.weight") == "token_embd"
    assert category("blk.0.attn_qkv.weight") == "attn_qkv"
    assert category("blk.0.attn_v.weight") == "attn_v"
    assert category("blk.3.ffn_down_exps.weight") == "ffn_down"
    assert category("blk.3.ffn_gate_inp.weight") == "ffn_gate"
    assert category("rope_freqs.weight") == "other"


def test_tensors_are_ordered_by_layer_then_name_with_non_block_tensors_first():
    names = ["blk.10.attn_q.weight", "blk.2.ffn_up.weight", "token_embd.weight", "blk.2.attn_k.weight", "output.weight"]
    assert sorted(names, key=llama_order) == [
        "output.weight",
        "token_embd.weight",
        "blk.2.attn_k.weight",
        "blk.2.ffn_up.weight",
        "blk.10.attn_q.weight",
    ]


def test_mix_names_accept_any_case_and_llama_quantizes_aliases():
    assert get_mix("q4_k_m") is MIXES["Q4_K_M"]
    assert get_mix("Q4_K") is MIXES["Q4_K_M"]
    assert int(MIXES["Q4_K_M"].file_type) == 15
    with pytest.raises(KQuantError, match="unknown mix 'Q4_K_X'"):
        get_mix("Q4_K_X")


# --- the rules, on hand-made models -------------------------------------------------------


def test_q4_k_m_gives_q6_k_to_attn_v_and_ffn_down_of_the_more_bits_layers_and_to_the_output():
    choices = plan(llama_tensors(16, tied=False), ModelParams(16, 4, 4), "Q4_K_M")
    t = types(choices)
    more = [0, 1, 4, 7, 10, 13, 14, 15]
    for i in range(16):
        expected = "Q6_K" if i in more else "Q4_K"
        assert (t[f"blk.{i}.attn_v.weight"], t[f"blk.{i}.ffn_down.weight"]) == (expected, expected), i
        for other in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"):
            assert t[f"blk.{i}.{other}.weight"] == "Q4_K"
        assert t[f"blk.{i}.attn_norm.weight"] == "F32"
    assert t["output.weight"] == "Q6_K"
    assert t["token_embd.weight"] == "Q4_K"
    why = reasons(choices)
    assert "attn_v of layer 4: a layer that gets more bits (every third" in why["blk.4.attn_v.weight"]
    assert "not one of the layers that get more bits" in why["blk.5.attn_v.weight"]
    assert why["blk.5.attn_norm.weight"].endswith("→ stays F32")


def test_the_plan_lists_tensors_in_llama_cpps_order():
    choices = plan(llama_tensors(12), ModelParams(12, 4, 4), "Q8_0")
    assert [c.name for c in choices] == sorted((t.name for t in llama_tensors(12)), key=llama_order)


def test_tied_token_embeddings_are_treated_as_the_output_layer():
    tied = types(plan(llama_tensors(2, tied=True), ModelParams(2, 4, 4), "Q4_K_S"))
    untied = types(plan(llama_tensors(2, tied=False), ModelParams(2, 4, 4), "Q4_K_S"))
    assert tied["token_embd.weight"] == "Q6_K"
    assert (untied["token_embd.weight"], untied["output.weight"]) == ("Q4_K", "Q6_K")
    assert types(plan(llama_tensors(2), ModelParams(2, 4, 4), "Q8_0"))["token_embd.weight"] == "Q8_0"


def test_q2_k_gives_attn_v_q4_k_only_when_four_or_more_query_heads_share_a_kv_head():
    gqa4 = types(plan(llama_tensors(2, n_head_kv=1), ModelParams(2, 4, 1), "Q2_K"))
    gqa2 = types(plan(llama_tensors(2, n_head_kv=2), ModelParams(2, 4, 2), "Q2_K"))
    assert gqa4["blk.0.attn_v.weight"] == "Q4_K"
    assert gqa2["blk.0.attn_v.weight"] == "Q3_K"
    assert gqa2["blk.0.attn_q.weight"] == "Q2_K"
    assert gqa2["blk.0.attn_output.weight"] == gqa2["blk.0.ffn_down.weight"] == "Q3_K"


def test_q3_k_m_and_q4_k_s_favour_the_first_attn_v_tensors():
    q3km = types(plan(llama_tensors(6), ModelParams(6, 4, 4), "Q3_K_M"))
    q4ks = types(plan(llama_tensors(6), ModelParams(6, 4, 4), "Q4_K_S"))
    assert [q3km[f"blk.{i}.attn_v.weight"] for i in range(6)] == ["Q5_K"] * 2 + ["Q4_K"] * 4
    assert [q4ks[f"blk.{i}.attn_v.weight"] for i in range(6)] == ["Q5_K"] * 4 + ["Q4_K"] * 2


def test_rows_that_do_not_hold_whole_blocks_fall_back_to_smaller_blocks_or_f16():
    choices = plan(llama_tensors(2, n_embd=480, n_ff=200), ModelParams(2, 4, 4), "Q4_K_M")
    t, why = types(choices), reasons(choices)
    assert t["blk.0.attn_q.weight"] == "Q5_0"  # Q4_K -> Q5_0: 480 = 15 x 32
    assert t["token_embd.weight"] == "Q8_0"  # the output rule already avoids Q6_K
    assert t["blk.0.ffn_down.weight"] == "F16"  # 200 is not even a multiple of 32
    assert "rows of 480 are not a multiple of 256 → falls back to Q5_0" in why["blk.0.attn_q.weight"]
    assert "not a multiple of 32 either → F16" in why["blk.0.ffn_down.weight"]
    legacy = types(plan(llama_tensors(2, n_embd=480, n_ff=200), ModelParams(2, 4, 4), "Q5_1"))
    assert (legacy["blk.0.attn_q.weight"], legacy["blk.0.ffn_down.weight"]) == ("Q5_1", "F16")


def test_a_70b_model_gives_attn_v_q5_k_instead_of_q3_k_or_q4_k():
    seventy = types(plan(llama_tensors(80, n_head=8, n_head_kv=1), ModelParams(80, 8, 1), "Q4_K_M"))
    sixty_five = types(plan(llama_tensors(80, n_head=8, n_head_kv=8), ModelParams(80, 8, 8), "Q4_K_M"))
    assert seventy["blk.20.attn_v.weight"] == "Q5_K"
    assert seventy["blk.21.attn_v.weight"] == "Q6_K"  # more-bits layers keep Q6_K
    assert sixty_five["blk.20.attn_v.weight"] == "Q4_K"  # 65B has no GQA, so it is no "70B"


def test_an_eight_expert_model_gives_attention_more_bits_and_reads_layers_from_names():
    tensors = [t for t in llama_tensors(4) if "ffn_" not in t.name or "norm" in t.name]
    tensors += [TensorSpec(f"blk.{i}.ffn_down_exps.weight", (8, 256, 512), T.F32) for i in (3, 0, 2, 1)]
    tensors += [TensorSpec(f"blk.{i}.ffn_gate_inp.weight", (8, 256), T.F32) for i in range(4)]
    t = types(plan(tensors, ModelParams(4, 4, 4, n_expert=8), "Q4_K_M"))
    assert t["blk.0.attn_v.weight"] == t["blk.0.attn_k.weight"] == "Q8_0"
    assert t["blk.0.attn_output.weight"] == "Q5_K"
    assert [t[f"blk.{i}.ffn_down_exps.weight"] for i in range(4)] == ["Q4_K", "Q4_K", "Q6_K", "Q6_K"]
    assert t["blk.0.ffn_gate_inp.weight"] == "F32"  # the router is never quantized


def test_pure_gives_every_matrix_the_default_type_but_keeps_the_shape_fallback():
    t = types(plan(llama_tensors(4, n_ff=480), ModelParams(4, 4, 4), "Q4_K_M", pure=True))
    assert t["token_embd.weight"] == t["blk.3.attn_v.weight"] == "Q4_K"
    assert t["blk.3.ffn_down.weight"] == "Q5_0"
    assert t["blk.3.ffn_norm.weight"] == "F32"


def test_an_override_wins_and_is_not_counted_by_the_attn_v_rules():
    choices = plan(
        llama_tensors(4), ModelParams(4, 4, 4), "Q3_K_M", overrides=[(r"blk\.0\.attn_v", "Q8_0"), ("attn_v", "F16")]
    )
    t = types(choices)
    assert t["blk.0.attn_v.weight"] == "Q8_0"  # first match wins
    assert t["blk.1.attn_v.weight"] == "F16"
    choices = plan(llama_tensors(4), ModelParams(4, 4, 4), "Q3_K_M", overrides={r"blk\.0\.attn_v": "q8_0"})
    # llama.cpp counts attn_v tensors only when its rules run: blk.1 and blk.2 are "the first two".
    assert [c.type.name for c in choices if "attn_v" in c.name] == ["Q8_0", "Q5_K", "Q5_K", "Q4_K"]
    assert "matches the override" in reasons(choices)["blk.0.attn_v.weight"]


def test_explicit_output_and_token_embedding_types_win():
    t = types(
        plan(llama_tensors(2, tied=False), ModelParams(2, 4, 4), "Q4_K_M", output_type="Q8_0", token_embd_type="F16")
    )
    assert (t["output.weight"], t["token_embd.weight"]) == ("Q8_0", "F16")


def test_bad_options_are_one_clear_error():
    with pytest.raises(KQuantError, match="unknown ggml type 'Q9_K'"):
        plan(llama_tensors(1), ModelParams(1, 4, 4), "Q4_K_M", overrides={"attn": "Q9_K"})
    moe = [TensorSpec("ffn_down_exps.weight", (8, 256, 256), T.F32)]
    with pytest.raises(KQuantError, match="cannot tell its layer"):
        plan(moe, ModelParams(1, 4, 4, n_expert=8), "Q4_K_M")


# --- the rules against llama.cpp itself ---------------------------------------------------

# Thin models (few rows per matrix) keep the row lengths and names that the rules read.
PLAN_MODELS = {
    "16 layers, GQA 4, untied": dict(n_layer=16, n_head_kv=1, tied=False, rows=4),
    "32 layers, tied": dict(n_layer=32, n_ff=768, rows=2),
    "70B-like: 80 layers, GQA 8": dict(n_layer=80, n_head=8, n_head_kv=1, n_ff=256, rows=1),
    "8 experts": dict(n_layer=8, n_expert=8, n_ff=256, rows=2),
    "rows of 480 and 200": dict(n_layer=3, n_embd=480, n_ff=200, n_vocab=77, rows=3, tied=False),
}


@pytest.fixture(scope="module")
def plan_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plan_models")
    return {name: write_tiny_llama(folder / f"m{i}.gguf", **kw) for i, (name, kw) in enumerate(PLAN_MODELS.items())}


@pytest.mark.parametrize("model", PLAN_MODELS)
def test_plans_equal_the_types_llama_cpp_chooses_for_every_mix(model, plan_models, tmp_path):
    for mix in MIXES:
        out = llama_quantize(plan_models[model], tmp_path / f"{mix}.gguf", mix)
        theirs = [(t.name, t.tensor_type.name) for t in GGUFReader(out).tensors]
        ours = [(c.name, c.type.name) for c in plan_gguf(plan_models[model], mix)]
        assert ours == theirs, mix


def test_plans_with_options_equal_llama_cpps(plan_models, tmp_path):
    src = plan_models["16 layers, GQA 4, untied"]
    cases = [
        dict(mix="Q4_K_M", pure=True),
        dict(mix="Q3_K_M", overrides=[(r"blk\.0\.attn_v", "Q8_0"), ("ffn_down", "Q5_K")]),
        dict(mix="Q4_K_S", output_type="Q5_K", token_embd_type="Q8_0"),
    ]
    for i, case in enumerate(cases):
        options = dict(case)
        mix = options.pop("mix")
        out = llama_quantize(src, tmp_path / f"{i}.gguf", mix, **options)
        theirs = [(t.name, t.tensor_type.name) for t in GGUFReader(out).tensors]
        assert [(c.name, c.type.name) for c in plan_gguf(src, mix, **options)] == theirs, case
