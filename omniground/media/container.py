"""Opening audio/video containers with PyAV, and telling images, videos and audio apart by content.

Shared by video.py and audio.py so that both report a bad file the same way: FFmpeg's errors never leave
this package as anything but a one-line MediaError.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Iterator, Literal

import av
import av.container
import av.stream
from PIL import Image

from omniground.media.errors import MediaError, describe, require_file

MediaType = Literal["image", "video", "audio"]

# FFmpeg demuxers that read one still picture: such a file is an image, not a one-frame video.
_STILL_IMAGE_DEMUXERS = ("image2", "image2pipe")
# Pillow formats that are really something else (MPEG-1 streams start like Pillow's "MPEG" image plugin).
_NOT_IMAGES = ("MPEG",)


@contextlib.contextmanager
def open_container(path: str | os.PathLike, max_bytes: int) -> Iterator[av.container.InputContainer]:
    """Open `path` for demuxing; FFmpeg errors while the block runs become MediaError naming the file."""
    path = require_file(path, max_bytes)
    try:
        container = av.open(str(path), mode="r", metadata_errors="replace")
    except Exception as e:  # anything av.open raises is about the file's content
        raise MediaError(path, f"not a readable video or audio file ({describe(e)})") from None
    try:
        yield container
    except av.FFmpegError as e:
        raise MediaError(path, f"decoding failed, file is corrupt or truncated ({describe(e)})") from None
    finally:
        container.close()


def is_still_image(container: av.container.InputContainer) -> bool:
    """FFmpeg opens PNG/JPEG/... as a one-frame 'video'; callers want to call that what it is."""
    name = container.format.name
    return name in _STILL_IMAGE_DEMUXERS or name.endswith("_pipe")


def video_streams(container: av.container.InputContainer) -> list[av.VideoStream]:
    """Video streams that carry motion: cover art in MP3/M4A files is a 'video' stream marked attached_pic."""
    return [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]


def media_type(path: str | os.PathLike) -> MediaType:
    """'image', 'video' or 'audio', judged by the file's content (its name may lie).

    Pillow is asked first because FFmpeg also opens still images (as one-frame videos); then PyAV's streams
    decide: any real video stream -> 'video', only audio streams -> 'audio'.
    """
    path = require_file(path, max_bytes=2**63 - 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format not in _NOT_IMAGES:
                    return "image"
    except Image.DecompressionBombError:
        return "image"  # an image, just too large; load_image will say so
    except Exception:
        pass  # not something Pillow reads: ask FFmpeg
    try:
        container = av.open(str(path), mode="r", metadata_errors="replace")
    except Exception as e:
        raise MediaError(path, f"not an image, video or audio file ({describe(e)})") from None
    with container:
        if is_still_image(container):  # FFmpeg picks image2 by file name alone; Pillow already said no
            raise MediaError(path, "not a readable image, video or audio file (Pillow cannot decode it)")
        if video_streams(container):
            return "video"
        if container.streams.audio:
            return "audio"
    raise MediaError(path, "no image, video or audio stream in the file")
