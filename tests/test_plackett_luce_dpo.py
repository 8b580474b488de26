"""Plackett–Luce log-probabilities and sampling, rewards, pairs and the DPO loss (chapter 5)."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from rar_lite.loop import dpo, plackett_luce

SCORES = torch.tensor([[1.0, 0.2, -0.5, 2.0]])


def brute_force(scores: list[float], order: tuple[int, ...], temperature: float = 1.0) -> float:
    weights = [math.exp(s / temperature) for s in scores]
    p, left = 1.0, sum(weights)
    for i in order:
        p *= weights[i] / left
        left -= weights[i]
    return p


def test_log_prob_equals_brute_force_and_sums_to_one() -> None:
    orders = list(itertools.permutations(range(4), 2))
    for temperature in (1.0, 0.5):
        got = plackett_luce.log_prob(SCORES.expand(len(orders), -1), torch.tensor(orders),
                                     temperature=temperature).exp()
        expected = [brute_force(SCORES[0].tolist(), o, temperature) for o in orders]
        assert got.tolist() == pytest.approx(expected, rel=1e-5)
        assert got.sum().item() == pytest.approx(1.0, rel=1e-5)


def test_log_prob_respects_the_mask() -> None:
    allowed = torch.tensor([[True, True, False, True]])
    got = plackett_luce.log_prob(SCORES, torch.tensor([[3, 0]]), allowed).exp().item()
    assert got == pytest.approx(brute_force([1.0, 0.2, 2.0], (2, 0)), rel=1e-5)
    assert plackett_luce.log_prob(SCORES, torch.tensor([[2, 0]]), allowed).item() == -math.inf
    with pytest.raises(ValueError, match="mask shape"):
        plackett_luce.log_prob(SCORES, torch.tensor([[0, 1]]), torch.ones(1, 3, dtype=bool))


def test_sampling_frequencies_match_plackett_luce() -> None:
    n = 20_000
    generator = torch.Generator().manual_seed(0)
    draws = plackett_luce.sample(SCORES, k=2, n_samples=n, generator=generator)[0]
    assert draws.shape == (n, 2) and bool((draws[:, 0] != draws[:, 1]).all())
    orders = list(itertools.permutations(range(4), 2))
    counts = {o: 0 for o in orders}
    for row in draws.tolist():
        counts[tuple(row)] += 1
    expected = np.array([brute_force(SCORES[0].tolist(), o) for o in orders]) * n
    observed = np.array([counts[o] for o in orders])
    assert stats.chisquare(observed, expected).pvalue > 0.01


def test_sampling_is_seeded_and_skips_masked_items() -> None:
    allowed = torch.tensor([[True, False, True, True]])
    a = plackett_luce.sample(SCORES, 3, 50, allowed, generator=torch.Generator().manual_seed(1))
    b = plackett_luce.sample(SCORES, 3, 50, allowed, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not bool((a == 1).any())
    with pytest.raises(ValueError, match="k must be in 1..3"):
        plackett_luce.sample(SCORES, 4, 1, allowed)
    with pytest.raises(ValueError, match="temperature"):
        plackett_luce.sample(SCORES, 2, temperature=0.0)



def test_inclusion_probabilities_match_enumeration_and_follow_the_temperature() -> None:
    scores = SCORES[0]
    for temperature in (0.5, 2.0):
        exact = [sum(brute_force(scores.tolist(), o, temperature)
                     for o in itertools.permutations(range(4), 2) if item in o)
                 for item in range(4)]
        got = plackett_luce.inclusion_probabilities(scores, 2, temperature, n_samples=20_000)
        assert got.sum().item() == pytest.approx(2.0)
        assert got.tolist() == pytest.approx(exact, abs=0.015)
    assert torch.equal(plackett_luce.inclusion_probabilities(scores, 2, seed=3),
                       plackett_luce.inclusion_probabilities(scores, 2, seed=3))
    cold = plackett_luce.inclusion_probabilities(scores, 2, 0.05)  # almost always the top 2
    assert cold.tolist() == pytest.approx([1.0, 0.0, 0.0, 1.0], abs=1e-3)
    with pytest.raises(ValueError, match="one row"):
        plackett_luce.inclusion_probabilities(SCORES, 2)

def test_set_reward_is_ndcg_of_the_target() -> None:
    assert dpo.set_reward([5, 7, 9], 5) == 1.0
    assert dpo.set_reward([5, 7, 9], 9) == pytest.approx(0.5)  # 1 / log2(4)
    assert dpo.set_reward([5, 7, 9], 8) == 0.0
    assert dpo.set_reward(list(range(20)), 15, k=10) == 0.0
    with pytest.raises(ValueError):
        dpo.set_reward([1], 1, k=0)


def test_pairs_prefer_higher_rewards_and_skip_ties() -> None:
    assert dpo.preference_pairs([0.5, 1.0]) == [(1, 0)]
    assert dpo.preference_pairs([0.3, 0.3]) == []
    assert sorted(dpo.preference_pairs([1.0, 0.0, 0.5])) == [(0, 1), (0, 2), (2, 1)]


def trl_sigmoid_dpo(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """Copied from TRL 1.16.0, trl/trainer/dpo_trainer.py (DPOTrainer, reverse_kl + sigmoid)."""
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    delta_score = chosen_logratios - rejected_logratios
    return -F.logsigmoid(beta * delta_score)


def test_dpo_loss_equals_trl_formula_and_hand_value() -> None:
    pc, pr = torch.tensor([-3.0, -10.0]), torch.tensor([-4.0, -9.5])
    rc, rr = torch.tensor([-3.5, -9.0]), torch.tensor([-3.5, -9.0])
    got = dpo.dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert torch.allclose(got, trl_sigmoid_dpo(pc, pr, rc, rr, 0.5))
    # pair 0: margin (0.5) - (-0.5) = 1 -> -log sigmoid(0.5)
    assert got[0].item() == pytest.approx(math.log1p(math.exp(-0.5)))
    with pytest.raises(ValueError):
        dpo.dpo_loss(pc, pr, rc, rr, beta=0.0)


def test_one_gradient_step_raises_the_chosen_log_ratio() -> None:
    scores = torch.nn.Parameter(torch.tensor([[0.3, -0.2, 0.8, 0.1, -1.0, 0.5]]))
    reference = scores.detach().clone()
    chosen, rejected = torch.tensor([[1, 4, 3]]), torch.tensor([[2, 5, 0]])

    def gap() -> float:
        with torch.no_grad():
            return ((plackett_luce.log_prob(scores, chosen)
                     - plackett_luce.log_prob(reference, chosen))
                    - (plackett_luce.log_prob(scores, rejected)
                       - plackett_luce.log_prob(reference, rejected))).item()

    assert gap() == pytest.approx(0.0)
    loss = dpo.dpo_loss(plackett_luce.log_prob(scores, chosen),
                        plackett_luce.log_prob(scores, rejected),
                        plackett_luce.log_prob(reference, chosen),
                        plackett_luce.log_prob(reference, rejected)).mean()
    loss.backward()
    with torch.no_grad():
        scores -= 1.0 * scores.grad
    assert gap() > 0.05
