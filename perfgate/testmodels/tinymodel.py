"""A tiny random-weight Llama, built locally, for the demo and the tests on CPU vLLM.

No model can be downloaded on the machines perfgate's tests run on, so this builds one: a
byte-level BPE tokenizer trained on Python standard-library sources already on the machine, a
chat template, and a 2-layer Llama (hidden 128, 2 heads of 64) with random weights, saved with
``save_pretrained``. It takes seconds and ~2 MB, and vLLM serves it like any other model. Its
outputs are gibberish; its timings are real.

Needs the ``cpu`` extra (torch, transformers, tokenizers come with vLLM).
Run as ``python -m perfgate.testmodels.tinymodel DIR``.
"""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

VOCAB_SIZE = 4096
MAX_POSITIONS = 4096
SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|pad|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% else %}<|assistant|>{{ m['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# Standard-library modules whose source is the training text: plain, stable, always present.
_CORPUS_MODULES = (
    "argparse",
    "textwrap",
    "difflib",
    "email/message",
    "http/client",
    "json/decoder",
)
_MARKER = "perfgate-tiny-model.json"


def _corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for name in _CORPUS_MODULES:
        path = stdlib / f"{name}.py"
        if path.exists():
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
    if not texts:
        raise RuntimeError(f"no training text found under {stdlib}")
    return texts


def build(out_dir: Path, *, seed: int = 0) -> Path:
    """Build the tokenizer and model into ``out_dir`` (skipped when already built there)."""
    out_dir = Path(out_dir)
    marker = out_dir / _MARKER
    if marker.exists():
        return out_dir

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    bos = tok.token_to_id("<|bos|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B", special_tokens=[("<|bos|>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        model_max_length=MAX_POSITIONS,
    )
    fast.chat_template = CHAT_TEMPLATE

    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=bos,
        eos_token_id=tok.token_to_id("<|eos|>"),
        pad_token_id=tok.token_to_id("<|pad|>"),
        tie_word_embeddings=True,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    fast.save_pretrained(out_dir)
    marker.write_text(json.dumps({"seed": seed, "vocab_size": config.vocab_size}) + "\n")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m perfgate.testmodels.tinymodel OUT_DIR", file=sys.stderr)
        return 2
    print(build(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
