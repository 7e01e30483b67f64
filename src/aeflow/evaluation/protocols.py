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


def check_settings(score: str, corruptions: Sequence[str] | None) -> None:
    """`evaluate.score` and `evaluate.corruptions` name known scores and corruptions."""
    from aeflow.errors import ConfigError
    from aeflow.evaluation.corruptions import CORRUPTIONS

    if score not in A.MODEL_SCORES:
        raise ConfigError(f"evaluate.score={score!r}: allowed: {', '.join(A.MODEL_SCORES)}")
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


def anomaly_evaluation(
    model: torch.nn.Module,
    pca: PCA,
    splits: Mapping[str, Split],
    *,
    quantile: float,
    score: str = A.SQ_ERR,
    corruptions: Sequence[str] | None = None,
    ood_sets: Mapping[str, torch.Tensor] | None = None,
    classes: Sequence[int] | None = None,
    seed: int = 0,
    extreme_n: int = 16,
) -> A.AnomalyResult:
    """Every protocol's separation metrics for `model` and for `pca` (fitted on the training split).

    `splits`: uint8 'train', 'val' (already restricted to `classes`) and 'test' (whole);
    `ood_sets`: {name: uint8 test images (N, H, W)}; `corruptions`: names (None: all).
    """
    from aeflow.evaluation.corruptions import CORRUPTIONS

    check_settings(score, corruptions)
    model.eval()
    detector = A.fit_detector(
        model.encode, model.decode, splits["train"][0], splits["val"][0], quantile, score
    )
    gaussian = detector.gaussian

    def scores_of(images) -> dict[str, torch.Tensor]:
        return {
            **A.model_scores(model.encode, model.decode, gaussian, images),
            A.PCA_SCORE: A.pca_scores(pca, images),
        }

    thresholds = {
        **detector.thresholds,
        A.PCA_SCORE: A.threshold(A.pca_scores(pca, splits["val"][0]), quantile),
    }
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
    result = A.evaluate_anomaly(scores_of, normal, outsides, thresholds, quantile, extreme_n, normal_index)
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


def from_config(
    cfg, model: torch.nn.Module, splits: Mapping[str, Split], pca: PCA, config
) -> A.AnomalyResult:
    """`anomaly_evaluation` as the evaluate stage runs it: `config` is its `EvaluateConfig`, the
    classes come from `data.classes` and the outside sets from `paths.ood` (`evaluate.ood`)."""
    from aeflow.data import ood
    from aeflow.data.classes import check_classes

    names = ood.check_names(config.ood, cfg.data.name)
    return anomaly_evaluation(
        model,
        pca,
        {k: (x.cpu(), y.cpu()) for k, (x, y) in splits.items()},
        quantile=config.threshold_quantile,
        score=config.score,
        corruptions=config.corruptions,
        ood_sets={name: ood.load(cfg.paths.ood, name) for name in names},
        classes=check_classes(cfg.data.get("classes")),
        seed=int(cfg.seed),
        extreme_n=config.worst_n,
    )
