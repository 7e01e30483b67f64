"""Data options for anomaly detection: one-class training splits and out-of-distribution test sets."""

import gzip

import pytest
import torch
import yaml

from aeflow.data import ood
from aeflow.data.classes import check_classes, keep_classes
from aeflow.data.datamodule import IDXDataModule
from aeflow.errors import ConfigError, DataError
from tests.conftest import REPO, make_synthetic_idx


def test_one_class_keeps_only_those_labels_in_train_and_val_and_the_whole_test_set(synthetic_data):
    folder, files = synthetic_data
    every = IDXDataModule(data_dir=str(folder), files=files, batch_size=4, val_size=20)
    only = IDXDataModule(data_dir=str(folder), files=files, batch_size=4, val_size=20, classes=[3, 7])
    every.setup(), only.setup()
    for part in ("train", "val"):
        labels = only.splits[part][1]
        assert set(labels.tolist()) == {3, 7}
        # The same images as the full split's 3s and 7s, in the same order.
        keep = torch.isin(every.splits[part][1], torch.tensor([3, 7]))
        assert torch.equal(only.splits[part][0], every.splits[part][0][keep])
    assert torch.equal(only.splits["test"][1], every.splits["test"][1])


@pytest.mark.parametrize("bad", [3, "3", [], [3, 3], [-1], [True], [1.5]])
def test_bad_class_lists_are_refused_with_an_example(bad):
    with pytest.raises(ConfigError, match=r"e\.g\. \[3\]"):
        check_classes(bad)


def test_a_class_with_no_images_names_the_labels_present():
    split = (torch.zeros(4, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ConfigError, match=r"no train image has these labels; labels present: \[0, 1\]"):
        keep_classes(split, [5], "train")
    assert keep_classes(split, None) is split


def test_the_data_configs_offer_the_class_option_and_the_schema_accepts_it():
    from aeflow.config.params import compose
    from aeflow.config.schema import validate

    for name in ("mnist", "fashion_mnist"):
        assert "classes" in yaml.safe_load((REPO / "conf" / "data" / f"{name}.yaml").read_text())
    validate(compose(["data.classes=[3]", "evaluate.ood=[fashion_mnist]"]))
    with pytest.raises(ConfigError, match="threshold_quantile=1.5"):
        validate(compose(["evaluate.threshold_quantile=1.5"]))


def _catalogue(tmp_path, name="other"):
    """A data config in a conf/data-like folder whose only mirror is a local folder of .gz files."""
    mirror = tmp_path / "mirror"
    files = make_synthetic_idx(mirror, n_train=10, n_test=30, seed=1, gz=True)
    conf = tmp_path / "conf_data"
    conf.mkdir()
    (conf / f"{name}.yaml").write_text(
        yaml.safe_dump({"name": name, "files": files, "source": {"mirrors": [f"file://{mirror}/"]}})
    )
    (conf / "main.yaml").write_text("name: main\n")
    return conf, files


def test_ood_download_fetches_only_the_test_files_verified_and_load_reads_them(tmp_path):
    conf, files = _catalogue(tmp_path)
    root = tmp_path / "ood"
    (root / "stale").mkdir(parents=True)  # a set no longer asked for
    ood.download(root, ["other"], conf_dir=conf)
    assert sorted(p.name for p in root.iterdir()) == ["other"]
    assert sorted(p.name for p in (root / "other").iterdir()) == sorted(
        files[k]["file"] for k in ood.OOD_FILES
    )
    images = ood.load(root, "other", conf_dir=conf)
    assert images.shape == (30, 28, 28) and images.dtype == torch.uint8
    ood.download(root, [], conf_dir=conf)  # nothing asked for: an empty folder
    assert list(root.iterdir()) == []


def test_ood_download_refuses_a_file_whose_md5_differs(tmp_path):
    conf, files = _catalogue(tmp_path)
    name = files["test_images"]["file"]
    (tmp_path / "mirror" / f"{name}.gz").write_bytes(gzip.compress(b"not the file"))
    with pytest.raises(DataError, match=f"{name} has MD5"):
        ood.download(tmp_path / "ood", ["other"], conf_dir=conf)


def test_ood_names_are_checked_against_the_catalogue_and_the_training_set(tmp_path):
    conf, _ = _catalogue(tmp_path)
    assert ood.check_names(["other"], "main", conf) == ["other"]
    with pytest.raises(ConfigError, match=r"unknown data set\(s\) \['cifar'\]; allowed: main, other"):
        ood.check_names(["cifar"], "main", conf)
    with pytest.raises(ConfigError, match="'main' is the training data set"):
        ood.check_names(["main"], "main", conf)
    with pytest.raises(DataError, match="run the download stage"):
        ood.load(tmp_path / "nowhere", "other", conf_dir=conf)


def test_the_download_stage_fetches_an_ood_set_from_a_mirror_given_on_the_command_line(
    tmp_path, tiny_cfg, monkeypatch
):
    from aeflow.config.params import compose
    from aeflow.stages import download

    conf, files = _catalogue(tmp_path)
    # The catalogue's own mirror is gone: only the command line's can supply the files.
    local = (tmp_path / "mirror").rename(tmp_path / "local")
    (tmp_path / "repo" / "conf").mkdir(parents=True)
    conf.rename(tmp_path / "repo" / "conf" / "data")
    monkeypatch.chdir(tmp_path / "repo")  # the stage's catalogue: conf/data of the repository
    monkeypatch.setattr("aeflow.config.params.load_params", lambda *a, **k: tiny_cfg)
    tiny_cfg.evaluate.ood = ["other"]
    with pytest.raises(DataError, match=r"-S 'evaluate.ood_mirrors=\{other:\[file:///path/to/folder/\]\}'"):
        download.main()
    override = f"evaluate.ood_mirrors={{other:['{local.as_uri()}/']}}"
    tiny_cfg.evaluate.ood_mirrors = compose([override], REPO / "conf").evaluate.ood_mirrors
    download.main()
    assert ood.load(tiny_cfg.paths.ood, "other").shape == (30, 28, 28)
    assert sorted(p.name for p in (tmp_path / "repo" / tiny_cfg.paths.ood / "other").iterdir()) == sorted(
        files[k]["file"] for k in ood.OOD_FILES
    )


def test_ood_mirrors_name_known_sets_and_urls_the_download_can_fetch(tmp_path):
    conf, _ = _catalogue(tmp_path)
    assert ood.check_mirrors(None, conf) == {}
    assert ood.check_mirrors({"other": ["file:///x/", "https://y/"]}, conf) == {
        "other": ["file:///x/", "https://y/"]
    }
    with pytest.raises(ConfigError, match=r"unknown data set\(s\) \['cifar'\]; allowed: main, other"):
        ood.check_mirrors({"cifar": ["file:///x/"]}, conf)
    for bad in (["/local/folder/"], ["ftp://x/"], []):
        with pytest.raises(ConfigError, match=r"evaluate.ood_mirrors.other=.*need one or more base URLs"):
            ood.check_mirrors({"other": bad}, conf)


def test_fashion_mnist_is_known_to_the_real_catalogue():
    assert {"mnist", "fashion_mnist"} <= set(ood.available(REPO / "conf" / "data"))
    files = ood.spec("fashion_mnist", REPO / "conf" / "data").files
    assert set(files) == set(ood.OOD_FILES)
