"""Every bad config value is refused before any data is loaded or any file written: exit code 2,
one line naming the field, the value and what is allowed (run in process; stderr compared)."""

from __future__ import annotations

import math

import pytest
from absl import flags
from ml_collections import config_flags

from softlabel_ood import command_line, configs, methods, train
from softlabel_ood.configs import config_validation
from softlabel_ood.training import optimizer
from softlabel_ood.workdir import lock as workdir_lock
from softlabel_ood.workdir import run_dir, saved_runs
from tests.train_helpers import REPO, refusal, tiny_digits_config

# (method, overrides, the refusal's line after "error: ")
BAD_CONFIGS = [
    ("ce", {"model": "vgg16"}, "config.model: 'vgg16' is not allowed; expected wrn<depth>_<width>"),
    ("ce", {"model": "wrn41_2"}, "config.model: 'wrn41_2' is not allowed"),
    ("ce", {"optimizer": "rmsprop"},
     "config.optimizer: 'rmsprop' is not allowed; expected one of sgd, adam, adamw"),
    ("ce", {"method": "no_such_method"},
     "config.method: 'no_such_method' is not allowed; expected one of ce, ls"),
    ("ce", {"compute_dtype": "float16"},
     "config.compute_dtype: 'float16' is not allowed; expected one of float32, bfloat16"),
    ("ce", {"batch_size": 0},
     "config.batch_size: 0 is not allowed; expected an integer in [1, 2147483647]"),
    ("ce", {"batch_size": -8}, "config.batch_size: -8 is not allowed"),
    ("ce", {"batch_size": 512},
     "config.batch_size: 512 is not allowed; expected at most config.num_train_examples = 256"),
    ("ce", {"eval_batch_size": 0}, "config.eval_batch_size: 0 is not allowed"),
    ("ce", {"num_epochs": 0},
     "config.num_epochs: 0 is not allowed; expected an integer in [1, 2147483647]"),
    ("ce", {"learning_rate": 0.0},
     "config.learning_rate: 0.0 is not allowed; expected a number > 0"),
    ("ce", {"learning_rate": math.inf}, "config.learning_rate: inf is not allowed"),
    ("ce", {"learning_rate": math.nan}, "config.learning_rate: nan is not allowed"),
    ("ls", {"label_smoothing": 1.0},
     "config.label_smoothing: 1.0 is not allowed; expected a number in (0, 1) (α of ls; the "
     "incorrect-class mass of kd_incorrect), or 0 for a method that does not read it"),
    ("ls", {"label_smoothing": -0.1}, "config.label_smoothing: -0.1 is not allowed"),
    ("ls", {"label_smoothing": math.nan}, "config.label_smoothing: nan is not allowed"),
    # α = 0 would train cross-entropy under another method's name.
    ("ls", {"label_smoothing": 0.0},
     "config.label_smoothing: 0.0 is not allowed for method ls: at its neutral value the "
     "method trains as one that does not read it; expected a number in (0, 1)"),
    ("kd_incorrect", {"kd.teacher_workdir": "/t", "label_smoothing": 0.0},
     "config.label_smoothing: 0.0 is not allowed for method kd_incorrect"),
    ("kd", {"kd.teacher_workdir": "/t", "kd.temperature": 0.0},
     "config.kd.temperature: 0.0 is not allowed; expected a number > 0"),
    ("kd", {"kd.teacher_workdir": "/t", "kd.weight": 1.5},
     "config.kd.weight: 1.5 is not allowed; expected a number in [0, 1]"),
    ("kd", {}, "config.kd.teacher_workdir: method kd needs a teacher"),
    ("oe", {"oe.weight": -1.0}, "config.oe.weight: -1.0 is not allowed; expected a number >= 0"),
    ("oe", {"oe.batch_size": 0}, "config.oe.batch_size: 0 is not allowed"),
    ("ce", {"dropout_rate": 1.0}, "config.dropout_rate: 1.0 is not allowed; expected a number in "
                                  "[0, 1)"),
    ("ce", {"momentum": -0.5}, "config.momentum: -0.5 is not allowed; expected a number >= 0"),
    ("ce", {"seed": -1}, "config.seed: -1 is not allowed; expected an integer in [0, 2147483647]"),
    ("ce", {"num_ood_examples": 0}, "config.num_ood_examples: 0 is not allowed"),
    ("ce", {"weight_decay": -1e-4}, "config.weight_decay: -0.0001 is not allowed"),
    ("ce", {"steps_per_call": -1}, "config.steps_per_call: -1 is not allowed"),
    ("ce", {"odin_pairs": ((1000.0, -0.1),)},
     "config.odin_pairs: ((1000.0, -0.1),) is not allowed; expected distinct (temperature > 0, "
     "epsilon >= 0) pairs"),
    ("ce", {"odin_selection": "best"},
     "config.odin_selection: 'best' is not allowed; expected id_train (the ε with the highest "
     "mean id_train ODIN score at the largest T) or fixed (T = 1000, ε = 0.0014, OpenOOD's "
     "default)"),
    ("ce", {"odin_selection": "fixed", "odin_pairs": ((1000.0, 0.001),)},
     "config.odin_selection: 'fixed' scores ODIN at (T, ε) = (1000.0, 0.0014), which "
     "config.odin_pairs lacks; add it there"),
    ("ce", {"dataset": "no_such_set"}, "config.dataset: unknown dataset 'no_such_set'; known: "),
    ("ce", {"ood_datasets": ("flower_patches", "svhm")},
     "config.ood_datasets: unknown dataset 'svhm'; known: cifar10"),
    ("ce", {"ood_datasets": ("digits", "gaussian")},
     "config.ood_datasets: ('digits', 'gaussian') is not allowed; expected OOD sets other than "
     "the ID dataset 'digits'"),
    # digits28 is digits upsampled: the ID test images themselves would be scored as OOD.
    ("ce", {"ood_datasets": ("digits28", "gaussian")},
     "config.ood_datasets: ('digits28', 'gaussian') is not allowed; expected OOD sets other "
     "than the ID dataset 'digits' and sets of its images ('digits28' shares them)"),
    ("oe", {"oe_dataset": "flower_patches"},
     "config.oe_dataset: 'flower_patches' is not allowed; expected an auxiliary set apart from "
     "the ID and OOD sets ('flower_patches' shares its images)"),
    ("oe", {"oe_dataset": "digits28"},
     "config.oe_dataset: 'digits28' is not allowed; expected an auxiliary set apart from the ID "
     "and OOD sets ('digits' shares its images)"),
    ("ce", {"dataset": "gaussian"}, "config.dataset: 'gaussian' is not allowed; expected a "
                                    "dataset name with class labels"),
    # Fields that the method ignores would be recorded with the run as if they had been used.
    ("ce", {"label_smoothing": 0.1},
     "config.label_smoothing: 0.1 is ignored by method ce (read by ls, kd_incorrect only"),
    ("ce", {"kd.teacher_workdir": "/t"},
     "config.kd.teacher_workdir: '/t' is ignored by method ce (read by kd, kd_incorrect only"),
    ("ls", {"oe.finetune_from": "/r", "label_smoothing": 0.1},
     "config.oe.finetune_from: '/r' is ignored by method ls (read by oe only; leave it '')"),
    # Upper bounds: int32 step numbers, counts and indices, and 1 GiB of 8x8x1 images (64 bytes
    # each) for a size that makes an array of them.
    *[("ce", {field: 10**12}, f"config.{field}: 1000000000000 is not allowed; expected an "
                              f"integer in [{low}, 2147483647]")
      for field, low in [("num_epochs", 1), ("batch_size", 1), ("eval_batch_size", 1),
                         ("num_ood_examples", 1), ("num_train_examples", 0),
                         ("checkpoint_every_steps", 1), ("log_every_steps", 1),
                         ("steps_per_call", 0)]],
    ("oe", {"oe.batch_size": 10**12}, "config.oe.batch_size: 1000000000000 is not allowed; "
                                      "expected an integer in [1, 2147483647]"),
    ("ce", {"eval_batch_size": 10**9}, "config.eval_batch_size: 1000000000 is not allowed; "
     "expected at most 16777216, so that an eval batch of 8x8x1 images takes at most 1 GiB "
     "(config_validation.MAX_IMAGE_BYTES)"),
    ("ce", {"num_ood_examples": 10**9}, "config.num_ood_examples: 1000000000 is not allowed; "
     "expected at most 16777216, so that an OOD set of 8x8x1 images takes at most 1 GiB"),
    ("oe", {"oe.batch_size": 10**9}, "config.oe.batch_size: 1000000000 is not allowed; "
     "expected at most 16777216, so that an outlier batch of 8x8x1 images takes at most 1 GiB"),
    # 2**30 / (64 bytes x (32 + 32) images a step) for oe.
    ("oe", {"steps_per_call": 10**6}, "config.steps_per_call: 1000000 is not allowed; expected "
     "at most 262144, so that a call's batches (64 images a step, when fed from the host) of "
     "8x8x1 images takes at most 1 GiB"),
    # 256 examples in batches of 32: 8 steps an epoch, so at most (2**31 - 1) // 8 epochs.
    ("ce", {"num_epochs": 10**9}, "config.num_epochs: 1000000000 is not allowed; expected at "
     "most 268435455: 8 steps an epoch (config.num_train_examples = 256), and the last step "
     "number is an int32"),
    # Groups name distinct OOD sets of the run.
    ("ce", {"ood_groups.near": ("svhm",)}, "config.ood_groups.near: unknown dataset 'svhm'; "
                                           "known: cifar10"),
    ("ce", {"ood_groups.near": ("digits",)},
     "config.ood_groups.near: names the ID dataset 'digits'; a group holds OOD sets"),
    ("ce", {"ood_groups.far": ("gaussian", "uniform")},
     "config.ood_groups.far: names 'uniform', which config.ood_datasets ('flower_patches', "
     "'gaussian') does not hold; add it there, or give the group the sets it averages "
     "(config.ood_groups.far=() removes it)"),
    ("ce", {"ood_groups.near": ("gaussian", "gaussian")},
     "config.ood_groups.near: names 'gaussian' twice"),
]


@pytest.mark.parametrize(("method", "overrides", "message"), BAD_CONFIGS,
                         ids=[f"{m}-{','.join(o)}" for m, o, _ in BAD_CONFIGS])
def test_train_refuses_a_bad_field_before_any_work(method, overrides, message, tmp_path, capsys):
    config = tiny_digits_config(method, **overrides)
    workdir = tmp_path / "run"
    line = refusal(capsys, lambda: train.train_and_evaluate(config, str(workdir)))
    assert line.startswith(f"error: {message}"), line
    assert not workdir.exists()  # nothing written, not even the directory


def test_a_batch_larger_than_the_training_set_is_refused_after_loading_without_writing(
        tmp_path, capsys):
    # The size of the training set is known once it is loaded (num_train_examples = 0: all).
    config = tiny_digits_config("ce", batch_size=4096, num_train_examples=0)
    workdir = tmp_path / "run"
    line = refusal(capsys, lambda: train.train_and_evaluate(config, str(workdir)))
    assert line.startswith("error: config.batch_size: 4096 is not allowed; expected at most the "
                           "1347 training examples of digits"), line
    assert not workdir.exists()


@pytest.mark.parametrize(("method", "overrides", "message"), [
    # 1347 // 32 = 42 steps an epoch once the whole training set is loaded.
    ("ce", {"num_epochs": 10**9}, "config.num_epochs: 1000000000 is not allowed; expected at "
     "most 51130563: 42 steps an epoch (1347 training examples of digits), and the last step "
     "number is an int32"),
    # Outliers are drawn as batches of a permutation of the set, which must hold one.
    ("oe", {"oe.batch_size": 20000}, "config.oe.batch_size: 20000 is not allowed; expected at "
     "most the 10000 images of china_patches"),
], ids=["num_epochs", "oe.batch_size"])
def test_sizes_that_the_loaded_data_bounds_are_refused_before_anything_is_written(
        method, overrides, message, tmp_path, capsys):
    config = tiny_digits_config(method, num_train_examples=0, **overrides)
    workdir = tmp_path / "run"
    assert refusal(capsys, lambda: train.train_and_evaluate(config, str(workdir))) == \
        f"error: {message}"
    assert not workdir.exists()


def test_predict_checks_the_bounds_of_what_it_may_change():
    config = tiny_digits_config("ce")
    config_validation.check_evaluation(config)
    config.eval_batch_size = 10**9
    with pytest.raises(config_validation.ConfigError, match=r"config.eval_batch_size: "
                       r"1000000000 is not allowed; expected at most 16777216, so that"):
        config_validation.check_evaluation(config)
    config = tiny_digits_config("ce", num_ood_examples=10**12)
    with pytest.raises(config_validation.ConfigError, match=r"expected an integer in \[1, "):
        config_validation.check_evaluation(config)
    config = tiny_digits_config("ce", ood_datasets=("digits28",))
    with pytest.raises(config_validation.ConfigError, match=r"\('digits28' shares them\)"):
        config_validation.check_evaluation(config)
    # predict neither reads nor stores groups: they may name sets it does not evaluate.
    config = tiny_digits_config("ce", **{"ood_groups.far": ("uniform",)})
    config_validation.check_evaluation(config)
    config.ood_groups.far = ("svhm",)
    with pytest.raises(config_validation.ConfigError, match=r"unknown dataset 'svhm'"):
        config_validation.check_evaluation(config)


def test_every_size_field_has_an_upper_bound():
    # A size without one would take 1e12 and fail hours later (the reason for each: FIELDS).
    sizes = ["num_train_examples", "num_ood_examples", "oe.batch_size", "num_epochs",
             "batch_size", "eval_batch_size", "checkpoint_every_steps", "log_every_steps",
             "steps_per_call"]
    for name in sizes:
        assert not config_validation.fields()[name].ok(config_validation.MAX_INT32 + 1), name
        assert config_validation.fields()[name].ok(config_validation.MAX_INT32), name


def test_batch_sizes_must_divide_among_the_devices():
    config = tiny_digits_config("oe")
    with pytest.raises(config_validation.ConfigError,
                       match=r"config.batch_size: 32 is not allowed; expected a multiple of the "
                             r"3 devices"):
        config_validation.check(config, num_devices=3)
    config.batch_size = 30
    with pytest.raises(config_validation.ConfigError, match=r"config.eval_batch_size: 512"):
        config_validation.check(config, num_devices=3)
    config.eval_batch_size = 510
    with pytest.raises(config_validation.ConfigError, match=r"config.oe.batch_size: 32"):
        config_validation.check(config, num_devices=3)
    config.oe.batch_size = 33
    config_validation.check(config, num_devices=3)


def test_a_field_that_no_config_has_is_refused(tmp_path, capsys):
    config = tiny_digits_config("ce")
    config.num_epoch = 3  # misspelt
    line = refusal(capsys, lambda: train.train_and_evaluate(config, str(tmp_path / "run")))
    assert line == "error: config.num_epoch: not a config field (see --help for the fields)"


def test_the_workdir_may_not_be_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    config = tiny_digits_config("ce")
    line = refusal(capsys, lambda: train.train_and_evaluate(config, str(tmp_path / "file")))
    assert line == f"error: --workdir: {tmp_path / 'file'} is a file, not a directory"
    assert (tmp_path / "file").read_text() == "x"


def test_a_bucket_workdir_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    # pathlib reads "gs://b/run" as the relative path gs:/b/run: without the refusal the
    # predictions would land in a local folder named "gs:".
    monkeypatch.chdir(tmp_path)
    line = refusal(capsys, lambda: train.train_and_evaluate(tiny_digits_config("ce"),
                                                              "gs://my-bucket/run"))
    assert line == ("error: --workdir: gs://my-bucket/run is a bucket URL; give a local "
                    "directory (or a gcsfuse mount) and copy it to the bucket afterwards "
                    "(gcloud storage cp -r)")
    assert list(tmp_path.iterdir()) == []


def test_a_second_process_on_a_workdir_in_use_is_refused(tmp_path, capsys):
    workdir = tmp_path / "run"
    # flock locks belong to an open file, so a second open in this process competes like
    # another process would.
    with workdir_lock.hold(workdir):
        line = refusal(capsys, lambda: train.train_and_evaluate(tiny_digits_config("ce"),
                                                                  str(workdir)))
        assert line.startswith(f"error: {workdir}: in use by another process (pid ")
        assert sorted(p.name for p in workdir.iterdir()) == [run_dir.LOCK]
    # Released when the holder is done (or killed, see test_atomic_files): the next run trains.
    train.train_and_evaluate(tiny_digits_config("ce", num_epochs=1), str(workdir))
    assert saved_runs.is_finished(workdir)


def test_a_refused_start_does_not_bind_the_workdir(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(config_validation.ConfigError):
        train.train_and_evaluate(tiny_digits_config("ce", seed=-1), str(workdir))
    train.train_and_evaluate(tiny_digits_config("ce", seed=1, num_epochs=1), str(workdir))
    assert saved_runs.is_finished(workdir)


# ---------------------------------------------------------------------------------------------
# Config files and the command line, parsed in process.


@pytest.fixture
def parse(capsys):
    """Parses a train command line with a fresh flag namespace; returns the config or the
    one-line refusal."""
    def run(*args):
        # As the commands do: configs/<file>.py names the packaged file.
        argv = configs.resolve_argv(["train", *args])
        values = flags.FlagValues()
        # Overrides are defined from the command line when the flag is (absl's sys_argv).
        config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                        sys_argv=argv)
        try:
            command_line.parse_flags(argv, values)
        except SystemExit as e:
            code = e.code
        else:
            return values.config
        assert code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        return err.strip()
    return run


def test_a_misspelt_override_is_refused_with_a_suggestion(parse):
    assert parse("--config=configs/digits.py", "--config.num_epoch=1") == \
        "error: --config.num_epoch: not a config field; did you mean num_epochs? (--help lists " \
        "the fields)"


def test_a_missing_config_file_or_an_unknown_argument_is_refused(parse):
    # The line lists the families, as the packaged directory holds them.
    families = sorted(p.stem for p in configs.DIRECTORY.glob("*.py")
                      if p.stem not in ("__init__", "config_base", "config_validation", "grid"))
    assert sorted(configs.FAMILIES) == families
    assert parse("--config=configs/cifar.py") == \
        "error: --config: configs/cifar.py: no such config file; the families are " \
        "configs/<family>.py[:<method>] with <family> one of digits, fashion_mnist, " \
        "fashion_mnist_split, cifar10, cifar100"
    assert parse("--config=configs/digits.py:foo") == \
        f"error: config argument: unknown method 'foo'; expected one of " \
        f"{', '.join(methods.names())}, oe_finetune"
    assert methods.names()[:5] == ("ce", "ls", "oe", "kd", "kd_incorrect")


@pytest.mark.parametrize(("override", "expected"), [
    ("num_epochs=two", "--config.num_epochs: expected an integer, got 'two'"),
    ("num_epochs=2.5", "--config.num_epochs: expected an integer, got '2.5'"),
    ("learning_rate=abc", "--config.learning_rate: expected a number, got 'abc'"),
    ("nesterov=maybe", "--config.nesterov: expected true or false, got 'maybe'"),
    ("kd.temperature=hot", "--config.kd.temperature: expected a number, got 'hot'"),
])
def test_a_value_of_the_wrong_type_is_refused_naming_the_field_and_the_type(
        parse, override, expected):
    assert parse("--config=configs/digits.py", f"--config.{override}") == f"error: {expected}"


def test_any_dataset_path_can_be_given_on_the_command_line(parse):
    config = parse("--config=configs/digits.py", "--config.dataset_paths.svhn=/data/svhn")
    assert config.dataset_paths.svhn == "/data/svhn"
    config_validation.check(config)


@pytest.mark.parametrize("family", ["digits", "fashion_mnist", "fashion_mnist_split",
                                    "cifar10", "cifar100"])
def test_oe_finetune_is_honoured_by_every_family(parse, family):
    config = parse(f"--config=configs/{family}.py:oe_finetune")
    plain = parse(f"--config=configs/{family}.py:oe")
    assert config.method == "oe"
    # The OE reference's proportions: a tenth of the epochs (rounded) at a hundredth of the rate.
    assert config.num_epochs == max(1, round(plain.num_epochs / 10 + 1e-9))
    assert config.learning_rate == pytest.approx(plain.learning_rate / 100)
    # It fine-tunes a finished run, so that run must be named: never from scratch by default.
    with pytest.raises(config_validation.ConfigError,
                       match=r"config.oe.finetune_from: not set; the oe_finetune recipe"):
        config_validation.check(config)
    config = parse(f"--config=configs/{family}.py:oe_finetune",
                   "--config.oe.finetune_from=/runs/ce")
    assert config.oe.finetune_from == "/runs/ce"
    config_validation.check(config)


def test_the_optimizer_names_agree_with_the_optimizer_module():
    assert config_validation.OPTIMIZERS == optimizer.OPTIMIZERS


def test_the_odin_selections_agree_with_the_scoring_module():
    from softlabel_ood.scoring import odin_selection
    for selection in odin_selection.SELECTIONS:
        assert config_validation.fields()["odin_selection"].ok(selection)
    assert not config_validation.fields()["odin_selection"].ok("best")
    assert config_validation.ODIN_FIXED_PAIR == odin_selection.FIXED_PAIR
    # The default config offers the fixed pair, so "fixed" works without other changes.
    config = tiny_digits_config("ce", odin_selection="fixed")
    config_validation.check(config)


def test_methods_name_their_teacher_and_outliers():
    assert [m for m in methods.names() if methods.needs_teacher(m)] == ["kd", "kd_incorrect"]
    assert [m for m in methods.names() if methods.needs_outliers(m)] == ["oe"]
    for method in methods.BY_NAME.values():
        for field in method.reads:
            assert field in config_validation.fields(), field
    # Every field a method may leave unread has a neutral value, and it is a config field.
    for field in [*methods.hyperparameters(), *methods.REFUSED_UNLESS_READ]:
        assert field in config_validation.fields(), field


def test_loading_a_config_file_imports_no_jax():
    import subprocess
    import sys
    code = ("import sys; from softlabel_ood.configs import cifar10, digits; "
            "digits.get_config('kd'); cifar10.get_config('oe_finetune'); "
            "print(sorted(m for m in ('jax', 'flax', 'optax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
