"""The anomaly-detection protocols of the evaluate stage, each scored with every anomaly score.

- `shift`: seeded corrupted copies of the (normal) test images, always on;
- `ood`: other data sets' test images (`evaluate.ood`), when configured;
- `other_classes`: the test images of the classes left out of training (`data.classes`).

Normal images are the test images of the trained classes (all of them without
`data.classes`). Thresholds come from the validation split through
`anomaly.fit_detector`, the same function that fits the served model's detector,
so the shares flagged here are those the served model flags.

Every set is scored batch by batch from the uint8 splits (memory maps for data=folder):
the corrupted copies are made one batch at a time, and only per-image scores are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch

from aeflow.data.classes import class_mask
from aeflow.evaluation import anomaly as A
from aeflow.evaluation.corruptions import shifted_sources
from aeflow.evaluation.pca import PCA
from aeflow.evaluation.streaming import Rows

log = logging.getLogger(__name__)

Split = tuple[torch.Tensor, torch.Tensor]  # images uint8 (N, H, W) or (N, C, H, W), labels int64 (N,)
MEAN = "mean"  # the shift protocol's average over corruptions
VAL = "val"  # PCA's scores of the validation images, which set its threshold


def check_settings(score: str, corruptions: Sequence[str] | None) -> None:
    """`evaluate.score` and `evaluate.corruptions` name known scores and corruptions."""
    from aeflow.errors import ConfigError

    if score not in A.MODEL_SCORES:
        raise ConfigError(f"evaluate.score={score!r}: allowed: {', '.join(A.MODEL_SCORES)}")
    check_corruptions(corruptions)


def check_corruptions(corruptions: Sequence[str] | None) -> None:
    """`evaluate.corruptions` names known corruptions."""
    from aeflow.errors import ConfigError
    from aeflow.evaluation.corruptions import CORRUPTIONS

    unknown = [c for c in corruptions or () if c not in CORRUPTIONS]
    if unknown:
        raise ConfigError(f"evaluate.corruptions: unknown {unknown}; allowed: {', '.join(CORRUPTIONS)}")


def with_mean(sets: dict) -> dict:
    """`sets` ({name: {score: {metric: value}}}) plus their mean per score and metric."""
    names = list(sets)
    if not names:
        return sets
    first = sets[names[0]]
    mean = {
        score: {m: sum(sets[n][score][m] for n in names) / len(names) for m in first[score]}
        for score in first
    }
    return {**sets, MEAN: mean}


def anomaly_sets(
    splits: Mapping[str, Split],
    *,
    corruptions: Sequence[str] | None = None,
    ood_sets: Mapping[str, torch.Tensor] | None = None,
    classes: Sequence[int] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
    """(normal test images uint8 (N, C, H, W), their indices in the test split, the outside
    images {protocol: {set name: images}}): what every protocol scores, model or not."""
    from aeflow.evaluation.corruptions import CORRUPTIONS

    test_images, test_labels = splits["test"]
    if test_images.dim() == 3:
        test_images = test_images.unsqueeze(1)  # (N, 1, H, W) uint8: a view, a memory map stays one
    if classes is None:
        normal_index = torch.arange(len(test_labels))
        normal = test_images
    else:
        normal_index = class_mask(test_labels, classes).nonzero().flatten()
        normal = Rows(test_images, normal_index)
    names = list(CORRUPTIONS) if corruptions is None else list(corruptions)
    outsides: dict[str, dict] = {}
    if names:
        outsides[A.SHIFT] = shifted_sources(normal, names, seed)
    if ood_sets:
        outsides[A.OOD] = dict(ood_sets)
    if classes is not None:
        rest = torch.ones(len(test_labels), dtype=torch.bool)
        rest[normal_index] = False
        outsides[A.OTHER_CLASSES] = {"rest": Rows(test_images, rest)}
    return normal, normal_index, outsides


def pca_scores_of_sets(
    pca: PCA,
    val_images: torch.Tensor,
    normal: torch.Tensor,
    outsides: Mapping[str, Mapping[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """PCA's anomaly score (N,) float64 of every image the protocols score: the validation images
    (`VAL`, for the threshold), the normal test images (`A.NORMAL`) and each outside set
    ('<protocol>/<set>'). It depends on the data alone, so the baselines stage computes it once."""
    scores = {VAL: A.pca_scores(pca, val_images), A.NORMAL: A.pca_scores(pca, normal)}
    for protocol, sets in outsides.items():
        for name, images in sets.items():
            scores[f"{protocol}/{name}"] = A.pca_scores(pca, images)
    return scores


def anomaly_evaluation(
    model: torch.nn.Module,
    pca: PCA | None,
    splits: Mapping[str, Split],
    *,
    quantile: float,
    score: str = A.SQ_ERR,
    corruptions: Sequence[str] | None = None,
    ood_sets: Mapping[str, torch.Tensor] | None = None,
    classes: Sequence[int] | None = None,
    seed: int = 0,
    extreme_n: int = 16,
    pca_scores: Mapping[str, torch.Tensor] | None = None,
) -> A.AnomalyResult:
    """Every protocol's separation metrics for `model` and for `pca` (fitted on the training split).

    `splits`: uint8 'train', 'val' (already restricted to `classes`) and 'test' (whole);
    `ood_sets`: {name: uint8 test images (N, H, W)}; `corruptions`: names (None: all);
    `pca_scores`: PCA's scores as `pca_scores_of_sets` gives them, computed before (then
    `pca` is not used).
    """
    check_settings(score, corruptions)
    model.eval()
    detector = A.fit_detector(
        model.encode, model.decode, splits["train"][0], splits["val"][0], quantile, score
    )
    gaussian = detector.gaussian

    def scores_of(images: torch.Tensor) -> dict[str, torch.Tensor]:
        return A.model_scores(model.encode, model.decode, gaussian, images)

    normal, normal_index, outsides = anomaly_sets(
        splits, corruptions=corruptions, ood_sets=ood_sets, classes=classes, seed=seed
    )
    if pca_scores is None:
        pca_scores = pca_scores_of_sets(pca, splits["val"][0], normal, outsides)
    thresholds = {**detector.thresholds, A.PCA_SCORE: A.threshold(pca_scores[VAL], quantile)}
    known = {where: {A.PCA_SCORE: s} for where, s in pca_scores.items() if where != VAL}
    result = A.evaluate_anomaly(
        scores_of, normal, outsides, thresholds, quantile, extreme_n, normal_index, known=known
    )
    if A.SHIFT in result.metrics:
        result.metrics[A.SHIFT] = with_mean(result.metrics[A.SHIFT])
    result.details["served_score"] = score
    for protocol in outsides:
        for name in result.metrics[protocol]:
            best, auroc = A.best_score(result.metrics, protocol, name)
            log.info(
                "anomaly %s/%s: best AUROC %.4f (%s), PCA %.4f",
                protocol,
                name,
                auroc,
                best,
                result.metrics[protocol][name][A.PCA_SCORE][A.AUROC],
            )
    return result


def sets_from_config(cfg, splits: Mapping[str, Split], config) -> dict:
    """`anomaly_sets`'s settings as the stages run them: `config` is the `EvaluateConfig`, the
    classes come from `data.classes` and the outside sets from `paths.ood` (`evaluate.ood`)."""
    from aeflow.data import ood
    from aeflow.data.classes import check_classes

    names = ood.check_names(config.ood, cfg.data.name)
    return {
        "corruptions": config.corruptions,
        "ood_sets": {name: ood.load(cfg.paths.ood, name) for name in names},
        "classes": check_classes(cfg.data.get("classes")),
        "seed": int(cfg.seed),
    }


def cpu(splits: Mapping[str, Split]) -> dict[str, Split]:
    return {k: (x.cpu(), y.cpu()) for k, (x, y) in splits.items()}


def pca_scores_from_config(cfg, splits: Mapping[str, Split], pca: PCA, config) -> dict[str, torch.Tensor]:
    """`pca_scores_of_sets` on the sets the evaluate stage scores (see `sets_from_config`)."""
    splits = cpu(splits)
    normal, _, outsides = anomaly_sets(splits, **sets_from_config(cfg, splits, config))
    return pca_scores_of_sets(pca, splits["val"][0], normal, outsides)


def from_config(
    cfg,
    model: torch.nn.Module,
    splits: Mapping[str, Split],
    pca: PCA | None,
    config,
    pca_scores: Mapping[str, torch.Tensor] | None = None,
) -> A.AnomalyResult:
    """`anomaly_evaluation` as the evaluate stage runs it (see `sets_from_config`); `pca_scores`:
    the baselines stage's, else computed from `pca`."""
    check_settings(config.score, config.corruptions)
    splits = cpu(splits)
    return anomaly_evaluation(
        model,
        pca,
        splits,
        quantile=config.threshold_quantile,
        score=config.score,
        extreme_n=config.worst_n,
        pca_scores=pca_scores,
        **sets_from_config(cfg, splits, config),
    )
