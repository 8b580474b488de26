"""Naming an LLM (`backbones`), API models refused where logits are needed, and the client's
concurrent pool against a stand-in server on loopback (`serve.EchoServer`): order, bound,
cache and a failing request; token counts from the `usage` field."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from rar_lite import cli
from rar_lite.backends import backbones, llm, llm_api, llm_local
from rar_lite.backends.serve import EchoServer
from rar_lite.data.conversations import Conversation, Turn
from rar_lite.evaluation import baselines, harness
from rar_lite.reranking import rerank


@pytest.mark.parametrize(("text", "kind", "name", "shown"), [
    ("smollm2", "smollm2", "", "smollm2"),
    (" SmolLM2 ", "smollm2", "", "smollm2"),
    ("hf:HuggingFaceTB/SmolLM2-360M-Instruct", "hf", "HuggingFaceTB/SmolLM2-360M-Instruct",
     "hf:HuggingFaceTB/SmolLM2-360M-Instruct"),
    ("hf:/models/my model", "hf", "/models/my model", "hf:/models/my model"),
    ("openai:gpt-5-mini", "openai", "gpt-5-mini", "openai:gpt-5-mini"),
    ("OpenAI:/root/models/smollm2", "openai", "/root/models/smollm2",
     "openai:/root/models/smollm2"),
])
def test_spec_forms(text: str, kind: str, name: str, shown: str) -> None:
    spec = backbones.parse(text)
    assert (spec.kind, spec.name, str(spec)) == (kind, name, shown)
    assert spec.api == (kind == "openai")
    assert backbones.parse(str(spec)) == spec  # a label parses back to the same spec


@pytest.mark.parametrize(("text", "says"), [
    ("", "expected 'smollm2'"), ("gpt-4", "expected 'smollm2'"),
    ("vllm:qwen", "expected 'smollm2'"), ("hf:", "names no model after 'hf:'"),
    ("openai:  ", "names no model"), ("openai:gpt 5", "control characters or spaces"),
    ("hf:a\x00b", "control characters"),
])
def test_malformed_spec_is_refused_in_words(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        backbones.parse(text)


def test_openai_spec_loads_a_client_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(llm_api.ENV_BASE_URL, "http://127.0.0.1:9/v1")
    monkeypatch.setenv(llm_api.ENV_KEY, "sk-from-the-environment")
    backend = backbones.load("openai:some-model", concurrency=3)
    assert isinstance(backend, llm_api.OpenAIChatBackend)
    assert (backend.model, backend.base_url, backend.concurrency) == (
        "some-model", "http://127.0.0.1:9/v1", 3)
    assert backbones.label(backend) == "openai:some-model"
    with pytest.raises(llm.LLMError, match="cannot load a LoRA adapter"):
        backbones.load("openai:some-model", adapter="adapter-dir")
    monkeypatch.delenv(llm_api.ENV_KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(llm.LLMError, match="no API key"):
        backbones.load("openai:some-model")


def test_labels_of_local_models() -> None:
    default = llm_local.TransformersBackend.DEFAULT_NAME
    assert backbones.label(SimpleNamespace(model=default)) == "smollm2"
    assert backbones.label(SimpleNamespace(model=f"{default}+adapter-3")) == "smollm2+adapter-3"
    assert backbones.label(SimpleNamespace(model="org/model")) == "hf:org/model"


@pytest.mark.parametrize("reranker", [rerank.PointwiseReranker, rerank.VerbalizerReranker,
                                      rerank.ConstrainedReranker, rerank.TitleReranker])
def test_logit_modes_refuse_an_api_model_and_name_what_works(reranker, monkeypatch) -> None:
    api = llm_api.OpenAIChatBackend(model="m", base_url="http://127.0.0.1:9/v1", api_key="k")
    with pytest.raises(llm.LLMError, match="needs next-token logits.*generation mode"):
        reranker(api, pd.DataFrame({"item_id": [1], "text": ["x"], "title": ["X"],
                                    "year": [2000]}))


def test_generation_mode_accepts_an_api_model(corpus, matcher) -> None:
    api = llm_api.OpenAIChatBackend(model="m", base_url="http://127.0.0.1:9/v1", api_key="k")
    assert rerank.GenerationReranker(api, corpus, matcher).backend is api


def test_pool_keeps_order_and_bound_and_counts_tokens() -> None:
    prompts = [f"prompt number {i}" for i in range(24)]
    with EchoServer(delay=0.05) as server:
        backend = server.backend(concurrency=4)
        arrived: list[int] = []
        answers = backend.generate(prompts, on_answer=lambda i, text: arrived.append(i))
        assert answers == [f"answer to: {p}" for p in prompts]
        assert server.requests == 24 and 1 < server.most_in_flight <= 4
        assert sorted(arrived) == list(range(24))
    assert (backend.usage.prompt_tokens, backend.usage.completion_tokens,
            backend.usage.requests) == (24 * 3, 24 * 3, 24)


def test_pool_caches_answers_as_they_arrive_and_keeps_them_past_a_failure(tmp_path: Path
                                                                          ) -> None:
    cache = llm.ResponseCache(tmp_path / "responses.sqlite")
    prompts = ["one", "two FAIL", "three", "four"]
    with EchoServer() as server:
        backend = server.backend(concurrency=4)
        with pytest.raises(llm.LLMError, match="1 of 4 requests failed.*prompt 1.*HTTP 400"):
            llm.cached_generate(backend, prompts, cache)
        assert server.requests == 4
        good = ["one", "three", "four"]
        assert llm.cached_generate(backend, good, cache) == [f"answer to: {p}" for p in good]
        assert server.requests == 4  # the three answers were kept: a rerun pays nothing
        assert cache.hits == 3


def test_usage_from_a_server_without_a_usage_field_counts_zero_tokens() -> None:
    assert llm_api._tokens({}, "prompt_tokens") == 0
    assert llm_api._tokens({"prompt_tokens": "many"}, "prompt_tokens") == 0
    assert llm_api._tokens({"completion_tokens": 7}, "completion_tokens") == 7


def test_llm_baseline_and_generation_mode_send_every_prompt_together(corpus, matcher) -> None:
    conversations = [Conversation(f"c{i}", (Turn("seeker", f"a comedy please {i}"),), (), (1,),
                                  "u") for i in range(6)]
    with EchoServer(delay=0.1) as server:
        backend = server.backend(concurrency=6)
        rankings = baselines.OpenRecommender(backend, matcher).recommend(conversations)
        assert len(rankings) == 6 and server.most_in_flight == 6
        generation = rerank.GenerationReranker(backend, corpus, matcher)
        ranked = generation.rank_all(conversations, [[1, 2, 3]] * 5 + [[]])
        assert server.requests == 11  # no request for the conversation without candidates
        assert ranked[-1].failure == "no candidates"
        assert all(set(r.items) == {1, 2, 3} for r in ranked[:5])  # candidates, LLM order


def test_eval_config_and_cli_check_the_llm_before_any_work(monkeypatch, tmp_path, capsys
                                                           ) -> None:
    assert harness.EvalConfig(llm=" SmolLM2").llm == "smollm2"
    with pytest.raises(ValueError, match="LLM spec 'gpt'"):
        harness.EvalConfig(llm="gpt")
    with pytest.raises(ValueError, match="llm_concurrency"):
        harness.EvalConfig(llm_concurrency=0)
    monkeypatch.setattr(harness, "evaluate", lambda *a, **k: pytest.fail("work started"))
    monkeypatch.delenv(llm_api.ENV_KEY, raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    base = ["evaluate", "--quick", "--datasets", "simulated", "--out", str(tmp_path)]
    assert cli.main([*base, "--llm", "gpt"]) == 2
    assert "LLM spec 'gpt'" in capsys.readouterr().err
    assert cli.main([*base, "--llm", "openai:m"]) == 2
    assert "--llm openai:m: no API key" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse's own check
        cli.main([*base, "--llm-concurrency", "0"])
    assert exited.value.code == 2 and "--llm-concurrency: 0 is below 1" in capsys.readouterr().err


def test_chapter_4_sets_leave_out_the_logit_modes_for_an_api_model(corpus, matcher) -> None:
    from rar_lite.experiments import reranker_study

    api = llm_api.OpenAIChatBackend(model="m", base_url="http://127.0.0.1:9/v1", api_key="k")
    assert list(reranker_study.zero_shot_rerankers(api, corpus)) == [
        "random order", "retriever order", "keyword match"]
    assert list(reranker_study.generation_rerankers(api, corpus, matcher)) == [
        "generation (zero-shot)"]


def test_only_api_models_get_every_prompt_at_once() -> None:
    assert llm.pools_requests(llm_api.OpenAIChatBackend)  # a class attribute, not a field
    assert "pools_requests" not in {f.name for f in dataclasses.fields(llm_api.OpenAIChatBackend)}
    assert not llm.pools_requests(llm_local.TransformersBackend) and not llm.pools_requests(object())
