"""Reading a labelled folder: labels, groups, and what is skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.preprocess import InputSpec, read_grayscale, single_cell_input
from train.dataset import DatasetError, discover, load_folder

SPEC = InputSpec(size=32, window_px=64)


def crop(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((80, 80), np.uint8)
    image[30:50, 25:45] = value
    Image.fromarray(image).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for label, culture in (("MDA", "MDA_10kD2"), ("MDA", "MDA_20kD1"), ("PC3", "PC3_10kD2"), ("PC3", "PC3_20kD1")):
        for plate in ("plateA", "plateB"):
            crop(tmp_path / label / culture / plate / "c1.png", 120)
    (tmp_path / "PC3" / ".hidden").mkdir()
    crop(tmp_path / "PC3" / ".hidden" / "x.png", 10)
    (tmp_path / "PC3" / "notes.txt").write_text("not an image")
    return tmp_path


def test_default_group_is_the_folder_below_the_label(folder: Path) -> None:
    files, labels = discover(folder)
    assert labels == ("MDA", "PC3")
    assert sorted({f.group for f in files}) == ["MDA_10kD2", "MDA_20kD1", "PC3_10kD2", "PC3_20kD1"]
    assert len(files) == 8, "hidden folders and non-images are not cells"


def test_group_by_level_and_by_pattern(folder: Path) -> None:
    files, _ = discover(folder, group_by="2")
    assert {f.group for f in files} == {"plateA", "plateB"}
    files, labels = discover(folder, group_by=r"(\d+kD\d)", positive="MDA")
    assert labels == ("PC3", "MDA")
    assert {f.group for f in files} == {"10kD2", "20kD1"}


def test_inputs_are_the_pis_own_preprocessing(folder: Path) -> None:
    dataset = load_folder(folder, SPEC, progress=False)
    expected = single_cell_input(read_grayscale(dataset.paths[0]), SPEC)
    assert np.array_equal(dataset.images[0], expected)
    assert dataset.images.shape == (8, 32, 32) and dataset.y.tolist() == [0] * 4 + [1] * 4


def test_a_few_unreadable_files_are_skipped_and_counted(folder: Path, capsys) -> None:
    for index in range(40):
        crop(folder / "MDA" / "MDA_10kD2" / "more" / f"m{index}.png", 100)
    (folder / "PC3" / "PC3_10kD2" / "broken.png").write_bytes(b"\x89PNG truncated")
    dataset = load_folder(folder, SPEC, progress=False)
    assert len(dataset) == 48
    assert [path.name for path, _ in dataset.skipped] == ["broken.png"]
    assert "broken.png" in capsys.readouterr().err


def test_label_folder_without_readable_images_is_an_error(tmp_path: Path) -> None:
    crop(tmp_path / "a" / "g" / "1.png", 100)
    crop(tmp_path / "a" / "g" / "2.png", 100)
    (tmp_path / "b" / "g").mkdir(parents=True)
    (tmp_path / "b" / "g" / "1.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="label 'b' has no readable images"):
        load_folder(tmp_path, SPEC, progress=False, max_bad_fraction=0.5)
