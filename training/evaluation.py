"""Held-out evaluation of a DPO policy against its reference (Django-free; runs inside the worker).

- preference accuracy and mean margin of the implicit reward
  r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)) on held-out human pairs;
- mean length of fresh samples from the policy on held-out prompts;
- a Monte-Carlo estimate of KL(pi || pi_ref) on those prompts: the mean over
  samples y ~ pi(.|x) of log pi(y|x) - log pi_ref(y|x).

Tokenization follows trl 1.16's DPOTrainer exactly (see `split_completions`),
so the accuracy here is the one the training objective optimizes.
"""

from collections.abc import Sequence
from typing import Any

import torch

Prompt = str | list[dict[str, str]]
Completion = str | list[dict[str, str]]


def _is_chat(value: Any) -> bool:
    return isinstance(value, list)


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prompt_ids(tokenizer, prompt: Prompt) -> list[int]:
    """The ids the model is conditioned on at generation time."""
    if _is_chat(prompt):
        return list(
            tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)[
                "input_ids"
            ]
        )
    return list(tokenizer(text=prompt)["input_ids"])


def _full_ids(tokenizer, prompt: Prompt, completion: Completion) -> list[int]:
    if _is_chat(prompt):
        return list(tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"])
    if not completion.endswith(tokenizer.eos_token):  # TRL appends EOS to plain-text completions
        completion = completion + tokenizer.eos_token
    return list(tokenizer(text=prompt + completion)["input_ids"])


def split_completions(
    tokenizer, prompt: Prompt, completions: Sequence[Completion], max_length: int | None = None
) -> tuple[list[int], list[list[int]]] | None:
    """(prompt ids, completion ids per completion), split as trl 1.16's DPOTrainer splits a pair.

    The completion starts where the tokenized prompt and the tokenized
    prompt+completion first differ (taken over all completions of the pair): when
    BPE merges the prompt's last characters with the completion's first ones, the
    merged token belongs to the completion. Sequences are cut to `max_length`
    (keep the start); None when the prompt alone fills it (TRL drops such pairs).
    """
    head = prompt_ids(tokenizer, prompt)
    fulls = [_full_ids(tokenizer, prompt, c) for c in completions]
    cut = min(_common_prefix_length(head, full) for full in fulls)
    if max_length is not None and cut >= max_length:
        return None
    tails = [full[cut:] for full in fulls]
    if max_length is not None:
        tails = [tail[: max_length - cut] for tail in tails]
    return head[:cut], tails


@torch.no_grad()
def sequence_logps(
    model, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, pad_token_id: int, batch_size: int = 16
) -> torch.Tensor:
    """log p(completion | prompt) for each (prompt ids, completion ids): the sum of the completion's token log-probs."""
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        width = max(len(p) + len(c) for p, c in chunk)
        ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        completion = torch.zeros((len(chunk), width), dtype=torch.bool)
        for i, (p, c) in enumerate(chunk):
            n = len(p) + len(c)
            ids[i, :n] = torch.tensor([*p, *c])
            attention[i, :n] = 1
            completion[i, len(p) : n] = True
        ids, attention, completion = ids.to(device), attention.to(device), completion.to(device)
        logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits.float()
        token_logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        out.append((token_logps * completion[:, 1:]).sum(dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def tokenized_pairs(
    tokenizer, rows: Sequence[dict[str, Any]], *, max_length: int
) -> tuple[list[tuple[list[int], list[int]]], list[tuple[list[int], list[int]]]]:
    """(chosen, rejected) as (prompt ids, completion ids), split as TRL splits them; pairs TRL drops are left out."""
    chosen_pairs, rejected_pairs = [], []
    for row in rows:
        split = split_completions(tokenizer, row["prompt"], [row["chosen"], row["rejected"]], max_length)
        if split is None:
            continue
        head, (chosen, rejected) = split
        chosen_pairs.append((head, chosen))
        rejected_pairs.append((head, rejected))
    return chosen_pairs, rejected_pairs


class PairLogps:
    """Log-probs of one set of (chosen, rejected) pairs, each model's computed once.

    A round's evaluation scores the same held-out pairs with the policy against its reference, and
    the policy and the incumbent against the base, where the reference is often the base: on CPU
    each model's pass over the pairs is most of the evaluation's time.
    """

    def __init__(self, pairs: tuple[list, list], *, pad_token_id: int, batch_size: int = 16) -> None:
        chosen_pairs, rejected_pairs = pairs
        self.n, self._both = len(chosen_pairs), chosen_pairs + rejected_pairs
        self._pad, self._batch_size = pad_token_id, batch_size
        self._logps: dict[int, tuple[object, torch.Tensor]] = {}  # id(model) -> (model, log-probs): the model kept alive

    def of(self, model) -> torch.Tensor:
        if id(model) not in self._logps:
            logps = sequence_logps(model, self._both, pad_token_id=self._pad, batch_size=self._batch_size)
            self._logps[id(model)] = (model, logps)
        return self._logps[id(model)][1]

    def margins(self, policy, reference, *, beta: float) -> torch.Tensor:
        """Per pair, beta * ((log pi - log pi_ref)(chosen) - (log pi - log pi_ref)(rejected))."""
        if policy is reference:
            return torch.zeros(self.n)
        ratios = self.of(policy) - self.of(reference)
        return beta * (ratios[: self.n] - ratios[self.n :])


def preference_eval(policy, reference, logps: PairLogps, *, beta: float) -> dict[str, Any]:
    """Accuracy and mean margin of the policy's implicit reward on human (chosen, rejected) pairs."""
    if not logps.n:
        return {"pairs": 0, "accuracy": None, "margin": None}
    margins = logps.margins(policy, reference, beta=beta)
    return {
        "pairs": len(margins),
        "accuracy": float((margins > 0).float().mean()),
        "margin": float(margins.mean()),
    }


@torch.no_grad()
def sample_eval(
    policy,
    reference,
    tokenizer,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Sample one completion per prompt from the policy (temperature 1, no truncation of the
    distribution, so the samples are draws from pi itself) and estimate KL(pi || pi_ref)."""
    if not prompts:
        return {"samples": 0, "mean_length": None, "kl": None, "examples": []}
    device = next(policy.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    scored: list[tuple[list[int], list[int]]] = []
    for start in range(0, len(prompts), batch_size):
        heads = [prompt_ids(tokenizer, p) for p in prompts[start : start + batch_size]]
        width = max(len(h) for h in heads)
        # Left padding: every prompt ends where generation starts.
        ids = torch.tensor([[pad] * (width - len(h)) + h for h in heads], device=device)
        attention = torch.tensor([[0] * (width - len(h)) + [1] * len(h) for h in heads], device=device)
        out = policy.generate(
            input_ids=ids,
            attention_mask=attention,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        for head, row in zip(heads, out[:, width:].tolist()):
            tail = row[: row.index(eos) + 1] if eos in row else row
            scored.append((head, tail))
    torch.random.set_rng_state(generator_state)
    policy_logps = sequence_logps(policy, scored, pad_token_id=pad, batch_size=batch_size)
    reference_logps = sequence_logps(reference, scored, pad_token_id=pad, batch_size=batch_size)
    lengths = [len(tail) for _, tail in scored]
    return {
        "samples": len(scored),
        "mean_length": sum(lengths) / len(lengths),
        "kl": float((policy_logps - reference_logps).mean()),
        "examples": [tokenizer.decode(tail, skip_special_tokens=True) for _, tail in scored[:3]],
    }
