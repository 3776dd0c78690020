"""The generated corpus: reproducible from its seed, and the held-out tasks are never trained on."""

from __future__ import annotations

import re

import pytest

from kquant.errors import KQuantError
from kquant.model import bpe, corpus


def test_the_same_seed_gives_the_same_text_and_another_seed_other_text():
    assert corpus.documents(1, 50) == corpus.documents(1, 50)
    assert corpus.documents(1, 50) != corpus.documents(2, 50)


def test_no_held_out_sum_appears_in_the_training_text():
    train = corpus.text(corpus.documents(1, 3000))
    trained = set(re.findall(r"^(\d+) \+ (\d+) = ", train.replace(corpus.BOS, "\n"), flags=re.M))
    assert len(trained) > 1000  # the check below is not vacuous
    held_out = {
        (t.prompt.split(" + ")[0], t.prompt.split(" + ")[1].rstrip(" ="))
        for t in corpus.tasks(n_sums=300)
        if t.kind == "sums"
    }
    assert len(held_out) == 300  # all different
    assert not trained & held_out


def test_every_task_answer_is_correct():
    for t in corpus.tasks(n_sums=200):
        if t.kind == "sums":
            a, b = map(int, t.prompt.rstrip(" =").split(" + "))
            assert t.answer == f" {a + b}\n"
    capitals = {f.country: f.capital for f in corpus.facts()}
    facts = [t for t in corpus.tasks() if t.kind == "facts"]
    assert len(facts) == corpus.N_FACTS
    for t in facts:
        country = t.prompt.split("capital of ")[1].split("?")[0]
        assert t.answer == f" {capitals[country]}.\n"


def test_each_made_up_name_names_one_thing():
    names = [n for f in corpus.facts() for n in (f.country, f.capital)]
    assert len(names) == len(set(names)) == 2 * corpus.N_FACTS


def test_the_facts_are_stated_in_the_training_text():
    train = corpus.text(corpus.documents(1, 3000))
    f = corpus.facts()[0]
    assert f"Q: What is the capital of {f.country}? A: {f.capital}." in train


def test_bpe_never_merges_digits_so_each_digit_is_one_token():
    tokens, merges = bpe.learn(corpus.text(corpus.documents(1, 500)), 300)
    assert len(merges) == 300 and len(tokens) == 2 + 256 + 300
    assert not [m for m in merges if any(c.isdigit() for c in m)]
    assert "Ġthe" in tokens  # it does learn words ("Ġ" is GPT-2's byte for a space)


def test_a_negative_count_is_a_clear_error():
    with pytest.raises(KQuantError, match="negative"):
        corpus.documents(1, -1)
    with pytest.raises(KQuantError, match="negative"):
        bpe.learn("abc", -1)
