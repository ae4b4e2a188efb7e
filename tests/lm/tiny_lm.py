"""Tiny causal LMs with a real (char-level) tokenizer, built in code: no downloads.

Shared by the LM and QA-pipeline tests. `tiny_tokenizer(chat=True)` has a chat template so
`qa_prompt` takes the chat path; `chat=False` takes the plain-text path.
"""

from __future__ import annotations

import string

import torch

SPECIALS = ["<pad>", "<s>", "</s>"]
CHARS = list(string.ascii_lowercase + string.ascii_uppercase + string.digits + " \n.,:?!'+-")
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def tiny_tokenizer(chat: bool = True):
    """Char-level PreTrainedTokenizerFast: ids 0-2 special (<pad>, <s>, </s>), then chars."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def vocab_size() -> int:
    return len(SPECIALS) + len(CHARS)


def tiny_model(kind: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float64):
    """A 2-layer random GPT-2 (tied embeddings), Llama or Qwen2 (tied) matching `tiny_tokenizer`."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    v = vocab_size()
    if kind == "gpt2":
        cfg = GPT2Config(vocab_size=v, n_positions=512, n_embd=16, n_layer=2, n_head=2,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
        model = GPT2LMHeadModel(cfg)
    elif kind in ("llama", "qwen2"):
        config, cls = (LlamaConfig, LlamaForCausalLM) if kind == "llama" else (
            Qwen2Config, Qwen2ForCausalLM)
        cfg = config(vocab_size=v, hidden_size=16, intermediate_size=32,
                     num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                     max_position_embeddings=512, tie_word_embeddings=kind == "qwen2",
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
        model = cls(cfg)
        with torch.no_grad():  # RMSNorm weights start at 1: perturb for generic gradients
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.add_(0.1 * torch.randn_like(p))
    else:
        raise ValueError(kind)
    return model.to(dtype).eval()


def save_tiny(path, kind: str = "llama", dtype: torch.dtype = torch.float32):
    """A tiny model (fp32 unless `dtype`) and its chat tokenizer saved like a hub model (so the
    CLI and a subprocess load the same one); returns `path`."""
    tiny_model(kind, dtype=dtype).save_pretrained(path)
    tiny_tokenizer(chat=True).save_pretrained(path)
    return path
