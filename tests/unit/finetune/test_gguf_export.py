"""Finding llama.cpp's converter offline, and refusing to merge into quantized bases."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from finetune.errors import ConfigError
from finetune.export import resolve_source
from finetune.gguf import (
    ENV_DIR,
    ExportError,
    as_llama_cpp_dir,
    convert_command,
    extract_sdist,
    find_converter,
    quantize_gguf,
)
from finetune.models import (
    BaseModelPath,
    quantization_of,
    refuse_quantized_folder,
    refuse_quantized_model,
)


def make_llama_cpp(root: Path) -> Path:
    (root / "gguf-py" / "gguf").mkdir(parents=True)
    (root / "gguf-py" / "gguf" / "__init__.py").write_text("")
    (root / "convert_hf_to_gguf.py").write_text("# converter\n")
    return root


def make_sdist(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"llama_cpp_python-{version}.tar.gz"
    prefix = f"llama_cpp_python-{version}"
    files = {
        f"{prefix}/vendor/llama.cpp/convert_hf_to_gguf.py": f"# {version}\n",
        f"{prefix}/vendor/llama.cpp/gguf-py/gguf/__init__.py": "",
        f"{prefix}/vendor/llama.cpp/conversion/__init__.py": "",
        f"{prefix}/vendor/llama.cpp/src/llama.cpp": "// not needed\n",
        f"{prefix}/llama_cpp/__init__.py": "",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_DIR, raising=False)


def test_explicit_dir_wins_and_accepts_an_sdist_root(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = make_llama_cpp(tmp_path / "sdist-root" / "vendor" / "llama.cpp")
    monkeypatch.setenv(ENV_DIR, str(make_llama_cpp(tmp_path / "env")))
    found = find_converter(tmp_path / "sdist-root", cache=tmp_path / "cache")
    assert found.root == explicit and found.origin == "--llama-cpp-dir"


def test_env_dir_comes_before_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_sdist(tmp_path / "cache" / "sdist", "0.3.36")
    monkeypatch.setenv(ENV_DIR, str(make_llama_cpp(tmp_path / "env")))
    assert find_converter(cache=tmp_path / "cache").origin == ENV_DIR


def test_a_wrong_explicit_dir_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    make_sdist(tmp_path / "cache" / "sdist", "0.3.36")
    with pytest.raises(ExportError, match="--llama-cpp-dir"):
        find_converter(tmp_path, cache=tmp_path / "cache")


def test_sdist_is_extracted_once_into_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    make_sdist(cache / "sdist", "0.3.36")
    first = find_converter(cache=cache, installed="0.3.36")
    assert first.root == cache / "llama.cpp" / "0.3.36"
    assert first.origin.startswith("extracted from")
    assert (first.root / "conversion" / "__init__.py").is_file()
    assert not (first.root / "src").exists()  # only what the converter needs
    second = find_converter(cache=cache, installed="0.3.36")
    assert second.root == first.root and second.origin.startswith("cache")


def test_the_installed_version_is_preferred_over_a_newer_one(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    make_sdist(cache / "sdist", "0.3.9")
    make_sdist(cache / "sdist", "0.3.10")
    assert find_converter(cache=cache, installed="0.3.9").root.name == "0.3.9"
    assert find_converter(cache=cache, installed="9.9").root.name == "0.3.10"  # newest


def test_nothing_found_without_download_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="--llama-cpp-dir.*RAGATE_LLAMA_CPP_DIR.*--download"):
        find_converter(cache=tmp_path / "empty", installed="0.3.36")


def test_extraction_refuses_an_sdist_without_the_converter(tmp_path: Path) -> None:
    bad = tmp_path / "llama_cpp_python-1.0.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("llama_cpp_python-1.0/README.md")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ExportError, match="holds no vendor/llama.cpp"):
        extract_sdist(bad, tmp_path / "out")
    assert as_llama_cpp_dir(tmp_path / "out") is None


def test_convert_command_puts_gguf_py_on_the_path(tmp_path: Path) -> None:
    source = find_converter(make_llama_cpp(tmp_path / "lc"))
    argv, env = convert_command(source, tmp_path / "hf", tmp_path / "o.gguf", "q8_0")
    assert argv == [sys.executable, str(source.converter), str(tmp_path / "hf"),
                    "--outfile", str(tmp_path / "o.gguf"), "--outtype", "q8_0"]
    assert env["PYTHONPATH"].split(":")[0] == str(source.gguf_py)
    with pytest.raises(ConfigError, match="use --quantize"):
        convert_command(source, tmp_path, tmp_path / "o.gguf", "q4_k_m")
    with pytest.raises(ConfigError, match="choose one of"):
        quantize_gguf(tmp_path / "a.gguf", tmp_path / "b.gguf", "q7")


# --- quantized bases -------------------------------------------------------------------------

@pytest.mark.parametrize(("quantization", "expected"), [
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "bitsandbytes 4-bit"),
    ({"quant_method": "bitsandbytes", "_load_in_8bit": True, "load_in_8bit": True},
     "bitsandbytes 8-bit"),
    ({"load_in_4bit": True}, "bitsandbytes 4-bit"),
    ({"quant_method": "gptq", "bits": 4}, "gptq 4-bit"),
    ({"quant_method": "awq", "bits": 4}, "awq 4-bit"),
    ({"quant_method": "gguf"}, None),  # transformers dequantizes GGUF on load
    (None, None),
])
def test_quantization_of_config(quantization: dict[str, Any] | None,
                                expected: str | None) -> None:
    config: dict[str, Any] = {"model_type": "llama"}
    if quantization is not None:
        config["quantization_config"] = quantization
    assert quantization_of(config) == expected


def test_a_bitsandbytes_folder_is_refused_before_loading(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama",
        "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}))
    with pytest.raises(ConfigError, match=r"quantized \(bitsandbytes 4-bit\); cannot merge"):
        refuse_quantized_folder(BaseModelPath.parse(tmp_path), "merge a LoRA adapter into")


class _Param:
    def __init__(self, floating: bool, name: str) -> None:
        self.dtype = type("D", (), {"is_floating_point": floating,
                                    "__str__": lambda self: name})()


class _Model:
    def __init__(self, dtypes: list[tuple[bool, str]], method: str | None = None) -> None:
        self._params = [_Param(f, n) for f, n in dtypes]
        self.config = type("C", (), {})()
        self.hf_quantizer = type("Q", (), {"quantization_config": type(
            "QC", (), {"quant_method": method})()})() if method else None

    def parameters(self) -> list[_Param]:
        return self._params


def test_a_gguf_model_still_packed_is_refused() -> None:
    model = _Model([(True, "torch.float32"), (False, "torch.uint8")], method="gguf")
    with pytest.raises(ConfigError, match="gguf weights .*uint8.*not dequantized"):
        refuse_quantized_model(model, "m.gguf", "merge a LoRA adapter into")


def test_a_dequantized_model_passes() -> None:
    refuse_quantized_model(_Model([(True, "torch.float32")], method="gguf"), "m", "merge")


def test_bitsandbytes_flag_on_the_model_is_refused() -> None:
    model = _Model([(True, "torch.float16")])
    model.is_loaded_in_4bit = True  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="bitsandbytes"):
        refuse_quantized_model(model, "m", "merge")


# --- where the adapter's base is -------------------------------------------------------------

def test_base_comes_from_ragate_train_json(tmp_path: Path) -> None:
    gguf = tmp_path / "base" / "m.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    run = tmp_path / "run"
    (run / "checkpoint-4").mkdir(parents=True)
    (run / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x"}))
    (run / "checkpoint-4" / "adapter_config.json").write_text("{}")
    (run / "ragate_train.json").write_text(json.dumps({"base_model": str(gguf),
                                                       "template": "smollm2"}))
    for folder in (run, run / "checkpoint-4"):
        source = resolve_source(folder)
        assert source.base == BaseModelPath(gguf.parent.resolve(), "m.gguf")
        assert source.template == "smollm2" and source.adapter == folder


def test_adapter_without_a_known_base_asks_for_base(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    with pytest.raises(ConfigError, match="pass --base"):
        resolve_source(tmp_path)


def test_a_full_model_folder_needs_no_merge(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    source = resolve_source(tmp_path)
    assert source.adapter is None and source.base.folder == tmp_path.resolve()
