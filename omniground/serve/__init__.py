"""Serving: an OpenAI-compatible HTTP API with structured grounding, a web page, and batching.

    from omniground.serve import ServeSettings, create_app
    app = create_app(omniground.load(), ServeSettings(api_key="secret"))

Names are imported on first use, so that `omniground --help` (which imports `omniground.serve.cli`)
does not pay for FastAPI and transformers.
"""

import importlib

_EXPORTS = {
    "ChatRequest": "app", "ServeSettings": "app", "create_app": "app",
    "Answer": "generation", "Row": "generation", "Sampling": "generation", "grounding_json": "generation",
    "run_batch": "generation",
    "InputError": "inputs", "MediaPolicy": "inputs", "to_conversation": "inputs",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"omniground.serve.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'omniground.serve' has no attribute {name!r}")
