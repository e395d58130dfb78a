"""OpenSpiel games as language games: rendering, constrained decoding, exact exploitability, meta-Nash."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from open_spiel.python import policy as policy_lib
from open_spiel.python.algorithms import exploitability as spiel_exploitability
from transformers import DynamicCache

from langgame.equilibrium import (
    cross_play_matrix,
    exploitability,
    improvements,
    induced_policy,
    meta_nash,
    nash_conv,
    population_nash_conv,
)
from langgame.game import Message, Turn
from langgame.games.spiel import (
    SpielGameError,
    action_logprobs,
    choice_logprobs,
    leduc_card,
    load_game,
)
from langgame.models import Policy, load_policy, tiny_tokenizer

KUHN_CARDS = ("Jack", "Queen", "King")


class Bigram(torch.nn.Module):
    """A stand-in LM: logits of the next token = table[current token], whatever came before.

    So p(word + <eot> | prompt) = prod_t softmax(table[x_t])[x_{t+1}] over the reply, starting from
    the prompt's last token ("\\n" after "<|im_start|>assistant"): known in closed form.
    """

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.config = SimpleNamespace()
        self.head = torch.nn.Linear(table.shape[0], table.shape[1], bias=False)
        self.head.weight.data = table.T.clone()

    def base_model(self, input_ids, attention_mask=None, past_key_values=None, use_cache=False):
        """Context-free, so a shared prefix's KV cache (objective.policy_forward) is a placeholder of the right length."""
        cache = DynamicCache([(torch.zeros(1, 1, input_ids.shape[1], 1),) * 2]) if use_cache else None
        return SimpleNamespace(last_hidden_state=torch.nn.functional.one_hot(input_ids, self.head.in_features).float(), past_key_values=cache)

    def get_output_embeddings(self):
        return self.head


@pytest.fixture(scope="module")
def bigram():
    """Random bigram logits, raised by 5 along the words used below so that their probabilities are moderate."""
    tok = tiny_tokenizer()
    table = 0.5 * torch.randn(len(tok), len(tok), generator=torch.Generator().manual_seed(0))
    spelled = [tok("\n" + w)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")] for w in ("pass", "bet", "fold", "call", "bets")]
    for a, b in {pair for seq in spelled for pair in zip(seq, seq[1:])}:
        table[a, b] += 5.0
    return Policy(model=Bigram(table), tokenizer=tok, name="bigram", eot_token="<|im_end|>"), table.double().log_softmax(-1)


def closed_form_logp(tok, logsoftmax, word: str) -> float:
    """log p(word + <eot> | prompt ending in "\\n") under the bigram table."""
    seq = tok("\n")["input_ids"] + tok(word)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    return float(sum(logsoftmax[a, b] for a, b in zip(seq, seq[1:])))


def closed_form_pi(tok, logsoftmax, words) -> np.ndarray:
    logp = np.array([closed_form_logp(tok, logsoftmax, w) for w in words])
    return np.exp(logp - np.logaddexp.reduce(logp))


def kuhn_table(game, probs: dict[str, float]) -> policy_lib.TabularPolicy:
    """A Kuhn TabularPolicy from {info state key: probability of action 1 (bet/call)}."""
    table = policy_lib.TabularPolicy(game.game)
    for key, p in probs.items():
        table.policy_for_key(key)[:] = [1 - p, p]
    return table


# --- exact exploitability of known tables --------------------------------------------------------


def test_kuhn_fixed_tables_match_openspiel():
    game = load_game("kuhn_poker")
    uniform = policy_lib.TabularPolicy(game.game)
    assert exploitability(game, uniform) == pytest.approx(11 / 24, abs=1e-9)
    assert exploitability(game, uniform) == pytest.approx(spiel_exploitability.exploitability(game.game, uniform), abs=1e-9)
    a = 1 / 3  # Kuhn's equilibrium family: player 1 bets a Jack w.p. a, a King w.p. 3a, calls a Queen w.p. a + 1/3
    nash = kuhn_table(game, {"0": a, "1": 0, "2": 3 * a, "0pb": 0, "1pb": a + 1 / 3, "2pb": 1,
                             "0p": 1 / 3, "1p": 0, "2p": 1, "0b": 0, "1b": 1 / 3, "2b": 1})  # fmt: skip
    assert exploitability(game, nash) == pytest.approx(0.0, abs=1e-9)
    gains = improvements(game, uniform)
    assert nash_conv(game, uniform) == pytest.approx(2 * 11 / 24, abs=1e-9) == gains[1] + gains[2]


def test_stand_in_model_induces_the_closed_form_policy(bigram):
    policy, logsoftmax = bigram
    game = load_game("kuhn_poker")
    induced = induced_policy(game, {1: policy, 2: policy})
    words = {False: ("pass", "bet"), True: ("fold", "call")}  # facing a bet or not
    probs = {key: closed_form_pi(policy.tokenizer, logsoftmax, words["b" in key])[1] for key in induced.state_lookup}
    analytic = kuhn_table(game, probs)
    assert np.abs(induced.action_probability_array - analytic.action_probability_array).max() < 1e-6
    assert len(induced.state_lookup) == 12
    expected = spiel_exploitability.exploitability(game.game, analytic)
    assert exploitability(game, analytic) == pytest.approx(expected, abs=1e-9)  # same table in, same number out
    assert exploitability(game, induced) == pytest.approx(spiel_exploitability.exploitability(game.game, induced), abs=1e-9)
    assert exploitability(game, induced) == pytest.approx(expected, abs=1e-5)


# --- constrained decoding -------------------------------------------------------------------------


def test_constrained_decoding_renormalises_complete_words(bigram):
    policy, logsoftmax = bigram
    prompt = [Message("user", Turn(0, "Say a word."), 0)]
    choices = [["b", "be", "bet", "bets"], ["bet"]]  # each word is a prefix of the next
    logp = choice_logprobs(policy, [prompt, prompt], choices, micro_batch=3)
    assert logp.shape == (2, 4)
    expected = closed_form_pi(policy.tokenizer, logsoftmax, choices[0])
    assert np.allclose(logp[0].exp().detach().numpy(), expected, atol=1e-6)
    assert logp[1, 0].item() == pytest.approx(0.0, abs=1e-6) and torch.isinf(logp[1, 1:]).all()
    logp[0, 2].backward()  # differentiable: a policy gradient reaches the LM's parameters
    assert policy.model.head.weight.grad.abs().sum() > 0
    policy.model.zero_grad()


def test_choice_logprobs_with_each_prompt_computed_once_equal_the_full_pass(monkeypatch):
    import langgame.objective as objective

    policy = load_policy("tiny-random")
    prompts = [[Message("system", Turn(0, "The rules of a card game, the same for every state."), 0), Message("user", Turn(0, text), 1)]
               for text in ("You hold a King.", "You hold a Jack.")]
    choices = [["pass", "bet"], ["fold", "call", "raise"]]
    lengths = []
    hook = policy.model.model.embed_tokens.register_forward_hook(lambda m, args, out: lengths.append(tuple(args[0].shape)))

    def run():
        policy.model.zero_grad()
        logp = choice_logprobs(policy, prompts, choices, micro_batch=8)
        logp[torch.isfinite(logp)].sum().backward()
        return logp.detach(), [q.grad.clone() for q in policy.model.parameters()]

    shared, grads = run()
    assert [n for n, _ in lengths] == [1, 1, 2, 1, 3]  # the rules once, then each prompt once and its choices' own tokens
    assert lengths[0][1] >= objective.SHARED_MIN
    monkeypatch.setattr(objective, "SHARED_MIN", 10**9)
    full, grads_full = run()
    hook.remove()
    assert torch.allclose(shared, full, atol=1e-5) and torch.isinf(shared[0, 2])
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(grads, grads_full))  # float32 sums in another order


def test_without_eot_a_choice_is_a_reply_that_starts_with_the_word(bigram):
    policy, logsoftmax = bigram
    prompt = [Message("user", Turn(0, "Say a word."), 0)]
    words = ["pass", "bet", "bets"]
    logp = choice_logprobs(policy, [prompt], [words], eot=False)[0].detach().numpy()
    tok = policy.tokenizer
    prefix = [sum(float(logsoftmax[a, b]) for a, b in zip(s, s[1:])) for s in (tok("\n")["input_ids"] + tok(w)["input_ids"] for w in words)]
    assert np.allclose(logp, np.array(prefix) - np.logaddexp.reduce(prefix), atol=1e-6)


def test_probabilities_are_distributions_over_legal_actions(bigram):
    policy, _ = bigram
    game = load_game("leduc_poker")
    table = induced_policy(game, policy, micro_batch=64)
    probs, legal = table.action_probability_array, table.legal_actions_mask.astype(bool)
    assert len(table.state_lookup) == 936
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-12)
    assert (probs[~legal] == 0).all() and (probs[legal] > 0).all()
    states = table.states[:5]
    logp = action_logprobs(game, policy, states)
    assert logp.shape == (5, 3) and logp.requires_grad
    assert all(a in states[i].legal_actions() for i, a in enumerate(sample_actions(logp, torch.Generator().manual_seed(0))))


def sample_actions(logp, generator=None):
    """One OpenSpiel action id per row of an action_logprobs table, sampled from pi(.|I)."""
    return torch.multinomial(logp.detach().float().exp(), 1, generator=generator).squeeze(-1).tolist()


def test_sampling_follows_pi():
    logp = torch.tensor([[0.25, 0.75, 0.0]]).log().expand(4000, 3)
    actions = np.array(sample_actions(logp, torch.Generator().manual_seed(0)))
    assert (actions != 2).all() and abs((actions == 1).mean() - 0.75) < 0.03


# --- rendering ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,count", [("kuhn_poker", 12), ("leduc_poker", 936)])
def test_rendering_covers_every_information_state_without_leaks(name, count):
    game = load_game(name)
    table = policy_lib.TabularPolicy(game.game)
    assert len(table.state_lookup) == count
    card_name = (lambda c: KUHN_CARDS[c]) if name == "kuhn_poker" else leduc_card
    for player, keys in enumerate(table.states_per_player):
        texts = set()
        for key in keys:
            state = table.states[table.state_lookup[key]]
            view = game.view(state)
            texts.add(view.rules + view.situation)
            assert f"card: {card_name(state.history()[player])}." in view.situation  # the deal: player 1's card first
            assert sorted(view.words) == state.legal_actions() and len(set(view.words.values())) == len(view.words)
            assert f"Legal actions: {', '.join(view.words.values())}." in view.situation
        assert len(texts) == len(keys)  # distinct information states, distinct prompts


@pytest.mark.parametrize("name", ["kuhn_poker", "leduc_poker"])
def test_the_opponents_card_never_appears(name):
    game = load_game(name)
    for state in policy_lib.TabularPolicy(game.game).states:
        player, deal = state.current_player(), state.history()
        situation = game.view(state).situation
        if name == "kuhn_poker":  # ranks are cards: remove the player's own before looking
            assert KUHN_CARDS[deal[1 - player]] not in situation.replace(f"Your card: {KUHN_CARDS[deal[player]]}", "")
        else:  # six distinct cards: the opponent's never shows, even when it has the player's rank
            assert leduc_card(deal[1 - player]) not in situation


def test_generic_rendering_uses_openspiel_strings():
    game = load_game("tic_tac_toe")
    state = game.game.new_initial_state()
    state.apply_action(4)
    view = game.view(state)
    assert view.words[0] == "o(0,0)" and 4 not in view.words and "player 2" in view.situation


# --- matrix games ---------------------------------------------------------------------------------


def test_matrix_games_are_turn_based_and_hide_the_first_move():
    game = load_game("matrix_rps")
    seen = set()
    for first in range(3):
        state = game.game.new_initial_state()
        state.apply_action(first)
        assert state.current_player() == 1
        view = game.view(state)
        seen.add((state.information_state_string(1), view.rules + view.situation))
    assert len(seen) == 1
    table = policy_lib.TabularPolicy(game.game)
    assert [len(k) for k in table.states_per_player] == [1, 1]
    assert exploitability(game, table) == pytest.approx(0.0, abs=1e-12)
    table.action_probability_array[:] = [1.0, 0.0, 0.0]  # both play rock
    assert exploitability(game, table) == pytest.approx(1.0, abs=1e-12)
    assert nash_conv(game, table) == pytest.approx(2.0, abs=1e-12)
    mp = load_game("matrix_mp")
    assert exploitability(mp, policy_lib.TabularPolicy(mp.game)) == pytest.approx(0.0, abs=1e-12)
    assert list(mp.view(mp.game.new_initial_state()).words.values()) == ["heads", "tails"]


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["no_such_game", "kuhn_poker(players=3)", "goofspiel", "mfg_crowd_modelling"])
def test_unsupported_games_fail_with_one_line(name):
    with pytest.raises(SpielGameError) as e:
        load_game(name)
    message = str(e.value)
    assert "\n" not in message and name in message and "kuhn_poker, leduc_poker, matrix games" in message


# --- a real (tiny) model --------------------------------------------------------------------------


def test_tiny_random_policy_on_kuhn(capsys):
    from langgame.cli import main

    main(["eval", "exploitability", "--model", "tiny-random", "--game", "kuhn_poker"])
    report = json.loads(capsys.readouterr().out)
    assert report["info_states"] == 12
    assert 0.0 <= report["exploitability"] <= 1.0
    assert report["nash_conv"] == pytest.approx(2 * report["exploitability"], abs=1e-9)
    table = induced_policy(load_game("kuhn_poker"), load_policy("tiny-random"))
    assert np.ptp(table.action_probability_array[:, 1]) > 1e-3  # the prompt matters


# --- populations ----------------------------------------------------------------------------------


RPS = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])


def test_cross_play_of_pure_rps_strategies_is_the_payoff_matrix():
    game = load_game("matrix_rps")
    pure = []
    for a in range(3):
        table = policy_lib.TabularPolicy(game.game)
        table.action_probability_array[:] = np.eye(3)[a]
        pure.append(table)
    m = cross_play_matrix(game, pure, pure)
    assert m.shape == (3, 3, 2) and np.allclose(m[..., 0], RPS) and np.allclose(m[..., 1], -RPS)


def test_meta_nash_on_textbook_matrices():
    x, y = meta_nash(RPS)
    assert np.allclose(x, 1 / 3, atol=1e-9) and np.allclose(y, 1 / 3, atol=1e-9)
    assert population_nash_conv(RPS, x, y) == pytest.approx(0.0, abs=1e-9)
    rock = np.eye(3)[0]
    assert population_nash_conv(RPS, rock, rock) == pytest.approx(2.0)  # as in the full game
    dominated = np.vstack([RPS, RPS[0] - 0.5])  # a fourth row strictly worse than rock
    x, y = meta_nash(dominated)
    assert x[3] == pytest.approx(0.0, abs=1e-9) and np.allclose(x[:3], 1 / 3, atol=1e-9)
    dilemma = np.array([[3.0, 0.0], [5.0, 1.0]])  # prisoner's dilemma: defect (row 1) dominates
    x, y = meta_nash(dilemma, dilemma.T)
    assert np.allclose(x, [0, 1]) and np.allclose(y, [0, 1])
    assert population_nash_conv(dilemma, x, y, dilemma.T) == pytest.approx(0.0)
