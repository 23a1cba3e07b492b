"""Tokenizers built without downloaded vocab files (tiny presets, the trained world).

A word-level `tokenizers` model wrapped as `PreTrainedTokenizerFast`; it saves and loads with
`save_pretrained`/`AutoTokenizer.from_pretrained` like any downloaded tokenizer.
"""
from __future__ import annotations

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL = ["<pad>", "<unk>", "<bos>", "<eos>"]

# A small everyday vocabulary so edit prompts beyond the training captions still tokenize.
BASIC_WORDS = """a an the of in on at with and or to from by photo picture image video painting drawing
sketch of an astronaut cat dog cup coffee rocket cameraman man woman person galaxies galaxy stars
space stained tissue retina eye car bird tree flower house city street mountain sea beach river sky
forest snow rain night day sunset red green blue yellow black white orange purple pink brown gray
big small old young tall running walking flying sitting standing moving jumping swimming driving
is are cartoon style watercolor oil van gogh anime lego wooden metal glass golden silver""".split()


def build_word_tokenizer(words: list[str] | None = None, max_length: int = 16) -> PreTrainedTokenizerFast:
    """A lowercase word-level tokenizer that pads/truncates to `max_length` (like CLIP's 77)."""
    vocab: dict[str, int] = {}
    for w in SPECIAL + sorted(set(BASIC_WORDS) | set(words or [])):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=max_length, pad_token="<pad>", unk_token="<unk>",
        bos_token="<bos>", eos_token="<eos>",
    )


T5_SPECIAL = ["<pad>", "</s>", "<unk>"]  # T5's ids: pad 0, eos 1, unk 2


def build_t5_word_tokenizer(words: list[str] | None = None, max_length: int = 16) -> PreTrainedTokenizerFast:
    """A word-level stand-in for T5's sentencepiece tokenizer (whose vocabulary is a download):
    T5's special ids (pad 0, eos 1, unk 2), `</s>` appended, no bos, lowercase words."""
    vocab: dict[str, int] = {}
    for w in T5_SPECIAL + sorted(set(BASIC_WORDS) | set(words or [])):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=max_length, pad_token="<pad>", unk_token="<unk>", eos_token="</s>",
    )
