"""Models against data shapes and model options, checked before any JVM starts: which shapes
each registered model takes, one-line errors for a model that does not fit the data (train),
data or images of another shape than a saved model's (evaluate, predict), bad model options,
and --model / --model-option / --dataset reaching the run's config."""
import json

import numpy as np
import pytest

from lars_systemml import data, runtime, saved_model
from lars_systemml.cli import build_parser, config_from_args, main
from lars_systemml.errors import UserError
from lars_systemml.models import MODELS, Shape


def no_jvm(*args, **kwargs):
    raise AssertionError("started work before the shape was checked")


@pytest.fixture
def jvm_forbidden(monkeypatch):
    """Anything that would start a JVM (the java check, preparing data, a DML run) fails the test."""
    for target, name in ((runtime, "check_java"), (runtime, "run_dml"), (data, "write_binary"),
                         (data, "prepare"), (saved_model, "evaluate"), (saved_model, "predict")):
        monkeypatch.setattr(target, name, no_jvm)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def folder_dataset(folder, shape: Shape, n=6):
    """A bring-your-own folder of ``n`` random uint8 images per split in ``shape``."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        np.save(folder / f"{split}_x.npy",
                rng.integers(0, 256, (n, shape.channels * shape.height * shape.width)).astype(np.uint8))
        np.save(folder / f"{split}_y.npy", np.arange(n) % shape.classes)
    (folder / "dataset.json").write_text(json.dumps({"channels": shape.channels, "height": shape.height,
                                                     "width": shape.width, "classes": shape.classes}))
    return folder


def lenet5_model(folder):
    """A saved-model folder of a LeNet-5 trained on MNIST, as saved_model.load reads it (no weights)."""
    folder.mkdir(parents=True)
    for name in ("theta", "state", "scaling.csv"):
        (folder / name).write_text("")
    info = {"format": saved_model.FORMAT_VERSION, "model": "lenet5", "model_options": {}, "npar": 107786,
            "tensors": [], "shape": {"channels": 1, "height": 28, "width": 28, "classes": 10},
            "dataset": {"dataset": "mnist", "source": None, "train_size": 200, "test_size": 100,
                        "subset": "stratified"}, "config": {}}
    (folder / "model.json").write_text(json.dumps(info))
    return folder


def test_each_model_says_which_shapes_it_takes():
    mnist, rgb, tiny = Shape(1, 28, 28, 10), Shape(3, 8, 7, 5), Shape(1, 3, 3, 2)
    MODELS["lenet5"].check_shape(mnist)
    for other in (rgb, Shape(1, 32, 32, 10), Shape(3, 28, 28, 10)):
        with pytest.raises(UserError) as error:
            MODELS["lenet5"].check_shape(other)
        assert str(error.value) == (f"model lenet5 does not fit the data ({other}): LeNet-5 here is built "
                                    f"for 1x28x28 images (MNIST-style); choose another --model (mlp takes any shape)")
    MODELS["resnet"].check_shape(rgb)
    with pytest.raises(UserError, match=r"^model resnet does not fit the data \(1x3x3 images, 2 classes\): "
                                        r"the ResNet halves the image twice and needs at least 4x4 pixels"):
        MODELS["resnet"].check_shape(tiny)
    for shape in (mnist, rgb, tiny):
        MODELS["mlp"].check_shape(shape)


@pytest.mark.parametrize("model, options, message", [
    ("mlp", "height=3", r"unknown model option 'height=3' for mlp: its options are width \(default 256\), "
                        r"depth \(default 6\)"),
    ("lenet5", "width=3", r"unknown model option 'width=3' for lenet5: its options are none"),
    ("resnet", "channels", r"unknown model option 'channels' for resnet"),
    ("mlp", "width=wide", r"model option width of mlp must be an integer, got 'wide'"),
    ("resnet", "blocks=0", r"model option blocks of resnet must be >= 1, got 0"),
])
def test_bad_model_options_are_one_line_errors(model, options, message):
    with pytest.raises(UserError, match=f"^{message}") as error:
        MODELS[model].parse_options(options)
    assert "\n" not in str(error.value)


def test_model_options_have_one_canonical_form():
    assert MODELS["mlp"].parse_options("") == {"width": 256, "depth": 6}
    assert MODELS["mlp"].canonical_options(" depth=4 , width=256") == "depth=4"  # defaults dropped, sorted
    assert MODELS["resnet"].canonical_options("blocks=2,channels=4") == "blocks=2,channels=4"
    assert MODELS["resnet"].script_args("channels=4", Shape(3, 8, 7, 5)) == {
        "C": 3, "H": 8, "W": 7, "classes": 5, "resnet_channels": 4, "resnet_blocks": 1}


def test_cli_model_and_dataset_reach_the_config():
    args = build_parser().parse_args(["train", "--model", "resnet", "--model-option", "channels=4",
                                      "--model-option", "blocks=1", "--dataset", "fashion-mnist",
                                      "--optimizer", "lars"])
    c = config_from_args(args).validate()
    assert (c.model, c.model_options, c.dataset, c.optimizer) == ("resnet", "channels=4", "fashion-mnist", "lars")
    assert c.as_dict()["model"] == "resnet"  # recorded in metrics.json and every results row
    assert config_from_args(build_parser().parse_args(["train"])).model == "lenet5"  # the default
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--model", "vgg"])


def test_train_refuses_a_model_that_does_not_fit_before_any_jvm(tmp_path, capsys, jvm_forbidden):
    folder = folder_dataset(tmp_path / "rgb", Shape(3, 8, 8, 4))
    out = tmp_path / "run"
    assert main(["train", "--model", "lenet5", "--dataset", str(folder), "--output", str(out)]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        "error: model lenet5 does not fit the data (3x8x8 images, 4 classes): LeNet-5 here is built for "
        "1x28x28 images (MNIST-style); choose another --model (mlp takes any shape)")
    assert not out.exists()
    tiny = folder_dataset(tmp_path / "tiny", Shape(1, 3, 3, 2))
    assert main(["train", "--model", "resnet", "--dataset", str(tiny), "--output", str(out)]) == 2
    assert "needs at least 4x4 pixels" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_evaluate_refuses_data_of_another_shape_before_preparing_it(tmp_path, capsys, jvm_forbidden):
    model = lenet5_model(tmp_path / "run" / "model")
    folder = folder_dataset(tmp_path / "rgb", Shape(3, 8, 8, 4))
    assert main(["evaluate", "--model-dir", str(model.parent), "--dataset", str(folder)]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        "error: the data (3x8x8 images, 4 classes) does not fit the model (1x28x28 images, 10 classes): "
        "evaluate on a data set of the shape it was trained on")
    assert not (tmp_path / "run" / "evaluation.json").exists()


def test_predict_refuses_images_of_another_shape(tmp_path, capsys, jvm_forbidden):
    model = lenet5_model(tmp_path / "run" / "model")
    np.save(tmp_path / "x.npy", np.zeros((2, 32, 32), dtype=np.uint8))
    assert main(["predict", "--model-dir", str(model), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "p.csv")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "x.npy has images of shape (2, 32, 32), expected (N, 784)" in line
    assert not (tmp_path / "p.csv").exists()
