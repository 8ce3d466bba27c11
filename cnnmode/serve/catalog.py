"""Every model a server holds, by name, each with its loaded versions (the newest answers by default), and the swap
that loads a new version from disk without dropping a request: it is loaded, warmed and checked beside the one
serving; only then does traffic move, while requests already inside the old version finish there."""
from __future__ import annotations

import asyncio
import time

import torch

from cnnmode.serve.metrics import ServeMetrics
from cnnmode.serve.model import ServedModel
from cnnmode.serve.options import ServeOptions

PARITY_IMAGES = 16
MIN_PARITY = 0.9  # top-1 agreement with the artifact's own fp32 model on seeded inputs (int8 backends differ a little)


class Unknown(LookupError):
    """A model name or version this server does not hold (answered 404)."""


class LoadFailed(RuntimeError):
    """A new version that could not be loaded, warmed or checked; the old one keeps serving."""


class Catalog:
    """Served models by name → their versions, oldest first."""

    def __init__(self, options: ServeOptions, metrics: ServeMetrics) -> None:
        self.options, self.metrics = options, metrics
        self.paths = dict(options.models())
        self.versions: dict[str, list[ServedModel]] = {}
        self._loading: dict[str, asyncio.Lock] = {}

    def add(self, model: ServedModel) -> None:
        """Hold a loaded (and, before start-up ends, warming) model as its name's newest version."""
        self.versions.setdefault(model.name, []).append(model)

    def load_all(self) -> None:
        """Load version 1 of every model (start-up: a model that cannot be loaded stops the server)."""
        for name, path in self.paths.items():
            if name not in self.versions:
                self.add(ServedModel(self.options, name, path, 1, self.metrics))

    @property
    def first(self) -> str:
        return next(iter(self.paths))

    def all(self) -> list[ServedModel]:
        return [m for versions in self.versions.values() for m in versions]

    def get(self, spec: str | None = None) -> ServedModel:
        """The model `name` (its newest version) or `name@version`; None: the first model's newest."""
        name, _, version = (spec or self.first).partition("@")
        versions = self.versions.get(name)
        if not versions:
            raise Unknown(f"no model '{name}' here; this server has: {', '.join(self.paths)}")
        if not version:
            return versions[-1]
        found = next((m for m in versions if str(m.version) == version), None)
        if found is None:
            raise Unknown(f"model '{name}' has no version '{version}' loaded; loaded: "
                          f"{', '.join(str(m.version) for m in versions)}")
        return found

    def listing(self) -> list[dict]:
        """What GET /v1/models answers."""
        return [{"model": name, "default_version": versions[-1].version,
                 "versions": [{"version": m.version, "checksum": f"sha256:{m.checksum}", "ready": m.ready,
                               "backend": m.runner.backend, "classes": len(m.runner.classes)} for m in versions]}
                for name, versions in self.versions.items()]

    async def load(self, name: str) -> ServedModel:
        """Load `name` again from its path on disk as a new version: warmed and checked beside the serving one,
        then made the default; versions beyond --keep-versions are drained and closed. Raises Unknown or
        LoadFailed (the serving version is untouched)."""
        if name not in self.paths:
            raise Unknown(f"no model '{name}' here; this server has: {', '.join(self.paths)}")
        async with self._loading.setdefault(name, asyncio.Lock()):
            version = self.versions[name][-1].version + 1
            try:
                model = await asyncio.to_thread(ServedModel, self.options, name, self.paths[name], version,
                                                self.metrics)
            except Exception as e:  # noqa: BLE001  (any reason a file cannot be served is reported, not raised)
                self.metrics.swaps.labels(name, "failed").inc()
                raise LoadFailed(f"model '{name}' version {version} did not load: {_reason(e)}; version "
                                 f"{self.versions[name][-1].version} keeps serving") from None
            try:
                await asyncio.to_thread(model.warm)
                await asyncio.to_thread(check_parity, model)
            except Exception as e:  # noqa: BLE001
                model.metrics.forget()
                model.close()
                self.metrics.swaps.labels(name, "failed").inc()
                raise LoadFailed(f"model '{name}' version {version} failed its check: {_reason(e)}; version "
                                 f"{self.versions[name][-1].version} keeps serving") from None
            model.batcher.start()
            self.add(model)  # traffic moves here: new requests take the newest version
            self.metrics.swaps.labels(name, "loaded").inc()
            for old in self.versions[name][:-self.options.keep_versions]:
                self.versions[name].remove(old)
                asyncio.get_running_loop().create_task(retire(old))
            return model

    async def stop(self) -> None:
        """Graceful end: every accepted image of every version is answered, then all is closed."""
        for model in self.all():
            await retire(model)


async def retire(model: ServedModel, patience_s: float | None = None) -> None:
    """Let the requests inside a version finish (each keeps its answer, up to --timeout-s and a little more),
    then its queued images, then close it."""
    deadline = time.monotonic() + (model.options.timeout_s + 5 if patience_s is None else patience_s)
    while model.users and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await model.batcher.stop()
    model.close()
    model.metrics.forget()


def check_parity(model: ServedModel) -> None:
    """The version's runner against its own artifact's fp32 model on seeded inputs: finite logits of the right
    shape, and top-1 agreement of at least MIN_PARITY (an exported file: the shape and finiteness only)."""
    p = model.runner.preprocess
    x = torch.randn(PARITY_IMAGES, p["channels"], p["img_size"], p["img_size"],
                    generator=torch.Generator().manual_seed(0))
    served = model.runner.padded(x, PARITY_IMAGES)
    if served.shape != (PARITY_IMAGES, len(model.runner.classes)) or not torch.isfinite(served).all():
        raise ValueError(f"its outputs are not {len(model.runner.classes)} finite logits per image")
    if model.art is None or model.runner.backend == "eager":
        return
    with torch.no_grad():
        reference = model.art.model.float().eval()(x)
    agreement = (served.argmax(-1) == reference.argmax(-1)).float().mean().item()
    if agreement < MIN_PARITY:
        raise ValueError(f"its {model.runner.backend} backend agrees with its own fp32 model on "
                         f"{100 * agreement:.0f}% of {PARITY_IMAGES} inputs (at least {100 * MIN_PARITY:.0f}% needed)")


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text or type(error).__name__
