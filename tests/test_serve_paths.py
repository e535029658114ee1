"""No file outside --allow-media-dir is ever read: `..`, absolute paths, file:// URLs and symlinks.

These test the request-to-media layer directly (no model needed); test_serve_api.py covers the HTTP
error bodies, and the last test here checks one escape attempt through the real server.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from omniground.serve.inputs import InputError, MediaPolicy, to_conversation
from test_serve_support import data_url, png_bytes


def image_part(url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "what is this?"}]}]


@pytest.fixture
def layout(tmp_path: Path):
    """allowed/ holds pictures; secret.png sits next to it; links inside allowed/ point out and in."""
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "sub" / "cat.png").write_bytes(png_bytes(20, 10))
    (tmp_path / "secret.png").write_bytes(png_bytes(30, 30))
    (allowed / "escape.png").symlink_to(tmp_path / "secret.png")
    (allowed / "escape_dir").symlink_to(tmp_path, target_is_directory=True)
    (allowed / "inner.png").symlink_to(allowed / "sub" / "cat.png")
    (tmp_path / "allowed_sibling").mkdir()  # shares the prefix "allowed": must not count as inside
    (tmp_path / "allowed_sibling" / "x.png").write_bytes(png_bytes(5, 5))
    return tmp_path, MediaPolicy(allow_dir=allowed)


@pytest.mark.parametrize("ref", [
    "sub/cat.png",
    "./sub/../sub/cat.png",
    "{allowed}/sub/cat.png",
    "file://{allowed}/sub/cat.png",
    "inner.png",  # a link that stays inside is fine
])
def test_files_inside_the_allowed_dir_are_read(layout, ref):
    root, policy = layout
    conv = to_conversation(image_part(ref.format(allowed=root / "allowed")), policy)
    assert conv.meta.image_size == (20, 10)
    assert conv.messages == [{"role": "user", "content": "<image>\nwhat is this?"}]


@pytest.mark.parametrize("ref", [
    "../secret.png",
    "sub/../../secret.png",
    "{root}/secret.png",
    "file://{root}/secret.png",
    "file://{root}/allowed/../secret.png",
    "escape.png",  # symlink to a file outside
    "escape_dir/secret.png",  # through a symlinked directory
    "../allowed_sibling/x.png",
    "/etc/passwd",
    "../missing.png",  # outside and missing: still 'outside', nothing about existence leaks
])
def test_nothing_outside_the_allowed_dir_is_read(layout, ref):
    root, policy = layout
    with pytest.raises(InputError) as e:
        to_conversation(image_part(ref.format(root=root)), policy)
    assert e.value.status == 403 and e.value.code == "path_not_allowed"
    assert e.value.param == "messages[0].content[0].image_url.url"


def test_missing_file_inside_is_404_and_special_files_are_refused(layout):
    root, policy = layout
    with pytest.raises(InputError) as e:
        to_conversation(image_part("sub/nope.png"), policy)
    assert e.value.status == 404
    os.mkfifo(root / "allowed" / "pipe.png")  # opening a FIFO must neither block nor be read
    with pytest.raises(InputError) as e:
        to_conversation(image_part("pipe.png"), policy)
    assert e.value.status == 403


def test_without_allow_dir_only_data_urls_are_read(layout):
    root, _ = layout
    closed = MediaPolicy()
    with pytest.raises(InputError) as e:
        to_conversation(image_part(str(root / "allowed" / "sub" / "cat.png")), closed)
    assert e.value.status == 403 and e.value.code == "file_access_disabled"
    conv = to_conversation(image_part(data_url(png_bytes(7, 3), "image/png")), closed)
    assert conv.meta.image_size == (7, 3)


def test_oversized_media_file_is_refused(layout):
    root, _ = layout
    small = MediaPolicy(allow_dir=root / "allowed", max_media_bytes=10)
    with pytest.raises(InputError) as e:
        to_conversation(image_part("sub/cat.png"), small)
    assert e.value.status == 413


def test_typed_placeholders_are_text_not_media():
    conv = to_conversation([{"role": "user", "content": "what does <image> mean?"}], MediaPolicy())
    assert conv.media == [] and "<image>" not in conv.messages[0]["content"]


def test_escape_through_the_server_is_403(layout):
    import httpx

    from omniground.serve import ServeSettings, create_app
    from test_serve_support import running_server, tiny_model

    root, policy = layout
    app = create_app(tiny_model(), ServeSettings(model_name="tiny", allow_media_dir=policy.allow_dir))
    with running_server(app) as url:
        for ref in ("../secret.png", "escape.png", str(root / "secret.png")):
            r = httpx.post(url + "/v1/chat/completions", json={"model": "tiny", "messages": image_part(ref)})
            assert r.status_code == 403, ref
            assert r.json()["error"]["code"] == "path_not_allowed"
        ok = httpx.post(url + "/v1/chat/completions", timeout=60,
                        json={"model": "tiny", "messages": image_part("sub/cat.png"), "max_tokens": 2})
        assert ok.status_code == 200
        assert ok.json()["choices"][0]["message"]["grounding"]["image_size"] == [20, 10]
