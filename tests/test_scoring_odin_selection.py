"""The rule that picks the ODIN pair without OOD data, on hand-made id_train scores."""

from __future__ import annotations

import numpy as np

from softlabel_ood.scoring import odin_selection


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
