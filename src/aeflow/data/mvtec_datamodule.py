"""`data=mvtec`: the training batches of one packed MVTec-layout category (aeflow.data.mvtec)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aeflow.data.mvtec import MVTecSplits, check_test_size
from aeflow.data.packed import PackedDataModule
from aeflow.errors import ConfigError


class MVTecDataModule(PackedDataModule):
    """Train/val (`train/good`) and test (`test/`, with labels per defect type) of one MVTec-layout
    category (`data=mvtec`); `packed.test_masks()` holds the test masks. See PackedDataModule."""

    def __init__(
        self,
        data_dir: str,
        path: str | None = None,
        image_size: Sequence[int] = (128, 128),
        channels: int = 3,
        resize: str = "resize",
        val_size: float = 0.1,
        test_size: float = 0.0,
        split_seed: int = 0,
        input_features: int | None = None,
        files: Mapping[str, object] | None = None,
        batch_size: int = 32,
        name: str = "mvtec",
        seed: int = 0,
        on_device: bool | None = None,
        in_memory: bool = False,
        classes: list[int] | None = None,
    ) -> None:
        check_test_size(test_size)
        if classes is not None:
            raise ConfigError(
                f"data.classes={list(classes)}: with data=mvtec training uses train/good only; set null"
            )
        super().__init__(
            data_dir, path, image_size, channels, resize, val_size, 0.0, split_seed, input_features,
            files, batch_size, name, seed, on_device, in_memory, None,
        )  # fmt: skip
        self.packed = MVTecSplits(data_dir, self.packed.spec, None, in_memory)
