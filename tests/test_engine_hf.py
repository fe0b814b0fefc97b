"""HF transformers `BitNetForCausalLM` (relu², per-token int8 activations) against the engine's per-token profile.

The HF model is built in the test from a generated I2_S fixture: ternary weights decoded by the test's own float64
reference reader (not the engine), loaded into offline `AutoBitLinear` modules (`y = ActQuant(x) · Wᵀ · weight_scale`),
and run in float64. HF's RMSNorm computes in float32 internally, so the two differ by float rounding, which the
int8 quantizer can amplify; the bound is NMSE <= 1e-6 plus identical greedy tokens.
"""

from __future__ import annotations

import numpy as np
import pytest

from test_engine_float64_ref import RefModel, nmse

pytestmark = pytest.mark.hf
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPT = [5, 77, 300, 12, 9, 401, 250, 33, 2, 140, 18, 64]


def _hf_model(path):
    from transformers import BitNetConfig, BitNetForCausalLM, BitNetQuantConfig
    from transformers.integrations.bitnet import replace_with_bitnet_linear

    ref = RefModel(path)
    assert ref.arch == "bitnet-b1.58" and ref.act == "relu2"
    cfg = BitNetConfig(
        vocab_size=ref.embd.shape[0], hidden_size=ref.hidden, intermediate_size=ref.layers[0][0]["ffn_gate"].n_out,
        num_hidden_layers=ref.n_layers, num_attention_heads=ref.n_heads, num_key_value_heads=ref.n_kv,
        hidden_act="relu2", max_position_embeddings=512, rms_norm_eps=ref.eps, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": ref.theta}, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    model = BitNetForCausalLM(cfg)
    replace_with_bitnet_linear(model, modules_to_not_convert=["lm_head"],
                               quantization_config=BitNetQuantConfig(linear_class="autobitlinear",
                                                                     quantization_mode="offline"))
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}  # fmt: skip
    norms = {"attn_norm": "input_layernorm", "attn_sub_norm": "self_attn.attn_sub_norm",
             "ffn_norm": "post_attention_layernorm", "ffn_sub_norm": "mlp.ffn_sub_norm"}  # fmt: skip
    t = lambda a: torch.tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    sd = {"model.embed_tokens.weight": t(ref.embd), "model.norm.weight": t(ref.out_norm), "lm_head.weight": t(ref.head)}
    for i, (lin, nm) in enumerate(ref.layers):
        p = f"model.layers.{i}."
        for g, h in names.items():
            sd[p + h + ".weight"] = t(lin[g].tern)
            sd[p + h + ".weight_scale"] = t([lin[g].scale])
        for g, h in norms.items():
            sd[p + h + ".weight"] = t(nm[g])
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    model.tie_weights()
    return model.double().eval()


def test_hf_bitnet_agrees_with_the_per_token_engine(fixture_model) -> None:
    from bitnet.model import GenerationConfig, load_model

    path = fixture_model(size="tiny", fmt="i2_s", arch="bitnet-b1.58", seed=5)
    model = _hf_model(path)
    with torch.no_grad():
        hf = model(torch.tensor([PROMPT])).logits[0].numpy()
    engine = load_model(path, profile="per-token")
    ours = engine.eval_logits_all_positions(PROMPT)
    assert nmse(ours, hf) <= 1e-6
    assert (ours.argmax(1) == hf.argmax(1)).all()
    with torch.no_grad():
        hf_tokens = model.generate(torch.tensor([PROMPT[:4]]), max_new_tokens=16, do_sample=False,
                                   eos_token_id=None, pad_token_id=0)[0, 4:].tolist()
    ours_tokens = list(engine.generate(PROMPT[:4], GenerationConfig(max_tokens=16, stop_on_eos=False)))
    assert ours_tokens == hf_tokens
