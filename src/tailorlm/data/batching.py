"""Examples -> batches, and the seeded order in which training sees them.

Packing (default): a micro-batch's examples are laid into rows of at most `row_tokens` tokens,
filled evenly, in the number of rows that costs least to compute (see `_rows`). Position ids restart at 0 for each example, and with no attention mask
transformers builds a block-diagonal causal mask from them, so no token attends across an example
boundary. Targets are shifted inside each example, so no example predicts its neighbour's first
token. Only the columns that carry a target reach the LM head (`keep`), so the logits of prompt
tokens, which would be thrown away, are never computed.

Padding (packing off): one example per row, right-padded, with an attention mask.

Preference pairs (`collate_pairs`): padded, chosen rows then rejected rows, a pair never split.

Classification (`collate_classes`): one example per row, padded, with an attention mask; the target
is the row's class index. Decoders are padded on the left, so the last position, which their head
reads, is always a real token.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import torch

from .tokenize import IGNORE, Example


@dataclass
class Batch:
    input_ids: torch.Tensor           # (rows, T)
    position_ids: torch.Tensor        # (rows, T), restarting at 0 per example
    targets: torch.Tensor             # (rows, T): the next token's label, IGNORE where none
    attention_mask: torch.Tensor | None   # (rows, T) in padded mode; None when packed
    keep: torch.Tensor                # (K,) columns with any target: logits are computed only there
    n_targets: int
    ids: list[int]                    # example ids, in order
    spans: list[tuple[int, int, int]] # (row, start, length) of each example, aligned with ids
    weights: torch.Tensor | None = None   # like targets: each target's loss weight (data.balance: weight)
    pairs: int = 0                    # preference pairs: rows [0, pairs) chosen, [pairs, 2 * pairs) rejected

    @property
    def n_loss(self) -> int:
        """What the task loss is a sum over: pairs for a preference batch, else target tokens."""
        return self.pairs or self.n_targets

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.input_ids), move(self.position_ids), move(self.targets),
                     move(self.attention_mask), move(self.keep), self.n_targets, self.ids, self.spans,
                     move(self.weights), self.pairs)


def _weights(examples: list[Example], spans, shape) -> torch.Tensor | None:
    """Per-position loss weights from the examples' weights; None when all are 1 (the usual case)."""
    if all(e.weight == 1.0 for e in examples):
        return None
    w = torch.ones(shape)
    for ex, (r, s, n) in zip(examples, spans):
        w[r, s:s + n] = ex.weight
    return w


def _shifted(ex: Example) -> list[int]:
    return ex.labels[1:] + [IGNORE]


# A row of width W costs about W * (1 + W / ATTENTION_TOKENS) tokens of work: W tokens through the
# linear layers, and W x W attention scores under the dense block mask that packing builds. Fitted on
# SmolLM2-135M, bf16, 2 CPU cores: 8 tweets (~66 tokens each) in rows of <= 256 (568 tokens, 121k
# scores) against rows of <= 160 (542 tokens, 74k scores): 0.921x the step time, so A ~ 2000; the
# same fit predicts the padded layout (635 tokens, 51k scores) 1.05x slower, measured 1.04x.
ATTENTION_TOKENS = 2048


def _lpt(by_length: list[Example], n: int) -> tuple[list[list[Example]], list[int]]:
    """Longest example first into the emptiest of n rows (LPT scheduling): rows end close to one width."""
    rows: list[list[Example]] = [[] for _ in range(n)]
    heap = [(0, i) for i in range(n)]
    for ex in by_length:
        fill, i = heapq.heappop(heap)
        rows[i].append(ex)
        heapq.heappush(heap, (fill + len(ex.input_ids), i))
    fills = [0] * n
    for fill, i in heap:
        fills[i] = fill
    return rows, fills


def _rows(examples: list[Example], row_tokens: int) -> list[list[Example]]:
    """Rows of at most `row_tokens` tokens, filled evenly (LPT: 532 tokens in 3 rows of <= 256 are about
    3 x 178, where first-fit gives 256 + 256 + 20, padded to 768), in the number of rows, from the
    fewest that fit up, whose estimated cost R x W x (1 + W / ATTENTION_TOKENS) is least: more, narrower
    rows pad a little more but score fewer attention pairs. An example longer than `row_tokens` gets a
    row of its own."""
    by_length = sorted(examples, key=lambda e: -len(e.input_ids))
    least = min(len(examples), max(1, -(-sum(len(e.input_ids) for e in examples) // row_tokens)))
    best: tuple[float, list[list[Example]]] | None = None
    for n in range(least, min(len(examples), 2 * least + 8) + 1):
        rows, fills = _lpt(by_length, n)
        if not all(f <= row_tokens or len(r) == 1 for f, r in zip(fills, rows)):
            continue
        w = max(fills)
        cost = n * w * (1 + w / ATTENTION_TOKENS)
        if best is None or cost < best[0]:
            best = (cost, rows)
    return best[1] if best else [[e] for e in by_length]


def collate(examples: list[Example], pad_id: int, packing: bool = True, row_tokens: int = 512) -> Batch:
    rows = _rows(examples, row_tokens) if packing else [[e] for e in examples]
    width = max(sum(len(e.input_ids) for e in r) for r in rows)
    R = len(rows)
    input_ids = torch.full((R, width), pad_id, dtype=torch.long)
    targets = torch.full((R, width), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((R, width), dtype=torch.long)
    mask = torch.zeros((R, width), dtype=torch.long)
    spans = []
    for i, row in enumerate(rows):
        c = 0
        for ex in row:
            n = len(ex.input_ids)
            spans.append((i, c, n))
            input_ids[i, c:c + n] = torch.tensor(ex.input_ids)
            targets[i, c:c + n] = torch.tensor(_shifted(ex))
            position_ids[i, c:c + n] = torch.arange(n)
            mask[i, c:c + n] = 1
            c += n
        position_ids[i, c:] = torch.arange(width - c)  # padding is a sequence of its own
    keep = (targets != IGNORE).any(0).nonzero().squeeze(1)
    placed = [e for r in rows for e in r]
    return Batch(input_ids, position_ids, targets, None if packing else mask, keep,
                 int((targets != IGNORE).sum()), [e.id for e in placed], spans, _weights(placed, spans, (R, width)))


def collate_pairs(examples: list[Example], pad_id: int) -> Batch:
    """Preference pairs (data/preference.py), one sequence per padded row, never packed: the chosen
    sequences in rows [0, n), the rejected in rows [n, 2n), row i + n the other side of row i. `ids`
    names each pair once; `spans` covers every row."""
    b = collate(examples + [e.rejected for e in examples], pad_id, packing=False)
    b.ids, b.pairs = b.ids[:len(examples)], len(examples)
    return b


def collate_classes(examples: list[Example], pad_id: int, left: bool = False) -> Batch:
    width = max(len(e.input_ids) for e in examples)
    R = len(examples)
    input_ids = torch.full((R, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((R, width), dtype=torch.long)
    mask = torch.zeros((R, width), dtype=torch.long)
    spans = []
    for i, ex in enumerate(examples):
        n = len(ex.input_ids)
        s = width - n if left else 0
        input_ids[i, s:s + n] = torch.tensor(ex.input_ids)
        position_ids[i, s:s + n] = torch.arange(n)
        mask[i, s:s + n] = 1
        spans.append((i, s, n))
    targets = torch.tensor([ex.labels[0] for ex in examples], dtype=torch.long)   # (rows,)
    w = _weights(examples, [(i, 0, 1) for i in range(R)], (R, 1))
    return Batch(input_ids, position_ids, targets, mask, torch.zeros(0, dtype=torch.long), R,
                 [e.id for e in examples], spans, None if w is None else w[:, 0])


class Order:
    """An endless, seeded stream of example indices: epoch e is permutation(seed + e). Micro-batch g
    is stream positions [g*b, (g+1)*b), so any step's data is known from the step alone, which is
    what makes resume exact. Under data parallelism each rank takes its slice of every micro-batch.

    With `groups` (each example's class; data.balance: sample) an epoch is still n draws, but the
    classes take turns in equal shares (in a seeded order), each drawing its own examples in a seeded
    permutation, cycled: a minority class's examples recur within an epoch, a majority's are not all
    seen. A classifier then cannot lower its loss by always answering the majority class."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True, groups: list[int] | None = None):
        if n == 0:
            raise ValueError("no training examples")
        self.n, self.b, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.members: dict[int, list[int]] | None = None
        if groups is not None:
            self.members = {}
            for i, c in enumerate(groups):
                self.members.setdefault(c, []).append(i)
        self._perm: dict[int, list[int]] = {}

    def _epoch(self, e: int) -> list[int]:
        if e not in self._perm:
            g = torch.Generator().manual_seed(self.seed * 100_003 + e)
            if self.members is not None:
                self._perm = {e: self._balanced(g)}
            else:
                self._perm = {e: torch.randperm(self.n, generator=g).tolist() if self.shuffle else list(range(self.n))}
        return self._perm[e]

    def _balanced(self, g: torch.Generator) -> list[int]:
        classes = sorted(self.members)
        turns = (torch.randperm(self.n, generator=g) % len(classes)).tolist()   # equal shares, shuffled
        perms = {c: [self.members[c][i] for i in torch.randperm(len(self.members[c]), generator=g).tolist()]
                 for c in classes}
        drawn = dict.fromkeys(classes, 0)
        out = []
        for t in turns:
            c = classes[t]
            out.append(perms[c][drawn[c] % len(perms[c])])
            drawn[c] += 1
        return out

    def micro_batch(self, g: int, rank: int = 0, world: int = 1) -> list[int]:
        out = []
        for p in range(g * self.b * world, (g + 1) * self.b * world):
            out.append(self._epoch(p // self.n)[p % self.n])
        return out[rank * self.b:(rank + 1) * self.b]

    def epoch_of(self, g: int) -> float:
        return g * self.b / self.n
