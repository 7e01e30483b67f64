import pytest
from omegaconf import OmegaConf

from aeflow.config.instantiate import instantiate_model
from aeflow.config.params import compose
from aeflow.config.schema import validate
from aeflow.errors import ConfigError
from tests.conftest import REPO


def test_committed_params_yaml_is_the_composition_of_conf():
    assert OmegaConf.load(REPO / "params.yaml") == compose(conf_dir=REPO / "conf"), (
        "params.yaml is stale: run `python -m aeflow.config`"
    )


def test_default_is_the_tutorial_model():
    cfg = compose()
    validate(cfg)
    model = instantiate_model(cfg)
    linear = [m for m in model.modules() if m.__class__.__name__ == "Linear"]
    assert [(m.in_features, m.out_features) for m in linear] == [
        (784, 256),
        (256, 128),
        (128, 256),
        (256, 784),
    ]
    acts = [m.__class__.__name__ for m in model.encoder.net] + [
        m.__class__.__name__ for m in model.decoder.net
    ]
    assert acts == ["Linear", "Sigmoid", "Linear", "Sigmoid", "Linear", "Sigmoid", "Linear", "Identity"]
    assert cfg.model.loss == "mse" and cfg.data.batch_size == 256 and cfg.trainer.max_epochs == 20
    optimizer = model.configure_optimizers()
    assert type(optimizer).__name__ == "RMSprop" and optimizer.defaults["lr"] == 0.01


def test_latent_dim_is_one_parameter():
    model = instantiate_model(compose(["model.latent_dim=7"]))
    assert model.encoder.net[2].out_features == 7 and model.decoder.net[0].in_features == 7


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.latent_dim=0", r"model.latent_dim=0: must be a positive int"),
        ("optimizer.lr=-0.1", r"optimizer.lr=-0.1: must be a positive float"),
        ("+model.encoder.hiden=[3]", r"model.encoder.hiden: unknown key .*allowed: activation"),
        ("trainer.max_epochs=abc", r"trainer.max_epochs='abc': wrong type"),
        ("data.batch_size=1.5", r"data.batch_size=1.5: wrong type"),
        (
            "optimizer._target_=torch.optim.Foo",
            r"optimizer._target_=torch.optim.Foo: unknown class; "
            r"allowed: torch.optim.RMSprop",
        ),
        ("model.loss=l1", r"model.loss='l1': allowed: mse, bce"),
        ("+paths.model_dir=x", r"paths.model_dir: Key 'model_dir' not in 'PathsConfig'"),
        ("+seeed=1", r"unknown top-level key\(s\) \['seeed'\]"),
        ("data.files.train_images.md5=123", None),  # a string: valid config, caught by checksums
    ],
)
def test_bad_config_names_key_value_and_allowed(override, message):
    cfg = compose([override])
    if message is None:
        validate(cfg)
        return
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


@pytest.mark.parametrize("section", ["paths", "mlflow", "evaluate", "visualize", "performance"])
def test_a_value_missing_from_conf_is_an_error_not_a_schema_default(section):
    cfg = compose([])
    OmegaConf.set_struct(cfg, False)
    key = next(iter(cfg[section]))
    del cfg[section][key]
    with pytest.raises(ConfigError, match=rf"{section}: missing value\(s\) for {key}; set them in conf/"):
        validate(cfg)


def test_each_check_runs_alone_and_a_misspelt_one_is_refused():
    cfg = compose([])
    cfg.optimizer.lr = 0
    validate(cfg, sections=("model.networks", "data.source"))  # the optimizer is not checked
    with pytest.raises(ConfigError, match="optimizer.lr=0"):
        validate(cfg, sections=("optimizer",))
    with pytest.raises(ValueError, match=r"no such config check\(s\) \['model.network'\]; allowed: seed"):
        validate(cfg, sections=("model.network",))


@pytest.mark.parametrize(
    ("override", "words"),
    [
        # A value of the wrong type: the schema's answer.
        ("model.latent_dim=abc", ["model.latent_dim='abc'", "wrong type", "int"]),
        # A group option that does not exist: the options there are, the nearest first.
        ("optimizer=adamm", ["optimizer=adamm", "conf/optimizer/", "did you mean adam?", "adam, adamw"]),
        # A misspelt key: the nearest valid key and the keys beside it.
        ("trainer.max_epoch=3", ["trainer.max_epoch=3", "did you mean max_epochs?", "allowed:"]),
    ],
)
def test_config_command_answers_bad_overrides_in_one_line(override, words, monkeypatch):
    from aeflow.config.params import main

    monkeypatch.chdir(REPO)  # conf/ is read relative to the working directory, as `make run` does
    with pytest.raises(SystemExit) as exit_:
        main([override])
    message = str(exit_.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    for word in words:
        assert word in message, (word, message)
