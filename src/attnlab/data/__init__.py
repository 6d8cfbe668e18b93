"""attnlab.data: corpora, synthetic tasks, tokenizers, vocabularies and batching."""

# Importing these registers their tokenizer kinds ("zh-char", "sentencepiece") for tokenizer_from_dict;
# sentencepiece itself is imported lazily, only when such a tokenizer is built.
from attnlab.data import chinese, subword  # noqa: F401
