import math
from itertools import permutations

import pytest
import torch
import torch.nn.functional as F

from asdzoo.data.s5 import LABEL_INDEX, LABELS, SILENCE, TAGGER_CLASSES
from asdzoo.nn.pit import class_aware_pit_loss, tagger_pit_loss

N = 3
PERMS = list(permutations(range(N)))


def _snr_db(est: torch.Tensor, ref: torch.Tensor) -> float:
    """Plain SNR by its definition, in float64: 10 log10(|ref|^2 / |ref - est|^2)."""
    est, ref = est.double(), ref.double()
    return 10 * math.log10(float(ref.pow(2).sum()) / float((ref - est).pow(2).sum()))


def _label_rows(names: list[str]) -> torch.Tensor:
    """The separator's query: one multi-hot row per slot over the 18 classes, silence = all-zero row."""
    rows = torch.zeros(len(names), len(LABELS))
    for k, name in enumerate(names):
        if name != SILENCE:
            rows[k, LABEL_INDEX[name]] = 1.0
    return rows


def _brute_force_class_aware(est, ref, names):
    """Min over all permutations that keep silent slots in place and only swap equal non-silent labels."""
    best = (math.inf, None)
    for p in PERMS:
        if any(names[i] == SILENCE and p[i] != i or names[p[i]] != names[i] for i in range(N)):
            continue
        cost = sum(0.0 if names[i] == SILENCE else -_snr_db(est[p[i]], ref[i]) for i in range(N)) / N
        best = min(best, (cost, p), key=lambda x: x[0])
    return best


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_tagger_loss_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(8, N, len(TAGGER_CLASSES), generator=g)
    targets = torch.randint(0, len(TAGGER_CLASSES), (8, N), generator=g)
    targets[:2, 2] = LABEL_INDEX[SILENCE]
    loss, perm = tagger_pit_loss(logits, targets)
    per_sample = []
    for b in range(8):
        costs = [sum(float(F.cross_entropy(logits[b, p[i]], targets[b, i])) for i in range(N)) / N for p in PERMS]
        per_sample.append(min(costs))
        # slots with equal targets tie, so check the chosen permutation by its cost (and exactly when unique)
        assert costs[PERMS.index(tuple(perm[b].tolist()))] == pytest.approx(min(costs), abs=1e-6)
        if len(set(targets[b].tolist())) == N:
            assert tuple(perm[b].tolist()) == PERMS[costs.index(min(costs))]
    assert loss.item() == pytest.approx(sum(per_sample) / 8, abs=1e-5)


def test_tagger_loss_ignores_slot_order_and_trains():
    targets = torch.tensor([[LABEL_INDEX["Speech"], LABEL_INDEX["Cough"], LABEL_INDEX[SILENCE]]])
    logits = 5.0 * F.one_hot(targets[:, [2, 0, 1]], len(TAGGER_CLASSES)).float()  # right classes, rotated slots
    loss, perm = tagger_pit_loss(logits, targets)
    assert perm.tolist() == [[1, 2, 0]]
    assert loss.item() == pytest.approx(float(F.cross_entropy(logits[0, [1, 2, 0]], targets[0])), abs=1e-6)
    logits = torch.zeros(1, N, len(TAGGER_CLASSES), requires_grad=True)
    before, _ = tagger_pit_loss(logits, targets)
    before.backward()
    after, _ = tagger_pit_loss((logits - logits.grad).detach(), targets)
    assert before.item() == pytest.approx(math.log(len(TAGGER_CLASSES)), abs=1e-6)
    assert after.item() < before.item()


LABEL_SETS = [
    ["Speech", "Speech", "Cough"],
    ["Speech", "Speech", "Speech"],
    ["Dishes", "silence", "Dishes"],
    ["Speech", "Cough", "Pour"],
    ["silence", "silence", "Buzzer"],
]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_aware_loss_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    batch = len(LABEL_SETS)
    ref = torch.randn(batch, N, 400, generator=g)
    # estimates close to a random other slot, so cross-slot pairings are often the better ones
    est = ref[:, torch.randperm(N, generator=g)] + 0.5 * torch.randn(batch, N, 400, generator=g)
    labels = torch.stack([_label_rows(names) for names in LABEL_SETS])
    loss, perm = class_aware_pit_loss(est, ref, labels)
    costs = []
    for b, names in enumerate(LABEL_SETS):
        cost, best = _brute_force_class_aware(est[b], ref[b], names)
        costs.append(cost)
        assert tuple(perm[b].tolist()) == best, names
    assert loss.item() == pytest.approx(sum(costs) / batch, abs=1e-4)


def test_cross_label_swap_is_forbidden_even_when_better():
    g = torch.Generator().manual_seed(5)
    ref = torch.randn(1, N, 400, generator=g)
    est = ref[:, [1, 0, 2]] + 0.01 * torch.randn(1, N, 400, generator=g)  # outputs 0 and 1 swapped, nearly exact
    different = _label_rows(["Speech", "Cough", "Pour"])[None]
    loss, perm = class_aware_pit_loss(est, ref, different)
    identity = -sum(_snr_db(est[0, i], ref[0, i]) for i in range(N)) / N
    assert perm.tolist() == [[0, 1, 2]]
    assert loss.item() == pytest.approx(identity, abs=1e-4)
    same = _label_rows(["Speech", "Speech", "Pour"])[None]
    swapped_loss, swapped = class_aware_pit_loss(est, ref, same)
    assert swapped.tolist() == [[1, 0, 2]]
    assert float(swapped_loss) < loss.item() - 10.0


def test_silent_slots_score_zero_and_get_no_gradient():
    g = torch.Generator().manual_seed(7)
    ref = torch.randn(1, N, 400, generator=g)
    ref[0, 2] = 0.0
    est = (ref + 0.1 * torch.randn(1, N, 400, generator=g)).requires_grad_(True)
    labels = _label_rows(["Speech", "Speech", "silence"])[None]
    loss, perm = class_aware_pit_loss(est, ref, labels)
    active = -sum(_snr_db(est[0, i].detach(), ref[0, i]) for i in range(2)) / N  # mean over all 3 slots
    assert perm.tolist() == [[0, 1, 2]]
    assert loss.item() == pytest.approx(active, abs=1e-4)
    garbage = est.detach().clone()
    garbage[0, 2] = 100.0 * torch.randn(400, generator=g)
    assert float(class_aware_pit_loss(garbage, ref, labels)[0]) == pytest.approx(loss.item(), abs=1e-6)
    loss.backward()
    assert torch.count_nonzero(est.grad[0, 2]) == 0 and torch.count_nonzero(est.grad[0, :2]) > 0
    stepped, _ = class_aware_pit_loss((est - 1e-3 * est.grad).detach(), ref, labels)
    assert stepped.item() < loss.item()


def test_extra_axes_are_averaged_like_the_baseline():
    g = torch.Generator().manual_seed(9)
    ref = torch.randn(2, N, 2, 300, generator=g)
    est = ref + 0.3 * torch.randn(2, N, 2, 300, generator=g)
    labels = torch.stack([_label_rows(["Speech", "Speech", "Cough"])] * 2)
    loss, perm = class_aware_pit_loss(est, ref, labels)
    per_channel = [class_aware_pit_loss(est[:, :, c], ref[:, :, c], labels) for c in range(2)]
    # the identity wins everywhere here, so the per-channel losses average to the full loss
    assert all(p.tolist() == [[0, 1, 2]] * 2 for p in [perm] + [p for _, p in per_channel])
    assert loss.item() == pytest.approx(sum(float(c) for c, _ in per_channel) / 2, abs=1e-5)
