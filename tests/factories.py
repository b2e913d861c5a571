"""Offline fixtures: tiny tokenizers trained in memory, tiny models built from configs, and a
cipher corpus whose correct word mapping is known."""
from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

ENGLISH_WORDS = (
    "the king god land son house water fire people city day night man woman good great small old new "
    "went came saw gave took said made heard spoke and of to in with for from upon before after "
    "bread wine gold silver stone tree river mountain sea light heaven earth word name heart hand eye "
    "seven twelve forty first last many all every this that his her their our"
).split()


def cipher_word(word: str) -> str:
    """A deterministic bijective pseudo-translation of an English word (never an English word)."""
    vowels, consonants = "aeiou", "bdfgklmnprstvz"
    rng = random.Random(sum(ord(c) * 31**i for i, c in enumerate(word)))
    syllables = max(1, (len(word) + 1) // 2)
    return "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables)) + "x"


CIPHER = {w: cipher_word(w) for w in ENGLISH_WORDS}
assert len(set(CIPHER.values())) == len(CIPHER), "cipher must be a bijection"


def english_sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) ** 0.6 for i in range(len(ENGLISH_WORDS))]
    out = []
    for _ in range(n):
        words = rng.choices(ENGLISH_WORDS, weights=weights, k=rng.randint(4, 12))
        out.append(" ".join(words) + rng.choice([".", ".", "!", "?"]))
    return out


# A word-for-word "translation" into Chinese words (written without spaces), distinct and none a
# part of another, so that a dictionary segmenter can find the word boundaries.
CHINESE = dict(zip(ENGLISH_WORDS, (
    "此 王 神 土地 儿子 房屋 水 火 人民 城市 白天 夜晚 男人 女人 好 伟大 小 老 新 "
    "走 来 看见 给 拿 说 做 听见 讲 和 的 到 在 同 为 从 之上 以前 以后 "
    "面包 酒 黄金 白银 石头 树木 河流 山 海洋 光明 天堂 大地 话语 名字 心 手 眼睛 "
    "七 十二 四十 第一 最后 许多 所有 每个 这个 那个 其 她 他们 我们").split()))
assert len(set(CHINESE.values())) == len(CHINESE) == len(ENGLISH_WORDS)
CHINESE_PUNCTUATION = {".": "。", "!": "！", "?": "？"}


def cipher_sentence(sentence: str, cipher: dict[str, str] = CIPHER, separator: str = " ",
                    punctuation: dict[str, str] | None = None) -> str:
    """Translate word by word and swap each adjacent word pair (a little reordering)."""
    body, punct = sentence[:-1], sentence[-1]
    words = [cipher[w] for w in body.split()]
    for i in range(0, len(words) - 1, 2):
        words[i], words[i + 1] = words[i + 1], words[i]
    return separator.join(words) + (punctuation or {}).get(punct, punct)


def cipher_corpus(n: int = 1500, seed: int = 0, *, cipher: dict[str, str] = CIPHER, separator: str = " ",
                  punctuation: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """English sentences and their cipher; ``cipher=CHINESE, separator=""`` gives a target side
    written without spaces."""
    return [(s, cipher_sentence(s, cipher, separator, punctuation)) for s in english_sentences(n, seed)]


def wrap(tokenizer: Tokenizer, **roles) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **roles)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def byte_level_tokenizer(texts: list[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """GPT-2 / SmolLM2 style byte-level BPE."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return wrap(tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
                unk_token="<|endoftext|>", additional_special_tokens=SPECIALS[1:])


def sentencepiece_tokenizer(texts: list[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """Llama-2 / Mistral style: Metaspace BPE with byte fallback."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + 256, special_tokens=["<unk>", "<s>", "</s>", *bytes_],
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return wrap(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n{{ message['content'] }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def gemma_like_tokenizer(texts: list[str], vocab_size: int = 300, unused: int = 300) -> PreTrainedTokenizerFast:
    """Gemma 3 style: SentencePiece-style BPE with byte fallback, roles <pad> <eos> <bos> <unk> <mask>, then
    ``[multimodal]`` and the first third of ``unused`` reserved ``<unusedN>`` specials, the chat-template
    tokens, the byte pieces and the learned vocabulary; at the end the named image tokens (``boi_token``,
    ``eoi_token``, ``image_token``), the other ``<unusedN>`` and a non-special added ``<table>``."""
    from tokenizers import AddedToken

    front = unused // 3
    head = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[multimodal]", *(f"<unused{i}>" for i in range(front)),
            "<start_of_turn>", "<end_of_turn>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + len(head) + 256, special_tokens=[*head, *bytes_],
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    image = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tok.add_special_tokens([*image.values(), *(f"<unused{i}>" for i in range(front, unused))])
    tok.add_tokens([AddedToken("<table>", special=False, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                       special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", mask_token="<mask>", model_specific_special_tokens=image,
                                   extra_special_tokens=["<start_of_turn>", "<end_of_turn>"])
    fast.chat_template = GEMMA_CHAT_TEMPLATE
    return fast


def wordpiece_tokenizer(texts: list[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
                                        show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return wrap(tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")


TINY = {
    "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128),
    "qwen2": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=128),
    "gpt_neox": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     max_position_embeddings=128),
    "mistral": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=128, sliding_window=64),
}
ARCHS = [(arch, tie) for arch in TINY for tie in (True, False)]
# Architectures whose real checkpoints pad the embedding table past the tokenizer, with the multiple
# they pad to (Qwen2 151,936 = 128 x 1,187 rows; Pythia 50,304 = 128 x 393; Phi-3 32,064 = 64 x 501).
PADDED = {"qwen2": 128, "gpt_neox": 128, "phi3": 64}
PADDED_ARCHS = [(arch, tie) for arch in PADDED for tie in (True, False)]
TINY_PADDED = {"phi3": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, max_position_embeddings=128, pad_token_id=None)}


def tiny_causal_lm(arch: str, vocab_size: int, tie: bool, tokenizer: PreTrainedTokenizerFast | None = None,
                   seed: int = 0):
    """A randomly initialised causal LM of a few thousand parameters, in eval mode."""
    ids = {}
    if tokenizer is not None:
        ids = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    sizes = TINY[arch] if arch in TINY else TINY_PADDED[arch]
    config = AutoConfig.for_model(arch, vocab_size=vocab_size, tie_word_embeddings=tie, **{**sizes, **ids})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    return model


def padded_causal_lm(arch: str, tokenizer: PreTrainedTokenizerFast, tie: bool, *, zero_padding: bool = False,
                     seed: int = 0):
    """A tiny causal LM whose table is padded past ``tokenizer`` as the real ``arch`` checkpoints are:
    rows = the next multiple of ``PADDED[arch]`` with at least one spare row (an odd multiple, so that
    the multiple inferred from the row count is ``PADDED[arch]``). Padding rows are random (never
    trained, as in Qwen2) or, with ``zero_padding``, zeros; an untied head differs from the input table."""
    multiple = PADDED[arch]
    count = len(tokenizer) // multiple + 1
    rows = (count + (count % 2 == 0)) * multiple
    model = tiny_causal_lm(arch, rows, tie, tokenizer, seed=seed)
    with torch.no_grad():
        if not tie:
            torch.nn.init.normal_(model.get_output_embeddings().weight)
        if zero_padding:
            model.get_input_embeddings().weight[len(tokenizer):] = 0
            model.get_output_embeddings().weight[len(tokenizer):] = 0
    return model


def sentencepiece_model_file(texts: list[str], path, vocab_size: int = 420):
    """A real SentencePiece BPE ``.model`` file as Llama-2 / Mistral's (byte fallback, digits split,
    ``<unk> <s> </s>`` at ids 0-2), trained with the ``sentencepiece`` library itself."""
    import io

    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buffer, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, split_digits=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2)
    path.write_bytes(buffer.getvalue())
    return path


TEKKEN_PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
                  r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")


def tekken_file(texts: list[str], path, vocab_size: int = 400, num_special: int = 24):
    """A Mistral Tekken ``tekken.json`` of the old format (no ``special_tokens`` list), as in
    mistral-common's wheel: byte-level BPE ranks (the 256 single bytes first) with Tekken's split
    regex, ``num_special`` control ids before them."""
    import base64
    import json

    from tokenizers import Regex

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(TEKKEN_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    to_byte = {c: b for b, c in zip(range(256), _byte_alphabet())}
    ranked = [bytes(to_byte[c] for c in token) for token, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    singles = [bytes([b]) for b in range(256)]
    ranked = singles + [token for token in ranked if len(token) > 1]
    vocab = [{"rank": rank, "token_bytes": base64.b64encode(token).decode(), "token_str": None}
             for rank, token in enumerate(ranked)]
    config = {"pattern": TEKKEN_PATTERN, "num_vocab_tokens": len(vocab), "default_vocab_size": len(vocab) + num_special,
              "default_num_special_tokens": num_special, "version": "v3"}
    path.write_text(json.dumps({"config": config, "vocab": vocab}), encoding="utf-8")
    return path


def _byte_alphabet() -> list[str]:
    """GPT-2's printable character of each byte 0..255, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def benchmark(name: str):
    """Import ``benchmarks/NAME.py`` as a module (benchmarks are scripts, not a package; some import
    their sibling scripts, so the folder is on the path while it loads)."""
    folder = Path(__file__).parents[1] / "benchmarks"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module
