"""Tiny language-model seed families on disk, in the real formats, for offline tests.

A WordPiece (BERT) or byte-level BPE (GPT-NeoX) tokenizer is trained with the ``tokenizers``
library on a few dozen generated sentences and saved with ``save_pretrained`` next to random-weight
2-layer models, one directory per seed: exactly what ``huggingface-cli download`` leaves on disk.
"""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("the cat dog bird sat ran flew on under over a mat tree roof quickly slowly red blue green small big "
         "house garden river stone and then while because after before sang barked").split()


def sentences(n: int = 48, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) for _ in range(n)]


def write_text(path: Path, n: int = 48) -> Path:
    path.write_text("\n".join(sentences(n)) + "\n")
    return path


def bert_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=80, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]")


def bpe_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    # Pythia's tokenizer has no pad token: the pipeline pads with EOS.
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def family(root: Path, kind: str = "bert", seeds=(0, 1, 2), hidden: int = 16, layers: int = 2) -> dict[int, Path]:
    """``{seed: directory}``: one ``save_pretrained`` model (random weights from ``seed``) and its
    tokenizer per seed, all sharing one architecture and tokenizer."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, GPTNeoXConfig, GPTNeoXForCausalLM

    texts = sentences()
    tokenizer = bert_tokenizer(texts) if kind == "bert" else bpe_tokenizer(texts)
    vocab = len(tokenizer)
    out = {}
    for seed in seeds:
        torch.manual_seed(seed)
        if kind == "bert":
            config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                                intermediate_size=2 * hidden, max_position_embeddings=64)
            model = BertForMaskedLM(config)  # a pre-training head, as MultiBERTs ship: AutoModel drops it
        else:
            config = GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                   num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64,
                                   bos_token_id=0, eos_token_id=0)
            model = GPTNeoXForCausalLM(config)
        directory = Path(root) / f"{kind}-seed{seed}"
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        out[seed] = directory
    return out
