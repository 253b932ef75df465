"""The ``transformers:PATH`` backend: a causal language model from a local folder, batched generation.

``PATH`` is a local folder written by ``save_pretrained`` (model + tokenizer); nothing is downloaded
(``local_files_only=True``). Conversations are rendered with
the tokenizer's chat template when it has one, otherwise as plain ``System:/User:/Assistant:`` text. Prompts are
left-padded and generated in batches of ``batch_size``; only the new tokens are decoded. Greedy decoding at
temperature 0; with sampling, each batch's generator is seeded from the batch's request seeds.

``generate_kwargs`` are passed to ``model.generate`` unchanged (e.g. ``prefix_allowed_tokens_fn`` for constrained
decoding; note it receives the full left-padded ``input_ids``, prompt included).
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Any

from tasks.annotate.loading import under_load_lock
from tasks.proposers.llm import BackendError, ChatBackend, Message, OnAnswer


def _plain_text(conversation: list[Message]) -> str:
    parts = [f"{m['role'].capitalize()}: {m['content']}" for m in conversation]
    return "\n\n".join(parts) + "\n\nAssistant:"


class TransformersBackend(ChatBackend):
    """Local causal LM.

    Args:
        path: local folder with the model and its tokenizer.
        device: torch device ("cpu", "cuda", "cuda:1"); default CUDA when available.
        dtype: "float32", "bfloat16" or "float16".
        batch_size: conversations per ``generate`` call.
        max_input_tokens: longer prompts fail with reason ``prompt_too_long`` (nothing is silently cut).
        generate_kwargs: extra keyword arguments for ``model.generate``.
    """

    backend = "transformers"

    def __init__(
        self,
        path: str | Path,
        *,
        device: str | None = None,
        dtype: str = "float32",
        batch_size: int = 8,
        max_input_tokens: int = 4096,
        generate_kwargs: dict[str, Any] | None = None,
    ):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ValueError(f"transformers proposer: {str(path)!r} is not a local model folder")
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype: expected float32, bfloat16 or float16, got {dtype!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.device = device
        self.dtype = dtype
        self.batch_size = int(batch_size)
        self.max_input_tokens = int(max_input_tokens)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.model = None
        self.tokenizer = None

    @property
    def model_id(self) -> str:
        return self.path.name

    def params(self) -> dict[str, Any]:
        """Settings hashed into cache keys: dtype, the names of extra generate arguments (a constraint function
        itself cannot be hashed), and a fingerprint of the model folder."""
        return {"dtype": self.dtype, "generate_kwargs": sorted(self.generate_kwargs), "fingerprint": self.fingerprint}

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the folder's small files (configs, tokenizer, weight index) and the weight files' names and
        sizes: two folders with the same name but different models do not share cache entries."""
        digest = hashlib.sha256()
        for file in sorted(p for p in self.path.rglob("*") if p.is_file()):
            size = file.stat().st_size
            digest.update(f"{file.relative_to(self.path)}:{size}\n".encode())
            if size <= 16 << 20 and file.suffix not in (".safetensors", ".bin", ".pt", ".gguf"):
                digest.update(file.read_bytes())
        return digest.hexdigest()[:16]

    @under_load_lock
    def setup(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(f"transformers proposer: tokenizer in {self.path} has neither pad nor eos token")
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(
            self.path, local_files_only=True, dtype=getattr(torch, self.dtype)
        ).to(device)
        model.eval()
        self.device, self.model, self.tokenizer = device, model, tokenizer

    def format_chat(self, conversation: list[Message]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        return _plain_text(conversation)

    def complete(
        self,
        conversations: list[list[Message]],
        *,
        temperature: float,
        max_tokens: int,
        seeds: list[int],
        on_answer: OnAnswer | None = None,
    ) -> list[str | BackendError]:
        import torch

        self.setup()
        tokenizer, model = self.tokenizer, self.model
        results: list[str | BackendError] = [BackendError("not_run", "")] * len(conversations)
        prompts: list[tuple[int, str]] = []
        for i, conversation in enumerate(conversations):
            text = self.format_chat(conversation)
            n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            if n_tokens > self.max_input_tokens:
                results[i] = BackendError(
                    "prompt_too_long", f"prompt has {n_tokens} tokens; max_input_tokens is {self.max_input_tokens}"
                )
                if on_answer is not None:
                    on_answer(i, results[i])
            else:
                prompts.append((i, text))
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            encoded = tokenizer([t for _, t in batch], return_tensors="pt", padding=True, add_special_tokens=False)
            encoded = encoded.to(self.device)
            sampling: dict[str, Any] = {"do_sample": False}
            if temperature > 0:
                torch.manual_seed(sum(seeds[i] for i, _ in batch) % (2**31))
                sampling = {"do_sample": True, "temperature": temperature}
            with torch.no_grad():
                output = model.generate(
                    **encoded,
                    max_new_tokens=max_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                    **self.generate_kwargs,
                )
            # [batch_size, prompt_length + new_tokens]; keep the new tokens only
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            for (i, _), tokens in zip(batch, new_tokens):
                results[i] = tokenizer.decode(tokens, skip_special_tokens=True)
                if on_answer is not None:
                    on_answer(i, results[i])
        return results


def _hf_vision_messages(conversation: list[Message]) -> list[dict[str, Any]]:
    """OpenAI-style messages → the processor's format: text parts stay, ``image_url`` data URLs become images."""
    import base64
    import io

    from PIL import Image

    out = []
    for message in conversation:
        content = message["content"]
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        else:
            parts = []
            for part in content:
                if part["type"] == "text":
                    parts.append({"type": "text", "text": part["text"]})
                elif part["type"] == "image_url":
                    url = part["image_url"]["url"]
                    header, _, data = url.partition(",")
                    if not header.startswith("data:image/") or ";base64" not in header:
                        raise ValueError(f"transformers judge: only base64 data URLs are supported, got {url[:40]!r}")
                    image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
                    parts.append({"type": "image", "image": image})
                else:
                    raise ValueError(f"transformers judge: unsupported content part type {part['type']!r}")
        out.append({"role": message["role"], "content": parts})
    return out


class TransformersVisionBackend(TransformersBackend):
    """A local vision-language model (``AutoModelForImageTextToText`` + ``AutoProcessor``, e.g. LLaVA or Qwen2-VL
    saved with ``save_pretrained``): the judge's backend for ``transformers:PATH``. Images arrive as ``image_url``
    data URLs (the OpenAI format the judge builds) and are decoded for the processor; the processor's chat template
    places them. Same keywords as ``TransformersBackend``."""

    backend = "transformers"

    @under_load_lock
    def setup(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        processor = AutoProcessor.from_pretrained(self.path, local_files_only=True)
        if getattr(processor, "chat_template", None) is None:
            raise ValueError(f"transformers judge: the processor in {self.path} has no chat template")
        processor.tokenizer.padding_side = "left"
        model = AutoModelForImageTextToText.from_pretrained(
            self.path, local_files_only=True, dtype=getattr(torch, self.dtype)
        ).to(device)
        model.eval()
        self.device, self.model, self.tokenizer, self.processor = device, model, processor.tokenizer, processor

    def complete(
        self,
        conversations: list[list[Message]],
        *,
        temperature: float,
        max_tokens: int,
        seeds: list[int],
        on_answer: OnAnswer | None = None,
    ) -> list[str | BackendError]:
        import torch

        self.setup()
        results: list[str | BackendError] = [BackendError("not_run", "")] * len(conversations)
        for start in range(0, len(conversations), self.batch_size):
            index = list(range(start, min(start + self.batch_size, len(conversations))))
            inputs = self.processor.apply_chat_template(
                [_hf_vision_messages(conversations[i]) for i in index],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={"padding": True},
            ).to(self.device)
            if inputs["input_ids"].shape[1] > self.max_input_tokens:
                for i in index:
                    results[i] = BackendError(
                        "prompt_too_long",
                        f"prompt has {inputs['input_ids'].shape[1]} tokens; max_input_tokens is {self.max_input_tokens}",
                    )
                    if on_answer is not None:
                        on_answer(i, results[i])
                continue
            sampling: dict[str, Any] = {"do_sample": False}
            if temperature > 0:
                torch.manual_seed(sum(seeds[i] for i in index) % (2**31))
                sampling = {"do_sample": True, "temperature": temperature}
            with torch.no_grad():
                output = self.model.generate(
                    **inputs,
                    max_new_tokens=max_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    **sampling,
                    **self.generate_kwargs,
                )
            # [batch_size, prompt_length + new_tokens]; keep the new tokens only
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            for i, tokens in zip(index, new_tokens):
                results[i] = self.tokenizer.decode(tokens, skip_special_tokens=True)
                if on_answer is not None:
                    on_answer(i, results[i])
        return results
