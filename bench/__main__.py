"""``python -m bench [--short] [--check] [--out DIR] [--check-file JSON]``.

Measures (see :mod:`bench`), prints the table, writes ``bench-<UTC timestamp>.json`` and
``latest.json`` to ``bench/results/`` (or ``--out``). ``--check`` then applies the CI
regression check and exits 1 with the reasons when it fails. ``--check-file`` checks a
saved result without measuring anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bench import check, load, report
from bench.runner import Settings, run


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="dtmfguard detection benchmarks")
    p.add_argument("--short", action="store_true", help="the quick CI version (batch 1 and 1024, fewer repetitions)")
    p.add_argument("--check", action="store_true", help="exit 1 when the regression check fails")
    p.add_argument("--out", type=Path, default=report.RESULTS_DIR, help="directory for the JSON results")
    p.add_argument("--check-file", type=Path, metavar="JSON", help="check a saved result instead of measuring")
    return p


def _apply_check(result: dict[str, object]) -> int:
    problems = check.failures(result)
    if problems:
        print("bench check FAILED:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("bench check passed")
    return 0


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.check_file is not None:
        try:
            result = json.loads(args.check_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"cannot read {args.check_file}: {exc}", file=sys.stderr)
            return 2
        return _apply_check(result)
    if settings is None:
        settings = Settings.short() if args.short else Settings.full()
    result = run(settings)
    print(report.format_table(result))
    if result.get("load") is not None:
        print(load.format_table(result["load"]))
    path = report.save(result, args.out)
    print(f"\nresults: {path}")
    return _apply_check(result) if args.check else 0


if __name__ == "__main__":
    sys.exit(main())
