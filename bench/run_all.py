"""Run every benchmark in bench/ (or those named, e.g. ``run_all.py train_loop``) and write bench/results.md
(ratios measured in one process each)."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHES = sorted(p for p in HERE.glob("*.py") if p.name not in {"run_all.py", "common.py"})


def main() -> None:
    named = set(sys.argv[1:])
    chosen = [b for b in BENCHES if not named or b.stem in named]
    command = "`make bench`" if not named else f"`python bench/run_all.py {' '.join(sys.argv[1:])}`"
    lines = [f"# Benchmarks ({datetime.date.today()}, {command})", ""]
    for bench in chosen:
        out = subprocess.run([sys.executable, str(bench)], capture_output=True, text=True, cwd=HERE, check=True)
        print(out.stdout, end="")
        lines += [f"## {bench.stem}", "", "```", out.stdout.strip(), "```", ""]
    (HERE / "results.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
