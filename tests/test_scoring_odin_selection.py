"""The rule that picks the ODIN pair without OOD data, on hand-made id_train scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from softlabel_ood.scoring import directory_reading, odin_selection, score_records
from softlabel_ood.scoring.metrics import ScoringError
from softlabel_ood.workdir import run_dir


def test_largest_temperature_then_highest_mean_id_train_score():
    pairs = [(1.0, 0.0), (1.0, 0.002), (1000.0, 0.0), (1000.0, 0.0014), (1000.0, 0.004)]
    # T = 1 has the highest means, but temperatures are not compared by mean score.
    odin = np.array([[0.9, 0.95, 0.11, 0.13, 0.12],
                     [0.8, 0.85, 0.11, 0.15, 0.12]])
    choice = odin_selection.choose(pairs, odin)
    assert (choice.index, choice.temperature, choice.epsilon) == (3, 1000.0, 0.0014)
    assert choice.id_train_means == (0.11, 0.14, 0.12)  # ε = 0, 0.0014, 0.004
    assert choice.text().startswith("T = 1000, ε = 0.0014 (chosen by the rule: the largest")


def test_ties_go_to_the_smaller_epsilon_whatever_the_column_order():
    pairs = [(10.0, 0.004), (10.0, 0.001), (5.0, 0.0)]
    odin = np.array([[0.5, 0.5, 0.9]])
    choice = odin_selection.choose(pairs, odin)
    assert (choice.index, choice.epsilon) == (1, 0.001)


def test_fixed_takes_openood_default_pair_whatever_the_means():
    pairs = [(1.0, 0.0), (1000.0, 0.0), (1000.0, 0.0014), (1000.0, 0.004)]
    odin = np.array([[0.9, 0.11, 0.12, 0.13]])
    by_rule = odin_selection.choose(pairs, odin)
    assert (by_rule.index, by_rule.epsilon) == (3, 0.004)
    assert by_rule.took_the_largest_epsilon
    fixed = odin_selection.choose(pairs, odin, "fixed")
    assert (fixed.index, fixed.temperature, fixed.epsilon) == (2, 1000.0, 0.0014)
    assert fixed.epsilons == (0.0, 0.0014, 0.004)
    assert not fixed.took_the_largest_epsilon
    assert fixed.text() == "T = 1000, ε = 0.0014 (fixed: OpenOOD's default pair)"
    # Without id_train scores the fixed pair is still known; the rule is not.
    assert odin_selection.choose(pairs, None, "fixed").index == 2
    # The rule stopping below the largest ε is not "the largest".
    assert not odin_selection.choose(pairs, np.array([[0.9, 0.11, 0.14, 0.13]])) \
        .took_the_largest_epsilon


def test_the_selection_is_read_from_the_run_config(tmp_path):
    def read_selection():
        return directory_reading.stored_parameter(run_dir.read_config(tmp_path, missing_ok=True),
                                                  score_records.ODIN_SELECTION, "config.json")

    assert read_selection() == "id_train"  # no config.json
    (tmp_path / "config.json").write_text(json.dumps({"method": "ce"}))
    assert read_selection() == "id_train"  # saved before the field
    (tmp_path / "config.json").write_text(json.dumps({"odin_selection": "fixed"}))
    assert read_selection() == "fixed"
    (tmp_path / "config.json").write_text(json.dumps({"odin_selection": "best"}))
    with pytest.raises(ScoringError, match=r"config.json: odin_selection is 'best', expected one "
                                           r"of id_train, fixed"):
        read_selection()
