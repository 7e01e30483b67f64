"""`aeflow reproduce RUN_ID`: rebuild an MLflow run from what it records and judge its test metrics.

The run records its commit (`git_commit`, or `dvc_baseline_rev` for a run made
by `dvc exp run`), whether the code differed from it (`git_dirty`), the DVC hash
of its data (`data_dvc_md5`), its resolved config (`lineage.CONFIG_ARTIFACT`) and
its numerics fingerprint (`aeflow.numerics.*`). The reproduction checks those, checks
out the commit in a separate git worktree, writes the config there as params.yaml,
gets the data (this repository's DVC cache, else `dvc pull`, else the download
stage) and checks its hash, and runs `dvc repro` there up to the evaluate stage, logging to
the same tracking store. The new run is tagged `aeflow.reproduces=<RUN_ID>` and
`aeflow.reproduced=true|false`, with the comparison as `reproduce/comparison.json`.

Verdicts:
- `exact`: every test metric equal. Expected, and required, when both runs have the same
  numerics fingerprint (same kernels, same rounding).
- `consistent`: the fingerprints differ (another CPU family in native mode, another GPU) and
  every metric of the original lies within the spread of `--seeds K` more seeds of the same
  config trained here (`within_spread`), or within `--rtol` when given.
- `NOT reproduced`: a metric differs where the fingerprints are equal, or lies outside the spread.

Exit status: 0 exact or consistent; 1 NOT reproduced; 2 refused (the message says why);
3 the fingerprints differ and nothing was given to judge by (pass `--seeds K`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from aeflow.errors import AeflowError
from aeflow.numerics import fingerprint as numerics
from aeflow.tracking import lineage, runs

log = logging.getLogger(__name__)

EXIT_MISMATCH, EXIT_REFUSED, EXIT_UNJUDGED = 1, 2, 3
REPRODUCES_TAG, REPRODUCED_TAG = "aeflow.reproduces", "aeflow.reproduced"
# The stage that writes the test metrics judged: a reproduction runs the pipeline up to it. The
# stages after it (package, visualize) write nothing the verdict reads, and their outputs would
# be deleted with the worktree.
METRICS_STAGE = "evaluate"
SPREAD_TAG = "aeflow.spread_for"  # on the runs of the extra seeds: the run whose spread they measure
EXACT, CONSISTENT, NOT_REPRODUCED = "exact", "consistent", "NOT reproduced"
# The chance that a correct reproduction is called NOT reproduced, over all metrics together
# (Bonferroni: each metric is tested at FAMILY_ALPHA / number of metrics).
FAMILY_ALPHA = 0.01
# A metric the seeds do not move (PCA's and the raw pixels' figures depend on the data alone) has no
# spread to judge by; another kernel family still rounds it differently (measured: 1e-12 to 1e-9
# relative). Such a metric passes within this relative margin, far above rounding, far below any
# change of result.
ROUNDING_RTOL = 1e-6
COMPARISON_ARTIFACT = "reproduce/comparison.json"
DVC_CACHE_FILES = Path("files", "md5")  # DVC 3's cache layout: files/md5/<2 hex>/<30 hex>[.dir]


class ReproduceError(AeflowError):
    """The run cannot be reproduced here (the message names the reason and what to do)."""


# --- the comparison ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    metric: str
    original: float | None
    reproduced: float | None
    # With --seeds: the mean of the reproduction and the extra seeds, and the half-width of the
    # prediction interval the original must lie in.
    spread_mean: float | None = None
    spread_margin: float | None = None

    @property
    def difference(self) -> float | None:
        if self.original is None or self.reproduced is None:
            return None
        return self.reproduced - self.original

    @property
    def equal(self) -> bool:
        return self.matches(0.0)

    def matches(self, rtol: float) -> bool:
        """Equal, or within `rtol` of the original (|reproduced - original| <= rtol * |original|)."""
        o, r = self.original, self.reproduced
        if o is None or r is None:
            return False
        if o == r or (math.isnan(o) and math.isnan(r)):
            return True
        return abs(r - o) <= rtol * abs(o)

    @property
    def within_spread(self) -> bool:
        """Whether the original lies in the prediction interval of the seeds (or equals the reproduction)."""
        if self.equal:
            return True
        if self.original is None or self.spread_mean is None or self.spread_margin is None:
            return False
        return abs(self.original - self.spread_mean) <= self.spread_margin


def prediction_margin(values: list[float], alpha: float) -> tuple[float, float]:
    """(mean, half-width) of the two-sided 1 - alpha prediction interval for one more draw from
    the distribution `values` came from: t(1 - alpha/2, n - 1) * s * sqrt(1 + 1/n), s the sample
    standard deviation of the n values (normal spread assumed)."""
    from scipy.stats import t

    n = len(values)
    mean = sum(values) / n
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(t.ppf(1 - alpha / 2, n - 1)) * s * math.sqrt(1 + 1 / n)


def with_spread(rows: list[Row], seed_metrics: list[Mapping[str, float]]) -> list[Row]:
    """`rows` with each metric's prediction interval from the reproduction and the extra seeds,
    at FAMILY_ALPHA shared by all metrics."""
    alpha = FAMILY_ALPHA / max(len(rows), 1)
    out = []
    for row in rows:
        values = [v for v in [row.reproduced, *(m.get(row.metric) for m in seed_metrics)] if v is not None]
        if len(values) >= 2 and not any(math.isnan(v) for v in values):
            mean, margin = prediction_margin(values, alpha)
            margin = max(margin, ROUNDING_RTOL * abs(mean))
            row = Row(row.metric, row.original, row.reproduced, mean, margin)
        out.append(row)
    return out


def compare(original: Mapping[str, float], reproduced: Mapping[str, float], keys: Iterable[str]) -> list[Row]:
    """One row per metric in `keys`; a metric missing on either side is None there."""
    return [Row(k, original.get(k), reproduced.get(k)) for k in sorted(set(keys))]


def compared_keys(eval_metrics: Mapping[str, Any], original: Mapping[str, float]) -> set[str]:
    """The MLflow keys of the evaluate stage's metrics file, plus the original run's metrics in the
    same groups (`test/...`, `pca/...`): a metric only one side has is reported, not skipped."""
    keys = set(runs.metric_keys(eval_metrics))
    groups = {k.split("/", 1)[0] for k in keys}
    return keys | {k for k in original if k.split("/", 1)[0] in groups}


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.10g}"


@dataclass(frozen=True)
class Basis:
    """What a metric is judged by: equality, a relative tolerance, or the seeds' spread."""

    kind: str  # "exact" | "rtol" | "spread" | "none" (fingerprints differ, nothing to judge by)
    text: str
    rtol: float = 0.0

    def passes(self, row: Row) -> bool:
        if self.kind == "rtol":
            return row.matches(self.rtol)
        if self.kind == "spread":
            return row.within_spread
        return row.equal


def basis_for(same_numerics: bool, rtol: float | None, seeds: int) -> Basis:
    if rtol is not None:
        return Basis("rtol", "exact" if rtol == 0 else f"rtol {rtol:g}", rtol)
    if same_numerics:
        return Basis("exact", "same numerics fingerprint: exact")
    if seeds:
        return Basis(
            "spread",
            f"numerics fingerprints differ: within the spread of {seeds + 1} seeds, "
            f"prediction interval at {FAMILY_ALPHA:g} over all metrics",
        )
    return Basis("none", "numerics fingerprints differ: pass --seeds K to judge against K more seeds")


def judge(rows: list[Row], basis: Basis) -> str | None:
    """exact when every metric is equal; else consistent or NOT reproduced by `basis` (equal
    fingerprints leave no room for a difference); None when nothing can judge a difference."""
    if all(row.equal for row in rows):
        return EXACT
    if basis.kind == "none":
        return None
    if basis.kind == "exact":
        return NOT_REPRODUCED
    return CONSISTENT if all(basis.passes(row) for row in rows) else NOT_REPRODUCED


def format_table(rows: list[Row], verdict: str | None, basis: Basis) -> str:
    """The comparison as aligned text: metric, original, reproduced, difference, and whether it
    passes (with --seeds also the seeds' mean and margin); then the verdict and its basis."""
    spread = basis.kind == "spread"
    header = (
        "metric",
        "original",
        "reproduced",
        "difference",
        "match",
        *(("seeds_mean", "margin") if spread else ()),
    )
    body = []
    for row in rows:
        diff = row.difference
        shown = "-" if diff is None else ("0" if diff == 0 else f"{diff:+.3g}")
        cells = [
            row.metric,
            _fmt(row.original),
            _fmt(row.reproduced),
            shown,
            "yes" if basis.passes(row) else "NO",
        ]
        if spread:
            cells += [_fmt(row.spread_mean), "-" if row.spread_margin is None else f"{row.spread_margin:.3g}"]
        body.append(tuple(cells))
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in [header, *body]
    ]
    bad = sum(not basis.passes(row) for row in rows)
    if verdict is None:
        summary = f"not judged: {bad} of {len(rows)} test metrics differ ({basis.text})"
    elif verdict == NOT_REPRODUCED:
        summary = f"{NOT_REPRODUCED}: {bad} of {len(rows)} test metrics differ ({basis.text})"
    else:
        summary = f"{verdict}: all {len(rows)} test metrics match ({basis.text})"
    return "\n".join([*lines, "", summary])


# --- what the run records ------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    run_id: str
    commit: str
    dirty: bool
    data_hash: str
    config: dict[str, Any]


def _git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=check)


def recorded_commit(tags: Mapping[str, str]) -> str:
    """The commit a run's code is at: its `dvc exp run` baseline if it has one, else `git_commit`."""
    return tags.get("dvc_baseline_rev") or tags.get("git_commit") or "unknown"


def experiment_commit(root: Path, tags: Mapping[str, str]) -> str | None:
    """The commit DVC saved for the experiment that made the run (`dvc exp run`), if this repository
    has it: the baseline plus the workspace's changes to tracked files, code included."""
    name, baseline = tags.get("dvc_exp_name"), tags.get("dvc_baseline_rev")
    if not (name and baseline):
        return None
    ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"  # where DVC keeps an experiment
    found = _git(root, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}", check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def mismatched_params(config: Mapping[str, Any], params: Mapping[str, str]) -> list[str]:
    """Config keys whose logged param (a string) differs from the config value; keys not logged are
    skipped (MLflow truncates long values; Lightning adds its own)."""
    flat = runs.flatten(config)
    skip = {"mlflow.tracking_uri"}  # logged without credentials
    return sorted(k for k, v in flat.items() if k in params and k not in skip and params[k] != str(v))


def read_config(client, run, commit: str, root: Path) -> dict[str, Any]:
    """The run's resolved config: its logged artifact, else params.yaml at `commit` if the run's
    params say it is the same config."""
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            text = Path(client.download_artifacts(run_id, lineage.CONFIG_ARTIFACT, tmp)).read_text()
            origin = f"artifact {lineage.CONFIG_ARTIFACT}"
        except Exception as exc:  # noqa: BLE001 (any store: MlflowException, OSError, HTTP errors)
            log.info(
                "run %s has no %s (%s); trying params.yaml at %s",
                run_id,
                lineage.CONFIG_ARTIFACT,
                exc,
                commit[:12],
            )
            shown = _git(root, "show", f"{commit}:params.yaml", check=False)
            if shown.returncode != 0:
                raise ReproduceError(
                    f"run {run_id} logged no config ({lineage.CONFIG_ARTIFACT}) and "
                    f"commit {commit[:12]} has no params.yaml"
                ) from exc
            text, origin = shown.stdout, f"params.yaml at commit {commit[:12]}"
    config = yaml.safe_load(text)
    differ = mismatched_params(config, run.data.params)
    if differ:
        raise ReproduceError(
            f"the config from {origin} differs from run {run_id}'s logged params in "
            f"{', '.join(differ[:5])}: cannot tell which config made the run"
        )
    return config


def check_reproducible(client, run_id: str, root: Path, allow_dirty: bool) -> Recorded:
    """What the run records, or ReproduceError naming why it cannot be rebuilt here."""
    try:
        run = runs.retry_locked(client.get_run, run_id)
    except Exception as exc:  # noqa: BLE001 (not found, or the store is unreachable)
        raise ReproduceError(
            f"run {run_id} not found in the tracking store ({exc}); pass the store "
            "with --tracking-uri or MLFLOW_TRACKING_URI"
        ) from exc
    tags = run.data.tags
    commit = recorded_commit(tags)
    if commit == "unknown":
        raise ReproduceError(
            f"run {run_id} records no git commit (tag git_commit): it was not made "
            "in a git checkout, so its code cannot be checked out"
        )
    if _git(root, "cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode != 0:
        raise ReproduceError(
            f"run {run_id} was made at commit {commit}, which is not in this repository "
            f"({root}); `git fetch` the branch that has it (`dvc exp pull` for an experiment)"
        )
    dirty = tags.get("git_dirty", "true") != "false"
    saved = experiment_commit(root, tags)
    if saved:  # it holds the code the experiment ran; the comparison shows whether that was all
        log.info("run %s: experiment %s, commit %s", run_id, tags["dvc_exp_name"], saved[:12])
        commit = saved
    elif dirty and not allow_dirty:
        raise ReproduceError(
            f"run {run_id} has git_dirty={tags.get('git_dirty', 'missing')}: its code "
            f"differed from commit {commit[:12]} in a way its config does not record, so "
            "the commit may not give the same result. Pass --allow-dirty to try anyway"
        )
    if tags.get("aeflow.stopped_by"):
        raise ReproduceError(
            f"run {run_id} was stopped early by {tags['aeflow.stopped_by']}: it is not "
            "the result of its config, so there is nothing to reproduce"
        )
    if run.info.status != "FINISHED":
        raise ReproduceError(
            f"run {run_id} has status {run.info.status}: only a finished run has all its test metrics "
            "(a RUNNING run may still be logging; a FAILED one stopped before evaluate)"
        )
    data_hash = tags.get("data_dvc_md5", "unknown")
    if data_hash == "unknown":
        raise ReproduceError(
            f"run {run_id} records no DVC hash of its data (tag data_dvc_md5): the data "
            "cannot be checked; rerun it with `dvc repro`"
        )
    config = read_config(client, run, commit, root)
    return Recorded(run_id, commit, dirty, data_hash, config)


# --- building it again ---------------------------------------------------------------------------


def cached_files(cache: Path, dir_hash: str) -> list[tuple[str, Path]] | None:
    """(relative path, cache file) for each file of DVC directory hash `dir_hash` ("<md5>.dir"),
    or None if the cache lacks the listing or any file."""
    base = cache / DVC_CACHE_FILES
    listing = base / dir_hash[:2] / dir_hash[2:]
    if not listing.is_file():
        return None
    files = [(e["relpath"], base / e["md5"][:2] / e["md5"][2:]) for e in json.loads(listing.read_text())]
    return files if all(path.is_file() for _, path in files) else None


def _dvc(work: Path, env: Mapping[str, str], *args: str, check: bool = True) -> int:
    """Run DVC in `work`; its output goes to stderr (the table is stdout)."""
    proc = subprocess.run(
        [_tool("dvc"), *args], cwd=work, env=dict(env), stdout=sys.stderr, stderr=sys.stderr
    )
    if check and proc.returncode != 0:
        raise ReproduceError(
            f"`dvc {' '.join(args)}` failed (exit {proc.returncode}) in the reproduction "
            f"worktree {work}; its output is above"
        )
    return proc.returncode


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name  # the environment this command runs in
    return str(beside) if beside.exists() else name


def get_data(work: Path, env: Mapping[str, str], cache: Path, data_path: str, data_hash: str) -> None:
    """Put the run's data in `work/data_path` and check its DVC hash against the run's."""
    files = cached_files(cache, data_hash)
    if files is not None:
        for rel, src in files:
            (work / data_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, work / data_path / rel)
        log.info("data %s: from the DVC cache %s", data_hash, cache)
    elif runs.dvc_data_hash(data_path, str(work / "dvc.lock")) == data_hash:
        log.info("data %s: not in the DVC cache, trying `dvc pull`", data_hash)
        _dvc(work, env, "pull", "download", check=False)  # no remote or no copy: the download stage
    # The download stage checks every file's MD5 in place, or downloads what is missing.
    _dvc(work, env, "repro", "download")
    got = runs.dvc_data_hash(data_path, str(work / "dvc.lock"))
    if got != data_hash:
        raise ReproduceError(
            f"the data for the reproduction has DVC hash {got}, the run used {data_hash}: "
            "the files differ (another data.files, or a source serving other files)"
        )


@dataclass
class Outcome:
    run_id: str
    reproduction_run_id: str
    rows: list[Row]
    basis: Basis
    # (part, original's value, reproduction's value) for each part of the fingerprints that differs
    numerics_differ: list[tuple[str, str | None, str | None]]
    seed_run_ids: list[str]

    @property
    def verdict(self) -> str | None:
        return judge(self.rows, self.basis)

    @property
    def reproduced(self) -> bool:
        return self.verdict in (EXACT, CONSISTENT)


def numerics_differences(original_tags: Mapping[str, str], new_tags: Mapping[str, str]) -> list:
    """The fingerprint parts that differ between two runs; a run without one differs in all."""
    a, b = numerics.from_tags(original_tags), numerics.from_tags(new_tags)
    if a is None or b is None:
        return [("fingerprint", "recorded" if a else "not recorded", "recorded" if b else "not recorded")]
    return [] if a.hash == b.hash else numerics.differences(a, b)


def train_seeds(
    work: Path, env: Mapping[str, str], config: dict[str, Any], run_id: str, seeds: int
) -> list[str]:
    """Run the pipeline for `seeds` more seeds of `config` in the worktree; their MLflow run ids.
    Seeds seed+1 .. seed+K: the spread they show is the run-to-run spread on this machine."""
    ids = []
    for k in range(1, seeds + 1):
        seeded = {**config, "seed": int(config["seed"]) + k}
        (work / "params.yaml").write_text(yaml.safe_dump(seeded, sort_keys=False))
        log.info("seed %d of %d for the spread (seed=%d)", k, seeds, seeded["seed"])
        _dvc(work, env, "repro", "--no-run-cache", METRICS_STAGE)
        ids.append(runs.read_run_info(work / config["paths"]["run_info"])["run_id"])
    return ids


def reproduce(
    run_id: str,
    uri: str,
    root: Path,
    rtol: float | None = None,
    allow_dirty: bool = False,
    seeds: int = 0,
) -> Outcome:
    """Rebuild run `run_id` of the store `uri` from repository `root`; judge its test metrics
    (`rtol`: by that tolerance; `seeds`: against that many more seeds when the numerics differ)."""
    import mlflow

    runs.preflight(uri)
    client = mlflow.MlflowClient(runs.store_uri(uri))
    recorded = check_reproducible(client, run_id, root, allow_dirty)
    cache = Path(
        subprocess.run(
            [_tool("dvc"), "cache", "dir"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    dvc_vars = ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")  # set when run inside a DVC stage
    env = {k: v for k, v in os.environ.items() if k not in dvc_vars}
    # The worktree's code, not the checkout this command was installed from; the run's store.
    tmp = Path(tempfile.mkdtemp(prefix=f"aeflow-reproduce-{run_id[:8]}-"))
    work = tmp / "worktree"
    env.update(
        MLFLOW_TRACKING_URI=uri,
        PYTHONPATH=os.pathsep.join(filter(None, [str(work / "src"), env.get("PYTHONPATH")])),
        # The stages' `python` (dvc.yaml) is this environment's, also when the venv is not activated.
        PATH=os.pathsep.join(filter(None, [str(Path(sys.executable).parent), env.get("PATH")])),
    )
    config = json.loads(json.dumps(recorded.config))  # a copy
    config["mlflow"]["tracking_uri"] = None  # the store comes from MLFLOW_TRACKING_URI (above)
    config["mlflow"]["register_model"] = None  # a reproduction is not a new model version
    paths = config["paths"]
    log.info("reproducing run %s at commit %s in %s", run_id, recorded.commit[:12], work)
    _git(root, "worktree", "add", "--detach", str(work), recorded.commit)
    try:
        (work / "params.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        local_config = root / ".dvc" / "config.local"  # remotes' credentials
        if local_config.is_file():
            shutil.copyfile(local_config, work / ".dvc" / "config.local")
        _dvc(work, env, "cache", "dir", "--local", str(cache))
        get_data(work, env, cache, paths["data"], recorded.data_hash)
        # --no-run-cache: DVC would otherwise restore the original run's outputs instead of running.
        try:
            _dvc(work, env, "repro", "--force", "--no-run-cache", METRICS_STAGE)
        except ReproduceError:
            if (work / paths["run_info"]).is_file():  # the run train opened: say what it was for
                failed = runs.read_run_info(work / paths["run_info"])["run_id"]
                client.set_tag(failed, REPRODUCES_TAG, run_id)
                client.set_tag(failed, REPRODUCED_TAG, "false")
            raise
        new_run_id = runs.read_run_info(work / paths["run_info"])["run_id"]
        eval_metrics = json.loads((work / paths["eval_metrics"]).read_text())
        original_run, new_run = client.get_run(run_id), client.get_run(new_run_id)
        original = original_run.data.metrics
        rows = compare(original, new_run.data.metrics, compared_keys(eval_metrics, original))
        differ = numerics_differences(original_run.data.tags, new_run.data.tags)
        basis = basis_for(not differ, rtol, seeds)
        seed_ids = []
        if basis.kind == "spread" and not all(row.equal for row in rows):
            for part, was, now in differ:
                log.info("numerics differ in %s: %s here, %s in run %s", part, now, was, run_id)
            seed_ids = train_seeds(work, env, config, run_id, seeds)
            for seed_run in seed_ids:
                client.set_tag(seed_run, SPREAD_TAG, run_id)
            rows = with_spread(rows, [client.get_run(i).data.metrics for i in seed_ids])
    finally:
        _git(root, "worktree", "remove", "--force", str(work), check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        _git(root, "worktree", "prune", check=False)
    outcome = Outcome(run_id, new_run_id, rows, basis, differ, seed_ids)
    record(client, outcome, recorded)
    return outcome


def record(client, outcome: Outcome, recorded: Recorded) -> None:
    """Tag the reproduction's run and log the comparison to it."""
    run_id = outcome.reproduction_run_id
    client.set_tag(run_id, REPRODUCES_TAG, outcome.run_id)
    client.set_tag(run_id, REPRODUCED_TAG, str(outcome.reproduced).lower())
    client.log_dict(
        run_id,
        {
            "reproduces": outcome.run_id,
            "commit": recorded.commit,
            "git_dirty": recorded.dirty,
            "data_dvc_md5": recorded.data_hash,
            "verdict": outcome.verdict,
            "basis": outcome.basis.text,
            "numerics_differ": [
                dict(zip(("part", "original", "reproduction"), d)) for d in outcome.numerics_differ
            ],
            "seed_runs": outcome.seed_run_ids,
            "reproduced": outcome.reproduced,
            "metrics": [
                {**asdict(row), "difference": row.difference, "match": outcome.basis.passes(row)}
                for row in outcome.rows
            ],
        },
        COMPARISON_ARTIFACT,
    )


def default_uri(root: Path) -> str:
    """MLFLOW_TRACKING_URI if set, else the project's SQLite store (the pipeline's default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / runs.DEFAULT_STORE).resolve()}"


def main(argv: list[str] | None = None) -> None:
    """`aeflow reproduce RUN_ID`: rebuild an MLflow run from its commit, config and data; judge its
    test metrics: exact, consistent or NOT reproduced (exit 0, 0, 1; 2 refused; 3 not judged)."""
    parser = argparse.ArgumentParser(prog="aeflow reproduce", description=main.__doc__)
    parser.add_argument("run_id", help="the MLflow run id to reproduce")
    parser.add_argument(
        "--rtol",
        type=float,
        help="judge every metric by this relative tolerance instead (|reproduced - original| <= "
        "RTOL x |original|; 0: exact), whatever the numerics fingerprints say",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=0,
        metavar="K",
        help="when the numerics fingerprints differ: train K more seeds of the config here and judge "
        "each metric against their spread (K >= 2; each is a full pipeline run)",
    )
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="reproduce a run tagged git_dirty=true (its code differed from its commit)",
    )
    parser.add_argument(
        "--tracking-uri",
        help="the store the run is in (default: MLFLOW_TRACKING_URI, "
        "else sqlite:///mlflow.db at the repository root)",
    )
    args = parser.parse_args(argv)
    if args.rtol is not None and args.rtol < 0:
        parser.error(f"--rtol {args.rtol}: must be >= 0")
    if args.seeds and args.seeds < 2:
        parser.error(f"--seeds {args.seeds}: a spread needs at least 2 more seeds")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    top = _git(Path.cwd(), "rev-parse", "--show-toplevel", check=False)
    if top.returncode != 0:
        sys.exit(f"error: {Path.cwd()} is not in a git repository: run `aeflow reproduce` in the project")
    root = Path(top.stdout.strip())
    try:
        uri = args.tracking_uri or default_uri(root)
        outcome = reproduce(args.run_id, uri, root, args.rtol, args.allow_dirty, args.seeds)
    except AeflowError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(EXIT_REFUSED)
    sys.stdout.write(f"run {outcome.run_id} reproduced as run {outcome.reproduction_run_id}\n")
    if outcome.numerics_differ:
        sys.stdout.write("numerics fingerprints differ (part: original -> reproduction):\n")
        for part, was, now in outcome.numerics_differ:
            sys.stdout.write(f"  {part}: {was} -> {now}\n")
    if outcome.seed_run_ids:
        sys.stdout.write(f"spread: runs {', '.join(outcome.seed_run_ids)} (seeds after the run's own)\n")
    sys.stdout.write("\n" + format_table(outcome.rows, outcome.verdict, outcome.basis) + "\n")
    verdict = outcome.verdict
    sys.exit(0 if verdict in (EXACT, CONSISTENT) else EXIT_UNJUDGED if verdict is None else EXIT_MISMATCH)


if __name__ == "__main__":
    main()
