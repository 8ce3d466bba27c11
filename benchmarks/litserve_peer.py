"""The peer for benchmarks/serve_load.py: the same CNN Mode model served by LitServe with its own batching.

    pip install litserve==0.2.19
    python benchmarks/litserve_peer.py RUN_OR_ARTIFACT --port 8001 [--max-batch-size 32] [--batch-timeout 0.005]

Requests are JSON {"image": base64}; the answer is {"class": ..., "probability": ...}, the same work as one image
of `cnnmode serve` (decode, the artifact's preprocessing, the eager model, softmax).
"""
from __future__ import annotations

import argparse
import base64
import io
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    import litserve as ls
except ImportError:
    raise SystemExit("the peer needs LitServe: pip install litserve==0.2.19") from None
import torch  # noqa: E402
from PIL import Image  # noqa: E402


class CnnModeAPI(ls.LitAPI):
    """Decode → the artifact's preprocessing → batch → eager model → softmax → top-1."""

    def __init__(self, target: str, threads: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.target, self.threads = target, threads

    def setup(self, device):
        from cnnmode import load_artifact
        from cnnmode.data.inference_inputs import transform_for

        torch.set_num_threads(self.threads)
        self.art = load_artifact(self.target)
        self.transform = transform_for(self.art.preprocess)

    def decode_request(self, request):
        from cnnmode.data.decode import pil_to_mode

        with Image.open(io.BytesIO(base64.b64decode(request["image"]))) as img:
            return self.transform(pil_to_mode(img, self.art.preprocess["channels"]))

    def batch(self, inputs):
        return torch.stack(inputs)

    def predict(self, x):
        with torch.no_grad():
            return self.art.model(x if x.ndim == 4 else x[None]).softmax(-1)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        p, i = output.reshape(-1).max(0)
        return {"class": self.art.classes[int(i)], "probability": float(p)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-timeout", type=float, default=0.005)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    api = CnnModeAPI(str(Path(args.target).resolve()), args.threads, max_batch_size=args.max_batch_size,
                     batch_timeout=args.batch_timeout)
    ls.LitServer(api, accelerator="cpu", workers_per_device=1).run(port=args.port, log_level="warning",
                                                                   generate_client_file=False)


if __name__ == "__main__":
    main()
