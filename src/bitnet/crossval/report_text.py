"""Human renderings of parity results (the JSON output carries the same numbers)."""

from __future__ import annotations

from typing import Any


def per_token_text(res: dict[str, Any]) -> str:
    """The seed's per-position lines (`✓|✗ t=i cosine=… l2=…`), extended with NMSE, KL and top-k agreement."""
    lines: list[str] = []
    tok = res["tokenization"]
    if tok["match"]:
        lines.append(f"✓ tokenization: {len(tok['ours'])} tokens identical {tok['ours'][:16]}"
                     f"{' …' if len(tok['ours']) > 16 else ''}")  # fmt: skip
    else:
        i = tok["first_mismatch_index"]
        lines.append(f"✗ tokenization differs at index {i}: ours={tok['ours_at_mismatch']} ref={tok['ref_at_mismatch']}")
        lines.append(f"  ours: {tok['ours']}")
        lines.append(f"  ref:  {tok['ref']}")
    lg = res.get("logits")
    if lg:
        tol = lg["cos_tol"]
        for p in lg["positions"]:
            mark = "✓" if p["cosine"] >= tol else "✗"
            lines.append(f"{mark} t={p['pos']} cosine={p['cosine']:.6f} l2={p['l2']:.2e} max_abs={p['max_abs']:.2e} "
                         f"nmse={p['nmse']:.2e} kl={p['kl']:.2e} top1={'=' if p['top1'] else '≠'} "
                         f"top5={p['top5']:.1f}")  # fmt: skip
        lines.append(f"Max absolute diff: {lg['max_abs']:.2e}; NMSE (all positions): {lg['nmse']:.3e} "
                     f"(tol {lg['nmse_tol']:g}); mean KL: {lg['mean_kl']:.3e}")  # fmt: skip
        fd = lg["first_divergent_position"]
        lines.append("no divergent position" if fd is None else f"first divergent position: {fd}")
    g = res.get("greedy")
    if g:
        if g["match"]:
            lines.append(f"✓ greedy: {len(g['ref'])} tokens identical {g['ref']}")
        else:
            lines.append(f"✗ greedy streams differ at step {g['first_mismatch_step']}")
            lines.append(f"  ours: {g['ours']}")
            lines.append(f"  ref:  {g['ref']}")
            if "margin_ref" in g:
                lines.append(f"  at that step the reference prefers its token by {g['margin_ref']:.3g}, ours by "
                             f"{g['margin_ours']:.3g}; logits differ by up to {g['max_abs_diff_at_step']:.3g}"
                             + (" (a near-tie)" if g["margin_ref"] <= g["max_abs_diff_at_step"] else ""))
    eng, ref = res.get("engine", {}), res.get("reference", {})
    lines.append(f"ours: profile={eng.get('profile')} ffn_act={eng.get('ffn_act')} kv={eng.get('kv_dtype')}; "
                 f"reference: {ref.get('flavor')} {ref.get('revision')}")  # fmt: skip
    lines.append(f"verdict: {'AGREE' if res['ok'] else 'DIVERGE'} ({res['verdict']})")
    return "\n".join(lines)
