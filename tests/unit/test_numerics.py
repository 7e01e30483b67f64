"""The numerics fingerprint and the reproduce verdicts' arithmetic, in-process."""

from __future__ import annotations

import pytest

from aeflow.numerics import fingerprint as fp
from aeflow.numerics.modes import NATIVE, PORTABLE, NumericsError, apply, from_params, pinned_environment
from aeflow.tracking.reproduce import (
    CONSISTENT,
    EXACT,
    FAMILY_ALPHA,
    NOT_REPRODUCED,
    Row,
    basis_for,
    judge,
    prediction_margin,
    with_spread,
)


def fingerprint(mode: str, **parts: str) -> fp.Fingerprint:
    base = {"mode": mode, "cpu.vendor": "GenuineIntel", "cpu.model": "Xeon", "aten.capability": "AVX2"}
    return fp.Fingerprint({**base, **parts})


def test_portable_fingerprints_ignore_the_cpu_model_native_ones_do_not():
    intel, amd = {}, {"cpu.vendor": "AuthenticAMD", "cpu.model": "EPYC"}
    assert fingerprint(PORTABLE, **intel).hash == fingerprint(PORTABLE, **amd).hash
    assert fingerprint(NATIVE, **intel).hash != fingerprint(NATIVE, **amd).hash
    differ = fp.differences(fingerprint(NATIVE, **intel), fingerprint(NATIVE, **amd))
    assert [d[0] for d in differ] == ["cpu.model", "cpu.vendor"]
    # Any part that decides rounding changes the hash in either mode.
    assert fingerprint(PORTABLE).hash != fingerprint(PORTABLE, **{"aten.capability": "DEFAULT"}).hash


def test_the_fingerprint_round_trips_through_its_tags():
    original = fingerprint(NATIVE, threads="2")
    tags = {**original.tags(), "git_commit": "abc"}
    assert tags[fp.HASH_TAG] == original.hash
    assert fp.from_tags(tags) == original
    assert fp.from_tags({"git_commit": "abc"}) is None


def test_portable_mode_sets_the_pins_and_native_leaves_the_environment():
    env = {"ATEN_CPU_CAPABILITY": "default"}
    assert apply(NATIVE, None, env) == {} and env == {"ATEN_CPU_CAPABILITY": "default"}
    apply(PORTABLE, None, env)
    assert env == pinned_environment(PORTABLE, None)
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["MKL_CBWR"] == "COMPATIBLE"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert pinned_environment(PORTABLE, 4)["OMP_NUM_THREADS"] == "4"
    with pytest.raises(NumericsError, match="performance.numerics='fast': allowed: native, portable"):
        apply("fast", None, {})


def test_the_mode_is_read_from_params_yaml_without_torch(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("performance:\n  numerics: portable\n  num_threads: 3\n")
    assert from_params(params) == (PORTABLE, 3)
    assert from_params(tmp_path / "absent.yaml") == (NATIVE, None)


def test_portable_mode_refuses_to_run_where_its_pins_are_not_in_effect(tiny_cfg, monkeypatch):
    monkeypatch.delenv("MKL_CBWR", raising=False)
    tiny_cfg.performance.numerics = PORTABLE
    with pytest.raises(NumericsError, match="MKL_CBWR=unset"):
        fp.fingerprint(tiny_cfg)
    tiny_cfg.performance.numerics = NATIVE
    assert fp.fingerprint(tiny_cfg).mode == NATIVE


def test_the_prediction_interval_is_the_t_interval_for_one_more_draw():
    mean, margin = prediction_margin([1.0, 2.0, 3.0], alpha=0.05)
    # t(0.975, 2) = 4.303, s = 1, sqrt(1 + 1/3)
    assert mean == 2.0 and margin == pytest.approx(4.3027 * (4 / 3) ** 0.5, rel=1e-4)


def rows(original: float, reproduced: float, metrics: int = 3) -> list[Row]:
    return [Row(f"m{i}", original if i == 0 else 1.0, reproduced if i == 0 else 1.0) for i in range(metrics)]


SEEDS = [{"m0": 8.30, "m1": 1.0, "m2": 1.0}, {"m0": 8.45, "m1": 1.0, "m2": 1.0}]


def test_equal_fingerprints_allow_no_difference():
    basis = basis_for(same_numerics=True, rtol=None, seeds=0)
    assert judge(rows(8.38, 8.38), basis) == EXACT
    assert judge(rows(8.38, 8.38 + 1e-9), basis) == NOT_REPRODUCED


def test_different_fingerprints_are_judged_against_the_spread_of_the_seeds():
    basis = basis_for(same_numerics=False, rtol=None, seeds=2)
    assert judge(rows(8.38, 8.38), basis) == EXACT
    near = with_spread(rows(8.40, 8.36), SEEDS)
    assert near[0].spread_margin > 0 and judge(near, basis) == CONSISTENT
    far = with_spread(rows(8.38 * 1.5, 8.36), SEEDS)
    assert judge(far, basis) == NOT_REPRODUCED and not far[0].within_spread and far[1].within_spread
    # Without seeds or a tolerance a difference is not judged at all.
    assert judge(rows(8.40, 8.36), basis_for(same_numerics=False, rtol=None, seeds=0)) is None


def test_the_family_false_alarm_rate_is_shared_by_all_metrics():
    one = with_spread(rows(8.40, 8.36, metrics=1), SEEDS)[0].spread_margin
    many = with_spread(rows(8.40, 8.36, metrics=200), SEEDS)[0].spread_margin
    _, expected = prediction_margin([8.36, 8.30, 8.45], FAMILY_ALPHA / 200)
    assert many == pytest.approx(expected) and many > one


def test_rtol_overrides_the_fingerprints():
    basis = basis_for(same_numerics=True, rtol=0.01, seeds=0)
    assert judge(rows(8.38, 8.39), basis) == CONSISTENT
    assert judge(rows(8.38, 8.60), basis) == NOT_REPRODUCED
