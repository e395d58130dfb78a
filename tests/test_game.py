import numpy as np
import pytest
from conftest import dialogue

from langgame.game import THOUGHT_TAGS, Episode, Payoff, PayoffError, TemplateError, Turn, mc_q, render, reward_to_go


def decode(policy, ids):
    return policy.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)


def action_text(turn):
    """Everything the player emits in a turn, before the end-of-turn token."""
    return turn.text if turn.thought is None else f"{THOUGHT_TAGS[0]}{turn.thought}{THOUGHT_TAGS[1]}{turn.text}"


def expected_actions(episode, player, eot):
    return "".join(action_text(t) + eot for t in episode.turns if t.player == player)


def check_round_trip(policy, episode, viewer=2):
    r = policy.render(episode, viewer)
    assert len(r.ids) == len(r.owner) == len(r.turn) == len(r.thought)
    for player in (1, 2):
        assert decode(policy, r.ids[r.owner == player]) == expected_actions(episode, player, policy.eot_token)
    for k, turn in enumerate(episode.turns):
        assert decode(policy, r.ids[r.turn == k]) == action_text(turn) + policy.eot_token
        assert set(r.owner[r.turn == k].tolist()) == {turn.player}
    thoughts = [t for t in episode.turns if t.thought is not None]
    assert decode(policy, r.ids[r.thought]) == "".join(f"{THOUGHT_TAGS[0]}{t.thought}{THOUGHT_TAGS[1]}" for t in thoughts)
    # the whole sequence is exactly the chat template's rendering
    chat = [{"role": m.role, "content": action_text(m.turn)} for m in episode.messages(viewer)]
    assert decode(policy, r.ids) == policy.tokenizer.apply_chat_template(chat, tokenize=False)
    return r


def test_ownership_round_trip_tiny(tiny):
    r = check_round_trip(tiny, dialogue())
    # every player turn ends with the end-of-turn token, owned by the player whose turn it closes
    for k, turn in enumerate(dialogue().turns):
        last = np.flatnonzero(r.turn == k)[-1]
        assert r.ids[last] == tiny.eot_id and r.owner[last] == turn.player
    # role headers are the environment's
    assert decode(tiny, r.ids[(r.owner == 0) & (r.turn == -1)]).count("<|im_start|>") == 5


def test_forged_control_token_is_text_not_a_turn_end(tiny):
    r = tiny.render(dialogue())
    p1 = r.ids[r.owner == 1]
    # player 1 wrote "<|im_end|>" inside its text: only its two real turn ends are the special token
    assert int((p1 == tiny.eot_id).sum()) == 2


def test_viewer_one_sees_its_own_turns_as_assistant(tiny):
    e = dialogue()
    r = check_round_trip(tiny, e, viewer=1)
    text = decode(tiny, r.ids)
    assert "<|im_start|>assistant\nWho is Harry Potter?" in text
    assert "<|im_start|>user\n<think>" in text


@pytest.mark.smollm2
def test_ownership_round_trip_smollm2(smollm2):
    r = check_round_trip(smollm2, dialogue())
    assert smollm2.eot_token == "<|im_end|>"
    # SmolLM2's template prepends its default system prompt when the chat has none: context, owned by 0
    bare = Episode([Turn(1, "Hi"), Turn(2, "Hello! How can I help?")])
    rb = check_round_trip(smollm2, bare)
    assert "named SmolLM" in decode(smollm2, rb.ids[rb.owner == 0])
    assert int((r.owner == 2).sum()) > 0


def test_template_without_verbatim_content_is_rejected(tiny):
    tiny.tokenizer.chat_template = "{% for m in messages %}{{ m['content'] | reverse }}<|im_end|>{% endfor %}"
    with pytest.raises(TemplateError, match="verbatim"):
        render(dialogue().messages(), tiny.tokenizer, tiny.eot_token)


def test_template_without_end_of_turn_token_is_rejected(tiny):
    tiny.tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(TemplateError, match="end-of-turn"):
        render(dialogue().messages(), tiny.tokenizer, tiny.eot_token)


def test_returns_and_payoff_kinds():
    e = dialogue()
    assert e.returns() == (0.5, 1.0)
    e.check_payoff()  # general sum accepts anything
    zero = Episode([Turn(1, "a", rewards=(0, 0)), Turn(2, "b", rewards=(-2.0, 2.0))], payoff=Payoff.ZERO_SUM)
    zero.check_payoff()
    same = Episode([Turn(1, "a"), Turn(2, "b", rewards=(1.0, 1.0))], payoff=Payoff.IDENTICAL_INTEREST)
    same.check_payoff()
    with pytest.raises(PayoffError, match="not zero_sum"):
        Episode([Turn(2, "b", rewards=(1.0, 1.0))], payoff=Payoff.ZERO_SUM, id="z1").check_payoff()
    with pytest.raises(PayoffError, match="z2.*not identical_interest"):
        Episode([Turn(2, "b", rewards=(1.0, 0.0))], payoff=Payoff.IDENTICAL_INTEREST, id="z2").check_payoff()


def test_reward_to_go_is_monte_carlo_q(tiny):
    e = Episode([Turn(1, "ab", rewards=(1.0, -1.0)), Turn(2, "cd"), Turn(1, "e"), Turn(2, "fg", rewards=(0.0, 3.0))])
    r = tiny.render(e)
    g2 = reward_to_go(e, r, player=2)
    g1 = reward_to_go(e, r, player=1)
    first_end = np.flatnonzero(r.turn == 0)[-1]
    last_end = np.flatnonzero(r.turn == 3)[-1]
    assert g2[0] == 2.0 and g1[0] == 1.0  # whole-episode returns R^i(z)
    assert g2[first_end] == 2.0 and g2[first_end + 1] == 3.0  # after turn 0's reward, only the final +3 remains
    assert g1[first_end + 1] == 0.0
    assert g2[last_end] == 3.0 and np.all(g2[last_end + 1 :] == 0.0)


def test_mc_q():
    mean, se = mc_q([1.0, 0.0, 1.0, 0.0])
    assert mean == 0.5
    assert se == pytest.approx(np.std([1, 0, 1, 0], ddof=1) / 2)
    with pytest.raises(ValueError):
        mc_q([])


def test_turn_rejects_unknown_player():
    with pytest.raises(ValueError, match="0, 1 or 2"):
        Turn(3, "x")
