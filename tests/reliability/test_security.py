"""Security: no unsafe unpickling, servers on 127.0.0.1 by default, no secrets in what a run logs."""

from __future__ import annotations

import ast
import os
import pickle
import re
from pathlib import Path

import mlflow
import pytest

from aeflow.data import sources
from aeflow.tracking import runs as tracking
from tests.conftest import REPO
from tests.reliability.conftest import logged_models

SRC = REPO / "src" / "aeflow"
UNPICKLER_MODULE = SRC / "data" / "sources.py"  # the download fallback's restricted unpickler


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def unsafe_deserialisation(src: Path, unpickler_module: Path) -> list[str]:
    problems = []
    for path in sorted(src.rglob("*.py")):
        for node, name in _calls(path):
            where = f"{path.relative_to(src)}:{node.lineno}"
            if name == "torch.load" or name.endswith(".torch.load"):
                weights_only = [k for k in node.keywords if k.arg == "weights_only"]
                if not weights_only or not (
                    isinstance(weights_only[0].value, ast.Constant) and weights_only[0].value.value is True
                ):
                    problems.append(f"{where}: {ast.unparse(node)} without weights_only=True")
            if (
                re.fullmatch(r"(pickle|cPickle|dill|joblib|cloudpickle)\.(load|loads|Unpickler)", name)
                and path != unpickler_module
            ):
                problems.append(f"{where}: {name} outside {unpickler_module.name}")
            if name in ("numpy.load", "np.load") and any(  # numpy's default is allow_pickle=False
                k.arg == "allow_pickle" and getattr(k.value, "value", None) is not False
                for k in node.keywords
            ):
                problems.append(f"{where}: {name} with allow_pickle")
    return problems


def test_no_unsafe_deserialisation_in_src():
    problems = unsafe_deserialisation(SRC, UNPICKLER_MODULE)
    assert not problems, "\n".join(problems)


def test_the_scan_catches_what_it_looks_for(tmp_path):
    (tmp_path / "bad.py").write_text(
        "import pickle, torch\ntorch.load('x')\npickle.loads(b'')\ntorch.load('y', weights_only=False)\n"
    )
    problems = unsafe_deserialisation(tmp_path, UNPICKLER_MODULE)
    assert len(problems) == 3 and sum("without weights_only=True" in p for p in problems) == 2, problems


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/aeflow-reliability-pwned",))


def test_download_fallback_refuses_a_malicious_pickle():
    # Also tests/unit/test_download.py; here through the path that reads the wheel's pickle.
    Path("/tmp/aeflow-reliability-pwned").unlink(missing_ok=True)
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle posix.system"):
        sources.mnist_pickle_to_idx(pickle.dumps(((_Evil(), None), (None, None), (None, None))))
    assert not Path("/tmp/aeflow-reliability-pwned").exists()


def test_servers_bind_to_localhost_by_default():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^UI_HOST \?= 127\.0\.0\.1$", makefile, re.M)
    ui = makefile.split("\nui:", 1)[1].split("\n\n", 1)[0]
    assert "--host $(UI_HOST)" in ui
    # Nothing the project starts listens on every interface unless the user says so.
    for path in [*SRC.rglob("*.py"), REPO / "Makefile", REPO / "dvc.yaml", *(REPO / "conf").rglob("*.yaml")]:
        assert "0.0.0.0" not in path.read_text(), path


SECRET = "s3cr3t-Do-Not-Log-7f1e"


def test_no_environment_secrets_in_the_logged_run(tmp_path, monkeypatch, tiny_cfg):
    from aeflow.training.train import train

    for var in (
        "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "AEFLOW_API_TOKEN",
        "DATABASE_URL",
    ):
        monkeypatch.setenv(var, SECRET)
    monkeypatch.chdir(tmp_path)  # the store's artifacts go beside it, not into the repository
    tiny_cfg.mlflow.log_model = True
    result = train(tiny_cfg)
    client = mlflow.MlflowClient(tiny_cfg.mlflow.tracking_uri)
    run = client.get_run(result.run_id)
    logged = {**run.data.params, **run.data.tags, **{k: str(v) for k, v in run.data.metrics.items()}}
    assert not [k for k, v in logged.items() if SECRET in v or SECRET in k]
    assert logged_models(client, result.run_id) == {"model"}
    mlflow.set_tracking_uri(tiny_cfg.mlflow.tracking_uri)
    for what in ("", "model"):  # the run's artifacts and the logged model's
        mlflow.artifacts.download_artifacts(
            f"runs:/{result.run_id}/{what}", dst_path=str(tmp_path / "a" / what)
        )
    texts = 0
    for path in (tmp_path / "a").rglob("*"):
        if path.is_file():
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue  # weights
            texts += 1
            assert SECRET not in text, path
    assert texts >= 3  # MLmodel, requirements, config.yaml, ...
    for out in Path(tiny_cfg.paths.checkpoints).parent.rglob("*.json"):
        assert SECRET not in out.read_text(), out


def test_credentials_in_a_tracking_uri_are_redacted():
    redacted = tracking.redact_uri("https://bob:pa55@mlflow.example:8443/x?y=1")
    assert redacted == "https://***@mlflow.example:8443/x?y=1"
    assert tracking.redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert tracking.redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
