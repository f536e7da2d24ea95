"""What a reader of a report must know of the device behind its figures: the device card (what the
device said of itself, its state around the timed runs, the runtimes, threads and execution precisions
that ran) and the notes a row needs (e.g. a float model that ran in bf16). The drift and run reports
both show them, in Markdown and HTML.
"""

from __future__ import annotations

import html

ABSENT = "not exposed by the device"
REDUCED = ("bf16", "f16")  # execution precisions below the fp32 an fp32 or int8 artifact asks for


def precision_note(precision: str, exec_precision: str | None, runtime: str | None, setting: str = "default") -> str | None:
    """A float model computed below fp32 because the runtime chose it: a reader of an agreement figure
    must know (OpenVINO computes fp32 models in bf16 on CPUs with native bf16 unless told otherwise)."""
    if exec_precision not in REDUCED or precision == "fp16":
        return None
    why = f"{runtime or 'the runtime'}'s default on this CPU" if setting == "default" else f"--exec-precision {setting}"
    return f"ran in {exec_precision}: {why}"


def _cores(state: dict) -> str:
    cores = state.get("cpus") or []
    governors = sorted({c["governor"] for c in cores if c["governor"]})
    now = [c["cur_mhz"] for c in cores if c["cur_mhz"] is not None]
    low = [c["min_mhz"] for c in cores if c["min_mhz"] is not None]
    high = [c["max_mhz"] for c in cores if c["max_mhz"] is not None]
    frequency = (f"{min(now):.0f}-{max(now):.0f} MHz now (range {min(low):.0f}-{max(high):.0f})"
                 if now and low and high else ABSENT)
    return f"governor {'/'.join(governors) or ABSENT}; {frequency}"


def _temperatures(state: dict) -> str:
    zones = [z for z in state.get("thermal_zones") or [] if z["temp_c"] is not None]
    return ", ".join(f"{z['type']} {z['temp_c']:.1f} °C" + (f" (throttles at {z['throttles_at_c']:.0f})"
                                                           if z["throttles_at_c"] else "") for z in zones) or ABSENT


def _throttling(state: dict) -> str:
    parts = []
    if state.get("pi_throttled") is not None:
        parts.append(f"Raspberry Pi firmware {state['pi_throttled']}")
    if state.get("android_thermal_status") is not None:
        parts.append(f"Android thermal status {state['android_thermal_status']}")
    return ", ".join(parts) or ABSENT


def card_entries(card: dict) -> list[tuple[str, str]]:
    """(label, text) of a device card: every field, "not exposed by the device" where it said nothing."""
    facts = card.get("facts") or {}
    before, after = card.get("state_before"), card.get("state_after")
    entries = [("URL", card.get("url") or "-"),
               ("CPU", " ".join(str(facts[k]) for k in ("machine", "cpu") if facts.get(k)) or ABSENT),
               ("board", facts.get("model") or ABSENT), ("cores", str(facts.get("cores") or ABSENT)),
               ("OS", facts.get("os") or ABSENT), ("Python", facts.get("python") or ABSENT),
               ("emulated", f"yes, by qemu-user on {facts.get('kernel_machine')}: ARM numerics, no latency"
                if facts.get("emulated") else "no")]
    if before is not None:
        entries += [("cores used", ",".join(map(str, [c["cpu"] for c in before.get("cpus") or []])) or ABSENT),
                    ("frequency", _cores(before) + (f" -> {_cores(after)} after" if after and _cores(after) != _cores(before) else "")),
                    ("temperature", _temperatures(before) + (f" -> {_temperatures(after)} after"
                                                             if after and _temperatures(after) != _temperatures(before) else "")),
                    ("throttling", _throttling(after or before)),
                    ("load average", " ".join(f"{x:.2f}" for x in before["load_average"]) if before.get("load_average") else ABSENT)]
    else:
        entries.append(("state", "no benchmark ran here: no state read"))
    entries += [("threads", ", ".join(map(str, card.get("threads") or [])) or "-"),
                ("runtimes", ", ".join(f"{name} {version}" for name, version in sorted((card.get("runtimes") or {}).items())) or "-"),
                ("execution precision", ", ".join(f"{what}: {precision}" for what, precision in
                                                  (card.get("exec_precisions") or {}).items()) or "-")]
    return entries


def card_markdown(name: str, card: dict) -> list[str]:
    return [f"### {name}", ""] + [f"- {label}: {text}" for label, text in card_entries(card)] + [""]


def card_html(name: str, card: dict) -> str:
    rows = "".join(f"<dt>{html.escape(label)}</dt><dd>{html.escape(text)}</dd>" for label, text in card_entries(card))
    return (f"<section class='device-card' data-device='{html.escape(name)}'><h3>{html.escape(name)}</h3>"
            f"<dl>{rows}</dl></section>")
