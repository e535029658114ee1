"""Regenerate the sample pictures in this folder: three generated samples per modality, drawn by omniground.viz.

    python docs/samples/render.py

Each PNG shows the media with its ground-truth boxes or spans; README.md lists each sample's dialogue.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from omniground import media as M
from omniground.data.schema import read_jsonl
from omniground.data.synth.build import run
from omniground.data.synth.config import SynthConfig
from omniground.grounding import Box, Span
from omniground.viz import draw_audio_spans, draw_boxes, draw_video_spans, save_png

HERE = Path(__file__).parent
PER_MODALITY = 3


def main() -> None:
    lines = ["# Generated samples", "", "Made by `python docs/samples/render.py` (`omniground data synth --seed 0`, "
             "default sizes); boxes and spans drawn are the labels.", ""]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run(
            SynthConfig(out=root, counts={"image": 12, "video": 12, "audio": 12}, seed=0, stages=(2, 3)), progress=False
        )
        shown: dict[str, int] = {}
        for s in read_jsonl(root / "train.jsonl"):
            kind = s.media[0].type
            if shown.get(kind, 0) == PER_MODALITY or (not s.boxes and not s.spans):
                continue
            shown[kind] = shown.get(kind, 0) + 1
            name = f"{kind}_{shown[kind]}.png"
            path, title = s.media_path(0, root), f"{s.task}: {s.id}"
            if kind == "image":
                draw_boxes(M.load_image(path), [], gt=[Box(*b.box, phrase=b.phrase) for b in s.boxes], title=title,
                           out=HERE / name)  # fmt: skip
            else:
                spans = [Span.from_seconds(x.start, x.end, s.media[0].duration, phrase=x.phrase) for x in s.spans]
                if kind == "video":
                    clip = M.sample_frames(path, 12)
                    fig = draw_video_spans(clip.frames, clip.timestamps, s.media[0].duration, [], gt=spans, title=title)
                else:
                    audio = M.load_audio(path)
                    fig = draw_audio_spans(audio.samples, audio.sample_rate, [], gt=spans, title=title)
                save_png(fig, HERE / name)
            with Image.open(HERE / name) as im:  # 256-colour PNGs: a tenth of the bytes, same look
                im.convert("RGB").quantize(256).save(HERE / name, optimize=True)
            lines += [f"## {name}", "", f"![{name}]({name})", ""]
            lines += [f"- **{t.role}**: {t.content.replace(chr(10), ' ')}" for t in s.conversation] + [""]
    (HERE / "README.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {sum(shown.values())} pictures and README.md to {HERE}")


if __name__ == "__main__":
    main()
