"""Live video: classify frames from a camera, a file or a stream, draw the label, write / show / stream it. Names
load their module on first use, so the command line reads `VideoOptions` without torch or OpenCV."""
from cnnmode.registry import lazy_exports

_HOMES = {"FileSource": "sources", "Frame": "sources", "LiveSource": "sources", "open_source": "sources",
          "FrameClassifier": "classify", "FrameResult": "classify", "classify_frames": "classify",
          "VideoOptions": "options", "run_video": "run"}
__all__ = sorted(_HOMES)
__getattr__ = lazy_exports(__name__, _HOMES)
