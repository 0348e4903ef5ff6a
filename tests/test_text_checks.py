"""The checks of exercise notebook 08: right answers written in several ways pass; each typical mistake is named."""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from tl_helpers import text
from tl_helpers.checks import run_check


def passes(check_id, *objects):
    result = run_check(check_id, *objects)
    assert result.passed, result.feedback


def fails_with(check_id, phrase, *objects):
    result = run_check(check_id, *objects)
    assert not result.passed and phrase in result.feedback, result.feedback


# ----------------------------------------------------------------------------- mean pooling


def pool_masked(hidden, mask):
    m = mask.unsqueeze(-1).float()
    return (hidden * m).sum(1) / m.sum(1)


def pool_loop(hidden, mask):  # one sentence at a time, by slicing
    return torch.stack([hidden[i, : int(mask[i].sum())].mean(0) for i in range(len(hidden))])


def pool_einsum(hidden, mask):
    return torch.einsum("btd,bt->bd", hidden, mask.float()) / mask.sum(1, keepdim=True)


@pytest.mark.parametrize("answer", [pool_masked, pool_loop, pool_einsum, text.mean_pool])
def test_correct_mean_pools_pass(answer):
    passes("text_mean_pool", answer)


def test_mean_pool_mistakes_are_named():
    fails_with("text_mean_pool", "Padding included in the mean", lambda h, m: h.mean(1))
    fails_with("text_mean_pool", "divided by the padded length", lambda h, m: (h * m.unsqueeze(-1)).sum(1) / h.shape[1])
    fails_with("text_mean_pool", "[CLS]", lambda h, m: h[:, 0])
    fails_with("text_mean_pool", "shape (batch, hidden)", lambda h, m: h.mean(2))

    def in_place(h, m):
        h *= m.unsqueeze(-1)
        return h.sum(1) / m.sum(1, keepdim=True)

    fails_with("text_mean_pool", "in place", in_place)

    def crashes(h, m):
        return h.sum(1) / m.sum(2)  # the mask has no dimension 2

    result = run_check("text_mean_pool", crashes)
    assert not result.passed and "Your mean_pool raised IndexError" in result.feedback
    assert "return h.sum(1) / m.sum(2)" in result.feedback  # the learner's failing line
    fails_with("text_mean_pool", "Expected a function", 3)


@pytest.mark.parametrize(
    "answer, mistake",
    [
        (lambda h, m: h.mean(1), "padding_in_mean"),
        (lambda h, m: (h * m.unsqueeze(-1)).sum(1) / h.shape[1], "divided_by_padded_length"),
        (lambda h, m: h[:, 0], "cls_token"),
        (lambda h, m: (h * m.unsqueeze(-1)).sum(1), "sum_not_mean"),
        (lambda h, m: (h * m.unsqueeze(-1)).sum(1) / m.sum(), "divided_by_batch_token_count"),
        (lambda h, m: h.masked_fill(m.unsqueeze(-1) == 0, float("-inf")).amax(1), "max_pool"),
        (lambda h, m: h.mean(2), "wrong_shape"),
    ],
)
def test_mean_pool_mistakes_have_their_own_name(answer, mistake):
    result = run_check("text_mean_pool", answer)
    assert not result.passed and result.mistake == mistake, (result.mistake, result.feedback)


# ----------------------------------------------------------------------------- sentence embeddings


@pytest.fixture(scope="module")
def encoder_and_tokenizer():
    encoder, tokenizer = text.load_encoder()
    return encoder, tokenizer


def test_correct_embedding_functions_pass(encoder_and_tokenizer):
    encoder, tokenizer = encoder_and_tokenizer

    def batched(sentences):
        batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            return text.mean_pool(encoder(**batch).last_hidden_state, batch["attention_mask"])

    def one_by_one(sentences):  # no padding at all: also right
        out = []
        for s in sentences:
            ids = tokenizer(s, truncation=True, max_length=64, return_tensors="pt")
            with torch.no_grad():
                out.append(encoder(**ids).last_hidden_state.mean(1)[0])
        return torch.stack(out).numpy()

    def with_helper(sentences):
        return text.embed(encoder, tokenizer, sentences, progress=False)

    for answer in (batched, one_by_one, with_helper):
        passes("text_embed", answer)


def test_embedding_mistakes_are_named(encoder_and_tokenizer):
    encoder, tokenizer = encoder_and_tokenizer

    def make(mask_to_encoder=True, masked_pool=True, truncation=True, train_mode=False):
        def answer(sentences):
            batch = tokenizer(sentences, padding=True, truncation=truncation, return_tensors="pt")
            encoder.train(train_mode)
            try:
                kwargs = {"attention_mask": batch["attention_mask"]} if mask_to_encoder else {}
                with torch.no_grad():
                    hidden = encoder(input_ids=batch["input_ids"], **kwargs).last_hidden_state
            finally:
                encoder.eval()
            return text.mean_pool(hidden, batch["attention_mask"]) if masked_pool else hidden.mean(1)

        return answer

    fails_with("text_embed", "Attention mask not passed to the encoder:", make(mask_to_encoder=False))
    fails_with("text_embed", "Padding included in the mean", make(masked_pool=False))
    fails_with("text_embed", "not passed to the encoder, and padding included", make(False, False))
    fails_with("text_embed", "Truncation off", make(truncation=False))
    fails_with("text_embed", "train mode", make(train_mode=True))
    fails_with("text_embed", "shape (2, 384)", lambda s: torch.zeros(len(s), 10))
    for answer, mistake in [
        (make(mask_to_encoder=False), "mask_not_passed"),
        (make(masked_pool=False), "padding_in_mean"),
        (make(truncation=False), "truncation_off"),
        (make(train_mode=True), "encoder_train_mode"),
    ]:
        assert run_check("text_embed", answer).mistake == mistake

    def cls(sentences):
        batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            return encoder(**batch).last_hidden_state[:, 0]

    def short_max_length(sentences):
        batch = tokenizer(sentences, padding=True, truncation=True, max_length=8, return_tensors="pt")
        with torch.no_grad():
            return text.mean_pool(encoder(**batch).last_hidden_state, batch["attention_mask"])

    def with_graph(sentences):  # right numbers, but the autograd graph is kept
        batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
        return text.mean_pool(encoder(**batch).last_hidden_state, batch["attention_mask"])

    def normalised(sentences):
        return torch.nn.functional.normalize(text.embed(encoder, tokenizer, sentences, progress=False), dim=1)

    for answer, mistake in [
        (cls, "cls_token"),
        (short_max_length, "max_length_too_short"),
        (with_graph, "no_grad_missing"),
        (normalised, "normalised_embeddings"),
    ]:
        result = run_check("text_embed", answer)
        assert not result.passed and result.mistake == mistake, (answer.__name__, result.mistake, result.feedback)


# ----------------------------------------------------------------------------- frozen encoder


def test_frozen_encoder_check():
    encoder = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
    fails_with("text_frozen_encoder", "left trainable", encoder)
    for p in encoder.parameters():
        p.requires_grad_(False)
    fails_with("text_frozen_encoder", "train mode", encoder.train())
    passes("text_frozen_encoder", encoder.eval())
    encoder[0].bias.requires_grad_(True)
    fails_with("text_frozen_encoder", "4 of 20 parameters", encoder)


# ----------------------------------------------------------------------------- probe


def probe_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(400) % 2
    X = torch.randn(400, 8, generator=g) + y[:, None] * 1.5
    return X[:300], y[:300], X[300:], y[300:]


def test_probe_right_ways_pass():
    X_fit, y_fit, X_test, y_test = probe_data()
    clf = LogisticRegression(max_iter=1000).fit(X_fit.numpy(), y_fit.numpy())
    acc = clf.score(X_test.numpy(), y_test.numpy())
    passes("text_probe", clf, X_fit, y_fit, X_test, y_test, acc)
    passes("text_probe", clf, X_fit.numpy(), y_fit.numpy(), X_test.numpy(), y_test.numpy(), 100 * acc)  # percent


def test_probe_mistakes_are_named():
    X_fit, y_fit, X_test, y_test = probe_data()
    X_all, y_all = torch.cat([X_fit, X_test]), torch.cat([y_fit, y_test])
    leaky = LogisticRegression(max_iter=1000).fit(X_all.numpy(), y_all.numpy())
    fails_with(
        "text_probe",
        "Test sentences used for fitting",
        leaky,
        X_all,
        y_all,
        X_test,
        y_test,
        leaky.score(X_test.numpy(), y_test.numpy()),
    )
    clf = LogisticRegression(max_iter=1000).fit(X_fit.numpy(), y_fit.numpy())
    fails_with(
        "text_probe",
        "report the accuracy of this classifier",
        clf,
        X_fit,
        y_fit,
        X_test,
        y_test,
        clf.score(X_fit.numpy(), y_fit.numpy()) + 0.01,
    )
    shuffled = LogisticRegression(max_iter=1000).fit(
        X_fit.numpy(), y_fit[torch.randperm(300, generator=torch.Generator().manual_seed(1))].numpy()
    )
    fails_with(
        "text_probe", "is low", shuffled, X_fit, y_fit, X_test, y_test, shuffled.score(X_test.numpy(), y_test.numpy())
    )
    on_test = LogisticRegression(max_iter=1000).fit(X_test.numpy(), y_test.numpy())  # X_fit says otherwise
    result = run_check(
        "text_probe", on_test, X_fit, y_fit, X_test, y_test, on_test.score(X_test.numpy(), y_test.numpy())
    )
    assert not result.passed and result.mistake == "clf_fitted_on_test", result.feedback
    result = run_check("text_probe", leaky, X_all, y_all, X_test, y_test, leaky.score(X_test.numpy(), y_test.numpy()))
    assert result.mistake == "test_rows_in_fit"


# ----------------------------------------------------------------------------- fine-tuning learning rate


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)


def test_fine_tune_lr_check():
    model = Tiny()
    for lr in (2e-5, 5e-5, 1e-4):
        passes("text_fine_tune_lr", torch.optim.AdamW(model.parameters(), lr=lr), model)
    fails_with(
        "text_fine_tune_lr",
        "far too high for a BERT-family model",
        torch.optim.AdamW(model.parameters(), lr=1e-3),
        model,
    )
    fails_with("text_fine_tune_lr", "Only the head trains", torch.optim.AdamW(model.head.parameters(), lr=5e-5), model)
    fails_with(
        "text_fine_tune_lr",
        "new head is not in the optimizer",
        torch.optim.AdamW(model.encoder.parameters(), lr=5e-5),
        model,
    )
    fails_with("text_fine_tune_lr", "so low", torch.optim.AdamW(model.parameters(), lr=1e-8), model)
    model.encoder.weight.requires_grad_(False)
    fails_with("text_fine_tune_lr", "frozen", torch.optim.AdamW(model.parameters(), lr=5e-5), model)


def test_fine_tune_lr_mistakes_have_their_own_name():
    model = Tiny()
    head_faster = torch.optim.AdamW(
        [{"params": model.encoder.parameters(), "lr": 3e-5}, {"params": model.head.parameters(), "lr": 1e-3}]
    )
    passes("text_fine_tune_lr", head_faster, model)  # a faster head is fine: the encoder's rate is low
    for optimizer, mistake in [
        (torch.optim.AdamW(model.parameters(), lr=1e-3), "lr_too_high"),
        (torch.optim.AdamW(model.head.parameters(), lr=5e-5), "head_only"),
        (torch.optim.AdamW(model.encoder.parameters(), lr=5e-5), "head_not_in_optimizer"),
        (torch.optim.AdamW(model.parameters(), lr=1e-8), "lr_too_low"),
        (torch.optim.SGD(model.parameters(), lr=2e-5), "sgd_with_adamw_lr"),
    ]:
        result = run_check("text_fine_tune_lr", optimizer, model)
        assert not result.passed and result.mistake == mistake, (mistake, result.feedback)
    model.encoder.weight.requires_grad_(False)
    assert run_check("text_fine_tune_lr", torch.optim.AdamW(model.parameters(), lr=5e-5), model).mistake == (
        "encoder_frozen"
    )


def test_frozen_encoder_mistakes_have_their_own_name():
    encoder = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
    assert run_check("text_frozen_encoder", encoder).mistake == "encoder_trainable"
    for p in encoder.parameters():
        p.requires_grad_(False)
    assert run_check("text_frozen_encoder", encoder.train()).mistake == "encoder_train_mode"
    encoder.eval()
    encoder[1].train()  # only the dropout left in train mode
    assert run_check("text_frozen_encoder", encoder).mistake == "encoder_train_mode"
