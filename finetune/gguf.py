"""GGUF export: find llama.cpp's ``convert_hf_to_gguf.py`` offline, run it, quantize further.

The converter is not on PyPI as a script; it ships inside the llama-cpp-python *sdist*
(``vendor/llama.cpp/convert_hf_to_gguf.py`` with ``conversion/`` and ``gguf-py/`` beside
it). ``find_converter`` looks, in order, at:

1. an explicit directory (``--llama-cpp-dir``), then ``$RAGATE_LLAMA_CPP_DIR``;
2. a copy already extracted under ``<cache>/llama.cpp/<version>/``;
3. a cached sdist ``<cache>/sdist/llama_cpp_python-<version>.tar.gz``, extracted into (2);
4. only if allowed, ``pip download --no-deps --no-binary :all: llama-cpp-python==<installed>``
   into ``<cache>/sdist`` (this reaches the package index, nothing else), then (3).

``<cache>`` is ``$RAGATE_CACHE_DIR`` or ``~/.cache/ragate``. Versions matching the installed
llama-cpp-python are preferred, so the GGUF is one the installed server can read.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from finetune.errors import ConfigError, FinetuneError

CONVERTER = "convert_hf_to_gguf.py"
ENV_DIR = "RAGATE_LLAMA_CPP_DIR"
ENV_CACHE = "RAGATE_CACHE_DIR"
# --outtype values of convert_hf_to_gguf.py that apply to any model (tq1_0/tq2_0 are for
# ternary models only).
CONVERTER_TYPES = ("f16", "bf16", "f32", "q8_0", "auto")
# Types llama.cpp's quantizer (``llama_model_quantize``, the library behind
# ``llama-quantize``) makes from an f16/f32 GGUF; reached through llama-cpp-python.
QUANT_TYPES = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_0", "q4_1", "q4_k_s", "q4_k_m",
               "q5_0", "q5_1", "q5_k_s", "q5_k_m", "q6_k", "q8_0")
_SDIST = re.compile(r"^llama_cpp_python-(\d+(?:\.\d+)*)\.tar\.gz$")
_WANTED = (CONVERTER, "convert_lora_to_gguf.py", "LICENSE", "gguf-py/", "conversion/")


class ExportError(FinetuneError):
    """The converter or the quantizer failed, or could not be found."""


@dataclass(frozen=True)
class LlamaCppSource:
    """A llama.cpp checkout (or the part of one we need) holding the converter."""

    root: Path
    origin: str  # how it was found, for messages

    @property
    def converter(self) -> Path:
        return self.root / CONVERTER

    @property
    def gguf_py(self) -> Path:
        return self.root / "gguf-py"


def cache_root() -> Path:
    return Path(os.environ.get(ENV_CACHE) or "~/.cache/ragate").expanduser()


def installed_llama_cpp_version() -> str | None:
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return None


def as_llama_cpp_dir(path: str | Path) -> Path | None:
    """``path`` if it holds the converter and gguf-py; also accepts an sdist root."""
    path = Path(path).expanduser()
    for candidate in (path, path / "vendor" / "llama.cpp"):
        if (candidate / CONVERTER).is_file() and (candidate / "gguf-py" / "gguf").is_dir():
            return candidate
    return None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _prefer(versions: list[str], installed: str | None) -> list[str]:
    """The installed version first, then the newest first."""
    ordered = sorted(set(versions), key=_version_key, reverse=True)
    if installed in ordered:
        ordered.remove(installed)
        ordered.insert(0, installed)
    return ordered


def cached_sdists(cache: Path) -> dict[str, Path]:
    folder = cache / "sdist"
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        match = _SDIST.match(path.name)
        if match:
            found[match.group(1)] = path
    return found


def find_converter(
    explicit: str | Path | None = None,
    *,
    allow_download: bool = False,
    cache: Path | None = None,
    installed: str | None = None,
) -> LlamaCppSource:
    """Where ``convert_hf_to_gguf.py`` is; see the module docstring for the order."""
    for given, origin in ((explicit, "--llama-cpp-dir"), (os.environ.get(ENV_DIR), ENV_DIR)):
        if given:
            found = as_llama_cpp_dir(given)
            if found is None:
                raise ExportError(f"{origin}={given} holds no {CONVERTER} with gguf-py/ "
                                  "beside it (expected a llama.cpp checkout)")
            return LlamaCppSource(found, origin)
    cache = cache or cache_root()
    installed = installed or installed_llama_cpp_version()
    extracted = cache / "llama.cpp"
    versions = [p.name for p in extracted.iterdir() if as_llama_cpp_dir(p)] \
        if extracted.is_dir() else []
    sdists = cached_sdists(cache)
    for version in _prefer(versions + list(sdists), installed):
        if version in versions:
            return LlamaCppSource(extracted / version, f"cache {extracted / version}")
        root = extract_sdist(sdists[version], extracted / version)
        return LlamaCppSource(root, f"extracted from {sdists[version]}")
    if allow_download:
        sdist = download_sdist(cache / "sdist", installed)
        matched = _SDIST.match(sdist.name)
        target = extracted / (matched.group(1) if matched else "downloaded")
        return LlamaCppSource(extract_sdist(sdist, target), f"downloaded {sdist.name}")
    raise ExportError(
        f"cannot find llama.cpp's {CONVERTER}: pass --llama-cpp-dir, set {ENV_DIR}, put "
        f"llama_cpp_python-<version>.tar.gz in {cache / 'sdist'}, or allow "
        "`pip download --no-deps --no-binary :all: llama-cpp-python` with --download")


def extract_sdist(sdist: Path, target: Path) -> Path:
    """Extract the converter, ``conversion/`` and ``gguf-py/`` from an sdist into ``target``.

    Extracted to a temporary sibling first and renamed, so an interrupted extraction never
    looks like a complete one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            members = []
            for member in tar.getmembers():
                parts = member.name.split("/", 3)
                # <pkg>-<version>/vendor/llama.cpp/<rest>
                if len(parts) < 4 or parts[1:3] != ["vendor", "llama.cpp"]:
                    continue
                rest = parts[3]
                if any(rest == w or (w.endswith("/") and rest.startswith(w)) for w in _WANTED):
                    member.name = rest
                    members.append(member)
            if not members:
                raise ExportError(f"{sdist} holds no vendor/llama.cpp/{CONVERTER}")
            tar.extractall(tmp, members=members, filter="data")
        if as_llama_cpp_dir(tmp) is None:
            raise ExportError(f"{sdist}: {CONVERTER} or gguf-py/ missing after extraction")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except (OSError, tarfile.TarError) as exc:
        raise ExportError(f"cannot extract {sdist}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def download_sdist(folder: Path, version: str | None) -> Path:
    """``pip download`` the llama-cpp-python sdist (the package index only, no build)."""
    folder.mkdir(parents=True, exist_ok=True)
    requirement = f"llama-cpp-python=={version}" if version else "llama-cpp-python"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "-d", str(folder), requirement]
    done = subprocess.run(command, capture_output=True, text=True)
    sdists = cached_sdists(folder.parent)
    if done.returncode != 0 or not sdists:
        raise ExportError(f"`{' '.join(command)}` failed:\n{done.stderr[-2000:]}")
    return sdists[version] if version in sdists else sdists[_prefer(list(sdists), None)[0]]


def convert_command(source: LlamaCppSource, hf_dir: Path, outfile: Path,
                    outtype: str) -> tuple[list[str], dict[str, str]]:
    """The converter's argv and the environment it needs (gguf-py on PYTHONPATH)."""
    if outtype not in CONVERTER_TYPES:
        raise ConfigError(f"--outtype {outtype!r}: the converter writes {CONVERTER_TYPES}; "
                          f"for {QUANT_TYPES} use --quantize")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(source.gguf_py)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    argv = [sys.executable, str(source.converter), str(hf_dir), "--outfile", str(outfile),
            "--outtype", outtype]
    return argv, env


def convert_to_gguf(source: LlamaCppSource, hf_dir: Path, outfile: Path, outtype: str = "f16",
                    *, log_path: Path | None = None) -> Path:
    argv, env = convert_command(source, hf_dir, outfile, outtype)
    _run(argv, env, log_path or outfile.with_suffix(".convert.log"), "convert_hf_to_gguf.py")
    if not outfile.is_file():
        raise ExportError(f"the converter exited 0 but wrote no {outfile}")
    return outfile


_QUANTIZE = """
import ctypes, sys
import llama_cpp
src, dst, name, threads = sys.argv[1:5]
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + name.upper())
params.nthread = int(threads)
sys.exit(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))
"""


def quantize_gguf(src: Path, dst: Path, qtype: str, *, threads: int = 2,
                  log_path: Path | None = None) -> Path:
    """Quantize an f16/f32 GGUF with llama.cpp's own quantizer (in a child process, so a
    crash in native code cannot take the caller down)."""
    if qtype not in QUANT_TYPES:
        raise ConfigError(f"--quantize {qtype!r}: choose one of {QUANT_TYPES}")
    argv = [sys.executable, "-c", _QUANTIZE, str(src), str(dst), qtype, str(threads)]
    _run(argv, dict(os.environ), log_path or dst.with_suffix(".quantize.log"), "quantize")
    return dst


def _run(argv: list[str], env: dict[str, str], log_path: Path, what: str) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log:
        code = subprocess.call(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise ExportError(f"{what} failed (exit {code}); log {log_path}:\n{tail}")
