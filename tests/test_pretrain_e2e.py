"""The end-to-end benchmark at its smallest setting: the real tool on generated JPEGs, one worker count."""

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import pretrain_e2e  # noqa: E402


def test_generated_jpegs_have_the_asked_size(tmp_path):
    size = pretrain_e2e.make_jpeg_tree(tmp_path, classes=2, per_class=1, width=40, height=30)
    files = sorted(tmp_path.glob("*/*.jpg"))
    assert len(files) == 2 and size == sum(f.stat().st_size for f in files)
    with Image.open(files[0]) as image:
        assert image.format == "JPEG" and image.size == (40, 30)


def test_the_smallest_setting_reports_throughput_and_data_wait(tmp_path):
    out = tmp_path / "e2e.json"
    result = pretrain_e2e.main(
        [
            "--classes",
            "4",
            "--per-class",
            "4",
            "--size",
            "64x56",
            "--steps",
            "2",
            "--workers",
            "0",
            "--group-size",
            "2",
            "--global-batch",
            "4",
            "--views",
            "2",
            "--num-sampled",
            "3",
            "--json",
            str(out),
        ]
    )
    assert out.is_file()
    (row,) = result["results"]
    assert row["workers"] == 0 and row["steps_timed"] == 2 and row["steps_skipped"] == 1
    assert row["images_this_process"] == 8 and row["images_per_s_all_processes"] > 0
    assert 0 < row["data_wait_seconds"] < row["seconds"] and 0 < row["data_wait_share"] < 1
