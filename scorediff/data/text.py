"""Token data for discrete diffusion: text chunked into fixed-length sequences, and digits as 64 tokens.

Every dataset here is an ``ArrayDataset`` of LongTensor x (N, L) with ``info`` a ``TokenInfo`` (kind "tokens",
shape (L,), ``vocab``, and the ``tokenizer`` record that decodes samples without the data).

* ``text``: the UTF-8 text files the user names (``files``: one path or a list), tokenised by characters
  ("char": the vocabulary is the sorted set of characters of the text), bytes ("byte": 256 values), subwords
  ("bpe": byte-pair encoding learned on the text itself, ``vocab_size`` tokens; ``BPETokenizer``) or a Hugging Face
  ``tokenizers`` JSON file (the optional ``tokenizers`` package, imported only then), concatenated with a newline
  between files and cut into non-overlapping chunks of ``length`` tokens (the tail shorter than ``length`` is dropped).
* ``pydoc-text``: the same over the Python standard library's own documentation (``pydoc_data.topics``, ~370 k
  characters once repeated paragraphs are dropped, 103 distinct; ``prose=True``: its running text only), so that a
  discrete run needs nothing from the user.
* ``digits-tokens``: scikit-learn's 8x8 digits as 64-token sequences over their 17 grey levels (row-major).

The train / test split (``scorediff.data.make(..., split=...)``) holds out whole chunks.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .base import ArrayDataset, DataInfo

TOKENIZERS = ("char", "byte", "bpe")  # built in; any other value is a path to a tokenizers JSON file


@dataclass(frozen=True)
class TokenInfo(DataInfo):
    """``DataInfo`` of token data: shape (L,), kind "tokens", the vocabulary size and how to decode."""

    vocab: int = 0
    tokenizer: dict = field(default_factory=dict)  # {"kind": "char" | "bpe" | "byte" | "file", ...}: the record
    image: tuple[int, ...] = ()  # tokens that are pixels: (H, W) of the picture they make (digits: (8, 8))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "vocab": self.vocab, "tokenizer": dict(self.tokenizer),
                "image": list(self.image)}


class Tokenizer:
    """encode(str) -> list[int], decode(list[int]) -> str, ``vocab`` token values, ``record`` (JSON-able)."""

    vocab: int
    record: dict

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError


class CharTokenizer(Tokenizer):
    def __init__(self, chars: str):
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}
        self.vocab, self.record = len(chars), {"kind": "char", "chars": chars}

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocabulary of {self.vocab} characters") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[i] if 0 <= i < self.vocab else "\N{FULL BLOCK}" for i in ids)


class ByteTokenizer(Tokenizer):
    vocab, record = 256, {"kind": "byte"}

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


# GPT-2's pre-tokenisation (Radford et al. 2019), without its Unicode classes: merges never cross these chunks
# (a word with its leading space, a number, a run of punctuation, whitespace)
_CHUNK = re.compile(r" ?[^\W\d_]+| ?\d+| ?[^\s\w]+|_+|\s+(?!\S)|\s+")


class BPETokenizer(Tokenizer):
    """Byte-pair encoding over characters (Sennrich, Haddow & Birch 2016, "Neural Machine Translation of Rare Words
    with Subword Units"; GPT-2's chunking): tokens 0..C-1 are the text's characters (sorted), token C + k the k-th
    merge. ``BPETokenizer.train(text, vocab_size)`` learns the merges; encoding applies them in rank order within
    each chunk, so every text over the characters round-trips exactly (``decode(encode(s)) == s``)."""

    def __init__(self, chars: str, merges: list[tuple[str, str]]):
        self.chars, self.merges = chars, [tuple(m) for m in merges]
        self.tokens = list(chars) + [a + b for a, b in self.merges]
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.rank = {m: k for k, m in enumerate(self.merges)}
        self.vocab = len(self.tokens)
        self.record = {"kind": "bpe", "chars": chars, "merges": [list(m) for m in self.merges]}
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        """Merge the most frequent adjacent pair (ties: the pair that sorts last) until ``vocab_size`` tokens or no pair
        occurs twice; pair counts are updated only in the chunks a merge touches."""
        chars = "".join(sorted(set(text)))
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(chars):
            raise ValueError(f"vocab_size must be an integer >= the {len(chars)} characters of the text, "
                             f"got {vocab_size!r}")
        counts = Counter(_CHUNK.findall(text))
        words = [list(w) for w in counts]
        freq = list(counts.values())
        pairs: Counter = Counter()
        where: defaultdict = defaultdict(set)
        for i, w in enumerate(words):
            for p in zip(w, w[1:]):
                pairs[p] += freq[i]
                where[p].add(i)
        merges: list[tuple[str, str]] = []
        while len(chars) + len(merges) < vocab_size and pairs:
            best, n = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
            if n < 2:
                break
            merges.append(best)
            for i in where.pop(best):
                w = words[i]
                for p in zip(w, w[1:]):
                    pairs[p] -= freq[i]
                words[i] = w = _merge(w, best)
                for p in zip(w, w[1:]):
                    pairs[p] += freq[i]
                    where[p].add(i)
            pairs = +pairs  # drop the pairs no chunk holds any more
        return cls(chars, merges)

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = self._cache.get(chunk)
        if ids is None:
            w = list(chunk)
            while len(w) > 1:
                best = min(zip(w, w[1:]), key=lambda p: self.rank.get(p, len(self.rank)))
                if best not in self.rank:
                    break
                w = _merge(w, best)
            ids = self._cache[chunk] = [self.index[t] for t in w]
        return ids

    def encode(self, text: str) -> list[int]:
        missing = set(text) - set(self.chars)
        if missing:
            raise ValueError(f"character {min(missing)!r} is not in the vocabulary of the tokenizer's "
                             f"{len(self.chars)} characters")
        return [i for chunk in _CHUNK.findall(text) for i in self._encode_chunk(chunk)]

    def decode(self, ids) -> str:
        return "".join(self.tokens[i] if 0 <= i < self.vocab else "\N{FULL BLOCK}" for i in ids)


def _merge(w: list[str], pair: tuple[str, str]) -> list[str]:
    """``w`` with every non-overlapping occurrence of ``pair`` (left to right) joined into one symbol."""
    out, i = [], 0
    while i < len(w):
        if i + 1 < len(w) and w[i] == pair[0] and w[i + 1] == pair[1]:
            out.append(w[i] + w[i + 1])
            i += 2
        else:
            out.append(w[i])
            i += 1
    return out


class FileTokenizer(Tokenizer):
    """A Hugging Face ``tokenizers`` tokenizer saved as JSON (the optional ``tokenizers`` package)."""

    def __init__(self, path: str):
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ModuleNotFoundError:
            raise ValueError(f"tokenizer {path!r} is a tokenizers file, but the 'tokenizers' package is not "
                             "installed (pip install 'scorediff[text]'); or use tokenizer 'char' or 'byte'") from None
        try:
            self.tok = HFTokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises its own exception type
            raise ValueError(f"tokenizer file {path!r} could not be read ({e})") from None
        self.vocab = self.tok.get_vocab_size()
        self.record = {"kind": "file", "path": str(Path(path).resolve())}

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])


def tokenizer_from_record(record: dict) -> Tokenizer:
    """The tokenizer a ``TokenInfo.tokenizer`` record describes (to decode a run's samples)."""
    kind = record.get("kind")
    if kind == "char":
        return CharTokenizer(record["chars"])
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer(record["chars"], record["merges"])
    if kind == "file":
        return FileTokenizer(record["path"])
    raise ValueError(f"tokenizer record {record!r} unknown (kind char, bpe, byte or file)")


def _read(path: str | Path) -> str:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"text file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"text file {str(path)!r} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    if not text.strip():
        raise ValueError(f"text file {str(path)!r} is empty")
    return text


def _check_length(length: Any) -> int:
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"sequence length must be a positive integer, got {length!r}")
    return length


def tokenize(text: str, tokenizer: str, length: int, source: str, vocab_size: int | None = None) -> ArrayDataset:
    """Chunk ``text`` into (N, length) token ids with its ``TokenInfo``; ``vocab_size`` for ``tokenizer="bpe"``
    only (default 512)."""
    length = _check_length(length)
    if vocab_size is not None and tokenizer != "bpe":
        raise ValueError(f"data option vocab_size applies to tokenizer 'bpe' only, not {tokenizer!r}")
    if tokenizer == "char":
        tok: Tokenizer = CharTokenizer("".join(sorted(set(text))))
    elif tokenizer == "bpe":
        tok = BPETokenizer.train(text, 512 if vocab_size is None else vocab_size)
    elif tokenizer == "byte":
        tok = ByteTokenizer()
    else:
        tok = FileTokenizer(tokenizer)
    ids = torch.tensor(tok.encode(text), dtype=torch.long)
    n = ids.numel() // length
    if n < 2:
        raise ValueError(f"{source} holds {ids.numel()} tokens: fewer than two sequences of length {length} "
                         "(give more text or a smaller length)")
    info = TokenInfo((length,), 0, "tokens", vocab=max(tok.vocab, 2), tokenizer=tok.record)
    return ArrayDataset(ids[: n * length].reshape(n, length), None, info)


def text(files: str | list[str], tokenizer: str = "char", length: int = 128,
         vocab_size: int | None = None) -> ArrayDataset:
    """The text files ``files`` (UTF-8), tokenised by ``tokenizer`` ("char", "bpe" with ``vocab_size`` tokens,
    "byte" or a tokenizers JSON file) and cut into sequences of ``length`` tokens."""
    paths = [files] if isinstance(files, str) else list(files)
    if not paths:
        raise ValueError("data 'text' needs files: one path or a list (--set data.options.files=PATH)")
    return tokenize("\n".join(_read(p) for p in paths), tokenizer, length, f"text {', '.join(map(str, paths))}",
                    vocab_size)


def pydoc_text(tokenizer: str = "char", length: int = 128, prose: bool = False,
               vocab_size: int | None = None) -> ArrayDataset:
    """The Python documentation topics shipped with the standard library (``pydoc_data.topics``), in key order.

    Paragraphs that repeat an earlier one are dropped (~370 k characters remain of 465 k). ``prose``: only the
    paragraphs of running text (no line indented or starting a table, rule or list; at least 60 characters), each
    joined into one line: ~140 k characters of English sentences instead of mixed prose, grammar rules, code and
    tables.
    """
    from pydoc_data.topics import topics

    if not isinstance(prose, bool):
        raise ValueError(f"data 'pydoc-text' option prose must be true or false, got {prose!r}")
    # a fifth of the paragraphs repeat an earlier one (topics share sections): keep each once, so that a held-out
    # chunk is not also a training chunk (compared with whitespace normalised: some copies are indented)
    paragraphs, seen = [], set()
    for para in (p for k in sorted(topics) for p in re.split(r"\n\s*\n", topics[k])):
        key = " ".join(para.split())
        if key not in seen:
            seen.add(key)
            paragraphs.append(para)
    text = "\n".join(_prose(paragraphs)) if prose else "\n\n".join(paragraphs)
    return tokenize(text, tokenizer, length, "pydoc_data.topics" + (" (prose)" if prose else ""), vocab_size)


def _prose(paragraphs: list[str]) -> list[str]:
    """The paragraphs of running text (see ``pydoc_text``), each as one line."""
    out = []
    for para in paragraphs:
        lines = para.split("\n")
        if any(not line or line[0].isspace() or line[0] in "|+=-*" for line in lines):
            continue
        joined = " ".join(line.strip() for line in lines)
        if len(joined) >= 60:
            out.append(joined)
    return out


def digits_tokens() -> ArrayDataset:
    """scikit-learn's 8x8 digits as 64 tokens over the 17 grey levels 0..16 (row-major); labels 0..9."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.long).reshape(-1, 64)
    names = tuple(str(i) for i in range(10))
    info = TokenInfo((64,), 10, "tokens", names, levels=17, vocab=17, tokenizer={"kind": "levels"}, image=(8, 8))
    return ArrayDataset(x, torch.as_tensor(d.target), info)
