"""Refresh the golden data in tests/data from the project's shared folder.

The neural-tangents reference values are made outside this repository (they need
neural-tangents 0.6.5 and jax 0.5.3) and kept in ``../shared/golden`` and
``../shared/golden_cnn`` beside the checkout; the tests read the copies in
``tests/data/golden`` and ``tests/data/golden_cnn`` (described in tests/data/README.md).
This copies every file of the two shared folders over its copy and leaves the files that
exist only here (the READMEs) alone.

    python tools/refresh_golden.py [--shared PATH]
"""

import argparse
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parents[1]
SETS = ("golden", "golden_cnn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=pathlib.Path, default=ROOT.parent / "shared", help="the shared folder")
    args = parser.parse_args()
    for name in SETS:
        source = args.shared / name
        if not (source / "index.json").is_file():
            raise SystemExit(f"{source / 'index.json'} not found: give the shared folder with --shared")
        target = ROOT / "tests" / "data" / name
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if path.is_file():
                shutil.copyfile(path, target / path.name)
                print(f"{path} -> {target / path.name}")


if __name__ == "__main__":
    main()
