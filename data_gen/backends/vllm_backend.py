"""Offline batched generation with ``vllm.LLM`` and structured JSON output (optional extra ``colmed[vllm]``).

vLLM is imported only when this backend is built; it needs a GPU machine. Structured output makes
every reply schema-valid JSON (``SamplingParams(structured_outputs=StructuredOutputsParams(json=...))``).

Example (not run as a doctest: it needs the ``vllm`` extra, GPUs and a hub download):
    >>> backend = VLLMBackend("Qwen/Qwen2.5-7B-Instruct", tensor_parallel_size=2)   # doctest: +SKIP
"""

from __future__ import annotations

from colmed.data_gen.backends.base import Completion


class VLLMBackend:
    """``vllm.LLM.chat`` over a whole batch; ``tensor_parallel_size`` GPUs per model."""

    name = "vllm"
    supports_prefill = False

    def __init__(self, model: str, tensor_parallel_size: int = 1, **llm_kwargs):
        try:
            from vllm import LLM
        except ImportError:
            from colmed.core.errors import ColmedError
            raise ColmedError("the vllm backend needs vLLM: pip install 'colmed[vllm]' (GPU machines)") from None
        self.llm = LLM(model=model, tensor_parallel_size=tensor_parallel_size, **llm_kwargs)

    def generate(self, conversations, *, max_new_tokens: int = 384, temperature: float = 0.7, seed: int = 0,
                 json_schema=None, assistant_prefix: str = "") -> list[Completion]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=json_schema) if json_schema is not None else None
        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                structured_outputs=structured)
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        return [Completion(o.outputs[0].text, len(o.prompt_token_ids or []), len(o.outputs[0].token_ids))
                for o in outputs]
