"""Live video: classify frames from a camera, a file or a stream, draw the label, write / show / stream it."""
from cnnmode.deploy.video.classify import FrameClassifier, FrameResult, classify_frames
from cnnmode.deploy.video.run import VideoOptions, run_video
from cnnmode.deploy.video.sources import FileSource, Frame, LiveSource, open_source

__all__ = ["FileSource", "Frame", "FrameClassifier", "FrameResult", "LiveSource", "VideoOptions", "classify_frames",
           "open_source", "run_video"]
