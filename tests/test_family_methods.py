"""The soft-label family's methods (DESIGN.md §7): each batch transform and loss against an
independent numpy transcription of its paper's definition on small hand-made cases, each loss's
gradient against its analytic form, their config fields' rules in every config family, and
short real trainings on digits (a sweep of a method's strength is one compiled program, its runs
trained together equal to each trained alone, and a killed run resumes bitwise)."""

from __future__ import annotations

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from softlabel_ood import configs, methods, train
from softlabel_ood.configs import config_validation
from softlabel_ood.data import run_data
from softlabel_ood.training import (
    batch_transforms,
    checkpointing,
    method_losses,
    run_start,
    runs_axis,
    train_loop,
    train_step,
)
from tests.train_helpers import refusal, tiny_digits_config

# method -> (its strength's config field, a stronger value than the default for a sweep)
FAMILY = {
    "mixup": ("mixup.alpha", 0.4),
    "cutmix": ("cutmix.alpha", 2.0),
    "logitnorm": ("logitnorm.temperature", 0.01),
    "focal": ("focal.gamma", 5.0),
    "confidence_penalty": ("confidence_penalty.beta", 0.5),
}


def hyperparams(**method_values) -> train_step.Hyperparams:
    return train_step.Hyperparams.create(seed=0, learning_rate=0.1, total_steps=1,
                                         method_values=method_values)


# ---- batch transforms against numpy


def _batch(batch=4, height=3, width=5, classes=3):
    """Distinct pixels per image, and one-hot targets."""
    images = np.arange(batch * height * width * 2, dtype=np.float32).reshape(
        batch, height, width, 2) / 10
    labels = np.arange(batch) % classes
    return images, np.eye(classes, dtype=np.float32)[labels]


def test_mixup_mixes_each_image_and_target_with_its_partner_by_one_lambda():
    images, targets = _batch()
    key = jax.random.key(7)
    out_images, out_targets = batch_transforms.mixup(key, hyperparams(**{"mixup.alpha": 0.2}),
                                                     jnp.asarray(images), jnp.asarray(targets))
    partner, lam = map(np.asarray, batch_transforms.mixup_draws(key, jnp.float32(0.2), 4))
    assert sorted(partner) == [0, 1, 2, 3]
    assert list(partner) != [0, 1, 2, 3]  # a case where the mixing shows
    assert 0 < lam < 1
    lam = np.float64(lam)
    np.testing.assert_allclose(out_images, lam * images + (1 - lam) * images[partner], rtol=1e-6)
    np.testing.assert_allclose(out_targets, lam * targets + (1 - lam) * targets[partner],
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out_targets).sum(-1), 1.0, rtol=1e-6)


def test_mixup_lambda_follows_beta_a_a():
    """Mean 1/2 and variance 1/(4(2a + 1)) of Beta(a, a), over 4000 batches' draws."""
    keys = jax.random.split(jax.random.key(0), 4000)
    for a in (0.2, 1.0):
        lams = np.asarray(jax.jit(jax.vmap(lambda k, a=a: batch_transforms.mixup_draws(
            k, jnp.float32(a), 8)[1]))(keys), np.float64)
        assert abs(lams.mean() - 0.5) < 0.02, a
        assert abs(lams.var() - 1 / (4 * (2 * a + 1))) < 0.01, a


def rand_bbox(height, width, lam, row, column):
    """Yun et al.'s rand_bbox, transcribed: (row slice, column slice) of the pasted box."""
    cut_rat = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut_rat), int(width * cut_rat)
    rows = slice(np.clip(row - cut_h // 2, 0, height), np.clip(row + cut_h // 2, 0, height))
    columns = slice(np.clip(column - cut_w // 2, 0, width),
                    np.clip(column + cut_w // 2, 0, width))
    return rows, columns


_CUTMIX = jax.jit(batch_transforms.cutmix)
_CUTMIX_DRAWS = jax.jit(batch_transforms.cutmix_draws, static_argnums=(3, 4, 5))


def _cutmix(seed, prob, images, targets, alpha=1.0):
    key = jax.random.key(seed)
    hp = hyperparams(**{"cutmix.alpha": alpha, "cutmix.prob": prob})
    out = _CUTMIX(key, hp, jnp.asarray(images), jnp.asarray(targets))
    draws = _CUTMIX_DRAWS(key, jnp.float32(alpha), jnp.float32(prob), *images.shape[:3])
    return [np.asarray(x) for x in out], draws


def test_cutmix_pastes_a_box_of_the_partner_and_mixes_the_target_by_the_area_kept():
    images, targets = _batch(batch=5, height=6, width=8, classes=4)  # H != W: no axis swapped
    clipped = 0
    for seed in range(12):
        (out_images, out_targets), draws = _cutmix(seed, 1.0, images, targets)
        partner, lam = np.asarray(draws.partner), np.float64(draws.lam)
        assert bool(draws.mixes)  # prob = 1: every batch
        rows, columns = rand_bbox(6, 8, lam, int(draws.row), int(draws.column))
        mask = np.zeros((6, 8), bool)
        mask[rows, columns] = True
        expected = images.copy()
        expected[:, rows, columns] = images[partner][:, rows, columns]
        np.testing.assert_array_equal(out_images, expected)  # pasted pixels, bit for bit
        kept = 1 - mask.sum() / (6 * 8)
        np.testing.assert_allclose(out_targets, kept * targets + (1 - kept) * targets[partner],
                                   rtol=1e-6, atol=1e-7)
        cut_h = int(6 * np.sqrt(1 - lam))
        clipped += mask.sum() < (cut_h // 2 * 2) * (int(8 * np.sqrt(1 - lam)) // 2 * 2)
    assert clipped  # some boxes crossed the border and were cut there


def test_cutmix_prob_0_leaves_every_batch_and_prob_1_mixes_every_batch():
    images, targets = _batch(batch=4, height=6, width=6)
    mixed = 0
    for seed in range(10):
        (out_images, out_targets), draws = _cutmix(seed, 0.0, images, targets)
        assert not bool(draws.mixes)
        np.testing.assert_array_equal(out_images, images)
        np.testing.assert_array_equal(out_targets, targets)
        (out_images, _), draws = _cutmix(seed, 1.0, images, targets)
        assert bool(draws.mixes)
        mixed += not np.array_equal(out_images, images)
    assert mixed >= 5  # a box may be empty (λ near 1), rarely
    keys = jax.random.split(jax.random.key(1), 2000)
    share = np.mean(jax.jit(jax.vmap(lambda k: batch_transforms.cutmix_draws(
        k, jnp.float32(1.0), jnp.float32(0.5), 4, 6, 6).mixes))(keys))
    assert abs(share - 0.5) < 0.04


# ---- losses and their gradients against numpy (float64)

LOGITS = np.array([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, -0.3, 0.05], [-3.0, 4.0, 1.0, 2.5]])
LABELS = np.array([0, 2, 1])


def _loss_and_grad(name, method_values, logits=LOGITS, labels=LABELS):
    """The batch loss `name` and its jax.grad with respect to the logits."""
    inputs = method_losses.LossInputs(jnp.asarray(labels), jax.nn.one_hot(labels, logits.shape[1]),
                                      None, None)
    hp = hyperparams(**method_values)
    value, grad = jax.value_and_grad(lambda z: method_losses.LOSSES[name](hp, z, inputs))(
        jnp.asarray(logits, jnp.float32))
    return float(value), np.asarray(grad, np.float64)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _log_softmax(z):
    shifted = z - z.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.mark.parametrize("tau", [0.04, 0.01, 1.0])
def test_logitnorm_loss_and_gradient(tau):
    """L = CE(u, y), u = z/(τn + ε), n = ‖z‖; with g = softmax(u) − e_y,
    ∂L/∂z = g/(τn + ε) − τ·z·(zᵀg)/(n·(τn + ε)²), per example, over the batch's mean."""
    value, grad = _loss_and_grad("logit_norm", {"logitnorm.temperature": tau})
    n = np.linalg.norm(LOGITS, axis=-1, keepdims=True)
    divisor = tau * n + 1e-7
    u = LOGITS / divisor
    assert value == pytest.approx(np.mean(-_log_softmax(u)[np.arange(3), LABELS]), rel=1e-5)
    g = _softmax(u) - np.eye(4)[LABELS]
    expected = g / divisor - tau * LOGITS * (LOGITS * g).sum(-1, keepdims=True) / (n * divisor**2)
    np.testing.assert_allclose(grad, expected / 3, rtol=1e-4, atol=1e-6)


def test_logitnorm_of_zero_logits_is_log_k_with_a_finite_gradient():
    value, grad = _loss_and_grad("logit_norm", {"logitnorm.temperature": 0.04},
                                 logits=np.zeros((1, 4)), labels=np.array([2]))
    assert value == pytest.approx(math.log(4), rel=1e-6)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("gamma", [3.0, 0.5, 0.0])
def test_focal_loss_and_gradient(gamma):
    """L = −(1 − p_y)^γ·log p_y; ∂L/∂z_j = [γ(1 − p_y)^(γ−1)·p_y·log p_y − (1 − p_y)^γ]·
    (δ_jy − p_j), per example, over the batch's mean."""
    value, grad = _loss_and_grad("focal", {"focal.gamma": gamma})
    p = _softmax(LOGITS)
    p_y = p[np.arange(3), LABELS]
    assert value == pytest.approx(np.mean(-(1 - p_y) ** gamma * np.log(p_y)), rel=1e-5)
    factor = gamma * (1 - p_y) ** (gamma - 1) * p_y * np.log(p_y) - (1 - p_y) ** gamma
    expected = factor[:, None] * (np.eye(4)[LABELS] - p)
    np.testing.assert_allclose(grad, expected / 3, rtol=1e-4, atol=1e-6)
    if gamma == 0:  # cross-entropy
        ce, ce_grad = _loss_and_grad("cross_entropy", {})
        assert value == pytest.approx(ce, rel=1e-6)
        np.testing.assert_allclose(grad, ce_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 3.0])
def test_focal_gradient_is_finite_where_p_y_rounds_to_1(gamma):
    value, grad = _loss_and_grad("focal", {"focal.gamma": gamma},
                                 logits=np.array([[200.0, 0.0, 0.0]]), labels=np.array([0]))
    assert value == 0.0
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("beta", [0.1, 1.0, 0.0])
def test_confidence_penalty_loss_and_gradient(beta):
    """L = CE(z, y) − β·H(p), p = softmax(z); ∂L/∂z = (p − e_y) + β·p⊙(log p + H), per example,
    over the batch's mean."""
    value, grad = _loss_and_grad("confidence_penalty", {"confidence_penalty.beta": beta})
    p, log_p = _softmax(LOGITS), _log_softmax(LOGITS)
    entropy = -(p * log_p).sum(-1)
    expected_value = np.mean(-log_p[np.arange(3), LABELS] - beta * entropy)
    assert value == pytest.approx(expected_value, rel=1e-5)
    expected = (p - np.eye(4)[LABELS]) + beta * p * (log_p + entropy[:, None])
    np.testing.assert_allclose(grad, expected / 3, rtol=1e-4, atol=1e-6)


# ---- config fields: defaults, rules, every family


def test_each_method_reads_its_fields_at_their_defaults_and_others_hold_them_neutral():
    for method, (field, _) in FAMILY.items():
        h = methods.hyperparameters()[field]
        config = tiny_digits_config(method)
        assert methods.strength(method) is h
        assert _value(config, field) == h.default
        assert _value(tiny_digits_config("ce"), field) == h.neutral  # strict: neutral elsewhere
        assert h.label != methods.LABEL_SMOOTHING.label  # tables tell it from ls's α
        config_validation.check(config)


def _value(config, field):
    for part in field.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("family", configs.FAMILIES)
def test_every_method_loads_and_validates_in_every_config_family(family):
    module = importlib.import_module(f"softlabel_ood.configs.{family}")
    for method, (field, _) in FAMILY.items():
        config = module.get_config(method)
        assert config.method == method
        assert _value(config, field) == methods.hyperparameters()[field].default
        config_validation.check(config)


# (method, overrides, the refusal's line after "error: ")
BAD_VALUES = [
    ("mixup", {"mixup.alpha": 0.0},
     "config.mixup.alpha: 0.0 is not allowed for method mixup: at its neutral value no two "
     "images are mixed (Beta(a, a) puts λ at 0 or 1 as a -> 0); expected a number > 0"),
    ("mixup", {"mixup.alpha": -0.5}, "config.mixup.alpha: -0.5 is not allowed; expected a number "
                                     "> 0 (a of mixup"),
    ("mixup", {"mixup.alpha": math.nan}, "config.mixup.alpha: nan is not allowed"),
    ("ce", {"mixup.alpha": 0.2},
     "config.mixup.alpha: 0.2 is ignored by method ce (read by mixup only; leave it 0.0)"),
    ("ls", {"mixup.alpha": 0.2, "label_smoothing": 0.1},
     "config.mixup.alpha: 0.2 is ignored by method ls"),
    ("cutmix", {"cutmix.alpha": 0.0},
     "config.cutmix.alpha: 0.0 is not allowed for method cutmix; expected a number > 0"),
    ("cutmix", {"cutmix.alpha": -1.0}, "config.cutmix.alpha: -1.0 is not allowed"),
    ("cutmix", {"cutmix.alpha": math.nan}, "config.cutmix.alpha: nan is not allowed"),
    ("cutmix", {"cutmix.prob": -0.1}, "config.cutmix.prob: -0.1 is not allowed; expected a "
                                      "number in [0, 1] (the probability that CutMix mixes"),
    ("cutmix", {"cutmix.prob": 1.5}, "config.cutmix.prob: 1.5 is not allowed"),
    ("cutmix", {"cutmix.prob": math.nan}, "config.cutmix.prob: nan is not allowed"),
    ("ce", {"cutmix.prob": 0.5},
     "config.cutmix.prob: 0.5 is ignored by method ce (read by cutmix only; leave it 0.0)"),
    ("mixup", {"cutmix.alpha": 1.0}, "config.cutmix.alpha: 1.0 is ignored by method mixup"),
    ("logitnorm", {"logitnorm.temperature": 0.0},
     "config.logitnorm.temperature: 0.0 is not allowed for method logitnorm; expected a number "
     "> 0"),
    ("logitnorm", {"logitnorm.temperature": -0.04},
     "config.logitnorm.temperature: -0.04 is not allowed; expected a number > 0 (τ of LogitNorm"),
    ("logitnorm", {"logitnorm.temperature": math.nan},
     "config.logitnorm.temperature: nan is not allowed"),
    ("ce", {"logitnorm.temperature": 0.04},
     "config.logitnorm.temperature: 0.04 is ignored by method ce (read by logitnorm only"),
    ("focal", {"focal.gamma": -1.0}, "config.focal.gamma: -1.0 is not allowed; expected a "
                                     "number >= 0 (γ of the focal loss"),
    ("focal", {"focal.gamma": math.nan}, "config.focal.gamma: nan is not allowed"),
    ("focal", {"focal.gamma": math.inf}, "config.focal.gamma: inf is not allowed"),
    ("ce", {"focal.gamma": 3.0},
     "config.focal.gamma: 3.0 is ignored by method ce (read by focal only; leave it 0.0)"),
    ("confidence_penalty", {"confidence_penalty.beta": -0.1},
     "config.confidence_penalty.beta: -0.1 is not allowed; expected a number >= 0 (β of the "
     "confidence penalty"),
    ("confidence_penalty", {"confidence_penalty.beta": math.nan},
     "config.confidence_penalty.beta: nan is not allowed"),
    ("focal", {"confidence_penalty.beta": 0.1},
     "config.confidence_penalty.beta: 0.1 is ignored by method focal (read by "
     "confidence_penalty only; leave it 0.0)"),
]


@pytest.mark.parametrize(("method", "overrides", "message"), BAD_VALUES,
                         ids=[f"{m}-{','.join(f'{k}={v}' for k, v in o.items())}"
                              for m, o, _ in BAD_VALUES])
def test_a_bad_value_is_exit_2_in_one_line_naming_the_field_and_nothing_is_written(
        method, overrides, message, tmp_path, capsys):
    config = tiny_digits_config(method, **overrides)
    workdir = tmp_path / "run"
    line = refusal(capsys, lambda: train.train_and_evaluate(config, str(workdir)))
    assert line.startswith(f"error: {message}"), line
    assert not workdir.exists()


# ---- short real trainings on digits


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def _counted(mapping, name, monkeypatch, counts):
    function = mapping[name]

    def counting(*args):
        counts[name] = counts.get(name, 0) + 1
        return function(*args)

    monkeypatch.setitem(mapping, name, counting)


@pytest.mark.parametrize("method", list(FAMILY))
def test_a_sweep_is_one_program_and_its_runs_together_equal_each_alone(method, tmp_path,
                                                                       monkeypatch):
    field, stronger = FAMILY[method]
    record = methods.get(method)
    counts = {}  # traces of the method's loss and transform into programs
    _counted(method_losses.LOSSES, record.loss, monkeypatch, counts)
    if record.transform:
        _counted(batch_transforms.TRANSFORMS, record.transform, monkeypatch, counts)
    train_step.make_train_program.cache_clear()  # programs built with the counting functions
    configs_ = [tiny_digits_config(method, seed=0, num_epochs=1),
                tiny_digits_config(method, seed=1, num_epochs=1, **{field: stronger})]
    data = run_data.load_training(configs_[0])
    mesh = runs_axis.data_mesh()
    members = [run_start.Member(c, epath.Path(tmp_path) / f"pop{i}")
               for i, c in enumerate(configs_)]
    together = train_loop.train_population(members, data, mesh)
    traced_together = dict(counts)  # the two runs' steps, unrolled in one program
    assert set(traced_together.values()) == {2}, traced_together
    alone = [train_loop.train(c, tmp_path / f"alone{i}", data, mesh)
             for i, c in enumerate(configs_)]
    # Alone, both strengths run one program (R = 1), traced once: the strength is an argument.
    assert {k: v - traced_together[k] for k, v in counts.items()} == \
        dict.fromkeys(traced_together, 1)
    for a, b in zip(alone, together, strict=True):
        assert int(a.step) == int(b.step) == 8
        for x, y in zip(_leaves(a), _leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)
    # The two strengths (and seeds) trained two different models.
    assert not np.array_equal(_leaves(together[0])[1], _leaves(together[1])[1])


class _Killed(Exception):
    pass


def test_a_killed_population_of_a_transform_method_resumes_bitwise(tmp_path, monkeypatch):
    configs_ = [tiny_digits_config("mixup", seed=0),
                tiny_digits_config("mixup", seed=0, **{"mixup.alpha": 0.4})]
    data = run_data.load_training(configs_[0])
    mesh = runs_axis.data_mesh()

    def members(root):
        return [run_start.Member(c, epath.Path(root) / f"run{i}") for i, c in enumerate(configs_)]

    whole = train_loop.train_population(members(tmp_path / "whole"), data, mesh)
    saves = []
    original = checkpointing.Checkpoints.save

    def save_then_die(self, state):
        original(self, state)
        saves.append(self.directory)
        if len(saves) == 2 * 2:  # step 8 saved by both runs: the next steps draw anew
            raise _Killed

    monkeypatch.setattr(checkpointing.Checkpoints, "save", save_then_die)
    with pytest.raises(_Killed):
        train_loop.train_population(members(tmp_path / "resumed"), data, mesh)
    monkeypatch.undo()
    assert checkpointing.Checkpoints(tmp_path / "resumed" / "run0" / "checkpoints",
                                     read_only=True).latest_step() == 8
    resumed = train_loop.train_population(members(tmp_path / "resumed"), data, mesh)
    for a, b in zip(whole, resumed, strict=True):
        assert int(a.step) == int(b.step) == 16
        for x, y in zip(_leaves(a), _leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)
