"""`metascope classify`: single-cell images in, one row per image out (tab-separated or JSON lines)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edge.commands.common import add_model_args, load_classifier, probability_arg
from edge.errors import ExitCode

if TYPE_CHECKING:  # numpy and the model load only when the command runs (the CLI starts light)
    import numpy as np

    from edge.classify.classifier import Classifier

CLASSIFY_CHUNK = 32  # images decoded per predict call: one interpreter call, bounded memory


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "classify",
        help="classify single-cell images (one cell per image)",
        description="Classify single-cell images: one row per image, a summary on stderr.",
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images or folders (recursive)")
    add_model_args(parser)
    parser.add_argument("--json", action="store_true", help="JSON lines instead of tab-separated rows")
    parser.add_argument(
        "--threshold",
        type=probability_arg,
        help="probability at or above which a cell is positive (default: the card's)",
    )
    parser.set_defaults(handler=classify)


def iter_image_paths(
    inputs: Sequence[str],
    empty_folders: list[Path],
    ignore: Callable[[Path], bool] | None = None,
    left_out: list[Path] | None = None,
) -> Iterator[Path]:
    """Files as given; directories recursively, sorted, skipping hidden entries and the files
    ``ignore`` names (a command's own output). With ``left_out``, a folder's files whose name is
    not an image's (a README or LICENSE beside the crops) are appended there instead, not read.
    Every other file is yielded (a dangling link, a FIFO), so that reading it names the problem; a
    folder with nothing yielded is appended to ``empty_folders``."""
    from edge.capture.images import IMAGE_SUFFIXES

    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files = 0
            for found in sorted(path.rglob("*")):
                relative = found.relative_to(path).parts
                if any(part.startswith(".") for part in relative) or (ignore and ignore(found)) or found.is_dir():
                    continue
                if left_out is not None and found.suffix.lower() not in IMAGE_SUFFIXES:
                    left_out.append(found)
                    continue
                files += 1
                yield found
            if not files:  # a wrong path or an unmounted share: say so rather than succeed silently
                empty_folders.append(path)
        else:
            yield path


def shown(path: Path) -> str:
    """The path as one TSV field of plain text: backslash, tab, newline and carriage return
    escaped, bytes that are not UTF-8 as \\xNN (as the shell's $'...' would write them)."""
    raw = os.fsencode(path).replace(b"\\", b"\\\\")
    text = raw.decode("utf-8", errors="backslashreplace")
    return text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class Rows:
    """Prints one row per classified image (tab-separated or JSON lines) and a message per image
    skipped, counting both for the summary."""

    def __init__(self, classifier: Classifier, threshold: float, as_json: bool):
        self.classifier, self.threshold, self.as_json = classifier, threshold, as_json
        self.counts: Counter[str] = Counter()
        self.failed = 0
        self.cells_in_image: dict[Path, int] = {}  # images holding several cells are said so
        if not as_json:
            print("file\tlabel\tprobability")

    def skipped(self, message: str) -> None:
        self.failed += 1
        print(f"metascope classify: {message}", file=sys.stderr)

    def classify(self, paths: list[Path], cells: list[np.ndarray]) -> None:
        """One predict call for a chunk of images, then their rows."""
        import numpy as np

        from edge.classify.classifier import not_probabilities

        if not paths:
            return
        classifier = self.classifier
        probabilities = classifier.predict(np.stack(cells), check=False)
        for path, probability, bad in zip(paths, probabilities, not_probabilities(probabilities), strict=True):
            if bad:
                self.skipped(f"skipped {shown(path)}: the model's answer {probability!r} is not a probability")
                continue
            label = classifier.label_for(float(probability), self.threshold)
            self.counts[label] += 1
            several = self.cells_in_image.pop(path, 1)
            if several > 1:
                print(f"metascope classify: note: {shown(path)}: holds {several} cells; its row is the one nearest "
                      "the centre (a frame: `metascope detect` classifies each)", file=sys.stderr)  # fmt: skip
            if self.as_json:
                row = {"file": shown(path), "label": label, "probability": round(float(probability), 6)}
                row["model"] = classifier.card.name
                if several > 1:
                    row["cells_in_image"] = several
                print(json.dumps(row))
            else:
                print(f"{shown(path)}\t{label}\t{probability:.4f}")
        sys.stdout.flush()

    def summary(self) -> str:
        classifier = self.classifier
        per_label = ", ".join(f"{label} {self.counts[label]}" for label in classifier.labels)
        return (
            f"metascope classify: {sum(self.counts.values())} classified ({per_label}; threshold {self.threshold:g}), "
            f"{self.failed} failed; model {classifier.card.name} via {classifier.interpreter_name}"
        )


def classify(args: argparse.Namespace) -> int:
    from edge.capture.images import ImageError, read_grayscale
    from edge.cells.detect import DetectSettings, min_frame_side
    from edge.classify.preprocess import UnsegmentableCrop, crop_cell, finish_input
    from edge.classify.survey import CropSurvey

    classifier = load_classifier(args.model, args.threads, args.interpreter)
    rows = Rows(classifier, classifier.threshold if args.threshold is None else args.threshold, args.json)
    spec = classifier.input_spec
    paths: list[Path] = []
    cells: list[np.ndarray] = []
    empty_folders: list[Path] = []
    left_out: list[Path] = []
    survey = CropSurvey()
    min_side = min_frame_side(DetectSettings())  # an unmasked crop goes through detection's defaults
    for path in iter_image_paths(args.inputs, empty_folders, left_out=left_out):
        try:
            crop = crop_cell(read_grayscale(path, min_side), spec)
            cells.append(finish_input(crop.window, spec))
        except UnsegmentableCrop as exc:  # the image was fine; its cell could not be found
            rows.skipped(f"skipped {shown(path)}: {exc}")
            continue
        except ImageError as exc:
            rows.skipped(f"skipped {str(exc).replace(str(path), shown(path), 1)}")
            continue
        paths.append(path)
        survey.add(path, crop.area_px, crop.window, crop.cells_in_image)
        rows.cells_in_image[path] = crop.cells_in_image
        if len(paths) == CLASSIFY_CHUNK:
            rows.classify(paths, cells)
            paths, cells = [], []
    rows.classify(paths, cells)
    for folder in empty_folders:
        rows.skipped(f"{shown(folder)}: no {'image ' if left_out else ''}files in this folder")
    for note in survey.notes(classifier.card.extra):
        print(f"metascope classify: note: {note}", file=sys.stderr)
    print(rows.summary() + left_out_note(left_out), file=sys.stderr)
    return ExitCode.FAILED if rows.failed else ExitCode.OK


def left_out_note(left_out: list[Path]) -> str:
    """The summary's note of the files a folder walk did not take for images (not failures)."""
    if not left_out:
        return ""
    named = ", ".join(shown(path) for path in left_out[:3]) + (", ..." if len(left_out) > 3 else "")
    return f"; {len(left_out)} non-image file(s) left out ({named})"
