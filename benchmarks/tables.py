"""What every benchmark does last: write its markdown table to `--out` and print it."""

import os


def write_table(path, lines):
    """Writes `lines` (markdown) to `path`, creating its folder, and prints them."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
