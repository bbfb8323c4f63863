"""Train the demo TinyLLaVA (`npm run train-demo`): a tiny SigLIP tower, the mlp2x_gelu connector
and a tiny Qwen2 with its own BPE tokenizer, on the synthetic visual QA of synth.py, with the
paper's two stages, saved as a TinyLLaVA_Factory checkpoint (the layout the exporter reads).

- Stage 0 (the tower's own pretraining, which SigLIP has before TinyLLaVA uses it): the tower
  learns to tell the scene's attributes apart through a small attention-pooling probe (shape,
  colours, count, place, size), discarded afterwards. Measured: learnt through the LLM's loss
  alone, a random tower picks up the colours only (shape, count and place stayed at chance
  after 4000 steps), while the probe's direct signal teaches it in minutes.
- Stage 1 (pretrain): captions only; the tower is frozen. The paper trains the connector alone
  on top of a pretrained LLM; ours is random, so the LLM is trained too.
- Stage 2 (fine-tune): every question kind, 1-4 turns per conversation; the connector and the LLM
  are trained, and the tower too at a lower learning rate (the Factory's tune_type_vision_tower
  "full"; --freeze-tower-in-stage2 gives the paper's base recipe). An answer probe (AnswerProbe,
  discarded afterwards) names the asked and the seen colour and shape from the LLM's layer 2
  where a yes/no answer is predicted: without it the verdict stayed at chance.

Deterministic given --seed (and the thread count, fixed with --threads): the images come from
numpy generators seeded from it, torch from torch.manual_seed. The held-out check at the end uses
synth.held_out(seed + 1000), a stream the training never draws from.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

# One BLAS thread: torch's own intra-op threads do the work (OpenBLAS's pthreads on top of
# them only contend on a shared 2-core machine). Set before torch loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import DynamicCache  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synth as S  # noqa: E402

from tinyllava_export.fixtures import factory_original as F  # noqa: E402
from tinyllava_export.fixtures.tokenizers import train_tokenizer  # noqa: E402

SYSTEM = F.SYSTEM
EOS = "<|endoftext|>"  # qwen2_base's EOS text
VOCAB_SIZE = 512

# Patch 6 on 48 px: 64 patches. Measured with the probe after 600 steps: shape 0.83 (patch 8:
# 0.58; a 4th layer did not help).
TOWER = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
             image_size=S.IMAGE_SIZE, patch_size=6)
# The Factory reads hidden_states[-2]: the last tower layer is never used (nor trained).
TOWER_LAYERS_USED = TOWER["num_hidden_layers"] - 1
TEXT = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0,
            tie_word_embeddings=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="npm run train-demo --", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(".cache/train-demo"),
                    help="work directory: tokenizer, tower and LLM configs, checkpoint/ (default .cache/train-demo)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared 2-core machine 2 threads measured slower)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--stage1-steps", type=int, default=400)
    ap.add_argument("--stage2-steps", type=int, default=1600)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--stage0-steps", type=int, default=3000, help="tower pretraining steps")
    ap.add_argument("--stage0-batch", type=int, default=64)
    ap.add_argument("--freeze-tower-in-stage2", action="store_true",
                    help="stage 2 trains the connector and the LLM only (the paper's base recipe)")
    ap.add_argument("--stage3-steps", type=int, default=0,
                    help="steps of a further fine-tune with --kind-weights (default 0: none)")
    ap.add_argument("--kind-weights", default="yesno=6",
                    help="stage 3: question kinds' sampling weights, KIND=W,... (others 1)")
    ap.add_argument("--stage3-lr", type=float, default=1e-3)
    ap.add_argument("--answer-probe-weight", type=float, default=1.0,
                    help="stages 2-3: weight of the yes/no answer probe's loss (0: no probe)")
    ap.add_argument("--answer-probe-layer", type=int, default=2,
                    help="the LLM layer whose output the answer probe reads")
    ap.add_argument("--init-from", type=Path, metavar="CHECKPOINT",
                    help="start from this checkpoint's weights (an earlier run with the same seed: same tokenizer)")
    ap.add_argument("--tower-lr-scale", type=float, default=0.3, help="stage 2: the tower's learning rate, times --lr")
    ap.add_argument("--pool", type=int, default=4096, help="images drawn per pool")
    ap.add_argument("--pool-steps", type=int, default=400, help="steps before a fresh pool is drawn")
    ap.add_argument("--eval-count", type=int, default=400, help="held-out questions checked at the end")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="time N steps of each stage and exit")
    args = ap.parse_args(argv)
    args.kind_weights = {k: float(w) for k, w in (kv.split("=") for kv in args.kind_weights.split(",") if kv)}
    return args


# --------------------------------------------------------------------------------------------
# tokenizer and model


def corpus(path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = [SYSTEM] * 20
    for text in S.all_texts():
        lines.append(text)
    for _ in range(2000):  # whole turns, so that the template's own words get merged too
        scene = S.random_scene(rng)
        q, a = S.ask(scene, S.KINDS[rng.integers(len(S.KINDS))] if scene.count == 1 else "colour", rng)
        lines.append(f"{SYSTEM} USER: {q} ASSISTANT: {a}")
    path.write_text("\n".join(lines) + "\n")


def build(out: Path, seed: int):
    """The LLM "repo" (config + tokenizer), the tower "repo" (config + processor) and the Factory
    model built from them, as TinyLLaVA_Factory's train.py builds it."""
    llm_dir, tower_dir = out / "qwen2-demo-llm", out / "siglip-demo-tower"
    for d in (llm_dir, tower_dir):
        shutil.rmtree(d, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    corpus(out / "corpus.txt")
    tok = train_tokenizer("qwen2", llm_dir, vocab_size=VOCAB_SIZE, corpus=out / "corpus.txt")
    transformers.Qwen2Config(**TEXT, vocab_size=len(tok)).save_pretrained(str(llm_dir))
    transformers.SiglipVisionConfig(**TOWER).save_pretrained(str(tower_dir))
    transformers.SiglipImageProcessor(size={"height": S.IMAGE_SIZE, "width": S.IMAGE_SIZE}).save_pretrained(str(tower_dir))
    config = F.TinyLlavaConfig(llm_model_name_or_path=str(llm_dir.resolve()),
                               vision_model_name_or_path=str(tower_dir.resolve()),
                               connector_type="mlp2x_gelu", tokenizer_model_max_length=2048,
                               tokenizer_padding_side="right")
    torch.manual_seed(seed)
    model = F.TinyLlavaForConditionalGeneration(config)
    model.tie_weights()
    model.config.pad_token = model.tokenizer.pad_token
    model.config.pad_token_id = model.tokenizer.pad_token_id
    return model, tok


def pixels(images_u8: torch.Tensor) -> torch.Tensor:
    """SiglipImageProcessor on images already at the tower's size: rescale, mean/std 0.5."""
    return (images_u8.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5


def tower_features(model, px: torch.Tensor) -> torch.Tensor:
    """The tower's part of model.encode_images without the unused last layer: hidden_states[-2],
    patch strategy (the Factory drops the first position)."""
    vm = model.vision_tower._vision_tower.vision_model
    h = vm.embeddings(px)
    for layer in vm.encoder.layers[:TOWER_LAYERS_USED]:
        h = layer(h, None)[0]
    return h[:, 1:]


def encode_images(model, px: torch.Tensor) -> torch.Tensor:
    return model.connector(tower_features(model, px))


# --------------------------------------------------------------------------------------------
# data


class Tokens:
    """Token ids of the pieces a conversation is made of, each tokenized once."""

    def __init__(self, tok):
        self.tok = tok
        self.cache: dict[str, list[int]] = {}
        self.eos = tok.convert_tokens_to_ids(EOS)
        # chunk 0 of tokenizer_image_token: everything before "<image>"
        self.prefix = self(SYSTEM + " USER: ")

    def __call__(self, text: str) -> list[int]:
        ids = self.cache.get(text)
        if ids is None:
            ids = self.cache[text] = list(self.tok(text).input_ids)
        return ids

    def conversation(self, turns):
        """ids after the image, the loss mask (answers and their EOS) of [(q, a), ...] and where
        each answer starts."""
        ids, mask, starts = [], [], []
        for i, (q, a) in enumerate(turns):
            q_ids = self(("\n" if i == 0 else "USER: ") + q + " ASSISTANT:")
            a_ids = self(" " + a) + [self.eos]
            ids += q_ids
            starts.append(len(ids))
            ids += a_ids
            mask += [0] * len(q_ids) + [1] * len(a_ids)
        return ids, mask, starts

    def check(self, rng, n=300):
        """The pieces tokenized apart give the ids of the whole rendered text, as the server
        tokenizes it (chunk after "<image>")."""
        for _ in range(n):
            scene = S.random_scene(rng)
            turns = [S.ask(scene, k, rng) for k in rng.permutation(S.question_kinds(scene))[:3]]
            ids, _, _ = self.conversation(turns)
            text = "".join(("\n" if i == 0 else "USER: ") + q + " ASSISTANT: " + a + EOS for i, (q, a) in enumerate(turns))
            whole = list(self.tok(text).input_ids)
            assert whole == ids, (text, whole, ids)


class Pool:
    """A pool of scenes and their images, drawn afresh every `pool_steps` steps."""

    def __init__(self, seed: int, stage: int, index: int, size: int):
        rng = np.random.default_rng([seed, stage, index])
        self.scenes = [S.random_scene(rng) for _ in range(size)]
        self.images = torch.from_numpy(np.stack([S.render(s, rng) for s in self.scenes]))
        self.rng = np.random.default_rng([seed, stage, index, 1])


def batch(pool: Pool, tokens: Tokens, size: int, stage: int, kind_weights: dict | None = None):
    """pixels, ids, labels, and the answer probe's targets: for each yes/no answer, (row, the
    position whose hidden state predicts the answer, the asked colour and shape, the scene's)."""
    rng = pool.rng
    idx = rng.integers(len(pool.scenes), size=size)
    seqs, probe = [], []
    for row, i in enumerate(idx):
        scene = pool.scenes[i]
        if stage == 1:
            turns = [S.ask(scene, "caption", rng)]
        else:
            # Several turns share one image's tokens: more answers per step for the same compute.
            n = int(rng.choice([1, 2, 3, 4], p=[0.15, 0.2, 0.3, 0.35]))
            if kind_weights:  # weighted, with replacement (a yes/no question may come twice)
                allowed = S.question_kinds(scene)
                w = np.array([kind_weights.get(k, 1.0) for k in allowed])
                kinds = rng.choice(allowed, size=n, p=w / w.sum())
            else:
                kinds = rng.permutation(S.question_kinds(scene))[:n]
            turns = [S.ask(scene, k, rng) for k in kinds]
        ids, mask, starts = tokens.conversation(turns)
        seqs.append((ids, mask))
        for (q, _), kind, start in zip(turns, kinds if stage != 1 else ["caption"], starts):
            if kind == "yesno":
                colour, shape = S.asked(q)
                probe.append((row, start - 1, ATTRIBUTES["colour"].index(colour), S.SHAPES.index(shape),
                              ATTRIBUTES["colour"].index(scene.colour), S.SHAPES.index(scene.shape)))
    longest = max(len(ids) for ids, _ in seqs)
    ids = torch.full((size, longest), tokens.eos, dtype=torch.long)
    labels = torch.full((size, longest), -100, dtype=torch.long)
    for row, (s, m) in enumerate(seqs):
        ids[row, :len(s)] = torch.tensor(s)
        labels[row, :len(s)] = torch.where(torch.tensor(m, dtype=torch.bool), torch.tensor(s), torch.tensor(-100))
    return pixels(pool.images[torch.from_numpy(idx)]), ids, labels, probe


class AnswerProbe(torch.nn.Module):
    """Linear classifiers of the asked colour and shape and the scene's colour and shape, read
    from one LLM layer's hidden state where a yes/no answer is predicted. Stages 2-3 only; not
    part of the model.

    Why: the verdict is an equality test (asked against seen) and neither side alone predicts
    it, so the answer's loss gives the LLM no first-order gradient towards bringing both to the
    answer's position: it sat at ln 2 through every recipe tried (docs/demo-model.md). The
    probe's losses are first order: they teach the layers below it to gather both sides there,
    and the layers above then learn the comparison from the answer's loss. Measured on text
    alone (the scene as words, batch 128): the verdict left chance after ~150 steps and reached
    96% by step 250 with the probe; without it, 50% at step 450.
    """

    TARGETS = (len(S.COLOUR_NAMES), len(S.SHAPES), len(S.COLOUR_NAMES), len(S.SHAPES))

    def __init__(self, width: int, layer: int):
        super().__init__()
        self.layer = layer
        self.heads = torch.nn.ModuleList([torch.nn.Linear(width, n) for n in self.TARGETS])

    def loss(self, hidden_states, offset: int, targets) -> torch.Tensor:
        """targets: batch()'s probe list; positions are in ids, `offset` of them before ids."""
        t = torch.tensor(targets)
        h = hidden_states[self.layer][t[:, 0], offset + t[:, 1]]
        return sum(torch.nn.functional.cross_entropy(head(h), t[:, 2 + j]) for j, head in enumerate(self.heads))


def loss_of(model, tokens: Tokens, px, ids, labels, train_vision: bool, prefix_cache: bool = True,
            probe: AnswerProbe | None = None, probe_targets=()):
    """Next-token loss on the answers, and the answer probe's loss (0 without probe or targets).

    Every sequence starts with the same text (system prompt and "USER: "), whose hidden states
    do not depend on what follows (causal attention): it is run once, batch 1, and its keys and
    values are shared by the batch (prefix_cache; gradients flow through them). Right padding
    needs no attention mask: no real position sees the padding after it, and padding has no loss.
    """
    B = ids.shape[0]
    if train_vision:
        feats = encode_images(model, px)
    else:
        with torch.no_grad():
            feats = tower_features(model, px)
        feats = model.connector(feats)
    lm = model.language_model
    emb = lm.get_input_embeddings()
    prefix = emb(torch.tensor(tokens.prefix))[None]
    rest = torch.cat([feats, emb(ids)], dim=1)
    probing = probe is not None and len(probe_targets) > 0
    if prefix_cache:
        pre = lm.model(inputs_embeds=prefix, use_cache=True).past_key_values
        pre = pre.to_legacy_cache() if hasattr(pre, "to_legacy_cache") else pre
        cache = DynamicCache.from_legacy_cache(tuple((k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1))
                                                     for k, v in pre))
        out = lm.model(inputs_embeds=rest, past_key_values=cache, use_cache=True, output_hidden_states=probing)
        hidden, states, skip = out.last_hidden_state, out.hidden_states, 0
    else:
        x = torch.cat([prefix.expand(B, -1, -1), rest], dim=1)
        out = lm.model(inputs_embeds=x, use_cache=False, output_hidden_states=probing)
        hidden, states, skip = out.last_hidden_state[:, prefix.shape[1]:], out.hidden_states, prefix.shape[1]
    # position feats + t predicts ids[t + 1]
    h = hidden[:, feats.shape[1]:-1]
    target = labels[:, 1:]
    keep = target != -100
    loss = torch.nn.functional.cross_entropy(lm.lm_head(h[keep]), target[keep])
    probe_loss = probe.loss(states, skip + feats.shape[1], probe_targets) if probing else torch.zeros(())
    return loss, probe_loss


# --------------------------------------------------------------------------------------------
# training and the held-out check


def optimizer(params, lr: float, steps: int):
    """AdamW, linear warm-up then cosine decay to 5%. `params`: tensors or parameter groups."""
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, min(100, steps // 10))

    def lr_at(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))) * 0.95 + 0.05

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


# Stage 0's targets: scene attribute -> its values.
ATTRIBUTES = {"shape": S.SHAPES, "colour": S.COLOUR_NAMES, "background": S.COLOUR_NAMES, "count": (1, 2, 3),
              "position": S.POSITION_NAMES + (None,), "size": tuple(S.SIZES)}


def attribute_targets(scenes) -> dict:
    return {a: torch.tensor([vals.index(getattr(s, a)) for s in scenes]) for a, vals in ATTRIBUTES.items()}


class TowerProbe(torch.nn.Module):
    """One learnt query per attribute attends over the tower's features; a linear classifier
    each. Only stage 0 uses it; it is not part of the model."""

    def __init__(self, width: int):
        super().__init__()
        self.queries = torch.nn.Parameter(torch.randn(len(ATTRIBUTES), width) * 0.02)
        self.attn = torch.nn.MultiheadAttention(width, 4, batch_first=True)
        self.heads = torch.nn.ModuleList([torch.nn.Linear(width, len(v)) for v in ATTRIBUTES.values()])

    def forward(self, feats):
        pooled, _ = self.attn(self.queries[None].expand(feats.shape[0], -1, -1), feats, feats)
        return {a: head(pooled[:, i]) for i, (a, head) in enumerate(zip(ATTRIBUTES, self.heads))}


def pretrain_tower(model, args, log):
    steps = args.profile or args.stage0_steps
    probe = TowerProbe(TOWER["hidden_size"])
    params = list(model.vision_tower.parameters()) + list(probe.parameters())
    opt, sched = optimizer(params, args.lr, args.stage0_steps)
    test = Pool(args.seed + 1000, 0, 0, 512)
    test_px, test_t = pixels(test.images), attribute_targets(test.scenes)
    t0, running = time.time(), None
    for step in range(steps):
        if step % args.pool_steps == 0:
            pool = Pool(args.seed, 0, step // args.pool_steps, args.pool)
        idx = pool.rng.integers(len(pool.scenes), size=args.stage0_batch)
        target = attribute_targets([pool.scenes[i] for i in idx])
        logits = probe(tower_features(model, pixels(pool.images[torch.from_numpy(idx)])))
        loss = sum(torch.nn.functional.cross_entropy(logits[a], target[a]) for a in ATTRIBUTES)
        running = _update(opt, sched, params, loss, running)
        if step % 250 == 249 or step == steps - 1:
            with torch.no_grad():
                logits = probe(tower_features(model, test_px))
            acc = {a: round(float((logits[a].argmax(-1) == test_t[a]).float().mean()), 3) for a in ATTRIBUTES}
            log(f"stage 0 step {step + 1}/{steps} loss {running:.4f} probe accuracy {acc} "
                f"({(time.time() - t0) / (step + 1):.3f} s/step)")
    return {"steps": steps, "seconds": round(time.time() - t0, 1), "final_loss": round(running, 4), "probe_accuracy": acc}


def _update(opt, sched, params, loss, running):
    """One optimiser step (gradients clipped to norm 1); returns the loss's running average."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    return loss.item() if running is None else 0.98 * running + 0.02 * loss.item()


def train_stage(model, tokens, args, stage: int, steps: int, log):
    train_vision = stage == 2 and not args.freeze_tower_in_stage2
    for p in model.vision_tower.parameters():
        p.requires_grad_(train_vision)
    probe = AnswerProbe(TEXT["hidden_size"], args.answer_probe_layer) if stage >= 2 and args.answer_probe_weight else None
    params = [p for p in model.parameters() if p.requires_grad]
    tower = {id(p) for p in model.vision_tower.parameters()}
    lr = args.stage3_lr if stage == 3 else args.lr
    groups = [{"params": [p for p in params if id(p) not in tower], "lr": lr}]
    if probe is not None:
        groups.append({"params": list(probe.parameters()), "lr": lr})
        params += list(probe.parameters())
    if train_vision:
        groups.append({"params": list(model.vision_tower.parameters()), "lr": lr * args.tower_lr_scale})
    opt, sched = optimizer(groups, lr, steps)
    model.train()
    pool, t0, running, probe_running = None, time.time(), None, None
    timed = args.profile or steps
    for step in range(timed):
        if step % args.pool_steps == 0:
            pool = Pool(args.seed, stage, step // args.pool_steps, args.pool)
        px, ids, labels, targets = batch(pool, tokens, args.batch, stage, args.kind_weights if stage == 3 else None)
        loss, probe_loss = loss_of(model, tokens, px, ids, labels, train_vision, probe=probe, probe_targets=targets)
        _update(opt, sched, params, loss + args.answer_probe_weight * probe_loss, None)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if probe is not None and targets:
            probe_running = probe_loss.item() if probe_running is None else 0.98 * probe_running + 0.02 * probe_loss.item()
        if step % 100 == 0 or step == timed - 1:
            extra = f" (answer probe {probe_running:.4f})" if probe_running is not None else ""
            log(f"stage {stage} step {step}/{steps} loss {running:.4f}{extra} ({(time.time() - t0) / (step + 1):.3f} s/step)")
        if (stage == 2 and step % 800 == 799 or stage == 3 and step % 200 == 199) and not args.profile:
            model.eval()
            quick = evaluate(model, tokens, args.seed + 1000, 80)
            log(f"  held-out (80) accuracy {quick['accuracy']:.3f} {quick['per_kind']}")
            model.train()
    model.eval()
    done = {"steps": timed, "seconds": round(time.time() - t0, 1), "final_loss": round(running, 4)}
    if probe_running is not None:
        done["answer_probe"] = {"layer": probe.layer, "weight": args.answer_probe_weight, "final_loss": round(probe_running, 4)}
    return done


@torch.no_grad()
def greedy(model, tokens: Tokens, image_u8: np.ndarray, turns, max_new=32) -> str:
    """Greedy answer to the last question of `turns` (earlier turns carry their answers)."""
    ids = tokens.conversation(turns[:-1])[0] if len(turns) > 1 else []
    ids = ids + tokens(("\n" if len(turns) == 1 else "USER: ") + turns[-1][0] + " ASSISTANT:")
    emb = model.language_model.get_input_embeddings()
    feats = encode_images(model, pixels(torch.from_numpy(image_u8)[None]))
    x = torch.cat([emb(torch.tensor(tokens.prefix))[None], feats, emb(torch.tensor(ids))[None]], dim=1)
    out, past = [], None
    for _ in range(max_new):
        r = model.language_model(inputs_embeds=x, past_key_values=past, use_cache=True)
        past = r.past_key_values
        nxt = int(r.logits[0, -1].argmax())
        if nxt == tokens.eos:
            break
        out.append(nxt)
        x = emb(torch.tensor([[nxt]]))
    return tokens.tok.decode(out, skip_special_tokens=True).strip()


def evaluate(model, tokens, seed: int, count: int):
    per_kind: dict[str, list[int]] = {}
    wrong = []
    for img, q, a, kind in S.held_out(seed, count):
        got = greedy(model, tokens, img, [(q, None)])
        per_kind.setdefault(kind, []).append(int(got == a))
        if got != a and len(wrong) < 12:
            wrong.append({"question": q, "answer": a, "got": got})
    total = sum(sum(v) for v in per_kind.values()) / sum(len(v) for v in per_kind.values())
    return {"seed": seed, "count": count, "accuracy": round(total, 4),
            "per_kind": {k: round(sum(v) / len(v), 4) for k, v in per_kind.items()}, "wrong": wrong}


def check_shortcuts(model, tokens):
    """The prefix cache gives the loss of the whole sequence run at once."""
    pool = Pool(99, 2, 0, 16)
    px, ids, labels, targets = batch(pool, tokens, 8, 2)
    assert targets, "the check needs a yes/no answer"
    probe = AnswerProbe(TEXT["hidden_size"], 2)
    with torch.no_grad():
        a = loss_of(model, tokens, px, ids, labels, False, prefix_cache=True, probe=probe, probe_targets=targets)
        b = loss_of(model, tokens, px, ids, labels, False, prefix_cache=False, probe=probe, probe_targets=targets)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-5), (a, b)


def check_encode(model):
    """encode_images (the last layer skipped) equals the Factory's own encode_images."""
    px = pixels(torch.from_numpy(S.held_out(99, 2)[0][0])[None])
    with torch.no_grad():
        assert torch.allclose(encode_images(model, px), model.encode_images(px), atol=1e-5)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    transformers.logging.set_verbosity_error()
    started = time.time()

    def log(msg):
        print(f"[{time.time() - started:7.1f}s] {msg}", flush=True)

    model, tok = build(args.out, args.seed)
    tokens = Tokens(tok)
    tokens.check(np.random.default_rng([args.seed, 99]))
    check_encode(model)
    check_shortcuts(model, tokens)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M parameters, vocabulary {len(tok)}, prefix {len(tokens.prefix)} tokens")
    report = {"command": " ".join(["npm run train-demo --"] + (sys.argv[1:] if argv is None else argv)),
              "seed": args.seed, "threads": args.threads, "batch": args.batch, "parameters": n_params,
              "torch": torch.__version__, "transformers": transformers.__version__}
    if args.init_from:
        from safetensors.torch import load_file
        missing, unexpected = model.load_state_dict(load_file(str(args.init_from / "model.safetensors")), strict=False)
        assert not unexpected and set(missing) <= {"language_model.lm_head.weight"}, (missing, unexpected)
        model.tie_weights()
        report["init_from"] = str(args.init_from)
        log(f"weights from {args.init_from}")
    if args.stage0_steps:
        report["stage0"] = pretrain_tower(model, args, log)
    for stage, steps in ((1, args.stage1_steps), (2, args.stage2_steps), (3, args.stage3_steps)):
        if steps:
            report[f"stage{stage}"] = train_stage(model, tokens, args, stage, steps, log)
    if args.stage3_steps:
        report["stage3"]["kind_weights"] = args.kind_weights
    if args.profile:
        return 0
    report["train_seconds"] = round(time.time() - started, 1)
    report["held_out"] = evaluate(model, tokens, args.seed + 1000, args.eval_count)
    log(f"held-out accuracy {report['held_out']['accuracy']:.4f} {report['held_out']['per_kind']}")
    ckpt = args.out / "checkpoint"
    shutil.rmtree(ckpt, ignore_errors=True)
    model.tie_weights()
    F.save_factory(model, ckpt)
    (ckpt / "train_report.json").write_text(json.dumps(report, indent=1) + "\n")
    log(f"wrote {ckpt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
