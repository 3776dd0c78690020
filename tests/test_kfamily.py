"""Specification of kquant.lessons.kfamily (the five k-quant layouts) and samples.model_weights."""

import numpy as np
import pytest

import kquant
from kquant.errors import KQuantError
from kquant.lessons import kfamily, samples


@pytest.mark.parametrize("name", list(kfamily.LAYOUTS))
def test_the_bits_of_each_layout_add_up_to_the_block_the_encoder_writes(name):
    assert sum(kfamily.budget(name).values()) == 8 * kquant.get_format(name).type_size
    assert kquant.quantize(np.zeros((1, 256), np.float32), name).shape == (1, kquant.get_format(name).type_size)


@pytest.mark.parametrize("name", list(kfamily.LAYOUTS))
def test_every_decoded_weight_lies_on_its_groups_evenly_spaced_grid(name):
    lay = kfamily.layout(name)
    x = (np.random.default_rng(3).standard_t(4, (4, 256)) * 0.02).astype(np.float32)
    blocks = kquant.quantize(x, name)
    y = kquant.dequantize(blocks, name).reshape(4, lay.groups, lay.group)
    for b in range(4):
        levels = kfamily.group_levels(blocks[b], name)
        assert levels.shape == (lay.groups, 2**lay.level_bits)
        steps = np.diff(levels.astype(np.float64), axis=1)
        assert np.allclose(steps, steps[:, :1], rtol=1e-5, atol=1e-12)
        for j in range(lay.groups):
            assert np.isin(y[b, j], levels[j]).all()


def test_a_format_outside_the_family_is_refused_in_one_line():
    with pytest.raises(KQuantError, match="'Q4_0' is not a k-quant: use one of Q2_K, Q3_K, Q4_K, Q5_K, Q6_K"):
        kfamily.layout("Q4_0")


def test_model_weights_are_real_matrices_of_the_bundled_model_and_say_so():
    sample = samples.model_weights()
    assert sample.source.startswith("the bundled model kquant-tiny-f16.gguf")
    assert [n.split(".")[2] for n in sample.weights] == list(samples.MIDDLE_LAYER_KINDS)
    for w in sample.weights.values():
        assert w.dtype == np.float32 and w.ndim == 2 and w.shape[1] % 256 == 0 and w.std() > 0


def test_model_weights_fall_back_to_synthetic_weights_when_the_model_is_absent(monkeypatch, tmp_path):
    from kquant.model import hub

    monkeypatch.setattr(hub, "BUNDLED", tmp_path / "missing.gguf")
    sample = samples.model_weights()
    assert list(sample.weights) == ["synthetic"] and "is absent" in sample.source
    assert np.array_equal(sample.weights["synthetic"], samples.synthetic_example().weights)


def test_an_unknown_kind_of_matrix_is_refused_in_one_line():
    with pytest.raises(KQuantError, match=r"has no tensor blk\.\d+\.attn_x\.weight"):
        samples.model_weights(("attn_x",))
