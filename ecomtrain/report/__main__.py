"""`python -m ecomtrain.report DIR`: the sweep report, from DIR/trials.csv.

Writes DIR/report.md (charts linked as the PNG files beside it) and DIR/report.html (the same
report in one file, charts embedded as base64), plus heatmap.png, capabilities.png,
diversity.png and scores.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecomtrain import console
from ecomtrain.report.pages import write_report
from ecomtrain.report.trials import ReportError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ecomtrain.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", help="a sweep's output directory (holds trials.csv)")
    console.add_arguments(parser)
    args = parser.parse_args(argv)
    console.setup(args)
    out = Path(args.dir)
    try:
        path = write_report(out)
    except ReportError as e:
        console.log.error("error: %s", e)
        return 2
    print(f"report: {path} and {path.with_suffix('.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
