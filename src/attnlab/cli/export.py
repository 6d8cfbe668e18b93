"""``attnlab export``: write a trained checkpoint in another inference engine's format (CTranslate2, Hugging Face)."""

from __future__ import annotations

import argparse
from pathlib import Path

from attnlab.export import FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint for another inference engine (CTranslate2, Hugging Face)",
                       description="Write a trained checkpoint in another inference engine's format. ctranslate2: "
                                   "a Transformer translation/summarization model with SentencePiece (bpe/unigram) "
                                   "tokenizers becomes a CTranslate2 model directory with source.spm/target.spm and "
                                   "a README.md on translating with it (needs pip install 'attnlab[export]'); "
                                   "refused, with one line saying why: recurrent seq2seq models, classifiers, ViT, "
                                   "captioners, the pointer-generator Transformer (model.copy) and word/char "
                                   "tokenizers (retrain with --set data.src_tokenizer=bpe --set "
                                   "data.tgt_tokenizer=bpe). hf: an exact Hugging Face M2M100ForConditionalGeneration "
                                   "directory (from_pretrained; same logits and greedy output) with the SentencePiece "
                                   "models, vocabularies and a README.md (needs pip install 'attnlab[hf]'); M2M100 "
                                   "is pre-LN and rebuilds fairseq's position table, so only Transformers trained "
                                   "with --set model.positional=fairseq and model.norm_first=true export, on a joint "
                                   "vocabulary or equal-size ones; everything ctranslate2 refuses, post-LN and "
                                   "sinusoidal/learned positions are refused with the reason.")
    p.add_argument("--checkpoint", required=True, type=Path, metavar="DIR",
                   help="checkpoint directory, e.g. runs/x/best (a run directory: its best/, else last/)")
    p.add_argument("--format", required=True, choices=FORMATS, help="target format: " + ", ".join(FORMATS))
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="directory to write; must not exist or be empty (never overwritten)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnlab.export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.out, args.format)
    print(f"exported {result.checkpoint} (step {result.step}) to {args.format} -> {result.out_dir}: "
          f"{', '.join(result.files)}")
    print(f"how to translate with it: {result.out_dir / 'README.md'}")
    return 0
