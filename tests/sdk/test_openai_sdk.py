"""The official OpenAI Python SDK pointed at keyledger's unified surface, unchanged."""

import openai
import pytest

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def client(keyledger, request):
    org = f"oa-{request.node.name[-40:].replace('[', '-').replace(']', '').replace('_', '-')}"[:60]
    token = keyledger.org_with_keys(org, ["anthropic", "groq", "openai"])
    # No retries: each call here is meant to be made once.
    return openai.OpenAI(base_url=f"{keyledger.base}/v1/orgs/{org}", api_key=token, max_retries=0)


def test_a_bare_model_goes_to_the_provider_that_serves_it(client, keyledger):
    before = len(keyledger.fake.model_calls())
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert answer.choices[0].message.content == "Hello"
    assert answer.usage.prompt_tokens == 12
    sent = keyledger.fake.model_calls()[before:]
    assert [(c["provider"], c["model"]) for c in sent] == [("openai", "gpt-4o-mini")]


def test_a_provider_prefix_streams_from_that_provider(client, keyledger):
    stream = client.chat.completions.create(model="groq/llama-3.3-70b-versatile", messages=HI,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello"
    assert chunks[-1].usage.completion_tokens == 2
    last = keyledger.fake.model_calls()[-1]
    assert (last["provider"], last["model"]) == ("groq", "llama-3.3-70b-versatile")


def test_an_explicit_unknown_model_is_the_providers_404(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="openai/gpt-does-not-exist", messages=HI)
    assert raised.value.code == "model_not_found"


def test_a_bare_chain_passes_over_providers_without_the_model(client, keyledger):
    before = len(keyledger.fake.model_calls())
    answer = client.chat.completions.create(
        model="mystery-model", messages=HI,
        extra_body={"models": ["anthropic/claude-3-5-haiku-latest"]})
    assert answer.choices[0].message.content == "Hello"
    sent = keyledger.fake.model_calls()[before:]
    assert [c["provider"] for c in sent] == ["anthropic"]


def test_embeddings_and_the_model_list(client):
    embedded = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(embedded.data) == 2
    ids = [m.id for m in client.models.list()]
    assert "openai/gpt-4o-mini" in ids and "anthropic/claude-3-5-haiku-latest" in ids
    assert "groq/llama-3.3-70b-versatile" in ids
    assert not any(i.startswith("mistral/") for i in ids)


def test_an_unroutable_model_is_a_400_the_sdk_explains(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="mystery-model", messages=HI)
    assert raised.value.code == "model_not_routable"
    assert "'provider/model'" in str(raised.value)


def test_a_stalled_stream_ends_with_an_error_the_sdk_raises(client):
    stream = client.chat.completions.create(model="gpt-4o", messages=HI, stream=True,
                                            extra_headers={"x-test-hold": "1"})
    with pytest.raises(openai.APIError) as raised:
        for _ in stream:
            pass
    assert "sent nothing" in str(raised.value)
