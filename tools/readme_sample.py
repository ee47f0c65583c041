"""Writes the README's sample of what a run prints, from a real run.

    .venv/bin/python -m tools.readme_sample [--log FILE] [-- RUN ARGS...]

Without --log it runs `mnist-tfx run --data-dir ../shared/data/mnist` (or the
RUN ARGS given) in the checkout, as `make run` does; with --log it takes a
saved copy of such a run's output. The end of that output (from `Pushed:`
on: the summary and the report's table) replaces the README's block between
the sample markers, with the checkout's path shortened to `…`.
`tests/test_readme.py` checks that a fresh run prints lines of the same shape.
"""

import argparse
import os
import re
import subprocess
import sys
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
BEGIN = "<!-- sample: the end of `make run`'s output, written by tools/readme_sample.py -->"
END = "<!-- end of sample -->"
FIRST, LAST = "Pushed:", "Report:"  # the sample's first and last lines


def tail(output: str) -> List[str]:
  """The lines of a run's output from the summary to the report's path."""
  lines = output.splitlines()
  starts = [i for i, line in enumerate(lines) if line.startswith(FIRST)]
  if not starts:
    raise ValueError(f"no line starting {FIRST!r}: not a finished run's output")
  ends = [i for i, line in enumerate(lines) if line.startswith(LAST) and i > starts[-1]]
  return lines[starts[-1]:(ends[0] + 1) if ends else None]


def shape(line: str) -> str:
  """What a line says, without its figures: the part before its first colon
  (or the whole line), numbers as N, runs of spaces as one."""
  head = line.split(":", 1)[0] if ":" in line else line
  return re.sub(r"\s+", " ", re.sub(r"\d+(\.\d+)?", "N", head)).strip()


def sample_in_readme(text: str) -> List[str]:
  block = text.split(BEGIN, 1)[1].split(END, 1)[0]
  return block.strip().strip("`").strip().splitlines()


def write(lines: List[str]) -> None:
  with open(README, encoding="utf-8") as f:
    text = f.read()
  shown = [line.replace(ROOT, "…") for line in lines]
  before, rest = text.split(BEGIN, 1)
  after = rest.split(END, 1)[1]
  with open(README, "w", encoding="utf-8") as f:
    f.write(before + BEGIN + "\n```\n" + "\n".join(shown) + "\n```\n" + END + after)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tools.readme_sample")
  parser.add_argument("--log", help="a saved copy of a run's output")
  parser.add_argument("run_args", nargs="*", help="arguments for mnist-tfx run")
  args = parser.parse_args(argv)
  if args.log:
    with open(args.log, encoding="utf-8") as f:
      output = f.read()
  else:
    command = [os.path.join(ROOT, ".venv", "bin", "mnist-tfx"), "run"] + (
        args.run_args or ["--data-dir", "../shared/data/mnist"])
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
      print(proc.stderr[-2000:], file=sys.stderr)
      return 1
    output = proc.stdout
  write(tail(output))
  print(f"README.md: the sample now shows {len(tail(output))} lines of a real run")
  return 0


if __name__ == "__main__":
  sys.exit(main())
