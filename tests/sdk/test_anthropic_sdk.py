"""The official Anthropic Python SDK pointed at keyledger's gateway, unchanged."""

import anthropic
import pytest

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def org(keyledger, request):
    name = f"an-{request.node.name[-40:].replace('[', '-').replace(']', '').replace('_', '-')}"[:60]
    return name, keyledger.org_with_keys(name, ["anthropic", "openai"])


def client(keyledger, org, **credentials):
    name, token = org
    credentials = credentials or {"api_key": token}
    return anthropic.Anthropic(base_url=f"{keyledger.base}/v1/orgs/{name}/gateway/anthropic",
                               max_retries=0, **credentials)


def test_messages_with_the_token_as_api_key(keyledger, org):
    answer = client(keyledger, org).messages.create(model="claude-3-5-haiku-latest", max_tokens=64, messages=HI)
    assert answer.content[0].text == "Hello"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (30, 5)
    sent = keyledger.fake.model_calls()[-1]
    assert (sent["provider"], sent["path"]) == ("anthropic", "/v1/messages")


def test_messages_with_the_token_as_auth_token(keyledger, org):
    answer = client(keyledger, org, auth_token=org[1]).messages.create(
        model="claude-3-5-haiku-latest", max_tokens=64, messages=HI)
    assert answer.content[0].text == "Hello"


def test_a_streamed_message(keyledger, org):
    with client(keyledger, org).messages.stream(model="claude-3-5-haiku-latest", max_tokens=64,
                                                messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello"
    assert final.usage.output_tokens == 15


def test_the_model_list_through_the_gateway(keyledger, org):
    ids = [m.id for m in client(keyledger, org).models.list()]
    assert "claude-3-5-haiku-latest" in ids


def test_an_unknown_model_is_anthropics_own_404(keyledger, org):
    with pytest.raises(anthropic.NotFoundError) as raised:
        client(keyledger, org).messages.create(model="claude-none", max_tokens=8, messages=HI)
    assert raised.value.body["error"]["type"] == "not_found_error"


def test_a_stalled_stream_ends_with_an_error_event_the_sdk_raises(keyledger, org):
    stream = client(keyledger, org).messages.create(
        model="claude-3-5-haiku-latest", max_tokens=64, messages=HI, stream=True,
        extra_headers={"x-test-hold": "1"})
    with pytest.raises(anthropic.APIStatusError) as raised:
        for _ in stream:
            pass
    assert "sent nothing" in str(raised.value)
