"""A sentence-transformers model's transformer run by ONNX Runtime instead of torch: the
same vectors (mean pooling and L2 normalisation done here, exactly as the model's own
modules do), about twice the chunks per second on one core and half the latency of a
query (measured in the README's ingestion benchmark).

The ONNX file is exported once per model folder with ``torch.onnx.export`` and kept in a
cache folder (``RAGATE_ONNX_CACHE``, default ``~/.cache/ragate/onnx``), written to a
temporary name and renamed, so the gateway and its ingestion workers share one export.
Only models whose pipeline is Transformer → mean Pooling (→ Normalize) are eligible;
anything else stays on torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

OPSET = 17


def eligible(model_path: Path) -> bool:
    """Whether the folder is Transformer → mean pooling (→ Normalize), and ONNX Runtime
    and the exporter's ``onnx`` package are installed."""
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx")):
        return False
    try:
        modules = json.loads((model_path / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling = next(m for m in modules if m["type"].endswith("Pooling"))
        config = json.loads((model_path / pooling["path"] / "config.json").read_text())
    except (OSError, ValueError, KeyError, StopIteration):
        return False
    modes = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
    return kinds in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]) \
        and modes == ["pooling_mode_mean_tokens"]


def cache_dir() -> Path:
    return Path(os.environ.get("RAGATE_ONNX_CACHE") or Path.home() / ".cache/ragate/onnx")


def onnx_path(model_path: Path) -> Path:
    """Where the export of this folder lives: keyed by the folder's name and its files'
    names and sizes (not their bytes: hashing 90 MB of weights at every start costs more
    than it guards against), so a moved copy shares the export and a changed model not."""
    digest = hashlib.sha256()
    for name in sorted(p.name for p in model_path.iterdir() if p.is_file()):
        stat = (model_path / name).stat()
        digest.update(f"{name}\0{stat.st_size}\0".encode())
    return cache_dir() / f"{model_path.name}-{digest.hexdigest()[:16]}" / "model.onnx"


def quantized_path(model_path: Path) -> Path:
    # named by its recipe (int8, MatMuls only, per channel): another recipe, another file
    return onnx_path(model_path).with_name("model.int8-matmul-per-channel.onnx")


def quantize(source: Path, target: Path) -> None:
    """int8 weights for the MatMuls, one scale per output channel, activations quantized
    as they come (dynamic): 183-189 chunks/s on one core against the float model's 64-67
    (``bench/ingestion.py``, one text at a time, see ``encode``), vectors at cosine 0.994
    to the float model's (a scale per whole tensor, or quantizing the embedding table
    too, moved them to 0.956)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = target.with_name(f".{uuid.uuid4().hex}.onnx")
    try:
        with warnings.catch_warnings():  # its advice to pre-process the graph first
            warnings.simplefilter("ignore")
            quantize_dynamic(str(source), str(partial), op_types_to_quantize=["MatMul"],
                             per_channel=True, weight_type=QuantType.QInt8)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def export(model_path: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    class Hidden(torch.nn.Module):  # the transformer's last hidden state, nothing else
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = AutoModel.from_pretrained(model_path, local_files_only=True).eval()
    sample = tokenizer(["an example sentence"], return_tensors="pt")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{uuid.uuid4().hex}.onnx")
    try:
        axes = {"ids": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"},
                "hidden": {0: "batch", 1: "tokens"}}
        with warnings.catch_warnings():  # the tracer's notes on BERT's Python branches
            warnings.simplefilter("ignore")
            torch.onnx.export(Hidden(model), (sample["input_ids"], sample["attention_mask"]),
                              str(partial), input_names=["ids", "mask"],
                              output_names=["hidden"], dynamic_axes=axes, opset_version=OPSET,
                              dynamo=False)
        os.replace(partial, target)  # another process may have won: same bytes either way
    finally:
        partial.unlink(missing_ok=True)


class OnnxEncoder:
    """Thread-safe; ``threads`` for ONNX Runtime's intra-op pool (0: its default);
    ``quantized``: the int8 model (``quantize``) instead of the float one."""

    def __init__(self, model_path: Path, max_length: int, threads: int = 0,
                 quantized: bool = False) -> None:
        import onnxruntime
        from transformers import AutoTokenizer

        target = onnx_path(model_path)
        if not target.is_file():
            export(model_path, target)
        self.quantized = quantized
        if quantized:
            source, target = target, quantized_path(model_path)
            if not target.is_file():
                quantize(source, target)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(target), options,
                                                     providers=["CPUExecutionProvider"])
        self._tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self.max_length = max_length
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """L2-normalised mean-pooled vectors; batches of similar lengths pad least. The int8
        model takes one text at a time: its activations are quantized with one scale over
        the whole input, so in a batch a text's vector would depend on its batch-mates and
        their padding (down to cosine 0.975 to its own); alone it is always the same, and
        on one core it was also the fastest (183-189 chunks/s against 115-156 in batches of 32,
        bench/ingestion.py)."""
        if self.quantized:
            batch_size = 1
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        rows: list[np.ndarray] = [np.empty(0)] * len(texts)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            encoded = self._tokenizer([texts[i] for i in batch], padding=True, truncation=True,
                                      max_length=self.max_length, return_tensors="np")
            mask = encoded["attention_mask"].astype(np.int64)
            with self._lock:
                hidden = self._session.run(None, {"ids": encoded["input_ids"].astype(np.int64),
                                                  "mask": mask})[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            for i, row in zip(batch, pooled, strict=True):
                rows[i] = row
        return np.ascontiguousarray(np.vstack(rows), dtype=np.float32)
