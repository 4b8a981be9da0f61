"""Position modes mean one thing in training (right padding, teacher forcing), in batched
left-padded generation with a KV cache, and in log-likelihood scoring (right padding, no mask)."""

from contextlib import contextmanager

import pytest
import torch
from conftest import CONTRACT_SITES, greedy_cached, greedy_uncached, randomize

from steer_cli.data.encode import IGNORE_INDEX, collate_right_padded
from steer_cli.engine.adapters import AdapterShape
from steer_cli.engine.attach import InterventionSpec, attach, prompt_span
from steer_cli.engine.names import SITES
from steer_cli.engine.positions import find_backbone, position_mask
from steer_cli.engine.sites import find_decoder_layers, site_module
from steer_cli.evaluate.generation import generate, left_pad
from steer_cli.evaluate.scoring import score

MODES = ("all", "prompt", "generated", "last_prompt", "f2+l2")
PROMPTS = ["[MAX 2 9 [MIN 4 7 ] 0 ]", "Hi", "Evaluate the value of [SM 1 2 3 ]"]
SHAPE = AdapterShape("lowrank", rank=4, activation="silu")


def _steered(model, mode, *, layers="all", site="block_output", seed=1, shape=SHAPE):
    handle = attach(model, InterventionSpec(site=site, shape=shape, layers=layers, positions=mode))
    randomize(handle, std=0.3, seed=seed)
    return handle


def test_position_mask_modes():
    columns = torch.arange(10)
    start, end = torch.tensor([0, 3, 2]), torch.tensor([5, 8, 3])  # prompts of 5, 5 and 1
    rows = {
        "all": [range(10)] * 3,
        "prompt": [range(0, 5), range(3, 8), range(2, 3)],
        "generated": [range(5, 10), range(8, 10), range(3, 10)],
        "last_prompt": [[4], [7], [2]],
        "f2+l2": [[0, 1, 3, 4], [3, 4, 6, 7], []],  # a 1-token prompt: min(k, L // 2) = 0
        "f7+l7": [[0, 1, 3, 4], [3, 4, 6, 7], []],  # pyreft: each side gets at most L // 2
        "f1+l3": [[0, 3, 4], [3, 6, 7], []],
    }
    for mode, expected in rows.items():
        mask = position_mask(mode, columns, start, end)
        got = [torch.nonzero(row).flatten().tolist() for row in mask]
        assert got == [list(r) for r in expected], mode


def _ids(tokenizer, text):
    return tokenizer(text, return_tensors="pt")["input_ids"]


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("site", CONTRACT_SITES)
@pytest.mark.parametrize("mode", MODES)
def test_batched_left_padded_generation_equals_one_by_one(tiny, mode, site):
    model, tokenizer = tiny
    prompts = [tokenizer(t)["input_ids"] for t in PROMPTS]
    handle = _steered(model, mode, site=site)
    try:
        batched = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=len(prompts))
        single = [
            generate(model, tokenizer, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts
        ]
        with handle.disabled():
            base = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=len(prompts))
    finally:
        handle.detach()
    assert batched == single
    if mode in ("all", "prompt"):
        assert batched != base, "the adapter must change some generation"


@pytest.mark.parametrize("site", CONTRACT_SITES)
@pytest.mark.parametrize("mode", MODES)
def test_cached_generation_equals_recomputation(tiny, mode, site):
    """Decoding steps are placed at the columns full recomputation gives the same tokens."""
    model, tokenizer = tiny
    handle = _steered(model, mode, site=site)
    try:
        for text in PROMPTS:
            ids = _ids(tokenizer, text)
            with prompt_span(model, [0], [ids.shape[1]]):
                cached = greedy_cached(model, tokenizer, ids, 8)
                uncached = greedy_uncached(model, ids, 8, tokenizer.eos_token_id)
            assert torch.equal(cached, uncached), text
    finally:
        handle.detach()


@contextmanager
def _site_tensors(layer, site):
    """The tensor ``site`` edits in ``layer``, call by call: its module's first input or its
    output (some releases return a layer's hidden state in a tuple, e.g. Gemma3 under
    transformers 4.56). Registered before the adapter's hook, it sees the unedited tensor;
    after, the edited one."""
    module, where = site_module(layer, site)
    seen = []

    def record_input(module, args):
        seen.append(args[0].detach().clone())

    def record_output(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        seen.append(hidden.detach().clone())

    if where == "input":
        handle = module.register_forward_pre_hook(record_input)
    else:
        handle = module.register_forward_hook(record_output)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("mode", ["prompt", "generated", "last_prompt"])
def test_cached_generation_steers_exactly_the_mode_tokens(tiny, mode, site):
    """Adapter on the last layer only, so its input is the base model's given the same tokens:
    during real batched, cached generation the site's tensor is edited at the mode's tokens and
    bitwise untouched everywhere else (prompt padding, and decoding steps for `prompt`)."""
    model, tokenizer = tiny
    last = find_decoder_layers(model)[-1]
    prompts = [tokenizer(t)["input_ids"] for t in PROMPTS]
    with _site_tensors(last, site) as raw:  # registered first: sees the unedited tensor
        # A vector: its edit is never lost to rounding, so "changed" is exactly "steered".
        handle = _steered(model, mode, layers="-1", site=site, shape=AdapterShape("vector"))
        try:
            with _site_tensors(last, site) as edited, handle.record_positions() as masks:
                generate(model, tokenizer, prompts, max_new_tokens=5, batch_size=len(prompts))
        finally:
            handle.detach()
    # The prompt pass, then one decoding step per new token fed back (fewer if all rows stop).
    assert 2 <= len(raw) == len(edited) == len(masks) <= 5
    width = max(len(p) for p in prompts)
    for step, (before, after, (columns, mask)) in enumerate(zip(raw, edited, masks, strict=True)):
        changed = (before != after).any(-1)
        assert torch.equal(changed, mask), (mode, step)
        if step == 0:
            assert columns.tolist() == list(range(width))
            assert mask.any() == (mode != "generated")
        else:
            assert columns.tolist() == [width + step - 1]
            assert bool(mask.all()) == (mode == "generated")


@pytest.mark.parametrize("site", CONTRACT_SITES)
@pytest.mark.parametrize("mode", MODES[1:])  # `all` computes no mask
def test_training_masks_equal_generation_masks(tiny, mode, site):
    """Teacher-forcing prompt + generated answer steers the same tokens as generating it."""
    model, tokenizer = tiny
    prompts = [tokenizer(t)["input_ids"] for t in PROMPTS]
    n_new = 6
    handle = _steered(model, mode, site=site)
    try:
        with handle.record_positions() as records:
            ids, mask = left_pad(prompts, tokenizer.pad_token_id)
            width = ids.shape[1]
            starts = [width - len(p) for p in prompts]
            with prompt_span(model, starts, [width] * len(prompts)):
                out = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=n_new,
                    min_new_tokens=n_new,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
        generated = out[:, width:]
        generation_steered = [set() for _ in prompts]
        for columns, m in records:
            for row, start in enumerate(starts):
                for c in columns[m[row]].tolist():
                    if c >= start:  # padding is no token of the example
                        generation_steered[row].add(c - start)

        rows = [
            {
                "input_ids": p + generated[i].tolist(),
                "labels": [IGNORE_INDEX] * len(p) + generated[i].tolist(),
            }
            for i, p in enumerate(prompts)
        ]
        batch = collate_right_padded(rows, tokenizer.pad_token_id)
        with handle.record_positions() as records, handle.batch_context(batch), torch.no_grad():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        handle.detach()
    ((columns, m),) = records
    for row, p in enumerate(prompts):
        fed = len(p) + n_new - 1  # generation never feeds its last token back
        training_steered = {c for c in columns[m[row]].tolist() if c < fed}
        assert training_steered == generation_steered[row], (mode, row)


def test_missing_prompt_span_is_an_error_not_steer_everything(tiny):
    model, tokenizer = tiny
    handle = _steered(model, "prompt")
    ids = _ids(tokenizer, PROMPTS[0])
    try:
        with pytest.raises(
            RuntimeError, match="positions='prompt' needs to know where the prompt is"
        ):
            _logits(model, ids)
        with handle.disabled():
            _logits(model, ids)  # the base model needs no span
        with (
            prompt_span(model, [0, 0], [3, 3]),
            pytest.raises(RuntimeError, match="the prompt span has 2 rows but the forward has 1"),
        ):
            _logits(model, ids)
    finally:
        handle.detach()


# -- scoring -------------------------------------------------------------------------------------

CONTEXTS = ["[MAX 2 9 ]", "Evaluate [SM 1 2 3 ]", "Hi"]
CONTINUATIONS = [" 9", " <answer>6</answer>", " there, friend"]


@pytest.mark.parametrize("site", CONTRACT_SITES)
@pytest.mark.parametrize("mode", MODES)
def test_scoring_is_padding_invariant_and_equals_teacher_forcing(tiny, mode, site):
    model, tokenizer = tiny
    handle = _steered(model, mode, site=site)
    try:
        batched = score(model, tokenizer, CONTEXTS, CONTINUATIONS, batch_size=3)
        single = [
            score(model, tokenizer, [c], [x])[0]
            for c, x in zip(CONTEXTS, CONTINUATIONS, strict=True)
        ]
        with handle.disabled():
            base = score(model, tokenizer, CONTEXTS, CONTINUATIONS)
        # The training path: right-padded prompt + answer with the answer as labels.
        rows = []
        for c, x in zip(CONTEXTS, CONTINUATIONS, strict=True):
            ctx = tokenizer(c)["input_ids"]
            cont = tokenizer(x, add_special_tokens=False)["input_ids"]
            rows.append({"input_ids": ctx + cont, "labels": [IGNORE_INDEX] * len(ctx) + cont})
        batch = collate_right_padded(rows, tokenizer.pad_token_id)
        with handle.batch_context(batch), torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logprobs = torch.log_softmax(logits.logits.float(), -1)[:, :-1]
        labels = batch["labels"][:, 1:]
        picked = logprobs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        teacher = (picked * (labels != IGNORE_INDEX)).sum(-1).tolist()
    finally:
        handle.detach()
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(single), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(teacher), atol=1e-4, rtol=0)
    assert batched != base


def test_generated_mode_leaves_the_first_continuation_token_unsteered(tiny):
    """The first continuation token is predicted from the last context token, a prompt token."""
    model, tokenizer = tiny
    first = [tokenizer(x, add_special_tokens=False)["input_ids"][:1] for x in CONTINUATIONS]
    handle = _steered(model, "generated")
    try:
        steered = score(model, tokenizer, CONTEXTS, first)
        with handle.disabled():
            base = score(model, tokenizer, CONTEXTS, first)
    finally:
        handle.detach()
    assert steered == base


# -- where a forward's tokens sit: from the model call's public arguments, never guessed ---------


def _cache_keyword(model) -> str:
    """The keyword this transformers version's model call takes its KV cache under."""
    import inspect

    params = inspect.signature(find_backbone(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _returned_cache(output):
    from transformers import Cache

    (cache,) = [v for v in output.values() if isinstance(v, Cache)]
    return cache


@contextmanager
def _hidden_cache(model, cache):
    """A model call that uses ``cache`` without showing it (nor an attention mask) to steer: what a
    transformers release that moved the cache somewhere steer does not look would look like."""
    keyword = _cache_keyword(model)

    def inject(module, args, kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k != "attention_mask"}
        return args, {**kwargs, keyword: cache}

    # Registered after attach(): runs after steer's hook has read the call's arguments.
    handle = find_backbone(model).register_forward_pre_hook(inject, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _prefill(model, ids, end):
    with prompt_span(model, [0], [end]), torch.no_grad():
        return _returned_cache(model(input_ids=ids, use_cache=True))


def test_a_decoding_step_with_a_hidden_cache_is_an_error(tiny):
    model, tokenizer = tiny
    ids = _ids(tokenizer, PROMPTS[0])
    handle = _steered(model, "last_prompt")
    try:
        cache = _prefill(model, ids, ids.shape[1])
        with (
            _hidden_cache(model, cache),
            prompt_span(model, [0], [ids.shape[1]]),
            pytest.raises(RuntimeError, match=r"cannot tell where .* transformers \d"),
            torch.no_grad(),
        ):
            model(input_ids=ids[:, -1:], use_cache=True)
    finally:
        handle.detach()


def test_a_longer_forward_with_a_hidden_cache_is_caught_by_the_returned_cache(tiny):
    """No signal and a forward as long as the prompt span: steer places it at column 0, and the
    cache the model returns (3 + 4 columns, not 4) shows that was wrong."""
    model, tokenizer = tiny
    ids = _ids(tokenizer, PROMPTS[2])[:, :7]
    handle = _steered(model, "prompt")
    try:
        cache = _prefill(model, ids[:, :3], 3)
        with (
            _hidden_cache(model, cache),
            prompt_span(model, [0], [3]),
            pytest.raises(RuntimeError, match=r"KV cache now holds 7: the call hid its cache"),
            torch.no_grad(),
        ):
            model(input_ids=ids[:, 3:7], use_cache=True)
    finally:
        handle.detach()


def test_disagreeing_cache_and_mask_are_an_error(tiny):
    model, tokenizer = tiny
    ids = _ids(tokenizer, PROMPTS[0])
    n = ids.shape[1]
    handle = _steered(model, "generated")
    try:
        cache = _prefill(model, ids, n)
        wrong_mask = torch.ones(1, n + 2, dtype=torch.long)  # says n + 1 columns come before
        with (
            prompt_span(model, [0], [n]),
            pytest.raises(RuntimeError, match=rf"KV cache's length says {n}.*says {n + 1}"),
            torch.no_grad(),
        ):
            model(
                input_ids=ids[:, -1:],
                attention_mask=wrong_mask,
                use_cache=True,
                **{_cache_keyword(model): cache},
            )
    finally:
        handle.detach()


def test_decoder_layers_called_on_their_own_are_an_error(tiny):
    model, tokenizer = tiny
    ids = _ids(tokenizer, PROMPTS[0])
    handle = _steered(model, "prompt")
    try:
        hidden = model.get_input_embeddings()(ids)
        with (
            prompt_span(model, [0], [ids.shape[1]]),
            pytest.raises(RuntimeError, match="outside a call of the model"),
            torch.no_grad(),
        ):
            find_decoder_layers(model)[0](hidden)
    finally:
        handle.detach()


def test_a_full_cache_signal_places_decoding_steps_after_the_prompt(tiny):
    """The public signals agree on a real cached step: the token sits at column n."""
    model, tokenizer = tiny
    ids = _ids(tokenizer, PROMPTS[0])
    n = ids.shape[1]
    handle = _steered(model, "generated")
    try:
        cache = _prefill(model, ids, n)
        with (
            prompt_span(model, [0], [n]),
            handle.record_positions() as records,
            torch.no_grad(),
        ):
            model(
                input_ids=ids[:, -1:],
                attention_mask=torch.ones(1, n + 1, dtype=torch.long),
                use_cache=True,
                **{_cache_keyword(model): cache},
            )
    finally:
        handle.detach()
    ((columns, mask),) = records
    assert columns.tolist() == [n] and mask.tolist() == [[True]]
