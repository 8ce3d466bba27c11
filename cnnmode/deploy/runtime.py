"""The runtime registry: every way CNN Mode runs a model, behind one interface (a batch of normalised NCHW
images in, fp32 logits on the CPU out). `Predictor`, `bench`, `export`'s verification, and next `serve` and
`video`, all get their model through `load_runner`.

Backends build from an artifact; exported files run on their own runtime (`.onnx` on ONNX Runtime, `.ts` on
TorchScript) with the `preprocess.json` written beside them.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from cnnmode.artifact import Artifact, calibrated, check_preprocess, load_artifact
from cnnmode.deploy.formats import ExportOptions, example_batch, write_onnx, write_onnx_int8
from cnnmode.deploy.quantize import quantize_x86
from cnnmode.deploy.openvino_runtime import openvino_fp32, openvino_int8
from cnnmode.deploy.samples import Calibration, calibration_for
from cnnmode.engine.cpu import cpu_kind
from cnnmode.engine.device import pick_device
from cnnmode.errors import UsageError
from cnnmode.registry import Registry
from cnnmode.rundir import Target, resolve_target
from cnnmode.unknowns import Rejector, from_state, load_rejector, logits_and_features, reject_threshold

Forward = Callable[[torch.Tensor], torch.Tensor]
Builder = Callable[[Artifact, torch.device, "Calibration | None"], Forward]
BACKENDS: Registry[Builder] = Registry("backend")
CALIBRATED = ("int8", "int8-x86", "openvino-int8")  # backends that calibrate on real images
EXPORTED = {".onnx": "onnxruntime", ".ts": "torchscript"}  # exported file suffix → the backend that runs it
FEATURES = ("eager", "eager-bf16")  # backends that also give the embedding the k-NN score needs
SHAPE_BOUND = ("compile", "int8-x86")  # backends that compile once per batch shape
ON_DEVICE = ("eager", "eager-bf16", "compile")  # backends that run on the chosen device; the others on the CPU
MIN_AGREEMENT = 0.995  # the parity gate: top-1 agreement with eager fp32 on real test images (`bench`)


@dataclass
class Runner:
    """A model ready to run: `runner(batch)` → fp32 logits on the CPU, with the preprocessing it expects."""
    backend: str
    preprocess: dict  # img_size, mean, std, channels
    classes: list[str]
    forward: Forward
    name: str = ""  # the model's registry name
    temperature: float = 1.0  # logits are divided by it before the softmax (fitted after training; 1 if not)
    chosen_by: str = ""  # why this backend, when `auto` chose it
    device: str = "cpu"  # where the model runs
    rejector: Rejector | None = None  # the fitted unknown-image score, when the model has one
    features: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None  # → (logits, embeddings)

    def reject_threshold(self, reject: str | float | None, coverage: float | None = None) -> float | None:
        """`--reject` as a threshold for this runner (None for off), refused in one line where it cannot judge: a
        multi-label model's score is the k-NN distance alone, which needs the embedding of an eager backend."""
        threshold = reject_threshold(reject, coverage, self.rejector)
        if threshold is not None and self.multilabel and self.features is None:
            raise UsageError(f"--reject on a multi-label model needs the image embedding, which the {self.backend} "
                             f"backend does not give: use --backend {' or '.join(FEATURES)}")
        return threshold

    def describe(self) -> str:
        """'backend openvino-int8 on cpu (auto: ...)', the line verbs print first."""
        return f"backend {self.backend} on {self.device}" + (f" ({self.chosen_by})" if self.chosen_by else "")

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.forward(batch.float().contiguous())

    def padded(self, batch: torch.Tensor, size: int) -> torch.Tensor:
        """Logits for `batch`, run padded to `size` rows on the backends that compile per batch shape, so that a
        smaller batch (a file's last one, a quiet moment on a server) does not wait for a new compilation."""
        n = len(batch)
        if self.backend in SHAPE_BOUND and size > n:
            batch = torch.cat([batch, batch[:1].expand(size - n, *batch.shape[1:])])
        return self(batch)[:n]

    def assess(self, batch: torch.Tensor, threshold: float | None, size: int = 0) -> tuple[
            torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(logits, ood score, unknown) of a batch: the scores are None unless `threshold` is given. Without the
        embedding (backends other than eager), the score is the calibrated max-softmax alone."""
        if threshold is None or self.rejector is None:
            return self.padded(batch, size), None, None
        if self.features is not None:
            logits, feats = self.features(batch.float().contiguous())
        else:
            logits, feats = self.padded(batch, size), None
        score, unknown = self.rejector.judge((logits.float() / self.temperature).log_softmax(-1), feats, threshold)
        return logits, score, unknown

    @property
    def reject_note(self) -> str:
        """What deciding "unknown" rests on with this runner, for the first line verbs print."""
        if self.rejector is None:
            return "no unknown-image score (fit one with `cnnmode calibrate RUN`)"
        if self.features is None and self.rejector.needs_features:
            return f"unknown images by max-softmax only (the {self.backend} backend gives no embedding for k-NN)"
        return f"unknown images by the {self.rejector.score if self.features else 'msp'} score"

    def warm(self, size: int) -> None:
        """Run one blank batch of `size` images, so that compiling backends compile now, not on real input."""
        p = self.preprocess
        self(torch.zeros(size, p["channels"], p["img_size"], p["img_size"]))

    @property
    def multilabel(self) -> bool:
        """True for a model of label sets: sigmoid probabilities, each label present from its own threshold."""
        return self.preprocess.get("task") == "multilabel"

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities from this runner's logits: softmax over the classes, or one sigmoid per label
        for a multi-label model."""
        return calibrated(logits, self.temperature, self.multilabel)

    def present(self, probs: torch.Tensor, threshold: float = 0.0) -> list[list[int]]:
        """Per image, the labels present, most probable first: each label from its fitted threshold (0.5 when the
        model has none), or from `threshold` when it is above 0. A single-label model: its top class."""
        if not self.multilabel:
            return [[int(i)] for i in probs.argmax(-1)]
        cut = torch.full((probs.shape[-1],), threshold) if threshold > 0 else \
            torch.tensor(self.preprocess.get("thresholds") or [0.5] * probs.shape[-1])
        return [[int(i) for i in row.argsort(descending=True) if row[i] >= cut[i]] for row in probs]


def ort_session(path: Path) -> Forward:
    """An ONNX Runtime CPU session on `path` with full graph optimisation and torch's thread count."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.cpu().numpy()})[0])


def _fresh(art: Artifact, device: torch.device) -> torch.nn.Module:
    return copy.deepcopy(art.model).float().eval().to(device)  # backends change layouts in place


@BACKENDS.register("eager", help="PyTorch fp32, as trained")
def _eager(art: Artifact, device: torch.device, calib: Calibration | None) -> Forward:
    return _fp32(_fresh(art, device), device)


def _fp32(model: torch.nn.Module, device: torch.device) -> Forward:
    return lambda x: model(x.to(device)).float().cpu()


def _autocast_bf16(model: torch.nn.Module, device: torch.device) -> Forward:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return model(x.to(device).contiguous(memory_format=torch.channels_last)).float().cpu()
    return run


def _with_features(art: Artifact, backend: str, device: torch.device) -> Callable:
    """(logits, embeddings) per batch on the eager backends: the backend's own forward, with the classifier head's
    input caught on the way (one forward pass gives both)."""
    model = _fresh(art, device)
    forward = (_autocast_bf16(model.to(memory_format=torch.channels_last), device) if backend == "eager-bf16"
               else _fp32(model, device))

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, feats = logits_and_features(model, x, forward)
        return logits, feats.cpu()
    return run


@BACKENDS.register("eager-bf16", help="PyTorch bf16 autocast, channels-last")
def _eager_bf16(art: Artifact, device: torch.device, calib: Calibration | None) -> Forward:
    return _autocast_bf16(_fresh(art, device).to(memory_format=torch.channels_last), device)


@BACKENDS.register("compile", help="torch.compile (frozen weights) of the bf16 channels-last model")
def _compile(art: Artifact, device: torch.device, calib: Calibration | None) -> Forward:
    run = _autocast_bf16(torch.compile(_fresh(art, device).to(memory_format=torch.channels_last)), device)

    def frozen(x: torch.Tensor) -> torch.Tensor:
        # freezing folds batch norms into the convolutions and pre-packs weights for oneDNN: 25-30% faster on a CPU
        with torch._inductor.config.patch(freezing=True):
            return run(x)
    return frozen


@BACKENDS.register("torchscript", help="traced, frozen TorchScript (optimised for inference where it can be)")
def _torchscript(art: Artifact, device: torch.device, calib: Calibration | None) -> Forward:
    model, example = _fresh(art, torch.device("cpu")), example_batch(art.preprocess)
    frozen = torch.jit.freeze(torch.jit.trace(model, example))
    try:
        optimized = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, example)))
        for _ in range(3):  # the JIT specialises after a few calls; some ops (uneven adaptive pooling) fail then
            optimized(example)
        frozen = optimized
    except RuntimeError:
        pass
    return lambda x: frozen(x.cpu())


def _via_file(art: Artifact, write: Callable, name: str, calib: Calibration | None) -> Forward:
    with tempfile.TemporaryDirectory() as tmp:  # ONNX Runtime holds the model in memory once the session exists
        path = Path(tmp) / name
        images = calib.images if calib is not None else None
        write(art, path, ExportOptions(calib=images, int8_reduce_range=cpu_kind().int8_reduce_range))
        return ort_session(path)


@BACKENDS.register("onnxruntime", help="ONNX (torch.export) on ONNX Runtime's CPU provider")
def _onnxruntime(art: Artifact, device: torch.device, calib: Calibration | None) -> Forward:
    return _via_file(art, write_onnx, "model.onnx", calib)


@BACKENDS.register("int8", help="ONNX Runtime static int8 (QDQ), calibrated on real images")
def _int8(art: Artifact, device: torch.device, calib: Calibration | None) -> Forward:
    return _via_file(art, write_onnx_int8, "model-int8.onnx", calib)


@BACKENDS.register("int8-x86", help="PyTorch PT2E int8 compiled to oneDNN kernels (x86 CPUs with VNNI/AMX)")
def _int8_x86(art: Artifact, device: torch.device, calib: Calibration | None) -> Forward:
    return quantize_x86(_fresh(art, torch.device("cpu")), calib.images)


@BACKENDS.register("openvino", help="OpenVINO's CPU plugin, fp32")
def _openvino(art: Artifact, device: torch.device, calib: Calibration | None) -> Forward:
    return openvino_fp32(art)


@BACKENDS.register("openvino-int8", help="OpenVINO int8 (NNCF post-training quantization), cached beside the "
                                         "artifact")
def _openvino_int8(art: Artifact, device: torch.device, calib: Calibration | None) -> Forward:
    return openvino_int8(art, calib)


# Packages a backend needs beyond torch; `auto` passes over a backend whose packages are missing.
NEEDS = {"onnxruntime": ("onnxruntime",), "int8": ("onnxruntime",), "int8-x86": ("torchao",),
         "openvino": ("openvino",), "openvino-int8": ("openvino", "nncf")}
AUTO_TABLE = Path(__file__).with_name("backend_table.json")  # written by benchmarks/backend_table.py


def auto_backend(device: str | torch.device, can_calibrate: bool) -> tuple[str, str]:
    """(backend, why) for `--backend auto`: on a CPU, the first backend of this CPU kind's row in the measured table
    (backends that passed the parity gate, fastest first) that is installed and, if it calibrates, has images to
    calibrate on; eager on a GPU and on a kind the table has not measured."""
    device = torch.device(device)
    if device.type != "cpu":
        return "eager", f"auto on {device.type}"
    kind = cpu_kind().name
    row = json.loads(AUTO_TABLE.read_text()).get(kind) if AUTO_TABLE.exists() else None
    if row is None:
        return "eager", f"auto: no measured row for {kind} CPUs"
    for name in row["order"]:
        if name in BACKENDS.names() and all(importlib.util.find_spec(p) for p in NEEDS.get(name, ())) \
                and (can_calibrate or name not in CALIBRATED):
            return name, f"auto: the fastest that passes the parity gate on {kind} CPUs"
    return "eager", f"auto on {kind}"


def check_backends(names: list[str]) -> None:
    """Refuse unknown backend names before any work, listing the valid ones (`auto` among them)."""
    for name in names:
        if name != "auto" and name not in BACKENDS.names():
            raise UsageError(f"unknown backend '{name}'; choose one of: auto, {', '.join(BACKENDS.names())}")


def read_preprocess(model_path: Path) -> dict:
    """The `preprocess.json` written beside an exported model."""
    meta = model_path.with_name("preprocess.json")
    if not meta.exists():
        raise UsageError(f"{model_path} has no preprocess.json beside it (written by `cnnmode export`)")
    try:
        found = json.loads(meta.read_text())
    except ValueError as e:
        raise UsageError(f"{meta} is not valid JSON ({e})") from None
    check_preprocess(found, found.get("classes") if isinstance(found, dict) else None, meta)
    return found


def _exported(path: Path, backend: str | None, device: str | torch.device) -> Runner:
    natural = EXPORTED[path.suffix]
    if backend not in (None, natural):
        raise UsageError(f"{path.name} is an exported file and runs only on {natural}, not {backend}; give the "
                         "artifact (model.pt or its run folder) to choose a backend")
    meta = read_preprocess(path)
    if natural == "onnxruntime":
        forward = ort_session(path)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated but still what users ship
            module = torch.jit.load(str(path), map_location=device).eval()
        forward = lambda x: module(x.to(device)).float().cpu()  # noqa: E731
    rejector = from_state(meta["reject"], str(path.with_name("preprocess.json"))) if "reject" in meta else None
    return Runner(natural, meta, meta["classes"], forward, meta.get("model", ""), meta.get("temperature", 1.0),
                  rejector=rejector)


def load_runner(source: Artifact | Target | str | Path, backend: str | None = None,
                device: str | torch.device = "cpu", calib: Calibration | torch.Tensor | None = None) -> Runner:
    """A Runner for an artifact (loaded, or a file or run folder) on `backend` (default eager), or for an exported
    .onnx/.ts file on its own runtime. The int8 backends calibrate on `calib` (normalised real images)."""
    if isinstance(calib, torch.Tensor):
        calib = Calibration.of(calib)
    check_backends([backend or "eager"])
    device = pick_device(str(device))  # `auto`: a CUDA GPU when there is one
    if not isinstance(source, Artifact):
        target = source if isinstance(source, Target) else resolve_target(source)
        if target.file.suffix in EXPORTED:
            runner = _exported(target.file, None if backend == "auto" else backend, device)
            runner.device = str(device) if target.file.suffix == ".ts" else "cpu"
            return runner
        source = load_artifact(target)
    backend, why = auto_backend(device, calib is not None) if backend == "auto" else (backend or "eager", "")
    build = BACKENDS.get(backend)
    if backend in CALIBRATED and calib is None:
        raise UsageError(f"the {backend} backend calibrates on real images: pass --data PATH (or give a run folder)")
    if backend not in ON_DEVICE:
        device = torch.device("cpu")  # ONNX Runtime, OpenVINO and the int8 kernels run on the CPU
    rejector = load_rejector(source.path)
    if rejector is not None and backend in FEATURES:  # one model gives the logits and the k-NN's embedding
        features = _with_features(source, backend, device)
        return Runner(backend, source.preprocess, source.classes, lambda x: features(x)[0], source.name,
                      source.temperature, why, str(device), rejector, features)
    return Runner(backend, source.preprocess, source.classes, build(source, device, calib), source.name,
                  source.temperature, why, str(device), rejector)


def open_runner(where: Target, backend: str | None = None, device: str | torch.device = "cpu",
                calib_data: str | None = None, calib_count: int = 512) -> tuple[Runner, Artifact | None]:
    """The runner for a resolved target, and its artifact (None for an exported file), each loaded once. The int8
    backends calibrate on `calib_count` images of `calib_data`, else of the run folder's own validation split."""
    art = None if where.file.suffix in EXPORTED else load_artifact(where)
    wants = backend in CALIBRATED or backend == "auto"  # the images are read only if the backend needs them
    calib = calibration_for(where, art, calib_data, calib_count) if art and wants else None
    return load_runner(art or where, backend, device, calib), art
