"""Preference losses for segment-level DPO and its baselines: pure functions of per-turn log-probs.

Every loss here takes tensors and returns tensors: no model, no config object, no trainer state.
The fit loop computes the log-probs, picks a function from :data:`LOSSES` by its config name and
calls it. Users can call the functions directly.

Inputs of the preference losses (the order is TRL's ``DPOTrainer.dpo_loss`` order):

=========================== ====================== ===================================================
argument                    shape / dtype          meaning
=========================== ====================== ===================================================
``policy_chosen_logps``     (batch, turns_w) float log pi(y^w_t | h^w_t): summed token log-prob of each
                                                   of the trained agent's turns on the chosen side
``policy_rejected_logps``   (batch, turns_l) float the same on the rejected side
``reference_chosen_logps``  (batch, turns_w) float log pi_ref of the same turns (the frozen BC agent)
``reference_rejected_logps`` (batch, turns_l) float the same on the rejected side
``chosen_mask``             (batch, turns_w) bool  True where the turn counts (e.g. the segment)
``rejected_mask``           (batch, turns_l) bool  the same on the rejected side
=========================== ====================== ===================================================

``turns_w`` and ``turns_l`` may differ, and so may the number of True entries per row: an
asymmetric segment [a, b] is the paper's ablation, not an error. A row with no counted turn on a
side contributes a reward of 0 on that side. Entries outside the mask are never read into the
result (they may hold padding, even ``-inf``).

Each preference loss returns ``(losses, chosen_rewards, rejected_rewards)``, each of shape (batch,):
the implicit rewards are ``beta * sum_t w_t * (policy - reference)`` over counted turns, and the loss
is TRL's sigmoid loss ``-log sigmoid(chosen_rewards - rejected_rewards)``. All four losses are one
core (``_preference_loss``: checks, log-ratios, weighted sums, sigmoid loss); the turn weights
``w_t`` are the only thing each chooses: 1 at every counted turn (SDPO, ETO), 1 at the first
counted turn only (DPO), DMPO's discount phi(t, T) (DMPO).
Rewards are detached (they are for logging, as in TRL); gradients reach the policy log-probs only,
since the reference is frozen by definition.

Equations: the SDPO paper's §3 (the paper's loss equations) and §6 (facts of the authors'
release: summed token log-probs, no length normalisation, DMPO weights on policy and reference alike).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

__all__ = [
    "LOSSES",
    "SFT_LOSSES",
    "PreferenceLoss",
    "dmpo_loss",
    "dmpo_turn_weights",
    "dpo_loss",
    "eto_loss",
    "per_turn_logp_gaps",
    "preference_metrics",
    "sdpo_loss",
    "sft_loss",
]


class PreferenceLoss(Protocol):
    """Signature shared by every entry of :data:`LOSSES`."""

    def __call__(self, policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                 reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
                 chosen_mask: torch.Tensor, rejected_mask: torch.Tensor, *, beta: float = 0.1,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


# ---------------------------------------------------------------------------------------------
# Validation of user inputs (ValueError naming the argument and the shapes). This module imports
# nothing of the package, so a bad beta or gamma is a plain ValueError here; the fit config checks
# beta and gamma itself (ConfigError) before any loss runs.

def _check_beta(beta: float) -> None:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")


def _check_gamma(gamma: float) -> None:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (0.0 < gamma < 1.0):
        raise ValueError(f"gamma must be a number strictly between 0 and 1 (DMPO discount), got {gamma!r}")


def _check_side(side: str, policy: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> None:
    """Check one side (chosen or rejected) of a batch of pairs: same (batch, turns) shape, float
    log-probs, a bool mask."""
    names = (f"policy_{side}_logps", f"reference_{side}_logps", f"{side}_mask")
    for name, tensor in zip(names, (policy, reference, mask)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (batch, turns), got {type(tensor).__name__}")
        if tensor.dim() != 2:
            raise ValueError(f"{name} must have shape (batch, turns), got shape {tuple(tensor.shape)}")
    for name, tensor in zip(names[:2], (policy, reference)):
        if not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor of log-probs, got dtype {tensor.dtype}")
    if mask.dtype != torch.bool:
        raise ValueError(f"{names[2]} must be a bool tensor (True where the turn counts), got dtype {mask.dtype}")
    if not (policy.shape == reference.shape == mask.shape):
        raise ValueError(f"{names[0]} {tuple(policy.shape)}, {names[1]} {tuple(reference.shape)} and "
                         f"{names[2]} {tuple(mask.shape)} must have the same shape (batch, turns)")


def _check_pair(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
                chosen_mask: torch.Tensor, rejected_mask: torch.Tensor) -> None:
    _check_side("chosen", policy_chosen_logps, reference_chosen_logps, chosen_mask)
    _check_side("rejected", policy_rejected_logps, reference_rejected_logps, rejected_mask)
    if policy_chosen_logps.shape[0] != policy_rejected_logps.shape[0]:
        raise ValueError(f"policy_chosen_logps {tuple(policy_chosen_logps.shape)} and policy_rejected_logps "
                         f"{tuple(policy_rejected_logps.shape)} must have the same batch size (dim 0)")


# ---------------------------------------------------------------------------------------------
# The one core: log-ratios, per-turn weights, rewards, sigmoid loss.

TurnWeights = Callable[[torch.Tensor, torch.dtype], torch.Tensor]
"""What each preference loss chooses: ``(mask, dtype) -> (batch, turns)`` weights ``w_t``, 0
where the turn does not count (a turn of weight 0 is never read, so it may hold padding)."""


def _per_turn_log_ratios(policy: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log pi/pi_ref per turn, (batch, turns), 0 where the turn does not count.

    Computed in at least float32 so bf16 policies summed over many turns keep their precision, and
    with ``where`` rather than a product so padding (even -inf) in uncounted turns cannot leak NaN.
    The reference is detached: it is the frozen BC agent, never trained.
    """
    dtype = _ratio_dtype(policy, reference)
    ratios = policy.to(dtype) - reference.detach().to(dtype)
    return torch.where(mask, ratios, torch.zeros((), dtype=dtype, device=ratios.device))


def _ratio_dtype(policy: torch.Tensor, reference: torch.Tensor) -> torch.dtype:
    return torch.promote_types(torch.promote_types(policy.dtype, reference.dtype), torch.float32)


def _rewards(policy: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, weights: TurnWeights,
             beta: float) -> torch.Tensor:
    """One side's implicit rewards, (batch,): ``beta * sum_t w_t * log pi/pi_ref`` over the turns
    of nonzero weight."""
    w = weights(mask, _ratio_dtype(policy, reference))
    return beta * (w * _per_turn_log_ratios(policy, reference, w != 0)).sum(1)


def _sigmoid_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # TRL's "sigmoid" loss: -log sigma(r_w - r_l), Bradley-Terry on the summed rewards.
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def _preference_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                     reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
                     chosen_mask: torch.Tensor, rejected_mask: torch.Tensor, *, beta: float,
                     weights: TurnWeights) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The body of every preference loss: validate, weigh each side's counted turns with
    ``weights``, and apply the sigmoid loss to the two sides' rewards."""
    _check_beta(beta)
    _check_pair(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                reference_rejected_logps, chosen_mask, rejected_mask)
    return _sigmoid_loss(_rewards(policy_chosen_logps, reference_chosen_logps, chosen_mask, weights, beta),
                         _rewards(policy_rejected_logps, reference_rejected_logps, rejected_mask, weights, beta))


# ---------------------------------------------------------------------------------------------
# The turn weightings (the only thing the losses differ in).

def _every_counted_turn(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """w_t = 1 at every counted turn (SDPO over the segment, ETO over the session)."""
    return mask.to(dtype)


def _first_counted_turn(mask: torch.Tensor) -> torch.Tensor:
    """(batch, turns) bool: True only at the first True of each row (all False for an empty row)."""
    return mask & (mask.cumsum(dim=1) == 1)


def _error_turn_only(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """w_t = 1 at the first counted turn of each row (the error turn), 0 elsewhere (DPO)."""
    return _first_counted_turn(mask).to(dtype)


def dmpo_turn_weights(mask: torch.Tensor, gamma: float = 0.7, *, dtype: torch.dtype = torch.float32,
                      ) -> torch.Tensor:
    """DMPO's length-normalised discount phi(t, T) = (1 - gamma^(T-t)) / (1 - gamma^T) per turn.

    ``t`` is the 0-based index of a counted turn among the counted turns of its row and ``T`` the
    number of counted turns in that row, so phi(0, T) = 1, the weights decrease with t, and a
    single counted turn gets weight 1. As gamma -> 0 every weight tends to 1 (ETO); as gamma -> 1
    they tend to (T - t) / T.

    Args:
        mask: (batch, turns) bool, True where the turn counts.
        gamma: the discount, strictly between 0 and 1 (0.7 in the authors' release).
        dtype: floating dtype of the result.
    Returns:
        (batch, turns) weights, 0 at uncounted turns (and for rows with no counted turn).
    """
    _check_gamma(gamma)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.dtype != torch.bool:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a bool tensor of shape (batch, turns), got {shape}")
    counts = mask.sum(dim=1, keepdim=True).to(dtype)                     # T per row, (batch, 1)
    index = (mask.cumsum(dim=1) - 1).to(dtype)                           # t among counted turns
    log_gamma = math.log(gamma)
    # 1 - gamma^x written as -expm1(x log gamma): exact for gamma near 1, where 1 - gamma^x cancels.
    numerator = -torch.expm1((counts - index) * log_gamma)
    # Rows with T = 0 would divide 0 by 0; they have no counted turn, so any denominator will do.
    denominator = torch.where(counts > 0, -torch.expm1(counts * log_gamma), torch.ones_like(counts))
    return torch.where(mask, numerator / denominator, torch.zeros((), dtype=dtype, device=mask.device))


# ---------------------------------------------------------------------------------------------
# The preference losses: each is the core with its turn weighting.

def sdpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
              reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
              chosen_mask: torch.Tensor, rejected_mask: torch.Tensor, *, beta: float = 0.1,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Segment-level DPO: the sum over the segment's agent turns of beta * log pi/pi_ref, chosen
    minus rejected, through -log sigmoid (L_SDPO, the SDPO paper).

    The masks mark the segment: the trained agent's turns t = e..e+k on each side, starting at the
    error turn e. The paper uses segments of the same number of turns on both sides (so that the
    partition-function terms cancel); unequal counts are accepted for the [a, b] ablation.

    Args: per-turn log-probs (batch, turns_w) / (batch, turns_l) float and bool masks of the same
    shapes, see the module docstring; ``beta`` the KL strength (0.1 in the paper).
    Returns: ``(losses, chosen_rewards, rejected_rewards)``, each (batch,).
    """
    # L_SDPO of the SDPO paper: sum_{t=e}^{e+k} beta * log pi/pi_ref, per side.
    return _preference_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                            reference_rejected_logps, chosen_mask, rejected_mask, beta=beta,
                            weights=_every_counted_turn)


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
             chosen_mask: torch.Tensor, rejected_mask: torch.Tensor, *, beta: float = 0.1,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn-level DPO at the error turn (L_DPO, the SDPO paper).

    A DPO pair normally holds one agent turn per side (the error turn e and its alternative). When
    the masks count several turns, only the **first counted turn** of each side is used (the error
    turn); later counted turns are ignored. This makes SDPO over a one-turn segment equal DPO.

    Args and returns as :func:`sdpo_loss`.
    """
    # L_DPO of the SDPO paper: beta * log pi/pi_ref (y_e | h_e) on each side.
    return _preference_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                            reference_rejected_logps, chosen_mask, rejected_mask, beta=beta,
                            weights=_error_turn_only)


def eto_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
             chosen_mask: torch.Tensor, rejected_mask: torch.Tensor, *, beta: float = 0.1,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Session-level ETO: the sum over all counted agent turns of the whole sessions, chosen
    (T_w turns) minus rejected (T_l turns), with no length constraint (L_ETO, the SDPO paper).

    The masks mark every agent turn of each session (t = 0..T-1). The computation is the same sum
    as :func:`sdpo_loss` (the same weighting); the two differ in their data (whole sessions sampled
    from the start vs segments branching at the error turn), so ETO equals SDPO when T_w = T_l and
    the segment is the whole session.

    Args and returns as :func:`sdpo_loss`.
    """
    # L_ETO of the SDPO paper: sum_{t=0}^{T_w-1} minus sum_{t=0}^{T_l-1} of beta * log pi/pi_ref.
    return _preference_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                            reference_rejected_logps, chosen_mask, rejected_mask, beta=beta,
                            weights=_every_counted_turn)


def dmpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
              reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
              chosen_mask: torch.Tensor, rejected_mask: torch.Tensor, *, beta: float = 0.1,
              gamma: float = 0.7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Session-level DMPO: like :func:`eto_loss`, each counted turn weighted by phi(t, T)
    (L_DMPO, the SDPO paper; weights from :func:`dmpo_turn_weights`).

    ``T`` is counted separately on each side (T_w, T_l). The weight multiplies the policy and the
    reference log-prob alike (the authors' released code). Computed for the whole batch at once, no loop over turns.

    Args and returns as :func:`sdpo_loss`, plus ``gamma`` in (0, 1) (0.7 in the authors' release).
    """
    _check_gamma(gamma)
    # L_DMPO of the SDPO paper: sum_t beta * phi(t, T) * log pi/pi_ref, with T = T_w or T_l.
    return _preference_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                            reference_rejected_logps, chosen_mask, rejected_mask, beta=beta,
                            weights=lambda mask, dtype: dmpo_turn_weights(mask, gamma, dtype=dtype))


# ---------------------------------------------------------------------------------------------
# Behavioural cloning.

def sft_loss(per_token_logps: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Behavioural-cloning loss: the mean negative log-likelihood of the counted tokens, per example.

    Used for BC on expert sessions ("sft") and for Preferred-SFT on SDPO's positive sessions
    ("preferred_sft"); the caller's mask selects the trained agent's turn tokens.

    Args:
        per_token_logps: (batch, tokens) float, log pi(token | prefix) of each target token.
        token_mask: (batch, tokens) bool, True for the tokens that carry loss.
    Returns:
        (batch,) mean token NLL over each row's counted tokens; 0 for a row with none (so an
        all-padding row adds nothing instead of NaN).
    """
    if not isinstance(per_token_logps, torch.Tensor) or per_token_logps.dim() != 2 \
            or not per_token_logps.is_floating_point():
        got = (f"shape {tuple(per_token_logps.shape)} dtype {per_token_logps.dtype}"
               if isinstance(per_token_logps, torch.Tensor) else type(per_token_logps).__name__)
        raise ValueError(f"per_token_logps must be a float tensor of shape (batch, tokens), got {got}")
    if not isinstance(token_mask, torch.Tensor) or token_mask.dtype != torch.bool:
        got = str(token_mask.dtype) if isinstance(token_mask, torch.Tensor) else type(token_mask).__name__
        raise ValueError(f"token_mask must be a bool tensor, got {got}")
    if token_mask.shape != per_token_logps.shape:
        raise ValueError(f"per_token_logps {tuple(per_token_logps.shape)} and token_mask "
                         f"{tuple(token_mask.shape)} must have the same shape (batch, tokens)")
    dtype = torch.promote_types(per_token_logps.dtype, torch.float32)
    logps = torch.where(token_mask, per_token_logps.to(dtype),
                        torch.zeros((), dtype=dtype, device=per_token_logps.device))
    counts = token_mask.sum(dim=1).clamp(min=1).to(dtype)
    return -logps.sum(dim=1) / counts


# ---------------------------------------------------------------------------------------------
# Registries: config name -> function (the fit loop only looks them up).

LOSSES: dict[str, PreferenceLoss] = {
    "sdpo": sdpo_loss,
    "dpo": dpo_loss,
    "eto": eto_loss,
    "dmpo": dmpo_loss,
}

SFT_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "sft": sft_loss,
    "preferred_sft": sft_loss,
}


# ---------------------------------------------------------------------------------------------
# Metrics.

def preference_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                       policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                       chosen_mask: torch.Tensor, rejected_mask: torch.Tensor) -> dict[str, float]:
    """Batch means of the usual preference metrics, under TRL's names.

    Args:
        chosen_rewards, rejected_rewards: (batch,), as returned by a loss of :data:`LOSSES`.
        policy_chosen_logps, policy_rejected_logps: (batch, turns_w) / (batch, turns_l) per-turn
            policy log-probs.
        chosen_mask, rejected_mask: bool masks of the same shapes; pass the turns the loss counted.
    Returns:
        ``rewards/chosen``, ``rewards/rejected`` (mean rewards), ``rewards/margins`` (mean of
        chosen - rejected), ``rewards/accuracies`` (fraction with chosen > rejected, ties count as
        wrong), ``logps/chosen``, ``logps/rejected`` (mean over the batch of the summed log-probs of
        the counted turns).
    """
    for name, rewards in (("chosen_rewards", chosen_rewards), ("rejected_rewards", rejected_rewards)):
        if not isinstance(rewards, torch.Tensor) or rewards.dim() != 1:
            shape = tuple(rewards.shape) if isinstance(rewards, torch.Tensor) else type(rewards).__name__
            raise ValueError(f"{name} must have shape (batch,), got {shape}")
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(f"chosen_rewards {tuple(chosen_rewards.shape)} and rejected_rewards "
                         f"{tuple(rejected_rewards.shape)} must have the same shape (batch,)")
    # The reference is not needed here; validate the policy tensors against themselves.
    _check_pair(policy_chosen_logps, policy_rejected_logps, policy_chosen_logps, policy_rejected_logps,
                chosen_mask, rejected_mask)
    if policy_chosen_logps.shape[0] != chosen_rewards.shape[0]:
        raise ValueError(f"chosen_rewards {tuple(chosen_rewards.shape)} and policy_chosen_logps "
                         f"{tuple(policy_chosen_logps.shape)} must have the same batch size")
    chosen_rewards, rejected_rewards = chosen_rewards.detach().double(), rejected_rewards.detach().double()
    zero = torch.zeros((), dtype=torch.float64, device=policy_chosen_logps.device)
    chosen_logps = torch.where(chosen_mask, policy_chosen_logps.detach().double(), zero).sum(1)
    rejected_logps = torch.where(rejected_mask, policy_rejected_logps.detach().double(), zero).sum(1)
    return {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).double().mean().item(),
        "logps/chosen": chosen_logps.mean().item(),
        "logps/rejected": rejected_logps.mean().item(),
    }


def per_turn_logp_gaps(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                       chosen_mask: torch.Tensor, rejected_mask: torch.Tensor) -> torch.Tensor:
    """Mean chosen-minus-rejected policy log-prob per aligned turn position (the paper's
    probability-gap analysis: how the gap moves at the error turn and the turns after it).

    Turn position j is column j on both sides (the k-th agent turn after the shared history). A
    position counts for a row only when both sides count it.

    Args:
        policy_chosen_logps, policy_rejected_logps: (batch, turns_w) / (batch, turns_l) float.
        chosen_mask, rejected_mask: bool masks of the same shapes.
    Returns:
        (min(turns_w, turns_l),) float64 tensor: the mean gap over the rows that count position j,
        NaN where no row does.
    """
    _check_pair(policy_chosen_logps, policy_rejected_logps, policy_chosen_logps, policy_rejected_logps,
                chosen_mask, rejected_mask)
    turns = min(policy_chosen_logps.shape[1], policy_rejected_logps.shape[1])
    both = chosen_mask[:, :turns] & rejected_mask[:, :turns]
    gaps = (policy_chosen_logps[:, :turns].detach().double()
            - policy_rejected_logps[:, :turns].detach().double())
    gaps = torch.where(both, gaps, torch.zeros((), dtype=torch.float64, device=gaps.device))
    counts = both.sum(dim=0).double()
    return torch.where(counts > 0, gaps.sum(0) / counts.clamp(min=1), torch.full_like(counts, math.nan))
