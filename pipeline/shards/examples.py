"""BERT pretraining examples from tokenised documents: pure functions, plain tuples out.

The recipe is Google's `create_pretraining_data.py`, as the shard stage's issue states it:
sentences gathered into chunks up to a target length (sometimes a short one), segment A the
first k sentences, B the rest ("actual next") or, half the time, sentences from another document
("random next", the chunk's unused sentences put back); pairs trimmed from the longer side at a
random end. A document is a list of sentences, each a list of token ids without special tokens.
"""

from __future__ import annotations

import random
from itertools import chain

from bertflow.pipeline.core.literals import Objective

Document = list[list[int]]
# (token ids with [CLS]/[SEP], length of "[CLS] A [SEP]", label): label 1 = B is a random next
# (nsp) or A and B are swapped (sop); -1 when there is no pair (objective "none").
Example = tuple[list[int], int, int]
NO_LABEL = -1


def document_examples(
    docs: list[Document],
    index: int,
    max_seq_len: int,
    short_seq_prob: float,
    objective: Objective,
    rng: random.Random,
    cls_id: int,
    sep_id: int,
) -> list[Example]:
    """The examples of `docs[index]`; random-next segments come from other documents of `docs`."""
    if objective == "none":
        return _contiguous_examples(docs[index], max_seq_len, cls_id, sep_id)
    doc = docs[index]
    max_tokens = max_seq_len - 3
    target = max_tokens if rng.random() >= short_seq_prob else rng.randint(2, max_tokens)
    examples: list[Example] = []
    chunk: Document = []
    length = 0
    i = 0
    while i < len(doc):
        chunk.append(doc[i])
        length += len(doc[i])
        if i == len(doc) - 1 or length >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a = list(chain.from_iterable(chunk[:a_end]))
            pair = None
            random_next = objective == "nsp" and (len(chunk) == 1 or rng.random() < 0.5)
            if random_next and len(docs) > 1:  # a lone document has no other to draw from
                b = _random_next(docs, index, target - len(a), rng)
                i -= len(chunk) - a_end  # the chunk's unused sentences go back
                pair = (a, b, 1)
            if pair is None and len(chunk) >= 2:
                b = list(chain.from_iterable(chunk[a_end:]))
                pair = (b, a, 1) if objective == "sop" and rng.random() < 0.5 else (a, b, 0)
            if pair is not None:
                a, b, label = pair
                a, b = truncate_pair(a, b, max_tokens, rng)
                if a and b:
                    examples.append(([cls_id, *a, sep_id, *b, sep_id], len(a) + 2, label))
            chunk, length = [], 0
        i += 1
    return examples


def _random_next(docs: list[Document], index: int, target: int, rng: random.Random) -> list[int]:
    """Sentences from a random position of another document, until `target` tokens."""
    other = rng.randrange(len(docs) - 1)
    other += other >= index  # uniform over the documents that are not `index`
    doc = docs[other]
    b: list[int] = []
    for sentence in doc[rng.randrange(len(doc)) :]:
        b.extend(sentence)
        if len(b) >= target:
            break
    return b


def truncate_pair(
    a: list[int], b: list[int], max_tokens: int, rng: random.Random
) -> tuple[list[int], list[int]]:
    """Remove tokens one at a time from the longer side, at its front or back at random."""
    len_a, len_b = len(a), len(b)
    cut_a = cut_b = 0
    while len_a + len_b > max_tokens:
        if len_a > len_b:
            len_a, cut_a = len_a - 1, cut_a + 1
        else:
            len_b, cut_b = len_b - 1, cut_b + 1
    # each removal flips a fair coin for front or back: only the number of fronts matters
    front_a = rng.getrandbits(cut_a).bit_count() if cut_a else 0
    front_b = rng.getrandbits(cut_b).bit_count() if cut_b else 0
    return a[front_a : front_a + len_a], b[front_b : front_b + len_b]


def _contiguous_examples(
    doc: Document, max_seq_len: int, cls_id: int, sep_id: int
) -> list[Example]:
    """RoBERTa-style: whole sentences packed up to the full length, one segment, no pair label."""
    limit = max_seq_len - 2
    examples: list[Example] = []
    tokens: list[int] = []
    for sentence in doc:
        if tokens and len(tokens) + len(sentence) > limit:
            examples.append(([cls_id, *tokens, sep_id], len(tokens) + 2, NO_LABEL))
            tokens = []
        tokens.extend(sentence[: limit - len(tokens)])
    if tokens:
        examples.append(([cls_id, *tokens, sep_id], len(tokens) + 2, NO_LABEL))
    return examples
