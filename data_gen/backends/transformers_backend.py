"""A local causal LM through ``transformers``' ``generate`` (CPU-capable; GGUF checkpoints load via ``gguf_file``).

GGUF files are de-quantised to a regular torch model by transformers (needs the ``gguf`` package).
The reply can be prefilled (``assistant_prefix``), which keeps small models on the JSON format; the
returned text includes the prefix.

Example (not run as a doctest: it needs a chat model on disk; ``tests/test_data_gen_llm.py`` uses a
tiny random causal LM):
    >>> backend = TransformersBackend("runs/models/qwen",                        # doctest: +SKIP
    ...                               gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    >>> backend.generate([[{"role": "user", "content": "Say hi"}]], max_new_tokens=8)[0].text  # doctest: +SKIP
    'Hi! How can I help you today?'
"""

from __future__ import annotations

from typing import Any

from colmed.data_gen.backends.base import Completion


class TransformersBackend:
    """Batched, left-padded generation with a Hugging Face causal LM."""

    name = "transformers"
    supports_prefill = True

    def __init__(self, model: str, gguf_file: str | None = None, device: str | None = None, batch_size: int = 4,
                 model_obj: Any = None, tokenizer: Any = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_name = model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model, **kwargs)
        self.model = (model_obj or AutoModelForCausalLM.from_pretrained(model, **kwargs)).to(self.device).eval()
        self.tokenizer.padding_side = "left"  # decoder-only models must be left-padded to batch
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.batch_size = batch_size

    def render(self, conversation: list[dict[str, str]], assistant_prefix: str = "") -> str:
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        else:  # base models without a chat template: a plain transcript
            text = "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in conversation) + "\n\nASSISTANT: "
        return text + assistant_prefix

    def generate(self, conversations, *, max_new_tokens: int = 384, temperature: float = 0.7, seed: int = 0,
                 json_schema=None, assistant_prefix: str = "") -> list[Completion]:
        import torch

        prompts = [self.render(c, assistant_prefix) for c in conversations]
        # Batch similar lengths together: padding is wasted compute on CPU.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Completion | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self.tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                                 add_special_tokens=False, return_token_type_ids=False).to(self.device)
            torch.manual_seed(seed)
            sampling = {"do_sample": True, "temperature": temperature, "top_p": 0.95} if temperature > 0 else \
                {"do_sample": False}
            # Stop once the JSON list closes: small models otherwise keep adding items until the budget ends.
            stop = {"stop_strings": ["]}"], "tokenizer": self.tokenizer} if json_schema is not None else {}
            with torch.inference_mode():
                gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                          **sampling, **stop)
            new = gen[:, enc["input_ids"].shape[1]:]
            for row, i in enumerate(idx):
                tokens = new[row]
                n_new = int((tokens != self.tokenizer.pad_token_id).sum())
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                out[i] = Completion(assistant_prefix + text, prompt_tokens=int(enc["attention_mask"][row].sum()),
                                    completion_tokens=n_new)
        return out  # type: ignore[return-value]
