"""data=imagefolder: generating a labelled set, scanning one, and clear errors on a bad root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image, ImageStat

from sweep.config import SweepConfig, register_configs
from sweep.data import check_root, scan
from sweep.demo_data import generate
from sweep.errors import ConfigError
from sweep.paths import conf_dir
from sweep.result import flatten, job_name

register_configs()


def make(*overrides: str) -> SweepConfig:
    """The job's config as it runs: composed, and `resolution: null` made the model's own."""
    from sweep.job import resolve_resolution

    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = OmegaConf.to_object(compose("config", overrides=list(overrides)))
    if cfg.resolution is None:
        resolve_resolution(cfg)
    return cfg


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    generate(root, classes=3, per_class=8)
    return root


def test_generated_set_is_labelled_mixed_and_deterministic(demo, tmp_path):
    classes = sorted(p.name for p in demo.iterdir())
    assert classes == ["00_red", "01_green", "02_blue"]
    files = sorted(demo.rglob("*.*"))
    assert len(files) == 24
    suffixes = [f.suffix for f in files]
    assert suffixes.count(".png") == 6 and suffixes.count(".jpg") == 18
    sizes = {Image.open(f).size for f in files}
    assert len(sizes) > 10 and all(40 <= min(s) and max(s) <= 160 for s in sizes)
    again = tmp_path / "again"
    generate(again, classes=3, per_class=8)
    assert all((again / f.relative_to(demo)).read_bytes() == f.read_bytes() for f in files)


def test_classes_are_visually_separable(demo):
    """Each class's images are dominated by its own colour channel (red, green, blue)."""
    for label, folder in enumerate(sorted(demo.iterdir())):
        for f in folder.iterdir():
            means = ImageStat.Stat(Image.open(f).convert("RGB")).mean
            assert max(range(3), key=means.__getitem__) == label, f


def test_cli_generates(tmp_path):
    out = tmp_path / "set"
    proc = subprocess.run([sys.executable, "-m", "sweep.demo_data", "generate", str(out),
                           "--classes",
                           "2", "--per-class", "3"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 6 images in 2 classes" in proc.stdout
    assert len(list(out.rglob("*.jpg"))) + len(list(out.rglob("*.png"))) == 6


def test_data_module_points_to_the_generator_and_fails(tmp_path):
    """`python -m sweep.data generate` writes nothing: it must not pass for the generator."""
    proc = subprocess.run([sys.executable, "-m", "sweep.data", "generate", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "python -m sweep.demo_data generate" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_scan_labels_from_sorted_folder_names_interleaved(demo):
    images = scan(str(demo), 100)
    assert images.classes == ["00_red", "01_green", "02_blue"]
    assert images.found == 24 and len(images.items) == 24
    assert [label for _, label in images.items[:6]] == [0, 1, 2, 0, 1, 2]
    assert all(path.parent.name == images.classes[label] for path, label in images.items)


def test_max_images_keeps_every_class(demo):
    images = scan(str(demo), 5)
    assert len(images.items) == 5 and images.found == 24
    assert {label for _, label in images.items} == {0, 1, 2}


def test_empty_class_keeps_its_index_and_other_files_are_counted(tmp_path):
    for name in ("a_cat", "b_empty", "c_dog"):
        (tmp_path / name).mkdir()
    (tmp_path / "c_dog" / "nested").mkdir()
    Image.new("RGB", (10, 10)).save(tmp_path / "a_cat" / "1.JPG")
    Image.new("RGB", (10, 10)).save(tmp_path / "c_dog" / "nested" / "2.png")
    (tmp_path / "c_dog" / "notes.txt").write_text("not an image")
    (tmp_path / "c_dog" / ".hidden.jpg").write_bytes(b"")
    (tmp_path / ".git").mkdir()
    images = scan(str(tmp_path), 10)
    assert images.classes == ["a_cat", "b_empty", "c_dog"]
    assert [(p.name, label) for p, label in images.items] == [("1.JPG", 0), ("2.png", 2)]
    assert images.empty_classes == ["b_empty"] and images.ignored == 1


@pytest.mark.parametrize("case, shown", [
    ("unset", "data.root is not set"),
    ("missing", "no such folder"),
    ("no_classes", "it has no class folders"),
    ("no_images", "hold no image files"),
])
def test_bad_root_is_a_config_error_naming_data_root(tmp_path, case, shown):
    root = {"unset": None, "missing": str(tmp_path / "nope"), "no_classes": str(tmp_path),
            "no_images": str(tmp_path)}[case]
    if case == "no_classes":
        (tmp_path / "loose.jpg").write_bytes(b"")
    if case == "no_images":
        (tmp_path / "cat").mkdir()
        (tmp_path / "cat" / "readme.txt").write_text("")
    with pytest.raises(ConfigError) as e:
        check_root(root)
    assert "data.root" in str(e.value) and shown in str(e.value)
    assert "python -m sweep.demo_data generate" in str(e.value)


def test_imagefolder_without_root_fails_at_composition():
    with pytest.raises(ConfigError, match="data.root is not set"):
        make("data=imagefolder")


def test_pipeline_group_composes(demo):
    for name in ("serial", "current", "fast", "gpu"):
        cfg = make("data=imagefolder", f"data.root={demo}", f"pipeline={name}", "device=auto")
        assert cfg.pipeline.name == name and cfg.data.root == str(demo)
        assert job_name(flatten(cfg)) == f"torch-resnet18-224-b1-fp32-{name}"
    assert make().pipeline.name == "serial"
    # seed 000's name: the same schema, recorded as it was typed
    assert type(make("pipeline=current").pipeline) is type(make().pipeline)
    cfg = make("data=imagefolder", f"data.root={demo}", "flags.pin_memory=true",
               "flags.gpu_non_blocking=true")
    assert job_name(flatten(cfg)) == "torch-resnet18-224-b1-fp32-serial-pin-nb"
    # pipeline options away from their defaults show too, so that a sweep over them is legible
    cfg = make("data=imagefolder", f"data.root={demo}", "pipeline=fast", "pipeline.workers=8",
               "pipeline.prefetch=0")
    assert job_name(flatten(cfg)) == "torch-resnet18-224-b1-fp32-fast-w8-pf0"
    # worker processes: each pipeline's own default (gpu 4, the others 0) is not shown
    assert make("data=imagefolder", f"data.root={demo}", "pipeline=gpu",
                "device=auto").pipeline.processes == 4
    for name, n, suffix in (("gpu", 0, "-p0"), ("gpu", 4, ""), ("fast", 2, "-p2")):
        cfg = make("data=imagefolder", f"data.root={demo}", f"pipeline={name}", "device=auto",
                   f"pipeline.processes={n}")
        assert job_name(flatten(cfg)) == f"torch-resnet18-224-b1-fp32-{name}{suffix}"


@pytest.mark.parametrize("overrides, shown", [
    (["pipeline=fast"], "data=synthetic has none"),
    (["pipeline=gpu", "device=cpu", "data=imagefolder"], "device=cpu"),
    (["data=imagefolder", "data.max_images=0"], "data.max_images=0"),
    (["pipeline=fast", "pipeline.prefetch=-1"], "pipeline.prefetch=-1"),
    (["pipeline=fast", "data=imagefolder", "pipeline.processes=-2"], "pipeline.processes=-2"),
])
def test_pipeline_combinations_that_cannot_work(demo, overrides, shown):
    with pytest.raises(ConfigError) as e:
        make(*overrides, f"data.root={demo}")
    assert shown in str(e.value)


def test_demo_data_into_a_folder_it_cannot_make_says_so(tmp_path, capsys):
    from sweep.demo_data import main

    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where a folder's parent must be
    assert main(["generate", str(blocker / "set")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "give a folder you can write" in err
