"""Every value that used to reach a raw Python error (or was accepted silently) is refused up front: exit code 2,
one line on stderr naming the key, no traceback, and no run folder."""
import pytest

from tests.conftest import fast_overrides, run_cli

BAD_KEYS = [
    ("train.eval_batch_size=0", "train.eval_batch_size must be >= 1"),
    ("sched.step_size=0", "sched.step_size must be >= 1"),
    ("data.img_size=1", "data.img_size must be 0"),
    ("model.width=-1", "model.width must be >= 0"),
    ("sched.pct_start=1.5", "sched.pct_start must be in (0, 1)"),
    ("data.workers=-2", "data.workers must be >= 0, or -1"),
    ("run.name=" + "x" * 300, "run.name="),
    ("run.name=../../escape", "without / or"),
    ("run.name=..", "without / or"),
    ("optim.momentum=-0.5", "optim.momentum"),
    ("optim.weight_decay=-1", "optim.weight_decay must be >= 0"),
    ("sched.gamma=-0.1", "sched.gamma must be > 0"),
    ("train.early_stop_patience=-2", "train.early_stop_patience must be >= 0"),
    ("aug.crop_padding=-4", "aug.crop_padding and aug.cutout must be >= 0"),
    ("train.progressive_size=-8", "train.progressive_size must be >= 0"),
    ("aug.cutout=64", "aug.cutout=64 is larger than the 32 px images"),
    ("train.tta=true train.tta_translate=100", "train.tta_translate=100 must be smaller than the 32 px"),
]


@pytest.mark.parametrize("override, message", BAD_KEYS, ids=[b[0][:30] for b in BAD_KEYS])
def test_bad_value_is_one_line_and_exit_2(override, message, tmp_path, tiny_tree):
    result = run_cli("train", *fast_overrides(tmp_path, tiny_tree), *override.split(), timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert not (tmp_path.parent / "escape").exists()


BAD_VERB_ARGS = [
    (["predict", "{run}", "{img}", "--topk", "0"], "--topk and --batch-size must be >= 1"),
    (["predict", "{run}", "{img}", "--topk", "-1"], "--topk and --batch-size must be >= 1"),
    (["predict", "{run}", "{img}", "--batch-size", "0"], "--topk and --batch-size must be >= 1"),
    (["bench", "{run}", "--batch-sizes", "0"], "--batch-sizes must be positive"),
    (["bench", "{run}", "--batch-sizes", "1,x"], "--batch-sizes takes whole numbers"),
    (["train", "--config", "{tmp}"], "is a folder; give a YAML file"),
    (["train", "--resume", ""], "--resume needs a run folder"),
    (["data", "check", "{data}", "--near", "65"], "--near 65: give -1"),
    (["data", "check", "{data}", "--min-size", "-1"], "--min-size -1: give a side length"),
    (["data", "stats", "{data}", "--sample", "-1"], "--sample -1: give a number of images"),
    (["data", "preview", "{data}", "--n", "5000", "--out", "{tmp}/p.png"], "--n 5000: show 1 to 400 images"),
    (["embed", "{run}", "{img}", "--out", "{tmp}/e.npy", "--batch-size", "0"], "--batch-size 0: give at least 1"),
]


@pytest.fixture(scope="module")
def small_run(tiny_tree, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    result = run_cli("train", *fast_overrides(tmp, tiny_tree, **{"run.name": "ok"}))
    assert result.returncode == 0, result.stderr
    return tmp / "runs" / "ok"


@pytest.mark.parametrize("args, message", BAD_VERB_ARGS, ids=[" ".join(a[:1] + a[2:4]) for a, _ in BAD_VERB_ARGS])
def test_bad_verb_argument_is_one_line_and_exit_2(args, message, small_run, tiny_tree, tmp_path):
    image = next((tiny_tree / "test" / "circle").iterdir())
    filled = [a.format(run=small_run, img=image, tmp=tmp_path, data=tiny_tree) for a in args]
    result = run_cli(*filled, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


def test_artifact_of_an_unknown_model_is_one_line(small_run, tmp_path):
    import torch
    blob = torch.load(small_run / "model.pt", weights_only=True)
    blob["model"]["name"] = "vgg99"
    torch.save(blob, tmp_path / "model.pt")
    result = run_cli("predict", str(tmp_path / "model.pt"), str(tmp_path), timeout=120)
    assert result.returncode == 2 and "cannot be rebuilt here: unknown model 'vgg99'" in result.stderr
    del blob["model"]["args"]
    torch.save(blob, tmp_path / "model.pt")
    result = run_cli("predict", str(tmp_path / "model.pt"), str(tmp_path), timeout=120)
    assert result.returncode == 2 and "damaged CNN Mode artifact" in result.stderr
