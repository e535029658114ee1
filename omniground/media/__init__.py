"""Media I/O: every image, video and audio file enters the project through these functions.

Decoding lives only here (Pillow for images, PyAV/FFmpeg for video and audio); every unusable file raises
MediaError with one line naming the file and the problem.
"""

from omniground.media.audio import Audio, audio_windows, load_audio
from omniground.media.container import media_type
from omniground.media.errors import MediaError
from omniground.media.image import load_image
from omniground.media.video import VideoFrames, VideoInfo, probe_video, sample_frames

__all__ = [
    "Audio",
    "MediaError",
    "VideoFrames",
    "VideoInfo",
    "audio_windows",
    "load_audio",
    "load_image",
    "media_type",
    "probe_video",
    "sample_frames",
]
