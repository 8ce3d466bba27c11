"""classify_frames: the same labels as `predict` on the same frames saved as PNG, stride, batches."""
import cv2
import numpy as np
import pytest
import torch

from cnnmode.deploy.predict import Predictor
from cnnmode.deploy.runtime import load_runner
from cnnmode.deploy.video import FileSource, Frame, FrameClassifier, classify_frames


def _decoded(video) -> list[np.ndarray]:
    cap, frames = cv2.VideoCapture(str(video)), []
    while True:
        ok, image = cap.read()
        if not ok:
            return frames
        frames.append(image)


def test_labels_match_predict_on_the_same_frames_saved_as_png(trained_run, video, tmp_path):
    frames = _decoded(video)
    for i, image in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), image)
    expected = Predictor(trained_run).predict([str(tmp_path)], topk=3).predictions
    results = list(classify_frames(frames, trained_run, batch_size=8, topk=3))
    assert len(results) == len(frames) == len(expected) == 30
    for got, want in zip(results, expected):
        assert [c for c, _ in got.top] == [c for c, _ in want.top]
        assert np.allclose([p for _, p in got.top], [p for _, p in want.top], atol=1e-5)
    assert len({r.label for r in results}) > 1  # the clip's classes change every second


def test_stride_holds_the_last_label_and_batches_do_not_change_results(trained_run, video):
    one = list(classify_frames(FileSource(str(video)).frames(), trained_run, batch_size=1, stride=3))
    many = list(classify_frames(FileSource(str(video)).frames(), trained_run, batch_size=8, stride=3))
    assert [r.frame.index for r in one] == list(range(30)) == [r.frame.index for r in many]
    assert [r.classified for r in one] == [i % 3 == 0 for i in range(30)]
    for r in one:
        assert r.top == one[r.frame.index - r.frame.index % 3].top  # held from the last classified frame
    assert all(np.allclose([p for _, p in a.top], [p for _, p in b.top], atol=1e-5) for a, b in zip(one, many))


def test_grabbed_frames_are_not_decoded_and_cannot_be_classified(trained_run, video):
    source = FileSource(str(video))
    frames = list(source.frames(decode=lambda i: i % 5 == 0))
    assert len(frames) == 30 and source.read == 30
    assert [f.image is not None for f in frames] == [i % 5 == 0 for i in range(30)]
    assert sum(r.classified for r in classify_frames(frames, trained_run, stride=5)) == 6
    with pytest.raises(ValueError, match="grabbed"):
        list(classify_frames([Frame(0, 0.0, None, 0.0)], trained_run))


def test_a_batch_of_frames_is_preprocessed_exactly_as_frame_by_frame(trained_run):
    classifier = FrameClassifier(load_runner(trained_run))
    rng = np.random.default_rng(0)
    for shapes in ([(480, 640, 3)] * 3, [(21, 45, 3)] * 2, [(480, 640, 3), (64, 64, 3)]):  # down, up, mixed
        frames = [rng.integers(0, 256, s, np.uint8) for s in shapes]
        assert torch.equal(classifier.batch(frames), torch.stack([classifier.tensor(f) for f in frames]))


def test_compiling_backends_see_only_full_batches(trained_run):
    seen = []
    runner = load_runner(trained_run)
    eager = runner.forward
    runner.forward = lambda x: seen.append(len(x)) or eager(x)
    frames = [np.full((40, 40, 3), i * 20, np.uint8) for i in range(11)]
    expected = [r.top for r in classify_frames(frames, runner, batch_size=4)]
    runner.backend = "int8-x86"  # a backend that compiles once per batch shape: the last 3 frames run padded to 4
    seen.clear()
    padded = [r.top for r in classify_frames(frames, runner, batch_size=4)]
    assert seen == [4, 4, 4]
    assert [[c for c, _ in t] for t in padded] == [[c for c, _ in t] for t in expected]
