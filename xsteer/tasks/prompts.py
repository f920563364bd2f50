"""Rendering prompts: chat messages through a model's own chat template, or a plain fallback.

A task (:mod:`xsteer.tasks`) builds the messages; this module turns them into the exact text a model reads.
Models without a template (base models such as the Gemma-3-270M GGUF, which echo nonsense when fed chat
markup) get a documented plain "Question:/Answer:" fallback. Rendered text is kept exactly as the template
writes it, BOS included: :func:`xsteer.core.models.encode` removes a leading BOS only for tokenizers that
add one themselves (SmolLM2's BOS *is* ``<|im_start|>``, the first token of every ChatML turn, and must stay).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xsteer.errors import InputError

__all__ = ["render", "render_pair_text"]

# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _has_template(tokenizer: Any) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def _merge_system(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Fold system messages into the first user turn (for templates without a system role)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return rest
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


def _render_plain(messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
    """Plain fallback: "system\\n\\n" then "Question: {user}\\nAnswer: {assistant}\\n\\n" per turn."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    parts: list[str] = [f"{system}\n\n"] if system else []
    turns = [m for m in messages if m["role"] != "system"]
    for i, m in enumerate(turns):
        if m["role"] == "user":
            parts.append(f"Question: {m['content']}\n")
            nxt = turns[i + 1] if i + 1 < len(turns) else None
            if nxt is None:
                if add_generation_prompt:
                    parts.append("Answer:")
            elif nxt["role"] != "assistant":
                parts.append("\n")
        elif m["role"] == "assistant":
            parts.append(f"Answer: {m['content']}\n\n")
        else:
            raise InputError(f"unsupported role {m['role']!r}")
    return "".join(parts)


def render(tokenizer: Any, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
    """Render chat ``messages`` to one prompt string for ``tokenizer``.

    With a chat template (``tokenizer.chat_template`` set): ``apply_chat_template(tokenize=False)``.
    A template that rejects the system role (raises, e.g. Gemma-2) or silently drops it gets the
    system text prepended to the first user turn instead. Without a template: the plain fallback, i.e. system text + blank
    line, then ``"Question: {user}\\nAnswer: {assistant}\\n\\n"`` per turn, ending with
    ``"Question: {q}\\nAnswer:"``. ``tokenizer=None`` also selects the plain fallback.
    """
    messages = [dict(m) for m in messages]
    if not _has_template(tokenizer):
        return _render_plain(messages, add_generation_prompt)

    def apply(msgs: list[dict[str, str]]) -> str:
        out = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt)
        if not isinstance(out, str):  # defensive: some versions wrap the string
            raise TypeError(f"apply_chat_template returned {type(out).__name__}, expected str")
        return out

    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system").strip()
    if not system:
        return apply(messages)
    try:
        text = apply(messages)
    except Exception:  # jinja2 TemplateError ("System role not supported", "roles must alternate")
        text = None
    if text is None or system not in text:
        text = apply(_merge_system(messages))
    return text


# End-of-turn markers of common chat templates (ChatML/Qwen, Gemma, Llama-3, Phi, Mistral, DeepSeek),
# stripped after a final assistant message.
_END_MARKERS: tuple[str, ...] = (
    "<|im_end|>",
    "<end_of_turn>",
    "<|eot_id|>",
    "<|end|>",
    "<|endoftext|>",
    "</s>",
    "<|end_of_text|>",
    "<｜end▁of▁sentence｜>",
)


def render_pair_text(tokenizer: Any, question: str, response: str, *, system: str | None = None) -> str:
    """One (user ``question``, assistant ``response``) exchange as a single string, for contrastive pairs.

    Through the chat template when present (``add_generation_prompt=False``), with anything the
    template appends after the response (end-of-turn token, EOS, newlines) cut off, so the LAST token
    is the last token of the response -- the position steering-vector extraction reads. Without a
    template: ``"Question: {question}\\nAnswer: {response}"`` (preceded by ``system`` + blank line).
    """
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": response}]
    text = render(tokenizer, messages, add_generation_prompt=False)
    target = response.strip()
    trimmed = _strip_end_markers(tokenizer, text)
    # Usual case: the template appended only end-of-turn markers/whitespace after the response.
    if not target or trimmed.endswith(target):
        return trimmed
    # Otherwise cut right after the response's last occurrence (e.g. a template that appends more text).
    pos = text.rfind(target)
    return text[: pos + len(target)] if pos >= 0 else trimmed


def _strip_end_markers(tokenizer: Any, text: str) -> str:
    """Strip trailing whitespace, EOS and known end-of-turn markers until nothing changes."""
    markers = list(_END_MARKERS)
    eos = getattr(tokenizer, "eos_token", None)
    if isinstance(eos, str) and eos:
        markers.insert(0, eos)
    changed = True
    while changed:
        changed = False
        text = text.rstrip()
        for marker in markers:
            if text.endswith(marker):
                text = text[: -len(marker)]
                changed = True
    return text
