"""The SGT against its definition (../shared/specs/sgt4t.md): eager transform, the .pte against eager, the chat
noise mask against the real SmolLM2 tokenizer, the size arithmetic, training, save/load."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import torch

from common.errors import UserError
from models.sgt4t.model import StainedGlassTransform, from_base, load, load_base, save

MAX_SEQ = 128  # the tiny BPE spells the chat template in ~60 tokens


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random Llama (GQA 4:2) as an HF dir: (model, config, family, tokenizer, dir)."""
    from tests.checkpoints import write_tiny

    _, hf_dir, _ = write_tiny("llama", tmp_path_factory.mktemp("sgt_base"), num_attention_heads=4,
                              num_key_value_heads=2)
    return (*load_base(str(hf_dir), max_context_len=MAX_SEQ), hf_dir)


def _randomized(sgt: StainedGlassTransform, seed: int = 0) -> StainedGlassTransform:
    """Heads moved off their init so mu and sigma vary by token (init: mu = 0, sigma constant)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for est in (sgt.mean_estimator, sgt.std_estimator):
            est.head.weight.copy_(torch.randn(est.head.weight.shape, generator=g) * 0.3)
    return sgt


@pytest.fixture(scope="module")
def sgt_dir(base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomized tiny SGT saved with its base's tokenizer, given the Llama 3 chat template (the C++ test chats)."""
    import copy

    from tests.checkpoints import DATA

    model, cfg, family, tok, _ = base
    sgt = _randomized(from_base(model, cfg, MAX_SEQ, base_family=family.name))
    tok = copy.copy(tok)
    tok.chat_template = (DATA / "llama3_chat_template.jinja").read_text(encoding="utf-8")
    return save(sgt, tmp_path_factory.mktemp("sgt") / "sgt", tok)


@pytest.fixture(scope="module")
def sgt_pte(sgt_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """sgt_pte(quantize): the tiny SGT exported by export_sgt with that Linear recipe, made once on first use; the
    quantized ones go through quantize_and_save first (the saved directory exports as it was saved)."""
    from models.sgt4t.export import export_sgt
    from models.sgt4t.quantize_and_save import quantize_and_save

    made: dict[str, Path] = {}

    def make(quantize: str) -> Path:
        if quantize not in made:
            out = tmp_path_factory.mktemp(f"sgt_{quantize}")
            source = sgt_dir if quantize == "fp32" else quantize_and_save(str(sgt_dir), str(out / "q"), quantize)
            made[quantize] = out / "sgt.pte"
            export_sgt(str(source), str(made[quantize]), "fp32" if quantize == "fp32" else None, max_seq_len=MAX_SEQ)
        return made[quantize]

    return make


def _inputs(vocab: int, n: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, n), generator=g)
    noise = torch.rand(1, n, generator=g) < 0.7
    attn = torch.ones(1, n, dtype=torch.long)
    attn[0, -3:] = 0  # padding at the end
    return ids, noise, attn


def _shared(a: torch.Tensor, b: torch.Tensor) -> float:
    """The share of elements two noised outputs (or noises read back from them) have equal. Fresh draws share almost
    none, not none: x + mu + sigma * eps rounds to fp32 in steps of up to 2.4e-5 of eps here, so two draws land on
    the same step in about one run in 70 (CI failed so on 2026-11-28). A seeded or reused draw shares every one."""
    return float((a == b).float().mean())


def test_init_follows_the_spec(base) -> None:
    """Estimator layers start as the base's layer 0, mu at zero, sigma at std_init, bounds as configured."""
    model, cfg, *_ = base
    sgt = from_base(model, cfg, MAX_SEQ, n_layers=2)
    layer0 = model.model.layers[0].state_dict()
    for est in (sgt.mean_estimator, sgt.std_estimator):
        for layer in est.layers:
            assert all(torch.equal(v, layer0[k]) for k, v in layer.state_dict().items())
    ids, noise, attn = _inputs(cfg.vocab_size)
    mu, sigma = sgt.mu_sigma(ids, noise, attn)
    assert torch.equal(mu, torch.zeros_like(mu))
    assert torch.allclose(sigma, torch.full_like(sigma, sgt.cfg.std_init), rtol=1e-5)
    assert torch.equal(sgt.embed_tokens.weight, model.model.embed_tokens.weight)


def test_noise_only_where_both_masks_are_set_and_fresh_every_call(sgt_dir: Path) -> None:
    sgt = load(sgt_dir, MAX_SEQ)
    ids, noise, attn = _inputs(sgt.cfg.base.vocab_size)
    with torch.no_grad():
        a, b = sgt(ids, noise, attn), sgt(ids, noise, attn)
        x = sgt.embed_tokens(ids)
        mu, sigma = sgt.mu_sigma(ids, noise, attn)
    noised = (noise & attn.bool())[0]
    assert torch.equal(a[0, ~noised], x[0, ~noised])  # bit for bit
    assert _shared(a[0, noised], b[0, noised]) < 0.01  # fresh noise every call
    # the noise is x~ - x - mu = sigma * eps
    eps = (a - x - mu) / sigma
    assert torch.allclose(a[0, noised], (x + mu + sigma * eps)[0, noised])
    # a given eps reproduces exactly
    e = torch.randn(x.shape)
    with torch.no_grad():
        assert torch.equal(sgt.transform(x, noise, attn, e), sgt.transform(x, noise, attn, e))


def test_padding_changes_nothing_before_it(sgt_dir: Path) -> None:
    """Causal estimators: (mu, sigma) of the valid prefix do not depend on what follows it or on padding."""
    sgt = load(sgt_dir, MAX_SEQ)
    ids, noise, attn = _inputs(sgt.cfg.base.vocab_size)
    n = int(attn.sum())
    with torch.no_grad():
        full = sgt.mu_sigma(ids, noise, attn)
        prefix = sgt.mu_sigma(ids[:, :n], noise[:, :n], attn[:, :n])
    for f, p in zip(full, prefix, strict=True):
        # float rounding only: CPU GEMMs round differently by the sequence length (relative 2e-6 on a Zen 4 EPYC)
        torch.testing.assert_close(f[:, :n], p, atol=1e-5, rtol=1e-5)


def test_size_report_gives_the_specs_llama_3_1_8b_arithmetic() -> None:
    from common.decoder import ModelConfig
    from models.sgt4t.model import SgtConfig, format_size_report, size_report

    llama8b = ModelConfig(vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, hidden_dim=14336,
                          head_dim=128)
    r = size_report(SgtConfig(base=llama8b))
    assert round(r["embedding"] / 1e6, 1) == 525.3
    assert round(r["estimator_layers"] / 2 / 1e6, 1) == 218.1
    assert round((r["heads"] - 2 * 4096) / 2 / 1e6, 1) == 16.8  # the Linear heads (and each estimator's norm)
    assert round(r["total"] / 1e6) == 995 and round(r["total"] * 2 / 1e9, 2) == 1.99
    assert "995.1M params" in format_size_report(r)
    assert abs(r["pte_8da4w_bytes"] / 1e6 - 2365.8) < 0.5  # the vendor's .pte: 2365.8 MB, the program included


def test_save_load_round_trip(sgt_dir: Path, base) -> None:
    sgt = load(sgt_dir, MAX_SEQ)
    again = save(sgt, sgt_dir.parent / "again")
    assert sgt.cfg == load(again).cfg
    assert all(torch.equal(a, b) for a, b in zip(sgt.state_dict().values(), load(again).state_dict().values(), strict=True))


def test_quantize_and_save_loads_as_quantized_in_memory(sgt_dir: Path, tmp_path: Path) -> None:
    """quantize_and_save's directory loads to the SGT quantized in memory by the same recipe, bit for bit; it is not
    quantized twice, and export refuses another recipe for it."""
    from common.quant import preset, quantize_model
    from models.sgt4t.export import export_sgt
    from models.sgt4t.quantize_and_save import quantize_and_save

    saved = load(quantize_and_save(str(sgt_dir), str(tmp_path / "q"), "8da4w"), MAX_SEQ)
    ref = load(sgt_dir, MAX_SEQ)
    quantize_model(ref, preset("8da4w", 32))
    ids, noise, attn = _inputs(ref.cfg.base.vocab_size)
    with torch.no_grad():
        for a, b in zip(saved.mu_sigma(ids, noise, attn), ref.mu_sigma(ids, noise, attn), strict=True):
            assert torch.equal(a, b)
    assert (tmp_path / "q" / "model.safetensors").stat().st_size < 0.8 * (sgt_dir / "model.safetensors").stat().st_size
    with pytest.raises(UserError, match="already quantized"):
        quantize_and_save(str(tmp_path / "q"), str(tmp_path / "again"))
    with pytest.raises(UserError, match="already quantized as 8da4w-g32; drop --quantize"):
        export_sgt(str(tmp_path / "q"), str(tmp_path / "x.pte"), "8da8w")


def test_a_gemma_base_is_refused(tmp_path: Path) -> None:
    from tests.checkpoints import write_tiny

    _, hf_dir, _ = write_tiny("gemma3", tmp_path)
    with pytest.raises(UserError, match="an SGT base must be a llama-style decoder"):
        load_base(str(hf_dir))


@pytest.mark.parametrize("quantize", ["fp32", "8da4w"])
def test_pte_matches_eager(sgt_dir: Path, sgt_pte, quantize: str) -> None:
    """mu and sigma from the .pte equal eager's (fp32: 1e-4; 8da4w: against eager 8da4w, bounded by the int8
    dynamic-activation rounding); masked tokens bit for bit; fresh noise per call, standardised N(0, 1)."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    from executorch.runtime import Runtime

    from common.quant import preset, quantize_model

    program = Runtime.get().load_program(str(sgt_pte(quantize)))
    ref = load(sgt_dir, MAX_SEQ)
    quantize_model(ref, preset(quantize, 32))
    ids, noise, attn = _inputs(ref.cfg.base.vocab_size)
    with torch.no_grad():
        mu_e, sigma_e = ref.mu_sigma(ids, noise, attn)
        x = ref.embed_tokens(ids)
    mu, sigma = program.load_method("mu_sigma").execute([ids, noise, attn])
    tol = 1e-4 if quantize == "fp32" else 5e-2 * float(mu_e.abs().max())
    assert (mu - mu_e).abs().max() <= tol and (sigma - sigma_e).abs().max() <= tol
    assert program.load_method("get_n_layers").execute([])[0] == ref.cfg.n_layers

    forward = program.load_method("forward")
    noised = (noise & attn.bool())[0]
    samples = []
    for _ in range(40):
        out = forward.execute([ids, noise, attn])[0]
        assert torch.equal(out[0, ~noised], x[0, ~noised])
        samples.append(((out - x - mu) / sigma)[0, noised])
    eps = torch.stack(samples)
    shared = max(_shared(eps[i], eps[i + 1]) for i in range(len(samples) - 1))
    assert shared < 0.01, shared  # fresh noise every call
    n = eps.numel()
    # standard normal: the sample mean is N(0, 1/n) and the sample variance ~ N(1, 2/n); 5 standard errors
    assert abs(float(eps.mean())) < 5 / math.sqrt(n), float(eps.mean())
    assert abs(float(eps.var()) - 1) < 5 * math.sqrt(2 / n), float(eps.var())


def test_training_lowers_the_loss(base) -> None:
    """A tiny SGT for a few steps at a fixed alpha: the mean loss of the last steps is below the first steps'."""
    from common.calibration import calibration_text
    from models.sgt4t.train import TrainConfig, train

    model, cfg, family, tok, _ = base
    sgt = from_base(model, cfg, 16)
    ids = tok.encode(calibration_text(), add_bos=False)
    history = train(sgt, model, ids, TrainConfig(steps=40, seq_len=16, lr=3e-3, alpha=0.5, ramp=0), progress=False)
    first = sum(h["loss"] for h in history[:8]) / 8
    last = sum(h["loss"] for h in history[-8:]) / 8
    assert last < first, (first, last)
    assert math.exp(-history[-1]["log_sigma"]) > math.exp(-history[0]["log_sigma"])  # the noise grew


def test_the_margin_term_lowers_nearest_neighbour_recovery(base) -> None:
    """--margin: a tiny SGT trained with the nearest-neighbour margin term ends with fewer of its training tokens
    recovered by the attacker (on x~ and on x + mu) than it started with."""
    from common.calibration import calibration_text
    from models.sgt4t.train import TrainConfig, train

    model, cfg, family, tok, _ = base
    sgt = from_base(model, cfg, 16)
    ids = tok.encode(calibration_text(), add_bos=False)
    history = train(sgt, model, ids, TrainConfig(steps=60, seq_len=16, lr=3e-3, alpha=0.5, ramp=0, margin_weight=20),
                    progress=False)
    first = sum(h["recovered"] for h in history[:8]) / 8
    last = sum(h["recovered"] for h in history[-8:]) / 8
    assert last < first - 0.1, (first, last)


def test_nn_margin_is_positive_exactly_where_the_attacker_recovers_the_token() -> None:
    """train.nn_margin against metrics.nearest_neighbour's L2 attack, and its value against brute-force distances."""
    from models.sgt4t.metrics import nearest_neighbour
    from models.sgt4t.train import nn_margin

    g = torch.Generator().manual_seed(0)
    table = torch.randn(50, 8, generator=g)
    ids = torch.randint(0, 50, (200,), generator=g)
    z = table[ids] + torch.randn(200, 8, generator=g) * 0.6
    m = nn_margin(z, ids, table)
    d = torch.cdist(z, table).square()
    brute = d.scatter(-1, ids[:, None], float("inf")).min(-1).values - d.gather(-1, ids[:, None])[:, 0]
    torch.testing.assert_close(m, brute, atol=1e-4, rtol=1e-4)
    assert 0.05 < float((m > 0).float().mean()) < 0.95
    assert int((m > 0).sum()) == round(nearest_neighbour(z, table, ids)[0] * len(ids))


def test_chat_noise_mask_covers_message_content_only(smollm2_gguf: str) -> None:
    """With SmolLM2's real tokenizer and chat template: the noised tokens decode to the messages' content and the
    rest to the template's scaffolding."""
    from common.tokenizer import load_tokenizer
    from models.sgt4t.chat import encode_chat

    tok = load_tokenizer(smollm2_gguf)
    messages = [{"role": "system", "content": "You are a careful assistant."},
                {"role": "user", "content": "My account number is 12345, can you check it?"}]
    ids, mask = encode_chat(tok, messages)
    assert ids == tok.encode(tok.apply_chat_template(messages), add_bos=False)
    noised = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
    kept = tok.decode([i for i, m in zip(ids, mask, strict=True) if not m])
    assert noised.replace(" ", "") == "".join(m["content"] for m in messages).replace(" ", "")
    assert "<|im_start|>" in kept and "assistant" in kept and "12345" not in kept
    _, every = encode_chat(tok, messages, transform_all_tokens=True)
    assert all(every) and len(every) == len(ids)


def test_sgt_of_messages_noises_only_their_content(sgt_dir: Path) -> None:
    """sgt(messages) with the tiny SGT's Llama 3 template: x~ equals the table's rows bit for bit on the template's
    tokens and differs from them on every content token; transform_all_tokens noises them all."""
    from common.tokenizer import load_tokenizer
    from models.sgt4t.inference import sgt_messages

    sgt, tok = load(sgt_dir, MAX_SEQ), load_tokenizer(sgt_dir)
    ids, mask, x = sgt_messages(sgt, tok, [{"role": "user", "content": "My PIN is 4821."}])
    table = sgt.embed_tokens.weight.detach()[torch.tensor(ids)]
    m = torch.tensor(mask)
    assert 0 < int(m.sum()) < len(ids)
    assert torch.equal(x[0, ~m], table[~m]) and (x[0, m] != table[m]).any(-1).all()
    _, every, x_all = sgt_messages(sgt, tok, [{"role": "user", "content": "My PIN is 4821."}], True)
    assert all(every) and (x_all[0] != table).any(-1).all()


def test_bad_inputs_are_one_clear_line(sgt_dir: Path, tmp_path: Path) -> None:
    """A checkpoint without estimator weights, and masks whose shape differs from the input's."""
    import shutil

    from safetensors.torch import load_file, save_file

    from models.sgt4t.inference import transform

    broken = tmp_path / "broken"
    shutil.copytree(sgt_dir, broken)
    state = {k: v for k, v in load_file(broken / "model.safetensors").items() if not k.startswith("std_estimator.")}
    save_file(state, broken / "model.safetensors")
    with pytest.raises(UserError, match=r"model\.safetensors: missing \['std_estimator"):
        load(broken)
    sgt = load(sgt_dir, MAX_SEQ)
    with pytest.raises(UserError, match=r"noise_mask \(1, 2\): expected the input's shape \(1, 3\)"):
        transform(sgt, [1, 2, 3], [True, False])


# --- the C++ side: sgt4t_runner (models/sgt4t/main.cpp) and the llama3 runner's --embeddings ---------------------

CPP_PROMPT = "  My PIN is 4821.  "  # padded: the Llama 3 template trims message content


def _run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300)


def _ints(line: str) -> list[int]:
    return [int(w) for w in line.split()]


@pytest.fixture(scope="module")
def base_pte(base, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny base exported fp32 with --embeddings-input (python -m models.llama3.export), its attention outputs
    scaled up: at HF's init scale the residual stream drowns attention and the greedy tokens ignore the context, so a
    prompt lost between methods (a KV cache not shared) would go unseen."""
    import shutil

    from safetensors.torch import load_file, save_file

    from common.cli import export_main, run_cli
    from models.llama3.model import FAMILY

    sharp = tmp_path_factory.mktemp("sgt_base_sharp") / "hf"
    shutil.copytree(base[4], sharp)
    state = load_file(sharp / "model.safetensors")
    save_file({k: v * 30 if k.endswith("o_proj.weight") else v for k, v in state.items()}, sharp / "model.safetensors",
              metadata={"format": "pt"})
    out = tmp_path_factory.mktemp("sgt_base_pte") / "base.pte"
    assert run_cli(export_main(FAMILY), ["--checkpoint", str(sharp), "--quantize", "fp32", "--embeddings-input",
                                         "--max-seq-len", "32", "--max-context-len", "160", "--output", str(out)]) == 0
    return out


@pytest.mark.parametrize("system", [None, "You keep secrets."])
def test_cpp_noise_mask_matches_python(sgt_dir: Path, smollm2_gguf: str, tmp_path: Path, system: str | None) -> None:
    """sgt4t_runner --print-mask gives encode_chat's ids and noise mask: the tiny tokenizer with the Llama 3 template
    (content trimmed) and SmolLM2's real one with its ChatML template (default system prompt left clear)."""
    from common.tokenizer import load_tokenizer
    from models.sgt4t.chat import encode_chat
    from runners.tests.conftest import build_runner

    runner = build_runner("sgt4t")
    smollm2_dir = load_tokenizer(smollm2_gguf).save(tmp_path / "smollm2")
    for tok_dir, prompt in ((sgt_dir, CPP_PROMPT), (smollm2_dir, "Café au lait, s'il vous plaît — 3 €?")):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        ids, mask = encode_chat(load_tokenizer(tok_dir), messages)
        proc = _run(runner, "--print-mask", "--tokenizer", tok_dir, "--prompt", prompt,
                    *(["--system", system] if system else []))
        assert proc.returncode == 0, proc.stderr
        out_ids, out_mask = proc.stdout.splitlines()
        assert _ints(out_ids) == ids and [bool(b) for b in _ints(out_mask)] == mask
        assert 0 < sum(mask) < len(mask)


def test_cpp_private_chat_matches_python(sgt_dir: Path, sgt_pte, base_pte: Path,
                                         tmp_path: Path) -> None:
    """sgt4t_runner (fp32 SGT .pte -> embeddings -> base .pte) and, from the embeddings it wrote, llama3_runner
    --embeddings generate the Python runtime's greedy tokens from those embeddings; the embeddings are the table's
    rows bit for bit outside the noise mask and noised inside it, fresh on every run."""
    import numpy as np

    from common.runtime import PteModel, generate
    from common.sampler import Sampler
    from common.tokenizer import load_tokenizer
    from models.sgt4t.chat import encode_chat
    from runners.tests.conftest import build_runner

    runner, server = build_runner("sgt4t"), build_runner("llama3")
    ids, mask = encode_chat(load_tokenizer(sgt_dir), [{"role": "user", "content": CPP_PROMPT}])
    sgt = sgt_pte("fp32")
    rows = []
    for i in range(2):
        x_path = tmp_path / f"x{i}.f32"
        proc = _run(runner, "--sgt", sgt, "--model", base_pte, "--prompt", CPP_PROMPT, "--embeddings-out", x_path,
                    "--print-ids", "--max-new-tokens", "6", "--ignore-eos")
        assert proc.returncode == 0, proc.stderr
        assert f"{len(ids)} prompt tokens, {sum(mask)} transformed" in proc.stderr
        x = torch.from_numpy(np.fromfile(x_path, dtype=np.float32)).view(len(ids), -1)
        rows.append(x)
        expected = generate(PteModel(base_pte), ids, Sampler(), 6, ignore_eos=True, embeddings=x[None]).tokens
        assert _ints(proc.stdout) == expected
        served = _run(server, "--model", base_pte, "--embeddings", x_path, "--print-ids", "--max-new-tokens", "6",
                      "--ignore-eos")
        assert served.returncode == 0, served.stderr
        assert _ints(served.stdout) == expected
    table = load(sgt_dir).embed_tokens.weight.detach()[torch.tensor(ids)]
    m = torch.tensor(mask)
    for x in rows:
        assert torch.equal(x[~m], table[~m])
        assert (x[m] != table[m]).any(dim=-1).all()
    assert (rows[0][m] != rows[1][m]).all()  # fresh noise per run

    # the client alone writes the file and stops; bad inputs are one line
    alone = _run(runner, "--sgt", sgt, "--prompt", CPP_PROMPT, "--embeddings-out", tmp_path / "alone.f32")
    assert alone.returncode == 0 and (tmp_path / "alone.f32").stat().st_size == rows[0].numel() * 4, alone.stderr
    (tmp_path / "short.f32").write_bytes(b"\0" * 12)
    cases = [
        ((server, "--model", base_pte, "--embeddings", tmp_path / "short.f32"), "12 bytes, expected float32 rows of"),
        ((runner, "--sgt", base_pte, "--model", base_pte), "a causal_lm v1 program, but this runner drives sgt4t v1"),
        ((runner, "--sgt", sgt, "--model", sgt), "a sgt4t v1 program, but this runner drives causal_lm v1"),
    ]
    for argv, message in cases:
        proc = _run(*argv)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    usage = _run(runner, "--sgt", sgt, "--prompt", CPP_PROMPT)  # nowhere for the embeddings to go
    assert usage.returncode == 2 and "error: --model (the base model's .pte" in usage.stderr, usage.stderr
