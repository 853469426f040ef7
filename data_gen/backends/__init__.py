"""LLM backends behind one small interface (:class:`~colmed.data_gen.backends.base.LLMBackend`).

* ``transformers``: a local causal LM through ``generate`` (CPU-capable; GGUF via ``gguf_file``, de-quantised
  to a float torch model);
* ``llamacpp``: a local GGUF file run natively by llama.cpp (the fast CPU path: prompt-prefix KV reuse, JSON
  schema enforced by grammar; optional extra ``colmed[llamacpp]``). The same file served by
  ``python -m llama_cpp.server`` also works through ``openai`` (see ``data_gen/README.md``);
* ``openai``: any OpenAI-compatible ``/chat/completions`` endpoint (``vllm serve``, llama.cpp, ...);
* ``vllm``: offline batched ``vllm.LLM`` with structured JSON output (optional extra: ``colmed[vllm]``).
"""

from colmed.data_gen.backends.base import Completion, LLMBackend

__all__ = ["Completion", "LLMBackend", "make_backend"]


def make_backend(config) -> LLMBackend:
    """The backend named by ``config.backend``, built from the config's model settings."""
    if config.backend == "transformers":
        from colmed.data_gen.backends.transformers_backend import TransformersBackend
        return TransformersBackend(config.model, gguf_file=config.gguf_file, device=config.device)
    if config.backend == "llamacpp":
        from colmed.data_gen.backends.llamacpp_backend import LlamaCppBackend
        return LlamaCppBackend(config.gguf_path(), n_threads=config.threads)  # a checked local file
    if config.backend == "openai":
        import os

        from colmed.data_gen.backends.openai_backend import OpenAIBackend
        return OpenAIBackend(config.base_url, config.model,  # required: GenerateConfig.validate
                             api_key=os.environ.get(config.api_key_env), concurrency=config.concurrency,
                             timeout=config.request_timeout)
    from colmed.data_gen.backends.vllm_backend import VLLMBackend
    return VLLMBackend(config.model, tensor_parallel_size=config.tensor_parallel_size)
