"""The `dedupd` command as a user runs it: a real subprocess, real files, JSON and exit codes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dedupd.methods import PHash


def dedupd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dedupd", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, photos: list[Path]) -> Path:
    root = tmp_path_factory.mktemp("cli")
    for index, source in enumerate(photos[:4]):
        with Image.open(source) as image:
            rgb = image.convert("RGB")
        rgb.thumbnail((256, 256))
        rgb.save(root / f"p{index}.jpg", quality=90)
    shutil.copy(root / "p0.jpg", root / "p0_copy.jpg")
    with Image.open(root / "p1.jpg") as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "p1_mirror.jpg", quality=90)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_scan_with_method_prints_imagededups_dict(folder: Path) -> None:
    run = dedupd("scan", str(folder), "--method", "phash", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == PHash(verbose=False).find_duplicates(image_dir=folder, num_enc_workers=1)
    assert "%|" not in run.stderr  # no progress bar when stderr is not a terminal


def test_scan_with_method_and_scores(folder: Path) -> None:
    run = dedupd("scan", str(folder), "--method", "phash", "--json", "--scores")
    found = json.loads(run.stdout)
    assert found["p0.jpg"] == [["p0_copy.jpg", 0]]


def test_default_scan_groups_with_methods_and_skips(folder: Path, tmp_path: Path) -> None:
    outfile = tmp_path / "result.json"
    run = dedupd("scan", str(folder), "--json", "--outfile", str(outfile))
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    assert json.loads(outfile.read_text()) == document
    groups = [{Path(m["path"]).name: m["method"] for m in group} for group in document["groups"]]
    assert {"p0.jpg": "exact", "p0_copy.jpg": "exact"} in groups
    assert any(set(group) == {"p1.jpg", "p1_mirror.jpg"} for group in groups)
    assert document["skipped"] == [
        {"path": str(folder / "broken.jpg"), "reason": "truncated", "detail": document["skipped"][0]["detail"]}
    ]


def test_default_scan_text_output(folder: Path) -> None:
    run = dedupd("scan", str(folder), "--no-cnn")
    assert run.returncode == 0, run.stderr
    assert "group 1:" in run.stdout and "p0_copy.jpg" in run.stdout
    assert "skipped" in run.stderr and "broken.jpg" in run.stderr


def test_encode_directory_json(folder: Path) -> None:
    run = dedupd("encode", str(folder), "--json")
    encodings = json.loads(run.stdout)
    assert encodings == PHash(verbose=False).encode_images(folder, num_enc_workers=1)
    assert "broken.jpg" not in encodings


@pytest.mark.parametrize("args", [("scan", "/no/such/dir"), ("encode", "/no/such/file.jpg")])
def test_missing_path_is_one_clear_line(args: tuple[str, ...]) -> None:
    run = dedupd(*args)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "/no/such" in run.stderr


def test_bad_threshold_is_a_usage_error(folder: Path) -> None:
    run = dedupd("scan", str(folder), "--method", "phash", "--threshold", "70")
    assert run.returncode == 2 and "between 0 and 64" in run.stderr


def test_scan_with_method_text_lists_each_pair_once_sorted_and_each_skip_once(folder: Path) -> None:
    run = dedupd("scan", str(folder), "--method", "phash", "--workers", "2")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines == sorted(lines) and "p0.jpg: p0_copy.jpg" in lines
    pairs = [frozenset((line.split(": ")[0], other)) for line in lines for other in line.split(": ")[1].split(", ")]
    assert len(pairs) == len(set(pairs)) and frozenset(("p0.jpg", "p0_copy.jpg")) in pairs
    assert run.stderr.count("broken.jpg") == 1 and "WARNING" not in run.stderr
    assert run.stderr.splitlines()[0].startswith(f"skipped {folder / 'broken.jpg'}: ")


def test_scan_of_a_relative_dir_prints_absolute_paths(folder: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "dedupd", "scan", folder.name, "--no-cnn"], cwd=folder.parent,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"  {folder / 'p0_copy.jpg'}  [exact 0]" in run.stdout.splitlines()
    assert f"skipped {folder / 'broken.jpg'}: " in run.stderr


def test_encode_of_a_broken_file_exits_1_with_its_reason(folder: Path) -> None:
    run = dedupd("encode", str(folder / "broken.jpg"))
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr.splitlines()[-1].startswith(f"dedupd: error: cannot encode {folder / 'broken.jpg'}: ")
    assert dedupd("encode", str(folder / "p0.jpg")).returncode == 0


def test_scan_text_escapes_control_characters_in_names(folder: Path, tmp_path: Path) -> None:
    for name in ("p0.jpg", "p0_copy.jpg"):
        shutil.copy(folder / name, tmp_path / name)
    (tmp_path / "p0_copy.jpg").rename(tmp_path / "evil\x1b[31m\nname.jpg")
    run = dedupd("scan", str(tmp_path), "--no-cnn")
    assert run.returncode == 0, run.stderr
    assert "\x1b" not in run.stdout and f"  {tmp_path}/evil\\x1b[31m\\nname.jpg  [exact 0]" in run.stdout.splitlines()


def test_model_export_without_torch_names_the_extra() -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here")
    run = dedupd("model", "export", "mobilenet-v3-small")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "needs the `export` extra" in run.stderr and "pip install 'dedupd[export]'" in run.stderr


def test_a_state_dir_that_is_a_file_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    config = tmp_path / "dedupd.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    run = dedupd("check-config", "--config", str(config))
    assert run.returncode == 2
    assert f"'state_dir' must be a directory (or not exist yet): {tmp_path / 'state'} is a file" in run.stderr
    config.write_text(f'state_dir = "{tmp_path / "state" / "sub"}"\nsocket = "{tmp_path / "s.sock"}"\n'
                      "[cnn]\nenabled = false\n[notify]\ndesktop = false\n")
    run = dedupd("run", "--config", str(config))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.splitlines()[-1] == f"dedupd: cannot create the state directory {tmp_path / 'state/sub'}: " \
                                          "Not a directory"


def test_scan_survives_a_crashing_and_a_hanging_decoder(folder: Path, tmp_path: Path,
                                                        decode_faults_env: dict[str, str]) -> None:
    """One decoder that segfaults or hangs costs its file (the daemon's encode pool), not the scan
    (a BrokenProcessPool ended it)."""
    root = tmp_path / "bad"
    shutil.copytree(folder, root)
    shutil.copy(root / "p2.jpg", root / "crash_p2.jpg")
    shutil.copy(root / "p3.jpg", root / "exit_p3.jpg")
    run = subprocess.run([sys.executable, "-m", "dedupd", "scan", str(root), "--json", "--no-cnn", "--workers", "2"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, **decode_faults_env})
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    assert {Path(s["path"]).name: s["reason"] for s in document["skipped"]} == {
        "broken.jpg": "truncated", "crash_p2.jpg": "decoder_crash", "exit_p3.jpg": "decoder_crash"}
    groups = [{Path(m["path"]).name for m in group} for group in document["groups"]]
    assert {"p0.jpg", "p0_copy.jpg"} in groups
