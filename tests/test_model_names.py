"""The model names a config may give, read without JAX, and the models they build."""

from __future__ import annotations

import pytest

from softlabel_ood import model_names, models
from softlabel_ood.configs import config_validation


@pytest.mark.parametrize(("name", "parsed"), [
    ("wrn40_2", model_names.ModelName("wrn", depth=40, width=2)),
    ("wrn10_1", model_names.ModelName("wrn", depth=10, width=1)),  # 6 x 1 + 4
    ("resnet18", model_names.ModelName("resnet", stages=(2, 2, 2, 2))),
    ("resnet34", model_names.ModelName("resnet", stages=(3, 4, 6, 3))),
    ("small_cnn", model_names.ModelName("small_cnn")),
])
def test_a_model_name_is_read_into_what_it_describes(name, parsed):
    assert model_names.parse(name) == parsed
    assert config_validation.fields()["model"].ok(name)


@pytest.mark.parametrize("name", ["wrn12_2", "wrn16_0", "wrn16", "resnet50", "WRN40_2", "cnn",
                                  "", 3, None])
def test_a_name_of_no_model_is_refused_by_the_parser_the_check_and_the_models(name):
    with pytest.raises(ValueError, match=repr(name)):
        model_names.parse(name)
    assert not config_validation.fields()["model"].ok(name)
    if isinstance(name, str):
        with pytest.raises(ValueError, match=repr(name)):
            models.create_model(name, num_classes=2)


def test_the_models_are_the_ones_the_names_describe():
    wrn = models.create_model("wrn16_4", num_classes=10)
    assert (type(wrn).__name__, wrn.depth, wrn.width) == ("WideResNet", 16, 4)
    resnet = models.create_model("resnet34", num_classes=10)
    assert type(resnet).__name__ == "CifarResNet"
    assert tuple(resnet.stage_sizes) == (3, 4, 6, 3)
    assert type(models.create_model("small_cnn", num_classes=10)).__name__ == "SmallCNN"
