"""A method is one record in `methods` and its JAX functions: everything else (the step's
hyperparameters, the config defaults and check, the predictions manifest, the report) derives
from the record. Proved on a method registered at run time (`tests/toy_method.py`) with a
hyperparameter, a loss and a batch transform that no built-in method has."""

from __future__ import annotations

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softlabel_ood import methods, reproduce
from softlabel_ood.analysis import report_tables
from softlabel_ood.analysis.results import RunInfo
from softlabel_ood.configs import config_validation, grid
from softlabel_ood.training import method_losses, run_model, runs_axis, train_step
from softlabel_ood.workdir import predictions, saved_runs
from tests import toy_method
from tests.train_helpers import one_step_program, run_module, tiny_digits_config


@pytest.fixture
def toy(monkeypatch):
    toy_method.install(monkeypatch.setitem)
    toy_method.traced.clear()


def test_the_record_makes_the_config_field_its_rule_and_its_step_argument(toy):
    config = tiny_digits_config("toy")
    assert config.toy.gain == 0.2  # the record's default, for the method that reads it
    assert tiny_digits_config("ce").toy.gain == 0.0  # strict: neutral for the others
    config_validation.check(config)
    assert "a number in (0, 1)" in config_validation.fields()["toy.gain"].allowed
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(config_validation.ConfigError, match=r"config\.toy\.gain"):
            config_validation.check(tiny_digits_config("toy", **{"toy.gain": bad}))
    # Its record says nothing of what the toy trains at its neutral value: nor does the refusal.
    with pytest.raises(config_validation.ConfigError) as refused:
        config_validation.check(tiny_digits_config("toy", **{"toy.gain": 0.0}))
    assert str(refused.value) == ("config.toy.gain: 0.0 is not allowed for method toy; expected "
                                  "a number in (0, 1)")
    with pytest.raises(config_validation.ConfigError,
                       match=r"config\.toy\.gain: 0\.3 is ignored by method ce \(read by toy"):
        config_validation.check(tiny_digits_config("ce", **{"toy.gain": 0.3}))
    hp = run_model.hyperparams(tiny_digits_config("toy", **{"toy.gain": 0.35}),
                               num_train_examples=256)
    assert hp.method_values["toy.gain"] == np.float32(0.35)
    assert hp.method_values["label_smoothing"] == 0.0  # not read: neutral
    step_config = run_model.step_config(config)
    assert (step_config.loss, step_config.transform) == ("toward_class_zero", "toy_noise")
    # A sweep of the gain is one population: one compiled program, the gain an argument.
    keys = {run_model.population_key(tiny_digits_config("toy", **{"toy.gain": g}))
            for g in (0.1, 0.6)}
    assert len(keys) == 1
    assert keys.isdisjoint({run_model.population_key(tiny_digits_config("ce"))})


def test_the_step_applies_the_transform_with_its_own_key_and_the_loss_to_its_targets(toy):
    """One step of the toy method against the same step computed by hand: the transform's key
    is fold_in(fold_in(key(seed), step), TRANSFORM_STREAM), its noise reaches the model, and the
    loss sees the one-hot targets."""
    from tests.test_train_step import learnable_batch, make_state, tiny_model
    mesh = runs_axis.data_mesh(jax.devices()[:1])
    config = train_step.StepConfig.for_method("toy", num_classes=4, mean=(0.5,), std=(0.25,),
                                              augment=False)
    model = tiny_model()
    state = make_state(mesh, model=model, seed=3, config=config)
    hp = train_step.Hyperparams.create(seed=3, learning_rate=0.1, total_steps=10,
                                       method_values={"toy.gain": 0.4})
    batch = learnable_batch(mesh)
    _, metrics = one_step_program(model, config, mesh)(state, hp, batch, None)

    key = jax.random.fold_in(jax.random.key(3), 0)
    dropout_key, _ = jax.random.split(key)
    x = (batch["image"].astype(jnp.float32) / 255 - 0.5) / 0.25
    x = x + 0.4 * jax.random.normal(jax.random.fold_in(key, train_step.TRANSFORM_STREAM),
                                    x.shape, jnp.float32)
    logits, _ = model.apply(state.variables, x, train=True, mutable=["batch_stats"],
                            rngs={"dropout": dropout_key})
    labels = np.asarray(batch["label"])
    log_p = np.asarray(jax.nn.log_softmax(logits), np.float64)
    target = 0.6 * np.eye(4)[labels] + 0.4 * np.eye(4)[np.zeros_like(labels)]
    expected = float(np.mean(-(target * log_p).sum(-1)))
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)
    assert {kind for kind, _ in toy_method.traced} == {"loss", "transform"}


def test_a_registered_method_trains_beside_ce_and_is_recorded_and_reported(toy, tmp_path):
    config = tiny_digits_config()
    config.num_epochs = 1
    config.grid.seeds = (0,)
    config.grid.runs = [grid.run_spec("ce", "ce"),
                        grid.run_spec("toy_a", "toy", **{"toy.gain": 0.2}),
                        grid.run_spec("toy_b", "toy", **{"toy.gain": 0.4})]
    config.grid.workers = 1  # in this process, where the toy method is registered
    config.grid.max_population = 3
    planned = reproduce.planned_runs(config, tmp_path)
    cut, _ = reproduce.cut_grid(config, str(tmp_path), planned)
    populations = [[planned[i][0].run for i in population] for population in cut]
    assert ["toy_a_seed0", "toy_b_seed0"] in populations  # the sweep: one population
    reproduce.run_grid(config, str(tmp_path))

    runs = tmp_path / "runs"
    for run, gain in (("toy_a_seed0", 0.2), ("toy_b_seed0", 0.4)):
        assert saved_runs.is_finished(runs / run)
        manifest = predictions.read_manifest(runs / run / "predictions")
        assert (manifest["run"]["method"], manifest["run"]["toy_gain"]) == ("toy", gain)
        assert manifest["run"]["alpha"] == 0.0
    ce_run = predictions.read_manifest(runs / "ce_seed0" / "predictions")["run"]
    assert ce_run["toy_gain"] == 0.0  # strict: recorded at its neutral value
    text = (tmp_path / "report" / "report.md").read_text()
    # The runs table's strength column is named by the record's symbol.
    assert "| run | method | g | teacher |" in text
    assert "| `toy_a` | toy | 0.2 |" in text
    assert "| `ce` | ce |  |" in text
    # Beside another method's strength (α of ls), each cell names its own.
    toy_run, ls_run = (RunInfo(run=f"{m}_seed0", name=m, seed=0, method=m, alpha=0.3)
                       for m in ("toy", "ls"))
    table = report_tables.runs_markdown([toy_run, ls_run])
    assert "| run | method | strength |" in table
    assert "| `toy` | toy | g = 0.3 |" in table
    assert "| `ls` | ls | α = 0.3 |" in table
    runs_json = json.loads((tmp_path / "report" / "runs.json").read_text())
    assert {r["run"]: r["alpha"] for r in runs_json["runs"]}["toy_b_seed0"] == 0.4


def test_a_bad_value_of_a_registered_hyperparameter_is_exit_2_in_one_line(tmp_path):
    config_file = tmp_path / "toy_config.py"
    config_file.write_text(textwrap.dedent("""
        import operator
        from tests import toy_method
        from tests.train_helpers import tiny_digits_config

        def get_config():
            toy_method.install(operator.setitem)
            return tiny_digits_config("toy")
    """))
    workdir = tmp_path / "run"
    result = run_module("softlabel_ood.train", f"--config={config_file}", f"--workdir={workdir}",
                        "--config.toy.gain=1.5")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: config.toy.gain: 1.5 is not allowed; expected a number in (0, 1) "
                     "(the mass moved from the target to class 0, and the noise added to the "
                     "images), or 0 for a method that does not read it"], result.stderr
    assert not workdir.exists() or not any(workdir.iterdir())


def test_a_method_without_its_loss_or_transform_is_refused_at_the_step(monkeypatch):
    monkeypatch.setitem(methods.BY_NAME, "toy", methods.Method("toy", "no loss", loss="missing"))
    with pytest.raises(ValueError, match="loss 'missing'"):
        train_step.StepConfig.for_method("toy", num_classes=2, mean=(0.5,), std=(0.25,))
    monkeypatch.setitem(methods.BY_NAME, "toy", methods.Method(
        "toy", "no transform", loss="cross_entropy", transform="missing"))
    with pytest.raises(ValueError, match="transform 'missing'"):
        train_step.StepConfig.for_method("toy", num_classes=2, mean=(0.5,), std=(0.25,))


def test_register_refuses_a_second_record_for_one_field():
    other = methods.Hyperparameter("label_smoothing", "another α", default=0.1, neutral=0.0,
                                   allowed="a number in (0, 1)", ok=lambda v: 0 < v < 1)
    with pytest.raises(ValueError, match="hyperparameter 'label_smoothing' differs"):
        methods.register(methods.Method("ls2", "x", loss="cross_entropy",
                                        hyperparameters=(other,)))
    with pytest.raises(ValueError, match="already registered"):
        methods.register(methods.BY_NAME["ce"])
    assert "ls2" not in methods.BY_NAME


def test_every_method_names_a_loss_and_every_field_it_reads_is_a_config_field():
    for method in methods.BY_NAME.values():
        assert method.loss in method_losses.LOSSES, method.name
        for field in method.reads:
            assert field in config_validation.fields(), (method.name, field)


def test_a_checkpoint_of_a_version_before_a_method_resumes_unless_its_run_reads_it(toy, tmp_path):
    """The toy record arrived after the run's config.json was written: a ce run, which does not
    read toy.gain, resumes; a run of the toy method, or a value other than the stored one, not."""
    from softlabel_ood.training import run_start
    from softlabel_ood.workdir import run_dir

    def stored(config, workdir):
        data = saved_runs.config_to_dict(config)
        del data["toy"]  # as an earlier version wrote it
        (workdir / run_dir.CHECKPOINTS / "4").mkdir(parents=True)
        (workdir / run_dir.CONFIG).write_text(json.dumps(data))
        return workdir

    ce = stored(tiny_digits_config("ce"), tmp_path / "ce")
    run_start.check_resumable(tiny_digits_config("ce"), ce)
    with pytest.raises(config_validation.ConfigError, match="other values of learning_rate"):
        run_start.check_resumable(tiny_digits_config("ce", learning_rate=0.5), ce)
    toy_run = stored(tiny_digits_config("toy"), tmp_path / "toy")
    with pytest.raises(config_validation.ConfigError, match="other values of toy; use a new"):
        run_start.check_resumable(tiny_digits_config("toy"), toy_run)
