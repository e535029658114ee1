"""omniground: one model that grounds language in images (boxes), video and audio (time spans)."""

__version__ = "0.1.0"


def load(path_or_name="omniground-tiny", **kwargs):
    """Load a model (shipped name, checkpoint directory or hub id); see `omniground.model.load`.

    Imported lazily so that `import omniground` stays fast.
    """
    from omniground.model import load as _load

    return _load(path_or_name, **kwargs)
