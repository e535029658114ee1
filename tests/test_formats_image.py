"""RefCOCO, Visual Genome and Flickr30k Entities converters on files written in the public layouts."""

import json
import pickle

import pytest
from PIL import Image

from omniground.data.formats import FormatError, convert
from omniground.data.schema import read_jsonl
from omniground.grounding import format_box, parse


def _jpeg(path, w, h):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (90, 120, 150)).save(path)


def _read(path):
    bad = []
    samples = list(read_jsonl(path, bad))
    assert bad == []
    return samples


# --- RefCOCO -------------------------------------------------------------------------------------


def _refcoco_release(tmp_path):
    ann_dir = tmp_path / "refcoco"
    ann_dir.mkdir()
    instances = {
        "images": [
            {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 640, "height": 480},
            {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "width": 500, "height": 375},
        ],
        "annotations": [
            {"id": 11, "image_id": 1, "bbox": [100.0, 50.0, 200.0, 100.0], "category_id": 1, "area": 20000.0},
            {"id": 12, "image_id": 2, "bbox": [0.0, 0.0, 250.0, 375.0], "category_id": 18, "area": 93750.0},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }
    (ann_dir / "instances.json").write_text(json.dumps(instances))
    refs = [
        {"ref_id": 0, "ann_id": 11, "image_id": 1, "split": "testA", "category_id": 1, "sent_ids": [0, 1],
         "file_name": "COCO_train2014_000000000001_11.jpg",
         "sentences": [{"sent_id": 0, "sent": "man on the left", "raw": "Man on the left", "tokens": ["man"]},
                       {"sent_id": 1, "sent": "guy in red", "raw": "guy in red", "tokens": ["guy"]}]},
        {"ref_id": 1, "ann_id": 12, "image_id": 2, "split": "train", "category_id": 18, "sent_ids": [2],
         "file_name": "COCO_train2014_000000000002_12.jpg",
         "sentences": [{"sent_id": 2, "sent": "left dog", "raw": "left dog", "tokens": ["left", "dog"]}]},
        {"ref_id": 2, "ann_id": 999, "image_id": 1, "split": "train", "category_id": 1, "sent_ids": [3],
         "file_name": "x.jpg", "sentences": [{"sent_id": 3, "sent": "ghost", "raw": "ghost", "tokens": []}]},
    ]
    with open(ann_dir / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f, protocol=2)
    media = tmp_path / "train2014"
    _jpeg(media / "COCO_train2014_000000000001.jpg", 640, 480)  # image 2 is deliberately missing
    return ann_dir, media


def test_refcoco_boxes_splits_and_missing_media(tmp_path):
    ann_dir, media = _refcoco_release(tmp_path)
    out = tmp_path / "out" / "refcoco.jsonl"
    report = convert("refcoco", [ann_dir], media, out)
    samples = {s.id: s for s in _read(out)}
    assert set(samples) == {"refcoco-0-0", "refcoco-0-1", "refcoco-1-2"}
    s = samples["refcoco-0-0"]
    assert s.boxes[0].box == pytest.approx((100 / 640, 50 / 480, 300 / 640, 150 / 480))
    assert s.split == "testA" and samples["refcoco-1-2"].split == "train"
    assert s.task == "rec" and s.stage == 2 and s.source == "refcoco"
    assert s.media[0].width == 640 and s.media[0].height == 480
    assert (out.parent / s.media[0].path).resolve() == (media / "COCO_train2014_000000000001.jpg").resolve()
    answer = s.conversation[1].content
    assert format_box(s.boxes[0].box) in answer
    assert "<image>" in s.conversation[0].content and "man on the left" in s.conversation[0].content
    assert samples["refcoco-1-2"].boxes[0].box == pytest.approx((0.0, 0.0, 0.5, 1.0))
    assert report.converted == 3 and report.missing_media == 1
    assert report.skipped == {"ref points at an unknown annotation or image": 1}


def test_refcoco_reg_puts_the_box_in_the_question(tmp_path):
    ann_dir, media = _refcoco_release(tmp_path)
    out = tmp_path / "reg.jsonl"
    convert("refcoco+", [ann_dir], media, out, task="reg")
    s = next(x for x in _read(out) if x.id == "refcoco+-0-0")
    assert s.task == "reg" and s.source == "refcoco+"
    asked = parse(s.conversation[0].content).boxes
    assert len(asked) == 1 and asked[0].xyxy == pytest.approx(s.boxes[0].box, abs=6e-4)
    assert "man on the left" in s.conversation[1].content


def test_refcoco_pickle_with_code_is_refused(tmp_path):
    ann_dir, media = _refcoco_release(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    with open(ann_dir / "refs(unc).p", "wb") as f:
        pickle.dump([Evil()], f)
    with pytest.raises(FormatError, match="only plain data"):
        convert("refcoco", [ann_dir], media, tmp_path / "x.jsonl")


# --- Visual Genome --------------------------------------------------------------------------------


def test_visual_genome_regions(tmp_path):
    (tmp_path / "region_descriptions.json").write_text(json.dumps([
        {"id": 1, "regions": [
            {"region_id": 1382, "width": 82, "height": 139, "image_id": 1, "phrase": "the clock is green in colour",
             "y": 57, "x": 421},
            {"region_id": 1383, "width": 400, "height": 100, "image_id": 1, "phrase": "shade is along the street",
             "y": 500, "x": 600},  # reaches past the 800x600 image: clipped
            {"region_id": 1384, "width": 0, "height": 10, "image_id": 1, "phrase": "a line", "y": 5, "x": 5},
        ]},
        {"id": 7, "regions": [{"region_id": 9, "width": 5, "height": 5, "image_id": 7, "phrase": "x", "y": 0, "x": 0}]},
    ]))
    (tmp_path / "image_data.json").write_text(json.dumps([
        {"width": 800, "height": 600, "url": "https://cs.stanford.edu/people/rak248/VG_100K_2/1.jpg",
         "image_id": 1, "coco_id": None, "flickr_id": None},
    ]))
    media = tmp_path / "images"
    _jpeg(media / "VG_100K_2" / "1.jpg", 800, 600)
    out = tmp_path / "vg.jsonl"
    report = convert("vg", [tmp_path], media, out)
    samples = {s.id: s for s in _read(out)}
    assert samples["vg-1382"].boxes[0].box == pytest.approx((421 / 800, 57 / 600, 503 / 800, 196 / 600))
    assert samples["vg-1383"].boxes[0].box == pytest.approx((600 / 800, 500 / 600, 1.0, 1.0))
    assert samples["vg-1382"].boxes[0].phrase == "the clock is green in colour"
    assert report.skipped["empty box (zero width or height inside the image)"] == 1
    assert report.skipped["image not in image_data.json"] == 1
    assert report.missing_media == 0 and report.converted == 2


# --- Flickr30k Entities ---------------------------------------------------------------------------

_XML = """<annotation>
<filename>1000092795.jpg</filename>
<size><width>500</width><height>333</height><depth>3</depth></size>
<object><name>18</name><bndbox><xmin>1</xmin><ymin>11</ymin><xmax>100</xmax><ymax>210</ymax></bndbox></object>
<object><name>18</name><bndbox><xmin>201</xmin><ymin>1</ymin><xmax>300</xmax><ymax>333</ymax></bndbox></object>
<object><name>19</name><bndbox><xmin>51</xmin><ymin>101</ymin><xmax>90</xmax><ymax>200</ymax></bndbox></object>
<object><name>21</name><nobndbox>1</nobndbox></object>
<object><name>22</name><scene>1</scene></object>
</annotation>
"""


def test_flickr30k_entities_grounded_captions(tmp_path):
    root = tmp_path / "flickr30k_entities"
    (root / "Sentences").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "Sentences" / "1000092795.txt").write_text(
        "[/EN#18/people Two young guys] with [/EN#19/bodyparts shaggy hair] look at [/EN#21/other their hands] "
        "while hanging out in [/EN#22/scene the yard] .\n"
        "[/EN#0/notvisual Nothing] here is boxed [/EN#22/scene outside] .\n"
    )
    (root / "Annotations" / "1000092795.xml").write_text(_XML)
    (root / "Sentences" / "42.txt").write_text("[/EN#1/people A man] sits .\n")  # no XML for it
    (root / "test.txt").write_text("1000092795\n")
    media = tmp_path / "flickr30k-images"
    _jpeg(media / "1000092795.jpg", 500, 333)
    out = tmp_path / "f30k.jsonl"
    report = convert("flickr30k", [root], media, out)
    (s,) = _read(out)
    assert s.task == "grounded_caption" and s.split == "test"
    caption = s.conversation[1].content
    found = parse(caption)
    assert [b.phrase for b in found.boxes] == ["Two young guys", "Two young guys", "shaggy hair"]
    assert found.boxes[0].xyxy == pytest.approx((0 / 500, 10 / 333, 100 / 500, 210 / 333), abs=5e-4)
    assert found.boxes[1].xyxy == pytest.approx((200 / 500, 0.0, 300 / 500, 1.0), abs=5e-4)
    assert "their hands look" not in caption and "their hands while" in caption and "the yard." in caption
    assert len(s.boxes) == 3
    assert report.skipped == {"caption has no boxed mention": 1, "no usable annotation XML (FileNotFoundError)": 1}


def test_refcocog_defaults_to_the_umd_splits(tmp_path):
    ann_dir, media = _refcoco_release(tmp_path)
    (ann_dir / "refs(unc).p").unlink()
    umd = [{"ref_id": 5, "ann_id": 11, "image_id": 1, "split": "test", "category_id": 1,
            "sentences": [{"sent_id": 9, "sent": "a man wearing a red shirt standing to the left of a woman"}]}]
    google = [dict(umd[0], split="val")]
    for name, refs in (("refs(umd).p", umd), ("refs(google).p", google)):
        with open(ann_dir / name, "wb") as f:
            pickle.dump(refs, f)
    out = tmp_path / "g.jsonl"
    convert("refcocog", [ann_dir], media, out)
    (s,) = _read(out)
    assert s.split == "test" and s.source == "refcocog"  # UMD: the val/test splits papers report
    convert("refcocog", [ann_dir], media, out, split_by="google")
    assert _read(out)[0].split == "val"
    with pytest.raises(FormatError, match=r"refs\(unc\).p"):
        convert("refcoco", [ann_dir], media, out)  # RefCOCO never falls back to RefCOCOg's files
