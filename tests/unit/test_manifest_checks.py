"""Checkpoint manifests on tiny fake checkpoints: write, verify, each kind of damage, the verify command, resume's
choice of checkpoint, preflight's one line, the legacy converter's one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bitcpm.config.checkpoint_manifest import MANIFEST, DamagedCheckpointError, verify, write_manifest
from bitcpm.training import verify as verify_cli

pytestmark = pytest.mark.quick


def fake_checkpoint(path: Path, complete: bool = True, manifest: bool = True) -> Path:
    """A checkpoint directory as a save leaves it: shards, metadata, a file in a subdirectory, manifest, marker."""
    path.mkdir(parents=True)
    (path / "__0_0.distcp").write_bytes(bytes(range(256)) * 64)
    (path / "__1_0.distcp").write_bytes(b"\x01" * 3000)
    (path / "common.pt").write_bytes(b"common")
    (path / "sub").mkdir()
    (path / "sub" / "metadata.json").write_text("{}")
    if manifest:
        write_manifest(path, workers=2)
    if complete:
        (path / "COMPLETE").write_text("4\n")
    return path


def test_intact_checkpoint_and_what_the_manifest_lists(tmp_path: Path) -> None:
    ckpt = fake_checkpoint(tmp_path / "step_00000004")
    listed = json.loads((ckpt / MANIFEST).read_text())["files"]
    assert sorted(listed) == ["__0_0.distcp", "__1_0.distcp", "common.pt", "sub/metadata.json"]  # no COMPLETE
    assert listed["common.pt"]["size"] == 6
    verdict = verify(ckpt)
    assert verdict.state == "intact" and verdict.files == 4 and verdict.size == 16384 + 3000 + 6 + 2
    (ckpt / "notes.txt").write_text("extra files are ignored")
    assert verify(ckpt).state == "intact"


@pytest.mark.parametrize(
    ("damage", "file", "reason"),
    [
        ("truncate", "__0_0.distcp", "size differs (100 bytes, the manifest says 16384)"),
        ("delete", "sub/metadata.json", "missing"),
        ("flip", "__1_0.distcp", "hash differs"),
        ("manifest", MANIFEST, "unreadable (JSONDecodeError)"),
    ],
)
def test_each_kind_of_damage_names_the_file_and_why(tmp_path: Path, damage: str, file: str, reason: str) -> None:
    ckpt = fake_checkpoint(tmp_path / "step_00000004")
    target = ckpt / file
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "delete":
        target.unlink()
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[1234] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        target.write_text(target.read_text()[:40])
    verdict = verify(ckpt)
    assert verdict.state == "damaged" and verdict.file == file and verdict.reason.startswith(reason)
    error = verdict.error("stage.init_from=RUN")
    assert isinstance(error, ValueError) and "\n" not in str(error)
    assert str(error).startswith(f"stage.init_from=RUN: checkpoint {ckpt} is damaged: {file}: ")


def test_without_manifest_it_is_unverifiable_and_noted_once(tmp_path: Path) -> None:
    from bitcpm.config.checkpoint_manifest import require_usable

    ckpt = fake_checkpoint(tmp_path / "step_00000004", manifest=False)
    assert verify(ckpt).state == "unverifiable" and verify(ckpt).usable
    said: list[str] = []
    require_usable(ckpt, "export", said.append)
    require_usable(ckpt, "export", said.append)
    assert len(said) == 1 and said[0].startswith("bitcpm: note: checkpoint") and MANIFEST in said[0]


def _run(tmp_path: Path, steps: tuple[int, ...]) -> Path:
    for step in steps:
        fake_checkpoint(tmp_path / "run" / "checkpoints" / f"step_{step:08d}")
    return tmp_path / "run"


def _truncate(ckpt: Path) -> None:
    (ckpt / "__0_0.distcp").write_bytes(b"short")


def test_verify_command_lines_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(tmp_path, (2, 4))
    (run / "checkpoints" / ".tmp_step_00000006").mkdir()
    assert verify_cli.main([str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    intact = "intact (4 files, 18.9 KiB, sha256 checked)"
    assert [ln.split(": ", 1)[1] for ln in lines[:2]] == [intact, intact]
    assert lines[2].startswith(f"{run / 'checkpoints' / '.tmp_step_00000006'}: incomplete (no COMPLETE marker")
    assert lines[0].startswith(str(run / "checkpoints" / "step_00000002"))
    _truncate(run / "checkpoints" / "step_00000002")  # an older one damaged: still exit 1
    assert verify_cli.main([str(run)]) == 1
    assert "step_00000002: damaged: __0_0.distcp: size differs" in capsys.readouterr().out
    assert verify_cli.main([str(run / "checkpoints" / "step_00000004")]) == 0  # one checkpoint directly
    legacy = fake_checkpoint(tmp_path / "old" / "checkpoints" / "step_00000001", manifest=False)
    assert verify_cli.main([str(legacy.parent.parent)]) == 0
    assert "no manifest (unverifiable" in capsys.readouterr().out


def test_verify_command_refuses_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file.txt").write_text("")
    for argv in ([], [str(tmp_path / "nothing")], [str(tmp_path)], [str(tmp_path / "file.txt")]):
        with pytest.raises(SystemExit) as info:  # refused while the command line is read
            verify_cli.main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and ("RUN_DIR_OR_CHECKPOINT_DIR" in err[0] or argv[0] in err[0]), (argv, err)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("")  # a run that has not saved yet: nothing to load
    assert verify_cli.main([str(run)]) == 1


def test_resume_skips_a_damaged_newest_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bitcpm.training import checkpoint as ckpt

    run = _run(tmp_path, (2, 4, 6))
    _truncate(run / "checkpoints" / "step_00000006")
    assert ckpt.newest_intact_checkpoint(run) == run / "checkpoints" / "step_00000004"
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("bitcpm: warning: checkpoint ") and "__0_0.distcp: size" in out[0]
    # Moved out of the step_ names: never loaded again, and pruning cannot keep it in place of a good one.
    assert [p.name for p in ckpt.complete_checkpoints(run)] == ["step_00000002", "step_00000004"]
    assert (run / "checkpoints" / "damaged_step_00000006" / "COMPLETE").exists()
    assert ckpt.newest_intact_checkpoint(tmp_path / "empty") is None  # no checkpoint at all: a fresh start


def test_resume_stops_when_every_checkpoint_is_damaged(tmp_path: Path) -> None:
    from bitcpm.training import checkpoint as ckpt

    run = _run(tmp_path, (4,))
    _truncate(run / "checkpoints" / "step_00000004")
    expected = r"every complete checkpoint in .* is damaged; the newest, step_00000004: __0_0.distcp: size"
    with pytest.raises(DamagedCheckpointError, match=expected):
        ckpt.newest_intact_checkpoint(run)
    assert (run / "checkpoints" / "step_00000004" / "COMPLETE").exists()  # left as it was


def test_preflight_names_the_damaged_file(tmp_path: Path) -> None:
    from tests.support.config_errors import config_error
    from tests.support.finished_run import finished_run

    run = finished_run(tmp_path / "run")
    ckpt = run / "checkpoints" / "step_00000004"
    (ckpt / "__0_0.distcp").write_bytes(b"x" * 10)
    write_manifest(ckpt)
    (ckpt / "__0_0.distcp").write_bytes(b"x" * 3)
    message = config_error(["stage=qat", f"stage.init_from={run}"])
    damage = "__0_0.distcp: size differs (3 bytes, the manifest says 10)"
    assert message == f"stage.init_from={run}: checkpoint {ckpt} is damaged: {damage}"


def test_converter_reports_a_damaged_legacy_shard_in_one_line(tmp_path: Path) -> None:
    from bitcpm.training.convert_checkpoint import ConvertError, read_legacy

    old = tmp_path / "step_00000004"
    old.mkdir()
    (old / "COMPLETE").write_text("")
    (old / "shard_tp00_pp00.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConvertError, match=r"shard_tp00_pp00.pt: cannot be read, the file is damaged \(") as info:
        read_legacy(old)
    assert "\n" not in str(info.value)
