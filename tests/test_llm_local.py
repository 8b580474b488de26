"""The local transformers backend and the LLM rerankers on the real packaged SmolLM2 (small
inputs), plus a tiny pointwise LoRA run."""

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rar_lite import cache
from rar_lite.backends import llm, llm_local
from rar_lite.data import corpus as corpus_module
from rar_lite.data.conversations import Conversation, Turn
from rar_lite.reranking import prompts, rerank, tune


@pytest.fixture(scope="module")
def backend() -> llm_local.TransformersBackend:
    return llm_local.TransformersBackend()


@pytest.fixture(scope="module")
def items(corpus: pd.DataFrame) -> list[int]:
    titles = ["Heat", "Toy Story", "Casablanca", "The Usual Suspects", "Titanic", "Jumanji"]
    return [int(corpus.index[corpus.title == t][0]) for t in titles]


def conversation(text: str = "I want a funny animated movie for my kids.") -> Conversation:
    return Conversation("c1", (Turn("recommender", "Hi! What would you like?"),
                               Turn("seeker", text)), (), (0,), "test")


def test_smollm2_copy_is_cached(backend: llm_local.TransformersBackend) -> None:
    path = llm_local.smollm2_path()
    assert (path / "model.safetensors").exists() and (path / "config.json").exists()
    assert llm_local.smollm2_path() == path  # second call: no conversion


def test_processes_sharing_a_cache_convert_the_model_once(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    monkeypatch.setenv("RAR_LITE_CACHE", str(tmp_path))
    converted = []

    def slow_convert(target: Path) -> None:  # stands in for the ~15 s de-quantisation
        converted.append(target)
        time.sleep(0.3)
        target.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            (target / name).write_text("{}")

    monkeypatch.setattr(llm_local, "_convert_smollm2", slow_convert)
    found = []
    threads = [threading.Thread(target=lambda: found.append(llm_local.smollm2_path()))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(converted) == 1 and len(found) == 3 and len(set(found)) == 1
    assert found[0] == tmp_path / "models" / "smollm2-135m-instruct"


def test_letters_are_single_distinct_tokens(backend: llm_local.TransformersBackend) -> None:
    ids = [backend.tokenizer.encode(label, add_special_tokens=False) for label in prompts.LABELS]
    assert all(len(i) == 1 for i in ids)
    assert len({i[0] for i in ids}) == len(ids)


def test_padding_invariance(backend: llm_local.TransformersBackend) -> None:
    short = backend.chat_prompt("Is Heat a crime movie? Answer yes or no.")
    long = backend.chat_prompt("Here is a much longer prompt " * 20 + "Answer yes or no.")
    alone = backend.last_logits([short])
    batched = backend.last_logits([long, short], batch_size=2)[1:]
    assert alone.dtype == torch.float32
    scale = alone.abs().max()
    assert (alone - batched).abs().max() <= 0.02 * scale  # bf16 matmuls differ in the last bits
    assert alone.argmax() == batched.argmax()


def test_verbalizer_ranking_is_a_cached_permutation(backend, corpus, items,
                                                    tmp_path: Path) -> None:
    responses = llm.ResponseCache(tmp_path / "r.sqlite")
    ranker = rerank.VerbalizerReranker(backend, corpus, permutations=2, response_cache=responses)
    first = ranker.rank(conversation(), items)
    assert sorted(first.items) == sorted(items) and len(first.scores) == len(items)
    again = ranker.rank(conversation(), items)
    assert again.items == first.items and responses.hits == 1 and responses.misses == 1


def test_pointwise_scores_each_candidate(backend, corpus, items) -> None:
    ranking = rerank.PointwiseReranker(backend, corpus).rank(conversation(), items)
    assert sorted(ranking.items) == sorted(items)
    assert ranking.scores == sorted(ranking.scores, reverse=True)


def test_margins_are_whole_prompt_logits_read_from_the_cache_after(
        backend, corpus, items, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ranker = rerank.PointwiseReranker(backend, corpus,
                                      response_cache=llm.ResponseCache(tmp_path / "m.sqlite"))
    texts = ranker.prompt_texts(conversation(), items[:3])
    logits = backend.last_logits(texts, tokens=(ranker.yes, ranker.no))
    first = ranker.margins(texts)
    assert np.allclose(first, (logits[:, 0] - logits[:, 1]).numpy(), atol=1e-5)

    def no_model(*_: object, **__: object) -> None:
        raise AssertionError("cached margins should not run the model")

    monkeypatch.setattr(backend, "last_logits", no_model)
    assert np.array_equal(ranker.margins(texts[::-1]), first[::-1])


def test_constrained_generation_only_writes_candidates(backend, corpus, items) -> None:
    ranker = rerank.ConstrainedReranker(backend, corpus, n=3)
    for text in ("Something scary please.", "A romantic classic.", "Surprise me!"):
        ranking = ranker.rank(conversation(text), items[:5])
        assert len(ranking.listed) == 3 and set(ranking.listed) <= set(items[:5])
        assert sorted(ranking.items) == sorted(items[:5])


def test_generation_records_hallucinations(backend, corpus, items, matcher) -> None:
    ranking = rerank.GenerationReranker(backend, corpus, matcher, n=3,
                                        max_new_tokens=48).rank(conversation(), items)
    assert sorted(ranking.items) == sorted(items)
    assert ranking.raw is not None
    named = len(ranking.listed) + len(ranking.hallucinated) + len(ranking.outside)
    assert named > 0 or ranking.failure


def test_answer_prefix_starts_the_answer(backend, matcher, tmp_path: Path) -> None:
    from rar_lite.evaluation.baselines import OpenRecommender

    prompt = prompts.open_prompt(conversation("A heist movie like Heat, please."), n=3)
    answer = backend.generate([prompt], max_new_tokens=12, prefix="1.")[0]
    plain = backend.generate([prompt], max_new_tokens=12)[0]
    assert answer.startswith("1.") and answer != "1." + plain  # the prefix steers the answer
    responses = llm.ResponseCache(tmp_path / "r.sqlite")
    opener = OpenRecommender(backend, matcher, n=3, max_new_tokens=12, response_cache=responses)
    assert opener.prefix == "1."
    assert opener.answers([conversation("A heist movie like Heat, please.")]) == [answer]
    assert llm.cached_generate(backend, [prompt], responses, 12) == [plain]  # its own key


def tiny_examples(corpus: pd.DataFrame, items: list[int]) -> list[tune.Example]:
    texts = corpus.set_index("item_id")["text"]
    return [tune.Example("a funny animated movie for kids", texts[items[1]], 1, 0),
            tune.Example("a funny animated movie for kids", texts[items[0]], 0, 0),
            tune.Example("a crime thriller with a heist", texts[items[0]], 1, 1),
            tune.Example("a crime thriller with a heist", texts[items[1]], 0, 1)]


@pytest.mark.parametrize("loss", ["group", "bce"])
def test_tiny_tuning_learns_and_adapter_round_trips(corpus, items, backend, tmp_path: Path,
                                                    loss: str) -> None:
    examples = tiny_examples(corpus, items)
    layout = "card" if loss == "group" else "answer"  # each layout tuned once
    config = tune.TuneConfig(steps=8, batch_size=4, lr=1e-3, lora_r=4, lora_alpha=8, loss=loss,
                             layout=layout)
    result = tune.tune_pointwise(examples, config, tmp_path / "adapter", progress=False)
    assert (result.adapter / "adapter_model.safetensors").exists()
    assert result.history["loss"].iloc[-3:].mean() < result.history["loss"].iloc[:3].mean()
    # the same config again: loaded, not retrained
    assert tune.tune_pointwise(examples, config, tmp_path / "adapter",
                               progress=False).seconds == result.seconds
    base = backend
    tuned = llm_local.TransformersBackend(adapter=result.adapter)
    assert tuned.model.endswith("+adapter")
    assert (base.layout, tuned.layout) == ("answer", layout)  # read where it was tuned to answer
    if loss == "group":  # the merged-weights cache does not depend on the loss: checked once
        _merged_weights_are_cached_and_repaired(tuned, result.adapter)
    prompt = [base.chat_prompt(examples[0].prompt())]
    assert not torch.allclose(base.last_logits(prompt), tuned.last_logits(prompt))
    ranker = rerank.PointwiseReranker(tuned, corpus)
    asked = conversation("a funny animated movie for kids")
    assert ranker.prompt_texts(asked, [items[0]])[0] == llm_local.chat_text(
        tuned.tokenizer, prompts.pointwise_prompt(prompts.request_text(asked),
                                                  ranker.texts[items[0]]),
        prompts.POINTWISE_SYSTEM, layout)
    ranking = ranker.rank(asked, [items[0], items[1]])
    assert ranking.items[0] == items[1]


def _merged_weights_are_cached_and_repaired(tuned: llm_local.TransformersBackend,
                                            adapter: Path) -> None:
    """A second load reads the merged weights cached by the first, without PEFT, bit for bit;
    a truncated cache file is merged again, with a warning."""
    import peft

    def no_merge(*_: object, **__: object) -> None:
        raise AssertionError("the merged weights should come from the cache")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(peft.PeftModel, "from_pretrained", no_merge)
        again = llm_local.TransformersBackend(adapter=adapter)
    assert all(torch.equal(a, b) for a, b in zip(tuned.lm.state_dict().values(),
                                                 again.lm.state_dict().values()))
    merged = llm_local.merged_path(llm_local.smollm2_path(), adapter, tuned.dtype)
    merged.write_bytes(merged.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="unusable"):
        repaired = llm_local.TransformersBackend(adapter=adapter)
    assert all(torch.equal(a, b) for a, b in zip(tuned.lm.state_dict().values(),
                                                 repaired.lm.state_dict().values()))


def test_interrupted_tuning_resumes_to_the_same_adapter(corpus, items, tmp_path: Path,
                                                        monkeypatch) -> None:
    from safetensors.torch import load_file

    examples = tiny_examples(corpus, items)
    config = tune.TuneConfig(steps=5, batch_size=2, lr=1e-3, lora_r=4, lora_alpha=8,
                             checkpoint_every=2)
    straight = tune.tune_pointwise(examples, config, tmp_path / "straight", progress=False)

    real, calls = tune.yes_no_margin, []

    def dies_on_step_4(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tune, "yes_no_margin", dies_on_step_4)
    with pytest.raises(KeyboardInterrupt):
        tune.tune_pointwise(examples, config, tmp_path / "resumed", progress=False)
    assert (tmp_path / "resumed.checkpoint" / "state.json").exists()
    monkeypatch.setattr(tune, "yes_no_margin", real)
    resumed = tune.tune_pointwise(examples, config, tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed.checkpoint").exists()
    assert resumed.history["loss"].tolist() == pytest.approx(
        straight.history["loss"].tolist(), rel=1e-5)
    a = load_file(straight.adapter / "adapter_model.safetensors")
    b = load_file(resumed.adapter / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_shared_prefix_tuning_scores_and_gradients_equal_whole_prompts(corpus, items,
                                                                       monkeypatch) -> None:
    from peft import LoraConfig, get_peft_model

    monkeypatch.setattr(tune, "bf16_supported", lambda: False)  # fp32: equal up to rounding
    model, tokenizer = tune._load_base(None)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    model.eval()
    examples = tiny_examples(corpus, items) + [tune.Example("a western", "Heat (1995)", 1, 2),
                                               tune.Example("a western", "Up (2009)", 0, 2)]
    texts = [llm_local.chat_text(tokenizer, e.prompt(), prompts.POINTWISE_SYSTEM, "card")
             for e in examples]  # tuning's default layout
    yes, no = (tokenizer.encode(w, add_special_tokens=False)[0] for w in ("yes", "no"))
    heads, owner, _ = tune._shared_prefixes(tokenizer, texts, [0, 0, 1, 1, 2, 2])
    assert owner == [0, 0, 1, 1, 2, 2] and len(heads[0]) != len(heads[1])  # padded prefixes
    assert tokenizer.decode(heads[0]).endswith("Movie:")
    # a group of one shares nothing: every text is encoded whole
    assert tune._shared_prefixes(tokenizer, texts, [0, 0, 1, 1, 2, 3]) is None
    with pytest.raises(ValueError, match="group ids"):
        tune.yes_no_margin(model, tokenizer, texts, yes, no, groups=[0, 1])

    def scores_and_grads(groups: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        scores = tune.yes_no_margin(model, tokenizer, texts[:4], yes, no, groups=groups)
        (scores * torch.tensor([1.0, -2.0, 0.5, 3.0])).sum().backward()
        return scores.detach(), torch.cat([p.grad.flatten() for p in model.parameters()
                                           if p.requires_grad])

    whole, whole_grad = scores_and_grads(None)
    shared, shared_grad = scores_and_grads([0, 0, 1, 1])
    assert torch.allclose(shared, whole, atol=1e-4)
    assert whole_grad.abs().max() > 0
    assert torch.allclose(shared_grad, whole_grad, atol=1e-4, rtol=1e-3)


def test_tuning_autocasts_to_bf16_where_the_cpu_has_it(monkeypatch) -> None:
    for native in (True, False):
        monkeypatch.setattr(tune, "bf16_supported", lambda native=native: native)
        assert tune._autocast(torch.device("cpu"))._enabled is native
        assert tune._autocast(torch.device("cpu")).fast_dtype == torch.bfloat16
    assert cache.default_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_group_loss_matches_softmax_cross_entropy() -> None:
    scores = torch.tensor([2.0, 0.5, -1.0, 0.3, 1.2, -0.4])
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    expected = (torch.nn.functional.cross_entropy(scores[:3][None], torch.tensor([1]))
                + torch.nn.functional.cross_entropy(scores[3:][None], torch.tensor([0]))) / 2
    assert tune.group_loss(scores, labels, groups).item() == pytest.approx(expected.item())
    # a shift of one group's scores (a yes/no prior) leaves the loss unchanged
    shifted = scores + torch.tensor([5.0, 5.0, 5.0, -3.0, -3.0, -3.0])
    assert tune.group_loss(shifted, labels, groups).item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="exactly one positive"):
        tune.group_loss(scores, torch.zeros(6), groups)


def test_tune_config_rejects_unknown_loss() -> None:
    with pytest.raises(ValueError, match="loss must be one of"):
        tune.TuneConfig(loss="hinge")
    with pytest.raises(ValueError, match="layout must be one of"):
        tune.TuneConfig(layout="middle")


def test_card_layout_leaves_the_users_turn_open(backend) -> None:
    tokenizer = backend.tokenizer
    answer = llm_local.chat_text(tokenizer, "Movie: Heat (1995)", "Judge.")
    card = llm_local.chat_text(tokenizer, "Movie: Heat (1995)", "Judge.", layout="card")
    assert answer.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert card.endswith("Movie: Heat (1995)") and answer.startswith(card)
    # what the card layout saves per candidate: the template's closing tokens
    saved = len(tokenizer(answer[len(card):], add_special_tokens=False)["input_ids"])
    assert saved == 6
    assert backend.chat_prompt("x", layout="card") == llm_local.chat_text(tokenizer, "x",
                                                                          layout="card")
    with pytest.raises(ValueError, match="layout must be one of"):
        llm_local.chat_text(tokenizer, "x", layout="middle")


def test_adapter_layout_is_read_from_the_tuning_record(tmp_path: Path) -> None:
    assert llm_local.adapter_layout(None) == "answer"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "tune.json").write_text('{"config": {}}')  # recorded before layouts
    assert llm_local.adapter_layout(tmp_path / "old") == "answer"
    for name in ("tune.json", "align.json"):
        (tmp_path / name).mkdir()
        (tmp_path / name / name).write_text('{"layout": "card"}')
        assert llm_local.adapter_layout(tmp_path / name) == "card"
    (tmp_path / "bad").mkdir()
    for text, error in (('{"layout": "middle"}', "layout must be one of"),
                        ("{not json", "is not a tuning record"), ("[1]", "is not a tuning record")):
        (tmp_path / "bad" / "tune.json").write_text(text)
        with pytest.raises(ValueError, match=error) as raised:
            llm_local.adapter_layout(tmp_path / "bad")
        assert "tune.json" in str(raised.value)  # names the file


@pytest.mark.parametrize("layout", llm_local.LAYOUTS)
def test_shared_prefix_scoring_equals_full_prompts(corpus, items, layout: str) -> None:
    exact = llm_local.TransformersBackend(dtype="float32")
    exact.layout = layout  # as if tuned to answer there
    ranker = rerank.PointwiseReranker(exact, corpus)
    texts = ranker.prompt_texts(conversation(), items)
    assert texts[0].endswith("<|im_start|>assistant\n") == (layout == "answer")
    prefix = rerank.shared_prefix(texts)
    assert "Request:" in prefix and prefix.endswith("\nMovie:")  # the suffixes: " Title (year)…"
    suffixes = [t[len(prefix):] for t in texts]
    assert all(s.startswith(" ") for s in suffixes)
    lengths = [len(exact.tokenizer(s, add_special_tokens=False)["input_ids"]) for s in suffixes]
    assert len(set(lengths)) > 1  # batched by length: rows come back in their own order
    fast = exact.prefix_last_logits(prefix, suffixes, batch_size=4)
    assert torch.allclose(fast, exact.last_logits(texts), atol=1e-3)
    # cut at a line or before a word; nothing shared: plain scoring
    assert rerank.shared_prefix(["a b\ncd x", "a b\ncd y"]) == "a b\ncd"
    assert rerank.shared_prefix(["a b\ncx", "a b\ncy"]) == "a b\n"
    assert rerank.shared_prefix(["abc", "abd"]) == "" and rerank.shared_prefix(["x\ny"]) == ""


def test_length_groups_cut_the_sorted_lengths_where_padding_costs_more_than_a_pass() -> None:
    def cost(lengths: list[int], groups: list[list[int]], overhead: int) -> int:
        return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)

    lengths = [50, 10, 11, 52, 12, 51]
    groups = llm_local.length_groups(lengths, cap=6, overhead=20)
    assert groups == [[1, 2, 4], [0, 5, 3]]  # the short ones apart from the long ones
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert llm_local.length_groups(lengths, cap=6, overhead=1000) == [[1, 2, 4, 0, 5, 3]]
    assert all(len(g) <= 2 for g in llm_local.length_groups(lengths, cap=2, overhead=0))
    # exact: no split of the sorted order into at most-cap runs costs less
    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = rng.integers(1, 60, size=7).tolist()
        found = cost(lengths, llm_local.length_groups(lengths, cap=3, overhead=15), 15)
        order = sorted(range(7), key=lambda i: lengths[i])
        best = min(cost(lengths, [order[a:b] for a, b in zip((0,) + cuts, cuts + (7,))], 15)
                   for k in range(7) for cuts in itertools.combinations(range(1, 7), k)
                   if all(b - a <= 3 for a, b in zip((0,) + cuts, cuts + (7,))))
        assert found == best
    assert llm_local.length_groups([], cap=4) == []
    with pytest.raises(ValueError, match="cap"):
        llm_local.length_groups([3], cap=0)


def test_suffix_log_probs_equal_one_full_pass_each() -> None:
    exact = llm_local.TransformersBackend(dtype="float32")
    prefix = exact.chat_prompt("Name one heist movie.", system=prompts.TITLE_SYSTEM)
    suffixes = ["Heat (1995)", "Toy Story (1995)", "A", "The Usual Suspects (1995)"]
    sums, counts = exact.suffix_log_probs(prefix, suffixes, batch_size=3)  # padding, 2 batches
    encode = exact.tokenizer
    head = encode(prefix, add_special_tokens=False)["input_ids"]
    for suffix, total, count in zip(suffixes, sums, counts):
        tail = encode(suffix, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = exact.lm(input_ids=torch.tensor([head + tail])).logits[0].float()
        logp = torch.log_softmax(logits[len(head) - 1:-1], -1)  # the positions that predict tail
        assert count == len(tail)
        assert total == pytest.approx(float(logp[torch.arange(len(tail)), tail].sum()), abs=1e-3)
    assert (sums < 0).all()
    with pytest.raises(ValueError, match="at least one token"):
        exact.suffix_log_probs(prefix, ["Heat", ""])


def test_title_reranker_scores_mean_title_log_probs(backend, corpus, items,
                                                    tmp_path: Path) -> None:
    responses = llm.ResponseCache(tmp_path / "r.sqlite")
    ranker = rerank.TitleReranker(backend, corpus, responses)
    ranking = ranker.rank(conversation("I loved Heat, any other crime thrillers?"), items)
    assert sorted(ranking.items) == sorted(items)
    assert ranking.scores == sorted(ranking.scores, reverse=True)
    prompt = ranker.prompt(conversation("I loved Heat, any other crime thrillers?"))
    assert prompt.endswith("assistant\n") and "Heat" in prompt
    titles = [ranker.titles[i] for i in ranking.items]
    sums, counts = backend.suffix_log_probs(prompt, titles)
    assert ranking.scores == pytest.approx((sums / counts).tolist(), abs=1e-4)
    again = ranker.rank(conversation("I loved Heat, any other crime thrillers?"), items)
    assert again.items == ranking.items and responses.hits == len(items)


def test_local_token_counts_follow_the_tokenizer(backend) -> None:
    prompt = "Name one heist movie."
    before = backend.usage.copy()
    answer = backend.generate([prompt], max_new_tokens=8)[0]
    spent = backend.usage.since(before)
    tokenizer = backend.tokenizer
    asked = len(tokenizer(backend.chat_prompt(prompt), add_special_tokens=False)["input_ids"])
    assert (spent.prompt_tokens, spent.requests) == (asked, 1)
    written = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    assert 0 < spent.completion_tokens <= 8 and abs(spent.completion_tokens - written) <= 1
    # pointwise scoring: the shared prefix counts once, each candidate's suffix once
    before = backend.usage.copy()
    backend.prefix_last_logits("shared line\n", ["first", "second one"])
    spent = backend.usage.since(before)
    pieces = [len(tokenizer(t, add_special_tokens=False)["input_ids"])
              for t in ("shared line\n", "first", "second one")]
    assert (spent.prompt_tokens, spent.requests) == (sum(pieces), 2)
    assert spent.completion_tokens == 0  # scoring writes nothing


def test_chosen_token_logits_equal_the_full_row(backend) -> None:
    texts = [backend.chat_prompt("Is Heat a heist movie? Answer yes or no."), "short"]
    tokens = [backend.tokenizer.encode(w, add_special_tokens=False)[0] for w in ("yes", "no")]
    full = backend.last_logits(texts)
    chosen = backend.last_logits(texts, tokens=tokens)
    assert chosen.shape == (2, 2)
    assert torch.allclose(chosen, full[:, tokens], atol=1e-4)
    fast = backend.prefix_last_logits("Is Heat a heist movie?\n", ["yes or no", "maybe"],
                                      tokens=tokens)
    whole = backend.last_logits(["Is Heat a heist movie?\nyes or no",
                                 "Is Heat a heist movie?\nmaybe"])
    assert torch.allclose(fast, whole[:, tokens], atol=1e-2)


def test_pointwise_reads_the_card_it_was_tuned_on(backend, corpus, items) -> None:
    brief = rerank.PointwiseReranker(backend, corpus)
    full = rerank.PointwiseReranker(backend, corpus, card="full")
    row = corpus.set_index("item_id").loc[items[0]]
    assert "starring" in row["text"] and "votes" in row["text"]
    short, long = (r.prompt_texts(conversation(), [items[0]])[0] for r in (brief, full))
    assert corpus_module.brief_card(row) in short and "starring" not in short
    assert row["text"] in long
    assert len(backend.tokenizer(short)["input_ids"]) < len(backend.tokenizer(long)["input_ids"])
    with pytest.raises(ValueError, match="card must be one of"):
        rerank.PointwiseReranker(backend, corpus, card="short")
    # tuning examples show each movie by the same card as the reranker that reads them
    asked = Conversation("c2", conversation().turns, (), (items[0],), "test")
    examples = tune.pointwise_examples([asked], [items[1:4]], rerank.card_texts(corpus),
                                       negatives=2)
    assert [e.label for e in examples] == [1, 0, 0]
    texts = brief.prompt_texts(asked, list(items[:4]))
    assert all(any(e.movie in t for t in texts) for e in examples)


def test_constrained_picks_equal_greedy_decoding_without_a_cache(corpus, items) -> None:
    """Each pick, decoded on one growing key/value cache, is the candidate a greedy reader of
    the same tokens, re-encoded whole at every step, picks (fp32: no rounding by batch shape)."""
    exact = llm_local.TransformersBackend(dtype="float32")
    ranker = rerank.ConstrainedReranker(exact, corpus, n=2)
    asked, pool = conversation("A heist movie like Heat, please."), items[:4]
    picked = ranker.rank(asked, pool).listed
    tokenizer = exact.tokenizer
    titles = {c: tokenizer.encode(ranker.titles[c], add_special_tokens=False) for c in pool}
    ids = tokenizer(ranker.backend.chat_prompt(prompts.listwise_prompt(
        asked, [ranker.texts[c] for c in pool], generation=True, n=2)) + "1. ",
        add_special_tokens=False)["input_ids"]
    for rank, choice in enumerate(picked):
        if rank:
            ids += tokenizer.encode(f"\n{rank + 1}. ", add_special_tokens=False)
        alive, written = [c for c in titles], []
        while not any(len(titles[c]) == len(written) for c in alive):
            with torch.no_grad():
                logits = exact.lm(input_ids=torch.tensor([ids])).logits[0, -1]
            allowed = sorted({titles[c][len(written)] for c in alive})
            token = allowed[int(logits[allowed].argmax())]
            written.append(token)
            ids.append(token)
            alive = [c for c in alive if titles[c][:len(written)] == written]
        assert choice == next(c for c in alive if len(titles[c]) == len(written))
        del titles[choice]
    assert len(picked) == 2
