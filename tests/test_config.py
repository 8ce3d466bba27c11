import pytest
import yaml

from cnnmode.config import all_keys, list_recipes, resolve_config
from cnnmode.errors import UsageError


def test_precedence_defaults_then_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"train": {"epochs": 7, "batch_size": 32}, "optim": {"lr": 0.5}}))
    cfg = resolve_config(str(f), overrides=["optim.lr=0.01"])
    assert cfg.train.epochs == 7 and cfg.train.batch_size == 32  # from YAML
    assert cfg.optim.lr == 0.01  # override beats YAML
    assert cfg.train.seed == 0  # default kept


def test_recipe_values_and_override():
    cfg = resolve_config("cnnmode-resnet50", overrides=["train.epochs=2"])
    assert (cfg.model.name, cfg.data.img_size, cfg.train.batch_size) == ("resnet50", 80, 64)
    assert cfg.optim.name == "adamw" and cfg.optim.weight_decay == 5e-4 and cfg.aug.autoaugment
    assert cfg.train.label_smoothing == 0.1 and cfg.train.epochs == 2 and cfg.recipe == "cnnmode-resnet50"


def test_every_recipe_resolves():
    names = list_recipes()
    assert {"default", "cnnmode-resnet50", "resnet-guide", "simplecnn-mnist"} <= set(names)
    for name in names:
        assert resolve_config(name).recipe == name


def test_default_recipe_picks_gpu_recipe_on_cuda():
    assert resolve_config("default", cuda=True).model.name == "resnet50"
    assert resolve_config("default", cuda=False).model.name == "fastnet-deep"


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "unknown config key 'train.epoch'"),
    ("nosuch.key=1", "unknown config key"),
    ("train.epochs=abc", "train.epochs expects int"),
    ("train.epochs=1.5", "train.epochs expects int"),
    ("train.channels_last=maybe", "expects bool"),
    ("optim.name=lion", "choose one of: sgd, adam, adamw, radam"),
    ("sched.name=poly", "choose one of: onecycle"),
    ("model.name=vgg", "unknown model 'vgg'; choose one of:"),
    ("train.epochs=0", "train.epochs must be >= 1"),
    ("data.path=", "data.path is empty"),
    ("epochs", "must look like key=value"),
])
def test_bad_values_name_the_problem(override, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_config(overrides=[override])


def test_unknown_recipe_lists_choices():
    with pytest.raises(UsageError, match="choose one of: cnnmode-resnet50, default"):
        resolve_config("fast")


def test_int_and_exponent_accepted_for_float_key():
    assert resolve_config(overrides=["optim.lr=1"]).optim.lr == 1.0
    assert resolve_config(overrides=["optim.lr=1e-3"]).optim.lr == 1e-3  # PyYAML alone reads this as a string
    with pytest.raises(UsageError, match="optim.lr expects float"):
        resolve_config(overrides=["optim.lr=fast"])


def test_every_key_has_help():
    assert all(f.metadata["help"] for f in all_keys().values())


def test_yaml_scalars_follow_yaml_12(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  amp: off\n  channels_last: false\noptim:\n  lr: 3e-4\n")
    cfg = resolve_config(str(f), overrides=["train.compile=true"])
    assert cfg.train.amp == "off" and cfg.train.channels_last is False and cfg.optim.lr == 3e-4
    assert cfg.train.compile is True


def test_recipe_with_a_base_is_that_recipe_plus_its_own_keys():
    variant = resolve_config("speed-small").to_dict()
    spelled_out = resolve_config("speed", overrides=["model.name=fastnet", "train.label_smoothing=0.2"]).to_dict()
    assert variant["recipe"] == "speed-small" and variant["description"].startswith("speed with the two-conv")
    for key in ("recipe", "description"):
        variant.pop(key), spelled_out.pop(key)
    assert variant == spelled_out


def test_a_recipe_tuned_for_fastnet_hands_other_models_to_the_generic_recipe():
    notes = []
    cfg = resolve_config("default", ["model.name=resnet18", "train.epochs=3"], cuda=False, notice=notes.append)
    assert cfg.recipe == "generic" and cfg.model.name == "resnet18" and cfg.train.epochs == 3
    assert cfg.optim.bias_lr_scale == 1.0 and cfg.train.label_smoothing == 0.1  # not speed's FastNet settings
    assert len(notes) == 1 and "tuned for fastnet, fastnet-deep" in notes[0] and "generic" in notes[0]
    kept = []
    assert resolve_config("speed", ["model.name=fastnet"], notice=kept.append).recipe == "speed" and not kept
    assert resolve_config("default", cuda=True, notice=kept.append).model.name == "resnet50" and not kept


def test_an_unknown_model_is_an_error_before_any_hand_over():
    notes = []
    with pytest.raises(UsageError, match="unknown model 'vgg'"):
        resolve_config("default", ["model.name=vgg"], cuda=False, notice=notes.append)
    assert not notes


def test_one_base_from_recipe_or_config():
    from cnnmode.config import pick_base
    assert pick_base(None, None, "default") == "default" and pick_base("speed", None) == "speed"
    assert pick_base(None, "my.yaml", "default") == "my.yaml"
    with pytest.raises(UsageError, match="either --recipe or --config"):
        pick_base("speed", "my.yaml")
