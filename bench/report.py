#!/usr/bin/env python3
"""Turns bench/run.sh's raw timings into the markdown section "Builds against BuildKit and
buildah" of docs/benchmarks.md: medians per scenario, mode and tool, kiln's ratios against
BuildKit, buildah and the better of the two, the issue's targets and whether they were met,
the parallelism of the waiting three-stage build and kiln's peak memory on the big context.

Only that section of the document is replaced; other sections (written by other benchmarks)
are kept as they are. Standard library only.
"""

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

SECTION = "## Builds against BuildKit and buildah"
TOOLS = ["kiln", "buildkit", "buildah"]
TOOL_NAMES = {"kiln": "kiln", "buildkit": "BuildKit", "buildah": "buildah"}
SCENARIOS = {
    "small": "small (a few RUN and COPY)",
    "big": "big context",
    "stages-wait": "three stages, waiting",
    "stages-cpu": "three stages, CPU-bound",
    "thirty": "thirty small layers",
}
MODES = {"cold": "cold", "push": "push", "noop": "no-op rebuild", "change": "one file changed"}
# The targets: kiln's time over the better of BuildKit and buildah.
TARGETS = {"cold": 0.8, "push": 0.8, "noop": 0.3, "change": 0.5}
PARALLEL_TARGET = 0.6  # waiting three-stage build: wall time over the sum of its stages
RSS_TARGET_MB = 150


def read_results(path):
    """(scenario, mode, tool) -> {repetition: seconds}"""
    times = defaultdict(dict)
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        scenario, mode, tool, rep, seconds = line.split("\t")
        times[(scenario, mode, tool)][int(rep)] = float(seconds)
    return times


def read_rss(path):
    """(scenario, mode) -> [peak RSS in MB]"""
    rss = defaultdict(list)
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        scenario, mode, _rep, kib = line.split("\t")
        rss[(scenario, mode)].append(int(kib) * 1024 / 1e6)
    return rss


def median(values):
    return statistics.median(values) if values else None


def fmt_s(value):
    return "–" if value is None else f"{value:.2f}"


def fmt_ratio(num, den):
    if num is None or den is None or den == 0:
        return "–"
    return f"{num / den:.2f}×"


def met(ok):
    return "yes" if ok else "**no**"


def main_table(times, tools):
    rows = [
        "| scenario | mode | "
        + " | ".join(f"{TOOL_NAMES[t]} (s)" for t in tools)
        + " | kiln/BuildKit | kiln/buildah | kiln/best | target | met |",
        "|---|---|" + "---:|" * len(tools) + "---:|---:|---:|---:|:-:|",
    ]
    for scenario, scenario_name in SCENARIOS.items():
        for mode, mode_name in MODES.items():
            med = {t: median(list(times.get((scenario, mode, t), {}).values())) for t in tools}
            if all(v is None for v in med.values()):
                continue
            kiln = med.get("kiln")
            others = [med[t] for t in ("buildkit", "buildah") if med.get(t) is not None]
            best = min(others) if others else None
            target = TARGETS[mode]
            if kiln is not None and best:
                verdict = met(kiln / best <= target)
            else:
                verdict = "–"
            rows.append(
                f"| {scenario_name} | {mode_name} | "
                + " | ".join(fmt_s(med[t]) for t in tools)
                + f" | {fmt_ratio(kiln, med.get('buildkit'))}"
                + f" | {fmt_ratio(kiln, med.get('buildah'))}"
                + f" | {fmt_ratio(kiln, best)} | ≤ {target}× | {verdict} |"
            )
    return rows


def parallel_table(times, tools):
    """The waiting three-stage build: the joined build's wall time against the sum of its three
    stages built one at a time (per repetition, then the median of the ratios)."""
    rows = [
        "| tool | stages one at a time, sum (s) | joined build (s) | ratio | target (kiln) | met |",
        "|---|---:|---:|---:|---:|:-:|",
    ]
    for tool in tools:
        cold = times.get(("stages-wait", "cold", tool), {})
        stages = [times.get(("stages-wait", f"stage{n}", tool), {}) for n in (1, 2, 3)]
        sums, ratios = [], []
        for rep, wall in cold.items():
            if all(rep in s for s in stages):
                total = sum(s[rep] for s in stages)
                sums.append(total)
                ratios.append(wall / total)
        if not ratios:
            continue
        ratio = median(ratios)
        is_kiln = tool == "kiln"
        rows.append(
            f"| {TOOL_NAMES[tool]} | {fmt_s(median(sums))} | {fmt_s(median(list(cold.values())))}"
            f" | {ratio:.2f}× | {f'≤ {PARALLEL_TARGET}×' if is_kiln else '–'}"
            f" | {met(ratio <= PARALLEL_TARGET) if is_kiln else '–'} |"
        )
    return rows


def rss_lines(rss):
    lines = []
    for mode, mode_name in MODES.items():
        values = rss.get(("big", mode))
        if values:
            lines.append(f"| {mode_name} | {median(values):.0f} | {max(values):.0f} |")
    if not lines:
        return []
    peak = max(max(v) for (s, _), v in rss.items() if s == "big")
    return [
        "| big context, mode | median peak RSS (MB) | highest (MB) |",
        "|---|---:|---:|",
        *lines,
        "",
        f"Target: at most {RSS_TARGET_MB} MB on the big context; highest measured {peak:.0f} MB: "
        f"{'met' if peak <= RSS_TARGET_MB else '**missed**'}.",
    ]


def section(times, rss, machine, note, tools):
    out = [SECTION, ""]
    out += [
        "Written by `bench/run.sh` (run it again to refresh this section; it replaces only this",
        "section). Each scenario is built by kiln, BuildKit (`DOCKER_BUILDKIT=1 docker build`",
        "against Debian's dockerd) and buildah (`buildah build --layers --jobs 0`) from the same",
        "busybox base image, all with `--network none`; the tools take turns in rotating order.",
        "*cold*: empty store except the base image, page cache dropped; *push*: every blob of",
        "the just-built image to an empty loopback registry; *no-op rebuild*: the same build",
        "again; *one file changed*: one source file edited, so its COPY and the steps after it",
        "re-run. Times are medians in seconds; *best* is the better of BuildKit and buildah; the",
        "targets are issue 4's, against the best.",
        "",
    ]
    if note:
        out += [f"**{note}**", ""]
    out += ["Machine:", "", "```", *machine.strip().splitlines(), "```", ""]
    out += main_table(times, tools)
    out += [
        "",
        "Scenarios (sizes in the machine description): *small*: `WORKDIR`, two COPY and three",
        "RUN; *big context*: many small files and a few large half-compressible ones (half",
        "random, half text), `COPY . /ctx/` and one RUN; *three stages*: three independent",
        "stages (each one COPY and one RUN that sleeps, or runs `sha256sum` over generated",
        "data) joined by `COPY --from`; *thirty small layers*: 29 RUN and one COPY in the",
        "middle (the edited file). The pushes are of the big-context and",
        "thirty-layer images. dockerd keeps layers uncompressed and gzips on push, so",
        "BuildKit's cold builds pay no compression and its pushes do.",
        "",
        "### Parallel stages",
        "",
        "The waiting three-stage build against the sum of its stages, each built alone from an",
        "empty store (what a builder that runs stages one after another would take). The",
        "CPU-bound variant cannot gain from parallelism on a machine whose vCPUs give about one",
        "core of throughput; its figures are in the table above as they are.",
        "",
    ]
    out += parallel_table(times, tools)
    rss_part = rss_lines(rss)
    if rss_part:
        out += ["", "### kiln's peak memory", "", "`/usr/bin/time -f %M` around `kiln build`.", ""]
        out += rss_part
    return "\n".join(out) + "\n"


def replace_section(doc_text, new_section):
    """Puts new_section in place of the old one, or first after the title when there is none."""
    lines = doc_text.splitlines()
    start = next((i for i, l in enumerate(lines) if l.strip() == SECTION), None)
    if start is not None:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        before, after = lines[:start], lines[end:]
    else:
        first_h2 = next((i for i, l in enumerate(lines) if l.startswith("## ")), len(lines))
        before, after = lines[:first_h2], lines[first_h2:]
        if not before:
            before = ["# Benchmarks", ""]
    text = "\n".join(before).rstrip("\n") + "\n\n" + new_section
    if after:
        text += "\n" + "\n".join(after).rstrip("\n") + "\n"
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--rss", required=True)
    parser.add_argument("--machine", required=True)
    parser.add_argument("--doc", required=True)
    parser.add_argument("--note", default="")
    args = parser.parse_args()

    times = read_results(args.results)
    if not times:
        sys.exit("report.py: no results to report")
    tools = [t for t in TOOLS if any(k[2] == t for k in times)]
    new_section = section(
        times, read_rss(args.rss), Path(args.machine).read_text(), args.note, tools
    )
    doc = Path(args.doc)
    doc.write_text(replace_section(doc.read_text() if doc.exists() else "", new_section))
    print(new_section)


if __name__ == "__main__":
    main()
