import torch

from cnnmode.engine.device import pick_precision
from cnnmode.engine.loop import predict_logits


class Counting(torch.nn.Module):
    """Logits = per-column means of channel 0, so flips and shifts change them; counts forward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x[:, 0].mean(1)


def test_tta_averages_flips_and_shifts():
    x = torch.rand(6, 3, 4, 4)
    loader = [(x, torch.zeros(6, dtype=torch.long))]
    model, fp32, cpu = Counting(), pick_precision("off", torch.device("cpu")), torch.device("cpu")
    plain, _ = predict_logits(model, loader, fp32, cpu)
    assert torch.allclose(plain, x[:, 0].mean(1)) and model.calls == 1
    flip, _ = predict_logits(model, loader, fp32, cpu, tta=True)
    assert torch.allclose(flip, (x[:, 0].mean(1) + x[:, 0].flip(2).mean(1)) / 2) and model.calls == 3
    shifted, _ = predict_logits(model, loader, fp32, cpu, tta=True, shift=1)
    assert model.calls == 9  # 2 views x (centre + 2 shifts)
    padded = torch.nn.functional.pad(x, (1,) * 4, mode="reflect")
    views = [x, padded[:, :, :4, :4], padded[:, :, 2:, 2:]]
    mirrored = [(v[:, 0].mean(1) + v[:, 0].flip(2).mean(1)) / 2 for v in views]
    assert torch.allclose(shifted, mirrored[0] / 2 + (mirrored[1] + mirrored[2]) / 4)
