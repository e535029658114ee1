"""omniground: one model that grounds language in images (boxes), video and audio (time spans)."""

__version__ = "0.1.0"
