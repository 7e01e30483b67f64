"""`python -m aeflow.config [overrides...] [--check]`: write or check params.yaml."""

from aeflow.config.params import main

main()
