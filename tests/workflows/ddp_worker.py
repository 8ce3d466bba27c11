"""Run by tests/workflows/test_ddp.py under `torchrun`: train a few steps through the engine's data-parallel
parts and, after every optimizer step, compare every rank's parameters; rank 0 writes what it saw to argv[1]."""
import json
import sys

import torch

from cnnmode.config import Config
from cnnmode.data.loaders import TensorLoader
from cnnmode.engine import distributed
from cnnmode.engine.device import pick_precision
from cnnmode.engine.loop import train_one_epoch
from cnnmode.engine.setup import make_parts
from cnnmode.models import build_model


def main(out: str) -> None:
    world = distributed.start()
    device = torch.device("cpu")
    cfg = Config()
    cfg.train.batch_size = 16
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.arange(96) % 3
    loader = TensorLoader(images, labels, cfg.train.batch_size, train=True, aug=cfg.aug, mean=[0.5] * 3,
                          std=[0.25] * 3, img_size=32, device=device, seed=0, num_classes=3)
    loader = loader.sharded(world.rank, world.size)
    model = build_model("simplecnn", num_classes=3, in_channels=3, stem="cifar", width=8, img_size=32)
    torch.manual_seed(world.rank)  # different starting weights: DDP must make them rank 0's
    model.apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)
    parts = make_parts(cfg, model, steps_per_epoch=len(loader), device=device, precision=pick_precision("off", device),
                       world=world)
    checks = []

    def compare(step: int, tally) -> None:
        flat = torch.cat([p.detach().flatten() for p in parts.model.parameters()])
        all_flat = distributed.gather_objects(flat)
        checks.append(all(torch.equal(all_flat[0], other) for other in all_flat[1:]))

    loader.set_epoch(1)
    stats = train_one_epoch(parts.forward_model, loader, parts.criterion, parts.step, on_step=compare,
                            reduce=distributed.all_sum)
    if world.is_main:
        json.dump({"steps": len(checks), "equal": checks, "ranks": world.size, "loss": stats["loss"],
                   "batch_per_rank": len(next(iter(loader))[1])}, open(out, "w"))
    distributed.stop()


if __name__ == "__main__":
    main(sys.argv[1])
