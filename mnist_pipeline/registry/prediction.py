"""Predicting the digit in PNG/JPEG files (`mnist-pipeline predict`), each made an MNIST-style
input: 28x28, white on black, the digit fitted into 20x20, centre of mass at (14, 14)."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_pipeline.data.mnist import IMAGE_SIDE
from mnist_pipeline.errors import PipelineError, first_line
from mnist_pipeline.runtime.environment import environment_set
from mnist_pipeline.runtime.tensorflow_start import start_tensorflow
from mnist_pipeline.tracking.predictions import PROGRESS_BAR_VARIABLE

FORMATS = ("PNG", "JPEG")
DIGIT_BOX = 20  # MNIST fits each digit into 20x20 pixels, inside a 28x28 image.
INK = 0.2  # Pixels at least this bright (0..1, after normalising) belong to the digit.
MIN_CONTRAST = 0.15  # Less than this between background and brightest pixel: a blank image.

Classifier = Callable[[np.ndarray], np.ndarray]  # (N, 784) float32 -> (N, 10) probabilities


@dataclass(frozen=True)
class Prediction:
    path: str
    digit: int | None = None
    probability: float | None = None
    error: str | None = None


def read_image(path: Path) -> Image.Image:
    """A PNG or JPEG file; anything else is a ValueError naming the problem."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns about an image over its decompression-bomb limit, and refuses
            # one twice as large: both are refused here, with the same error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ValueError(
            f"too large: over {Image.MAX_IMAGE_PIXELS:,} pixels, Pillow's limit against "
            "decompression bombs; scale it down"
        ) from None
    except FileNotFoundError:
        raise ValueError("file not found") from None
    except IsADirectoryError:
        raise ValueError("is a folder, not an image") from None
    except UnidentifiedImageError:
        raise ValueError("not an image Pillow can read; use PNG or JPEG") from None
    except OSError as error:
        raise ValueError(f"unreadable image ({error})") from None
    if image.format not in FORMATS:
        raise ValueError(f"{image.format} images are not supported; use PNG or JPEG")
    return image


def to_mnist_input(image: Image.Image) -> np.ndarray:
    """An image of one digit, any size or colours, as a prepared MNIST image: (784,) float32."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent pixels are background: lay the image on white, like ink on paper.
        background = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(background, image.convert("RGBA"))
    pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if np.median(border) > 0.5:
        pixels = 1.0 - pixels  # Dark digit on a light background: MNIST is the other way.
        border = 1.0 - border
    background, brightest = float(np.median(border)), float(pixels.max())
    if brightest - background < MIN_CONTRAST:
        raise ValueError("no digit found: the image is blank or has almost no contrast")
    pixels = np.clip((pixels - background) / (brightest - background), 0.0, 1.0)
    # Crop the digit, scale it into DIGIT_BOX and put its centre of mass at pixel (14, 14),
    # where MNIST has it (measured on the test set), not at 13.5.
    rows, columns = np.nonzero(pixels >= INK)
    digit = pixels[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    scale = DIGIT_BOX / max(digit.shape)
    size = (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale)))
    resized = Image.fromarray(np.uint8(np.round(digit * 255))).resize(size, Image.LANCZOS)
    small = np.asarray(resized, dtype=np.float32) / 255.0
    height, width = small.shape
    mass = small.sum()
    centre_row = (small.sum(axis=1) @ np.arange(height)) / mass
    centre_column = (small.sum(axis=0) @ np.arange(width)) / mass
    top = int(np.clip(round(IMAGE_SIDE / 2 - centre_row), 0, IMAGE_SIDE - height))
    left = int(np.clip(round(IMAGE_SIDE / 2 - centre_column), 0, IMAGE_SIDE - width))
    canvas = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    canvas[top : top + height, left : left + width] = small
    return canvas.reshape(-1)


def predict_files(paths: list[str], classify: Classifier) -> list[Prediction]:
    """One prediction per path, in order; an unreadable file gets its error, the rest a digit."""
    inputs, predictions = {}, {}
    for path in paths:
        try:
            inputs[path] = to_mnist_input(ImageOps.exif_transpose(read_image(Path(path))))
        except ValueError as error:
            predictions[path] = Prediction(path, error=str(error))
    if inputs:
        probabilities = np.asarray(classify(np.stack(list(inputs.values()))))
        for path, row in zip(inputs, probabilities, strict=True):
            predictions[path] = Prediction(path, int(row.argmax()), float(row.max()))
    return [predictions[path] for path in paths]


def load_classifier(model: str) -> Classifier:
    """A `.keras` file (Keras' safe mode) or an MLflow model URI (MLflow's Keras flavour)."""
    if Path(model).suffix == ".keras" or Path(model).is_file():
        from mnist_pipeline.modelling.network import load_model_safely

        keras_model = load_model_safely(Path(model))
    else:
        start_tensorflow()  # Before MLflow's Keras flavour loads it: quietly.
        import mlflow

        # MLflow's download progress bar only on a terminal: elsewhere its raw codes.
        terminal = str(sys.stderr.isatty()).lower()
        quiet = {PROGRESS_BAR_VARIABLE: os.environ.get(PROGRESS_BAR_VARIABLE, terminal)}
        try:
            with environment_set(quiet):
                keras_model = mlflow.keras.load_model(model)
        except Exception as error:  # MLflow raises many types for a model it cannot load.
            raise PipelineError(
                f"cannot load the model {model} ({first_line(error)}); promote a run "
                "(`mnist-pipeline promote`) or pass --model with a models:/ or runs:/ URI or a "
                ".keras file"
            ) from None
    # No progress bar: a few images take a moment, and Keras' would write raw terminal codes
    # into redirected output.
    return lambda features: keras_model.predict(features, verbose=0)
