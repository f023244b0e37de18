"""Reading a labelled folder: labels, groups, and what is skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.capture.images import read_grayscale
from edge.classify.preprocess import InputSpec, single_cell_input
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


def test_default_group_is_the_folder_below_the_label_paired_across_labels_by_name(folder: Path) -> None:
    files, labels = discover(folder)
    assert labels == ("MDA", "PC3")
    # MDA/MDA_10kD2 and PC3/PC3_10kD2 are one culture condition: one group holding both lines.
    assert sorted({f.group for f in files}) == ["10kD2", "20kD1"]
    assert sorted({f.folder_group for f in files}) == ["MDA_10kD2", "MDA_20kD1", "PC3_10kD2", "PC3_20kD1"]
    assert len(files) == 8, "hidden folders and non-images are not cells"
    dataset = load_folder(folder, SPEC)
    assert dataset.group_pairs.endswith("10kD2 = MDA_10kD2 + PC3_10kD2; 20kD1 = MDA_20kD1 + PC3_20kD1")


def test_groups_that_already_hold_both_labels_or_do_not_pair_keep_their_names(tmp_path: Path) -> None:
    for label, culture in (("MDA", "day1"), ("MDA", "day2"), ("PC3", "day1"), ("PC3", "day3")):
        crop(tmp_path / "both" / label / culture / "c1.png", 120)
    for label, culture in (("MDA", "MDA_a"), ("MDA", "MDA_b"), ("PC3", "PC3_c"), ("PC3", "PC3_d")):
        crop(tmp_path / "apart" / label / culture / "c1.png", 120)
    assert {f.group for f in discover(tmp_path / "both")[0]} == {"day1", "day2", "day3"}
    assert {f.group for f in discover(tmp_path / "apart")[0]} == {"MDA_a", "MDA_b", "PC3_c", "PC3_d"}


def test_a_flat_label_folder_is_refused_with_what_was_found_and_a_command_that_works(tmp_path: Path) -> None:
    for label in ("MDA", "PC3"):
        for condition in ("10kD2", "20kD1", "40kD1"):
            crop(tmp_path / label / f"{condition}_001.png", 120)
    with pytest.raises(DatasetError) as refusal:
        discover(tmp_path)
    message = str(refusal.value)
    assert "6 of 6 file(s) have no group" in message and "6 directly in a label folder" in message
    suggested = message.split("--group-by ")[-1].strip("`'")
    files, _ = discover(tmp_path, group_by=suggested)
    assert {f.group for f in files} == {"10kD2", "20kD1", "40kD1"}  # each holding both labels


@pytest.mark.parametrize(
    ("label_names", "file_name"),
    [
        (("MDA231", "PC3"), "{label}_{condition}({index}).png"),  # the shared data's names, flat
        (("MDA-MB-231", "PC3"), "{line}_{condition}_{index:03d}.png"),  # the line spelt apart from the folder
        (("MDA", "PC3"), "{condition}-{label}-{index}.png"),
    ],
)
def test_the_suggested_group_pattern_works_on_the_files_present(
    tmp_path: Path, label_names: tuple[str, str], file_name: str
) -> None:
    """Flat label folders named after the cell line: the suggestion takes the culture from the names
    (not the line) and every file then has a group holding both labels; no Python internals shown."""
    for label in label_names:
        for condition in ("10kD2", "10kD3", "20kD1"):
            for index in (7, 105):
                line = label.replace("-MB-", "")
                crop(tmp_path / label / file_name.format(label=label, line=line, condition=condition, index=index), 90)
    with pytest.raises(DatasetError) as refusal:
        discover(tmp_path)
    message = str(refusal.value)
    assert "None" not in message
    suggested = message.split("--group-by ")[-1].strip("`'")
    files, _ = discover(tmp_path, group_by=suggested)
    assert {f.group for f in files} == {"10kD2", "10kD3", "20kD1"}, suggested
    assert len({f.label for f in files if f.group == "10kD3"}) == 2


def test_unmasked_crops_are_masked_by_the_detector_and_one_without_a_cell_is_a_named_skip(
    tmp_path: Path, capsys
) -> None:
    from edge.capture.synthetic import add_sensor_noise
    from edge.capture.synthetic_cells import render_cell

    rng = np.random.default_rng(8)
    for label, kind in (("MDA", "round"), ("PC3", "spindle")):
        for index in range(3):
            canvas = np.full((140, 140), 110.0, dtype=np.float32)
            patch, mask = render_cell(rng, kind)
            top = (140 - mask.shape[0]) // 2
            canvas[top : top + mask.shape[0], top : top + mask.shape[1]][mask] = patch[mask]
            folder = tmp_path / label / f"{label}_g{index}"
            folder.mkdir(parents=True)
            Image.fromarray(add_sensor_noise(rng, canvas)).save(folder / "cell.png")
    crop(tmp_path / "PC3" / "PC3_g0" / "masked.png", 120)
    blank = add_sensor_noise(rng, np.full((140, 140), 110.0, dtype=np.float32))
    Image.fromarray(blank).save(tmp_path / "PC3" / "PC3_g1" / "blank.png")
    dataset = load_folder(tmp_path, InputSpec(size=32, window_px=128), max_bad_fraction=0.5)
    assert dataset.crop_kinds == {"premasked": 1, "segmented": 6, "unmasked": 0, "unsegmentable": 1}
    assert [path.name for path, _ in dataset.skipped] == ["blank.png"]
    assert "blank.png: unmasked crop in which the detector finds no cell" in capsys.readouterr().err
    assert len(dataset.areas) == len(dataset) == 7 and dataset.areas.min() > 150
    assert all(window[0, 0] == 0 for window in dataset.windows), "every window's background is masked"


def test_group_by_level_and_by_pattern(folder: Path) -> None:
    files, _ = discover(folder, group_by="2")
    assert {f.group for f in files} == {"plateA", "plateB"}
    files, labels = discover(folder, group_by=r"(\d+kD\d)", positive="MDA")
    assert labels == ("PC3", "MDA")
    assert {f.group for f in files} == {"10kD2", "20kD1"}


def test_inputs_are_the_pis_own_preprocessing(folder: Path) -> None:
    dataset = load_folder(folder, SPEC)
    expected = single_cell_input(read_grayscale(dataset.paths[0]), SPEC)
    assert np.array_equal(dataset.images[0], expected)
    assert dataset.images.shape == (8, 32, 32) and dataset.y.tolist() == [0] * 4 + [1] * 4


def test_a_few_unreadable_files_are_skipped_and_counted(folder: Path, capsys) -> None:
    for index in range(40):
        crop(folder / "MDA" / "MDA_10kD2" / "more" / f"m{index}.png", 100)
    (folder / "PC3" / "PC3_10kD2" / "broken.png").write_bytes(b"\x89PNG truncated")
    dataset = load_folder(folder, SPEC)
    assert len(dataset) == 48
    assert [path.name for path, _ in dataset.skipped] == ["broken.png"]
    assert "broken.png" in capsys.readouterr().err


def test_label_folder_without_readable_images_is_an_error(tmp_path: Path) -> None:
    crop(tmp_path / "a" / "g" / "1.png", 100)
    crop(tmp_path / "a" / "g" / "2.png", 100)
    (tmp_path / "b" / "g").mkdir(parents=True)
    (tmp_path / "b" / "g" / "1.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="label 'b' has no readable images"):
        load_folder(tmp_path, SPEC, max_bad_fraction=0.5)


def test_the_shared_data_pairs_into_seven_conditions_holding_both_lines() -> None:
    """The issue's layout, as published: MDA-MB-231/MDA231_10kD2 ... and PC3/PC3_10kD2 ...."""
    from conftest import SHARED_DATA

    root = SHARED_DATA / "fayyaz-mda231-pc3"
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set METASCOPE_SHARED_DATA)")
    files, labels = discover(root, positive="PC3")
    groups = {f.group for f in files}
    assert groups == {"10kD2", "10kD3", "20kD1", "20kD2", "40kD1", "40kD2", "40kD3"}
    assert all({f.label for f in files if f.group == group} == set(labels) for group in groups)
