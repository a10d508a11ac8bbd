"""gpu.md: the GPU suite's results (gpu.json's dict) as markdown: a header on the card and the
toolchain, a table per section measured so far, then whatever was skipped or failed."""

from __future__ import annotations

import math
from typing import Any

from harness import markdown_table


def fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return spec.format(value)


def cell(part: dict[str, Any], key: str, spec: str) -> str:
    return fmt(part.get(key), spec) if part.get("status") == "ok" else part.get("status", "–")


COMPARE_HEADER = ["", "ours", "nanoGPT", "ours / nanoGPT"]
RATIOS = ("ms_per_iter", "tokens_per_sec")  # the rows where ours / nanoGPT means something


def compare(ours: dict[str, Any], nano: dict[str, Any], rows: list[tuple[str, str, str]]) -> list[list[str]]:
    """Table rows (label, key, format) with ours and nanoGPT side by side."""
    lines = []
    for label, key, spec in rows:
        ratio = "–"
        if key in RATIOS and ours.get("status") == nano.get("status") == "ok" and ours.get(key) and nano.get(key):
            ratio = f"{ours[key] / nano[key]:.2f}"
        lines.append([label, cell(ours, key, spec), cell(nano, key, spec), ratio])
    return lines


def render(results: dict[str, Any]) -> str:
    """gpu.md: a table per section measured so far, then whatever was skipped or failed."""
    parts = [render_header(results)]
    for name, part in (
        ("shakespeare_char", render_a),
        ("gpt2_step", render_c),
        ("sampling", render_d),
        ("time_to_loss", render_b),
        ("memory", render_e),
    ):
        if results.get(name, {}).get("status") == "ok":
            parts.append(part(results[name]))
    parts.append(render_problems(results))
    return "\n\n".join(p for p in parts if p) + "\n"


def render_header(results: dict[str, Any]) -> str:
    suite, tool = results["suite"], results.get("toolchain", {})
    lines = [
        f"# GPU suite: {tool.get('device_name', 'device unknown')}",
        "",
        f"torch {tool.get('torch', '?')}, CUDA {tool.get('cuda', '-')}, {tool.get('machine', '')}; started {suite['started']}, "
        f"{suite.get('elapsed_s', 0):.0f} s of a {suite['budget_s']:.0f} s budget{'' if suite['finished'] else ' (unfinished)'}; "
        f"version {suite.get('version') or 'unknown'}.",
    ]
    if suite["smoke"]:
        lines += ["", "**Smoke run: CPU, tiny sizes, no compile. The numbers only show that every path runs.**"]
    if "aborted" in suite:
        lines += ["", f"**Aborted: {suite['aborted']}.**"]
    if tool.get("status") == "ok" and "device_name" in tool:
        peak = fmt(tool.get("peak_flops") and tool["peak_flops"] / 1e12, "{:.3g}")
        compiled = fmt(tool.get("compile_s"), "{:.1f} s") + (f" ({tool['compile_error']})" if "compile_error" in tool else "")
        lines += [
            "",
            f"Peak for MFU: {peak} TFLOPS ({tool.get('peak_flops_dtype')}); bf16 {tool.get('bf16_supported')}; flash SDP "
            f"enabled {tool.get('flash_sdp_enabled')}, runs {tool.get('flash_attention_runs', '-')}; compiling a small function {compiled}.",
        ]
    return "\n".join(lines)


def render_a(a: dict[str, Any]) -> str:
    h, ours = a["hyperparameters"], a["ours"]
    rows = compare(
        ours,
        a["nanogpt"],
        [
            ("ms/iter (median of the last 80%)", "ms_per_iter", "{:.2f}"),
            ("tokens/s", "tokens_per_sec", "{:,.0f}"),
            ("launch to first logged iteration", "first_iter_s", "{:.1f} s"),
            (f"val loss at iter {a['iters']}", "val_loss", "{:.4f}"),
            ("MFU vs this card's peak", "mfu_device", "{:.1%}"),
            ("MFU vs A100 312 TFLOPS (nanoGPT's basis)", "mfu_a100", "{:.1%}"),
            ("whole command", "wall_s", "{:.1f} s"),
        ],
    )
    note = "nanoGPT's first logged iteration follows its evaluation at iter 0."
    if ours.get("status") == "ok":
        note += f" Ours under TORCH_LOGS=recompiles,graph_breaks: {ours['recompiles']} recompile(s), {ours['graph_breaks']} graph break line(s)."
    title = (
        f"## (a) shakespeare_char: {a['iters']} iterations, batch {h['batch_size']} x {h['block_size']}, "
        f"{h['n_layer']}/{h['n_head']}/{h['n_embd']}, {a['dtype']}, compile {a['compile']}"
    )
    return "\n".join([title, "", markdown_table(COMPARE_HEADER, rows), "", note])


def render_c(c: dict[str, Any]) -> str:
    s = c["shape"]
    rows = [
        ("ms/iter", "ms_per_iter", "{:.2f}"),
        ("tokens/s", "tokens_per_sec", "{:,.0f}"),
        ("MFU vs this card's peak", "mfu_device", "{:.1%}"),
        ("MFU vs A100 (nanoGPT's basis)", "mfu_a100", "{:.1%}"),
        ("launch to first iteration", "first_iter_s", "{:.1f} s"),
    ]
    table = []
    for key, name in (("compile", "compiled"), ("no_compile", "not compiled")):
        table += compare(c[key]["ours"], c[key]["nanogpt"], [(f"{name}: {label}", k, spec) for label, k, spec in rows])
    title = f"## (c) GPT-2 training step: {s['n_layer']} layers x {s['n_embd']}, batch {s['batch_size']} x {s['block_size']}, {c['dtype']}"
    return "\n".join([title, "", markdown_table(COMPARE_HEADER, table)])


def render_d(d: dict[str, Any]) -> str:
    header = ["batch", "KV cache tokens/s", "first token", "naive tokens/s", "KV / naive"]
    rows = [
        [
            r["batch"],
            f"{r['kv_tokens_per_s']:,.0f}",
            f"{r['kv_first_token_ms']:.1f} ms",
            f"{r['naive_tokens_per_s']:,.0f}",
            f"{r['kv_over_naive']:.1f}x",
        ]
        for r in d["rows"]
    ]
    g = d["greedy"]
    return "\n".join(
        [
            f"## (d) Sampling: {d['model']}, {d['tokens']} new tokens, {d['device']} {d['dtype']}, window {d['window']}",
            "",
            markdown_table(header, rows, align="rrrrr"),
            "",
            f"Greedy decoding, KV cache against naive: {'identical' if g['identical'] else 'different'} "
            f"({g['matching_leading_tokens']} of {g['tokens']} leading tokens match). Checkpoint: {d['checkpoint']}.",
        ]
    )


def render_b(b: dict[str, Any]) -> str:
    if b["reached"]:
        reached = (
            f"reached {fmt(b['reached_s'], '{:.1f} s')} after launch, at iter {b['reached_iter']} "
            f"({b['reached_train_s']:.1f} s on the trainer's clock)"
        )
    else:
        reached = "not reached" if b["reached"] is False else "not set (smoke)"
    shortened = f" (shortened from {b['shortened_from_s']:.0f} s)" if b["shortened_from_s"] else ""
    return (
        f"## (b) Time to val loss {b['target'] or '(no target)'}: experiment=shakespeare_char_fast, "
        f"time budget {b['time_budget_s']} s{shortened}\n\n"
        f"Target {reached}; final val loss {fmt(b['final_val_loss'], '{:.4f}')} after {b['iters']} iterations; "
        f"whole command {b['wall_s']:.1f} s."
    )


def render_e(e: dict[str, Any]) -> str:
    rows = [[r["run"], fmt(r["allocator_peak_mb"], "{:,.0f}"), fmt(r["nvidia_smi_mb"], "{:,.0f}")] for r in e["rows"]]
    return "## (e) Peak memory\n\n" + markdown_table(["run", "allocator peak (MiB)", "nvidia-smi above idle (MiB)"], rows)


def render_problems(results: dict[str, Any]) -> str:
    problems: list[str] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            if node.get("status") in ("failed", "skipped"):
                problems.append(f"- {'.'.join(path)}: {node['status']}: {node.get('reason') or node.get('error')}")
            for key, value in node.items():
                walk(value, (*path, key))

    walk(results, ())
    return "\n".join(["## Not measured", "", *problems]) if problems else ""
