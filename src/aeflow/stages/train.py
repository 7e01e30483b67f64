"""DVC stage `train`: fit the autoencoder described by params.yaml."""

from aeflow.stages.common import run_stage


def main() -> None:
    from aeflow.config.params import load_params
    from aeflow.training.train import train

    train(load_params())


if __name__ == "__main__":
    run_stage(main)
