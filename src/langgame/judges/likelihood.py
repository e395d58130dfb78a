"""Target likelihood: how likely a fixed model is to answer a chat with a given target reply.

score = exp(mean_t log p(target_t | chat, target_<t)), the geometric-mean per-token probability
of the target under the model, in (0, 1]. As an attacker's reward it is the target loss of GCG
(Zou et al. 2023) and AdvPrompter seen from the attacker's side: a dense measure of how close a
prompt comes to eliciting the target, where an exact judge (did the reply leak?) is almost
always 0.

prompts: chats (TRL's conversational form: lists of {"role", "content"} with roles system, user,
assistant) or strings (one user message). completions: the target replies. The chat and target
are rendered with the model's own template as a player sees them (game.render); the target's
end-of-turn token is not scored.
"""

from __future__ import annotations

import torch

from langgame.data.prepare import ROLES
from langgame.game import Message, Turn, render
from langgame.judges.base import JudgeError, Score, check_batch, text_of
from langgame.models import Policy, load_policy
from langgame.objective import collate, policy_forward


def chat_messages(prompt, target: str, where: str) -> list[Message]:
    """A chat (or a string, one user message) followed by the target as the assistant's turn."""
    chat = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    messages = []
    for i, m in enumerate(chat):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            raise JudgeError(f"judge 'likelihood': {where}, message {i}: role {role!r} is not one of {', '.join(ROLES)}")
        messages.append(Message(role, Turn(ROLES[role], str(m.get("content", ""))), i))
    return messages + [Message("assistant", Turn(2, target), len(chat))]


class TargetLikelihood:
    """exp(mean log-prob) of each completion (the target) after its prompt, under a fixed policy.

    policy: a Policy (scored as it is: in eval mode, without gradients) or a spec for load_policy.
    """

    def __init__(self, policy: Policy | str = "smollm2-135m-instruct", batch_size: int = 16):
        self.policy = load_policy(policy) if isinstance(policy, str) else policy
        self.batch_size = batch_size
        self.__name__ = "likelihood"

    @torch.no_grad()
    def __call__(self, prompts, completions, **columns) -> list[Score]:
        n = check_batch(prompts, completions)
        tok, model = self.policy.tokenizer, self.policy.model
        rendered = []
        for i, (p, c) in enumerate(zip(prompts, completions)):
            target = text_of(c)
            if not target.strip():
                raise JudgeError(f"judge 'likelihood': sample {i}: the target completion is empty")
            messages = chat_messages(p, target, f"sample {i}")
            rendered.append((render(messages, tok, self.policy.eot_token), messages[-1].index))
        was_training = model.training
        model.eval()
        scores: list[Score] = []
        try:
            for start in range(0, n, self.batch_size):
                chunk = rendered[start : start + self.batch_size]
                batch = collate([r for r, _ in chunk], tok.pad_token_id)
                last = torch.tensor([index for _, index in chunk])[:, None]
                where = (batch.turn == last) & (batch.ids[:, 1:] != self.policy.eot_id)
                device = self.policy.device
                with self.policy.autocast(), self.policy.activated():
                    logp = policy_forward(model, batch.ids.to(device), batch.attention.to(device), where.to(device)).logp.cpu()
                scores += torch.exp((logp * where).sum(1) / where.sum(1)).tolist()
        finally:
            model.train(was_training)
        return scores
