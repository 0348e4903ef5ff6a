"""Checks of notebook 08's exercises: masked mean pooling, sentence embeddings, probes and BERT learning rates."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tl_helpers.checks.core import (
    REFERENCE,
    CheckResult,
    fail,
    fmt,
    is_finite_number,
    learner_error,
    ok,
    register,
)
from tl_helpers.checks.registry import exercise

__all__: list[str] = []  # checks register themselves in CHECKS; nothing else is public


def text_reference() -> tuple[nn.Module, Any]:
    if "minilm" not in REFERENCE:
        from tl_helpers.text import load_encoder

        REFERENCE["minilm"] = load_encoder()  # type: ignore[assignment]
    return REFERENCE["minilm"]  # type: ignore[return-value]


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu()
    import numpy as np

    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


@register("text_mean_pool", 2, "mean pooling over the real tokens only (the attention mask)")
def _check_text_mean_pool(mean_pool: Any) -> CheckResult:
    if not callable(mean_pool):
        return fail(
            f"Expected a function mean_pool(hidden, attention_mask), got {type(mean_pool).__name__}.",
            mistake="not_a_function",
        )
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 6, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    keep = hidden.clone(), mask.clone()
    try:
        out = mean_pool(hidden, mask)
    except Exception as exc:  # noqa: BLE001 - the learner's code
        return learner_error(exc, "mean_pool")
    if not torch.equal(hidden, keep[0]) or not torch.equal(mask, keep[1]):
        return fail("mean_pool changed its inputs in place; compute a new tensor instead.", mistake="inputs_modified")
    out = _as_tensor(out)
    if tuple(out.shape) != (3, 4):
        return fail(
            f"Expected one vector per sentence, shape (batch, hidden) = (3, 4); got {tuple(out.shape)}. "
            "Average over the token dimension (dim=1).",
            mistake="wrong_shape",
        )
    m = mask.unsqueeze(-1).float()
    right = (hidden * m).sum(1) / m.sum(1)
    if torch.allclose(out, right, atol=1e-5):
        return ok("Padding is ignored: each sentence is the mean of its real tokens.")
    if torch.allclose(out, hidden.mean(1), atol=1e-5):
        return fail(
            "Padding included in the mean: the padded positions are averaged in, so a sentence's vector "
            "depends on its batch-mates. Multiply by the attention mask and divide by the number of real "
            "tokens.",
            mistake="padding_in_mean",
        )
    if torch.allclose(out, (hidden * m).sum(1) / hidden.shape[1], atol=1e-5):
        return fail(
            "You zeroed the padding but divided by the padded length: divide by the number of real tokens "
            "(the mask's sum per sentence) instead.",
            mistake="divided_by_padded_length",
        )
    if torch.allclose(out, hidden[:, 0], atol=1e-5):
        return fail(
            "This is the first token's ([CLS]) vector, not the mean over tokens; this encoder was trained "
            "with mean pooling, and notebook 08 measured a probe on the [CLS] vectors well below one on the mean "
            "at every training-set size.",
            mistake="cls_token",
        )
    if torch.allclose(out, (hidden * m).sum(1), atol=1e-5):
        return fail(
            "This is the sum of the real tokens, not their mean: a long sentence gets a longer vector than a "
            "short one with the same meaning. Divide by the number of real tokens (the mask's sum per sentence).",
            mistake="sum_not_mean",
        )
    if torch.allclose(out, (hidden * m).sum(1) / m.sum(), atol=1e-5):
        return fail(
            "You divided by the number of real tokens of the whole batch (mask.sum() over everything), not "
            "per sentence: sum the mask over the token dimension only, mask.sum(dim=1).",
            mistake="divided_by_batch_token_count",
        )
    if torch.allclose(out, hidden.masked_fill(m == 0, float("-inf")).amax(1), atol=1e-5) or torch.allclose(
        out, hidden.amax(1), atol=1e-5
    ):
        return fail(
            "This is max pooling (the largest value of each feature over the tokens); this encoder was "
            "trained with mean pooling: average the real tokens.",
            mistake="max_pool",
        )
    return fail(
        "The result is not the mean over the real tokens. Per sentence: sum hidden * mask over tokens, "
        "divide by mask.sum().",
        mistake="not_masked_mean",
    )


_LONG = " ".join(["the film is long and the story goes on"] * 80)  # about 700 word pieces
_SENTENCES = ["not bad .", "a gorgeous , witty , seductive movie that never loses its sense of humour ."]


_EMBED_MISTAKES = {
    "mask_not_passed": "mask_not_passed",
    "padding_in_mean": "padding_in_mean",
    "neither": "mask_not_passed_and_padding_in_mean",
    "cls": "cls_token",
}


def _variants(sentences: list[str], max_length: int = 128) -> dict[str, torch.Tensor]:
    from tl_helpers.text import mean_pool

    encoder, tokenizer = text_reference()
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        with_mask = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        no_mask = encoder(input_ids=ids).last_hidden_state
    return {
        "right": mean_pool(with_mask, mask),
        "mask_not_passed": mean_pool(no_mask, mask),
        "padding_in_mean": with_mask.mean(1),
        "neither": no_mask.mean(1),
        "cls": with_mask[:, 0],
    }


@register("text_embed", 3, "sentence embeddings: attention mask passed, padding ignored, truncation on, eval mode")
def _check_text_embed(embed_sentences: Any) -> CheckResult:
    if not callable(embed_sentences):
        return fail(
            f"Expected a function embed_sentences(sentences), got {type(embed_sentences).__name__}.",
            mistake="not_a_function",
        )
    try:
        raw = embed_sentences(list(_SENTENCES))
        first = _as_tensor(raw)
        second = _as_tensor(embed_sentences(list(_SENTENCES)))
    except Exception as exc:  # noqa: BLE001
        return learner_error(exc, "embed_sentences")
    if tuple(first.shape) != (2, 384):
        return fail(
            f"Expected one 384-number vector per sentence, shape (2, 384); got {tuple(first.shape)}.",
            mistake="wrong_shape",
        )
    if not torch.allclose(first, second, atol=1e-5):
        return fail(
            "Two calls on the same sentences gave different vectors: the encoder is in train mode, so "
            "dropout is on. Call encoder.eval() (and compute under torch.no_grad()).",
            mistake="encoder_train_mode",
        )
    refs = _variants(list(_SENTENCES))
    close = {name: bool(torch.allclose(first, ref, atol=2e-3, rtol=1e-3)) for name, ref in refs.items()}
    if not close["right"]:
        messages = {
            "mask_not_passed": "Attention mask not passed to the encoder: the short sentence's tokens attend to the "
            "padding. Call encoder(input_ids=..., attention_mask=...) (or encoder(**batch)).",
            "padding_in_mean": "Padding included in the mean: pool with the attention mask (your mean_pool), not "
            ".mean(1).",
            "neither": "Attention mask not passed to the encoder, and padding included in the mean: pass "
            "attention_mask to the encoder and pool with it.",
            "cls": "This is the [CLS] token's vector; this encoder was trained with mean pooling over the tokens "
            "(notebook 08: a probe on [CLS] vectors scored well below one on the mean at every size).",
        }
        for name, message in messages.items():
            if close[name]:
                return fail(message, mistake=_EMBED_MISTAKES[name])
        if torch.allclose(first, torch.nn.functional.normalize(refs["right"], dim=1), atol=2e-3, rtol=1e-3):
            return fail(
                "These are the mean-pooled embeddings divided by their length (L2-normalised): return the mean "
                "itself, as mean_pool gives it; normalise later only if a method asks for it.",
                mistake="normalised_embeddings",
            )
        for length in (8, 16):
            short = _variants(list(_SENTENCES), max_length=length)["right"]
            if torch.allclose(first, short, atol=2e-3, rtol=1e-3):
                return fail(
                    f"max_length={length} cuts ordinary sentences short (the second one has more word pieces): "
                    "truncation is a guard against very long inputs; use max_length=128 (or the encoder's 512).",
                    mistake="max_length_too_short",
                )
        return fail(
            "These are not the encoder's mean-pooled embeddings. Tokenize with padding, run the encoder "
            "with the attention mask, then average the real tokens.",
            mistake="not_mean_pooled_embeddings",
        )
    if isinstance(raw, torch.Tensor) and raw.requires_grad:
        return fail(
            "The embeddings still carry the autograd graph: run the encoder under torch.no_grad() (feature "
            "extraction needs no gradients; the graph of every batch wastes memory).",
            mistake="no_grad_missing",
        )
    try:
        long_vec = _as_tensor(embed_sentences([_LONG, "short ."]))
    except Exception as exc:  # noqa: BLE001
        text = str(exc).lower()
        if isinstance(exc, (IndexError, RuntimeError)) or "index" in text or "size" in text:
            return fail(
                "Truncation off: a sentence longer than the encoder's 512 positions crashes it "
                f"({type(exc).__name__}). Tokenize with truncation=True (and a max_length such as 128).",
                mistake="truncation_off",
            )
        return learner_error(exc, "embed_sentences")
    if tuple(long_vec.shape) != (2, 384):
        return fail(
            f"For two sentences (one very long) expected shape (2, 384); got {tuple(long_vec.shape)}.",
            mistake="wrong_shape",
        )
    return ok("Mean-pooled embeddings with the attention mask, truncation on, deterministic (eval mode).")


@register("text_frozen_encoder", 2, "an encoder ready for feature extraction: frozen, dropout off")
def _check_text_frozen_encoder(encoder: Any) -> CheckResult:
    if not isinstance(encoder, nn.Module):
        return fail(f"Expected the encoder (an nn.Module), got {type(encoder).__name__}.", mistake="not_a_module")
    trainable = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    total = sum(p.numel() for p in encoder.parameters())
    if trainable:
        return fail(
            f"The encoder is left trainable: {trainable:,} of {total:,} parameters still require "
            "gradients. For feature extraction set requires_grad=False on every parameter.",
            mistake="encoder_trainable",
        )
    if encoder.training or any(m.training for m in encoder.modules()):
        return fail(
            "The encoder is frozen but in train mode: dropout is on, so the same sentence gets a different "
            "embedding each time. Call encoder.eval().",
            mistake="encoder_train_mode",
        )
    return ok(f"All {total:,} parameters frozen and dropout off.")


def _shared_rows(X_fit: torch.Tensor, X_test: torch.Tensor, tol: float = 1e-3) -> int:
    """How many rows of ``X_test`` also appear (up to float noise) in ``X_fit``."""
    shared = 0
    for chunk in X_test.split(512):
        shared += int((torch.cdist(chunk, X_fit).min(1).values < tol * (1 + chunk.norm(dim=1))).sum())
    return shared


@register("text_probe", 3, "a probe fitted on training sentences only, scored on the test sentences")
def _check_text_probe(clf: Any, X_fit: Any, y_fit: Any, X_test: Any, y_test: Any, test_acc: Any) -> CheckResult:
    if not hasattr(clf, "predict"):
        return fail(
            f"clf should be a fitted classifier with .predict(); got {type(clf).__name__}.", mistake="not_a_classifier"
        )
    X_fit, X_test = _as_tensor(X_fit), _as_tensor(X_test)
    y_fit, y_test = torch.as_tensor(_as_tensor(y_fit)).long(), torch.as_tensor(_as_tensor(y_test)).long()
    if X_fit.ndim != 2 or X_test.ndim != 2 or X_fit.shape[1] != X_test.shape[1]:
        return fail(
            f"X_fit and X_test should be (sentences, features) tables with the same width; got "
            f"{tuple(X_fit.shape)} and {tuple(X_test.shape)}.",
            mistake="wrong_shape",
        )
    shared = _shared_rows(X_fit, X_test)
    if shared:
        return fail(
            f"Test sentences used for fitting: {shared} of the {len(X_test)} test embeddings are also in "
            "X_fit. Fit on the training sentences only; the test set is for the final score.",
            mistake="test_rows_in_fit",
        )
    if hasattr(clf, "predict_proba") and len(X_test) >= 10:
        from tl_helpers.checks.feature_extraction import fitted_rows

        try:
            fitted_on = fitted_rows(
                clf,
                {"X_fit": (X_fit.numpy(), y_fit.numpy()), "X_test": (X_test.numpy(), y_test.numpy())},
                X_test.numpy(),
            )
        except Exception:  # a classifier that cannot be refitted here: the other checks still apply
            fitted_on = "X_fit"
        if fitted_on == "X_test":
            return fail(
                "clf was fitted on the test embeddings, not on X_fit: its test accuracy measures memory, not "
                "generalisation. Fit it on the training sentences' embeddings (X_fit, y_fit).",
                mistake="clf_fitted_on_test",
            )
    if not is_finite_number(test_acc):
        return fail(f"test_acc should be a number, got {type(test_acc).__name__}.", mistake="wrong_type")
    measured = float((torch.as_tensor(clf.predict(X_test.numpy())) == y_test).float().mean())
    if abs(float(test_acc) - measured) > 1e-6 and abs(float(test_acc) / 100 - measured) > 1e-4:
        return fail(
            f"test_acc = {float(test_acc):.4f}, but clf scores {measured:.4f} on X_test: report the "
            "accuracy of this classifier on the test embeddings.",
            mistake="test_acc_mismatch",
        )
    fit_acc = float((torch.as_tensor(clf.predict(X_fit.numpy())) == y_fit).float().mean())
    if measured < 0.62:
        return fail(
            f"Test accuracy {measured:.1%} is low for this encoder (a probe on 200 sentences reaches about "
            f"70 %); training accuracy is {fit_acc:.1%}. Check that X_fit and y_fit belong together.",
            mistake="low_accuracy",
        )
    return ok(f"Fitted on {len(X_fit)} training sentences only; test accuracy {measured:.1%}.")


@register("text_fine_tune_lr", 2, "fine-tuning a BERT-family model: every parameter, a low learning rate")
def _check_text_fine_tune_lr(optimizer: Any, model: Any) -> CheckResult:
    if not isinstance(optimizer, torch.optim.Optimizer) or not isinstance(model, nn.Module):
        return fail("Expected a torch optimizer and the model (encoder + new head).", mistake="wrong_type")
    in_optimizer = {id(p): float(g["lr"]) for g in optimizer.param_groups for p in g["params"]}
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    encoder_params = [p for p in model.parameters() if id(p) not in head_ids]
    if head_ids and not head_ids & set(in_optimizer):
        return fail(
            "The new head is not in the optimizer: it would stay random. Build the optimizer from model.parameters().",
            mistake="head_not_in_optimizer",
        )
    if not any(id(p) in in_optimizer for p in encoder_params):
        return fail(
            "Only the head trains: that is feature extraction, not fine-tuning. Give the optimizer the "
            "encoder's parameters too (model.parameters()).",
            mistake="head_only",
        )
    frozen = sum(p.numel() for p in encoder_params if not p.requires_grad)
    if frozen:
        return fail(
            f"{frozen:,} encoder parameters are frozen (requires_grad=False): fine-tuning updates them all.",
            mistake="encoder_frozen",
        )
    lrs = [in_optimizer[id(p)] for p in encoder_params if id(p) in in_optimizer]
    top, low = max(lrs), min(lrs)
    if isinstance(optimizer, torch.optim.SGD) and top <= 2e-4:
        return fail(
            f"Plain SGD with learning rate {fmt(top)}: the few-times-1e-5 rates are for AdamW, which scales each "
            "step by the gradient's size; SGD's steps are the raw gradient times the rate, so almost nothing "
            "moves. Use torch.optim.AdamW (about 2e-5 to 5e-5).",
            mistake="sgd_with_adamw_lr",
        )
    if top > 2e-4:
        return fail(
            f"Learning rate far too high for a BERT-family model: {fmt(top)} on the pretrained encoder "
            "wrecks what it learned (training often collapses to one class). Use about 2e-5 to 5e-5 "
            "with AdamW.",
            mistake="lr_too_high",
        )
    if low < 1e-6:
        return fail(
            f"Learning rate {fmt(low)} is so low that nothing moves in a few epochs; use 2e-5 to 5e-5.",
            mistake="lr_too_low",
        )
    return ok(f"Every parameter trains, encoder learning rate {fmt(top)}: the usual range for BERT-family models.")


exercise(
    "text_mean_pool",
    "A sentence's vector is the average of its real tokens only: padding positions must add nothing to the "
    "sum and must not be counted in the divisor either.",
    "attention_mask is 1 for real tokens and 0 for padding; broadcast it over the feature dimension "
    "(unsqueeze(-1)) so it can zero the padded rows, and count the real tokens per sentence from it.",
    "mask = attention_mask.<add a last dimension>.to(hidden.dtype)\n"
    "return (hidden * mask).<sum over tokens> / mask.<sum over tokens>  # guard against dividing by 0",
)
exercise(
    "text_embed",
    "Tokenize all sentences as one padded batch, run the encoder without gradients and without dropout, "
    "and pool with your mean_pool, using the same mask the encoder saw.",
    "The tokenizer takes padding=, truncation= and max_length= and return_tensors='pt'; the encoder takes "
    "the whole batch (input_ids and attention_mask) and returns .last_hidden_state.",
    "batch = tokenizer(sentences, <pad>, <truncate>, return_tensors='pt')\n"
    "encoder.<inference mode>; with torch.no_grad(): hidden = encoder(<the whole batch>).last_hidden_state\n"
    "return mean_pool(hidden, batch[<the mask>])",
)
exercise(
    "text_frozen_encoder",
    "A frozen feature extractor has two properties: no parameter can receive a gradient, and layers that "
    "behave differently in training (dropout) are switched to inference behaviour.",
    "Every parameter has a requires_grad flag (encoder.parameters() lists them); a module's mode is set "
    "with .train() / .eval().",
    "for p in encoder.<its parameters>:\n    p.<flag> = False\nencoder.<inference mode>()",
)
exercise(
    "text_probe",
    "Fit the probe on the training sentences' embeddings only; the test embeddings are used once, to score "
    "it. Keep in X_fit / y_fit exactly what the classifier saw.",
    "embed_sentences turns train_small.texts and test_small.texts into tensors; scikit-learn's "
    "LogisticRegression has .fit(X, y) and .score(X, y) (numpy arrays).",
    "X_fit, y_fit = embed_sentences(<training texts>), <training labels>\n"
    "X_test, y_test = embed_sentences(<test texts>), <test labels>\n"
    "clf = LogisticRegression(max_iter=...).fit(...); test_acc = clf.score(<test>)",
)
exercise(
    "text_fine_tune_lr",
    "Fine-tuning trains the whole pretrained encoder and the new head together, with steps small enough "
    "not to wreck what pretraining learned.",
    "text.TextClassifier(encoder, num_classes) adds the head; pass all of model.parameters() to AdamW. "
    "BERT-family models are usually fine-tuned with AdamW at a few times 1e-5.",
    "model = text.TextClassifier(encoder_ft, num_classes=<labels>)\n"
    "optimizer = torch.optim.AdamW(model.<every parameter>, lr=<a few times 1e-5>)",
)
