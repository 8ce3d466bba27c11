"""What `cnnmode predict` and `cnnmode bench` are told besides the model and the images: every flag, its default
and help text, written once here (the command line builds its flags from these dataclasses)."""
from __future__ import annotations

from dataclasses import dataclass

from cnnmode.config import opt

BACKENDS = ("eager, eager-bf16, compile, torchscript, onnxruntime, int8 (ONNX Runtime static int8), int8-x86 "
            "(PyTorch PT2E int8 compiled to oneDNN kernels), openvino, openvino-int8 (NNCF int8, cached beside the "
            "artifact)")
DEVICE_HELP = ("auto (a CUDA GPU when there is one, else Apple's MPS, else the CPU), cpu, cuda, cuda:N or mps; the "
               "onnxruntime, openvino and int8 backends run on the CPU")
REJECT_HELP = ("say \"unknown\" (no label) for images unlike the training classes: auto rejects at --coverage, "
               "T (0-1) above that ood score (the share of validation images more familiar), off never; needs the "
               "score fitted after training or by `cnnmode calibrate`")
COVERAGE_HELP = "with --reject auto, the share of known-class images to keep (default: the fitted one, 0.95)"
CALIB_HELP = "real images to calibrate the int8 backends on (default: the run folder's own validation split)"


@dataclass
class PredictOptions:
    """Each field is the `cnnmode predict` flag of the same name."""
    topk: int = opt(3, "classes per image")
    threshold: float = opt(0.0, "mark predictions below this confidence uncertain; for a multi-label model, the "
                           "probability from which every label counts as present (0 = each label's fitted threshold)")
    batch_size: int = opt(64, "images per model call")
    out: str | None = opt(None, "also write the predictions as CSV or JSON", metavar="FILE.csv|.json")
    backend: str | None = opt(None, "runtime backend for a model.pt: eager (default, fp32 as trained), auto (the "
                              "fastest that passes the parity gate on this CPU kind), " + BACKENDS)
    calib_data: str | None = opt(None, CALIB_HELP, metavar="PATH")
    device: str = opt("auto", DEVICE_HELP)
    reject: str = opt("off", REJECT_HELP, metavar="auto|off|T")
    coverage: float | None = opt(None, COVERAGE_HELP, metavar="SHARE")


@dataclass
class BenchOptions:
    """Each field is the `cnnmode bench` flag of the same name."""
    batch_sizes: str = opt("1,8,64", "batch sizes to time, comma-separated", metavar="N,N,...")
    backends: str = opt("auto,eager", "comma-separated names from the runtime registry: auto (the fastest backend "
                        "that passes the parity gate on this CPU kind), " + BACKENDS, metavar="NAME,NAME,...")
    device: str = opt("auto", DEVICE_HELP)
    data: str | None = opt(None, "images with labels for agreement/accuracy and int8 calibration")
    profile: bool = opt(False, "write a torch.profiler Chrome trace of the eager model")
    out: str | None = opt(None, "where bench.json goes", metavar="FILE.json")
