"""Prompt templates and rendering: each test pins one thing that silently changes the prompt."""

import random

import pytest

from tinyllava_export import templates as T

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions."
)
EOS = {
    "phi": "<|endoftext|>",
    "llama": "</s>",
    "gemma": "<eos>",
    "qwen2_base": "<|endoftext|>",
    "qwen2_instruct": "<|im_end|>",
}
FACTORY = tuple(EOS)


def user(text, images=0):
    return {"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}


def assistant(text):
    return {"role": "assistant", "content": text}


@pytest.mark.parametrize("name", FACTORY)
def test_factory_template_fields_exact(name):
    assert T.template_fields(name) == {
        "template": name,
        "system_message": SYSTEM,
        "system_format": "{system} ",
        "user_format": "USER: {content} ",
        "assistant_format": "ASSISTANT: {content}{eos}",
        "generation_prompt": "ASSISTANT:",
        "image_format": "<image>\n{content}",
        "image_placeholder": "<image>",
        "eos_text": EOS[name],
        "image_token_mode": "splice",
    }


def test_llava_hf_fields_exact():
    assert T.template_fields("llava_hf") == {
        "template": "llava_hf",
        "system_message": "",
        "system_format": "",
        "user_format": "USER: {content}\n",
        "assistant_format": "ASSISTANT: {content}{eos}",
        "generation_prompt": "ASSISTANT:",
        "image_format": "<image>\n{content}",
        "image_placeholder": "<image>",
        "eos_text": "</s>",
        "image_token_mode": "token",
    }


def test_template_fields_is_a_copy_and_unknown_name_fails():
    T.template_fields("phi")["eos_text"] = "changed"
    assert T.template_fields("phi")["eos_text"] == "<|endoftext|>"
    with pytest.raises(ValueError):
        T.template_fields("vicuna")


def test_generation_prompt_is_what_the_factory_formatter_emits_for_none():
    # StringFormatter.apply(content=None) returns slot.split(':')[0] + ':'.
    for name in T.TEMPLATE_NAMES:
        f = T.template_fields(name)
        assert f["generation_prompt"] == f["assistant_format"].split(":")[0] + ":"
        assert not f["generation_prompt"].endswith(" ")


def test_factory_phi_single_turn_verified_example():
    prompt = T.render_prompt(T.template_fields("phi"), [user("What are these?", 1)])
    assert prompt == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the user's questions. USER: <image>\nWhat are these? "
        "ASSISTANT:"
    )


@pytest.mark.parametrize("name", FACTORY)
def test_multi_turn_eos_then_user_without_space(name):
    msgs = [user("What are these?", 1), assistant("Two cats."), user("What colour?")]
    prompt = T.render_prompt(T.template_fields(name), msgs)
    eos = EOS[name]
    assert prompt == (
        f"{SYSTEM} USER: <image>\nWhat are these? ASSISTANT: Two cats.{eos}USER: What colour? ASSISTANT:"
    )
    assert f"{eos} USER" not in prompt


def test_finished_conversation_ends_with_eos_and_no_generation_prompt():
    msgs = [user("Hi"), assistant("Hello")]
    assert T.render_prompt(T.template_fields("llama"), msgs) == f"{SYSTEM} USER: Hi ASSISTANT: Hello</s>"


def test_custom_system_message_from_request_or_argument():
    fields = T.template_fields("qwen2_base")
    msgs = [{"role": "system", "content": "Be brief."}, user("Hi", 1)]
    assert T.render_prompt(fields, msgs) == "Be brief. USER: <image>\nHi ASSISTANT:"
    # the argument wins over the request's message and over the default
    assert T.render_prompt(fields, msgs, system="Argument.") == "Argument. USER: <image>\nHi ASSISTANT:"
    assert T.render_prompt(fields, [user("Hi")], system="S.") == "S. USER: Hi ASSISTANT:"


def test_image_goes_to_the_front_whatever_the_part_order():
    fields = T.template_fields("phi")
    after = {"role": "user", "content": [{"type": "text", "text": "  What is it?  "}, {"type": "image"}]}
    assert T.render_prompt(fields, [after]).endswith("USER: <image>\nWhat is it? ASSISTANT:")


def test_several_images_and_image_only_message():
    fields = T.template_fields("gemma")
    assert T.render_prompt(fields, [user("Compare.", 2)]).endswith(
        "USER: <image>\n<image>\nCompare. ASSISTANT:")
    # Factory: "<image>\n".strip() -> "<image>", then the user slot adds its space.
    assert T.render_prompt(fields, [user("", 1)]).endswith("USER: <image> ASSISTANT:")
    assert T.count_images([user("a", 2), assistant("b"), user("c", 1)]) == 3


def test_typed_placeholders_never_become_images():
    fields = T.template_fields("phi")
    p = T.render_prompt(fields, [user("see <image> here", 1)])
    assert p.count("<image>") == 1 and p.endswith("USER: <image>\nsee  here ASSISTANT:")
    p = T.render_prompt(fields, [user("no <image> here")])
    assert "<image>" not in p
    p = T.render_prompt(fields, [{"role": "system", "content": "<image>sys"}, user("q")])
    assert p.startswith("sys USER:")


def test_braces_and_field_names_in_user_text_are_literal():
    fields = T.template_fields("phi")
    p = T.render_prompt(fields, [user("say {eos} and {content} {0}")])
    assert p.endswith("USER: say {eos} and {content} {0} ASSISTANT:")


def test_llava_hf_rendering():
    fields = T.template_fields("llava_hf")
    assert T.render_prompt(fields, [user("What are these?", 1)]) == "USER: <image>\nWhat are these?\nASSISTANT:"
    msgs = [user("What are these?", 1), assistant("Cats."), user("How many?")]
    assert T.render_prompt(fields, msgs) == (
        "USER: <image>\nWhat are these?\nASSISTANT: Cats.</s>USER: How many?\nASSISTANT:")


def test_role_order_is_enforced():
    fields = T.template_fields("phi")
    with pytest.raises(ValueError):
        T.render_prompt(fields, [assistant("first")])
    with pytest.raises(ValueError):
        T.render_prompt(fields, [user("a"), user("b")])
    with pytest.raises(ValueError):
        T.render_prompt(fields, [{"role": "system", "content": "s"}])
    with pytest.raises(ValueError):
        T.render_prompt(fields, [user("a"), {"role": "assistant", "content": [{"type": "image"}]}])


# An independent re-statement of TinyLLaVA_Factory's Template._prompt on its own slot strings
# ("{{content}}" placeholders, StringFormatter/EmptyFormatter semantics), used as an oracle.
def _factory_prompt(eos, questions, answers):
    image_slot, user_slot = "<image>\n{{content}}", "USER" + ": " + "{{content}}" + " "
    assistant_slot, system_slot = "ASSISTANT" + ": " + "{{content}}" + eos, SYSTEM + " "

    def fmt(slot, content):
        if content is None:
            return slot.split(":")[0] + ":"
        return slot.replace("{{content}}", content, 1)

    msg = ""
    for i, (q, a) in enumerate(zip(questions, answers)):
        if i == 0:
            msg += system_slot
        if "<image>" in q:
            q = fmt(image_slot, q.replace("<image>", "").strip()).strip()
        msg += fmt(user_slot, q) + fmt(assistant_slot, a)
    return msg


@pytest.mark.parametrize("name", FACTORY)
def test_render_matches_factory_oracle_on_random_conversations(name):
    rng = random.Random(name)
    words = ["What", "is", "this", "?", "cat", "  ", "\n", "red.", "Yes", "no", "über", "猫"]
    fields = T.template_fields(name)
    for _ in range(50):
        turns = rng.randint(1, 4)
        qs = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 5))) for _ in range(turns)]
        ans = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 5))) for _ in range(turns - 1)]
        msgs = []
        for i, q in enumerate(qs):
            msgs.append(user(q, 1 if i == 0 else 0))
            if i < len(ans):
                msgs.append(assistant(ans[i]))
        factory_qs = ["<image>\n" + qs[0]] + qs[1:]
        assert T.render_prompt(fields, msgs) == _factory_prompt(EOS[name], factory_qs, ans + [None])


def test_splice_layout():
    ids = [1, 5, 6, T.IMAGE_TOKEN_INDEX, 7, T.IMAGE_TOKEN_INDEX, 8]
    assert T.splice_layout(ids, 728) == (5 + 2 * 728, [[3, 728], [3 + 728 + 1, 728]])
    assert T.splice_layout([1, 2], 576) == (2, [])
    assert T.splice_layout([T.IMAGE_TOKEN_INDEX], 4) == (4, [[0, 4]])
