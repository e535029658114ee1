"""Pictures of grounding results: boxes on images, spans on video frames and audio, as PNG files or bytes.

Used by the CLI (`--save-viz`), evaluation reports and the web page. Nothing here touches pyplot.
"""

from omniground.viz.common import figure_to_image, phrase_colors, save_png, to_png_bytes
from omniground.viz.image import draw_boxes
from omniground.viz.timeline import draw_audio_spans, draw_video_spans

__all__ = [
    "draw_boxes",
    "draw_video_spans",
    "draw_audio_spans",
    "figure_to_image",
    "phrase_colors",
    "save_png",
    "to_png_bytes",
]
