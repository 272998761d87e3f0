"""sdpo.losses against hand-computed values, naive per-example Python, and the paper's identities."""
import itertools
import math
import random

import pytest
import torch

from sdpo.losses import (
    LOSSES,
    SFT_LOSSES,
    dmpo_loss,
    dmpo_turn_weights,
    dpo_loss,
    eto_loss,
    per_turn_logp_gaps,
    preference_metrics,
    sdpo_loss,
    sft_loss,
)


def t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def m(rows):
    return torch.tensor(rows, dtype=torch.bool)


def sigmoid_loss(margin):
    # -log sigma(x) = log(1 + exp(-x))
    return math.log1p(math.exp(-margin))


# --- naive per-example references (plain Python loops, written independently of the module) ----

def naive_phi(t_index, count, gamma):
    return (1 - gamma ** (count - t_index)) / (1 - gamma ** count)


def naive_reward(policy_row, reference_row, mask_row, beta, kind, gamma=0.7):
    counted = [i for i, keep in enumerate(mask_row) if keep]
    if kind == "dpo":
        counted = counted[:1]
    total = 0.0
    for k, i in enumerate(counted):
        weight = naive_phi(k, len(counted), gamma) if kind == "dmpo" else 1.0
        total += weight * (policy_row[i] - reference_row[i])
    return beta * total


def naive_losses(kind, pc, pr, rc, rr, cm, rm, beta, gamma=0.7):
    out = []
    for b in range(len(pc)):
        chosen = naive_reward(pc[b], rc[b], cm[b], beta, kind, gamma)
        rejected = naive_reward(pr[b], rr[b], rm[b], beta, kind, gamma)
        out.append((sigmoid_loss(chosen - rejected), chosen, rejected))
    return out


def random_batch(seed, batch=6, turns_w=5, turns_l=4):
    rng = random.Random(seed)
    pc = [[rng.uniform(-60, -1) for _ in range(turns_w)] for _ in range(batch)]
    pr = [[rng.uniform(-60, -1) for _ in range(turns_l)] for _ in range(batch)]
    rc = [[x + rng.uniform(-3, 3) for x in row] for row in pc]
    rr = [[x + rng.uniform(-3, 3) for x in row] for row in pr]
    cm = [[rng.random() < 0.6 for _ in range(turns_w)] for _ in range(batch)]
    rm = [[rng.random() < 0.6 for _ in range(turns_l)] for _ in range(batch)]
    cm[0] = [False] * turns_w          # a row with no counted chosen turn
    rm[1] = [True] * turns_l           # a row counting every rejected turn
    return pc, pr, rc, rr, cm, rm


# --- hand-computed values ---------------------------------------------------------------------

def test_dpo_single_turn_by_hand():
    # chosen: 0.1 * (-5 - -6) = 0.1 ; rejected: 0.1 * (-8 - -7) = -0.1 ; margin 0.2
    losses, chosen, rejected = dpo_loss(t([[-5.0]]), t([[-8.0]]), t([[-6.0]]), t([[-7.0]]),
                                        m([[True]]), m([[True]]), beta=0.1)
    assert chosen.tolist() == pytest.approx([0.1])
    assert rejected.tolist() == pytest.approx([-0.1])
    assert losses.tolist() == pytest.approx([math.log1p(math.exp(-0.2))])  # 0.598138...
    assert losses.item() == pytest.approx(0.5981388693815918)


def test_sdpo_segment_by_hand():
    # chosen ratios: (-10+11, -4+5, -3+5) = (1, 1, 2) -> 0.1*4 = 0.4
    # rejected ratios: (-9+8, -6+5, -2+2) = (-1, -1, 0) -> 0.1*(-2) = -0.2 ; margin 0.6
    # the first column is history-only on both sides (masked out)
    pc, rc = t([[-1.0, -10.0, -4.0, -3.0]]), t([[-50.0, -11.0, -5.0, -5.0]])
    pr, rr = t([[-1.0, -9.0, -6.0, -2.0]]), t([[-70.0, -8.0, -5.0, -2.0]])
    mask = m([[False, True, True, True]])
    losses, chosen, rejected = sdpo_loss(pc, pr, rc, rr, mask, mask, beta=0.1)
    assert chosen.item() == pytest.approx(0.4)
    assert rejected.item() == pytest.approx(-0.2)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-0.6)))


def test_dmpo_by_hand():
    # gamma = 0.5. Chosen T=3: phi = (1-0.5^3)/(1-0.5^3), (1-0.5^2)/0.875, (1-0.5)/0.875 = 1, 6/7, 4/7
    #   ratios (1, 1, 2) -> 1 + 6/7 + 8/7 = 3 -> reward 0.3
    # Rejected T=2 (middle column masked): phi = 1, (1-0.5)/(1-0.25) = 2/3
    #   ratios (-1, -3) -> -1 - 2 = -3 -> reward -0.3 ; margin 0.6
    pc, rc = t([[-10.0, -4.0, -3.0]]), t([[-11.0, -5.0, -5.0]])
    pr, rr = t([[-9.0, -100.0, -5.0]]), t([[-8.0, -1.0, -2.0]])
    losses, chosen, rejected = dmpo_loss(pc, pr, rc, rr, m([[True, True, True]]), m([[True, False, True]]),
                                         beta=0.1, gamma=0.5)
    assert chosen.item() == pytest.approx(0.3)
    assert rejected.item() == pytest.approx(-0.3)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-0.6)))


def test_dmpo_weights_by_hand():
    weights = dmpo_turn_weights(m([[True, True, True], [False, True, False], [False, False, False],
                                   [True, False, True]]), gamma=0.5, dtype=torch.float64)
    expected = [[1.0, 6 / 7, 4 / 7],     # T=3
                [0.0, 1.0, 0.0],         # T=1: weight 1
                [0.0, 0.0, 0.0],         # T=0: nothing counts, no NaN
                [1.0, 0.0, 2 / 3]]       # T=2 with a gap
    assert weights.tolist() == [pytest.approx(row) for row in expected]


def test_dmpo_weights_follow_formula_and_decrease():
    mask = torch.ones(1, 6, dtype=torch.bool)
    for gamma in (0.1, 0.7, 0.95):
        weights = dmpo_turn_weights(mask, gamma, dtype=torch.float64)[0].tolist()
        assert weights == pytest.approx([naive_phi(k, 6, gamma) for k in range(6)])
        assert weights[0] == pytest.approx(1.0)
        assert all(a > b for a, b in itertools.pairwise(weights))


def test_dmpo_weight_limits_of_gamma():
    mask = torch.ones(1, 4, dtype=torch.bool)
    # gamma -> 0: every weight -> 1 (DMPO becomes ETO)
    assert dmpo_turn_weights(mask, 1e-12, dtype=torch.float64)[0].tolist() == pytest.approx([1.0] * 4)
    # gamma -> 1: phi -> (T - t) / T = 1, 3/4, 1/2, 1/4 (no 0/0 cancellation)
    near_one = dmpo_turn_weights(mask, 1 - 1e-12, dtype=torch.float64)[0].tolist()
    assert near_one == pytest.approx([1.0, 0.75, 0.5, 0.25], rel=1e-6)


def test_dmpo_small_gamma_equals_eto():
    pc, pr, rc, rr, cm, rm = random_batch(3)
    args = (t(pc), t(pr), t(rc), t(rr), m(cm), m(rm))
    dmpo = dmpo_loss(*args, gamma=1e-12)
    eto = eto_loss(*args)
    for a, b in zip(dmpo, eto):
        torch.testing.assert_close(a, b)


# --- identities -------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_policy_equal_reference_gives_ln2_and_zero_margin(loss):
    pc, pr, _, _, cm, rm = random_batch(1)
    losses, chosen, rejected = LOSSES[loss](t(pc), t(pr), t(pc), t(pr), m(cm), m(rm), beta=0.1)
    torch.testing.assert_close(losses, torch.full((6,), math.log(2), dtype=torch.float64))
    assert chosen.abs().max().item() == 0.0 and rejected.abs().max().item() == 0.0


def test_sdpo_one_turn_segment_equals_dpo():
    pc, pr, rc, rr, _, _ = random_batch(2)
    # segment = only the error turn (column 2 on the chosen side, column 1 on the rejected side)
    cm = m([[i == 2 for i in range(5)]] * 6)
    rm = m([[i == 1 for i in range(4)]] * 6)
    sdpo = sdpo_loss(t(pc), t(pr), t(rc), t(rr), cm, rm)
    # DPO on the same tensors, with the later turns also marked: it must use only the error turn
    dpo = dpo_loss(t(pc), t(pr), t(rc), t(rr), cm | m([[i > 2 for i in range(5)]] * 6),
                   rm | m([[i > 1 for i in range(4)]] * 6))
    for a, b in zip(sdpo, dpo):
        torch.testing.assert_close(a, b)


def test_sdpo_whole_session_equal_length_equals_eto():
    pc, pr, rc, rr, _, _ = random_batch(4, turns_w=4, turns_l=4)
    everything = torch.ones(6, 4, dtype=torch.bool)
    sdpo = sdpo_loss(t(pc), t(pr), t(rc), t(rr), everything, everything)
    eto = eto_loss(t(pc), t(pr), t(rc), t(rr), everything, everything)
    for a, b in zip(sdpo, eto):
        torch.testing.assert_close(a, b)
    assert len({round(x, 9) for x in sdpo[0].tolist()}) > 1   # not a degenerate batch


# --- against naive per-example Python on random, asymmetric batches -------------------------

@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_matches_naive_on_asymmetric_batches(loss, beta):
    pc, pr, rc, rr, cm, rm = random_batch(7)
    assert any(sum(a) != sum(b) for a, b in zip(cm, rm))   # asymmetric counts [a, b] present
    kwargs = {"beta": beta, "gamma": 0.6} if loss == "dmpo" else {"beta": beta}
    losses, chosen, rejected = LOSSES[loss](t(pc), t(pr), t(rc), t(rr), m(cm), m(rm), **kwargs)
    expected = naive_losses(loss, pc, pr, rc, rr, cm, rm, beta, gamma=0.6)
    assert losses.shape == chosen.shape == rejected.shape == (6,)
    assert losses.tolist() == pytest.approx([e[0] for e in expected], rel=1e-9, abs=1e-12)
    assert chosen.tolist() == pytest.approx([e[1] for e in expected], rel=1e-9, abs=1e-12)
    assert rejected.tolist() == pytest.approx([e[2] for e in expected], rel=1e-9, abs=1e-12)


def test_asymmetric_segment_three_vs_one():
    # the [3, 1] ablation: 3 chosen turns against 1 rejected turn; chosen ratios 1+1+1, rejected -1
    losses, chosen, rejected = sdpo_loss(t([[-1.0, -1.0, -1.0]]), t([[-3.0]]), t([[-2.0, -2.0, -2.0]]),
                                         t([[-2.0]]), m([[True, True, True]]), m([[True]]), beta=0.1)
    assert chosen.item() == pytest.approx(0.3) and rejected.item() == pytest.approx(-0.1)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-0.4)))


# --- gradients, padding, dtypes ---------------------------------------------------------------

@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_gradients_reach_policy_only_and_counted_turns_only(loss):
    pc = t([[-4.0, -5.0, float("-inf")], [-2.0, -3.0, -1.0]]).requires_grad_()
    pr = t([[-6.0, float("-inf")], [-2.5, -7.0]]).requires_grad_()
    rc = t([[-4.5, -5.5, float("-inf")], [-2.0, -3.5, -1.0]]).requires_grad_()
    rr = t([[-5.0, float("-inf")], [-2.0, -6.0]]).requires_grad_()
    cm, rm = m([[True, True, False], [True, True, True]]), m([[True, False], [True, True]])
    losses, chosen, rejected = LOSSES[loss](pc, pr, rc, rr, cm, rm)
    assert torch.isfinite(losses).all()
    assert not chosen.requires_grad and not rejected.requires_grad    # logged, as in TRL
    losses.sum().backward()
    assert rc.grad is None and rr.grad is None
    assert torch.isfinite(pc.grad).all() and torch.isfinite(pr.grad).all()
    assert pc.grad[0, 2].item() == 0.0 and pr.grad[0, 1].item() == 0.0   # padding gets nothing
    assert pc.grad[0, 0].item() < 0.0 and pr.grad[0, 0].item() > 0.0    # push chosen up, rejected down


def test_sdpo_gradient_by_hand():
    # d/dx -log sigma(beta*x - c) = -beta * (1 - sigma(margin)); margin = 0.1*(1) - 0.1*(-1) = 0.2
    pc = t([[-5.0]]).requires_grad_()
    losses, _, _ = sdpo_loss(pc, t([[-8.0]]), t([[-6.0]]), t([[-7.0]]), m([[True]]), m([[True]]))
    losses.sum().backward()
    assert pc.grad.item() == pytest.approx(-0.1 * (1 - 1 / (1 + math.exp(-0.2))))


def test_bfloat16_policy_with_float32_reference_is_computed_in_float32():
    # a bf16 policy against a cached float32 reference: the 0.001 differences would vanish if the
    # reference were rounded to bf16 (-3.001 -> -3.0)
    pc = torch.full((1, 40), -3.0, dtype=torch.bfloat16)
    rc = torch.full((1, 40), -3.001, dtype=torch.float32)
    mask = torch.ones(1, 40, dtype=torch.bool)
    losses, chosen, _ = sdpo_loss(pc, pc[:, :1], rc, pc[:, :1].float(), mask, mask[:, :1])
    assert losses.dtype == chosen.dtype == torch.float32
    assert chosen.item() == pytest.approx(0.1 * 40 * 0.001, rel=1e-3)


# --- validation -------------------------------------------------------------------------------

def test_shape_mismatch_names_the_argument():
    with pytest.raises(ValueError, match=r"reference_chosen_logps \(2, 4\)"):
        sdpo_loss(torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2, 4), torch.zeros(2, 2),
                  torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="same batch size"):
        sdpo_loss(torch.zeros(2, 3), torch.zeros(3, 2), torch.zeros(2, 3), torch.zeros(3, 2),
                  torch.ones(2, 3, dtype=torch.bool), torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"policy_rejected_logps must have shape \(batch, turns\)"):
        dpo_loss(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, 3), torch.zeros(2),
                 torch.ones(2, 3, dtype=torch.bool), torch.ones(2, dtype=torch.bool))


def test_dtype_errors_name_the_argument():
    with pytest.raises(ValueError, match="rejected_mask must be a bool tensor"):
        eto_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2),
                 torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2))
    with pytest.raises(ValueError, match="policy_chosen_logps must be a floating-point"):
        eto_loss(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2),
                 torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="reference_chosen_logps must be a torch.Tensor"):
        eto_loss(torch.zeros(1, 2), torch.zeros(1, 2), [[0.0, 0.0]], torch.zeros(1, 2),
                 torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool))


@pytest.mark.parametrize("gamma", [0.0, 1.0, 1.5, -0.2, float("nan")])
def test_gamma_outside_open_interval_is_rejected(gamma):
    ones = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="gamma"):
        dmpo_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), ones, ones,
                  gamma=gamma)


@pytest.mark.parametrize("beta", [0.0, -0.1, float("inf")])
def test_bad_beta_is_rejected(beta):
    ones = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="beta"):
        sdpo_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), ones, ones,
                  beta=beta)


# --- SFT ----------------------------------------------------------------------------------------

def test_sft_loss_by_hand():
    logps = t([[-1.0, -2.0, -30.0], [-0.5, float("-inf"), -1.5], [-4.0, -4.0, -4.0]])
    mask = m([[True, True, False], [True, False, True], [False, False, False]])
    # row 0: (1 + 2) / 2 = 1.5 ; row 1: (0.5 + 1.5) / 2 = 1.0 ; row 2: nothing counts -> 0
    assert sft_loss(logps, mask).tolist() == pytest.approx([1.5, 1.0, 0.0])
    assert SFT_LOSSES["sft"] is sft_loss and SFT_LOSSES["preferred_sft"] is sft_loss


def test_sft_loss_validates_shapes():
    with pytest.raises(ValueError, match="token_mask"):
        sft_loss(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="per_token_logps"):
        sft_loss(torch.zeros(3), torch.ones(3, dtype=torch.bool))


def test_registry_names():
    assert LOSSES == {"sdpo": sdpo_loss, "dpo": dpo_loss, "eto": eto_loss, "dmpo": dmpo_loss}


# --- metrics ------------------------------------------------------------------------------------

def test_preference_metrics_by_hand():
    chosen_rewards, rejected_rewards = t([0.4, -0.1, 0.2]), t([-0.2, 0.3, 0.2])
    pc = t([[-10.0, -4.0, -99.0], [-1.0, -2.0, -3.0], [-5.0, -5.0, -5.0]])
    pr = t([[-9.0, -6.0], [-1.0, -1.0], [-2.0, -8.0]])
    cm = m([[True, True, False], [True, True, True], [False, True, False]])
    rm = m([[True, True], [True, False], [True, True]])
    metrics = preference_metrics(chosen_rewards, rejected_rewards, pc, pr, cm, rm)
    assert set(metrics) == {"rewards/chosen", "rewards/rejected", "rewards/margins",
                            "rewards/accuracies", "logps/chosen", "logps/rejected"}
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["rewards/chosen"] == pytest.approx((0.4 - 0.1 + 0.2) / 3)
    assert metrics["rewards/rejected"] == pytest.approx((-0.2 + 0.3 + 0.2) / 3)
    assert metrics["rewards/margins"] == pytest.approx((0.6 - 0.4 + 0.0) / 3)
    assert metrics["rewards/accuracies"] == pytest.approx(1 / 3)          # the tie counts as wrong
    assert metrics["logps/chosen"] == pytest.approx((-14.0 - 6.0 - 5.0) / 3)
    assert metrics["logps/rejected"] == pytest.approx((-15.0 - 1.0 - 10.0) / 3)


def test_per_turn_logp_gaps_by_hand():
    pc = t([[-1.0, -2.0, -3.0], [-4.0, -1.0, -7.0]])
    pr = t([[-3.0, -2.5, -9.0, -1.0], [-5.0, -6.0, -8.0, -1.0]])
    cm = m([[True, True, True], [True, True, False]])
    rm = m([[True, False, False, True], [True, True, True, True]])
    gaps = per_turn_logp_gaps(pc, pr, cm, rm)
    # position 0: rows (-1+3, -4+5) -> mean 1.5 ; position 1: only row 1 (-1+6) = 5
    # position 2: row 0 rejected masked, row 1 chosen masked -> NaN ; length min(3, 4) = 3
    assert gaps.shape == (3,)
    assert gaps[:2].tolist() == pytest.approx([1.5, 5.0])
    assert math.isnan(gaps[2].item())


# --- structure ----------------------------------------------------------------------------------

def test_losses_module_imports_only_torch_and_the_standard_library():
    import ast
    import inspect

    import sdpo.losses

    tree = ast.parse(inspect.getsource(sdpo.losses))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "math", "collections", "typing", "torch"}, imported


def test_dpo_never_reads_counted_turns_after_the_error_turn():
    # dpo counts only the first counted turn: -inf in a later counted turn must not leak NaN
    pc, pr = t([[-1.0, float("-inf")]]), t([[-2.0, float("-inf")]])
    rc, rr = t([[-1.5, 0.0]]), t([[-1.0, 0.0]])
    both = m([[True, True]])
    losses, cw, rw = dpo_loss(pc, pr, rc, rr, both, both, beta=0.5)
    assert cw.item() == pytest.approx(0.25) and rw.item() == pytest.approx(-0.5)
    assert losses.item() == pytest.approx(sigmoid_loss(0.75))
