"""tl_helpers.text: SST-2 lookup and verification, pooling, batching, embeddings and their cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import real_sst2_dir
from tl_helpers import text
from tl_helpers.train import evaluate, fit


@pytest.fixture
def no_sst2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nothing to find: no setting, an empty data folder, no shared copy, no downloads."""
    monkeypatch.setenv("TL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv(text.SST2_DIR_ENV, raising=False)
    monkeypatch.delenv("TL_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setattr(text, "REPO_ROOT", tmp_path / "checkout")
    return tmp_path / "data"


def write_sst2(folder: Path, rows: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, header in (
        ("train.tsv", "label\tsentence"),
        ("dev.tsv", "label\tcontent"),
        ("test.tsv", "label\tcontent"),
    ):
        lines = [f"{i % 2}\tsentence number {i} of {name} , quite long for a test" for i in range(rows)]
        (folder / name).write_text(header + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------- finding and verifying


def test_missing_sst2_says_where_to_put_it_and_how_to_download(no_sst2):
    with pytest.raises(text.TextNotFoundError) as err:
        text.find_sst2()
    message = str(err.value)
    assert str(no_sst2 / "sst2") in message and text.SST2_DIR_ENV in message and "TL_ALLOW_DOWNLOAD=1" in message


def test_altered_file_is_refused_naming_the_file(no_sst2, monkeypatch):
    folder = write_sst2(no_sst2 / "sst2")
    with pytest.raises(text.TextDataError) as err:
        text.find_sst2()
    assert "train.tsv" in str(err.value) and "Fix" in str(err.value)
    # with the files' own checksums the same folder is accepted
    monkeypatch.setattr(text, "SST2_FILES", {f: text.sha256_file(folder / f) for f in text.SST2_FILES})
    assert text.find_sst2() == folder
    assert len(text.load_sst2("dev")) == 6


def test_setting_wins_over_the_data_folder(no_sst2, tmp_path, monkeypatch):
    write_sst2(no_sst2 / "sst2")
    chosen = write_sst2(tmp_path / "elsewhere", rows=4)
    monkeypatch.setenv(text.SST2_DIR_ENV, str(chosen))
    assert text.find_sst2(verify=False) == chosen
    assert len(text.load_sst2("test", verify=False)) == 4


def test_malformed_row_names_file_and_line(no_sst2):
    folder = write_sst2(no_sst2 / "sst2")
    (folder / "dev.tsv").write_text("label\tcontent\n1\tfine\nnot a row\n", encoding="utf-8")
    with pytest.raises(text.TextDataError, match=r"dev.tsv, line 3"):
        text.load_sst2("dev", verify=False)
    with pytest.raises(ValueError, match="split must be"):
        text.load_sst2("validation", verify=False)


@pytest.mark.real_data("sst2")  # skipped (or failed under TL_REQUIRE_REAL_DATA=1) without SST-2: tests/conftest.py
def test_real_sst2_verifies_and_has_the_published_sizes(monkeypatch):
    monkeypatch.setenv(text.SST2_DIR_ENV, str(real_sst2_dir()))
    sizes = {split: len(text.load_sst2(split)) for split in ("train", "dev", "test")}
    assert sizes == {"train": 67_349, "dev": 872, "test": 1_821}
    dev = text.load_sst2("dev")
    assert int(dev.labels.sum()) == 444


# ----------------------------------------------------------------------------- TextData


def test_balanced_draw_is_balanced_nested_and_respects_min_words():
    texts = [("w " * (3 + i % 9)).strip() for i in range(200)]
    d = text.TextData(texts, torch.tensor([i % 2 for i in range(200)]))
    big = d.balanced(40, seed=3, min_words=6)
    assert int(big.labels.sum()) == 20 and bool((big.word_counts() >= 6).all())
    for n in (2, 10, 20):  # every even prefix is balanced
        assert int(big.labels[:n].sum()) == n // 2
    assert d.balanced(40, seed=3, min_words=6).texts == big.texts  # same seed, same draw
    assert d.balanced(10, seed=3, min_words=6).texts == big.texts[:10]  # nested
    assert d.balanced(40, seed=4, min_words=6).texts != big.texts
    with pytest.raises(ValueError, match="even"):
        d.balanced(7)
    with pytest.raises(ValueError, match="only"):
        d.balanced(400)


def test_textdata_checks_lengths():
    with pytest.raises(ValueError):
        text.TextData(["a", "b"], torch.tensor([0]))


# ----------------------------------------------------------------------------- pooling and batching


def test_mean_pool_ignores_padding_positions():
    hidden = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    pooled = text.mean_pool(hidden, mask)
    assert torch.allclose(pooled[0], hidden[0].mean(0))
    assert torch.allclose(pooled[1], hidden[1, :2].mean(0))
    hidden[1, 2:] = 1e6  # whatever sits in the padding does not matter
    assert torch.allclose(text.mean_pool(hidden, mask)[1], pooled[1])


def test_length_sorted_batches_cover_every_index_once_longest_first():
    lengths = [5, 1, 9, 3, 9, 2, 7]
    batches = text.length_sorted_batches(lengths, 3)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert [len(b) for b in batches] == [3, 3, 1]


def test_bucket_sampler_is_a_permutation_repeatable_by_seed():
    lengths = list(range(50))
    g = torch.Generator()
    sampler = text.LengthBucketSampler(lengths, 4, shuffle=True, generator=g, bucket=2)
    g.manual_seed(1)
    first = list(sampler)
    g.manual_seed(1)
    assert list(sampler) == first
    g.manual_seed(2)
    assert list(sampler) != first
    assert sorted(i for b in first for i in b) == lengths and len(first) == len(sampler) == 13
    # inside a batch, lengths are close: each batch comes from one sorted chunk of 8
    assert max(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first) < 50


# ----------------------------------------------------------------------------- the real encoder


@pytest.fixture(scope="module")
def encoder_and_tokenizer():
    return text.load_encoder()


def test_encoder_loads_offline_with_sockets_blocked(no_network):
    encoder, tokenizer = text.load_encoder()
    assert encoder.config.num_hidden_layers == 6 and encoder.config.hidden_size == 384
    assert tokenizer.convert_ids_to_tokens(tokenizer("a test")["input_ids"])[0] == "[CLS]"
    scratch, _ = text.load_encoder(pretrained=False, seed=0)
    again, _ = text.load_encoder(pretrained=False, seed=0)
    w = "embeddings.word_embeddings.weight"
    assert torch.equal(scratch.state_dict()[w], again.state_dict()[w])
    assert not torch.equal(scratch.state_dict()[w], encoder.state_dict()[w])


def test_tokenize_truncates(encoder_and_tokenizer):
    _, tokenizer = encoder_and_tokenizer
    ids = text.tokenize(tokenizer, ["word " * 200, "short"], max_length=16)
    assert len(ids[0]) == 16 and len(ids[1]) < 16


def test_embed_sorted_equals_unsorted_and_matches_meaning(encoder_and_tokenizer):
    encoder, tokenizer = encoder_and_tokenizer
    sentences = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market fell sharply today.",
        "a much longer sentence than the others , with many more word pieces in it .",
    ]
    a = text.embed(encoder, tokenizer, sentences, batch_size=2, sort=True, progress=False)
    b = text.embed(encoder, tokenizer, sentences, batch_size=2, sort=False, progress=False)
    assert a.shape == (4, 384) and torch.allclose(a, b, atol=1e-4)
    cos = torch.nn.functional.cosine_similarity
    assert cos(a[0], a[1], dim=0) > 0.6 > 0.2 > cos(a[0], a[2], dim=0)


def test_embedding_cache_is_keyed_by_content(encoder_and_tokenizer, tmp_path, monkeypatch):
    encoder, tokenizer = encoder_and_tokenizer
    calls = []
    real_embed = text.embed
    monkeypatch.setattr(text, "embed", lambda *a, **k: calls.append(1) or real_embed(*a, **k))
    first = text.cached_embeddings(
        encoder, tokenizer, ["a good film", "a bad film"], name="x", cache=tmp_path, progress=False
    )
    again = text.cached_embeddings(
        encoder, tokenizer, ["a good film", "a bad film"], name="x", cache=tmp_path, progress=False
    )
    assert len(calls) == 1 and torch.equal(first, again)
    other = text.cached_embeddings(
        encoder, tokenizer, ["a good film", "a dull film"], name="x", cache=tmp_path, progress=False
    )
    assert len(calls) == 2 and not torch.allclose(other[1], first[1])
    # a corrupt file is rebuilt, with a warning
    for path in tmp_path.glob("text-embeddings-x-*.pt"):
        path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        rebuilt = text.cached_embeddings(
            encoder, tokenizer, ["a good film", "a bad film"], name="x", cache=tmp_path, progress=False
        )
    assert torch.allclose(rebuilt, first, atol=1e-5)


def test_embed_cls_pooling_reads_the_first_token_and_has_its_own_cache(encoder_and_tokenizer, tmp_path):
    encoder, tokenizer = encoder_and_tokenizer
    sentences = ["a good film", "a much longer and rather dull film about nothing at all ."]
    cls = text.embed(encoder, tokenizer, sentences, batch_size=2, progress=False, pooling="cls")
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
    assert torch.allclose(cls, hidden[:, 0], atol=1e-4)
    mean = text.embed(encoder, tokenizer, sentences, batch_size=2, progress=False)
    assert torch.allclose(mean, text.mean_pool(hidden, batch["attention_mask"]), atol=1e-4)
    assert not torch.allclose(cls, mean, atol=1e-2)
    with pytest.raises(ValueError, match="pooling"):
        text.embed(encoder, tokenizer, sentences, progress=False, pooling="max")
    cached_mean = text.cached_embeddings(encoder, tokenizer, sentences, name="p", cache=tmp_path, progress=False)
    cached_cls = text.cached_embeddings(
        encoder, tokenizer, sentences, name="p", cache=tmp_path, progress=False, pooling="cls"
    )
    assert len(list(tmp_path.glob("text-embeddings-p-*.pt"))) == 2, "each pooling has its own file"
    assert torch.allclose(cached_cls, cls, atol=1e-5) and torch.allclose(cached_mean, mean, atol=1e-5)


def test_classifier_trains_with_fit_on_length_batches(encoder_and_tokenizer):
    _, tokenizer = encoder_and_tokenizer
    scratch, _ = text.load_encoder(pretrained=False, seed=0)
    words = ["great", "awful"]
    data = text.TextData([f"this was {words[i % 2]} ." for i in range(32)], torch.tensor([i % 2 for i in range(32)]))
    model = text.TextClassifier(scratch, num_classes=2)
    loader = text.make_text_loader(tokenizer, data, batch_size=8, shuffle=True, seed=0)
    x, y = next(iter(loader))
    assert x.shape[:2] == (8, 2) and set(x[:, 1].unique().tolist()) <= {0, 1}
    assert model(x).shape == (8, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fit(model, loader, None, optimizer, epochs=4, device="cpu", progress=False)
    assert evaluate(model, text.make_text_loader(tokenizer, data, batch_size=8), "cpu").accuracy == 1.0


def test_quote_pairs_cut_each_phrase_from_its_own_sentence_only():
    sentences = [
        "the film is a quiet and moving portrait of a family that slowly falls apart over one long summer .",
        "a loud , messy and overlong comedy that never finds the heart its cast so clearly wanted to show .",
        "an honest , funny film about growing up that earns every one of its tears and all of its laughs .",
        "short and sweet .",
    ]
    phrases = [
        "a quiet and moving portrait of a family",
        "a loud , messy and overlong comedy",
        "an honest , funny film about growing up",
    ]
    data = text.TextData(sentences + phrases, torch.zeros(len(sentences) + len(phrases), dtype=torch.long))
    docs, queries = text.quote_pairs(data, n_pairs=10, seed=0)
    assert sorted(docs) == sorted(sentences[:3]) and len(queries) == 3
    for d, q in zip(docs, queries):
        assert q in d and q != d and 0.3 <= len(q.split()) / len(d.split()) <= 0.6
    assert text.quote_pairs(data, n_pairs=10, seed=0) == (docs, queries), "seeded"
    # a sentence sharing text with an excluded (training) sentence is never used
    docs2, _ = text.quote_pairs(data, exclude=["a loud , messy and overlong comedy"], n_pairs=10, seed=0)
    assert sorted(docs2) == sorted([sentences[0], sentences[2]])
    # a phrase that occurs in two sentences has no single right answer: never a query with both taken
    twin = sentences[1].replace("never finds", "still misses")
    data3 = text.TextData(
        sentences + phrases + [twin], torch.zeros(len(sentences) + len(phrases) + 1, dtype=torch.long)
    )
    docs3, queries3 = text.quote_pairs(data3, n_pairs=10, seed=0)
    assert len(docs3) >= 2 and all(sum(q in d for d in docs3) == 1 for q in queries3)
