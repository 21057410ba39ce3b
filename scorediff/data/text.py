"""Token data for discrete diffusion: text chunked into fixed-length sequences, and digits as 64 tokens.

Every dataset here is an ``ArrayDataset`` of LongTensor x (N, L) with ``info`` a ``TokenInfo`` (kind "tokens",
shape (L,), ``vocab``, and the ``tokenizer`` record that decodes samples without the data).

* ``text``: the UTF-8 text files the user names (``files``: one path or a list), tokenised by characters
  ("char": the vocabulary is the sorted set of characters of the text), bytes ("byte": 256 values) or a Hugging Face
  ``tokenizers`` JSON file (the optional ``tokenizers`` package, imported only then), concatenated with a newline
  between files and cut into non-overlapping chunks of ``length`` tokens (the tail shorter than ``length`` is dropped).
* ``pydoc-text``: the same over the Python standard library's own documentation (``pydoc_data.topics``, ~465 k
  characters, 103 distinct), so that a discrete run needs nothing from the user.
* ``digits-tokens``: scikit-learn's 8x8 digits as 64-token sequences over their 17 grey levels (row-major).

The train / test split (``scorediff.data.make(..., split=...)``) holds out whole chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .base import ArrayDataset, DataInfo

TOKENIZERS = ("char", "byte")  # built in; any other value is a path to a tokenizers JSON file


@dataclass(frozen=True)
class TokenInfo(DataInfo):
    """``DataInfo`` of token data: shape (L,), kind "tokens", the vocabulary size and how to decode."""

    vocab: int = 0
    tokenizer: dict = field(default_factory=dict)  # {"kind": "char", "chars": ...} | {"kind": "byte"} | {"kind": "file", ...}
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
    if kind == "file":
        return FileTokenizer(record["path"])
    raise ValueError(f"tokenizer record {record!r} unknown (kind char, byte or file)")


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


def tokenize(text: str, tokenizer: str, length: int, source: str) -> ArrayDataset:
    """Chunk ``text`` into (N, length) token ids with its ``TokenInfo``."""
    length = _check_length(length)
    if tokenizer == "char":
        tok: Tokenizer = CharTokenizer("".join(sorted(set(text))))
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


def text(files: str | list[str], tokenizer: str = "char", length: int = 128) -> ArrayDataset:
    """The text files ``files`` (UTF-8), tokenised by ``tokenizer`` ("char", "byte" or a tokenizers JSON file) and
    cut into sequences of ``length`` tokens."""
    paths = [files] if isinstance(files, str) else list(files)
    if not paths:
        raise ValueError("data 'text' needs files: one path or a list (--set data.options.files=PATH)")
    return tokenize("\n".join(_read(p) for p in paths), tokenizer, length, f"text {', '.join(map(str, paths))}")


def pydoc_text(tokenizer: str = "char", length: int = 128) -> ArrayDataset:
    """The Python documentation topics shipped with the standard library (``pydoc_data.topics``), in key order."""
    from pydoc_data.topics import topics

    return tokenize("\n\n".join(topics[k] for k in sorted(topics)), tokenizer, length, "pydoc_data.topics")


def digits_tokens() -> ArrayDataset:
    """scikit-learn's 8x8 digits as 64 tokens over the 17 grey levels 0..16 (row-major); labels 0..9."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.long).reshape(-1, 64)
    names = tuple(str(i) for i in range(10))
    info = TokenInfo((64,), 10, "tokens", names, levels=17, vocab=17, tokenizer={"kind": "levels"}, image=(8, 8))
    return ArrayDataset(x, torch.as_tensor(d.target), info)
