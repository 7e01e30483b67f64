"""Hyperparameter search on Optuna: search files in conf/search/, one worker per `aeflow search` process."""
