"""`mnist-pipeline predict`: digit images of any size and colours become MNIST-style inputs;
bad files are reported one by one while the others are still predicted."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.tiny_store import run_cli
from PIL import Image, ImageDraw, ImageOps

from mnist_pipeline.registry import prediction as predict


def drawn_seven(size: int = 200) -> Image.Image:
    """A thick white 7 on black, the way MNIST stores digits."""
    image = Image.new("L", (size, size), 0)
    scale = size / 200
    stroke = [(50 * scale, 45 * scale), (150 * scale, 45 * scale), (85 * scale, 165 * scale)]
    ImageDraw.Draw(image).line(stroke, fill=255, width=round(22 * scale), joint="curve")
    return image


def as_image(vector: np.ndarray) -> Image.Image:
    return Image.fromarray(np.uint8(np.round(vector.reshape(28, 28) * 255)))


def test_output_is_laid_out_like_mnist():
    digit = predict.to_mnist_input(drawn_seven()).reshape(28, 28)
    assert digit.dtype == np.float32 and digit.min() == 0.0 and digit.max() == 1.0
    rows, columns = np.nonzero(digit > 0.05)
    assert max(np.ptp(rows), np.ptp(columns)) + 1 <= 21  # fitted into MNIST's 20x20 box
    mass = digit.sum()
    centre = (digit.sum(1) @ np.arange(28) / mass, digit.sum(0) @ np.arange(28) / mass)
    assert np.allclose(centre, 14, atol=0.5)  # centre of mass where MNIST has it


def test_an_input_already_laid_out_like_mnist_is_left_as_it_is():
    reference = predict.to_mnist_input(drawn_seven())
    again = predict.to_mnist_input(as_image(reference))
    assert np.abs(again - reference).max() < 0.02


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_an_mnist_digit_scaled_up_inverted_and_off_centre_comes_back(tmp_path, suffix):
    """Known answer: an MNIST-style 28x28 digit drawn ten times larger, dark on light, off
    centre on a wide page and saved as PNG or JPEG gives back the same 28x28 input."""
    reference = predict.to_mnist_input(drawn_seven())
    large = ImageOps.invert(as_image(reference)).resize((280, 280), Image.BICUBIC)
    page = Image.new("L", (520, 400), 255)
    page.paste(large, (20, 100))
    path = tmp_path / f"seven{suffix}"
    page.convert("RGB").save(path)
    recovered = predict.to_mnist_input(predict.read_image(path))
    assert np.abs(recovered - reference).mean() < 0.03
    assert np.corrcoef(recovered, reference)[0, 1] > 0.97


def test_light_or_transparent_backgrounds_give_the_same_input():
    white_on_black = predict.to_mnist_input(drawn_seven())
    black_on_white = predict.to_mnist_input(ImageOps.invert(drawn_seven()))
    np.testing.assert_allclose(black_on_white, white_on_black, atol=1e-6)
    ink = drawn_seven()
    transparent = Image.new("RGBA", ink.size, (0, 0, 0, 0))
    transparent.putalpha(ink)  # black ink where the 7 is, transparent elsewhere
    np.testing.assert_allclose(predict.to_mnist_input(transparent), white_on_black, atol=1e-6)
    grey_paper = Image.eval(ImageOps.invert(drawn_seven()), lambda v: 60 + v * 140 // 255)
    assert np.abs(predict.to_mnist_input(grey_paper) - white_on_black).mean() < 0.02


def test_a_blank_image_has_no_digit():
    with pytest.raises(ValueError, match="no digit found"):
        predict.to_mnist_input(Image.new("L", (50, 80), 200))


def test_files_that_are_not_png_or_jpeg_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("seven")
    drawn_seven(40).save(tmp_path / "seven.gif")
    cases = {
        tmp_path / "absent.png": "file not found",
        tmp_path: "is a folder, not an image",
        tmp_path / "notes.txt": "not an image Pillow can read; use PNG or JPEG",
        tmp_path / "seven.gif": "GIF images are not supported; use PNG or JPEG",
    }
    for path, message in cases.items():
        with pytest.raises(ValueError, match=message):
            predict.read_image(path)


def test_a_bad_file_does_not_stop_the_others(tmp_path):
    drawn_seven().save(tmp_path / "a.png")
    ImageOps.invert(drawn_seven(60)).save(tmp_path / "b.jpg")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    batches = []

    def classify(features):
        batches.append(features.shape)
        return np.eye(10, dtype=np.float32)[[3, 5]] * 0.9 + 0.01

    paths = [str(tmp_path / name) for name in ("a.png", "bad.png", "b.jpg")]
    results = predict.predict_files(paths, classify)
    assert batches == [(2, 784)]  # the good files, in one batch
    assert [(r.digit, r.error is None) for r in results] == [(3, True), (None, False), (5, True)]
    assert results[0].probability == pytest.approx(0.91)
    assert results[1].path == paths[1] and results[1].error.startswith("unreadable image")


def test_cli_predicts_with_a_logged_model_and_reports_bad_files(tiny_store, tmp_path, capsys):
    drawn_seven().save(tmp_path / "seven.png")
    (tmp_path / "bad.txt").write_text("not an image")
    model = f"runs:/{tiny_store.run_ids['default-lr']}/model"
    status = run_cli(
        "predict", str(tmp_path / "seven.png"), str(tmp_path / "bad.txt"), "--model", model
    )
    assert status == 1  # one file failed
    captured = capsys.readouterr()
    digit_line = captured.out.strip()
    assert digit_line.startswith(f"{tmp_path / 'seven.png'}: ") and "(probability 0." in digit_line
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {tmp_path / 'bad.txt'}: not an image Pillow can read; use PNG or JPEG"
    ]
    # Output not on a terminal: no progress bars (Keras', MLflow's download), whose terminal
    # codes would land in a log.
    assert not any(code in captured.out + captured.err for code in ("\x1b", "\r", "\b"))


def test_an_image_over_pillows_bomb_limit_is_one_error_line(tmp_path, monkeypatch, capsys):
    """Pillow warns about an image over Image.MAX_IMAGE_PIXELS and refuses one twice as large:
    either is one error line saying what to do, and no bare warning."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    drawn_seven(40).save(tmp_path / "warned.png")  # 1,600 pixels: Pillow's warning
    drawn_seven(50).save(tmp_path / "refused.png")  # 2,500 pixels: Pillow's error
    paths = [str(tmp_path / name) for name in ("warned.png", "refused.png")]
    results = predict.predict_files(paths, lambda features: pytest.fail("nothing to classify"))
    message = "too large: over 1,000 pixels, Pillow's limit against decompression bombs; scale"
    assert [r.error.startswith(message) for r in results] == [True, True]
    assert "Warning" not in capsys.readouterr().err


def test_cli_loads_keras_files_safely_and_only_keras_files(tmp_path, params_tree, capsys):
    from mnist_pipeline.modelling.network import build_model
    from mnist_pipeline.params import parse_params

    params_tree["train"]["hidden_units"] = 4
    build_model(parse_params(params_tree).train, input_dim=784).save(tmp_path / "m.keras")
    drawn_seven().save(tmp_path / "seven.png")
    assert (
        run_cli("predict", str(tmp_path / "seven.png"), "--model", str(tmp_path / "m.keras")) == 0
    )
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'seven.png'}: ")

    (tmp_path / "m.h5").write_bytes(b"legacy")
    assert run_cli("predict", str(tmp_path / "seven.png"), "--model", str(tmp_path / "m.h5")) == 2
    assert "only native .keras model files are loaded" in capsys.readouterr().err


def test_without_a_champion_the_error_says_to_promote(tiny_store_copy, tmp_path, capsys):
    drawn_seven().save(tmp_path / "seven.png")
    assert run_cli("predict", str(tmp_path / "seven.png")) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: cannot load the model models:/mnist-mlp@champion")
    assert "mnist-pipeline promote" in error and error.count("\n") == 1
